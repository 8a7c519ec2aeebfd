//! Integration tests: spool.
