//! The durable after-call job queue: every finished call is a job folder on disk.
