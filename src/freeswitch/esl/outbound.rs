//! The outbound ESL server: FreeSWITCH's dialplan `socket` app opens one TCP connection per
//! call, and each gets its own task and an [`OutboundCall`] handle implementing
//! [`CallControl`] for the call flows.
//!
//! Per connection: `connect` (its reply, the channel data, becomes [`ChannelData`]),
//! `myevents`, `linger`, then the flow's requests, each a `sendmsg` execute with `event-lock`
//! and a fresh `Event-UUID` that is settled by the CHANNEL_EXECUTE_COMPLETE carrying that
//! `Application-UUID`. Framing comes from [`super::frame`]; commands from [`super::command`].
//!
//! This side does not use freeswitch-esl-tokio: its sendmsg re-cases header names
//! (`Event-UUID` goes out as `Event-Uuid`), always names the event format after `myevents`,
//! swallows the linger notice and puts one global 5 s timeout on every reply, so the bytes
//! we send would not be the ones FreeSWITCH documents and captures show.
//!
//! Invariants: a completion is matched only by its Application-UUID; once the channel is
//! finished (CHANNEL_HANGUP_COMPLETE or the socket closing) every pending request fails at
//! once; hostile bytes end that one connection with a logged error, never the server.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};

use super::command::{self, Command, Execute};
use super::event::{ChannelEvent, ChannelEventKind, ChannelField, Headers, WireEvent};
use super::frame::{self, url_decode, Frame};
use crate::calls::{
    BridgeOutcome, BridgeRequest, CallControl, CallEvent, ControlError, ControlFuture,
    DigitsRequest, PlaybackOutcome, RecordOutcome, RecordRequest, TransferredAway,
};

/// Why one outbound connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("outbound esl {peer}: {source}")]
    Frame {
        peer: SocketAddr,
        #[source]
        source: frame::Error,
    },
    #[error("outbound esl {peer}: a frame grew past {limit} bytes (expected ESL frames of a few KB); dropping the connection")]
    FrameTooLarge { peer: SocketAddr, limit: usize },
    #[error("outbound esl {peer}: connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { peer: SocketAddr, buffered: usize },
    #[error("outbound esl {peer}: {context}: {source}")]
    Io {
        peer: SocketAddr,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("outbound esl {peer}: the connect reply {problem} (expected the channel data ending in Reply-Text: +OK)")]
    Handshake { peer: SocketAddr, problem: String },
    #[error("outbound esl {peer}: no connect reply within {waited:?}")]
    HandshakeTimeout { peer: SocketAddr, waited: Duration },
    #[error("outbound esl {peer}: {command} refused: {reply}")]
    Refused {
        peer: SocketAddr,
        command: &'static str,
        reply: String,
    },
}

/// How the outbound server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seconds FreeSWITCH keeps the socket open after hangup so the final events arrive
    /// (`None` lingers until the socket is closed by us).
    pub linger_secs: Option<u32>,
    /// How long FreeSWITCH may take to answer `connect`.
    pub handshake_timeout: Duration,
    /// Largest frame accepted; real ones are under 16 KB.
    pub max_frame_bytes: usize,
    /// Channel variable `play_and_get_digits` stores the digits in.
    pub digits_variable: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            linger_secs: Some(10),
            handshake_timeout: Duration::from_secs(10),
            max_frame_bytes: 4 * 1024 * 1024,
            digits_variable: "patchbay_digits".to_owned(),
        }
    }
}

/// The channel as FreeSWITCH described it in the connect reply (values decoded, untrusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelData {
    pub uuid: String,
    pub channel_name: Option<String>,
    pub caller_id_name: Option<String>,
    pub caller_id_number: Option<String>,
    pub destination_number: Option<String>,
    pub context: Option<String>,
    /// Every `variable_*` header, without the prefix, in wire order.
    pub variables: Vec<(String, String)>,
}

impl ChannelData {
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn from_connect_reply(reply: &Frame, peer: SocketAddr) -> Result<ChannelData, Error> {
        let problem = |problem: &str| Error::Handshake {
            peer,
            problem: problem.to_owned(),
        };
        let decoded = |name: &str| reply.header(name).map(|v| url_decode(v).into_owned());
        match decoded("Reply-Text") {
            Some(text) if text.starts_with("+OK") => {}
            Some(_) => return Err(problem("was not +OK")),
            None => return Err(problem("has no Reply-Text")),
        }
        let uuid = decoded("Unique-ID").ok_or_else(|| problem("has no Unique-ID"))?;
        let variables = reply
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                name.strip_prefix("variable_")
                    .map(|name| (name.to_owned(), url_decode(value).into_owned()))
            })
            .collect();
        Ok(ChannelData {
            uuid,
            channel_name: decoded("Channel-Name"),
            caller_id_name: decoded("Caller-Caller-ID-Name"),
            caller_id_number: decoded("Caller-Caller-ID-Number"),
            destination_number: decoded("Caller-Destination-Number"),
            context: decoded("Caller-Context"),
            variables,
        })
    }
}

/// What the handler gets for each call.
pub struct Session {
    pub channel: ChannelData,
    pub control: Arc<OutboundCall>,
}

/// Accept outbound connections until `shutdown` resolves, running `handler` once per call.
/// Calls in progress carry on after shutdown; an error on one connection is logged and
/// never reaches the listener.
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Session) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(listener, Config::default(), handler, shutdown).await;
}

/// [`serve`] with explicit settings.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    config: Config,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Session) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handler = Arc::clone(&handler);
                let config = Arc::clone(&config);
                tokio::spawn(async move {
                    if let Err(error) = run_connection(stream, peer, config, handler).await {
                        tracing::error!("{error}");
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("outbound esl: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn run_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    handler: Arc<H>,
) -> Result<(), Error>
where
    H: Fn(Session) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = FrameReader::new(read_half, peer, config.max_frame_bytes);

    write_command(&mut write_half, peer, Command::Connect).await?;
    let reply = match tokio::time::timeout(config.handshake_timeout, reader.next()).await {
        Err(_) => {
            return Err(Error::HandshakeTimeout {
                peer,
                waited: config.handshake_timeout,
            })
        }
        Ok(frame) => frame?.ok_or_else(|| Error::Handshake {
            peer,
            problem: "never came (the socket closed)".to_owned(),
        })?,
    };
    let channel = ChannelData::from_connect_reply(&reply, peer)?;
    tracing::debug!(uuid = %channel.uuid, "outbound esl {peer}: call connected");

    let (events, _) = broadcast::channel(64);
    let call = Arc::new(OutboundCall {
        uuid: channel.uuid.clone(),
        peer,
        digits_variable: config.digits_variable.clone(),
        writer: tokio::sync::Mutex::new(write_half),
        state: Mutex::new(CallState::default()),
        events,
        transfer_source: Mutex::new(channel.variable("transfer_source").map(str::to_owned)),
    });
    let reader_task = tokio::spawn(read_loop(reader, Arc::clone(&call)));

    // A caller who hangs up right now makes FreeSWITCH refuse these or close the socket. The
    // call still happened: the flow runs anyway, finds it gone and records a missed call.
    let setup = [
        Command::MyEvents { format: None },
        Command::Linger {
            seconds: config.linger_secs,
        },
    ];
    if let Err(error) = call.expect_all_ok(&setup).await {
        tracing::debug!(uuid = %channel.uuid, "{error}");
    }

    // The flow runs as its own task so that a bug in it (a panic) ends this call cleanly
    // below instead of leaving the caller parked with nobody in control.
    let uuid = channel.uuid.clone();
    let flow = tokio::spawn(handler(Session {
        channel,
        control: Arc::clone(&call),
    }));
    if let Err(error) = flow.await {
        tracing::error!("outbound esl {peer}: the call flow for {uuid} failed: {error}");
    }

    // The flow is done. If the channel still exists, closing the socket makes FreeSWITCH
    // hang it up; otherwise wait for the final events and FreeSWITCH's own close.
    if call.finished().is_none() {
        call.close().await;
    }
    let _ = reader_task.await;
    Ok(())
}

async fn write_command(
    writer: &mut OwnedWriteHalf,
    peer: SocketAddr,
    command: Command<'_>,
) -> Result<(), Error> {
    let wire = command.to_wire().map_err(|error| Error::Refused {
        peer,
        command: command.name(),
        reply: error.to_string(),
    })?;
    writer
        .write_all(wire.as_bytes())
        .await
        .map_err(|source| Error::Io {
            peer,
            context: "cannot write a command",
            source,
        })
}

/// Reads whole frames off the socket.
struct FrameReader {
    read: OwnedReadHalf,
    peer: SocketAddr,
    buffer: Vec<u8>,
    max_frame_bytes: usize,
}

impl FrameReader {
    fn new(read: OwnedReadHalf, peer: SocketAddr, max_frame_bytes: usize) -> Self {
        FrameReader {
            read,
            peer,
            buffer: Vec::with_capacity(16 * 1024),
            max_frame_bytes,
        }
    }

    /// The next frame; `Ok(None)` when the peer closed cleanly between frames.
    async fn next(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            let parsed = Frame::parse(&self.buffer).map_err(|source| Error::Frame {
                peer: self.peer,
                source,
            })?;
            if let Some((frame, used)) = parsed {
                self.buffer.drain(..used);
                return Ok(Some(frame));
            }
            if self.buffer.len() > self.max_frame_bytes {
                return Err(Error::FrameTooLarge {
                    peer: self.peer,
                    limit: self.max_frame_bytes,
                });
            }
            self.buffer.reserve(16 * 1024);
            let read = self
                .read
                .read_buf(&mut self.buffer)
                .await
                .map_err(|source| Error::Io {
                    peer: self.peer,
                    context: "cannot read",
                    source,
                })?;
            if read == 0 {
                // FreeSWITCH never sends blank lines between frames; anything else left over
                // is a frame cut short.
                if self.buffer.iter().all(|&b| b == b'\n' || b == b'\r') {
                    return Ok(None);
                }
                return Err(Error::Truncated {
                    peer: self.peer,
                    buffered: self.buffer.len(),
                });
            }
        }
    }
}

/// A reply to one command (`command/reply` or `api/response`).
struct Reply {
    text: String,
}

/// The per-call bookkeeping shared by the reader task and the flow.
#[derive(Default)]
struct CallState {
    /// Waiting commands, in the order they were written: FreeSWITCH replies in order.
    replies: VecDeque<oneshot::Sender<Reply>>,
    /// Executes waiting for their CHANNEL_EXECUTE_COMPLETE, by Event-UUID.
    executes: HashMap<String, oneshot::Sender<WireEvent>>,
    /// Set by CHANNEL_HANGUP: the cause.
    hung_up: Option<String>,
    /// Set when no more events will come (HANGUP_COMPLETE or the socket closing): why.
    finished: Option<String>,
}

/// One live call on an outbound socket; cheap to share (`Arc`).
pub struct OutboundCall {
    uuid: String,
    peer: SocketAddr,
    digits_variable: String,
    /// Held while a command is written, so the reply FIFO matches the wire order.
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// std Mutex: nothing awaits while it is held.
    state: Mutex<CallState>,
    events: broadcast::Sender<CallEvent>,
    /// The channel's `transfer_source` as last seen: a new value after a bridge means
    /// FreeSWITCH transferred the call away meanwhile.
    transfer_source: Mutex<Option<String>>,
}

impl OutboundCall {
    fn lock(&self) -> std::sync::MutexGuard<'_, CallState> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing the call, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn finished(&self) -> Option<String> {
        self.lock().finished.clone()
    }

    fn hung_up_error(&self, cause: String) -> ControlError {
        ControlError::HungUp {
            uuid: self.uuid.clone(),
            cause,
        }
    }

    fn link_error(&self, reason: impl Into<String>) -> ControlError {
        ControlError::Link {
            uuid: self.uuid.clone(),
            reason: reason.into(),
        }
    }

    fn invalid(&self, error: command::Error) -> ControlError {
        ControlError::InvalidArgument {
            uuid: self.uuid.clone(),
            what: error.to_string(),
        }
    }

    /// Write a command and wait for its reply.
    async fn send(&self, wire: &str) -> Result<Reply, ControlError> {
        let mut replies = self.send_all(&[wire]).await?;
        Ok(replies.remove(0))
    }

    /// Write several commands in one go and wait for their replies, in order. FreeSWITCH
    /// reads a socket's commands one after another, so this saves a round trip per command
    /// on the way to a ringing phone.
    async fn send_all<W: AsRef<str>>(&self, wires: &[W]) -> Result<Vec<Reply>, ControlError> {
        let mut waiting = Vec::with_capacity(wires.len());
        {
            let mut writer = self.writer.lock().await;
            {
                let mut state = self.lock();
                if let Some(reason) = &state.finished {
                    return Err(self.link_error(reason.clone()));
                }
                for _ in wires {
                    let (tx, rx) = oneshot::channel();
                    state.replies.push_back(tx);
                    waiting.push(rx);
                }
            }
            let joined: String = wires.iter().map(AsRef::as_ref).collect();
            if let Err(error) = writer.write_all(joined.as_bytes()).await {
                return Err(self.link_error(format!("cannot write: {error}")));
            }
        }
        let mut replies = Vec::with_capacity(waiting.len());
        for rx in waiting {
            replies.push(
                rx.await
                    .map_err(|_| self.link_error("the socket closed before the reply"))?,
            );
        }
        Ok(replies)
    }

    /// The setup commands of a new call, written together; stops at the first refusal.
    async fn expect_all_ok(&self, commands: &[Command<'_>]) -> Result<(), Error> {
        let refused = |command: &Command<'_>, reply: String| Error::Refused {
            peer: self.peer,
            command: command.name(),
            reply,
        };
        let mut wires = Vec::with_capacity(commands.len());
        for command in commands {
            wires.push(
                command
                    .to_wire()
                    .map_err(|error| refused(command, error.to_string()))?,
            );
        }
        let replies = self
            .send_all(&wires)
            .await
            .map_err(|error| refused(&commands[0], error.to_string()))?;
        for (command, reply) in commands.iter().zip(replies) {
            if !reply.text.starts_with("+OK") {
                return Err(refused(command, reply.text));
            }
        }
        Ok(())
    }

    /// Queue quick applications without waiting for them to complete: FreeSWITCH runs a
    /// channel's queued applications in order, so whatever is executed next runs after them.
    async fn queue(&self, apps: &[(&str, &str)]) -> Result<(), ControlError> {
        if let Some(cause) = &self.lock().hung_up {
            return Err(self.hung_up_error(cause.clone()));
        }
        let wires = self.queued_wires(apps)?;
        let replies = self.send_all(&wires).await?;
        self.check_replies(apps.iter().map(|(app, _)| *app), replies)
    }

    /// The sendmsg of each app, each with an Event-UUID of its own that nobody waits for.
    fn queued_wires(&self, apps: &[(&str, &str)]) -> Result<Vec<String>, ControlError> {
        apps.iter()
            .map(|(app, arg)| self.execute_wire(app, Some(arg), &uuid::Uuid::new_v4().to_string()))
            .collect()
    }

    fn execute_wire(
        &self,
        app: &str,
        arg: Option<&str>,
        event_uuid: &str,
    ) -> Result<String, ControlError> {
        Command::Execute(Execute {
            uuid: &self.uuid,
            app,
            arg,
            event_uuid,
        })
        .to_wire()
        .map_err(|error| self.invalid(error))
    }

    /// The first refusal among the replies to `apps`, as an error.
    fn check_replies<'a>(
        &self,
        apps: impl Iterator<Item = &'a str>,
        replies: Vec<Reply>,
    ) -> Result<(), ControlError> {
        match apps
            .zip(replies)
            .find(|(_, reply)| !reply.text.starts_with("+OK"))
        {
            Some((app, reply)) => Err(ControlError::Refused {
                uuid: self.uuid.clone(),
                app: app.to_owned(),
                reply: reply.text,
            }),
            None => Ok(()),
        }
    }

    /// Run one application and wait for its CHANNEL_EXECUTE_COMPLETE, however long it takes.
    async fn execute(&self, app: &str, arg: Option<&str>) -> Result<WireEvent, ControlError> {
        self.execute_after(&[], app, arg).await
    }

    /// Like [`OutboundCall::execute`], with quick applications (`set`s) queued ahead of it
    /// in the same write. FreeSWITCH runs a channel's queued applications in order, so they
    /// have all run when this one completes; only this one's completion is awaited.
    async fn execute_after(
        &self,
        ahead: &[(&str, &str)],
        app: &str,
        arg: Option<&str>,
    ) -> Result<WireEvent, ControlError> {
        let mut wires = self.queued_wires(ahead)?;
        let event_uuid = uuid::Uuid::new_v4().to_string();
        wires.push(self.execute_wire(app, arg, &event_uuid)?);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(cause) = &state.hung_up {
                return Err(self.hung_up_error(cause.clone()));
            }
            state.executes.insert(event_uuid.clone(), tx);
        }
        let replies = match self.send_all(&wires).await {
            Ok(replies) => replies,
            Err(error) => {
                self.lock().executes.remove(&event_uuid);
                return Err(error);
            }
        };
        let apps = ahead.iter().map(|(app, _)| *app).chain([app]);
        if let Err(refused) = self.check_replies(apps, replies) {
            self.lock().executes.remove(&event_uuid);
            return Err(refused);
        }
        match rx.await {
            Ok(completion) => Ok(completion),
            Err(_) => {
                let state = self.lock();
                Err(match (&state.hung_up, &state.finished) {
                    (Some(cause), _) => self.hung_up_error(cause.clone()),
                    (None, Some(reason)) => self.link_error(reason.clone()),
                    (None, None) => self.link_error("the completion was lost"),
                })
            }
        }
    }

    /// Close our side: FreeSWITCH hangs up a channel whose socket goes away.
    async fn close(&self) {
        let mut writer = self.writer.lock().await;
        let _ = writer.shutdown().await;
    }

    /// Route one frame from FreeSWITCH.
    fn on_frame(&self, frame: Frame) {
        match frame.content_type() {
            Some("command/reply") | Some("api/response") => {
                let text = match frame.header("Reply-Text") {
                    Some(text) => text.to_owned(),
                    None => frame
                        .body()
                        .map(|body| String::from_utf8_lossy(body).into_owned())
                        .unwrap_or_default(),
                };
                let waiter = self.lock().replies.pop_front();
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(Reply { text });
                    }
                    None => tracing::warn!(
                        "outbound esl {}: a reply nobody asked for: {text:?}",
                        self.peer
                    ),
                }
            }
            Some("text/event-plain") | Some("text/event-json") => {
                let json = frame.content_type() == Some("text/event-json");
                let Some(body) = frame.body() else {
                    tracing::error!("outbound esl {}: an event frame without a body", self.peer);
                    return;
                };
                let decoded = if json {
                    WireEvent::from_json(body)
                } else {
                    WireEvent::from_plain(body)
                };
                match decoded {
                    Ok(event) => self.on_event(event),
                    Err(error) => tracing::error!("outbound esl {}: {error}", self.peer),
                }
            }
            Some("text/disconnect-notice") => {
                // Linger notice: the channel is gone, the last events are still to come.
                // The final notice is followed by the socket closing, handled by the reader.
                tracing::debug!(
                    "outbound esl {}: disconnect notice ({})",
                    self.peer,
                    frame.header("Content-Disposition").unwrap_or("disconnect")
                );
            }
            other => tracing::error!(
                "outbound esl {}: dropped a frame of unknown type {other:?}",
                self.peer
            ),
        }
    }

    fn on_event(&self, event: WireEvent) {
        let channel = match ChannelEvent::from_headers(&event) {
            Ok(Some(channel)) => channel,
            Ok(None) => return,
            Err(error) => {
                tracing::error!("outbound esl {}: {error}", self.peer);
                return;
            }
        };
        if channel.uuid() != self.uuid {
            return;
        }
        match channel.kind {
            ChannelEventKind::ExecuteComplete => {
                let waiter = channel
                    .get(ChannelField::ApplicationUuid)
                    .and_then(|app_uuid| self.lock().executes.remove(app_uuid));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(event);
                }
            }
            ChannelEventKind::Answer => self.publish(CallEvent::Answered),
            ChannelEventKind::Dtmf => {
                if let Some(digit) = channel.dtmf_digit {
                    self.publish(CallEvent::Dtmf { digit });
                }
            }
            ChannelEventKind::Bridge => self.publish(CallEvent::Bridged {
                other_uuid: channel.get(ChannelField::OtherLegUuid).map(str::to_owned),
            }),
            ChannelEventKind::Unbridge => self.publish(CallEvent::Unbridged),
            ChannelEventKind::Hangup => {
                let cause = hangup_cause(&channel);
                // Executes already queued still get their EXECUTE_COMPLETE (a recording cut
                // short by the caller still has its length); new ones are refused.
                self.lock().hung_up = Some(cause.clone());
                self.publish(CallEvent::HungUp { cause });
            }
            ChannelEventKind::HangupComplete => {
                let cause = hangup_cause(&channel);
                self.finish(
                    format!("the channel hung up ({cause})"),
                    Some(cause.clone()),
                );
                self.publish(CallEvent::Finished { cause });
            }
            _ => {}
        }
    }

    /// No more events will come: fail everything still waiting.
    fn finish(&self, reason: String, cause: Option<String>) {
        let (executes, replies) = {
            let mut state = self.lock();
            if state.hung_up.is_none() {
                state.hung_up = cause.or_else(|| Some(reason.clone()));
            }
            if state.finished.is_none() {
                state.finished = Some(reason);
            }
            (
                std::mem::take(&mut state.executes),
                std::mem::take(&mut state.replies),
            )
        };
        // Dropping the senders wakes every waiter with an error.
        drop(executes);
        drop(replies);
    }

    fn publish(&self, event: CallEvent) {
        // Nobody subscribed is normal.
        let _ = self.events.send(event);
    }
}

fn hangup_cause(channel: &ChannelEvent) -> String {
    channel
        .get(ChannelField::HangupCause)
        .unwrap_or("UNKNOWN")
        .to_owned()
}

async fn read_loop(mut reader: FrameReader, call: Arc<OutboundCall>) {
    loop {
        match reader.next().await {
            Ok(Some(frame)) => call.on_frame(frame),
            Ok(None) => {
                let already_finished = call.finished().is_some();
                call.finish("FreeSWITCH closed the socket".to_owned(), None);
                if !already_finished {
                    let cause = call.lock().hung_up.clone().unwrap_or_default();
                    call.publish(CallEvent::Finished { cause });
                }
                return;
            }
            Err(error) => {
                tracing::error!("{error}");
                call.finish(error.to_string(), None);
                call.close().await;
                return;
            }
        }
    }
}

impl CallControl for OutboundCall {
    fn uuid(&self) -> &str {
        &self.uuid
    }

    fn answer(&self) -> ControlFuture<'_, ()> {
        Box::pin(async move { self.execute("answer", None).await.map(|_| ()) })
    }

    fn playback<'a>(&'a self, path: &'a str) -> ControlFuture<'a, PlaybackOutcome> {
        Box::pin(async move {
            let done = self.execute("playback", Some(path)).await?;
            Ok(match done.header("Application-Response") {
                Some("FILE PLAYED") => PlaybackOutcome::Played,
                Some("FILE NOT FOUND") => PlaybackOutcome::NotFound,
                other => PlaybackOutcome::Interrupted {
                    response: other.unwrap_or("(none)").to_owned(),
                },
            })
        })
    }

    fn record<'a>(&'a self, request: &'a RecordRequest) -> ControlFuture<'a, RecordOutcome> {
        Box::pin(async move {
            let silence = request
                .silence_threshold
                .map(|threshold| (threshold, request.silence.as_secs().max(1)));
            let arg = command::record_arg(&request.path, request.max.as_secs().max(1), silence)
                .map_err(|error| self.invalid(error))?;
            let done = self.execute("record", Some(&arg)).await?;
            let ms = done
                .header("variable_record_ms")
                .and_then(|ms| ms.parse().ok())
                .ok_or_else(|| ControlError::Refused {
                    uuid: self.uuid.clone(),
                    app: "record".to_owned(),
                    reply: "the completion reports no record_ms (nothing was recorded)".to_owned(),
                })?;
            Ok(RecordOutcome {
                ms,
                path: request.path.clone(),
                stopped_by_silence: done.header("variable_silence_hits_exhausted") == Some("true"),
                caller_hung_up: self.lock().hung_up.is_some(),
            })
        })
    }

    fn bridge<'a>(&'a self, request: &'a BridgeRequest) -> ControlFuture<'a, BridgeOutcome> {
        Box::pin(async move {
            let dial = command::bridge_dial_string(
                &request.endpoints,
                request.timeout.as_secs().max(1),
                &request.variables,
                &request.leg_variables,
            )
            .map_err(|error| self.invalid(error))?;
            // Without these FreeSWITCH hangs the caller up when nobody answers or when the
            // device's leg ends, and the flow could not go on to voicemail or ring again.
            let ahead = [
                ("set", "continue_on_fail=true"),
                ("set", "hangup_after_bridge=false"),
            ];
            let done = self.execute_after(&ahead, "bridge", Some(&dial)).await?;
            let disposition = done.header("variable_originate_disposition");
            if disposition == Some("SUCCESS") {
                let channel = done
                    .header("variable_bridge_channel")
                    .unwrap_or_default()
                    .to_owned();
                let transferred = self.transferred_away(&done);
                // The caller's own hangup also ends the bridge; only a device-side end counts.
                let ended_by = match (&transferred, self.lock().hung_up.is_some()) {
                    (None, false) => done
                        .header("variable_last_bridge_hangup_cause")
                        .map(str::to_owned),
                    _ => None,
                };
                return Ok(BridgeOutcome::Answered {
                    ended_by,
                    transferred,
                    endpoint: answering_endpoint(&request.endpoints, &channel),
                    other_uuid: done
                        .header("variable_last_bridge_to")
                        .or_else(|| done.header("variable_bridge_uuid"))
                        .or_else(|| done.header("variable_bridge_to"))
                        .map(str::to_owned),
                    channel,
                });
            }
            let cause = done
                .header("variable_originate_failed_cause")
                .or(disposition)
                .or_else(|| done.header("variable_hangup_cause"))
                .unwrap_or("UNKNOWN")
                .to_owned();
            Ok(BridgeOutcome::Failed { cause })
        })
    }

    fn hangup<'a>(&'a self, cause: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            match self.execute("hangup", Some(cause)).await {
                Ok(_) | Err(ControlError::HungUp { .. }) => Ok(()),
                Err(error) => Err(error),
            }
        })
    }

    fn get_digits<'a>(&'a self, request: &'a DigitsRequest) -> ControlFuture<'a, Option<String>> {
        Box::pin(async move {
            let timeout_ms = u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX);
            let arg = command::digits_arg(
                request.min,
                request.max,
                timeout_ms,
                &request.terminators,
                request.prompt.as_deref(),
                &self.digits_variable,
            )
            .map_err(|error| self.invalid(error))?;
            let done = self.execute("play_and_get_digits", Some(&arg)).await?;
            let digits = done
                .header(&format!("variable_{}", self.digits_variable))
                .filter(|digits| !digits.is_empty())
                .map(str::to_owned);
            Ok(digits)
        })
    }

    fn set_var<'a>(&'a self, name: &'a str, value: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            if name.is_empty() || name.contains(['=', ' ']) {
                return Err(ControlError::InvalidArgument {
                    uuid: self.uuid.clone(),
                    what: format!("variable name {name:?} must be one word without '='"),
                });
            }
            let arg = format!("{name}={value}");
            self.execute("set", Some(&arg)).await.map(|_| ())
        })
    }

    fn kill_leg<'a>(&'a self, uuid: &'a str, cause: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            let args = format!("{uuid} {cause}");
            if uuid.is_empty() || uuid.contains(char::is_whitespace) {
                return Err(ControlError::InvalidArgument {
                    uuid: self.uuid.clone(),
                    what: format!("leg uuid {uuid:?} must be one word"),
                });
            }
            let wire = Command::Api {
                command: "uuid_kill",
                args: &args,
            }
            .to_wire()
            .map_err(|error| self.invalid(error))?;
            let reply = self.send(&wire).await?;
            if reply.text.starts_with("+OK") || reply.text.contains("No such channel") {
                Ok(())
            } else {
                Err(ControlError::Refused {
                    uuid: self.uuid.clone(),
                    app: "uuid_kill".to_owned(),
                    reply: reply.text,
                })
            }
        })
    }

    fn move_leg_to_conference<'a>(&'a self, uuid: &'a str, room: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            self.one_word("leg uuid", uuid)?;
            self.one_word("conference room", room)?;
            // An inline dialplan of one app: the leg leaves the bridge for the room.
            let args = format!("{uuid} conference:{room} inline");
            let reply = self.api("uuid_transfer", &args).await?;
            if reply.starts_with("+OK") {
                Ok(())
            } else {
                Err(ControlError::Refused {
                    uuid: self.uuid.clone(),
                    app: "uuid_transfer".to_owned(),
                    reply,
                })
            }
        })
    }

    fn conference<'a>(&'a self, room: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            self.one_word("conference room", room)?;
            match self.execute("conference", Some(room)).await {
                Ok(_) | Err(ControlError::HungUp { .. }) => Ok(()),
                Err(error) => Err(error),
            }
        })
    }

    fn dial_into_conference<'a>(&'a self, room: &'a str, dial: &'a str) -> ControlFuture<'a, bool> {
        Box::pin(async move {
            self.one_word("conference room", room)?;
            self.one_word("dial string", dial)?;
            // mod_conference answers "Call Requested: result: [<cause>]" once the dial ends.
            let reply = self
                .api("conference", &format!("{room} dial {dial}"))
                .await?;
            Ok(reply.contains("[SUCCESS]"))
        })
    }

    fn record_session<'a>(&'a self, path: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            let arg = command::record_session_arg("record_session", path)
                .map_err(|error| self.invalid(error))?;
            // The caller's leg is answered when a device picks up: recording starts there,
            // not during the ringing. record_session only attaches a media bug and returns,
            // so its completion is not awaited: the bridge that follows is queued behind it,
            // and the phones ring one event round trip sooner.
            self.queue(&[("set", "RECORD_ANSWER_REQ=true"), ("record_session", &arg)])
                .await
        })
    }

    fn stop_record_session<'a>(&'a self, path: &'a str) -> ControlFuture<'a, ()> {
        Box::pin(async move {
            let arg = command::record_session_arg("stop_record_session", path)
                .map_err(|error| self.invalid(error))?;
            self.execute("stop_record_session", Some(&arg))
                .await
                .map(|_| ())
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }
}

impl OutboundCall {
    /// Runs an API command on this call's socket and returns its output.
    async fn api(&self, command: &'static str, args: &str) -> Result<String, ControlError> {
        let wire = Command::Api { command, args }
            .to_wire()
            .map_err(|error| self.invalid(error))?;
        Ok(self.send(&wire).await?.text)
    }

    fn one_word(&self, what: &str, value: &str) -> Result<(), ControlError> {
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(ControlError::InvalidArgument {
                uuid: self.uuid.clone(),
                what: format!("{what} {value:?} must be one word"),
            });
        }
        Ok(())
    }

    /// Whether the completion shows a transfer that happened since the last look: a new
    /// `transfer_source` (`<epoch>:<uuid>:bl_xfer:<exten>/<context>/<dialplan>`).
    fn transferred_away(&self, done: &WireEvent) -> Option<TransferredAway> {
        let source = done.header("variable_transfer_source")?;
        let mut known = self
            .transfer_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.as_deref() == Some(source) {
            return None;
        }
        *known = Some(source.to_owned());
        let destination = source
            .split(":bl_xfer:")
            .nth(1)
            .and_then(|target| target.split('/').next())
            .unwrap_or_default()
            .to_owned();
        Some(TransferredAway {
            destination,
            refer_to: done.header("variable_sip_refer_to").map(str::to_owned),
        })
    }
}

/// Which requested endpoint became `channel` (`user/1000@d` rings `sofia/internal/1000@...`).
fn answering_endpoint(endpoints: &[String], channel: &str) -> Option<usize> {
    let channel_user = channel.rsplit('/').next()?.split('@').next()?;
    endpoints.iter().position(|endpoint| {
        let user = endpoint
            .rsplit('/')
            .next()
            .and_then(|tail| tail.split('@').next());
        user == Some(channel_user)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answering_endpoint_matches_the_user_part() {
        let endpoints = vec![
            "user/1000@127.0.0.1".to_owned(),
            "user/1001@127.0.0.1".to_owned(),
        ];
        assert_eq!(
            answering_endpoint(&endpoints, "sofia/internal/1001@127.0.0.1:5092"),
            Some(1)
        );
        assert_eq!(
            answering_endpoint(&endpoints, "sofia/internal/2000@x"),
            None
        );
    }
}
