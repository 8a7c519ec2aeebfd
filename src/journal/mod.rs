//! The journal: one readable line per thing that happened, for the person, not a developer.
//!
//! Lines look like `2026-11-28 14:03:07 Marie Dubois (+33 1 23 45 67 89) called your French
//! number; rang desk, cell; voicemail 0:42`. Every line is stamped in the settings' timezone,
//! kept flat (newlines and control characters from caller-supplied strings are replaced) and
//! passed through the secret filter, so a password never reaches the file even when an error
//! message quotes one.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use chrono_tz::Tz;
use tokio::sync::broadcast;

use crate::settings::Secret;

/// How many recent lines stay in memory for `status` and for tests.
const RECENT_LINES: usize = 1000;

/// A cheap-to-clone handle on the journal; every module writes through one.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

struct Shared {
    timezone: Tz,
    /// Appended to when set; `None` keeps the journal in memory only.
    file: Mutex<Option<File>>,
    /// Values that must never appear in a line (passwords).
    secrets: Mutex<Vec<String>>,
    recent: Mutex<VecDeque<String>>,
    /// Every new line, for whoever listens (tests, `demo`).
    lines: broadcast::Sender<String>,
}

impl Journal {
    /// A journal that appends to `path` (created if missing).
    pub fn open(path: &Path, timezone: Tz) -> io::Result<Journal> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal::with_file(Some(file), timezone))
    }

    /// A journal kept in memory only (tests, `simulate`).
    pub fn in_memory(timezone: Tz) -> Journal {
        Journal::with_file(None, timezone)
    }

    fn with_file(file: Option<File>, timezone: Tz) -> Journal {
        let (lines, _) = broadcast::channel(1024);
        Journal {
            shared: Arc::new(Shared {
                timezone,
                file: Mutex::new(file),
                secrets: Mutex::new(Vec::new()),
                recent: Mutex::new(VecDeque::with_capacity(RECENT_LINES)),
                lines,
            }),
        }
    }

    /// The timezone lines are stamped in, for messages that name a time ("since 14:03").
    pub fn timezone(&self) -> Tz {
        self.shared.timezone
    }

    /// Never let this value appear in a journal line from now on.
    pub fn hide(&self, secret: &Secret) {
        if secret.expose().len() >= 3 {
            let mut secrets = self.shared.secrets.lock().expect("journal lock poisoned");
            secrets.push(secret.expose().to_owned());
        }
    }

    /// Write one line, stamped with the local time.
    pub fn write(&self, text: impl AsRef<str>) {
        let stamp = Utc::now()
            .with_timezone(&self.shared.timezone)
            .format("%Y-%m-%d %H:%M:%S");
        let line = format!("{stamp} {}", self.clean(text.as_ref()));
        tracing::info!(target: "journal", "{line}");
        if let Some(file) = self
            .shared
            .file
            .lock()
            .expect("journal lock poisoned")
            .as_mut()
        {
            if let Err(error) = writeln!(file, "{line}") {
                tracing::error!("cannot append to the journal file: {error}");
            }
        }
        {
            let mut recent = self.shared.recent.lock().expect("journal lock poisoned");
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        // Nobody listening is the normal case.
        let _ = self.shared.lines.send(line);
    }

    /// The most recent lines, oldest first.
    pub fn recent(&self) -> Vec<String> {
        let recent = self.shared.recent.lock().expect("journal lock poisoned");
        recent.iter().cloned().collect()
    }

    /// Every line written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.shared.lines.subscribe()
    }

    /// One flat line: control characters become spaces, secrets become `***`.
    fn clean(&self, text: &str) -> String {
        let mut line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let secrets = self.shared.secrets.lock().expect("journal lock poisoned");
        for secret in secrets.iter() {
            if line.contains(secret.as_str()) {
                line = line.replace(secret.as_str(), "***");
            }
        }
        line
    }
}

/// A duration for people: "4.2 s", "42 s", "2 min 13 s", "1 h 05 min".
pub fn human_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs < 10 && duration.subsec_millis() >= 100 {
        format!("{:.1} s", duration.as_secs_f64())
    } else if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    }
}

/// A recording or talk length as a clock: "0:42", "12:05".
pub fn clock_duration(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(4200)), "4.2 s");
        assert_eq!(human_duration(Duration::from_secs(4)), "4 s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(human_duration(Duration::from_secs(133)), "2 min 13 s");
        assert_eq!(human_duration(Duration::from_secs(3900)), "1 h 05 min");
        assert_eq!(clock_duration(42), "0:42");
        assert_eq!(clock_duration(725), "12:05");
    }

    #[test]
    fn lines_are_flat_stamped_and_free_of_secrets() {
        let journal = Journal::in_memory(chrono_tz::America::Montreal);
        journal.hide(&Secret::new("s3cret-pw"));
        journal.write("gateway did1 refused password s3cret-pw\r\nBcc: x@y");
        let lines = journal.recent();
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(
            line.ends_with("gateway did1 refused password ***  Bcc: x@y"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        // "YYYY-MM-DD HH:MM:SS " prefix
        assert_eq!(&line[4..5], "-");
        assert_eq!(&line[19..20], " ");
    }

    #[test]
    fn file_journal_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let journal = Journal::open(&path, chrono_tz::UTC).unwrap();
        journal.write("first");
        journal.write("second");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" first"));
        assert!(lines[1].ends_with(" second"));
    }
}
