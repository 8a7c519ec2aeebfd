//! Integration tests: xml.
