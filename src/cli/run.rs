//! `patchbay run`: the daemon. Loads settings (a bad file exits 2 with the key named), opens
//! the journal, serves mod_xml_curl and stops cleanly on ctrl-c or SIGTERM.
//!
//! [`Daemon`] is the seam for the links still to come (ESL inbound and outbound, the repo
//! watcher): each is one more task started in [`Daemon::run`] that receives the same
//! [`Shutdown`] signal.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::RunArgs;
use crate::freeswitch::xml::{self, XmlState};
use crate::journal::Journal;
use crate::settings::Settings;

/// How long requests in flight may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::new(settings, args.repo.clone())?;
        daemon.run(termination()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on ctrl-c, or on SIGTERM (what `docker stop` sends).
async fn termination() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for ctrl-c: {error}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A cloneable "stop now" signal every task of the daemon watches.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once shutdown was requested (at once if it already was).
    pub async fn requested(mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }
}

/// The running daemon's parts, built from loaded settings.
pub struct Daemon {
    settings: Arc<Settings>,
    journal: Journal,
    xml: XmlState,
    /// The phone repo to follow (the repo watcher is wired in later).
    repo: Option<PathBuf>,
}

impl Daemon {
    /// Opens the journal and renders the xml documents; nothing listens yet.
    pub fn new(settings: Settings, repo: Option<PathBuf>) -> anyhow::Result<Daemon> {
        let journal = Journal::open(&settings.journal, settings.timezone).with_context(|| {
            format!(
                "journal: {}: cannot open for appending (check the settings key \"journal\")",
                settings.journal.display()
            )
        })?;
        for secret in settings.secrets() {
            journal.hide(&secret);
        }
        let settings = Arc::new(settings);
        let xml = XmlState::new(settings.clone())?;
        Ok(Daemon {
            settings,
            journal,
            xml,
            repo,
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn xml(&self) -> &XmlState {
        &self.xml
    }

    pub fn repo(&self) -> Option<&PathBuf> {
        self.repo.as_ref()
    }

    /// Runs every part until `stop` resolves, then gives them [`DRAIN_TIMEOUT`] to finish.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_sender, stop_receiver) = watch::channel(false);
        let shutdown = Shutdown {
            receiver: stop_receiver,
        };
        let listener = xml::endpoint::bind(&self.xml).await?;
        let address = listener
            .local_addr()
            .context("xml endpoint: no local address")?;
        self.journal.write(format!(
            "patchbay started: answering FreeSWITCH's lookups on {address}"
        ));
        let mut server = tokio::spawn(xml::serve(
            listener,
            self.xml.clone(),
            shutdown.clone().requested(),
        ));
        let outcome = tokio::select! {
            () = stop => None,
            result = &mut server => Some(result),
        };
        let result = match outcome {
            // A part ended on its own: that is an error even if it returned Ok.
            Some(result) => match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("xml endpoint stopped unexpectedly")),
                Ok(Err(error)) => Err(error.into()),
                Err(join) => Err(anyhow::anyhow!("xml endpoint crashed: {join}")),
            },
            None => {
                let _ = stop_sender.send(true);
                match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                    Ok(Ok(result)) => result.map_err(anyhow::Error::from),
                    Ok(Err(join)) => Err(anyhow::anyhow!("xml endpoint crashed: {join}")),
                    Err(_) => {
                        server.abort();
                        tracing::warn!(
                            "xml endpoint: requests still running after {DRAIN_TIMEOUT:?}, dropped"
                        );
                        Ok(())
                    }
                }
            }
        };
        match &result {
            Ok(()) => self.journal.write("patchbay stopped"),
            Err(error) => self.journal.write(format!("patchbay stopped: {error:#}")),
        }
        result
    }
}
