//! Integration tests: the FreeSWITCH captures replayed through the decoders and encoders.
