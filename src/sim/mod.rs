//! A FreeSWITCH simulator that speaks ESL and mod_xml_curl as FreeSWITCH 1.10.12 does, for
//! tests, benchmarks and `patchbay demo`.
//!
//! [`Sim`] is a cheap-to-clone handle. It owns the inbound ESL server (auth, event
//! subscriptions, filters, api/bgapi, heartbeats), the simulated switch (channels, device
//! registrations through the xml_curl directory, gateway registration states, inbound calls
//! that go to an application's outbound socket), a [`log::Log`] of everything it saw and did,
//! and the fault injection knobs ([`Faults`]). Frames are read and written only through
//! [`crate::freeswitch::esl::frame`]; the simulator knows nothing of patchbay's client.
//!
//! Invariant: a misbehaving peer only ever loses its own connection; the simulator logs why and
//! carries on with the others.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use patchbay::sim::{scenario::Call, Config, Sim};
//!
//! // Calls go to the application's outbound socket; time runs 100 times faster.
//! let sim = Sim::start(Config {
//!     static_socket: Some("127.0.0.1:8084".into()),
//!     time_scale: 0.01,
//!     ..Config::default()
//! })
//! .await?;
//! println!("ESL on {}", sim.esl_addr());
//! let call = sim.place_call(Call { from: "+41441234567".into(), to: "+33123456789".into(), ..Call::default() });
//! let summary = call.finished().await?;
//! println!("{} ended with {}; bridge args: {:?}", summary.uuid, summary.hangup_cause, sim.log().executed("bridge"));
//! # Ok(())
//! # }
//! ```

mod api;
mod bridge;
pub mod calls;
mod conference;
mod conn;
pub mod event;
mod flow;
mod inbound;
pub mod log;
pub mod scenario;
pub mod sofia;
pub mod subscription;
pub mod xml_curl;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch, Notify};

pub use event::{Event, Format};
pub use flow::{CallHandle, CallSummary};
pub use log::{ConnKind, Entry, Log};
pub use scenario::Scenario;

use crate::settings::Secret;

/// Errors from starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fsim: cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("fsim: the ESL server is already running on {0}")]
    AlreadyRunning(SocketAddr),
    #[error("{path}: {message}")]
    Scenario { path: String, message: String },
    #[error("fsim: {0}")]
    Call(String),
}

/// How the simulator is set up. `Default` gives FreeSWITCH's vanilla values on 127.0.0.1:0.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the inbound ESL server listens (port 0 picks a free one).
    pub esl_addr: SocketAddr,
    /// The `auth` password.
    pub password: Secret,
    /// How often HEARTBEAT fires.
    pub heartbeat: Duration,
    /// A new inbound connection must send its first command within this time.
    pub first_command_timeout: Duration,
    /// Each listener's event queue; beyond it events are lost.
    pub event_queue_capacity: usize,
    /// A listener that lost more than this many events is killed.
    pub lost_events_limit: usize,
    /// Multiplies every scenario delay (ring times, hangup times, gateway timers); 0.01 makes
    /// a 5 s ring take 50 ms.
    pub time_scale: f64,
    /// The mod_xml_curl endpoint the simulator POSTs lookups to.
    pub xml_url: Option<String>,
    /// Basic auth for the xml endpoint: user and password.
    pub xml_credentials: Option<(String, Secret)>,
    /// The SIP domain devices register in.
    pub domain: String,
    /// FreeSWITCH-Hostname / Switchname.
    pub hostname: String,
    /// Record every emitted event in the log (turn off for load tests).
    pub log_events: bool,
    /// Where `record` resolves relative paths.
    pub recordings_dir: Option<PathBuf>,
    /// The static dialplan's outbound socket (`host:port`), used when the xml endpoint has no
    /// answer, as FreeSWITCH falls back to its static XML.
    pub static_socket: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            esl_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            password: Secret::new("ClueCon"),
            heartbeat: Duration::from_secs(20),
            first_command_timeout: Duration::from_secs(25),
            event_queue_capacity: 100_000,
            lost_events_limit: 500,
            time_scale: 1.0,
            xml_url: None,
            xml_credentials: None,
            domain: "127.0.0.1".into(),
            hostname: "fsim".into(),
            log_events: true,
            recordings_dir: None,
            static_socket: None,
        }
    }
}

/// Fault injection, changeable while the simulator runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Delay before every command reply.
    pub slow_reply: Duration,
    /// Write every frame in pieces of this many bytes, flushing between them.
    pub split_writes: Option<usize>,
    /// Listeners stop draining their queues, so events pile up and get lost.
    pub stall_delivery: bool,
}

/// How the ESL server is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// "The system is being shut down." notices, then close.
    Graceful,
    /// Connections vanish without a word, as when the process is killed.
    Abrupt,
}

/// One inbound (or outbound-socket) ESL listener as the event dispatcher sees it.
pub(crate) struct Listener {
    conn: u64,
    pub(crate) sub: Mutex<subscription::Subscription>,
    tx: mpsc::Sender<Arc<Event>>,
    lost: AtomicUsize,
    killed: AtomicBool,
    pub(crate) kill_notice: Notify,
}

struct EslServer {
    addr: SocketAddr,
    stop: watch::Sender<Stop>,
}

pub(crate) struct Inner {
    config: Config,
    core_uuid: String,
    started: Instant,
    sequence: AtomicU64,
    next_conn: AtomicU64,
    log: Log,
    faults: Mutex<Faults>,
    listeners: Mutex<Vec<Arc<Listener>>>,
    esl: Mutex<Option<EslServer>>,
    /// The address the ESL server last listened on, so a restart reuses it.
    last_addr: Mutex<Option<SocketAddr>>,
    pub(crate) channels: Mutex<HashMap<String, Arc<calls::Channel>>>,
    pub(crate) gateways: Mutex<BTreeMap<String, sofia::GatewayStatus>>,
    pub(crate) registrations: Mutex<BTreeMap<String, sofia::Registration>>,
    pub(crate) scenario: Mutex<Scenario>,
    pub(crate) gateway_tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Devices that already did their scenario's mid-call act (drop, press, refer): each
    /// happens on the device's first answered call only.
    pub(crate) acted: Mutex<std::collections::HashSet<String>>,
    /// mod_conference's rooms.
    pub(crate) conferences: Mutex<conference::Rooms>,
    sessions_since_start: AtomicU64,
}

/// A running simulator. Clones share it; the simulator's tasks stop when the last clone drops.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sim {
    /// Starts the simulator and its ESL server.
    pub async fn start(config: Config) -> Result<Sim, Error> {
        Self::start_with(config, Scenario::default()).await
    }

    /// Starts the simulator with a scenario (devices, gateways, calls to place).
    pub async fn start_with(config: Config, scenario: Scenario) -> Result<Sim, Error> {
        let inner = Arc::new(Inner {
            core_uuid: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            sequence: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            log: Log::default(),
            faults: Mutex::new(Faults::default()),
            listeners: Mutex::new(Vec::new()),
            esl: Mutex::new(None),
            last_addr: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            gateways: Mutex::new(BTreeMap::new()),
            registrations: Mutex::new(BTreeMap::new()),
            scenario: Mutex::new(scenario),
            gateway_tasks: Mutex::new(HashMap::new()),
            acted: Mutex::new(std::collections::HashSet::new()),
            conferences: Mutex::new(conference::Rooms::default()),
            sessions_since_start: AtomicU64::new(0),
            config,
        });
        let sim = Sim { inner };
        sim.listen(sim.inner.config.esl_addr).await?;
        spawn_heartbeat(Arc::downgrade(&sim.inner));
        Ok(sim)
    }

    /// The address of the ESL server (valid after a stop, for a restart on the same port).
    pub fn esl_addr(&self) -> SocketAddr {
        lock(&self.inner.last_addr).unwrap_or(self.inner.config.esl_addr)
    }

    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    pub fn faults(&self) -> Faults {
        self.inner.faults()
    }

    /// Whether the ESL server is accepting connections.
    pub fn is_running(&self) -> bool {
        lock(&self.inner.esl).is_some()
    }

    /// Stops the ESL server politely: every client gets the shutdown notice, then the socket
    /// closes and the port is free.
    pub fn stop(&self) {
        self.halt(Stop::Graceful);
    }

    /// Stops the ESL server as a crash would: connections just close.
    pub fn kill(&self) {
        self.halt(Stop::Abrupt);
    }

    fn halt(&self, how: Stop) {
        if let Some(server) = lock(&self.inner.esl).take() {
            let _ = server.stop.send(how);
        }
        lock(&self.inner.listeners).clear();
        if how == Stop::Abrupt {
            // A crashed FreeSWITCH takes its calls with it, without hangup events.
            let channels: Vec<_> = lock(&self.inner.channels).drain().map(|(_, c)| c).collect();
            for channel in channels {
                channel.crash();
            }
        }
    }

    /// Listens again on the address used before, so clients reconnect to the same place.
    pub async fn restart(&self) -> Result<(), Error> {
        self.kill();
        let addr = self.esl_addr();
        self.listen(addr).await
    }

    async fn listen(&self, addr: SocketAddr) -> Result<(), Error> {
        if let Some(server) = lock(&self.inner.esl).as_ref() {
            return Err(Error::AlreadyRunning(server.addr));
        }
        let listener = bind_reusable(addr).map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (stop_tx, stop_rx) = watch::channel(Stop::Running);
        *lock(&self.inner.esl) = Some(EslServer {
            addr,
            stop: stop_tx,
        });
        *lock(&self.inner.last_addr) = Some(addr);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(inbound::accept_loop(inner, listener, stop_rx));
        Ok(())
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Starts the scenario in the background: devices register, gateways go through their
    /// states, calls are placed at their times.
    pub fn run_scenario(&self) {
        flow::run_scenario(Arc::clone(&self.inner));
    }

    /// A phone REGISTERs: the directory is asked through the xml endpoint (when configured)
    /// and the digest checked against its `password` or `a1-hash`.
    pub async fn register(
        &self,
        extension: &str,
        password: &str,
    ) -> Result<(), sofia::RegisterError> {
        sofia::register(&self.inner, extension, password).await
    }

    /// The phone unregisters (sofia::unregister); false when it was not registered.
    pub fn unregister(&self, extension: &str) -> bool {
        sofia::unregister(&self.inner, extension)
    }

    /// The registration expires (sofia::expire); false when it was not registered.
    pub fn expire(&self, extension: &str) -> bool {
        sofia::expire(&self.inner, extension)
    }

    pub fn is_registered(&self, extension: &str) -> bool {
        lock(&self.inner.registrations).contains_key(extension)
    }

    /// Adds a gateway and runs its registration states in the background.
    pub fn start_gateway(&self, gateway: scenario::Gateway) {
        sofia::start_gateway(&self.inner, gateway);
    }

    /// `killgw`: DOWN, then gateway_delete.
    pub fn kill_gateway(&self, name: &str) -> bool {
        sofia::kill_gateway(&self.inner, name)
    }

    /// The current state of a gateway (REGED, FAIL_WAIT, ...).
    pub fn gateway_state(&self, name: &str) -> Option<String> {
        lock(&self.inner.gateways)
            .get(name)
            .map(|g| g.state.clone())
    }

    /// A new event with FreeSWITCH's core headers (name, Core-UUID, host, dates, sequence).
    pub fn new_event(&self, name: &str) -> Event {
        self.inner
            .new_event(name, None, ("fsim.rs", "sim_event", 1))
    }

    /// Emits an event to every listener subscribed to it.
    pub fn emit(&self, event: Event) {
        self.inner.emit(event);
    }

    /// Runs an API command as `api` would and returns its output.
    pub async fn api(&self, command: &str, args: &str) -> String {
        api::execute(&self.inner, command, args, None).await
    }
}

fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn spawn_heartbeat(inner: Weak<Inner>) {
    tokio::spawn(async move {
        let period = match inner.upgrade() {
            Some(inner) => inner.config.heartbeat.max(Duration::from_millis(10)),
            None => return,
        };
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.emit_heartbeat();
        }
    });
}

impl Inner {
    pub(crate) fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Scales a scenario delay by the configured time factor.
    /// Never panics: an application may ask for `sleep 1e400`; NaN is no time, and anything
    /// beyond a year is a year.
    pub(crate) fn scaled(&self, seconds: f64) -> Duration {
        const YEAR: f64 = 365.0 * 86_400.0;
        let scaled = seconds * self.config.time_scale;
        let scaled = if scaled.is_nan() {
            0.0
        } else {
            scaled.clamp(0.0, YEAR)
        };
        Duration::from_secs_f64(scaled)
    }

    pub(crate) fn up_time(&self) -> Duration {
        self.started.elapsed()
    }

    /// A new event with the core headers; `subclass` makes it a CUSTOM event whose
    /// Event-Subclass header comes first, as FreeSWITCH puts it.
    pub(crate) fn new_event(
        &self,
        name: &str,
        subclass: Option<&str>,
        (file, function, line): (&str, &str, u32),
    ) -> Event {
        let now = chrono::Utc::now();
        let local = now.with_timezone(&chrono::Local);
        let mut event = Event::bare();
        if let Some(subclass) = subclass {
            event.push("Event-Subclass", subclass);
        }
        event
            .push("Event-Name", name)
            .push("Core-UUID", self.core_uuid.as_str())
            .push("FreeSWITCH-Hostname", self.config.hostname.as_str())
            .push("FreeSWITCH-Switchname", self.config.hostname.as_str())
            .push("FreeSWITCH-IPv4", "127.0.0.1")
            .push("FreeSWITCH-IPv6", "::1")
            .push(
                "Event-Date-Local",
                local.format("%Y-%m-%d %H:%M:%S").to_string(),
            )
            .push(
                "Event-Date-GMT",
                now.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            )
            .push("Event-Date-Timestamp", now.timestamp_micros().to_string())
            .push("Event-Calling-File", file)
            .push("Event-Calling-Function", function)
            .push("Event-Calling-Line-Number", line.to_string())
            .push(
                "Event-Sequence",
                self.sequence.fetch_add(1, Ordering::Relaxed).to_string(),
            );
        event
    }

    /// Sends an event to every listener that wants it; a full queue counts as lost events and
    /// more than the limit kills that listener.
    pub(crate) fn emit(&self, event: Event) {
        if self.config.log_events {
            self.log.push(Entry::Emitted {
                name: event.name().to_owned(),
                subclass: event.subclass().map(str::to_owned),
                unique_id: event.unique_id().map(str::to_owned),
            });
        }
        let event = Arc::new(event);
        // Everything below is non-blocking (try_send), so the list is walked under its lock
        // instead of being copied for every event.
        let mut closed = Vec::new();
        let listeners = lock(&self.listeners);
        let keys = subscription::EventKeys::of(&event);
        for listener in listeners.iter() {
            if listener.killed.load(Ordering::Relaxed)
                || !lock(&listener.sub).wants_keyed(&keys, &event)
            {
                continue;
            }
            match listener.tx.try_send(Arc::clone(&event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let lost = listener.lost.fetch_add(1, Ordering::Relaxed) + 1;
                    if lost > self.config.lost_events_limit {
                        listener.killed.store(true, Ordering::Relaxed);
                        listener.kill_notice.notify_one();
                        self.log.push(Entry::EventsLost {
                            conn: listener.conn,
                            lost,
                        });
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed.push(listener.conn),
            }
        }
        drop(listeners);
        for conn in closed {
            self.remove_listener(conn);
        }
    }

    pub(crate) fn add_listener(&self, conn: u64) -> (Arc<Listener>, mpsc::Receiver<Arc<Event>>) {
        let (tx, rx) = mpsc::channel(self.config.event_queue_capacity.max(1));
        let listener = Arc::new(Listener {
            conn,
            sub: Mutex::new(subscription::Subscription::default()),
            tx,
            lost: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
            kill_notice: Notify::new(),
        });
        lock(&self.listeners).push(Arc::clone(&listener));
        (listener, rx)
    }

    pub(crate) fn remove_listener(&self, conn: u64) {
        lock(&self.listeners).retain(|l| l.conn != conn);
    }

    fn emit_heartbeat(&self) {
        let up = self.up_time();
        let mut event = self.new_event("HEARTBEAT", None, ("switch_core.c", "send_heartbeat", 95));
        let sessions = lock(&self.channels).len();
        event
            .push("Event-Info", "System Ready")
            .push("Up-Time", api::format_uptime(up))
            .push("FreeSWITCH-Version", "1.10.12-release~64bit")
            .push("Uptime-msec", up.as_millis().to_string())
            .push("Session-Count", sessions.to_string())
            .push("Max-Sessions", "1000")
            .push("Session-Per-Sec", "30")
            .push("Session-Per-Sec-Last", "0")
            .push("Session-Per-Sec-Max", "0")
            .push("Session-Per-Sec-FiveMin", "0")
            .push(
                "Session-Since-Startup",
                self.sessions_since_start
                    .load(Ordering::Relaxed)
                    .to_string(),
            )
            .push("Session-Peak-Max", "0")
            .push("Session-Peak-FiveMin", "0")
            .push("Idle-CPU", "98.000000");
        self.emit(event);
    }

    pub(crate) fn count_session(&self) {
        self.sessions_since_start.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stop_signal(&self) -> Option<watch::Receiver<Stop>> {
        lock(&self.esl).as_ref().map(|s| s.stop.subscribe())
    }
}

pub(crate) use lock as lock_mutex;
