//! The settings file: secrets and servers, kept outside git, validated with clear errors.

mod secret;

pub use secret::Secret;
