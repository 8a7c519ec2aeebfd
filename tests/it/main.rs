//! Integration tests: one binary, one module per topic.
mod calls;
mod captures;
mod esl;
mod repo;
mod rules;
mod running;
mod sim;
mod spool;
mod xml;
