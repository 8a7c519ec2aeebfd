//! The person's own state between calls: the voicemail box the `*86` menu plays from, and the
//! do-not-disturb switch.
//!
//! Both live in files under `recordings_dir` (the folder FreeSWITCH and patchbay share), so
//! they survive a restart and FreeSWITCH can play the kept messages:
//!
//! - `mailbox/<started>-<uuid>.wav`: a link (or copy) of every voicemail kept, taken before
//!   the spool moves the recording away; the name sorts in the order the messages were left.
//! - `mailbox/heard.json`: the names of the messages already played from the phone.
//! - `do-not-disturb.json`: `{"on": true, "changed": "..."}`; missing means off.
//!
//! Every write goes to a temporary name and is renamed over, so a crash leaves the old state
//! or the new one. Invariant: a message is marked heard only after it was played to its end.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const HEARD: &str = "heard.json";

/// The voicemails kept for listening from the phone.
#[derive(Debug)]
pub struct Mailbox {
    dir: PathBuf,
    /// Serialises read-modify-write of `heard.json` between concurrent menus.
    heard_lock: Mutex<()>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HeardFile {
    heard: BTreeSet<String>,
}

impl Mailbox {
    /// The mailbox in `recordings_dir/mailbox` (created on first use).
    pub fn new(recordings_dir: &Path) -> Mailbox {
        Mailbox {
            dir: recordings_dir.join("mailbox"),
            heard_lock: Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps a voicemail left at `started` on call `uuid`: a hard link to `recording` (the
    /// spool then moves the original away), a copy when linking is not possible.
    pub fn keep(
        &self,
        recording: &Path,
        uuid: &str,
        started: DateTime<Utc>,
    ) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        // The uuid comes from FreeSWITCH; keep only what is safe in a file name.
        let uuid: String = uuid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        let name = format!("{}-{uuid}.wav", started.format("%Y%m%dT%H%M%S%3fZ"));
        let target = self.dir.join(name);
        if std::fs::hard_link(recording, &target).is_err() {
            std::fs::copy(recording, &target)?;
        }
        Ok(target)
    }

    /// The messages not heard yet, oldest first: they are played in the order they were
    /// left, as an answering machine does, so "call me back" comes before "never mind".
    pub fn new_messages(&self) -> io::Result<Vec<PathBuf>> {
        let heard = self.heard()?;
        let mut messages: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.extension().is_some_and(|ext| ext == "wav")
                        && path
                            .file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| !heard.contains(name))
                })
                .collect(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        messages.sort();
        Ok(messages)
    }

    /// Marks one message (a path from [`Mailbox::new_messages`]) as heard.
    pub fn mark_heard(&self, message: &Path) -> io::Result<()> {
        let Some(name) = message.file_name().and_then(|name| name.to_str()) else {
            return Ok(());
        };
        let _guard = self
            .heard_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut file = HeardFile {
            heard: self.heard()?,
        };
        if file.heard.insert(name.to_owned()) {
            std::fs::create_dir_all(&self.dir)?;
            write_atomically(&self.dir.join(HEARD), &serde_json::to_vec_pretty(&file)?)?;
        }
        Ok(())
    }

    fn heard(&self) -> io::Result<BTreeSet<String>> {
        match std::fs::read(self.dir.join(HEARD)) {
            Ok(bytes) => Ok(serde_json::from_slice::<HeardFile>(&bytes)
                .map(|file| file.heard)
                // A damaged file must not lock the person out of their messages: replay them.
                .unwrap_or_default()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(error) => Err(error),
        }
    }
}

/// The do-not-disturb switch, read by every inbound call (`do_not_disturb` in the rules).
#[derive(Debug)]
pub struct DoNotDisturb {
    path: PathBuf,
    on: AtomicBool,
    write_lock: Mutex<()>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoNotDisturbFile {
    on: bool,
    changed: DateTime<Utc>,
}

impl DoNotDisturb {
    /// Loads the switch from `recordings_dir/do-not-disturb.json` (off when missing or
    /// unreadable).
    pub fn load(recordings_dir: &Path) -> DoNotDisturb {
        let path = recordings_dir.join("do-not-disturb.json");
        let on = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<DoNotDisturbFile>(&bytes).ok())
            .is_some_and(|file| file.on);
        DoNotDisturb {
            path,
            on: AtomicBool::new(on),
            write_lock: Mutex::new(()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Switches it over and saves it; returns whether it is now on. On a write error the
    /// switch stays as it was.
    pub fn toggle(&self, now: DateTime<Utc>) -> io::Result<bool> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let on = !self.is_on();
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = DoNotDisturbFile { on, changed: now };
        write_atomically(&self.path, &serde_json::to_vec_pretty(&file)?)?;
        self.on.store(on, Ordering::SeqCst);
        Ok(on)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_play_oldest_first_and_stay_heard_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("vm.wav");
        std::fs::write(&recording, b"RIFF").unwrap();
        let mailbox = Mailbox::new(dir.path());
        assert!(mailbox.new_messages().unwrap().is_empty());
        let later = "2026-12-01T10:00:05Z".parse().unwrap();
        let earlier = "2026-12-01T09:59:00Z".parse().unwrap();
        let second = mailbox.keep(&recording, "b/../../x", later).unwrap();
        let first = mailbox.keep(&recording, "a-1", earlier).unwrap();
        assert_eq!(second.parent(), Some(mailbox.dir()), "{second:?}");
        assert_eq!(
            mailbox.new_messages().unwrap(),
            vec![first.clone(), second.clone()]
        );
        mailbox.mark_heard(&first).unwrap();
        let reopened = Mailbox::new(dir.path());
        assert_eq!(reopened.new_messages().unwrap(), vec![second]);
    }

    #[test]
    fn do_not_disturb_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let switch = DoNotDisturb::load(dir.path());
        assert!(!switch.is_on());
        assert!(switch.toggle(now).unwrap());
        assert!(DoNotDisturb::load(dir.path()).is_on());
        assert!(!switch.toggle(now).unwrap());
        assert!(!DoNotDisturb::load(dir.path()).is_on());
    }
}
