//! The durable after-call queue: every finished call becomes a job folder on disk, worked
//! through transcribe -> email -> calendar, each step marked done once it succeeded.
//!
//! The call flows hand over a [`CallRecord`] with [`Spool::submit`]; [`Spool::run`] does the
//! work using [`voicemail`](crate::voicemail), [`notify`](crate::notify) and
//! [`calendar`](crate::calendar), and reports outages and give-ups in the journal.
//!
//! Layout under `spool.path`: `incoming/` (jobs being written), `jobs/<id>/` (waiting),
//! `dead/<id>/` (gave up; kept for the person), `done/<id>/` (only with `keep_done`). A job
//! folder holds `job.json`, `recording.wav`, then `transcript.json`, `email.done` and
//! `calendar.done` as the steps finish, and `retry.json` while a step keeps failing.
//!
//! Invariant: a job is never deleted before its last step succeeded. Every file is written in
//! a temporary name, synced and renamed, so a crash at any point leaves either the old or the
//! new state; a restart resumes at the first step without its marker. The one step that can
//! repeat is the one in flight at the crash: an email accepted by the server just before a
//! crash is sent again (same Message-ID); a calendar PUT cannot duplicate (If-None-Match).

pub mod record;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use record::{CallRecord, DroppedLeg, Outcome, Transfer, TransferMethod};

use crate::calendar::{self, CalendarSettings, CallLog};
use crate::journal::Journal;
use crate::notify::{self, CallContext, EmailSettings, Mailer, Overrides, Templates};
use crate::voicemail::{SttSettings, Transcriber, Transcript};

/// The `spool` section of the settings file (where jobs live, retry limits).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSettings {
    /// The spool folder.
    pub path: PathBuf,
    /// First wait after a failed step, in milliseconds; doubles per failure.
    pub retry_initial_ms: u64,
    /// Longest wait between two tries, in milliseconds.
    pub retry_max_ms: u64,
    /// A job still failing this long after its first failure moves to `dead/`.
    pub give_up_after_secs: u64,
    /// Keep finished jobs in `done/` instead of removing them.
    pub keep_done: bool,
    /// How often the folder is looked at for jobs dropped in by another process, in
    /// milliseconds (jobs submitted through [`Spool::submit`] start at once).
    pub scan_interval_ms: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            path: PathBuf::from("spool"),
            retry_initial_ms: 5_000,
            retry_max_ms: 10 * 60 * 1000,
            give_up_after_secs: 3 * 24 * 3600,
            keep_done: false,
            scan_interval_ms: 30_000,
        }
    }
}

/// Spool errors; step errors wrap the module's own error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid job file: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("email: {0}")]
    Email(#[from] notify::Error),
    #[error("calendar: {0}")]
    Calendar(#[from] calendar::Error),
}

impl Error {
    /// Worth retrying as is; the spool retries every error until `give_up_after_secs`, this
    /// only decides whether the journal calls it an outage or a problem to fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::Json { .. } => false,
            Error::Email(e) => e.is_transient(),
            Error::Calendar(e) => e.is_transient(),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `job.json` holds.
#[derive(Serialize, Deserialize)]
struct JobFile {
    record: CallRecord,
    submitted: DateTime<Utc>,
}

/// What `transcript.json` holds: the transcript, or why there is none.
#[derive(Serialize, Deserialize)]
struct TranscriptFile {
    transcript: Option<Transcript>,
    no_transcript: String,
}

/// What `retry.json` holds while a job keeps failing.
#[derive(Serialize, Deserialize)]
struct RetryFile {
    first_failure: DateTime<Utc>,
    failures: u32,
    next_try: DateTime<Utc>,
    last_error: String,
}

/// The three steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Transcribe,
    Email,
    Calendar,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Transcribe => "transcription",
            Step::Email => "email",
            Step::Calendar => "calendar",
        }
    }
}

const RECORDING: &str = "recording.wav";

/// A cheap-to-clone handle on the spool.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
}

struct Shared {
    settings: SpoolSettings,
    mailer: Mailer,
    call_log: CallLog,
    transcriber: Arc<Transcriber>,
    templates: Templates,
    /// Templates from the phone repo, swapped in per snapshot.
    overrides: Overrides,
    journal: Journal,
    /// The person's timezone, for the times in mails and events.
    timezone: Tz,
    /// Wakes the runner when a job arrives.
    wake: Notify,
}

/// Which servers are failing right now, so the journal says so once, not once per job.
#[derive(Default)]
struct Outages {
    email: bool,
    calendar: bool,
}

impl Spool {
    /// Checks the settings and creates the spool folders; connects to nothing yet.
    pub fn new(
        settings: SpoolSettings,
        email: EmailSettings,
        calendar: &CalendarSettings,
        stt: SttSettings,
        timezone: Tz,
        journal: Journal,
    ) -> Result<Spool, Error> {
        Spool::with_transcriber(
            settings,
            email,
            calendar,
            Arc::new(Transcriber::new(stt)),
            timezone,
            journal,
        )
    }

    /// Like [`Spool::new`] with a transcriber whose models may already be loaded.
    pub fn with_transcriber(
        settings: SpoolSettings,
        email: EmailSettings,
        calendar: &CalendarSettings,
        transcriber: Arc<Transcriber>,
        timezone: Tz,
        journal: Journal,
    ) -> Result<Spool, Error> {
        if let Some(smtp) = &email.smtp {
            journal.hide(&smtp.password);
        }
        if let Some(dav) = &calendar.caldav {
            journal.hide(&dav.password);
        }
        for sub in ["incoming", "jobs", "dead"] {
            let folder = settings.path.join(sub);
            std::fs::create_dir_all(&folder).map_err(io_error(&folder))?;
        }
        Ok(Spool {
            shared: Arc::new(Shared {
                mailer: Mailer::new(email)?,
                call_log: CallLog::new(calendar)?,
                transcriber,
                templates: Templates::new(),
                overrides: Overrides::default(),
                journal,
                timezone,
                wake: Notify::new(),
                settings,
            }),
        })
    }

    /// The phone repo's templates; the repo loader calls `set` on every new snapshot.
    pub fn overrides(&self) -> &Overrides {
        &self.shared.overrides
    }

    pub fn transcriber(&self) -> &Arc<Transcriber> {
        &self.shared.transcriber
    }

    /// Jobs waiting (ids, oldest first).
    pub fn pending(&self) -> Result<Vec<String>, Error> {
        list(&self.shared.settings.path.join("jobs"))
    }

    /// Jobs given up on (ids, oldest first).
    pub fn dead(&self) -> Result<Vec<String>, Error> {
        list(&self.shared.settings.path.join("dead"))
    }

    /// Queues a finished call. The recording (for a voicemail) is moved into the job folder
    /// (copied then removed across file systems) before the job appears, so once this returns
    /// the call can be forgotten. Submitting the same call UUID twice queues it once.
    /// Returns the job id.
    pub async fn submit(
        &self,
        record: CallRecord,
        recording: Option<&Path>,
    ) -> Result<String, Error> {
        let shared = Arc::clone(&self.shared);
        let recording = recording.map(Path::to_owned);
        let id = tokio::task::spawn_blocking(move || {
            submit_blocking(&shared.settings.path, record, recording.as_deref())
        })
        .await
        .map_err(|join| Error::Io {
            path: self.shared.settings.path.clone(),
            source: std::io::Error::other(join.to_string()),
        })??;
        self.shared.wake.notify_one();
        Ok(id)
    }

    /// Works through the jobs until `shutdown` completes. The job in progress then finishes
    /// its steps (cutting a send short could leave a mail sent but not marked, so sent twice).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let stopping = AtomicBool::new(false);
        let mut outages = Outages::default();
        loop {
            let pass = self.pass(&mut outages, &stopping);
            tokio::pin!(pass);
            let wait = tokio::select! {
                wait = &mut pass => wait,
                () = &mut shutdown => {
                    stopping.store(true, Ordering::Relaxed);
                    pass.await;
                    return;
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the due jobs; returns how long to sleep before the next one.
    async fn pass(&self, outages: &mut Outages, stopping: &AtomicBool) -> Duration {
        let settings = &self.shared.settings;
        let mut next_wake = Duration::from_millis(settings.scan_interval_ms.max(10));
        let ids = match self.pending() {
            Ok(ids) => ids,
            Err(error) => {
                tracing::error!("{error}");
                return Duration::from_millis(settings.retry_max_ms.max(1000));
            }
        };
        // A step whose server failed in this pass is not tried again for the next jobs.
        let mut down: Vec<(Step, String)> = Vec::new();
        // Steps that went through in this pass: their outage, if any, is over.
        let mut worked: Vec<Step> = Vec::new();
        for id in ids {
            if stopping.load(Ordering::Relaxed) {
                break;
            }
            let folder = settings.path.join("jobs").join(&id);
            let now = Utc::now();
            let retry = read_json::<RetryFile>(&folder.join("retry.json")).ok();
            if let Some(retry) = &retry {
                if retry.next_try > now {
                    let left = (retry.next_try - now).to_std().unwrap_or_default();
                    next_wake = next_wake.min(left);
                    continue;
                }
            }
            let result = match down
                .iter()
                .find(|(step, _)| next_step(&folder) == Some(*step))
            {
                Some((step, error)) => Err((*step, format!("not tried, {error}"), true)),
                None => self
                    .work(&folder)
                    .await
                    .map_err(|(step, e)| (step, e.to_string(), e.is_transient())),
            };
            match result {
                Ok(()) => {
                    worked.extend([Step::Email, Step::Calendar]);
                    if let Err(error) = self.finish(&id, &folder) {
                        tracing::error!("{error}");
                    }
                }
                Err((step, error, transient)) => {
                    if step == Step::Calendar {
                        worked.push(Step::Email);
                    }
                    if transient && !down.iter().any(|(s, _)| *s == step) {
                        down.push((step, error.clone()));
                    }
                    self.report_outage(outages, step, &error, retry.is_none());
                    match self.record_failure(&id, &folder, retry, &error) {
                        Ok(Some(wait)) => next_wake = next_wake.min(wait),
                        Ok(None) => {}
                        Err(error) => tracing::error!("{error}"),
                    }
                }
            }
        }
        for step in [Step::Email, Step::Calendar] {
            if worked.contains(&step) && !down.iter().any(|(s, _)| *s == step) {
                self.report_recovery(outages, step);
            }
        }
        next_wake
    }

    /// Runs the steps not yet marked done.
    async fn work(&self, folder: &Path) -> Result<(), (Step, Error)> {
        let job_path = folder.join("job.json");
        let job: JobFile = read_json(&job_path).map_err(|e| (Step::Transcribe, e))?;
        let record = &job.record;
        let recording = folder.join(RECORDING);
        let has_audio = matches!(record.outcome, Outcome::Voicemail { .. }) && recording.exists();

        let transcript_path = folder.join("transcript.json");
        let transcribed = match read_json::<TranscriptFile>(&transcript_path) {
            Ok(done) => done,
            Err(_) => {
                let done = self
                    .transcribe(record, has_audio.then_some(&recording))
                    .await;
                write_json(&transcript_path, &done).map_err(|e| (Step::Transcribe, e))?;
                done
            }
        };
        let call = CallContext {
            record,
            transcript: transcribed.transcript.as_ref(),
            no_transcript: &transcribed.no_transcript,
            timezone: self.shared.timezone,
        };

        let email_marker = folder.join("email.done");
        if !email_marker.exists() {
            let shared = &self.shared;
            let composed = match &record.outcome {
                Outcome::Voicemail { .. } => Some(shared.mailer.voicemail(
                    &call,
                    &recording,
                    &shared.templates,
                    &shared.overrides,
                )),
                Outcome::Missed if shared.mailer.settings().missed_calls => Some(
                    shared
                        .mailer
                        .missed(&call, &shared.templates, &shared.overrides),
                ),
                _ => None,
            };
            if let Some(composed) = composed {
                let composed = composed.map_err(|e| (Step::Email, e.into()))?;
                if let Some(why) = &composed.fallback {
                    shared.journal.write(why);
                }
                shared
                    .mailer
                    .send(&composed.message)
                    .await
                    .map_err(|e| (Step::Email, e.into()))?;
            }
            mark_done(&email_marker).map_err(|e| (Step::Email, e))?;
        }

        let calendar_marker = folder.join("calendar.done");
        if !calendar_marker.exists() {
            let audio = if has_audio {
                Some(
                    std::fs::read(&recording)
                        .map_err(|e| (Step::Calendar, io_error(&recording)(e)))?,
                )
            } else {
                None
            };
            let (ics, fallback) = calendar::event::build(
                &call,
                audio.as_deref(),
                &self.shared.templates,
                &self.shared.overrides,
            )
            .map_err(|e| (Step::Calendar, e.into()))?;
            if let Some(why) = &fallback {
                self.shared.journal.write(why);
            }
            self.shared
                .call_log
                .store(&calendar::event::uid_for(&record.uuid), &ics)
                .await
                .map_err(|e| (Step::Calendar, e.into()))?;
            mark_done(&calendar_marker).map_err(|e| (Step::Calendar, e))?;
        }
        Ok(())
    }

    /// Never fails: a recording that cannot be transcribed still gets its mail and event.
    async fn transcribe(&self, record: &CallRecord, recording: Option<&PathBuf>) -> TranscriptFile {
        let Some(recording) = recording else {
            return TranscriptFile {
                transcript: None,
                no_transcript: "no recording".to_owned(),
            };
        };
        let language = record.language.as_deref();
        let transcriber = &self.shared.transcriber;
        if let Some(reason) = transcriber.unavailable_reason(language) {
            return TranscriptFile {
                transcript: None,
                no_transcript: reason,
            };
        }
        match transcriber.transcribe(recording, language).await {
            Ok(Some(transcript)) => TranscriptFile {
                transcript: Some(transcript),
                no_transcript: String::new(),
            },
            Ok(None) => TranscriptFile {
                transcript: None,
                no_transcript: "the speech-to-text model could not be loaded".to_owned(),
            },
            Err(error) => {
                self.shared
                    .journal
                    .write(format!("voicemail {}: {error}", record.uuid));
                TranscriptFile {
                    transcript: None,
                    no_transcript: "the recording could not be transcribed".to_owned(),
                }
            }
        }
    }

    fn finish(&self, id: &str, folder: &Path) -> Result<(), Error> {
        if self.shared.settings.keep_done {
            let done = self.shared.settings.path.join("done");
            std::fs::create_dir_all(&done).map_err(io_error(&done))?;
            let _ = std::fs::remove_file(folder.join("retry.json"));
            std::fs::rename(folder, done.join(id)).map_err(io_error(folder))
        } else {
            std::fs::remove_dir_all(folder).map_err(io_error(folder))
        }
    }

    /// Schedules the next try, or gives up (moves to `dead/`). Returns the wait, if any.
    fn record_failure(
        &self,
        id: &str,
        folder: &Path,
        previous: Option<RetryFile>,
        error: &str,
    ) -> Result<Option<Duration>, Error> {
        let settings = &self.shared.settings;
        let now = Utc::now();
        let first_failure = previous.as_ref().map_or(now, |r| r.first_failure);
        let failures = previous.as_ref().map_or(0, |r| r.failures) + 1;
        let failing_for = (now - first_failure).to_std().unwrap_or_default();
        if failing_for >= Duration::from_secs(settings.give_up_after_secs) {
            let dead = settings.path.join("dead").join(id);
            std::fs::write(folder.join("reason.txt"), format!("{error}\n"))
                .map_err(io_error(folder))?;
            std::fs::rename(folder, &dead).map_err(io_error(folder))?;
            let job = read_json::<JobFile>(&dead.join("job.json")).ok();
            let who = job.map_or_else(|| id.to_owned(), |j| describe_call(&j.record));
            self.shared.journal.write(format!(
                "gave up on the after-call work for {who} after {failures} tries: {error}; \
                 kept in {}",
                dead.display()
            ));
            return Ok(None);
        }
        let wait = backoff(settings, failures);
        let retry = RetryFile {
            first_failure,
            failures,
            next_try: now + chrono::Duration::from_std(wait).unwrap_or_default(),
            last_error: error.to_owned(),
        };
        write_json(&folder.join("retry.json"), &retry)?;
        Ok(Some(wait))
    }

    /// Email and calendar failures are outages, said once until they end; anything else is
    /// said at a job's first failure only, so a stuck job does not flood the journal.
    fn report_outage(&self, outages: &mut Outages, step: Step, error: &str, first_failure: bool) {
        let flag = match step {
            Step::Email => &mut outages.email,
            Step::Calendar => &mut outages.calendar,
            Step::Transcribe => {
                if first_failure {
                    self.shared
                        .journal
                        .write(format!("spool: {error}; retrying"));
                }
                return;
            }
        };
        if !*flag {
            *flag = true;
            self.shared.journal.write(format!(
                "{} delivery is failing, retrying: {error}",
                step.name()
            ));
        }
    }

    fn report_recovery(&self, outages: &mut Outages, step: Step) {
        let flag = match step {
            Step::Email => &mut outages.email,
            Step::Calendar => &mut outages.calendar,
            Step::Transcribe => return,
        };
        if *flag {
            *flag = false;
            self.shared
                .journal
                .write(format!("{} delivery works again", step.name()));
        }
    }
}

/// "Marie Dubois (+33 1 23 45 67 89)" for journal lines.
fn describe_call(record: &CallRecord) -> String {
    match record.peer_name() {
        Some(name) => format!("{name} ({})", record.peer_display()),
        None => record.peer_display(),
    }
}

/// The first step of a job without its marker.
fn next_step(folder: &Path) -> Option<Step> {
    if !folder.join("transcript.json").exists() {
        Some(Step::Transcribe)
    } else if !folder.join("email.done").exists() {
        Some(Step::Email)
    } else if !folder.join("calendar.done").exists() {
        Some(Step::Calendar)
    } else {
        None
    }
}

/// Exponential, capped, with jitter (between half and all of the step) so that jobs failing
/// together do not retry together.
fn backoff(settings: &SpoolSettings, failures: u32) -> Duration {
    let initial = settings.retry_initial_ms.max(1) as f64;
    let exponential = initial * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    let capped = exponential.min(settings.retry_max_ms.max(1) as f64);
    let jitter: f64 = rand::rng().random_range(0.5..=1.0);
    Duration::from_millis((capped * jitter) as u64)
}

/// The job id: start time (so a listing is in call order) and a file-name-safe call id.
fn job_id(record: &CallRecord) -> String {
    let uid = calendar::event::uid_for(&record.uuid);
    let call = uid.trim_start_matches("patchbay-call-");
    format!("{}-{call}", record.started.format("%Y%m%dT%H%M%S"))
}

fn submit_blocking(
    root: &Path,
    mut record: CallRecord,
    recording: Option<&Path>,
) -> Result<String, Error> {
    let id = job_id(&record);
    let target = root.join("jobs").join(&id);
    if target.exists() || root.join("dead").join(&id).exists() {
        return Ok(id);
    }
    let staging = root
        .join("incoming")
        .join(format!("{id}.{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    if let Some(recording) = recording {
        move_file(recording, &staging.join(RECORDING))?;
        if let Outcome::Voicemail {
            recording: path, ..
        } = &mut record.outcome
        {
            *path = PathBuf::from(RECORDING);
        }
    }
    write_json(
        &staging.join("job.json"),
        &JobFile {
            record,
            submitted: Utc::now(),
        },
    )?;
    sync_dir(&staging)?;
    match std::fs::rename(&staging, &target) {
        Ok(()) => {}
        // Submitted twice at the same moment: the other one won, and it has the audio.
        Err(_) if target.exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(id);
        }
        Err(e) => return Err(io_error(&target)(e)),
    }
    sync_dir(&root.join("jobs"))?;
    Ok(id)
}

/// Rename, or copy + sync + remove across file systems.
fn move_file(from: &Path, to: &Path) -> Result<(), Error> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(io_error(from))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io_error(to))?;
    std::fs::remove_file(from).map_err(io_error(from))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Written to a temporary name, synced, renamed over, parent synced.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    write_durably(path, &bytes)
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn mark_done(path: &Path) -> Result<(), Error> {
    write_durably(path, Utc::now().to_rfc3339().as_bytes())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })
}

fn list(folder: &Path) -> Result<Vec<String>, Error> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io_error(folder))? {
        let entry = entry.map_err(io_error(folder))?;
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let settings = SpoolSettings {
            retry_initial_ms: 1000,
            retry_max_ms: 8000,
            ..SpoolSettings::default()
        };
        for _ in 0..50 {
            let first = backoff(&settings, 1).as_millis();
            assert!((500..=1000).contains(&first), "{first}");
            let third = backoff(&settings, 3).as_millis();
            assert!((2000..=4000).contains(&third), "{third}");
            let tenth = backoff(&settings, 10).as_millis();
            assert!((4000..=8000).contains(&tenth), "{tenth}");
        }
    }
}
