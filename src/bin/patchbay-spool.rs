//! Runs the after-call spool alone, from a JSON file holding the `spool`, `email`, `calendar`
//! and `stt` settings sections (and `timezone`), until SIGTERM or ctrl-c. The crash-recovery
//! tests kill it with SIGKILL mid-batch and start it again; an operator can use it to drain a
//! spool folder without the rest of patchbay.

use std::path::PathBuf;
use std::process::ExitCode;

use patchbay::calendar::CalendarSettings;
use patchbay::journal::Journal;
use patchbay::notify::EmailSettings;
use patchbay::spool::{Spool, SpoolSettings};
use patchbay::voicemail::SttSettings;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    spool: SpoolSettings,
    #[serde(default)]
    email: EmailSettings,
    #[serde(default)]
    calendar: CalendarSettings,
    #[serde(default)]
    stt: SttSettings,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("patchbay-spool: usage: patchbay-spool SETTINGS.json");
        return ExitCode::from(2);
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("patchbay-spool: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let settings: Settings = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| format!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
    let timezone: chrono_tz::Tz = match settings.timezone.as_deref() {
        Some(name) => name.parse().map_err(|_| {
            format!(
                "{}: timezone: \"{name}\" is not a timezone (expected e.g. America/Montreal)",
                path.display()
            )
        })?,
        None => chrono_tz::UTC,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let journal = Journal::in_memory(timezone);
        let spool = Spool::new(
            settings.spool,
            settings.email,
            &settings.calendar,
            settings.stt,
            timezone,
            journal,
        )
        .map_err(|e| e.to_string())?;
        spool.run(shutdown()).await;
        Ok(())
    })
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
