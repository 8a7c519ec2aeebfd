//! ESL event (to be written).
