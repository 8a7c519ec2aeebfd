//! Fetching the followed branch from a remote into patchbay's copy of the phone repo.
//!
//! Local paths and `file://` URLs go through git2; anything else (ssh, https) through the
//! `git` command, which knows the person's credentials setup, with prompts disabled so a
//! missing credential fails instead of hanging the watcher.

use std::path::Path;
use std::process::Command;

use git2::Repository;

/// The ref the fetched branch lands in; the watcher follows it.
pub fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/patchbay/{branch}")
}

/// Fetches `branch` of `url` into [`tracking_ref`]. The error is one line for the journal.
pub fn fetch(repo: &Repository, url: &str, branch: &str) -> Result<(), String> {
    let refspec = format!("+refs/heads/{branch}:{}", tracking_ref(branch));
    if is_local(url) {
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|error| error.message().to_owned())?;
        remote
            .fetch(&[refspec.as_str()], None, None)
            .map_err(|error| error.message().to_owned())?;
        return Ok(());
    }
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(["fetch", "--quiet", "--no-tags", "--", url, &refspec])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .output()
        .map_err(|error| format!("cannot run git: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        Err(last.unwrap_or("git fetch failed").trim().to_owned())
    }
}

fn is_local(url: &str) -> bool {
    url.starts_with("file://")
        || !url.contains("://") && !url.contains('@') && Path::new(url).is_absolute()
        || url.starts_with("./")
        || url.starts_with("../")
}

/// The URL without a password ("https://me:pw@host/x" -> "https://me@host/x"), for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("https://me:s3cret@git.example.org/phone.git"),
            "https://me@git.example.org/phone.git"
        );
        assert_eq!(redact("/srv/git/phone.git"), "/srv/git/phone.git");
        assert_eq!(redact("ssh://git@host/x"), "ssh://git@host/x");
    }
}
