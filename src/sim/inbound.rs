//! ESL sessions: the inbound server on the simulator's ESL port, and the command handling it
//! shares with the outbound sockets the simulator opens for calls.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::freeswitch::esl::frame::{self, Frame};

use super::calls::{Channel, Control};
use super::conn::Conn;
use super::event::{Event, Format};
use super::log::{ConnKind, Entry};
use super::{api, lock_mutex, Inner, Listener, Stop};

pub(crate) async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    mut stop: watch::Receiver<Stop>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let inner = Arc::clone(&inner);
                    let stop = stop.clone();
                    tokio::spawn(serve_inbound(inner, stream, stop));
                }
                Err(err) => {
                    tracing::warn!("fsim: accept on the ESL port failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// What to do after a command.
pub(crate) enum Flow {
    Continue,
    /// Close after a final disconnect notice.
    Close,
}

/// One ESL conversation, inbound or on an outbound socket.
pub(crate) struct Session {
    pub(crate) inner: Arc<Inner>,
    pub(crate) conn: Conn,
    pub(crate) listener: Arc<Listener>,
    pub(crate) rx: mpsc::Receiver<Arc<Event>>,
    /// The channel this socket controls (outbound mode).
    pub(crate) channel: Option<Arc<Channel>>,
    /// `linger` on an outbound socket: `Some(None)` is forever.
    pub(crate) linger: Option<Option<u32>>,
    /// `full` outbound sockets may use every command; otherwise only a few.
    pub(crate) full: bool,
    out: Vec<u8>,
}

async fn serve_inbound(inner: Arc<Inner>, stream: TcpStream, mut stop: watch::Receiver<Stop>) {
    let id = inner.next_conn();
    inner.log().push(Entry::Connected {
        conn: id,
        kind: ConnKind::Inbound,
        connected_at: std::time::Instant::now(),
    });
    let mut conn = Conn::new(stream, Arc::clone(&inner), id);
    if conn.write(&Frame::auth_request().to_wire()).await.is_err() {
        return;
    }
    // Before auth only auth, userauth and exit are accepted; the first command has a deadline.
    let deadline = tokio::time::Instant::now() + inner.config().first_command_timeout;
    let mut first = true;
    loop {
        let read = tokio::select! {
            _ = stop.changed() => {
                let how = *stop.borrow();
                finish_on_stop(&mut conn, how, None).await;
                return;
            }
            read = conn.read_command() => read,
            _ = tokio::time::sleep_until(deadline), if first => {
                inner.log().push(Entry::ConnectionError {
                    conn: id,
                    error: "no command within the first-command limit".into(),
                });
                conn.shutdown().await;
                inner.log().push(Entry::Closed { conn: id });
                return;
            }
        };
        first = false;
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                inner.log().push(Entry::Closed { conn: id });
                return;
            }
            Err(err) => {
                log_conn_error(&inner, id, &err);
                return;
            }
        };
        log_command(&inner, id, &frame);
        let line = frame.command().unwrap_or("").trim();
        let (word, rest) = split_word(line);
        if word.eq_ignore_ascii_case("auth") {
            if rest == inner.config().password.expose() {
                if conn
                    .reply(&Frame::command_reply("+OK accepted"))
                    .await
                    .is_err()
                {
                    return;
                }
                break;
            }
            let _ = conn.reply(&Frame::command_reply("-ERR invalid")).await;
            let _ = conn
                .write(&Frame::disconnect_notice(None, frame::GOODBYE).to_wire())
                .await;
            conn.shutdown().await;
            inner.log().push(Entry::Closed { conn: id });
            return;
        } else if word.eq_ignore_ascii_case("exit") {
            let _ = conn.reply(&Frame::command_reply("+OK bye")).await;
            let _ = conn
                .write(&Frame::disconnect_notice(None, frame::GOODBYE).to_wire())
                .await;
            conn.shutdown().await;
            inner.log().push(Entry::Closed { conn: id });
            return;
        } else if conn
            .reply(&Frame::command_reply("-ERR command not found"))
            .await
            .is_err()
        {
            return;
        }
    }
    let (listener, rx) = inner.add_listener(id);
    let session = Session::new(inner, conn, listener, rx, None, true);
    session.run(stop).await;
}

fn log_conn_error(inner: &Inner, conn: u64, err: &super::conn::ConnError) {
    tracing::warn!("fsim: ESL connection {conn} dropped: {err}");
    inner.log().push(Entry::ConnectionError {
        conn,
        error: err.to_string(),
    });
    inner.log().push(Entry::Closed { conn });
}

fn log_command(inner: &Inner, conn: u64, frame: &Frame) {
    let line = frame.command().unwrap_or("");
    // The password never reaches the log.
    let (word, _) = split_word(line.trim());
    let line = if word.eq_ignore_ascii_case("auth") || word.eq_ignore_ascii_case("userauth") {
        format!("{word} ***")
    } else {
        line.to_owned()
    };
    inner.log().push(Entry::Command {
        conn,
        line,
        headers: frame.headers().to_vec(),
        body: frame.body().map(<[u8]>::to_vec),
        received_at: std::time::Instant::now(),
    });
}

async fn finish_on_stop(conn: &mut Conn, how: Stop, session: Option<&str>) {
    if how == Stop::Graceful {
        let notice = Frame::disconnect_notice(session, b"The system is being shut down.\n");
        let _ = conn.write(&notice.to_wire()).await;
        conn.shutdown().await;
    }
}

pub(crate) fn split_word(line: &str) -> (&str, &str) {
    match line.split_once(' ') {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    }
}

impl Session {
    pub(crate) fn new(
        inner: Arc<Inner>,
        conn: Conn,
        listener: Arc<Listener>,
        rx: mpsc::Receiver<Arc<Event>>,
        channel: Option<Arc<Channel>>,
        full: bool,
    ) -> Self {
        Self {
            inner,
            conn,
            listener,
            rx,
            channel,
            linger: None,
            full,
            out: Vec::with_capacity(64 * 1024),
        }
    }

    fn format(&self) -> Format {
        lock_mutex(&self.listener.sub)
            .format()
            .unwrap_or(Format::Plain)
    }

    /// Serves commands and delivers events until the peer leaves, the server stops or the
    /// session's channel is gone and its linger time is over.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<Stop>) {
        let id = self.conn.id;
        let mut hangup_rx = self.channel.as_ref().map(|c| c.hangup_signal());
        let mut linger_deadline: Option<tokio::time::Instant> = None;
        let mut linger_forever = false;
        // The peer sent bytes that can never be a frame: no goodbye, just close.
        let mut broken = false;
        loop {
            let stall = self.inner.faults().stall_delivery;
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let session = self.channel.as_ref().map(|c| c.uuid().to_owned());
                    let how = *stop.borrow();
                    finish_on_stop(&mut self.conn, how, session.as_deref()).await;
                    break;
                }
                _ = self.listener.kill_notice.notified() => {
                    let notice = Frame::disconnect_notice(None, frame::KILLED_LOST_EVENTS);
                    let _ = self.conn.write(&notice.to_wire()).await;
                    self.conn.shutdown().await;
                    break;
                }
                event = self.rx.recv(), if !stall => {
                    let Some(event) = event else { break };
                    if self.deliver(event).await.is_err() {
                        break;
                    }
                }
                read = self.conn.read_command() => {
                    let frame = match read {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!("fsim: ESL connection {id} dropped: {err}");
                            self.inner.log().push(Entry::ConnectionError { conn: id, error: err.to_string() });
                            broken = true;
                            break;
                        }
                    };
                    log_command(&self.inner, id, &frame);
                    match self.handle(frame).await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Close) | Err(_) => break,
                    }
                }
                _ = wait_hangup(&mut hangup_rx), if hangup_rx.is_some() && linger_deadline.is_none() && !linger_forever => {
                    // The channel is down: events already queued still go out, then either the
                    // linger notice and a wait, or the socket closes at once.
                    self.flush_queued().await;
                    let Some(channel) = self.channel.clone() else { break };
                    match self.linger {
                        None => break,
                        Some(seconds) => {
                            let notice = Frame::linger_notice(channel.uuid(), &channel.name(), seconds);
                            if self.conn.write(&notice.to_wire()).await.is_err() {
                                break;
                            }
                            match seconds {
                                Some(s) => {
                                    let wait = self.inner.scaled(f64::from(s));
                                    linger_deadline = Some(tokio::time::Instant::now() + wait);
                                }
                                None => linger_forever = true,
                            }
                        }
                    }
                }
                _ = sleep_until_opt(linger_deadline), if linger_deadline.is_some() => break,
                _ = detached(self.channel.clone()), if self.channel.is_some() => break,
            }
        }
        self.inner.remove_listener(id);
        if let Some(channel) = self.channel.clone() {
            let how = *stop.borrow();
            if how != Stop::Abrupt && !broken {
                self.flush_queued().await;
                let notice = Frame::disconnect_notice(Some(channel.uuid()), frame::GOODBYE);
                let _ = self.conn.write(&notice.to_wire()).await;
            }
            channel.socket_closed();
        }
        self.conn.shutdown().await;
        self.inner.log().push(Entry::Closed { conn: id });
    }

    async fn flush_queued(&mut self) {
        // Give the channel task a moment to queue its last events (HANGUP_COMPLETE).
        tokio::task::yield_now().await;
        while let Ok(event) = self.rx.try_recv() {
            if self.deliver(event).await.is_err() {
                return;
            }
        }
    }

    /// Writes one event and whatever else is already queued, in one write.
    async fn deliver(&mut self, event: Arc<Event>) -> std::io::Result<()> {
        let format = self.format();
        self.out.clear();
        event.write(format, &mut self.out);
        let mut batched = 1;
        while batched < 256 {
            match self.rx.try_recv() {
                Ok(next) => {
                    next.write(format, &mut self.out);
                    batched += 1;
                }
                Err(_) => break,
            }
        }
        let out = std::mem::take(&mut self.out);
        let result = self.conn.write(&out).await;
        self.out = out;
        result
    }

    async fn reply(&mut self, text: impl Into<String>) -> std::io::Result<Flow> {
        self.conn.reply(&Frame::command_reply(text)).await?;
        Ok(Flow::Continue)
    }

    /// Handles one command after auth.
    pub(crate) async fn handle(&mut self, frame: Frame) -> std::io::Result<Flow> {
        let line = frame.command().unwrap_or("").trim().to_owned();
        let (word, rest) = split_word(&line);
        let word = word.to_ascii_lowercase();
        let outbound = self.channel.is_some();
        let restricted = outbound
            && !self.full
            && !matches!(
                word.as_str(),
                "connect"
                    | "myevents"
                    | "getvar"
                    | "resume"
                    | "filter"
                    | "divert_events"
                    | "sendmsg"
                    | "exit"
            );
        if restricted {
            return self.reply("-ERR command not found").await;
        }
        match word.as_str() {
            "auth" => self.reply("-ERR already authenticated").await,
            "exit" => {
                self.reply("+OK bye").await?;
                if self.channel.is_none() {
                    self.conn
                        .write(&Frame::disconnect_notice(None, frame::GOODBYE).to_wire())
                        .await?;
                    self.conn.shutdown().await;
                }
                Ok(Flow::Close)
            }
            "event" => {
                let text = lock_mutex(&self.listener.sub).event_command(rest);
                self.reply(text).await
            }
            "nixevent" => {
                let text = lock_mutex(&self.listener.sub).nixevent_command(rest);
                self.reply(text).await
            }
            "noevents" => {
                let text = lock_mutex(&self.listener.sub).noevents_command();
                if text.starts_with("+OK") {
                    while self.rx.try_recv().is_ok() {}
                }
                self.reply(text).await
            }
            "filter" => {
                let text = lock_mutex(&self.listener.sub).filter_command(rest);
                self.reply(text).await
            }
            "myevents" => self.myevents(rest).await,
            "api" => {
                let (cmd, args) = split_word(rest);
                let owner = self.channel.as_ref().map(|c| c.uuid().to_owned());
                let mut output = api::execute(&self.inner, cmd, args, owner.as_deref()).await;
                if output.is_empty() {
                    output = "-ERR no reply\n".to_owned();
                }
                self.conn.reply(&Frame::api_response(output)).await?;
                Ok(Flow::Continue)
            }
            "bgapi" => {
                let job = frame
                    .header("Job-UUID")
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let (cmd, args) = split_word(rest);
                let owner = self.channel.as_ref().map(|c| c.uuid().to_owned());
                api::spawn_bgapi(
                    Arc::clone(&self.inner),
                    job.clone(),
                    cmd.to_owned(),
                    args.to_owned(),
                    owner,
                );
                self.conn.reply(&Frame::bgapi_reply(&job)).await?;
                Ok(Flow::Continue)
            }
            "sendevent" => {
                let name = if rest.is_empty() { "CUSTOM" } else { rest };
                let mut event =
                    self.inner
                        .new_event(name, None, ("mod_event_socket.c", "parse_command", 1972));
                for (header, value) in frame.headers() {
                    if !header.eq_ignore_ascii_case("content-length") {
                        event.push(header.as_str(), value.as_str());
                    }
                }
                if let Some(body) = frame.body() {
                    event.set_body(body);
                }
                let event_uuid = uuid::Uuid::new_v4().to_string();
                event.push("Event-UUID", event_uuid.as_str());
                self.inner.emit(event);
                self.reply(format!("+OK {event_uuid}")).await
            }
            "log" => {
                let level = match rest.to_ascii_lowercase().as_str() {
                    "" | "debug" | "7" => 7,
                    "info" | "6" => 6,
                    "notice" | "5" => 5,
                    "warning" | "4" => 4,
                    "err" | "error" | "3" => 3,
                    "crit" | "2" => 2,
                    "alert" | "1" => 1,
                    "console" | "0" => 0,
                    _ => 7,
                };
                self.reply(format!("+OK log level {level} [{level}]")).await
            }
            "nolog" => self.reply("+OK no longer logging").await,
            "sendmsg" => self.sendmsg(rest, &frame).await,
            "linger" | "nolinger" | "resume" | "getvar" | "connect" | "divert_events"
                if self.channel.is_none() =>
            {
                self.reply("-ERR not controlling a session").await
            }
            "linger" => {
                if rest.is_empty() {
                    self.linger = Some(None);
                    self.reply("+OK will linger").await
                } else {
                    let seconds = rest.parse::<u32>().unwrap_or(600);
                    self.linger = Some(Some(seconds));
                    self.reply(format!("+OK will linger {seconds} seconds"))
                        .await
                }
            }
            "nolinger" => {
                self.linger = None;
                self.reply("+OK will not linger").await
            }
            "resume" => {
                if let Some(channel) = &self.channel {
                    channel.set_var("socket_resume", "true");
                }
                self.reply("+OK").await
            }
            "getvar" => {
                let value = self
                    .channel
                    .as_ref()
                    .and_then(|c| c.var(rest))
                    .unwrap_or_default();
                self.reply(value).await
            }
            "divert_events" => self.reply("+OK events diverted").await,
            _ => self.reply("-ERR command not found").await,
        }
    }

    async fn myevents(&mut self, rest: &str) -> std::io::Result<Flow> {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (uuid, format) = match (&self.channel, words.as_slice()) {
            (Some(channel), [fmt, ..]) => (channel.uuid().to_owned(), Format::parse(fmt)),
            (Some(channel), []) => (channel.uuid().to_owned(), None),
            // Inbound: a format word after the uuid is ignored.
            (None, [uuid, ..]) => (uuid.to_string(), None),
            (None, []) => return self.reply("-ERR invalid syntax").await,
        };
        let text = lock_mutex(&self.listener.sub).myevents(&uuid, format.unwrap_or(Format::Plain));
        self.reply(text).await
    }

    async fn sendmsg(&mut self, rest: &str, frame: &Frame) -> std::io::Result<Flow> {
        let channel = if rest.is_empty() {
            self.channel.clone()
        } else {
            lock_mutex(&self.inner.channels).get(rest).cloned()
        };
        let Some(channel) = channel else {
            let uuid = if rest.is_empty() { "" } else { rest };
            return self
                .reply(format!("-ERR invalid session id [{uuid}]"))
                .await;
        };
        if !channel.control(Control::Message(frame.clone())) {
            return self
                .reply(format!("-ERR invalid session id [{}]", channel.uuid()))
                .await;
        }
        self.reply("+OK").await
    }
}

async fn wait_hangup(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            if rx.wait_for(|down| *down).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn detached(channel: Option<Arc<Channel>>) {
    match channel {
        Some(channel) => channel.detached().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
