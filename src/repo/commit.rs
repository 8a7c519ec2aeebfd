//! Committing a file patchbay made (a greeting recorded from the phone) to the phone repo.
//!
//! The commit is built from the followed branch's tip plus the one file, never from the index,
//! so whatever the person has staged or edited stays theirs and out of the commit. When the
//! branch is checked out, the file is also written to the working folder and its index entry
//! updated, so `git status` stays clean; a version of that file the person edited and did not
//! commit is left alone. The repo watcher then sees the new commit like any other.
//!
//! Only a local repo is written: with `repo.remote`, patchbay's copy is overwritten by each
//! fetch, so a commit there would be lost.

use std::path::Path;

use git2::build::TreeUpdateBuilder;
use git2::{FileMode, ObjectType, Oid, Repository, Signature};

use super::RepoSettings;

/// Why the file could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the phone repo is fetched from a server (settings repo.remote); commit it there")]
    Remote,
    #[error("{0}: not a plain relative path in the phone repo")]
    BadPath(String),
    #[error("{path}: cannot write to the phone repo: {message}")]
    Git { path: String, message: String },
}

/// A commit made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The new commit's id.
    pub commit: String,
    /// Something about the working folder the person should know (the commit was made).
    pub note: Option<String>,
}

/// Commits `bytes` as `path` ("greetings/wave_en.wav") on the followed branch.
pub fn commit_file(
    settings: &RepoSettings,
    path: &str,
    bytes: &[u8],
    message: &str,
) -> Result<Committed, CommitError> {
    if settings.remote.is_some() {
        return Err(CommitError::Remote);
    }
    let safe = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && part != ".git");
    if !safe {
        return Err(CommitError::BadPath(path.to_owned()));
    }
    let git_error = |error: git2::Error| CommitError::Git {
        path: settings.path.display().to_string(),
        message: error.message().to_owned(),
    };
    let repo = Repository::open(&settings.path).map_err(git_error)?;
    let refname = format!("refs/heads/{}", settings.branch);
    let parent = match repo.find_reference(&refname) {
        Ok(reference) => Some(reference.peel_to_commit().map_err(git_error)?),
        Err(error) if error.code() == git2::ErrorCode::NotFound => None,
        Err(error) => return Err(git_error(error)),
    };
    let base = match &parent {
        Some(commit) => commit.tree().map_err(git_error)?,
        None => {
            let empty = repo
                .treebuilder(None)
                .and_then(|builder| builder.write())
                .map_err(git_error)?;
            repo.find_tree(empty).map_err(git_error)?
        }
    };
    let previous = base
        .get_path(Path::new(path))
        .ok()
        .filter(|entry| entry.kind() == Some(ObjectType::Blob))
        .map(|entry| entry.id());
    let blob = repo.blob(bytes).map_err(git_error)?;
    let mut update = TreeUpdateBuilder::new();
    update.upsert(path, blob, FileMode::Blob);
    let tree_id = update.create_updated(&repo, &base).map_err(git_error)?;
    let tree = repo.find_tree(tree_id).map_err(git_error)?;
    let signature = repo
        .signature()
        .or_else(|_| Signature::now("patchbay", "patchbay@localhost"))
        .map_err(git_error)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    // With `update_ref`, libgit2 refuses if the branch moved since `parent` was read: a
    // commit the person made meanwhile is never lost.
    let commit = repo
        .commit(
            Some(&refname),
            &signature,
            &signature,
            message,
            &tree,
            &parents,
        )
        .map_err(git_error)?;
    let note = update_checkout(&repo, &refname, path, bytes, previous);
    Ok(Committed {
        commit: commit.to_string(),
        note,
    })
}

/// Brings the working folder and index in line for `path` when the branch is checked out.
fn update_checkout(
    repo: &Repository,
    refname: &str,
    path: &str,
    bytes: &[u8],
    previous: Option<Oid>,
) -> Option<String> {
    let workdir = repo.workdir()?;
    let checked_out = repo
        .head()
        .ok()
        .and_then(|head| head.name().ok().map(|name| name == refname))
        .unwrap_or(false);
    if !checked_out {
        return None;
    }
    let file = workdir.join(path);
    // Untouched means: absent, or the same bytes as the commit it replaces.
    let untouched = match std::fs::read(&file) {
        Ok(current) => Oid::hash_object(ObjectType::Blob, &current).ok() == previous,
        Err(_) => true,
    };
    if !untouched {
        return Some(format!(
            "{path} in your working folder has changes of yours; it was left as it is"
        ));
    }
    let written = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&file, bytes));
    if let Err(error) = written {
        return Some(format!(
            "{path}: could not update your working folder ({error}); run `git checkout -- {path}`"
        ));
    }
    let indexed = repo.index().and_then(|mut index| {
        index.add_path(Path::new(path))?;
        index.write()
    });
    indexed.err().map(|error| {
        format!(
            "{path}: could not update the git index ({}); run `git reset -- {path}`",
            error.message()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_file(dir: &Path) -> Repository {
        let repo = Repository::init(dir).unwrap();
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/a.rhai"), "// mine\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("rules/a.rhai")).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("Test", "test@example.com").unwrap();
        repo.commit(Some("HEAD"), &signature, &signature, "first", &tree, &[])
            .unwrap();
        drop(tree);
        repo
    }

    fn settings(dir: &Path, branch: &str) -> RepoSettings {
        RepoSettings {
            path: dir.to_owned(),
            branch: branch.to_owned(),
            ..RepoSettings::default()
        }
    }

    #[test]
    fn the_file_is_committed_on_the_branch_and_the_checkout_stays_clean() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with_file(dir.path());
        let branch = repo.head().unwrap().shorthand().unwrap().to_owned();
        // A change the person has not committed stays out of the commit.
        std::fs::write(dir.path().join("rules/a.rhai"), "// edited\n").unwrap();
        let committed = commit_file(
            &settings(dir.path(), &branch),
            "greetings/wave_en.wav",
            b"RIFF....",
            "Greeting wave_en.wav recorded on the phone",
        )
        .unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.id().to_string(), committed.commit);
        assert_eq!(head.parent_count(), 1);
        assert_eq!(
            head.message().ok(),
            Some("Greeting wave_en.wav recorded on the phone")
        );
        let tree = head.tree().unwrap();
        let entry = tree.get_path(Path::new("greetings/wave_en.wav")).unwrap();
        let blob = repo.find_blob(entry.id()).unwrap();
        assert_eq!(blob.content(), b"RIFF....");
        let rules = tree.get_path(Path::new("rules/a.rhai")).unwrap();
        assert_eq!(repo.find_blob(rules.id()).unwrap().content(), b"// mine\n");
        assert_eq!(
            std::fs::read(dir.path().join("greetings/wave_en.wav")).unwrap(),
            b"RIFF...."
        );
        let status = repo
            .status_file(Path::new("greetings/wave_en.wav"))
            .unwrap();
        assert!(status.is_empty(), "{status:?}");
        assert_eq!(committed.note, None);
    }

    #[test]
    fn a_fetched_repo_or_a_path_outside_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        repo_with_file(dir.path());
        let mut fetched = settings(dir.path(), "main");
        fetched.remote = Some("https://git.example.org/me/phone.git".to_owned());
        assert!(matches!(
            commit_file(&fetched, "greetings/a.wav", b"x", "m"),
            Err(CommitError::Remote)
        ));
        for path in [
            "../x.wav",
            "/etc/x.wav",
            "greetings/../../x",
            ".git/config",
            "",
        ] {
            assert!(
                matches!(
                    commit_file(&settings(dir.path(), "main"), path, b"x", "m"),
                    Err(CommitError::BadPath(_))
                ),
                "{path}"
            );
        }
    }
}
