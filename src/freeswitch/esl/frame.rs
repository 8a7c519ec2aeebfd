//! ESL frame (to be written).
