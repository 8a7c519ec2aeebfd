//! Integration tests: esl.
