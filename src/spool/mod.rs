//! The durable after-call job queue: every finished call is a job folder on disk.

use serde::Deserialize;

/// The `spool` section of the settings file (where jobs live, retry limits).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SpoolSettings {}
