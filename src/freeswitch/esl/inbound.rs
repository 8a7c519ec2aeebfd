//! ESL inbound (to be written).
