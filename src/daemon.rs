//! The daemon: every part of patchbay wired together and run until a shutdown signal.
//!
//! [`Daemon::bind`] opens what can fail early (journal, phone repo, spool folders, the xml
//! and outbound listeners) so that a bad setting stops the start with a clear message;
//! [`Daemon::run`] then starts the tasks: the mod_xml_curl endpoint, the outbound socket
//! server (one call session per connection), the inbound ESL link (registrations, gateway
//! states, outages), the repo watcher and the after-call spool. `patchbay run` and
//! `patchbay demo` use it the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::calls::flow::VoicemailSettings;
use crate::calls::link::LinkWatcher;
use crate::calls::mailbox::{DoNotDisturb, Mailbox};
use crate::calls::outage::{Incident, Outages};
use crate::calls::registry::{Registry, Status};
use crate::calls::session::{self, Clock, Context, Incoming};
use crate::calls::CallControl;
use crate::contacts::number::normalize;
use crate::freeswitch::esl::{inbound, outbound};
use crate::freeswitch::xml::{self, XmlState};
use crate::journal::Journal;
use crate::repo::{GreetingStore, Loader, RepoHandle, Watcher};
use crate::rules::{DidSetting, RuleSettings, SystemClock};
use crate::settings::Settings;
use crate::spool::Spool;

/// How long each part may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What tests, `demo` and `status` look at while the daemon runs.
#[derive(Clone)]
pub struct Handles {
    pub journal: Journal,
    pub registry: Arc<Registry>,
    pub outages: Arc<Mutex<Outages>>,
    pub repo: RepoHandle,
    pub spool: Spool,
    pub do_not_disturb: Arc<DoNotDisturb>,
}

/// What rules read through `settings()`: caller ID names, the DIDs and their countries,
/// the ringing time. Never a secret.
pub fn rule_settings(settings: &Settings) -> RuleSettings {
    RuleSettings {
        caller_id: settings
            .caller_id
            .iter()
            .map(|(language, name)| (language.to_lowercase(), name.clone()))
            .collect(),
        dids: settings
            .dids
            .iter()
            .map(|did| {
                let number = normalize(&did.pstn_number, settings.default_region);
                DidSetting {
                    number: number
                        .as_ref()
                        .map(|number| number.e164.clone())
                        .unwrap_or_else(|| did.pstn_number.clone()),
                    country: did
                        .country
                        .clone()
                        .or_else(|| number.and_then(|number| number.country)),
                }
            })
            .collect(),
        voicemail_delay: Some(settings.voicemail_delay),
    }
}

/// What `patchbay status` reads: the live picture, written next to the journal every second.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusFile {
    pub updated: DateTime<Utc>,
    pub status: Status,
    pub incidents: Vec<Incident>,
    /// The *86 menu's switch: calls go straight to voicemail while it is on.
    #[serde(default)]
    pub do_not_disturb: bool,
}

impl StatusFile {
    /// Where the daemon with these settings writes its status.
    pub fn path(settings: &Settings) -> PathBuf {
        settings.journal.with_file_name("status.json")
    }
}

/// How often the status file is rewritten.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Rewrites the status file until stopped; written to a temporary name and renamed, so a
/// reader never sees half a file.
async fn write_status(path: PathBuf, handles: Handles) {
    let temporary = path.with_extension("json.tmp");
    let mut reported = false;
    loop {
        let file = StatusFile {
            updated: Utc::now(),
            status: handles.registry.status(),
            incidents: handles
                .outages
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .open(),
            do_not_disturb: handles.do_not_disturb.is_on(),
        };
        let written = serde_json::to_vec_pretty(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &path));
        match written {
            Ok(()) => reported = false,
            Err(error) if !reported => {
                reported = true;
                tracing::warn!("{}: cannot write the status file: {error}", path.display());
            }
            Err(_) => {}
        }
        tokio::time::sleep(STATUS_INTERVAL).await;
    }
}

/// The daemon, bound but not yet running.
pub struct Daemon {
    settings: Settings,
    handles: Handles,
    watcher: Watcher,
    xml_listener: TcpListener,
    outbound_listener: TcpListener,
    /// Stops the repo watcher when the daemon stops.
    stop_sender: watch::Sender<bool>,
}

async fn stopped(mut receiver: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = receiver.wait_for(|stop| *stop).await;
}

impl Daemon {
    /// Opens the journal, the phone repo and the spool, and binds the listeners. Listen
    /// addresses with port 0 get a free port; the dialplan then points at the real one.
    pub async fn bind(mut settings: Settings, repo: Option<PathBuf>) -> anyhow::Result<Daemon> {
        let journal = Journal::open(&settings.journal, settings.timezone).with_context(|| {
            format!(
                "journal: {}: cannot open for appending (check the settings key \"journal\")",
                settings.journal.display()
            )
        })?;
        for secret in settings.secrets() {
            journal.hide(&secret);
        }
        if let Some(path) = repo {
            settings.repo.path = path;
        }

        let outbound_listener = TcpListener::bind(settings.freeswitch.outbound.listen)
            .await
            .with_context(|| {
                format!(
                    "freeswitch.outbound.listen: cannot listen on {}",
                    settings.freeswitch.outbound.listen
                )
            })?;
        settings.freeswitch.outbound.listen = outbound_listener
            .local_addr()
            .context("outbound socket: no local address")?;
        let xml_state = XmlState::new(Arc::new(settings.clone()))?;
        let xml_listener = xml::endpoint::bind(&xml_state).await?;
        settings.freeswitch.xml.listen = xml_listener
            .local_addr()
            .context("xml endpoint: no local address")?;

        let (stop_sender, stop_receiver) = watch::channel(false);
        let greetings = GreetingStore::new(&settings.greetings_dir).with_context(|| {
            format!(
                "greetings_dir: {}: cannot create",
                settings.greetings_dir.display()
            )
        })?;
        let loader = Loader::new(
            crate::rules::defaults::files(),
            settings.default_region,
            Some(Arc::new(greetings)),
        )
        .with_rule_context(
            rule_settings(&settings),
            Arc::new(SystemClock(settings.timezone)),
        );
        let watcher = Watcher::start(
            &settings.repo,
            loader,
            journal.clone(),
            stopped(stop_receiver),
        )?;
        let spool = Spool::new(
            settings.spool.clone(),
            settings.email.clone(),
            &settings.calendar,
            settings.stt.clone(),
            settings.timezone,
            journal.clone(),
        )?;
        std::fs::create_dir_all(&settings.recordings_dir).with_context(|| {
            format!(
                "recordings_dir: {}: cannot create",
                settings.recordings_dir.display()
            )
        })?;
        let handles = Handles {
            journal,
            registry: Arc::new(Registry::new()),
            outages: Arc::new(Mutex::new(Outages::new())),
            repo: watcher.handle(),
            spool,
            do_not_disturb: Arc::new(DoNotDisturb::load(&settings.recordings_dir)),
        };
        Ok(Daemon {
            settings,
            handles,
            watcher,
            xml_listener,
            outbound_listener,
            stop_sender,
        })
    }

    pub fn handles(&self) -> &Handles {
        &self.handles
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where FreeSWITCH's mod_xml_curl should POST.
    pub fn xml_address(&self) -> SocketAddr {
        self.settings.freeswitch.xml.listen
    }

    /// Where FreeSWITCH's `socket` app connects.
    pub fn outbound_address(&self) -> SocketAddr {
        self.settings.freeswitch.outbound.listen
    }

    /// Points the inbound ESL link at another FreeSWITCH (the demo's simulator).
    pub fn set_esl(&mut self, address: SocketAddr) {
        self.settings.freeswitch.esl.host = address.ip().to_string();
        self.settings.freeswitch.esl.port = address.port();
    }

    /// Runs every part until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Daemon {
            settings,
            handles,
            watcher,
            xml_listener,
            outbound_listener,
            stop_sender,
        } = self;
        let settings = Arc::new(settings);
        let journal = handles.journal.clone();
        let shutdown = || stopped(stop_sender.subscribe());
        journal.write(format!(
            "patchbay started: lookups on {}, calls on {}, FreeSWITCH at {}:{}",
            settings.freeswitch.xml.listen,
            settings.freeswitch.outbound.listen,
            settings.freeswitch.esl.host,
            settings.freeswitch.esl.port
        ));

        let xml_state = XmlState::new(Arc::clone(&settings))?;
        let xml_task = tokio::spawn(xml::serve(xml_listener, xml_state, shutdown()));

        let clock: Clock = Arc::new(Utc::now);
        let context = Arc::new(Context {
            settings: Arc::clone(&settings),
            snapshots: Arc::clone(handles.repo.cell()),
            registry: Arc::clone(&handles.registry),
            journal: journal.clone(),
            spool: Some(handles.spool.clone()),
            voicemail: VoicemailSettings::default(),
            clock: Arc::clone(&clock),
            handoffs: Default::default(),
            mailbox: Arc::new(Mailbox::new(&settings.recordings_dir)),
            do_not_disturb: Arc::clone(&handles.do_not_disturb),
        });
        let calls_task = tokio::spawn(outbound::serve(
            outbound_listener,
            move |call: outbound::Session| {
                let context = Arc::clone(&context);
                async move {
                    let channel = call.channel;
                    let incoming = Incoming {
                        uuid: channel.uuid.clone(),
                        caller_id_name: channel.caller_id_name.clone().unwrap_or_default(),
                        caller_id_number: channel.caller_id_number.clone().unwrap_or_default(),
                        destination_number: channel.destination_number.clone().unwrap_or_default(),
                        context: channel
                            .context
                            .clone()
                            .unwrap_or_else(|| "public".to_owned()),
                        transfer_source: channel.variable("transfer_source").map(str::to_owned),
                    };
                    let control: Arc<dyn CallControl> = call.control;
                    session::handle(control, incoming, context).await;
                }
            },
            shutdown(),
        ));

        let esl = &settings.freeswitch.esl;
        let (_client, link_events) = inbound::Client::start(
            inbound::Config::new(esl.host.clone(), esl.port, esl.password.clone()),
            journal.clone(),
            shutdown(),
        );
        let link_task = tokio::spawn(
            LinkWatcher::new(
                Arc::clone(&handles.registry),
                Arc::clone(&handles.outages),
                journal.clone(),
                clock,
            )
            .with_rules(Arc::clone(handles.repo.cell()))
            .run(link_events),
        );
        // The person's email templates follow the live snapshot.
        let overrides_task = {
            let repo = handles.repo.clone();
            let spool = handles.spool.clone();
            let mut commits = repo.subscribe();
            tokio::spawn(async move {
                loop {
                    let snapshot = repo.snapshot();
                    spool.overrides().set(
                        snapshot
                            .templates()
                            .map(|(name, text)| (name.to_owned(), text.to_owned()))
                            .collect(),
                    );
                    if commits.changed().await.is_err() {
                        break;
                    }
                }
            })
        };
        let status_task = tokio::spawn(write_status(StatusFile::path(&settings), handles.clone()));
        let spool_task = run_spool_on_its_own_thread(handles.spool.clone(), shutdown())?;

        stop.await;
        let _ = stop_sender.send(true);
        // Parts get a bounded time to finish what they are doing (a lookup, a spool step);
        // calls in progress carry on in their own tasks until the process exits.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, calls_task).await;
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, spool_task).await;
        link_task.abort();
        overrides_task.abort();
        status_task.abort();
        let xml_result = tokio::time::timeout(DRAIN_TIMEOUT, xml_task).await;
        drop(watcher);
        journal.write("patchbay stopped");
        match xml_result {
            Ok(Ok(result)) => result.map_err(anyhow::Error::from),
            Ok(Err(join)) => Err(anyhow::anyhow!("xml endpoint crashed: {join}")),
            Err(_) => {
                tracing::warn!(
                    "xml endpoint: requests still running after {DRAIN_TIMEOUT:?}, dropped"
                );
                Ok(())
            }
        }
    }
}

/// Runs the after-call spool on a thread of its own, with its own small runtime. A job's
/// steps write and fsync files (about ten per call); on the runtime that answers calls those
/// waits on the disk would hold up the next ringing phone. Completes when the spool stops.
fn run_spool_on_its_own_thread(
    spool: Spool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("spool-blocking")
        .build()
        .context("cannot start the spool's runtime")?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("spool".to_owned())
        .spawn(move || {
            runtime.block_on(spool.run(shutdown));
            let _ = done.send(());
        })
        .context("cannot start the spool's thread")?;
    Ok(finished)
}
