//! The phone repo: git watching, loading one commit into an immutable snapshot, greetings export.

mod tree;

pub use tree::{read_commit, CommitFiles, RepoFile, TreeError};

use serde::Deserialize;

/// The `repo` section of the settings file (which repo and branch to follow).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RepoSettings {}
