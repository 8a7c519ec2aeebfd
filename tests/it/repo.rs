//! Integration tests: repo.
