//! The phone repo: git watching, loading one commit into an immutable snapshot, greetings export.
