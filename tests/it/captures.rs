//! Integration tests: the FreeSWITCH captures replayed through the decoders and encoders.

/// Where the FreeSWITCH 1.10.12 captures live.
pub const FIXTURES: &str = "/work/shared/fixtures/freeswitch";
