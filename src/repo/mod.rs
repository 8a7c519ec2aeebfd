//! The phone repo: following a git branch, loading each new commit into an immutable
//! [`Snapshot`] (rules, contacts, greetings, `phone.toml`, templates) and swapping it in.
//!
//! Neighbours: [`crate::rules`] compiles the rule files, [`crate::contacts`] reads the vCards,
//! calls read the live snapshot through a [`RepoHandle`] and keep the `Arc` they started with.
//! Files are always read from the commit (git2), never from a working tree.
//! Invariant: a bad commit never replaces a good snapshot; it is journaled once with the
//! commit, file, line and reason, and the next good commit goes live normally.

mod commit;
mod create;
mod greetings;
mod phone;
mod remote;
mod snapshot;
mod tree;
mod watcher;

pub use commit::{commit_file, CommitError, Committed};
pub use create::{create_repo, demo_files, MENU_PROMPTS};
pub use greetings::{BadGreeting, GreetingIndex, GreetingStore, GREETINGS_FOLDER};
pub use phone::{DeviceConfig, DidConfig, PhoneConfig, PhoneConfigError, KNOWN_CODECS};
pub use snapshot::{CheckReport, Loader, Problem, Refusal, Snapshot};
pub use tree::{read_commit, read_worktree, CommitFiles, RepoFile, TreeError};
pub use watcher::{Outcome, RepoHandle, Watcher};

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `repo` section of the settings file (which repo and branch to follow). Where greetings
/// are exported and the default region are top-level settings, handed to the [`Loader`].
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepoSettings {
    /// The phone repo (a checkout or a bare repo). With `remote`, patchbay's own copy, created
    /// as a bare repo if missing.
    pub path: PathBuf,
    /// The branch whose commits go live.
    pub branch: String,
    /// A URL or path to fetch the branch from (e.g. a git server the person pushes to).
    pub remote: Option<String>,
    /// How often the branch is checked (milliseconds); local repos are also watched.
    pub poll_interval_ms: u64,
    /// How often `remote` is fetched (milliseconds).
    pub fetch_interval_ms: u64,
}

impl Default for RepoSettings {
    fn default() -> Self {
        RepoSettings {
            path: PathBuf::from("phone"),
            branch: "main".to_owned(),
            remote: None,
            poll_interval_ms: 500,
            fetch_interval_ms: 30_000,
        }
    }
}

impl RepoSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.clamp(50, 60_000))
    }

    pub fn fetch_interval(&self) -> Duration {
        Duration::from_millis(self.fetch_interval_ms.max(100))
    }
}

/// Everything that can go wrong following the phone repo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("{path}: cannot open the phone repo (create one with `patchbay init`): {source}")]
    Open { path: PathBuf, source: git2::Error },
    #[error("{dir}: cannot export greetings (check that the folder is writable): {source}")]
    Export {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the phone repo watcher thread: {0}")]
    Thread(std::io::Error),
    #[error("commit {commit}: not live after {waited:?} (is the watcher running?)")]
    Timeout { commit: String, waited: Duration },
}

/// Why a new phone repo could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}: the folder is not empty (give a new or empty folder)")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot create the git repository: {source}")]
    Git { path: PathBuf, source: git2::Error },
    #[error("{0}: not a relative path inside the repo")]
    BadPath(String),
}
