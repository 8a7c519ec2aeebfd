//! Simulated channels: their data (caller profile, state, variables), the events they emit
//! with FreeSWITCH's header layout, and the control messages (sendmsg, uuid_kill, transfer)
//! other parts of the simulator send them. The call flows that drive channels live in
//! [`super::flow`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, watch};

use crate::freeswitch::esl::frame::Frame;

use super::event::Event;
use super::{lock_mutex, Inner};

/// What a channel task is asked to do.
#[derive(Debug, Clone)]
pub enum Control {
    /// A sendmsg (execute, hangup, ...).
    Message(Frame),
    /// uuid_kill / hupall with this cause.
    Kill(String),
    /// uuid_transfer to this destination.
    Transfer(String),
}

/// FreeSWITCH's channel states, in number order.
pub(crate) const STATES: [&str; 13] = [
    "CS_NEW",
    "CS_INIT",
    "CS_ROUTING",
    "CS_SOFT_EXECUTE",
    "CS_EXECUTE",
    "CS_EXCHANGE_MEDIA",
    "CS_PARK",
    "CS_CONSUME_MEDIA",
    "CS_HIBERNATE",
    "CS_RESET",
    "CS_HANGUP",
    "CS_REPORTING",
    "CS_DESTROY",
];

/// FreeSWITCH's call states, in number order.
pub(crate) const CALL_STATES: [&str; 9] = [
    "DOWN",
    "DIALING",
    "RINGING",
    "EARLY",
    "ACTIVE",
    "HELD",
    "RING_WAIT",
    "HANGUP",
    "UNHELD",
];

/// The caller profile (`Caller-*` headers).
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    pub(crate) username: String,
    pub(crate) dialplan: String,
    pub(crate) cid_name: String,
    pub(crate) cid_num: String,
    pub(crate) callee_name: Option<String>,
    pub(crate) callee_num: Option<String>,
    pub(crate) network_addr: String,
    pub(crate) destination: String,
    pub(crate) context: String,
}

/// Everything a channel reports about itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChannelData {
    pub(crate) name: String,
    pub(crate) direction: &'static str,
    pub(crate) state: usize,
    pub(crate) call_state: &'static str,
    pub(crate) answer_state: &'static str,
    pub(crate) hangup_cause: Option<String>,
    pub(crate) profile: Profile,
    pub(crate) created_us: i64,
    pub(crate) answered_us: i64,
    pub(crate) progress_us: i64,
    pub(crate) progress_media_us: i64,
    pub(crate) hangup_us: i64,
    pub(crate) bridged_us: i64,
    pub(crate) vars: Vec<(String, String)>,
    /// The other leg: its uuid and whether this channel is the `originator` or `originatee`.
    pub(crate) other: Option<(Weak<Channel>, &'static str)>,
    pub(crate) application: String,
    pub(crate) application_data: String,
}

/// One simulated channel (a call leg).
pub struct Channel {
    uuid: String,
    data: Mutex<ChannelData>,
    control_tx: mpsc::UnboundedSender<Control>,
    /// Flips to true once the channel has hung up and sent HANGUP_COMPLETE.
    down: watch::Sender<bool>,
    /// True once the outbound socket controlling the channel is closed.
    socket_gone: watch::Sender<bool>,
    /// The simulator was killed: the channel vanishes without a single event.
    crashed: AtomicBool,
    /// True while the outbound session is asked to say goodbye and close (the call was
    /// transferred). A state rather than a wake-up: a request made after that socket already
    /// closed must not close the next one.
    detach: watch::Sender<bool>,
}

pub(crate) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Channel {
    /// Creates a channel and registers it; returns it with the receiver of its controls.
    pub(crate) fn create(
        inner: &Inner,
        uuid: String,
        data: ChannelData,
    ) -> (Arc<Channel>, mpsc::UnboundedReceiver<Control>) {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (down, _) = watch::channel(false);
        let channel = Arc::new(Channel {
            uuid: uuid.clone(),
            data: Mutex::new(data),
            control_tx,
            down,
            socket_gone: watch::Sender::new(false),
            crashed: AtomicBool::new(false),
            detach: watch::Sender::new(false),
        });
        lock_mutex(&inner.channels).insert(uuid, Arc::clone(&channel));
        inner.count_session();
        (channel, control_rx)
    }

    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn name(&self) -> String {
        lock_mutex(&self.data).name.clone()
    }

    pub(crate) fn with_data<R>(&self, f: impl FnOnce(&mut ChannelData) -> R) -> R {
        f(&mut lock_mutex(&self.data))
    }

    /// Queues a control message; false when the channel is gone.
    pub(crate) fn control(&self, control: Control) -> bool {
        !*self.down.borrow() && self.control_tx.send(control).is_ok()
    }

    pub(crate) fn hangup_signal(&self) -> watch::Receiver<bool> {
        self.down.subscribe()
    }

    pub(crate) fn mark_down(&self) {
        self.down.send_replace(true);
    }

    pub(crate) fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Changes the call state and emits CHANNEL_CALLSTATE, as FreeSWITCH does right after the
    /// event that caused the change (which still shows the old state).
    pub(crate) fn set_call_state(&self, inner: &Inner, new: &'static str) {
        let old = {
            let mut data = lock_mutex(&self.data);
            std::mem::replace(&mut data.call_state, new)
        };
        if old == new {
            return;
        }
        let number = CALL_STATES
            .iter()
            .position(|s| *s == new)
            .unwrap_or(0)
            .to_string();
        let event = self.event(
            inner,
            "CHANNEL_CALLSTATE",
            (
                "switch_channel.c",
                "switch_channel_perform_set_callstate",
                301,
            ),
            false,
            &[
                ("Original-Channel-Call-State", old),
                ("Channel-Call-State-Number", &number),
            ],
            &[],
        );
        inner.emit(event);
    }

    /// Marks the channel as lost in a crash and wakes its task, which then ends silently.
    pub(crate) fn crash(&self) {
        self.crashed.store(true, Ordering::Relaxed);
        let _ = self.control_tx.send(Control::Kill("CRASH".into()));
        self.socket_closed();
    }

    pub(crate) fn has_crashed(&self) -> bool {
        self.crashed.load(Ordering::Relaxed)
    }

    pub(crate) fn detach_socket(&self) {
        self.detach.send_replace(true);
    }

    pub(crate) async fn detached(&self) {
        // The sender lives as long as the channel, so the wait only ends by the request.
        let _ = self.detach.subscribe().wait_for(|asked| *asked).await;
    }

    /// A new outbound socket may attach after a transfer.
    pub(crate) fn reset_socket(&self) {
        self.detach.send_replace(false);
        self.socket_gone.send_replace(false);
    }

    pub(crate) fn socket_closed(&self) {
        self.socket_gone.send_replace(true);
    }

    pub(crate) async fn wait_socket_closed(&self) {
        let _ = self.socket_gone.subscribe().wait_for(|gone| *gone).await;
    }

    pub fn var(&self, name: &str) -> Option<String> {
        let data = lock_mutex(&self.data);
        data.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub fn set_var(&self, name: &str, value: &str) {
        let mut data = lock_mutex(&self.data);
        match data.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => data.vars.push((name.to_owned(), value.to_owned())),
        }
    }

    /// A channel event with the core headers, the channel data, the caller profile, the other
    /// leg and (when `with_vars`) every `variable_*`, in FreeSWITCH's order.
    pub(crate) fn event(
        &self,
        inner: &Inner,
        name: &str,
        calling: (&str, &str, u32),
        with_vars: bool,
        extra_first: &[(&str, &str)],
        extra_last: &[(&str, &str)],
    ) -> Event {
        let mut event = inner.new_event(name, None, calling);
        for (n, v) in extra_first {
            event.push(*n, *v);
        }
        // A copy, not the guard: the other leg's data is locked below, and holding ours
        // meanwhile deadlocks when that leg builds an event about us at the same moment.
        let data = lock_mutex(&self.data).clone();
        let state = STATES.get(data.state).copied().unwrap_or("CS_NEW");
        event
            .push("Channel-State", state)
            .push("Channel-Call-State", data.call_state)
            .push("Channel-State-Number", data.state.to_string())
            .push("Channel-Name", data.name.as_str())
            .push("Unique-ID", self.uuid.as_str())
            .push("Call-Direction", data.direction)
            .push("Presence-Call-Direction", data.direction)
            .push(
                "Channel-HIT-Dialplan",
                if data.direction == "inbound" {
                    "true"
                } else {
                    "false"
                },
            )
            .push("Channel-Call-UUID", self.uuid.as_str())
            .push("Answer-State", data.answer_state);
        if let Some(cause) = &data.hangup_cause {
            event.push("Hangup-Cause", cause.as_str());
        }
        event
            .push("Channel-Read-Codec-Name", "PCMA")
            .push("Channel-Read-Codec-Rate", "8000")
            .push("Channel-Read-Codec-Bit-Rate", "64000")
            .push("Channel-Write-Codec-Name", "PCMA")
            .push("Channel-Write-Codec-Rate", "8000")
            .push("Channel-Write-Codec-Bit-Rate", "64000");
        push_profile(&mut event, "Caller", &self.uuid, &data);
        if let Some((other, kind)) = &data.other {
            if let Some(other) = other.upgrade() {
                event.push("Other-Type", *kind);
                let other_data = lock_mutex(&other.data).clone();
                push_profile(&mut event, "Other-Leg", &other.uuid, &other_data);
            }
        }
        if with_vars {
            for (n, v) in &data.vars {
                event.push(format!("variable_{n}"), v.as_str());
            }
        }
        for (n, v) in extra_last {
            event.push(*n, *v);
        }
        event
    }

    /// The channel data as the outbound `connect` reply lists it (Channel-* profile first).
    pub(crate) fn connect_data(&self, inner: &Inner) -> Vec<(String, String)> {
        let mut event = inner.new_event(
            "CHANNEL_DATA",
            None,
            ("mod_event_socket.c", "parse_command", 2167),
        );
        {
            let data = lock_mutex(&self.data);
            push_profile(&mut event, "Channel", &self.uuid, &data);
        }
        let full = self.event(inner, "CHANNEL_DATA", ("", "", 0), true, &[], &[]);
        // Skip the core headers of the second event: only its channel part is wanted.
        let channel_part = full
            .headers()
            .iter()
            .skip_while(|(n, _)| n != "Channel-State");
        let mut headers: Vec<(String, String)> = event.headers().to_vec();
        headers.extend(channel_part.cloned());
        headers
    }

    /// One row of `show channels as json`.
    pub(crate) fn show_row(&self) -> serde_json::Value {
        let data = lock_mutex(&self.data);
        let created = chrono::DateTime::from_timestamp_micros(data.created_us)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        serde_json::json!({
            "uuid": self.uuid,
            "direction": data.direction,
            "created": created,
            "created_epoch": (data.created_us / 1_000_000).to_string(),
            "name": data.name,
            "state": STATES.get(data.state).copied().unwrap_or("CS_NEW"),
            "cid_name": data.profile.cid_name,
            "cid_num": data.profile.cid_num,
            "ip_addr": data.profile.network_addr,
            "dest": data.profile.destination,
            "application": data.application,
            "application_data": data.application_data,
            "dialplan": data.profile.dialplan,
            "context": data.profile.context,
            "read_codec": "PCMA",
            "read_rate": "8000",
            "read_bit_rate": "64000",
            "write_codec": "PCMA",
            "write_rate": "8000",
            "write_bit_rate": "64000",
            "secure": "",
            "hostname": "",
            "presence_id": "",
            "presence_data": "",
            "accountcode": "",
            "callstate": data.call_state,
            "callee_name": data.profile.callee_name.clone().unwrap_or_default(),
            "callee_num": data.profile.callee_num.clone().unwrap_or_default(),
            "callee_direction": "",
            "call_uuid": self.uuid,
            "sent_callee_name": "",
            "sent_callee_num": "",
            "initial_cid_name": data.profile.cid_name,
            "initial_cid_num": data.profile.cid_num,
            "initial_ip_addr": data.profile.network_addr,
            "initial_dest": data.profile.destination,
            "initial_dialplan": data.profile.dialplan,
            "initial_context": data.profile.context,
        })
    }
}

fn push_profile(event: &mut Event, prefix: &str, uuid: &str, data: &ChannelData) {
    let p = &data.profile;
    let mut add = |name: &str, value: &str| {
        event.push(format!("{prefix}-{name}"), value);
    };
    add("Direction", data.direction);
    add("Logical-Direction", data.direction);
    add("Username", &p.username);
    add("Dialplan", &p.dialplan);
    add("Caller-ID-Name", &p.cid_name);
    add("Caller-ID-Number", &p.cid_num);
    add("Orig-Caller-ID-Name", &p.cid_name);
    add("Orig-Caller-ID-Number", &p.cid_num);
    if let (Some(name), Some(num)) = (&p.callee_name, &p.callee_num) {
        add("Callee-ID-Name", name);
        add("Callee-ID-Number", num);
    }
    add("Network-Addr", &p.network_addr);
    add("ANI", &p.cid_num);
    add("Destination-Number", &p.destination);
    add("Unique-ID", uuid);
    add("Source", "mod_sofia");
    add("Context", &p.context);
    add("Channel-Name", &data.name);
    if prefix != "Other-Leg" {
        add("Profile-Index", "1");
    }
    add("Profile-Created-Time", &data.created_us.to_string());
    add("Channel-Created-Time", &data.created_us.to_string());
    add("Channel-Answered-Time", &data.answered_us.to_string());
    add("Channel-Progress-Time", &data.progress_us.to_string());
    add(
        "Channel-Progress-Media-Time",
        &data.progress_media_us.to_string(),
    );
    add("Channel-Hangup-Time", &data.hangup_us.to_string());
    add("Channel-Transfer-Time", "0");
    add("Channel-Resurrect-Time", "0");
    add("Channel-Bridged-Time", &data.bridged_us.to_string());
    add("Channel-Last-Hold", "0");
    add("Channel-Hold-Accum", "0");
    add("Screen-Bit", "true");
    add("Privacy-Hide-Name", "false");
    add("Privacy-Hide-Number", "false");
}

/// uuid_bridge: links two existing channels and emits CHANNEL_BRIDGE.
pub(crate) fn bridge_existing(inner: &Inner, a: &Arc<Channel>, b: &Arc<Channel>) {
    let now = now_us();
    a.with_data(|d| {
        d.other = Some((Arc::downgrade(b), "originatee"));
        d.bridged_us = now;
    });
    b.with_data(|d| {
        d.other = Some((Arc::downgrade(a), "originator"));
        d.bridged_us = now;
    });
    let ids = [
        ("Bridge-A-Unique-ID", a.uuid()),
        ("Bridge-B-Unique-ID", b.uuid()),
    ];
    let event = a.event(
        inner,
        "CHANNEL_BRIDGE",
        ("switch_ivr_bridge.c", "uuid_bridge", 1),
        true,
        &ids,
        &[],
    );
    inner.emit(event);
}

/// The originate API: dials the endpoints and returns the new leg's uuid or the failure cause.
pub(crate) async fn originate(inner: &Arc<Inner>, args: &str) -> Result<String, String> {
    super::flow::originate(inner, args).await
}
