//! The inbound ESL link: one long-lived connection to FreeSWITCH's event socket (:8021) that
//! delivers registrations, gateway states, channel events and heartbeats as [`LinkEvent`]s,
//! and runs `api` / `bgapi` commands.
//!
//! The supervisor reconnects with capped, jittered exponential backoff, resubscribes,
//! rebuilds the picture with `show channels as json` (FreeSWITCH never replays events),
//! watches for missed HEARTBEATs, correlates bgapi Job-UUIDs with their BACKGROUND_JOB, and
//! writes one journal line when the link goes down and one when it is back. Shutdown is our
//! own flag, never inferred from how the socket ended.
//!
//! The connection itself is ours, not freeswitch-esl-tokio's: measured on the recorded
//! capture stream, the crate spent about 110 µs of CPU per event (every header normalised
//! against its header enum, lower-cased into an alias map and inserted in an IndexMap) and so
//! could not come near the 200 000 events/s this link must take. Here frames are split with
//! [`super::frame`] and event bodies are read in one pass by [`super::scan`], which decodes
//! only the values patchbay keeps. The reader only splits frames; each event body is decoded
//! by the receiver ([`LinkEvents::recv`]), so reading and decoding run on two cores.
//!
//! Invariant: events are never dropped silently. A full consumer queue stalls the reader for
//! at most `overflow_wait` (FreeSWITCH buffers meanwhile, as it does for any slow reader);
//! anything still dropped is counted in [`Client::dropped_events`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::command::{self, Command, Format};
use super::event::{parse_channel_list, parse_registration_list, BodyFormat, LinkEvent};
use super::frame::Frame;
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
    // Digits pressed on a bridged device's leg reach only this link: the call's outbound
    // socket follows the caller's leg alone (myevents).
    "DTMF",
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
    /// Events buffered for the consumer (FreeSWITCH's own per-listener queue is 100 000).
    pub event_queue: usize,
    /// How long the reader may stall on a full consumer queue before it drops an event
    /// (replies to commands wait meanwhile, so keep it short).
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

/// A reply to one command.
struct Reply {
    /// `Reply-Text` of a command/reply.
    text: Option<String>,
    job_uuid: Option<String>,
    /// The output of an api/response.
    body: Option<String>,
}

/// The write side of one connection and the replies it waits for.
struct Link {
    /// Held while a command is written, so the reply FIFO matches the wire order.
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// FreeSWITCH answers commands in order; std Mutex: nothing awaits under it.
    replies: Mutex<Option<VecDeque<oneshot::Sender<Reply>>>>,
}

impl Link {
    /// Write a command and wait for its reply (no timeout here: `api` may run for long;
    /// callers bound it where they need to).
    async fn send(&self, command: Command<'_>) -> Result<Reply, String> {
        let wire = command.to_wire().map_err(|error| error.to_string())?;
        let (tx, rx) = oneshot::channel();
        {
            let mut writer = self.writer.lock().await;
            match self
                .replies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
            {
                Some(replies) => replies.push_back(tx),
                None => return Err("the connection is closed".to_owned()),
            }
            writer
                .write_all(wire.as_bytes())
                .await
                .map_err(|error| format!("cannot write {}: {error}", command.name()))?;
        }
        rx.await
            .map_err(|_| "the connection closed before the reply".to_owned())
    }

    fn on_reply(&self, reply: Reply) {
        let waiter = self
            .replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .and_then(VecDeque::pop_front);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            None => tracing::warn!("FreeSWITCH link: a reply nobody asked for"),
        }
    }

    /// No reply will come any more: wake every waiter with an error.
    fn close(&self) {
        self.replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

struct Shared {
    config: Config,
    /// The live connection, if any (std Mutex: only cloned out, never awaited under).
    current: Mutex<Option<Arc<Link>>>,
    jobs: Mutex<Jobs>,
    /// Events dropped because the consumer queue stayed full.
    dropped: AtomicU64,
    connected: AtomicBool,
}

impl Shared {
    fn current(&self) -> Option<Arc<Link>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_current(&self, link: Option<Arc<Link>>) {
        self.connected.store(link.is_some(), Ordering::Release);
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
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
    /// the returned receiver (the link stalls, then drops, if nobody reads it).
    pub fn start(
        config: Config,
        journal: Journal,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Client, LinkEvents) {
        journal.hide(&config.password);
        let queue = config.event_queue.max(1);
        let shared = Arc::new(Shared {
            config,
            current: Mutex::new(None),
            jobs: Mutex::new(Jobs::default()),
            dropped: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        });
        let (events_tx, events_rx) = mpsc::channel(queue);
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(supervise(Arc::clone(&shared), journal, events_tx, stop_rx));
        (Client { shared }, LinkEvents { queue: events_rx })
    }

    /// Whether the link is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Events lost because the consumer queue stayed full for longer than `overflow_wait`.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Run a synchronous API command and return its output. It holds back events until it
    /// finishes, so prefer [`Client::bgapi`] for anything slow.
    pub async fn api(&self, command: &str, args: &str) -> Result<String, Error> {
        let wire = Command::Api { command, args };
        wire.to_wire()?;
        let reply = self.run(wire).await?;
        Ok(reply.body.unwrap_or_default())
    }

    /// Run an API command in the background and return its output (the BACKGROUND_JOB body,
    /// e.g. `+OK <uuid>\n` or `-ERR NO_ANSWER\n`) once it finishes.
    pub async fn bgapi(&self, command: &str, args: &str) -> Result<String, Error> {
        let wire = Command::BgApi { command, args };
        wire.to_wire()?;
        let reply = self.run(wire).await?;
        let job_uuid = match (reply.job_uuid, &reply.text) {
            (Some(job_uuid), Some(text)) if text.starts_with("+OK") => job_uuid,
            (_, text) => {
                return Err(Error::Command {
                    address: self.shared.config.address(),
                    command: format!("bgapi {command}"),
                    detail: text
                        .clone()
                        .unwrap_or_else(|| "no Job-UUID in the reply".to_owned()),
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

    async fn run(&self, command: Command<'_>) -> Result<Reply, Error> {
        let address = self.shared.config.address();
        let link = self.shared.current().ok_or_else(|| Error::NotConnected {
            address: address.clone(),
        })?;
        match tokio::time::timeout(self.shared.config.command_timeout, link.send(command)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(detail)) => Err(Error::Command {
                address,
                command: command.name().to_owned(),
                detail,
            }),
            Err(_) => Err(Error::Command {
                address,
                command: command.name().to_owned(),
                detail: format!(
                    "no reply within {:.0} s",
                    self.shared.config.command_timeout.as_secs_f64()
                ),
            }),
        }
    }
}

/// Reads whole frames off the socket, parsing in place. An event frame leaves the buffer
/// as a shared slice of it ([`Bytes`]), without a copy.
struct FrameReader {
    read: OwnedReadHalf,
    buffer: BytesMut,
}

impl FrameReader {
    fn new(read: OwnedReadHalf) -> Self {
        FrameReader {
            read,
            buffer: BytesMut::with_capacity(256 * 1024),
        }
    }

    /// A frame already in the buffer, without reading.
    fn buffered(&mut self) -> Result<Option<Frame>, String> {
        match Frame::parse(&self.buffer) {
            Ok(Some((frame, used))) => {
                self.buffer.advance(used);
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Like [`FrameReader::buffered`], but an event frame comes out as its raw body, to be
    /// decoded by whoever receives it: events are nearly all the traffic on this link.
    fn buffered_incoming(&mut self) -> Result<Option<Incoming>, String> {
        let extent = match Frame::check(&self.buffer) {
            Ok(Some(extent)) => extent,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        let format = match extent.content_type(&self.buffer) {
            Some(b"text/event-json") => BodyFormat::Json,
            Some(b"text/event-plain") => BodyFormat::Plain,
            _ => return Ok(self.buffered()?.map(Incoming::Frame)),
        };
        let frame = self.buffer.split_to(extent.len()).freeze();
        let body = frame.slice_ref(extent.body(&frame));
        Ok(Some(Incoming::Event(RawEvent { format, body })))
    }

    /// The next frame; `Ok(None)` when FreeSWITCH closed the socket between frames.
    /// Cancel-safe: bytes are only ever appended once a read completed.
    async fn next(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// [`FrameReader::next`] with event frames as raw bodies.
    async fn next_incoming(&mut self) -> Result<Option<Incoming>, String> {
        loop {
            if let Some(incoming) = self.buffered_incoming()? {
                return Ok(Some(incoming));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Read more bytes; `Ok(false)` when FreeSWITCH closed the socket between frames.
    async fn fill(&mut self) -> Result<bool, String> {
        // Large reads: under load one brings dozens of events. Event bodies still being
        // decoded keep their part of the old allocation alive; the unread rest moves over.
        if self.buffer.capacity() - self.buffer.len() < 64 * 1024 {
            self.buffer.reserve(256 * 1024);
        }
        let read = self
            .read
            .read_buf(&mut self.buffer)
            .await
            .map_err(|error| format!("read error: {error}"))?;
        if read > 0 {
            return Ok(true);
        }
        if self.buffer.is_empty() {
            return Ok(false);
        }
        Err(format!(
            "connection closed in the middle of a frame ({} bytes buffered)",
            self.buffer.len()
        ))
    }
}

/// What the reader hands the pump: an event frame's body, or any other frame.
enum Incoming {
    Event(RawEvent),
    Frame(Frame),
}

/// An event frame's body as it came off the socket.
struct RawEvent {
    format: BodyFormat,
    body: Bytes,
}

impl RawEvent {
    /// Whether this may be a BACKGROUND_JOB, which the link itself must read (it settles a
    /// bgapi call). FreeSWITCH writes Event-Name first, so that is looked at first; a body
    /// in another order is searched whole.
    fn may_be_background_job(&self) -> bool {
        const NAME: &[u8] = b"BACKGROUND_JOB";
        let first = match self.format {
            BodyFormat::Plain => self.body.strip_prefix(b"Event-Name: ".as_slice()),
            BodyFormat::Json => self.body.strip_prefix(b"{\"Event-Name\":\"".as_slice()),
        };
        match first {
            Some(rest) => rest.starts_with(NAME),
            None => memchr::memmem::find(&self.body, NAME).is_some(),
        }
    }

    fn decode(&self) -> Option<LinkEvent> {
        decode_body(self.format, &self.body)
    }
}

/// What travels from the link to the consumer. Event bodies are decoded on the consumer's
/// side ([`LinkEvents::recv`]): the reader then only reads and splits frames, and the two
/// share the work across two cores instead of the reader doing nearly all of it.
enum Queued {
    Event(LinkEvent),
    Raw(RawEvent),
}

/// The link's events, in the order FreeSWITCH sent them.
pub struct LinkEvents {
    queue: mpsc::Receiver<Queued>,
}

impl LinkEvents {
    /// The next event; `None` once the link has stopped. Cancel-safe. Events patchbay does
    /// not use, and bodies that cannot be read (logged), are skipped.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        loop {
            match self.queue.recv().await? {
                Queued::Event(event) => return Some(event),
                Queued::Raw(raw) => {
                    if let Some(event) = raw.decode() {
                        return Some(event);
                    }
                }
            }
        }
    }
}

/// Read frames until one of `content_type` comes (anything else before it is a protocol
/// error here: during the handshake FreeSWITCH sends nothing unasked).
async fn expect_frame(reader: &mut FrameReader, content_type: &str) -> Result<Frame, String> {
    let frame = reader
        .next()
        .await?
        .ok_or_else(|| "FreeSWITCH closed the connection".to_owned())?;
    match frame.content_type() {
        Some(kind) if kind == content_type => Ok(frame),
        Some("text/rude-rejection") => Err("FreeSWITCH denied access (ACL)".to_owned()),
        other => Err(format!("expected {content_type}, got {other:?}")),
    }
}

/// Connect, authenticate and subscribe once; return the link, the reader and the events
/// that arrived while the picture was rebuilt (to deliver after the snapshot).
async fn connect(config: &Config) -> Result<(Arc<Link>, FrameReader, Vec<LinkEvent>), String> {
    let address = config.address();
    let stream = TcpStream::connect((config.host.as_str(), config.port));
    let stream = tokio::time::timeout(config.connect_timeout, stream)
        .await
        .map_err(|_| format!("cannot connect to {address}: timed out"))?
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let handshake = async {
        expect_frame(&mut reader, "auth/request").await?;
        let auth = Command::Auth {
            password: &config.password,
        }
        .to_wire()
        .map_err(|error| error.to_string())?;
        write
            .write_all(auth.as_bytes())
            .await
            .map_err(|error| format!("cannot write auth: {error}"))?;
        let reply = expect_frame(&mut reader, "command/reply").await?;
        match reply.header("Reply-Text") {
            Some(text) if text.starts_with("+OK") => Ok(()),
            Some(text) => Err(format!(
                "FreeSWITCH refused the password ({text}); check the event socket password"
            )),
            None => Err("the auth reply has no Reply-Text".to_owned()),
        }
    };
    tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| format!("{address}: no auth exchange within the connect timeout"))?
        .map_err(|error| format!("{address}: {error}"))?;

    // Subscribe, then ask for the channels; replies come in order, events may come between.
    for command in [
        Command::Event {
            format: Format::Json,
            events: CHANNEL_EVENTS,
            custom: SOFIA_SUBCLASSES,
        },
        Command::Api {
            command: "show",
            args: "channels as json",
        },
        // Registrations made or dropped while the link was down sent their events to
        // nobody: the registered devices are asked for as well.
        Command::Api {
            command: "show",
            args: "registrations as json",
        },
    ] {
        let wire = command.to_wire().map_err(|error| error.to_string())?;
        write
            .write_all(wire.as_bytes())
            .await
            .map_err(|error| format!("{address}: cannot write {}: {error}", command.name()))?;
    }
    let mut early = Vec::new();
    let mut subscribed = false;
    let mut channels = None;
    let snapshot = loop {
        let frame = tokio::time::timeout(config.command_timeout, reader.next())
            .await
            .map_err(|_| format!("{address}: no reply to the subscription"))??
            .ok_or_else(|| format!("{address}: FreeSWITCH closed the connection"))?;
        match frame.content_type() {
            Some("command/reply") if !subscribed => {
                let text = frame.header("Reply-Text").unwrap_or_default();
                if !text.starts_with("+OK") {
                    return Err(format!(
                        "{address}: FreeSWITCH refused the event subscription: {text}"
                    ));
                }
                subscribed = true;
            }
            // API replies come in the order the commands were sent.
            Some("api/response") if subscribed => {
                let output = frame
                    .body()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                match channels.take() {
                    None => {
                        channels = Some(parse_channel_list(&output).unwrap_or_else(|error| {
                            tracing::warn!("FreeSWITCH link: {error}");
                            Vec::new()
                        }));
                    }
                    Some(channels) => {
                        let registrations = parse_registration_list(&output)
                            .map_err(|error| tracing::warn!("FreeSWITCH link: {error}"))
                            .ok();
                        break LinkEvent::Snapshot {
                            channels,
                            registrations,
                        };
                    }
                }
            }
            _ => {
                if let Some(event) = decode(&frame) {
                    early.push(event);
                }
            }
        }
    };
    early.insert(0, snapshot);
    let link = Arc::new(Link {
        writer: tokio::sync::Mutex::new(write),
        replies: Mutex::new(Some(VecDeque::new())),
    });
    Ok((link, reader, early))
}

/// Turn an event frame into a [`LinkEvent`]; `None` for frames patchbay does not use.
fn decode(frame: &Frame) -> Option<LinkEvent> {
    let format = match frame.content_type() {
        Some("text/event-json") => BodyFormat::Json,
        Some("text/event-plain") => BodyFormat::Plain,
        other => {
            tracing::error!("FreeSWITCH link: dropped a frame of unexpected type {other:?}");
            return None;
        }
    };
    decode_body(format, frame.body()?)
}

fn decode_body(format: BodyFormat, body: &[u8]) -> Option<LinkEvent> {
    match LinkEvent::from_body(format, body) {
        Ok(event) => event,
        Err(error) => {
            tracing::error!("FreeSWITCH link: {error}");
            None
        }
    }
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
    events: mpsc::Sender<Queued>,
    mut stop: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    // When the link went down (the person has been told once).
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
        let (link, reader, early) = match connected {
            Ok(connection) => connection,
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
        shared.set_current(Some(Arc::clone(&link)));
        if let Some(since) = down_since.take() {
            let down_for = since.elapsed();
            journal.write(format!(
                "FreeSWITCH link back after {:.1} s",
                down_for.as_secs_f64()
            ));
            let _ = events
                .send(Queued::Event(LinkEvent::LinkRestored { down_for }))
                .await;
        } else {
            tracing::info!("FreeSWITCH link up ({})", config.address());
        }
        let _ = events.send(Queued::Event(LinkEvent::LinkUp)).await;
        for event in early {
            deliver(&shared, &events, Queued::Event(event)).await;
        }

        let ended = pump(&shared, &link, reader, &events, &mut stop).await;
        shared.set_current(None);
        link.close();
        // Jobs in flight are stranded on the old connection: wake their callers.
        shared.jobs().waiting.clear();
        match ended {
            PumpEnd::Shutdown => {
                if let Ok(exit) = Command::Exit.to_wire() {
                    let _ = link.writer.lock().await.write_all(exit.as_bytes()).await;
                }
                break;
            }
            PumpEnd::Lost(reason) => {
                if *stop.borrow() {
                    break;
                }
                down_since = Some(Instant::now());
                link_down(&journal, &events, reason).await;
            }
        }
    }
    shared.set_current(None);
    shared.jobs().waiting.clear();
}

async fn link_down(journal: &Journal, events: &mpsc::Sender<Queued>, reason: String) {
    journal.write(format!("FreeSWITCH link down: {reason}"));
    let _ = events
        .send(Queued::Event(LinkEvent::LinkDown { reason }))
        .await;
}

/// Hand one event to the consumer: settle bgapi jobs, wait a bounded time on a full queue.
async fn deliver(shared: &Shared, events: &mpsc::Sender<Queued>, event: Queued) {
    let event = match event {
        Queued::Raw(raw) if raw.may_be_background_job() => match raw.decode() {
            Some(event) => Queued::Event(event),
            None => return,
        },
        other => other,
    };
    if let Queued::Event(LinkEvent::BackgroundJob { job_uuid, body }) = &event {
        shared.job_done(job_uuid, body);
    }
    match events.try_send(event) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(event)) => {
            let waited = tokio::time::timeout(shared.config.overflow_wait, events.send(event));
            if waited.await.is_err() {
                let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        "FreeSWITCH link: the event consumer is stuck, {dropped} events dropped"
                    );
                }
            }
        }
    }
}

enum PumpEnd {
    Shutdown,
    Lost(String),
}

/// Move events from the connection to the consumer, and replies to their commands, until
/// the connection ends.
async fn pump(
    shared: &Shared,
    link: &Link,
    mut reader: FrameReader,
    events: &mpsc::Sender<Queued>,
    stop: &mut watch::Receiver<bool>,
) -> PumpEnd {
    let watchdog = shared.config.heartbeat_timeout;
    let mut deadline = Instant::now() + watchdog;
    let mut notice: Option<String> = None;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return PumpEnd::Shutdown,
            frame = tokio::time::timeout_at(deadline, reader.next_incoming()) => frame,
        };
        let frame = match frame {
            Err(_) => {
                return PumpEnd::Lost(format!(
                    "no HEARTBEAT or other event for {:.1} s, treating the link as dead",
                    watchdog.as_secs_f64()
                ))
            }
            Ok(Err(error)) => return PumpEnd::Lost(error),
            Ok(Ok(None)) => {
                return PumpEnd::Lost(notice.unwrap_or_else(|| "connection closed".to_owned()))
            }
            Ok(Ok(Some(frame))) => frame,
        };
        // Any traffic proves the link is alive, HEARTBEAT or not.
        deadline = Instant::now() + watchdog;
        // Handle this frame and every other one already buffered before polling again: one
        // read brings dozens of events under load.
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if let Some(end) = handle_frame(shared, link, frame, events, &mut notice).await {
                return end;
            }
            match reader.buffered_incoming() {
                Ok(buffered) => next = buffered,
                Err(error) => return PumpEnd::Lost(error),
            }
        }
    }
}

/// Route one frame: replies to their command, events to the consumer. `Some` ends the link.
async fn handle_frame(
    shared: &Shared,
    link: &Link,
    incoming: Incoming,
    events: &mpsc::Sender<Queued>,
    notice: &mut Option<String>,
) -> Option<PumpEnd> {
    let frame = match incoming {
        Incoming::Event(raw) => {
            deliver(shared, events, Queued::Raw(raw)).await;
            return None;
        }
        Incoming::Frame(frame) => frame,
    };
    match frame.content_type() {
        Some("command/reply") => link.on_reply(Reply {
            text: frame.header("Reply-Text").map(str::to_owned),
            job_uuid: frame.header("Job-UUID").map(str::to_owned),
            body: None,
        }),
        Some("api/response") => link.on_reply(Reply {
            text: None,
            job_uuid: None,
            body: frame
                .body()
                .map(|body| String::from_utf8_lossy(body).into_owned()),
        }),
        Some("text/disconnect-notice") => {
            let text = frame
                .body()
                .map(|body| String::from_utf8_lossy(body).trim().to_owned())
                .unwrap_or_default();
            *notice = Some(format!("FreeSWITCH said goodbye: {text}"));
        }
        Some("text/rude-rejection") => {
            return Some(PumpEnd::Lost("FreeSWITCH denied access (ACL)".to_owned()))
        }
        _ => {
            if let Some(event) = decode(&frame) {
                deliver(shared, events, Queued::Event(event)).await;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_jobs_are_recognised_for_the_link_to_read_itself() {
        let raw = |format, body: &[u8]| RawEvent {
            format,
            body: Bytes::copy_from_slice(body),
        };
        let job = b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 4\n\n+OK\n";
        assert!(raw(BodyFormat::Plain, job).may_be_background_job());
        let json = br#"{"Event-Name":"BACKGROUND_JOB","Job-UUID":"j1","_body":"+OK"}"#;
        assert!(raw(BodyFormat::Json, json).may_be_background_job());
        // Another order than FreeSWITCH's is still found.
        let reordered = br#"{"Job-UUID":"j1","Event-Name":"BACKGROUND_JOB","_body":"+OK"}"#;
        assert!(raw(BodyFormat::Json, reordered).may_be_background_job());
        let channel = b"Event-Name: CHANNEL_ANSWER\nUnique-ID: u1\n\n";
        assert!(!raw(BodyFormat::Plain, channel).may_be_background_job());
        match raw(BodyFormat::Plain, job).decode() {
            Some(LinkEvent::BackgroundJob { job_uuid, body }) => {
                assert_eq!((job_uuid.as_str(), body.as_str()), ("j1", "+OK\n"));
            }
            other => panic!("{other:?}"),
        }
    }

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
