//! ESL outbound (to be written).
