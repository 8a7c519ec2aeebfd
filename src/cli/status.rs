//! `patchbay status`: what the running daemon sees right now — registered devices, gateway
//! states, calls in progress and open incidents — read from the status file the daemon
//! rewrites every second next to its journal.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::StatusArgs;
use crate::calls::registry::Health;
use crate::daemon::StatusFile;
use crate::journal::human_duration;
use crate::settings::Settings;

/// Older than this, the daemon is probably not running.
const STALE_AFTER_SECS: i64 = 10;

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.settings)?;
    let path = StatusFile::path(&settings);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no status to read (is patchbay running? start it with `patchbay run --settings {}`)",
            path.display(),
            args.settings.display()
        )
    })?;
    let status: StatusFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a status file patchbay wrote", path.display()))?;
    print!("{}", render(&status, Utc::now(), settings.timezone));
    Ok(ExitCode::SUCCESS)
}

fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    human_duration((now - then).to_std().unwrap_or_default())
}

/// The status as the person reads it.
fn render(file: &StatusFile, now: DateTime<Utc>, timezone: Tz) -> String {
    let local = |time: DateTime<Utc>| {
        time.with_timezone(&timezone)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let mut out = String::new();
    let age = (now - file.updated).num_seconds();
    let _ = writeln!(out, "patchbay status at {}", local(file.updated));
    if age > STALE_AFTER_SECS {
        let _ = writeln!(
            out,
            "  (not updated for {}: patchbay may be stopped)",
            ago(file.updated, now)
        );
    }
    if file.do_not_disturb {
        let _ = writeln!(
            out,
            "\nDo not disturb is ON: calls go straight to voicemail (*86 then 3 turns it off)"
        );
    }
    let status = &file.status;
    let _ = writeln!(out, "\nDevices registered: {}", status.devices.len());
    for device in &status.devices {
        let _ = writeln!(
            out,
            "  {:<8} from {:<15} since {}",
            device.extension,
            device.network_ip,
            local(device.registered_at)
        );
    }
    let _ = writeln!(out, "\nNumbers (gateways): {}", status.gateways.len());
    for gateway in &status.gateways {
        let health = match gateway.health {
            Health::Up => "up",
            Health::Down => "DOWN",
            Health::Transient => "connecting",
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<10} {:<10} for {}",
            gateway.name,
            health,
            gateway.state,
            ago(gateway.since, now)
        );
    }
    let _ = writeln!(out, "\nCalls in progress: {}", status.calls.len());
    for call in &status.calls {
        let _ = writeln!(
            out,
            "  {} ({}), {} for {}",
            call.peer,
            call.origin.as_str(),
            if call.answered { "talking" } else { "ringing" },
            ago(call.started, now)
        );
    }
    let _ = writeln!(out, "\nOpen incidents: {}", file.incidents.len());
    for incident in &file.incidents {
        let _ = writeln!(
            out,
            "  {} down since {} ({}): {}",
            incident.subject,
            local(incident.began),
            ago(incident.began, now),
            incident.detail
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::outage::{Outages, Subject};
    use crate::calls::registry::Registry;
    use crate::calls::Origin;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn reads_like_a_dashboard_and_flags_a_stale_file() {
        let registry = Registry::new();
        registry.device_registered("1000", "sip:1000@10.0.0.2", "10.0.0.2", 600, at(0));
        registry.gateway_state("did1", "REGED", Health::Up, at(0));
        registry.gateway_state("did2", "FAIL_WAIT", Health::Down, at(60));
        registry.call_started(
            "u1",
            Origin::External,
            "Marie Dubois (+33 6 12 34 56 78)",
            at(100),
        );
        registry.call_answered("u1");
        let mut outages = Outages::new();
        outages.down(
            Subject::Gateway("did2".into()),
            "FAILED 503 Service Unavailable",
            at(60),
        );
        let file = StatusFile {
            updated: at(120),
            status: registry.status(),
            incidents: outages.open(),
            do_not_disturb: false,
        };
        // Through JSON, as `status` reads what `run` wrote.
        let file: StatusFile =
            serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
        let text = render(&file, at(121), chrono_tz::UTC);
        assert!(
            text.contains("Devices registered: 1\n  1000     from 10.0.0.2"),
            "{text}"
        );
        assert!(
            text.contains("did2             DOWN       FAIL_WAIT  for 1 min 1 s"),
            "{text}"
        );
        assert!(
            text.contains("Marie Dubois (+33 6 12 34 56 78) (external), talking for 21 s"),
            "{text}"
        );
        assert!(
            text.contains("gateway did2 down since 2025-11-24 16:01 (1 min 1 s): FAILED 503"),
            "{text}"
        );
        assert!(!text.contains("may be stopped"));
        assert!(!text.contains("Do not disturb"), "{text}");
        assert!(render(&file, at(200), chrono_tz::UTC)
            .contains("(not updated for 1 min 20 s: patchbay may be stopped)"));
        let quiet = StatusFile {
            do_not_disturb: true,
            ..file
        };
        assert!(render(&quiet, at(121), chrono_tz::UTC).contains("Do not disturb is ON"));
    }
}
