//! The simulator's observable log: what it received, what it emitted and what each simulated
//! device saw, for tests to assert on ("patchbay sent bridge with these endpoints").

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Which socket a connection id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A client connected to the simulator's ESL port.
    Inbound,
    /// The simulator connected to an application's outbound socket for a call.
    Outbound,
}

/// One thing that happened inside the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A connection was established (for an outbound socket: the simulator's connect to the
    /// application returned).
    Connected {
        conn: u64,
        kind: ConnKind,
        /// When the connection was established, for latency measurements (benches).
        connected_at: Instant,
    },
    /// A command as received: its first line, its headers and its body.
    Command {
        conn: u64,
        line: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        /// When the whole command had been read, for latency measurements (benches).
        received_at: Instant,
    },
    /// A connection was dropped because of what the peer sent.
    ConnectionError {
        conn: u64,
        error: String,
    },
    Closed {
        conn: u64,
    },
    /// An event was emitted (before any listener filtering).
    Emitted {
        name: String,
        subclass: Option<String>,
        unique_id: Option<String>,
    },
    /// A listener lost events because its queue was full.
    EventsLost {
        conn: u64,
        lost: usize,
    },
    /// A dialplan application ran on a channel.
    Executed {
        unique_id: String,
        app: String,
        arg: String,
        response: String,
    },
    /// A device's phone rang for a call.
    DeviceRang {
        device: String,
        call: String,
    },
    DeviceAnswered {
        device: String,
        call: String,
    },
    DeviceLostRace {
        device: String,
        call: String,
    },
    DeviceBusy {
        device: String,
        call: String,
    },
    /// A bridged device's leg ended on the device's side without a BYE from its user (media
    /// timeout, network failure): `cause` is what FreeSWITCH reported.
    DeviceDropped {
        device: String,
        call: String,
        cause: String,
    },
    /// A bridged device's user pressed these DTMF digits.
    DevicePressed {
        device: String,
        call: String,
        digits: String,
    },
    /// A member (device, number or the caller's number) joined a conference room.
    ConferenceJoined {
        room: String,
        member: String,
        at: Instant,
    },
    /// A member left a conference room.
    ConferenceLeft {
        room: String,
        member: String,
        at: Instant,
    },
    /// A bridged device sent a REFER (blind transfer) to this target.
    DeviceReferred {
        device: String,
        call: String,
        to: String,
    },
    /// A REGISTER went through the directory: `ok` says whether the password matched.
    Registration {
        user: String,
        ok: bool,
        reason: String,
    },
    GatewayState {
        gateway: String,
        state: String,
    },
    /// A WAV file was written by `record`.
    Recorded {
        path: String,
        ms: u64,
    },
    /// A call placed by the scenario or a test ended.
    CallEnded {
        call: String,
        cause: String,
    },
    /// A lookup to the mod_xml_curl endpoint: section and the outcome.
    XmlCurl {
        section: String,
        outcome: String,
    },
}

/// A cheap-to-clone, append-only log with a way to wait for an entry.
#[derive(Clone, Default)]
pub struct Log {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    // A std Mutex: nothing awaits while it is held.
    entries: Mutex<Vec<Entry>>,
    changed: Notify,
}

impl Log {
    pub fn push(&self, entry: Entry) {
        self.shared
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
        self.shared.changed.notify_waiters();
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.shared
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Entries from position `from` on, for a reader that follows the log.
    pub fn since(&self, from: usize) -> Vec<Entry> {
        let entries = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries
            .get(from..)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default()
    }

    /// The commands one connection sent, first lines only, in order.
    pub fn commands(&self, conn: u64) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Command { conn: c, line, .. } if c == conn => Some(line),
                _ => None,
            })
            .collect()
    }

    /// The arguments every completed run of dialplan app `app` had, in order (for assertions
    /// like "patchbay bridged to these endpoints").
    pub fn executed(&self, app: &str) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Executed { app: a, arg, .. } if a == app => Some(arg),
                _ => None,
            })
            .collect()
    }

    /// Waits until an entry satisfies `pred` and returns it; `None` after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Entry) -> bool,
    ) -> Option<Entry> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.find(&pred) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.find(&pred);
            }
        }
    }

    fn find(&self, pred: &impl Fn(&Entry) -> bool) -> Option<Entry> {
        let entries = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries.iter().find(|e| pred(e)).cloned()
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Connected { conn, kind, .. } => {
                write!(f, "connection {conn}: {kind:?} connected")
            }
            Entry::Command { conn, line, .. } => write!(f, "connection {conn}: received {line:?}"),
            Entry::ConnectionError { conn, error } => {
                write!(f, "connection {conn}: dropped: {error}")
            }
            Entry::Closed { conn } => write!(f, "connection {conn}: closed"),
            Entry::Emitted {
                name,
                subclass,
                unique_id,
            } => {
                write!(f, "event {name}")?;
                if let Some(subclass) = subclass {
                    write!(f, " {subclass}")?;
                }
                if let Some(uuid) = unique_id {
                    write!(f, " on {uuid}")?;
                }
                Ok(())
            }
            Entry::EventsLost { conn, lost } => {
                write!(f, "connection {conn}: killed after losing {lost} events")
            }
            Entry::Executed {
                unique_id,
                app,
                arg,
                response,
            } => {
                write!(f, "call {unique_id}: ran {app} {arg:?} -> {response}")
            }
            Entry::DeviceRang { device, call } => write!(f, "device {device} rang for {call}"),
            Entry::DeviceAnswered { device, call } => write!(f, "device {device} answered {call}"),
            Entry::DeviceLostRace { device, call } => write!(
                f,
                "device {device} stopped ringing for {call} (answered elsewhere)"
            ),
            Entry::DeviceBusy { device, call } => write!(f, "device {device} was busy for {call}"),
            Entry::DeviceDropped {
                device,
                call,
                cause,
            } => write!(f, "device {device} dropped off {call} ({cause})"),
            Entry::DevicePressed {
                device,
                call,
                digits,
            } => write!(f, "device {device} pressed {digits} during {call}"),
            Entry::ConferenceJoined { room, member, .. } => {
                write!(f, "{member} joined conference {room}")
            }
            Entry::ConferenceLeft { room, member, .. } => {
                write!(f, "{member} left conference {room}")
            }
            Entry::DeviceReferred { device, call, to } => {
                write!(f, "device {device} referred {call} to {to}")
            }
            Entry::Registration { user, ok: true, .. } => write!(f, "device {user} registered"),
            Entry::Registration {
                user,
                ok: false,
                reason,
            } => write!(f, "device {user} failed to register: {reason}"),
            Entry::GatewayState { gateway, state } => write!(f, "gateway {gateway}: {state}"),
            Entry::Recorded { path, ms } => write!(f, "recorded {ms} ms to {path}"),
            Entry::CallEnded { call, cause } => write!(f, "call {call} ended: {cause}"),
            Entry::XmlCurl { section, outcome } => {
                write!(f, "xml_curl {section} lookup: {outcome}")
            }
        }
    }
}
