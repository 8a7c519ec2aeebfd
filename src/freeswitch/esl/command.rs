//! ESL command (to be written).
