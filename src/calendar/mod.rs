//! The calendar call log: every call becomes an iCalendar event, stored by CalDAV or in a
//! local vdir folder (one `.ics` per event, as khal and vdirsyncer read it), the embedded
//! default.
//!
//! The spool calls [`CallLog::store`] with the event text that [`event::build`] made from a
//! call record. Invariant: the event's UID and file name derive from the call UUID only, and
//! nothing overwrites an existing event, so a retried or repeated store never duplicates.

pub mod caldav;
pub mod event;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;

use crate::settings::Secret;

/// The `calendar` section of the settings file (CalDAV or a local vdir).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarSettings {
    /// Store events on this CalDAV server; without it, events go into `vdir`.
    pub caldav: Option<CaldavSettings>,
    /// The local vdir folder used when no CalDAV server is set.
    pub vdir: PathBuf,
}

impl Default for CalendarSettings {
    fn default() -> Self {
        CalendarSettings {
            caldav: None,
            vdir: PathBuf::from("calendar"),
        }
    }
}

/// A CalDAV account.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaldavSettings {
    /// A principal URL ("https://dav.example.org/alice/"), a calendar home, or the calendar
    /// collection itself.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Secret,
    /// The calendar created when the account has none.
    #[serde(default = "default_calendar_name")]
    pub calendar_name: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_calendar_name() -> String {
    "calls".to_owned()
}

fn default_timeout() -> u64 {
    30
}

impl fmt::Debug for CaldavSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaldavSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("calendar_name", &self.calendar_name)
            .finish()
    }
}

/// Calendar errors, each naming the URL or the folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Settings { field: &'static str, reason: String },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: CalDAV discovery failed: {reason}")]
    Discovery { url: String, reason: String },
    #[error("{method} {url}: {status}{}{}", hint(*status), if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Status {
        method: String,
        url: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{path}: cannot write the event: {source}")]
    Vdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            ": check calendar.caldav.username and password"
        }
        StatusCode::NOT_FOUND => ": check calendar.caldav.url",
        _ => "",
    }
}

impl Error {
    /// A server down or busy, as opposed to a setting to fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Vdir { .. } => true,
            Error::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Error::Settings { .. } | Error::Discovery { .. } => false,
        }
    }
}

/// Where events go.
pub enum CallLog {
    CalDav(Box<caldav::CalDav>),
    Vdir(PathBuf),
}

impl CallLog {
    pub fn new(settings: &CalendarSettings) -> Result<CallLog, Error> {
        match &settings.caldav {
            Some(dav) => Ok(CallLog::CalDav(Box::new(caldav::CalDav::new(
                &dav.url,
                dav.username.as_deref(),
                &dav.password,
                &dav.calendar_name,
                Duration::from_secs(dav.timeout_secs.max(1)),
            )?))),
            None => Ok(CallLog::Vdir(settings.vdir.clone())),
        }
    }

    /// Stores the event `uid` unless it exists. `Ok(true)` when stored now, `Ok(false)` when it
    /// was already there (a retry after a crash).
    pub async fn store(&self, uid: &str, ics: &str) -> Result<bool, Error> {
        let name = format!("{uid}.ics");
        match self {
            CallLog::CalDav(dav) => dav.put_new(&name, ics).await,
            CallLog::Vdir(folder) => {
                let folder = folder.clone();
                let ics = ics.to_owned();
                tokio::task::spawn_blocking(move || store_vdir(&folder, &name, &ics))
                    .await
                    .map_err(|join| Error::Vdir {
                        path: PathBuf::from(uid),
                        source: std::io::Error::other(join.to_string()),
                    })?
            }
        }
    }
}

/// Written in a hidden temp file, synced, then linked into place only if the name is free.
fn store_vdir(folder: &std::path::Path, name: &str, ics: &str) -> Result<bool, Error> {
    let target = folder.join(name);
    let error = |source| Error::Vdir {
        path: target.clone(),
        source,
    };
    std::fs::create_dir_all(folder).map_err(error)?;
    if target.exists() {
        return Ok(false);
    }
    let tmp = folder.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::File::create(&tmp).map_err(error)?;
    file.write_all(ics.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    // hard_link fails if the target exists: never overwrites, never duplicates.
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            std::fs::File::open(folder)
                .and_then(|dir| dir.sync_all())
                .map_err(error)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn vdir_never_duplicates_or_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let log = CallLog::Vdir(dir.path().join("cal"));
        assert!(log.store("patchbay-call-1", "first").await.unwrap());
        assert!(!log.store("patchbay-call-1", "second").await.unwrap());
        let files: Vec<_> = std::fs::read_dir(dir.path().join("cal"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from("patchbay-call-1.ics")]);
        let text = std::fs::read_to_string(dir.path().join("cal/patchbay-call-1.ics")).unwrap();
        assert_eq!(text, "first");
    }

    #[test]
    fn auth_errors_say_what_to_check_and_hide_the_password() {
        let settings: CaldavSettings =
            serde_json::from_str(r#"{"url":"http://h/","username":"alice","password":"hunter22"}"#)
                .unwrap();
        assert!(!format!("{settings:?}").contains("hunter22"));
        let error = Error::Status {
            method: "PUT".into(),
            url: "http://h/alice/calls/x.ics".into(),
            status: StatusCode::UNAUTHORIZED,
            detail: String::new(),
        };
        assert_eq!(
            error.to_string(),
            "PUT http://h/alice/calls/x.ics: 401 Unauthorized: check calendar.caldav.username and password"
        );
        assert!(!error.is_transient());
    }
}
