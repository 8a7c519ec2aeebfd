//! The inbound ESL link: one long-lived connection to FreeSWITCH's event socket (:8021) that
//! delivers registrations, gateway states, channel events and heartbeats as [`LinkEvent`]s,
//! and runs `api` / `bgapi` commands.
//!
//! freeswitch-esl-tokio carries each connection (auth, framing, decoding, reply routing); this
//! module is the supervisor the crate deliberately leaves out: it reconnects with capped,
//! jittered exponential backoff, resubscribes, rebuilds the picture with
//! `show channels as json` (FreeSWITCH never replays events), watches for missed HEARTBEATs,
//! correlates bgapi Job-UUIDs with their BACKGROUND_JOB, and writes one journal line when the
//! link goes down and one when it is back. Shutdown is our own flag: the crate's
//! "client requested" reason is overwritten by FreeSWITCH's goodbye notice.
//!
//! Invariant: the crate's types stay in here; callers see [`Client`], [`Config`], [`Error`]
//! and [`LinkEvent`]. Events are never dropped silently: a full queue stalls the reader
//! briefly (FreeSWITCH buffers meanwhile) and anything still dropped is counted in
//! [`Client::dropped_events`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freeswitch_esl_tokio::{
    ConnectionStatus, EslClient, EslConnectOptions, EslError, EslEventStream, EventOverflow,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::command::{self, Command, Format};
use super::event::{parse_channel_list, LinkEvent};
use crate::journal::Journal;
use crate::settings::Secret;

/// Channel events patchbay follows on the inbound link.
const CHANNEL_EVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "CHANNEL_ORIGINATE",
    "BACKGROUND_JOB",
    "HEARTBEAT",
];

/// sofia's CUSTOM subclasses for registrations and gateways.
const SOFIA_SUBCLASSES: &[&str] = &[
    "sofia::register",
    "sofia::unregister",
    "sofia::expire",
    "sofia::gateway_state",
];

/// Unclaimed BACKGROUND_JOB results kept for a bgapi whose reply is still on its way.
const EARLY_JOB_RESULTS: usize = 64;

/// What went wrong on the inbound link.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("FreeSWITCH event socket {address}: not connected right now (reconnecting); try again shortly")]
    NotConnected { address: String },
    #[error("FreeSWITCH event socket {address}: {command} failed: {detail}")]
    Command {
        address: String,
        command: String,
        detail: String,
    },
    #[error("FreeSWITCH event socket {address}: the link dropped before job {job_uuid} finished")]
    JobLost { address: String, job_uuid: String },
    #[error(transparent)]
    Invalid(#[from] command::Error),
}

impl Error {
    /// Whether retrying after a reconnect may help.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Error::NotConnected { .. } | Error::JobLost { .. })
    }
}

/// Where FreeSWITCH is and how patient to be with it.
#[derive(Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub password: Secret,
    /// No event at all for this long means the link is dead (HEARTBEAT comes every 20 s).
    pub heartbeat_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Longest reconnect delay (before jitter), so a FreeSWITCH coming back is found quickly.
    pub backoff_max: Duration,
    /// Events buffered between the socket and our pump (FreeSWITCH's own queue is 100 000).
    pub event_queue: usize,
    /// How long the reader may stall on a full queue before it has to drop an event.
    pub overflow_wait: Duration,
    /// Wait for a command's reply this long (api commands can be slow).
    pub command_timeout: Duration,
    /// TCP connect plus auth.
    pub connect_timeout: Duration,
}

impl Config {
    pub fn new(host: impl Into<String>, port: u16, password: Secret) -> Config {
        Config {
            host: host.into(),
            port,
            password,
            heartbeat_timeout: Duration::from_millis(50_000),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            event_queue: 100_000,
            overflow_wait: Duration::from_secs(2),
            command_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
        }
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .finish_non_exhaustive()
    }
}

/// bgapi results by Job-UUID.
#[derive(Default)]
struct Jobs {
    waiting: HashMap<String, oneshot::Sender<String>>,
    /// Results that arrived before their bgapi reply was read (or belong to someone else).
    early: VecDeque<(String, String)>,
}

struct Shared {
    config: Config,
    /// The live connection, if any (std Mutex: only cloned out, never awaited under).
    current: Mutex<Option<EslClient>>,
    jobs: Mutex<Jobs>,
    /// Events the crate dropped on connections that are gone.
    dropped_before: AtomicU64,
    connected: AtomicBool,
}

impl Shared {
    fn current(&self) -> Option<EslClient> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_current(&self, client: Option<EslClient>) {
        self.connected.store(client.is_some(), Ordering::Release);
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn job_done(&self, job_uuid: &str, body: &str) {
        let mut jobs = self.jobs();
        if let Some(waiter) = jobs.waiting.remove(job_uuid) {
            let _ = waiter.send(body.to_owned());
            return;
        }
        if jobs.early.len() == EARLY_JOB_RESULTS {
            jobs.early.pop_front();
        }
        jobs.early.push_back((job_uuid.to_owned(), body.to_owned()));
    }
}

/// A cheap-to-clone handle on the inbound link.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Start the link in the background; it runs until `shutdown` resolves. Events arrive on
    /// the returned receiver (the link stalls if nobody reads it).
    pub fn start(
        config: Config,
        journal: Journal,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Client, mpsc::Receiver<LinkEvent>) {
        journal.hide(&config.password);
        let shared = Arc::new(Shared {
            config,
            current: Mutex::new(None),
            jobs: Mutex::new(Jobs::default()),
            dropped_before: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        });
        let (events_tx, events_rx) = mpsc::channel(4096);
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(supervise(Arc::clone(&shared), journal, events_tx, stop_rx));
        (Client { shared }, events_rx)
    }

    /// Whether the link is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Events lost because the queue stayed full (all connections so far).
    pub fn dropped_events(&self) -> u64 {
        let live = self
            .shared
            .current()
            .map_or(0, |client| client.dropped_event_count());
        self.shared.dropped_before.load(Ordering::Relaxed) + live
    }

    /// Run a synchronous API command and return its output. It holds back events until it
    /// finishes, so prefer [`Client::bgapi`] for anything slow.
    pub async fn api(&self, command: &str, args: &str) -> Result<String, Error> {
        let wire = Command::Api { command, args }.to_crate()?;
        let client = self.connected_client()?;
        let reply = client
            .send_command(wire)
            .await
            .map_err(|error| self.command_error(command, error))?;
        Ok(reply.body().unwrap_or_default().to_owned())
    }

    /// Run an API command in the background and return its output (the BACKGROUND_JOB body,
    /// e.g. `+OK <uuid>\n` or `-ERR NO_ANSWER\n`) once it finishes.
    pub async fn bgapi(&self, command: &str, args: &str) -> Result<String, Error> {
        let wire = Command::BgApi { command, args }.to_crate()?;
        let client = self.connected_client()?;
        let reply = client
            .send_command(wire)
            .await
            .map_err(|error| self.command_error(command, error))?;
        let job_uuid = match reply.job_uuid() {
            Some(job_uuid) if reply.is_success() => job_uuid.to_owned(),
            _ => {
                return Err(Error::Command {
                    address: self.shared.config.address(),
                    command: format!("bgapi {command}"),
                    detail: reply
                        .reply_text()
                        .unwrap_or("no Job-UUID in the reply")
                        .to_owned(),
                })
            }
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut jobs = self.shared.jobs();
            if let Some(index) = jobs.early.iter().position(|(uuid, _)| *uuid == job_uuid) {
                if let Some((_, body)) = jobs.early.remove(index) {
                    return Ok(body);
                }
            }
            jobs.waiting.insert(job_uuid.clone(), tx);
        }
        rx.await.map_err(|_| Error::JobLost {
            address: self.shared.config.address(),
            job_uuid,
        })
    }

    fn connected_client(&self) -> Result<EslClient, Error> {
        self.shared.current().ok_or_else(|| Error::NotConnected {
            address: self.shared.config.address(),
        })
    }

    fn command_error(&self, command: &str, error: EslError) -> Error {
        Error::Command {
            address: self.shared.config.address(),
            command: command.to_owned(),
            detail: error.to_string(),
        }
    }
}

/// Connect, authenticate and subscribe once.
async fn connect(config: &Config) -> Result<(EslClient, EslEventStream), String> {
    let options = EslConnectOptions::new()
        .with_event_queue_size(config.event_queue)
        .with_event_overflow(EventOverflow::BlockFor(config.overflow_wait))
        .with_connect_timeout(config.connect_timeout);
    let (client, stream) = EslClient::connect_with_options(
        &config.host,
        config.port,
        config.password.expose(),
        options,
    )
    .await
    .map_err(|error| format!("cannot connect to {}: {error}", config.address()))?;
    client.set_command_timeout(config.command_timeout);
    let subscribe = Command::Event {
        format: Format::Json,
        events: CHANNEL_EVENTS,
        custom: SOFIA_SUBCLASSES,
    }
    .to_crate()
    .map_err(|error| error.to_string())?;
    let reply = client
        .send_command(subscribe)
        .await
        .map_err(|error| format!("subscribing to events failed: {error}"))?;
    if !reply.is_success() {
        return Err(format!(
            "FreeSWITCH refused the event subscription: {}",
            reply.reply_text().unwrap_or("(no reply text)")
        ));
    }
    Ok((client, stream))
}

/// Reconnect delay for the given failed attempt: exponential, capped, with ±20 % jitter so
/// many patchbays do not hammer one FreeSWITCH in step.
fn backoff(config: &Config, attempt: u32) -> Duration {
    let base = config
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(config.backoff_max);
    let jitter: f64 = rand::random_range(0.8..1.2);
    base.mul_f64(jitter)
}

async fn supervise(
    shared: Arc<Shared>,
    journal: Journal,
    events: mpsc::Sender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    // When the link went down, and whether the person has been told.
    let mut down_since: Option<Instant> = None;
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let connected = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            connected = connect(&config) => connected,
        };
        let (client, stream) = match connected {
            Ok(link) => link,
            Err(reason) => {
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    link_down(&journal, &events, reason).await;
                } else {
                    tracing::debug!("FreeSWITCH link: {reason}");
                }
                let delay = backoff(&config, attempt);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        attempt = 0;
        shared.set_current(Some(client.clone()));
        if let Some(since) = down_since.take() {
            let down_for = since.elapsed();
            journal.write(format!(
                "FreeSWITCH link back after {:.1} s",
                down_for.as_secs_f64()
            ));
            let _ = events.send(LinkEvent::LinkRestored { down_for }).await;
        } else {
            tracing::info!("FreeSWITCH link up ({})", config.address());
        }
        let _ = events.send(LinkEvent::LinkUp).await;
        send_snapshot(&client, &events).await;

        let ended = pump(&shared, stream, &events, &mut stop).await;
        shared.set_current(None);
        shared
            .dropped_before
            .fetch_add(client.dropped_event_count(), Ordering::Relaxed);
        // Jobs in flight are stranded on the old connection: wake their callers.
        shared.jobs().waiting.clear();
        match ended {
            PumpEnd::Shutdown => {
                let _ = client.disconnect().await;
                break;
            }
            PumpEnd::Lost(reason) => {
                if *stop.borrow() {
                    break;
                }
                let _ = client.disconnect().await;
                down_since = Some(Instant::now());
                link_down(&journal, &events, reason).await;
            }
        }
    }
    shared.set_current(None);
    shared.jobs().waiting.clear();
}

async fn link_down(journal: &Journal, events: &mpsc::Sender<LinkEvent>, reason: String) {
    journal.write(format!("FreeSWITCH link down: {reason}"));
    let _ = events.send(LinkEvent::LinkDown { reason }).await;
}

/// Rebuild the picture: the channels FreeSWITCH has now.
async fn send_snapshot(client: &EslClient, events: &mpsc::Sender<LinkEvent>) {
    let Ok(wire) = (Command::Api {
        command: "show",
        args: "channels as json",
    })
    .to_crate() else {
        return;
    };
    let output = match client.send_command(wire).await {
        Ok(reply) => reply.body().unwrap_or_default().to_owned(),
        Err(error) => {
            tracing::warn!("FreeSWITCH link: show channels failed: {error}");
            return;
        }
    };
    match parse_channel_list(&output) {
        Ok(channels) => {
            let _ = events.send(LinkEvent::Snapshot { channels }).await;
        }
        Err(error) => tracing::warn!("FreeSWITCH link: {error}"),
    }
}

enum PumpEnd {
    Shutdown,
    Lost(String),
}

/// Move events from the connection to the consumer until the connection ends.
async fn pump(
    shared: &Shared,
    mut stream: EslEventStream,
    events: &mpsc::Sender<LinkEvent>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let watchdog = shared.config.heartbeat_timeout;
    let mut deadline = Instant::now() + watchdog;
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return PumpEnd::Shutdown,
            item = tokio::time::timeout_at(deadline, stream.recv()) => item,
        };
        let item = match item {
            Err(_) => {
                return PumpEnd::Lost(format!(
                    "no HEARTBEAT or other event for {:.1} s, treating the link as dead",
                    watchdog.as_secs_f64()
                ))
            }
            Ok(None) => {
                let reason = match stream.status() {
                    ConnectionStatus::Disconnected(reason) => reason.to_string(),
                    ConnectionStatus::Connected => "the event stream ended".to_owned(),
                    _ => "the connection ended".to_owned(),
                };
                return PumpEnd::Lost(reason);
            }
            Ok(Some(item)) => item,
        };
        // Any traffic proves the link is alive, HEARTBEAT or not.
        deadline = Instant::now() + watchdog;
        let event = match item {
            Ok(event) => event,
            Err(EslError::QueueFull) => {
                tracing::warn!("FreeSWITCH link: events were dropped (queue full)");
                continue;
            }
            Err(error) if error.is_connection_error() => return PumpEnd::Lost(error.to_string()),
            Err(error) => {
                tracing::error!("FreeSWITCH link: dropped an event: {error}");
                continue;
            }
        };
        match LinkEvent::from_headers(&event) {
            Ok(Some(link_event)) => {
                if let LinkEvent::BackgroundJob { job_uuid, body } = &link_event {
                    shared.job_done(job_uuid, body);
                }
                // A consumer that went away is not a reason to drop the link.
                let _ = events.send(link_event).await;
            }
            Ok(None) => {}
            Err(error) => tracing::error!("FreeSWITCH link: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let config = Config::new("127.0.0.1", 8021, Secret::new("ClueCon"));
        let first = backoff(&config, 0);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for attempt in 0..40 {
            assert!(backoff(&config, attempt) <= Duration::from_millis(1200));
        }
        assert!(backoff(&config, 10) >= Duration::from_millis(800));
    }

    #[test]
    fn config_debug_hides_the_password() {
        let config = Config::new("127.0.0.1", 8021, Secret::new("hunter22"));
        assert!(!format!("{config:?}").contains("hunter22"));
    }
}
