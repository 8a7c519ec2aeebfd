//! Reading a phone repo's files as they are in one commit (never the working tree), so that
//! what runs is exactly what was committed.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// One file of a commit: its path inside the repo ("rules/20-night.rhai") and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The files of one commit, with the commit id.
#[derive(Clone, Debug)]
pub struct CommitFiles {
    /// Full hex id of the commit.
    pub commit: String,
    pub files: Vec<RepoFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: cannot read: {source}")]
    Worktree {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a git repository (run `patchbay init` to create a phone repo): {source}")]
    Open { path: PathBuf, source: git2::Error },
    #[error("{path}: cannot resolve {rev}: {source}")]
    Resolve {
        path: PathBuf,
        rev: String,
        source: git2::Error,
    },
    #[error("{path}: cannot read commit {commit}: {source}")]
    Read {
        path: PathBuf,
        commit: String,
        source: git2::Error,
    },
}

/// Every file of commit `rev` ("HEAD", a branch, a hex id) whose path starts with one of
/// `folders` (e.g. `["rules/"]`); all files when `folders` is empty. Sorted by path.
pub fn read_commit(
    repo_path: &Path,
    rev: &str,
    folders: &[&str],
) -> Result<CommitFiles, TreeError> {
    let repo = Repository::open(repo_path).map_err(|source| TreeError::Open {
        path: repo_path.to_owned(),
        source,
    })?;
    let commit = repo
        .revparse_single(rev)
        .and_then(|object| object.peel_to_commit())
        .map_err(|source| TreeError::Resolve {
            path: repo_path.to_owned(),
            rev: rev.to_owned(),
            source,
        })?;
    let files = read_tree(&repo, commit.id(), folders).map_err(|source| TreeError::Read {
        path: repo_path.to_owned(),
        commit: commit.id().to_string(),
        source,
    })?;
    Ok(CommitFiles {
        commit: commit.id().to_string(),
        files,
    })
}

/// The files of a working folder as they are on disk (`patchbay check --worktree`), in the
/// same shape as a commit's; `.git` and hidden files are skipped. `commit` is empty.
pub fn read_worktree(root: &Path) -> Result<CommitFiles, TreeError> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| TreeError::Worktree {
            path: folder.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| TreeError::Worktree {
                path: folder.clone(),
                source,
            })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(|source| TreeError::Worktree {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                folders.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).map_err(|source| TreeError::Worktree {
                    path: path.clone(),
                    source,
                })?;
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let name: Vec<String> = relative
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push(RepoFile {
                    path: name.join("/"),
                    bytes,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(CommitFiles {
        commit: String::new(),
        files,
    })
}

fn read_tree(
    repo: &Repository,
    commit: Oid,
    folders: &[&str],
) -> Result<Vec<RepoFile>, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut blobs = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob) {
            let path = format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes()));
            if folders.is_empty() || folders.iter().any(|folder| path.starts_with(folder)) {
                blobs.push((path, entry.id()));
            }
        }
        TreeWalkResult::Ok
    })?;
    let mut files = Vec::with_capacity(blobs.len());
    for (path, id) in blobs {
        let bytes = repo.find_blob(id)?.content().to_vec();
        files.push(RepoFile { path, bytes });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Signature;

    fn commit_files(repo: &Repository, files: &[(&str, &str)]) -> Oid {
        let workdir = repo.workdir().unwrap().to_owned();
        let mut index = repo.index().unwrap();
        for (path, text) in files {
            let full = workdir.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, text).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("Test", "test@example.com").unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            "test",
            &tree,
            &parent_refs,
        )
        .unwrap()
    }

    #[test]
    fn reads_the_commit_not_the_working_tree() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let first = commit_files(
            &repo,
            &[
                ("rules/10-a.rhai", "// a"),
                ("contacts/me.vcf", "BEGIN:VCARD"),
            ],
        );
        // An uncommitted edit must not be seen.
        std::fs::write(dir.path().join("rules/10-a.rhai"), "// edited").unwrap();
        let read = read_commit(dir.path(), "HEAD", &["rules/"]).unwrap();
        assert_eq!(read.commit, first.to_string());
        assert_eq!(
            read.files,
            vec![RepoFile {
                path: "rules/10-a.rhai".into(),
                bytes: b"// a".to_vec()
            }]
        );
        let all = read_commit(dir.path(), "HEAD", &[]).unwrap();
        assert_eq!(all.files.len(), 2);
        let worktree = read_worktree(dir.path()).unwrap();
        assert_eq!(worktree.files.len(), 2);
        assert_eq!(worktree.files[1].path, "rules/10-a.rhai");
        assert_eq!(worktree.files[1].bytes, b"// edited");
    }

    #[test]
    fn not_a_repo_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_commit(dir.path(), "HEAD", &[]).unwrap_err();
        assert!(
            error.to_string().contains("not a git repository"),
            "{error}"
        );
    }
}
