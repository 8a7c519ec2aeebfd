//! `patchbay run`: the daemon. Loads settings (a bad file exits 2 with the key named), starts
//! every part (see [`crate::daemon`]) and stops cleanly on ctrl-c or SIGTERM.

use std::process::ExitCode;

use anyhow::Context;

use super::RunArgs;
use crate::daemon::Daemon;
use crate::settings::Settings;

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stop = termination();
        let daemon = Daemon::bind(settings, args.repo.clone()).await?;
        daemon.run(stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on ctrl-c, or on SIGTERM (what `docker stop` sends). The handlers are installed
/// when this is called, not when it is first polled, so a signal that arrives while the daemon
/// is still starting is not lost.
fn termination() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!("cannot listen for ctrl-c: {error}");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate {
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
}
