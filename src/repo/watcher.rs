//! Following the branch: a thread polls the ref (and wakes early on filesystem events under
//! `.git/refs` for a local repo), loads each new commit and swaps it in atomically.
//!
//! The thread owns the git repository and the notify watcher; readers only touch the
//! `ArcSwap`, so a lookup on the ring path never waits for a load.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::Utc;
use git2::{Oid, Repository};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::watch;

use super::remote;
use super::snapshot::short;
use super::{read_commit, Error, Loader, Refusal, RepoSettings, Snapshot};
use crate::journal::Journal;

/// How many commit outcomes are remembered for [`RepoHandle::wait_for`].
const OUTCOME_HISTORY: usize = 64;

/// What became of one commit.
#[derive(Clone, Debug)]
pub enum Outcome {
    Live,
    Refused(Refusal),
    /// Not the commit's fault (unreadable object, export folder not writable): retried when
    /// the branch moves again.
    Failed(String),
}

/// A cheap-to-clone view of the live snapshot, for calls and tests.
#[derive(Clone)]
pub struct RepoHandle {
    current: Arc<ArcSwap<Snapshot>>,
    outcomes: Arc<Mutex<VecDeque<(String, Outcome)>>>,
    /// Bumped after each outcome, to wake waiters.
    processed: watch::Receiver<u64>,
    /// How many times the follower has read the branch's head.
    looks: Arc<AtomicU64>,
}

impl RepoHandle {
    /// The live snapshot; a call keeps this `Arc` until it ends.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The swap cell itself, for modules that hold it directly.
    pub fn cell(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.current
    }

    /// Waits until `commit` (full id or a prefix of at least 7 digits) has been loaded or
    /// refused.
    pub async fn wait_for(&self, commit: &str, timeout: Duration) -> Result<Outcome, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut processed = self.processed.clone();
        loop {
            processed.borrow_and_update();
            if let Some(outcome) = self.outcome_of(commit) {
                return Ok(outcome);
            }
            match tokio::time::timeout_at(deadline, processed.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the watcher stopped: one last look.
                _ => {
                    return self.outcome_of(commit).ok_or_else(|| Error::Timeout {
                        commit: commit.to_owned(),
                        waited: timeout,
                    })
                }
            }
        }
    }

    /// Waits until `commit` is live and returns its snapshot; a refusal is an error.
    pub async fn wait_live(&self, commit: &str, timeout: Duration) -> Result<Arc<Snapshot>, Error> {
        match self.wait_for(commit, timeout).await? {
            Outcome::Live => Ok(self.snapshot()),
            Outcome::Refused(refusal) => Err(Error::Refused(refusal)),
            Outcome::Failed(reason) => Err(Error::Refused(Refusal {
                commit: commit.to_owned(),
                problems: vec![super::Problem {
                    file: String::new(),
                    line: None,
                    column: None,
                    message: reason,
                }],
            })),
        }
    }

    /// The most recent commit handled and what became of it (e.g. to email a refusal).
    pub fn last_outcome(&self) -> Option<(String, Outcome)> {
        let outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        outcomes.back().cloned()
    }

    /// Changes each time a commit has been handled; pair with [`RepoHandle::last_outcome`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.processed.clone()
    }

    /// How many times the watcher has looked at the branch so far: once per poll interval
    /// and once per change under `.git`, when idle.
    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::Relaxed)
    }

    fn outcome_of(&self, commit: &str) -> Option<Outcome> {
        if commit.len() < 7 {
            return None;
        }
        let outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        outcomes
            .iter()
            .rev()
            .find(|(id, _)| id.starts_with(commit))
            .map(|(_, outcome)| outcome.clone())
    }
}

/// The running watcher. Dropping it stops the thread.
pub struct Watcher {
    handle: RepoHandle,
    wake: mpsc::Sender<Wake>,
    thread: Option<JoinHandle<()>>,
}

enum Wake {
    RefsChanged,
    Stop,
}

impl Watcher {
    /// Opens the repo, loads the branch's current commit (patchbay's default rules alone if
    /// there is none or it is refused) and follows the branch until `shutdown` completes or
    /// the watcher is dropped. `shutdown` is awaited on the current tokio runtime, if any.
    pub fn start(
        settings: &RepoSettings,
        loader: Loader,
        journal: Journal,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Watcher, Error> {
        let repo = open_or_create(settings)?;
        let built_in = loader.built_in()?;
        let current = Arc::new(ArcSwap::from_pointee(built_in));
        let (processed_tx, processed_rx) = watch::channel(0u64);
        let handle = RepoHandle {
            current,
            outcomes: Arc::new(Mutex::new(VecDeque::with_capacity(OUTCOME_HISTORY))),
            processed: processed_rx,
            looks: Arc::new(AtomicU64::new(0)),
        };
        let (wake, wakes) = mpsc::channel();

        let fs_watch = if settings.remote.is_none() {
            watch_refs(repo.path(), wake.clone())
        } else {
            None
        };

        let mut follower = Follower {
            repo,
            settings: settings.clone(),
            loader,
            journal,
            handle: handle.clone(),
            processed: processed_tx,
            last_seen: None,
            missing_reported: false,
            fetch_down_since: None,
            next_fetch: Instant::now(),
        };
        // The first commit goes live before `start` returns, so the daemon never answers a
        // call with less than what the person committed.
        follower.tick();
        let thread = std::thread::Builder::new()
            .name("repo-watcher".to_owned())
            .spawn(move || {
                let _fs_watch = fs_watch;
                follower.run(wakes);
            })
            .map_err(Error::Thread)?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let stop = wake.clone();
            runtime.spawn(async move {
                shutdown.await;
                let _ = stop.send(Wake::Stop);
            });
        }
        Ok(Watcher {
            handle,
            wake,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> RepoHandle {
        self.handle.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.handle.snapshot()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_or_create(settings: &RepoSettings) -> Result<Repository, Error> {
    let opened = match (&settings.remote, settings.path.exists()) {
        (Some(_), false) => Repository::init_bare(&settings.path),
        _ => Repository::open(&settings.path),
    };
    opened.map_err(|source| Error::Open {
        path: settings.path.clone(),
        source,
    })
}

/// Wakes the follower when anything under `.git/refs` or `.git/packed-refs` changes. Polling
/// still runs, so a failed watch only costs latency.
fn watch_refs(git_dir: &Path, wake: mpsc::Sender<Wake>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading a ref opens it, and inotify reports opens too: waking on those would make
        // each look trigger the next, thousands per second.
        if event.is_ok_and(|event| !event.kind.is_access()) {
            let _ = wake.send(Wake::RefsChanged);
        }
    })
    .map_err(|error| tracing::warn!("cannot watch the phone repo, polling only: {error}"))
    .ok()?;
    let refs = git_dir.join("refs");
    if let Err(error) = watcher
        .watch(&refs, RecursiveMode::Recursive)
        .and_then(|()| watcher.watch(git_dir, RecursiveMode::NonRecursive))
    {
        tracing::warn!("{}: cannot watch, polling only: {error}", refs.display());
    }
    Some(watcher)
}

struct Follower {
    repo: Repository,
    settings: RepoSettings,
    loader: Loader,
    journal: Journal,
    handle: RepoHandle,
    processed: watch::Sender<u64>,
    /// The last commit handled (live, refused or failed), so each is handled once.
    last_seen: Option<Oid>,
    missing_reported: bool,
    /// Local "HH:MM" of the first failed fetch of the current outage.
    fetch_down_since: Option<String>,
    next_fetch: Instant,
}

impl Follower {
    fn run(&mut self, wakes: mpsc::Receiver<Wake>) {
        let poll = self.settings.poll_interval();
        loop {
            match wakes.recv_timeout(poll) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::RefsChanged) | Err(RecvTimeoutError::Timeout) => {}
            }
            // A commit touches several files; one look covers all their events.
            while let Ok(wake) = wakes.try_recv() {
                if let Wake::Stop = wake {
                    return;
                }
            }
            self.tick();
        }
    }

    fn tick(&mut self) {
        if let Some(url) = self.settings.remote.clone() {
            if Instant::now() >= self.next_fetch {
                self.next_fetch = Instant::now() + self.settings.fetch_interval();
                self.fetch(&url);
            }
        }
        let reference = match &self.settings.remote {
            Some(_) => remote::tracking_ref(&self.settings.branch),
            None => format!("refs/heads/{}", self.settings.branch),
        };
        self.handle.looks.fetch_add(1, Ordering::Relaxed);
        let head = match self.repo.refname_to_id(&reference) {
            Ok(id) => id,
            Err(_) => {
                if !self.missing_reported {
                    self.missing_reported = true;
                    self.journal.write(format!(
                        "phone repo {}: no commit on branch {} yet; running patchbay's default rules",
                        self.settings.path.display(),
                        self.settings.branch
                    ));
                }
                return;
            }
        };
        self.missing_reported = false;
        if self.last_seen == Some(head) {
            return;
        }
        self.last_seen = Some(head);
        let commit = head.to_string();
        let outcome = self.load(&commit);
        {
            let mut outcomes = self
                .handle
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if outcomes.len() == OUTCOME_HISTORY {
                outcomes.pop_front();
            }
            outcomes.push_back((commit, outcome));
        }
        self.processed.send_modify(|count| *count += 1);
    }

    fn load(&mut self, commit: &str) -> Outcome {
        let started = Instant::now();
        let running = self.handle.snapshot();
        let running_text = if running.commit().is_empty() {
            "patchbay's default rules".to_owned()
        } else {
            format!("commit {}", running.short_commit())
        };
        let loaded = read_commit(self.repo.path(), commit, &[])
            .map_err(Error::from)
            .and_then(|files| self.loader.load(&files));
        match loaded {
            Ok(snapshot) => {
                let contacts = snapshot.contacts();
                let mut line = format!(
                    "phone repo: commit {} is live ({} contacts, {} greetings; loaded in {} ms)",
                    snapshot.short_commit(),
                    contacts.len(),
                    snapshot.greetings().len(),
                    started.elapsed().as_millis()
                );
                if !contacts.duplicates().is_empty() {
                    line.push_str(&format!(
                        "; {} numbers are on more than one card, `patchbay check` lists them",
                        contacts.duplicates().len()
                    ));
                }
                let warnings: Vec<String> = snapshot
                    .rules()
                    .warnings()
                    .iter()
                    .map(|warning| {
                        format!(
                            "phone repo: commit {}: warning: {warning}",
                            snapshot.short_commit()
                        )
                    })
                    .collect();
                let skipped: Vec<String> = contacts.bad_cards().map(ToString::to_string).collect();
                self.handle.current.store(Arc::new(snapshot));
                self.journal.write(line);
                for card in skipped {
                    self.journal.write(format!("phone repo: {card}"));
                }
                for warning in warnings {
                    self.journal.write(warning);
                }
                if let Some(store) = self.loader.greeting_store() {
                    if let Err(error) = store.clean() {
                        tracing::warn!(
                            "{}: cannot clean old greetings: {error}",
                            store.dir().display()
                        );
                    }
                }
                Outcome::Live
            }
            Err(Error::Refused(refusal)) => {
                self.journal.write(format!(
                    "phone repo: {refusal}; still running {running_text}"
                ));
                Outcome::Refused(refusal)
            }
            Err(error) => {
                self.journal.write(format!(
                    "phone repo: commit {} not loaded: {error}; still running {running_text}",
                    short(commit)
                ));
                Outcome::Failed(error.to_string())
            }
        }
    }

    fn fetch(&mut self, url: &str) {
        let shown = remote::redact(url);
        match remote::fetch(&self.repo, url, &self.settings.branch) {
            Ok(()) => {
                if let Some(since) = self.fetch_down_since.take() {
                    self.journal.write(format!(
                        "phone repo: fetching {shown} works again (it failed since {since})"
                    ));
                }
            }
            Err(error) => {
                if self.fetch_down_since.is_none() {
                    let since = Utc::now()
                        .with_timezone(&self.journal.timezone())
                        .format("%H:%M")
                        .to_string();
                    self.journal.write(format!(
                        "phone repo: cannot fetch {shown} since {since}: {error}; calls keep the current rules"
                    ));
                    self.fetch_down_since = Some(since);
                }
            }
        }
    }
}
