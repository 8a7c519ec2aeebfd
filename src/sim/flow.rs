//! Call flows: an inbound call from a DID asks the dialplan, connects to the application's
//! outbound socket and runs what it is sent (answer, playback, record, digits, bridge, hangup);
//! bridges ring devices as the scenario says, first answer wins; `originate` dials legs.
//!
//! Simplifications (documented, not hidden): apps on one channel run one after the other, as
//! with `event-lock: true` (nested execution is not simulated); media is virtual time scaled
//! by the time factor; a transfer re-runs the dialplan for the new destination.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::freeswitch::esl::frame::Frame;

use super::calls::{now_us, Channel, ChannelData, Control, Profile};
use super::conn::Conn;
use super::inbound::Session;
use super::log::{ConnKind, Entry};
use super::scenario::{Behaviour, Call};
use super::xml_curl::{self, Form};
use super::{lock_mutex, Error, Inner, Sim};

/// How a call ended, for tests and the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    /// The A-leg's Unique-ID.
    pub uuid: String,
    pub hangup_cause: String,
    pub answered: bool,
    /// Every app run on the A-leg: name, argument, Application-Response.
    pub apps: Vec<(String, String, String)>,
    /// The device or endpoint the call was bridged to, if any.
    pub bridged_to: Option<String>,
    /// Files written by `record`.
    pub recordings: Vec<PathBuf>,
}

/// A placed call; await [`CallHandle::finished`] for its summary.
pub struct CallHandle {
    pub uuid: String,
    done: oneshot::Receiver<CallSummary>,
}

impl CallHandle {
    /// Waits for the call to end (hangup and, with a lingering socket, its close).
    pub async fn finished(self) -> Result<CallSummary, Error> {
        self.done
            .await
            .map_err(|_| Error::Call("the call task ended without a summary".into()))
    }
}

impl Sim {
    /// Places an inbound call from the PSTN to a DID, as the scenario's `[[call]]` does.
    pub fn place_call(&self, call: Call) -> CallHandle {
        place_call(self.inner(), call)
    }
}

const SOCKET_FILE: (&str, &str, u32) = ("switch_core_session.c", "switch_core_session_exec", 2967);

/// Starts the scenario: registrations, gateways, then the calls at their times.
pub(crate) fn run_scenario(inner: Arc<Inner>) {
    tokio::spawn(async move {
        let scenario = lock_mutex(&inner.scenario).clone();
        for device in scenario
            .devices
            .iter()
            .filter(|d| d.register && d.behaviour != Behaviour::Unregistered)
        {
            if let Err(err) =
                super::sofia::register(&inner, &device.extension, &device.password).await
            {
                tracing::warn!("fsim: {err}");
            }
        }
        for gateway in scenario.gateways {
            super::sofia::start_gateway(&inner, gateway);
        }
        let start = Instant::now();
        for call in scenario.calls {
            tokio::time::sleep_until(start + inner.scaled(call.at)).await;
            let handle = place_call(&inner, call);
            tokio::spawn(handle.finished());
        }
    });
}

fn place_call(inner: &Arc<Inner>, call: Call) -> CallHandle {
    let uuid = uuid::Uuid::new_v4().to_string();
    let (done_tx, done_rx) = oneshot::channel();
    let inner = Arc::clone(inner);
    let task_uuid = uuid.clone();
    tokio::spawn(async move {
        let summary = run_inbound_call(&inner, task_uuid, call).await;
        let _ = done_tx.send(summary);
    });
    CallHandle {
        uuid,
        done: done_rx,
    }
}

/// Everything the A-leg's task tracks while it runs.
pub(crate) struct Leg {
    inner: Arc<Inner>,
    channel: Arc<Channel>,
    controls: mpsc::UnboundedReceiver<Control>,
    /// Messages that arrived while an app was running, in FIFO order.
    pending: VecDeque<Frame>,
    /// When the caller hangs up.
    caller_hangup_at: Option<Instant>,
    dtmf: VecDeque<char>,
    audio: Option<PathBuf>,
    summary: CallSummary,
    socket_app_uuid: Option<String>,
    started: Instant,
    answered_at: Option<Instant>,
    /// `record_session` recordings running in the background on this leg.
    session_recordings: Vec<SessionRecording>,
}

/// One `record_session` media bug: where it writes and since when it hears the call.
pub(crate) struct SessionRecording {
    path: PathBuf,
    /// `None` while it waits for the answer (`RECORD_ANSWER_REQ=true`).
    since: Option<Instant>,
}

/// Why an app stopped early.
pub(crate) enum Interrupt {
    CallerHangup,
    Kill(String),
    /// The call went on elsewhere (a transfer) and has ended there.
    Done,
    /// The channel is to be transferred (`<exten> <dialplan> <context>`) once the running app
    /// completes, as a REFER from its bridged partner does.
    Transfer(String),
}

async fn run_inbound_call(inner: &Arc<Inner>, uuid: String, call: Call) -> CallSummary {
    let from = if call.from.is_empty() {
        "anonymous".to_owned()
    } else {
        call.from.clone()
    };
    let context = call.context.clone().unwrap_or_else(|| "public".to_owned());
    // A device calling out comes in on the internal profile, a carrier's call on the external.
    let internal = context != "public";
    let name = if internal {
        format!("sofia/internal/{from}@127.0.0.1")
    } else {
        format!("sofia/external/{from}@127.0.0.1:5070")
    };
    let call_id = format!("{}@127.0.0.1", uuid::Uuid::new_v4().simple());
    let mut vars = vec![
        ("direction".to_owned(), "inbound".to_owned()),
        ("uuid".to_owned(), uuid.clone()),
        ("session_id".to_owned(), "1".to_owned()),
        ("sip_from_user".to_owned(), from.clone()),
        ("sip_from_uri".to_owned(), format!("{from}@127.0.0.1:5070")),
        ("sip_from_host".to_owned(), "127.0.0.1".to_owned()),
        ("channel_name".to_owned(), name.clone()),
        ("sip_call_id".to_owned(), call_id),
        ("sip_network_ip".to_owned(), "127.0.0.1".to_owned()),
        ("sip_network_port".to_owned(), "5070".to_owned()),
        ("sip_from_display".to_owned(), call.caller_name.clone()),
        (
            "sofia_profile_name".to_owned(),
            if internal { "internal" } else { "external" }.to_owned(),
        ),
        ("sip_req_user".to_owned(), call.to.clone()),
        ("sip_to_user".to_owned(), call.to.clone()),
        ("sip_to_host".to_owned(), "127.0.0.1".to_owned()),
    ];
    if let Some(gateway) = &call.gateway {
        vars.push(("sip_gateway_name".to_owned(), gateway.clone()));
    }
    if internal {
        vars.push(("sip_authorized".to_owned(), "true".to_owned()));
        vars.push(("sip_auth_username".to_owned(), from.clone()));
        vars.push(("user_name".to_owned(), from.clone()));
        vars.push(("user_context".to_owned(), context.clone()));
    }
    let data = ChannelData {
        name,
        direction: "inbound",
        state: 1,
        call_state: "DOWN",
        answer_state: "ringing",
        profile: Profile {
            username: from.clone(),
            dialplan: "XML".into(),
            cid_name: if call.caller_name.is_empty() {
                from.clone()
            } else {
                call.caller_name.clone()
            },
            cid_num: from,
            network_addr: "127.0.0.1".into(),
            destination: call.to.clone(),
            context,
            ..Profile::default()
        },
        created_us: now_us(),
        vars,
        ..ChannelData::default()
    };
    let (channel, controls) = Channel::create(inner, uuid.clone(), data);
    let started = Instant::now();
    let mut leg = Leg {
        inner: Arc::clone(inner),
        channel,
        controls,
        pending: VecDeque::new(),
        caller_hangup_at: call.hangup_after.map(|s| started + inner.scaled(s)),
        dtmf: call.dtmf.chars().collect(),
        audio: call.audio.clone(),
        summary: CallSummary {
            uuid,
            hangup_cause: String::new(),
            answered: false,
            apps: Vec::new(),
            bridged_to: None,
            recordings: Vec::new(),
        },
        socket_app_uuid: None,
        started,
        answered_at: None,
        session_recordings: Vec::new(),
    };
    leg.emit(
        "CHANNEL_CREATE",
        ("switch_core_state_machine.c", "switch_core_session_run", 1),
        &[],
    );
    leg.channel.set_call_state(inner, "RINGING");
    leg.set_state(2);
    leg.run_dialplan().await;
    leg.summary
}

impl Leg {
    fn emit(&self, name: &str, calling: (&str, &str, u32), last: &[(&str, &str)]) {
        let event = self
            .channel
            .event(&self.inner, name, calling, true, &[], last);
        self.inner.emit(event);
    }

    fn set_state(&self, state: usize) {
        self.channel.with_data(|d| d.state = state);
        let event = self.channel.event(
            &self.inner,
            "CHANNEL_STATE",
            (
                "switch_channel.c",
                "switch_channel_perform_set_running_state",
                2408,
            ),
            false,
            &[],
            &[],
        );
        self.inner.emit(event);
    }

    /// Asks the dialplan (xml endpoint, then the static fallback) and runs its actions.
    async fn run_dialplan(&mut self) {
        let actions = match self.lookup_dialplan().await {
            Some(actions) => actions,
            None => {
                self.hangup("NO_ROUTE_DESTINATION", "send_refuse", None)
                    .await;
                return;
            }
        };
        self.set_state(4);
        for (app, data) in actions {
            if self.channel.is_down() {
                return;
            }
            let app_uuid = uuid::Uuid::new_v4().to_string();
            if app == "socket" {
                self.run_socket(&data, app_uuid).await;
                return;
            }
            if let Err(interrupt) = self.execute(&app, &data, &app_uuid).await {
                self.interrupted(interrupt, None).await;
                return;
            }
        }
        if !self.channel.is_down() {
            self.hangup("NORMAL_CLEARING", "send_bye", None).await;
        }
    }

    async fn lookup_dialplan(&mut self) -> Option<Vec<(String, String)>> {
        let destination = self.channel.with_data(|d| d.profile.destination.clone());
        let context = self.channel.with_data(|d| d.profile.context.clone());
        if self.inner.config().xml_url.is_some() {
            let mut form = Form::new(&self.inner.config().hostname, "dialplan", "", "", "");
            let event = self.channel.event(
                &self.inner,
                "REQUEST_PARAMS",
                ("mod_dialplan_xml.c", "dialplan_xml_locate", 610),
                true,
                &[],
                &[],
            );
            form.event(&event);
            for (name, value) in event.headers() {
                if let Some(rest) = name.strip_prefix("Caller-") {
                    form.param(&format!("Hunt-{rest}"), value);
                }
            }
            let answer = xml_curl::post(&self.inner, form).await;
            let parsed = answer
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|xml| xml_curl::parse_dialplan(xml, &context, &destination));
            let outcome = match &parsed {
                Ok(actions) if actions.is_empty() => "no matching extension".to_owned(),
                Ok(_) => "answered".to_owned(),
                Err(err) => err.clone(),
            };
            self.inner.log().push(Entry::XmlCurl {
                section: "dialplan".into(),
                outcome,
            });
            if let Ok(actions) = parsed {
                if !actions.is_empty() {
                    return Some(actions);
                }
            }
        }
        // FreeSWITCH falls back to its static XML dialplan.
        let Some(socket) = self.inner.config().static_socket.clone() else {
            self.inner.log().push(Entry::XmlCurl {
                section: "dialplan".into(),
                outcome: format!(
                    "no route for {destination} (no xml endpoint answer, no static socket)"
                ),
            });
            return None;
        };
        Some(vec![("socket".to_owned(), format!("{socket} async full"))])
    }

    /// The dialplan's `socket` app: connect to the application and serve it until it leaves.
    async fn run_socket(&mut self, data: &str, app_uuid: String) {
        self.execute_event("CHANNEL_EXECUTE", "socket", data, &app_uuid, None);
        self.socket_app_uuid = Some(app_uuid);
        self.channel
            .set_var("socket_host", data.split(':').next().unwrap_or(""));
        let Some(action) = xml_curl::parse_socket_data(data) else {
            self.hangup("DESTINATION_OUT_OF_ORDER", "send_refuse", None)
                .await;
            return;
        };
        let mut stream = None;
        for host in &action.hosts {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(host.as_str()))
                    .await
            {
                stream = Some(s);
                break;
            }
        }
        let Some(stream) = stream else {
            tracing::warn!("fsim: cannot connect to the outbound socket {data}");
            self.hangup("DESTINATION_OUT_OF_ORDER", "send_bye", None)
                .await;
            return;
        };
        let Some(stop) = self.inner.stop_signal() else {
            self.hangup("SYSTEM_SHUTDOWN", "send_bye", None).await;
            return;
        };
        let conn_id = self.inner.next_conn();
        self.inner.log().push(Entry::Connected {
            conn: conn_id,
            kind: ConnKind::Outbound,
            connected_at: std::time::Instant::now(),
        });
        let conn = Conn::new(stream, Arc::clone(&self.inner), conn_id);
        let (listener, rx) = self.inner.add_listener(conn_id);
        self.set_state(6);
        self.emit(
            "CHANNEL_PARK",
            ("switch_ivr.c", "switch_ivr_park", 1037),
            &[],
        );
        let session = Session::new(
            Arc::clone(&self.inner),
            conn,
            listener,
            rx,
            Some(Arc::clone(&self.channel)),
            action.full,
        );
        let inner = Arc::clone(&self.inner);
        let channel = Arc::clone(&self.channel);
        let async_mode = action.async_mode;
        let full = action.full;
        tokio::spawn(async move {
            serve_outbound(inner, channel, session, async_mode, full, stop).await;
        });
        self.park().await;
    }

    /// The parked loop: runs queued sendmsg commands until the channel is down.
    async fn park(&mut self) {
        let channel = Arc::clone(&self.channel);
        loop {
            if let Some(frame) = self.pending.pop_front() {
                if let Err(interrupt) = self.message(frame).await {
                    self.interrupted(interrupt, None).await;
                    return;
                }
                continue;
            }
            let hangup_at = self.caller_hangup_at;
            tokio::select! {
                control = self.controls.recv() => match control {
                    Some(Control::Message(frame)) => self.pending.push_back(frame),
                    Some(Control::Kill(cause)) => {
                        self.hangup(&cause, "send_bye", None).await;
                        return;
                    }
                    Some(Control::Transfer(dest)) => {
                        self.transfer(&dest).await;
                        return;
                    }
                    None => return,
                },
                _ = sleep_until_opt(hangup_at), if hangup_at.is_some() => {
                    self.interrupted(Interrupt::CallerHangup, None).await;
                    return;
                }
                _ = channel.wait_socket_closed() => {
                    // The application left without hanging up: unless it asked to resume,
                    // the dialplan ends and the call is cleared.
                    self.hangup("NORMAL_CLEARING", "send_bye", None).await;
                    return;
                }
            }
            if self.channel.is_down() {
                return;
            }
        }
    }

    /// Transfers the call: `<exten> [dialplan] [context]`. The socket app ends, the
    /// application's connection gets its goodbye, and the dialplan runs again for the new
    /// destination (possibly opening a new outbound socket).
    /// The dialplan's `socket` app ends (hangup or transfer): UNPARK, then its
    /// EXECUTE_COMPLETE. Returns false when no socket app was running.
    fn end_socket_app(&mut self) -> bool {
        let Some(socket_uuid) = self.socket_app_uuid.take() else {
            return false;
        };
        self.emit(
            "CHANNEL_UNPARK",
            ("switch_ivr.c", "switch_ivr_park", 1262),
            &[],
        );
        // The socket app reports the channel's last application response, as FreeSWITCH's
        // Application-Response is the current_application_response variable.
        let response = self
            .channel
            .var("current_application_response")
            .unwrap_or_else(|| "_none_".to_owned());
        self.execute_event(
            "CHANNEL_EXECUTE_COMPLETE",
            "socket",
            "",
            &socket_uuid,
            Some(&response),
        );
        true
    }

    async fn transfer(&mut self, target: &str) {
        self.mark_transfer(target);
        self.leave_for_dialplan().await;
    }

    /// What switch_ivr_session_transfer does at once, before the running app notices: the
    /// new destination and context, `transfer_source` and `transfer_history`.
    fn mark_transfer(&mut self, target: &str) {
        let mut words = target.split_whitespace();
        let destination = words.next().unwrap_or("").to_owned();
        let dialplan = words.next().unwrap_or("XML").to_owned();
        let context = words.next().map(str::to_owned);
        // switch_ivr_session_transfer notes where the call went, on every transfer.
        let source = format!(
            "{}:{}:bl_xfer:{}/{}/{}",
            chrono::Utc::now().timestamp(),
            self.channel.uuid(),
            destination,
            context
                .clone()
                .unwrap_or_else(|| self.channel.with_data(|d| d.profile.context.clone())),
            dialplan
        );
        self.channel.set_var("transfer_source", &source);
        // A second transfer turns it into a FreeSWITCH array variable.
        let history = match self.channel.var("transfer_history") {
            Some(earlier) if earlier.starts_with("ARRAY::") => format!("{earlier}|:{source}"),
            Some(earlier) => format!("ARRAY::{earlier}|:{source}"),
            None => source.clone(),
        };
        self.channel.set_var("transfer_history", &history);
        self.channel.with_data(|d| {
            d.profile.destination = destination;
            if let Some(context) = context {
                d.profile.context = context;
            }
        });
    }

    /// The socket app ends (its connection says goodbye) and the dialplan runs again for the
    /// destination [`Leg::mark_transfer`] set.
    async fn leave_for_dialplan(&mut self) {
        if self.end_socket_app() {
            self.channel.detach_socket();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.channel.wait_socket_closed())
                .await;
            self.channel.reset_socket();
        }
        Box::pin(self.run_dialplan()).await;
    }

    /// Handles one sendmsg.
    async fn message(&mut self, frame: Frame) -> Result<(), Interrupt> {
        let command = frame
            .header("call-command")
            .unwrap_or("execute")
            .to_ascii_lowercase();
        match command.as_str() {
            "hangup" => {
                let cause = frame
                    .header("hangup-cause")
                    .unwrap_or("NORMAL_CLEARING")
                    .to_owned();
                self.hangup(&cause, "send_bye", None).await;
                Ok(())
            }
            "execute" => {
                let app = frame.header("execute-app-name").unwrap_or("").to_owned();
                if app == "transfer" {
                    let arg = frame.header("execute-app-arg").unwrap_or("").to_owned();
                    let app_uuid = frame.header("Event-UUID").unwrap_or("").to_owned();
                    self.execute_event("CHANNEL_EXECUTE", &app, &arg, &app_uuid, None);
                    self.execute_event(
                        "CHANNEL_EXECUTE_COMPLETE",
                        &app,
                        &arg,
                        &app_uuid,
                        Some("_none_"),
                    );
                    self.transfer(&arg).await;
                    return Err(Interrupt::Done);
                }
                let arg = match frame.header("execute-app-arg") {
                    Some(arg) => arg.to_owned(),
                    None => frame
                        .body()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default(),
                };
                let app_uuid = frame
                    .header("Event-UUID")
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let loops: i64 = frame
                    .header("loops")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(1);
                let mut run = 0i64;
                loop {
                    run += 1;
                    if loops != 1 {
                        self.channel.set_var("current_loop", &run.to_string());
                        self.channel.set_var("total_loops", &loops.to_string());
                    }
                    let began = Instant::now();
                    self.execute(&app, &arg, &app_uuid).await?;
                    let quick = began.elapsed() < self.inner.scaled(0.5);
                    if self.channel.is_down() || quick || (loops >= 0 && run >= loops) {
                        return Ok(());
                    }
                }
            }
            _ => Ok(()),
        }
    }

    fn execute_event(
        &self,
        name: &str,
        app: &str,
        arg: &str,
        app_uuid: &str,
        response: Option<&str>,
    ) {
        let mut last: Vec<(&str, &str)> = vec![("Application", app)];
        if !arg.is_empty() {
            last.push(("Application-Data", arg));
        }
        if let Some(response) = response {
            last.push(("Application-Response", response));
        }
        last.push(("Application-UUID", app_uuid));
        let event = self
            .channel
            .event(&self.inner, name, SOCKET_FILE, true, &[], &last);
        self.inner.emit(event);
    }

    /// An app ended: its response becomes the channel's last one, then EXECUTE_COMPLETE.
    fn complete(&self, app: &str, arg: &str, app_uuid: &str, response: &str) {
        self.channel
            .set_var("current_application_response", response);
        self.execute_event(
            "CHANNEL_EXECUTE_COMPLETE",
            app,
            arg,
            app_uuid,
            Some(response),
        );
    }

    /// Runs one dialplan app with its EXECUTE / EXECUTE_COMPLETE pair. An interruption
    /// (caller hangup, uuid_kill) hangs the channel up first, then completes the app.
    async fn execute(&mut self, app: &str, arg: &str, app_uuid: &str) -> Result<(), Interrupt> {
        self.channel.with_data(|d| {
            d.application = app.to_owned();
            d.application_data = arg.to_owned();
        });
        self.channel.set_var("current_application", app);
        self.channel.set_var("current_application_data", arg);
        self.execute_event("CHANNEL_EXECUTE", app, arg, app_uuid, None);
        let result = self.run_app(app, arg).await;
        let response = match &result {
            Ok(response) => response.clone(),
            Err((_, response)) => response.clone(),
        };
        if let Err((Interrupt::Transfer(destination), response)) = result {
            // The transfer is noted first; the app then ends normally and the channel leaves
            // for the dialplan again.
            self.mark_transfer(&destination);
            self.complete(app, arg, app_uuid, &response);
            self.summary
                .apps
                .push((app.to_owned(), arg.to_owned(), response));
            self.leave_for_dialplan().await;
            return Err(Interrupt::Done);
        }
        if let Err((interrupt, response)) = result {
            self.interrupted(interrupt, Some((app, arg, app_uuid, &response)))
                .await;
            self.summary
                .apps
                .push((app.to_owned(), arg.to_owned(), response));
            return Err(Interrupt::CallerHangup);
        }
        if app != "hangup" || !self.channel.is_down() {
            self.complete(app, arg, app_uuid, &response);
        } else {
            self.channel
                .set_var("current_application_response", &response);
        }
        self.inner.log().push(Entry::Executed {
            unique_id: self.channel.uuid().to_owned(),
            app: app.to_owned(),
            arg: arg.to_owned(),
            response: response.clone(),
        });
        self.summary
            .apps
            .push((app.to_owned(), arg.to_owned(), response));
        Ok(())
    }

    /// A control that arrived while an app runs: sendmsg commands are queued, a kill ends
    /// the app. A closed channel answers at once, so `open` is cleared and it is not polled
    /// again (polling it in a loop would spin a core).
    fn while_busy(&mut self, control: Option<Control>, open: &mut bool) -> Option<Interrupt> {
        match control {
            Some(Control::Message(frame)) => self.pending.push_back(frame),
            Some(Control::Kill(cause)) => return Some(Interrupt::Kill(cause)),
            Some(Control::Transfer(_)) => {}
            None => *open = false,
        }
        None
    }

    /// Sleeps for an app's duration unless the caller hangs up or the channel is killed;
    /// sendmsg commands arriving meanwhile are queued.
    async fn wait(&mut self, duration: Duration) -> Result<(), Interrupt> {
        let deadline = Instant::now() + duration;
        let mut controls_open = true;
        loop {
            let hangup_at = self.caller_hangup_at;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = sleep_until_opt(hangup_at), if hangup_at.is_some_and(|t| t <= deadline) => {
                    return Err(Interrupt::CallerHangup);
                }
                control = self.controls.recv(), if controls_open => {
                    if let Some(kill) = self.while_busy(control, &mut controls_open) {
                        return Err(kill);
                    }
                }
            }
        }
    }

    /// The app itself: its Application-Response, or an interruption with the response the
    /// interrupted app reports.
    async fn run_app(&mut self, app: &str, arg: &str) -> Result<String, (Interrupt, String)> {
        let none = || "_none_".to_owned();
        match app {
            "answer" => {
                self.answer();
                Ok(none())
            }
            "pre_answer" => {
                self.progress_media();
                Ok(none())
            }
            "ring_ready" => {
                self.emit(
                    "CHANNEL_PROGRESS",
                    (
                        "switch_channel.c",
                        "switch_channel_perform_mark_ring_ready_value",
                        1,
                    ),
                    &[],
                );
                Ok(none())
            }
            "sleep" => {
                let ms: f64 = arg.trim().parse().unwrap_or(0.0);
                self.wait(self.inner.scaled(ms / 1000.0))
                    .await
                    .map_err(|i| (i, none()))?;
                Ok(none())
            }
            "set" | "export" => {
                if let Some((name, value)) = arg.split_once('=') {
                    self.channel.set_var(name.trim(), value);
                    if app == "export" {
                        self.channel.set_var("export_vars", name.trim());
                    }
                }
                Ok(none())
            }
            "hangup" => {
                let cause = if arg.trim().is_empty() {
                    "NORMAL_CLEARING"
                } else {
                    arg.trim()
                };
                Err((Interrupt::Kill(cause.to_owned()), none()))
            }
            "playback" => self.playback(arg).await,
            "record" => self.record(arg).await,
            "record_session" => {
                self.start_session_recording(arg);
                Ok(none())
            }
            "stop_record_session" => {
                let path = self.recording_path(arg.trim());
                self.stop_session_recordings(Some(&path));
                Ok(none())
            }
            "play_and_get_digits" => {
                let words: Vec<&str> = arg.split_whitespace().collect();
                let max: usize = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(1);
                let var = words.get(7).copied().unwrap_or("digits");
                let timeout_ms: f64 = words.get(3).and_then(|w| w.parse().ok()).unwrap_or(5000.0);
                self.collect_digits(max, var, timeout_ms).await?;
                Ok(none())
            }
            "read" => {
                let words: Vec<&str> = arg.split_whitespace().collect();
                let max: usize = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(1);
                let var = words.get(3).copied().unwrap_or("digits");
                let timeout_ms: f64 = words.get(4).and_then(|w| w.parse().ok()).unwrap_or(5000.0);
                self.collect_digits(max, var, timeout_ms).await?;
                Ok(none())
            }
            "bridge" => self.bridge(arg).await,
            "conference" => self.conference(arg).await,
            _ => Ok(none()),
        }
    }

    /// The `conference <room>[@profile][+flags{..}]` app: answers, joins the room and stays
    /// until the caller hangs up, the channel is killed or the conference ends.
    async fn conference(&mut self, arg: &str) -> Result<String, (Interrupt, String)> {
        let (room, mintwo) = super::conference::parse_room(arg.trim());
        let name = self.channel.with_data(|d| d.profile.cid_num.clone());
        let uuid = self.channel.uuid().to_owned();
        self.answer();
        let kicked = super::conference::join(&self.inner, &room, &uuid, &name, mintwo);
        let mut controls_open = true;
        let result = loop {
            let hangup_at = self.caller_hangup_at;
            tokio::select! {
                _ = kicked.notified() => break Ok(()),
                _ = sleep_until_opt(hangup_at), if hangup_at.is_some() => {
                    break Err(Interrupt::CallerHangup);
                }
                control = self.controls.recv(), if controls_open => {
                    if let Some(kill) = self.while_busy(control, &mut controls_open) {
                        break Err(kill);
                    }
                }
            }
        };
        super::conference::leave(&self.inner, &room, &uuid, &name);
        result
            .map(|()| "_none_".to_owned())
            .map_err(|interrupt| (interrupt, "_none_".to_owned()))
    }

    fn progress_media(&mut self) {
        let already = self
            .channel
            .with_data(|d| d.progress_media_us != 0 || d.answered_us != 0);
        if already {
            return;
        }
        self.channel.with_data(|d| {
            d.progress_media_us = now_us();
            d.answer_state = "early";
        });
        self.emit(
            "CHANNEL_PROGRESS_MEDIA",
            (
                "switch_channel.c",
                "switch_channel_perform_mark_pre_answered",
                3744,
            ),
            &[],
        );
        self.channel.set_call_state(&self.inner, "EARLY");
    }

    fn answer(&mut self) {
        if self.channel.with_data(|d| d.answered_us != 0) {
            return;
        }
        self.progress_media();
        self.channel.with_data(|d| {
            d.answered_us = now_us();
            d.answer_state = "answered";
        });
        self.answered_at = Some(Instant::now());
        self.summary.answered = true;
        let waiting: Vec<String> = self
            .session_recordings
            .iter_mut()
            .filter(|recording| recording.since.is_none())
            .map(|recording| {
                recording.since = Some(Instant::now());
                recording.path.display().to_string()
            })
            .collect();
        for file in waiting {
            self.emit(
                "RECORD_START",
                ("switch_ivr_async.c", "record_callback", 1),
                &[("Record-File-Path", &file)],
            );
        }
        self.emit(
            "CHANNEL_ANSWER",
            (
                "switch_channel.c",
                "switch_channel_perform_mark_answered",
                3996,
            ),
            &[],
        );
        self.channel.set_call_state(&self.inner, "ACTIVE");
    }

    async fn playback(&mut self, arg: &str) -> Result<String, (Interrupt, String)> {
        let path = arg.trim();
        let length = match media_length(path) {
            Some(length) => length,
            None => return Ok("FILE NOT FOUND".to_owned()),
        };
        let file = [("Playback-File-Path", path)];
        self.emit(
            "PLAYBACK_START",
            ("switch_ivr_play_say.c", "switch_ivr_play_file", 1494),
            &file,
        );
        let waited = self.wait(self.inner.scaled(length.as_secs_f64())).await;
        let status = if waited.is_ok() { "done" } else { "break" };
        self.emit(
            "PLAYBACK_STOP",
            ("switch_ivr_play_say.c", "switch_ivr_play_file", 2034),
            &[("Playback-File-Path", path), ("Playback-Status", status)],
        );
        let ms = length.as_millis().to_string();
        self.channel.set_var("playback_ms", &ms);
        self.channel
            .set_var("playback_seconds", &length.as_secs().to_string());
        waited.map_err(|i| (i, "PLAYBACK ERROR".to_owned()))?;
        Ok("FILE PLAYED".to_owned())
    }

    /// A relative recording path is FreeSWITCH's recordings folder's.
    fn recording_path(&self, raw_path: &str) -> PathBuf {
        match (
            &self.inner.config().recordings_dir,
            Path::new(raw_path).is_relative(),
        ) {
            (Some(dir), true) => dir.join(raw_path),
            _ => PathBuf::from(raw_path),
        }
    }

    /// `record_session <path>`: a media bug records the call in the background until
    /// `stop_record_session` or the hangup. With `RECORD_ANSWER_REQ=true` on a channel not
    /// yet answered it starts (RECORD_START) at the answer, and writes no file if the call
    /// is never answered, as mod_dptools does.
    fn start_session_recording(&mut self, arg: &str) {
        let Some(raw_path) = arg.split_whitespace().next() else {
            return;
        };
        let path = self.recording_path(raw_path);
        let answered = self.channel.with_data(|d| d.answered_us != 0);
        let wait_for_answer = self.channel.var("RECORD_ANSWER_REQ").as_deref() == Some("true");
        let since = (answered || !wait_for_answer).then(Instant::now);
        if since.is_some() {
            let file = path.display().to_string();
            self.emit(
                "RECORD_START",
                ("switch_ivr_async.c", "record_callback", 1),
                &[("Record-File-Path", &file)],
            );
        }
        self.session_recordings
            .push(SessionRecording { path, since });
    }

    /// Closes the session recordings (`path`'s, or all at hangup): the caller's audio is
    /// silence here, as long as the recording heard the call; RECORD_STOP follows.
    fn stop_session_recordings(&mut self, path: Option<&Path>) {
        let (stopping, kept): (Vec<SessionRecording>, Vec<SessionRecording>) =
            std::mem::take(&mut self.session_recordings)
                .into_iter()
                .partition(|recording| path.is_none_or(|path| recording.path == path));
        self.session_recordings = kept;
        for recording in stopping {
            let Some(since) = recording.since else {
                continue;
            };
            let seconds = since.elapsed().as_secs_f64() / self.inner.config().time_scale.max(1e-9);
            let samples = (seconds.min(3600.0) * 8000.0).round() as usize;
            if let Err(err) = write_wav(&recording.path, &[], samples) {
                tracing::warn!(
                    "fsim: {}: cannot write the recording: {err}",
                    recording.path.display()
                );
            }
            let file = recording.path.display().to_string();
            self.emit(
                "RECORD_STOP",
                ("switch_ivr_async.c", "record_callback", 2),
                &[("Record-File-Path", &file)],
            );
            let ms = (samples as u64 * 1000) / 8000;
            self.inner.log().push(Entry::Recorded { path: file, ms });
            self.summary.recordings.push(recording.path);
        }
    }

    /// `record <path> [limit_s] [thresh] [hits]`: the caller's clip, then silence, until the
    /// limit, the silence detector or the caller's hangup; written as 8 kHz 16-bit mono WAV.
    async fn record(&mut self, arg: &str) -> Result<String, (Interrupt, String)> {
        let words: Vec<&str> = arg.split_whitespace().collect();
        let Some(raw_path) = words.first() else {
            return Ok("_none_".to_owned());
        };
        let path = self.recording_path(raw_path);
        let limit: Option<f64> = words
            .get(1)
            .and_then(|w| w.parse().ok())
            .filter(|l: &f64| *l > 0.0);
        let silence_hits: Option<f64> = match (words.get(2), words.get(3)) {
            (Some(_), Some(hits)) => hits.parse().ok(),
            (Some(_), None) => Some(3.0),
            _ => None,
        };
        let clip = match &self.audio {
            Some(audio) => read_clip(audio).unwrap_or_else(|err| {
                tracing::warn!(
                    "fsim: {}: cannot read the caller's audio: {err}",
                    audio.display()
                );
                Vec::new()
            }),
            None => Vec::new(),
        };
        let clip_seconds = clip.len() as f64 / 8000.0;
        let mut seconds = match silence_hits {
            Some(hits) => clip_seconds + hits,
            None => limit.unwrap_or(clip_seconds.max(1.0)),
        };
        if let Some(limit) = limit {
            seconds = seconds.min(limit);
        }
        // An hour of audio at most: a bad argument must not fill the disk.
        seconds = seconds.min(3600.0);
        // The caller may hang up first: the recording holds what came before.
        let elapsed =
            self.started.elapsed().as_secs_f64() / self.inner.config().time_scale.max(1e-9);
        let until_hangup = self.caller_hangup_at.map(|_| {
            let hangup_s = self
                .caller_hangup_at
                .map(|t| t.saturating_duration_since(self.started).as_secs_f64())
                .unwrap_or(0.0)
                / self.inner.config().time_scale.max(1e-9);
            (hangup_s - elapsed).max(0.0)
        });
        let recorded_seconds = until_hangup.map_or(seconds, |u| seconds.min(u));
        let file = path.display().to_string();
        self.emit(
            "RECORD_START",
            ("switch_ivr_async.c", "record_callback", 1),
            &[("Record-File-Path", &file)],
        );
        let waited = self.wait(self.inner.scaled(seconds)).await;
        let samples = (recorded_seconds * 8000.0).round() as usize;
        if let Err(err) = write_wav(&path, &clip, samples) {
            tracing::warn!(
                "fsim: {}: cannot write the recording: {err}",
                path.display()
            );
        }
        let ms = (samples as u64 * 1000) / 8000;
        self.channel.set_var("record_ms", &ms.to_string());
        self.channel
            .set_var("record_seconds", &(ms / 1000).to_string());
        self.channel.set_var("record_samples", &samples.to_string());
        self.emit(
            "RECORD_STOP",
            ("switch_ivr_async.c", "record_callback", 2),
            &[("Record-File-Path", &file)],
        );
        self.inner.log().push(Entry::Recorded { path: file, ms });
        self.summary.recordings.push(path);
        waited.map_err(|i| (i, "_none_".to_owned()))?;
        Ok("_none_".to_owned())
    }

    async fn collect_digits(
        &mut self,
        max: usize,
        var: &str,
        timeout_ms: f64,
    ) -> Result<(), (Interrupt, String)> {
        let mut digits = String::new();
        while digits.len() < max.max(1) {
            let Some(digit) = self.dtmf.pop_front() else {
                break;
            };
            self.wait(self.inner.scaled(0.5))
                .await
                .map_err(|i| (i, "_none_".to_owned()))?;
            let digit_text = digit.to_string();
            let event = self.channel.event(
                &self.inner,
                "DTMF",
                ("switch_channel.c", "switch_channel_dequeue_dtmf", 677),
                false,
                &[],
                &[
                    ("DTMF-Digit", &digit_text),
                    ("DTMF-Duration", "2000"),
                    ("DTMF-Source", "RTP"),
                ],
            );
            self.inner.emit(event);
            digits.push(digit);
        }
        if digits.is_empty() {
            self.wait(self.inner.scaled(timeout_ms / 1000.0))
                .await
                .map_err(|i| (i, "_none_".to_owned()))?;
            self.channel.set_var("read_result", "timeout");
        } else {
            self.channel.set_var(var, &digits);
            self.channel.set_var("read_result", "success");
        }
        Ok(())
    }

    /// Handles an interruption: the channel hangs up (caller side or killed) and the running
    /// app, if any, completes after CHANNEL_HANGUP as FreeSWITCH orders it.
    async fn interrupted(
        &mut self,
        interrupt: Interrupt,
        running: Option<(&str, &str, &str, &str)>,
    ) {
        if self.channel.is_down() {
            return;
        }
        if self.channel.has_crashed() {
            self.summary.hangup_cause = "CRASH".to_owned();
            self.channel.mark_down();
            self.inner.log().push(Entry::CallEnded {
                call: self.channel.uuid().to_owned(),
                cause: "CRASH".to_owned(),
            });
            return;
        }
        let (cause, disposition) = match interrupt {
            Interrupt::CallerHangup => {
                let answered = self.channel.with_data(|d| d.answered_us != 0);
                if answered {
                    ("NORMAL_CLEARING".to_owned(), "recv_bye")
                } else {
                    ("ORIGINATOR_CANCEL".to_owned(), "recv_cancel")
                }
            }
            Interrupt::Kill(cause) => (cause, "send_bye"),
            Interrupt::Done => return,
            Interrupt::Transfer(destination) => {
                self.transfer(&destination).await;
                return;
            }
        };
        self.hangup(&cause, disposition, running).await;
    }

    /// The hangup sequence: HANGUP, the running app's EXECUTE_COMPLETE, UNPARK and the socket
    /// app's completion, two STATEs, HANGUP_COMPLETE; DESTROY once the socket is closed.
    async fn hangup(
        &mut self,
        cause: &str,
        disposition: &str,
        running: Option<(&str, &str, &str, &str)>,
    ) {
        if self.channel.is_down() {
            return;
        }
        if self.channel.has_crashed() {
            self.summary.hangup_cause = "CRASH".to_owned();
            self.channel.mark_down();
            self.inner.log().push(Entry::CallEnded {
                call: self.channel.uuid().to_owned(),
                cause: "CRASH".to_owned(),
            });
            return;
        }
        let q850 = q850(cause);
        self.channel.with_data(|d| {
            d.hangup_cause = Some(cause.to_owned());
            d.hangup_us = now_us();
            d.state = 10;
            d.answer_state = "hangup";
        });
        self.channel.set_var("hangup_cause", cause);
        self.channel.set_var("hangup_cause_q850", &q850.to_string());
        self.channel.set_var("sip_hangup_disposition", disposition);
        self.emit(
            "CHANNEL_HANGUP",
            ("switch_channel.c", "switch_channel_perform_hangup", 3104),
            &[],
        );
        // The media bugs close with the channel: session recordings end here.
        self.stop_session_recordings(None);
        if let Some((app, arg, app_uuid, response)) = running {
            self.channel
                .set_var("current_application_response", response);
            self.execute_event(
                "CHANNEL_EXECUTE_COMPLETE",
                app,
                arg,
                app_uuid,
                Some(response),
            );
            self.inner.log().push(Entry::Executed {
                unique_id: self.channel.uuid().to_owned(),
                app: app.to_owned(),
                arg: arg.to_owned(),
                response: response.to_owned(),
            });
        }
        self.end_socket_app();
        self.set_state(10);
        self.channel.set_call_state(&self.inner, "HANGUP");
        self.channel.with_data(|d| d.state = 11);
        self.set_state(11);
        let duration =
            self.started.elapsed().as_secs_f64() / self.inner.config().time_scale.max(1e-9);
        let billsec = self
            .answered_at
            .map(|t| t.elapsed().as_secs_f64() / self.inner.config().time_scale.max(1e-9))
            .unwrap_or(0.0);
        self.channel
            .set_var("duration", &format!("{}", duration.round() as u64));
        self.channel
            .set_var("billsec", &format!("{}", billsec.round() as u64));
        let event = self.channel.event(
            &self.inner,
            "CHANNEL_HANGUP_COMPLETE",
            (
                "switch_core_state_machine.c",
                "switch_core_session_reporting_state",
                943,
            ),
            true,
            &[("Hangup-Cause", cause)],
            &[],
        );
        self.inner.emit(event);
        self.summary.hangup_cause = cause.to_owned();
        self.channel.mark_down();
        self.inner.log().push(Entry::CallEnded {
            call: self.channel.uuid().to_owned(),
            cause: cause.to_owned(),
        });
        // A lingering socket holds the session: DESTROY waits for it to close.
        let channel = Arc::clone(&self.channel);
        let attached = self.channel.var("socket_host").is_some();
        if attached {
            let _ =
                tokio::time::timeout(Duration::from_secs(3600), channel.wait_socket_closed()).await;
        }
        self.channel.with_data(|d| d.state = 12);
        self.emit(
            "CHANNEL_DESTROY",
            (
                "switch_core_session.c",
                "switch_core_session_perform_destroy",
                1,
            ),
            &[],
        );
        lock_mutex(&self.inner.channels).remove(self.channel.uuid());
    }
}

/// Serves the application on its outbound socket: waits for `connect`, answers with the
/// channel data, then runs the ESL session bound to the channel.
async fn serve_outbound(
    inner: Arc<Inner>,
    channel: Arc<Channel>,
    mut session: Session,
    async_mode: bool,
    full: bool,
    stop: tokio::sync::watch::Receiver<super::Stop>,
) {
    let id = session.conn.id;
    let connect = tokio::time::timeout(Duration::from_secs(10), session.conn.read_command()).await;
    match connect {
        Ok(Ok(Some(frame)))
            if frame
                .command()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("connect")) =>
        {
            inner.log().push(Entry::Command {
                conn: id,
                line: "connect".into(),
                headers: Vec::new(),
                body: None,
                received_at: std::time::Instant::now(),
            });
            let data = channel.connect_data(&inner);
            let reply = Frame::connect_reply(
                data.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                async_mode,
                full,
            );
            if session.conn.write(&reply.to_wire()).await.is_err() {
                channel.socket_closed();
                return;
            }
        }
        other => {
            let error = match other {
                Ok(Ok(Some(frame))) => format!(
                    "expected `connect`, got {:?}",
                    frame.command().unwrap_or("")
                ),
                Ok(Ok(None)) => "closed before `connect`".to_owned(),
                Ok(Err(err)) => err.to_string(),
                Err(_) => "no `connect` within 10 s".to_owned(),
            };
            inner.log().push(Entry::ConnectionError { conn: id, error });
            inner.remove_listener(id);
            channel.socket_closed();
            return;
        }
    }
    session.run(stop).await;
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How long a playback lasts: a WAV file's length, a tone or silence stream's; `None` when the
/// file does not exist.
fn media_length(path: &str) -> Option<Duration> {
    if let Some(ms) = path.strip_prefix("silence_stream://") {
        let ms: u64 = ms
            .split(',')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000);
        return Some(Duration::from_millis(ms));
    }
    if path.starts_with("tone_stream://") {
        let loops = path
            .split(";loops=")
            .nth(1)
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(1);
        return Some(Duration::from_secs(loops.max(1)));
    }
    let reader = hound::WavReader::open(path).ok()?;
    let spec = reader.spec();
    let frames = u64::from(reader.duration());
    Some(Duration::from_millis(
        frames * 1000 / u64::from(spec.sample_rate.max(1)),
    ))
}

/// Reads a WAV clip as 8 kHz mono 16-bit samples (first channel, nearest-sample resampling).
fn read_clip(path: &Path) -> Result<Vec<i16>, hound::Error> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let raw: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let shift = u32::from(spec.bits_per_sample.saturating_sub(16));
            reader
                .samples::<i32>()
                .step_by(channels)
                .map(|s| {
                    s.map(|v| {
                        if spec.bits_per_sample <= 16 {
                            v as i16
                        } else {
                            (v >> shift) as i16
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .step_by(channels)
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect::<Result<_, _>>()?,
    };
    if spec.sample_rate == 8000 {
        return Ok(raw);
    }
    let out_len = raw.len() as u64 * 8000 / u64::from(spec.sample_rate.max(1));
    Ok((0..out_len)
        .filter_map(|i| {
            raw.get((i * u64::from(spec.sample_rate) / 8000) as usize)
                .copied()
        })
        .collect())
}

fn write_wav(path: &Path, clip: &[i16], samples: usize) -> Result<(), hound::Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for i in 0..samples {
        writer.write_sample(clip.get(i).copied().unwrap_or(0))?;
    }
    writer.finalize()
}

/// The Q.850 code of a hangup cause.
pub(crate) fn q850(cause: &str) -> u32 {
    match cause {
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_DESTINATION" => 3,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "SUBSCRIBER_ABSENT" => 20,
        "CALL_REJECTED" => 21,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "ORIGINATOR_CANCEL" => 487,
        "LOSE_RACE" => 702,
        "MANAGER_REQUEST" => 703,
        "USER_NOT_REGISTERED" => 606,
        _ => 0,
    }
}

/// The originate API (bgapi originate ...): dials the legs, the winner parks.
pub(crate) async fn originate(inner: &Arc<Inner>, args: &str) -> Result<String, String> {
    let dialstring = args.split_whitespace().next().unwrap_or("");
    if dialstring.is_empty() {
        return Err("INVALID_NUMBER_FORMAT".into());
    }
    let outcome = super::bridge::dial(inner, dialstring).await;
    match outcome {
        super::bridge::DialOutcome::Answered(leg) => {
            let uuid = leg.channel.uuid().to_owned();
            tokio::spawn(super::bridge::park_leg(Arc::clone(inner), leg));
            Ok(uuid)
        }
        super::bridge::DialOutcome::Failed(cause) => Err(cause),
    }
}

impl Leg {
    async fn bridge(&mut self, arg: &str) -> Result<String, (Interrupt, String)> {
        super::bridge::run_bridge(self, arg).await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Leg {
    pub(crate) fn channel(&self) -> &Arc<Channel> {
        &self.channel
    }

    pub(crate) fn caller_hangup_at(&self) -> Option<Instant> {
        self.caller_hangup_at
    }

    pub(crate) fn note_bridged(&mut self, device: String) {
        self.summary.bridged_to = Some(device);
    }

    /// CHANNEL_PROGRESS on the A leg, once, unless it already has media or is answered.
    pub(crate) fn ringing(&mut self) {
        let first = self.channel.with_data(|d| {
            let first = d.progress_us == 0 && d.progress_media_us == 0 && d.answered_us == 0;
            if first {
                d.progress_us = now_us();
            }
            first
        });
        if first {
            self.emit(
                "CHANNEL_PROGRESS",
                ("sofia.c", "sofia_handle_sip_i_state", 1),
                &[],
            );
        }
    }

    pub(crate) fn answer_for_bridge(&mut self) {
        self.answer();
    }

    pub(crate) fn emit_event(
        &self,
        name: &str,
        calling: (&str, &str, u32),
        first: &[(&str, &str)],
    ) {
        let event = self
            .channel
            .event(&self.inner, name, calling, true, first, &[]);
        self.inner.emit(event);
    }

    /// Waits for the next control while a bridge runs; kills interrupt, messages queue.
    pub(crate) async fn next_control(&mut self) -> Option<Interrupt> {
        match self.controls.recv().await {
            Some(Control::Message(frame)) => {
                self.pending.push_back(frame);
                None
            }
            Some(Control::Kill(cause)) => Some(Interrupt::Kill(cause)),
            Some(Control::Transfer(_)) => None,
            None => std::future::pending().await,
        }
    }
}
