//! Call setup latency: from the moment the simulated FreeSWITCH has connected to patchbay's
//! outbound socket for a new call to the moment patchbay's `bridge` command for that call
//! has arrived at the simulator. In between patchbay answers `connect`, builds the Call
//! (numbers, contact, country), runs the rules and sends the `set`s and the `bridge`.
//!
//! The whole daemon (xml endpoint, outbound socket server, inbound ESL link, phone repo,
//! spool) runs against the simulator over loopback, in this one process: the simulator's own
//! work shares the cores. New calls arrive at a steady rate; both phones ring without
//! answering and each caller hangs up after a second, so about as many calls ring at once as
//! arrive per second. Both instants come from the simulator's log (`Entry::Connected` and
//! `Entry::Command` carry them).
//!
//! Run: `cargo bench --bench call_setup` (release build). `CALL_SETUP_RATE` sets new calls
//! per second (default 50), `CALL_SETUP_SECONDS` how long they keep coming (default 20),
//! `CALL_SETUP_SHOW_SLOWEST=n` prints the n slowest calls command by command.
//! Target: p99 <= 5 ms.

#[allow(dead_code)]
#[path = "../tests/it/running.rs"]
mod running;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use patchbay::sim::log::{ConnKind, Entry};

use running::{call_from, Running};

const SCENARIO: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "no_answer"

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "no_answer"

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|value| *value > 0)
        .unwrap_or(default)
}

fn main() {
    let rate = env_number("CALL_SETUP_RATE", 50);
    let seconds = env_number("CALL_SETUP_SECONDS", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(rate, seconds));
}

async fn run(rate: u64, seconds: u64) {
    // voicemail_delay 10: every call is still ringing when its caller hangs up.
    let running = Running::start(SCENARIO, 10).await;
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut calls = Vec::with_capacity(total as usize);
    let began = Instant::now();
    for index in 0..total {
        ticker.tick().await;
        let number = format!("+4930{:07}", 1_000_000 + index);
        calls.push(running.sim.place_call(call_from(&number, "", Some(1.0))));
    }
    let placing = began.elapsed();
    for call in calls {
        if let Err(error) = call.finished().await {
            eprintln!("call_setup: a call did not finish: {error}");
        }
    }

    let mut connected: HashMap<u64, Instant> = HashMap::new();
    let mut setup: HashMap<u64, Duration> = HashMap::new();
    let mut steps: HashMap<u64, Vec<(Duration, String)>> = HashMap::new();
    for entry in running.sim.log().entries() {
        if let Entry::Command {
            conn,
            line,
            headers,
            received_at,
            ..
        } = &entry
        {
            if let Some(at) = connected.get(conn) {
                let app = headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("execute-app-name"))
                    .map(|(_, app)| app.as_str());
                let what = match app {
                    Some(app) => format!("execute {app}"),
                    None => line.clone(),
                };
                steps
                    .entry(*conn)
                    .or_default()
                    .push((received_at.duration_since(*at), what));
            }
        }
        match entry {
            Entry::Connected {
                conn,
                kind: ConnKind::Outbound,
                connected_at,
            } => {
                connected.insert(conn, connected_at);
            }
            Entry::Command {
                conn,
                headers,
                received_at,
                ..
            } if is_bridge(&headers) => {
                if let Some(at) = connected.get(&conn) {
                    setup
                        .entry(conn)
                        .or_insert_with(|| received_at.duration_since(*at));
                }
            }
            _ => {}
        }
    }
    running.stop().await;

    // Where the slowest calls spent their time, command by command (CALL_SETUP_SHOW_SLOWEST=n).
    let show = env_number("CALL_SETUP_SHOW_SLOWEST", 0) as usize;
    let mut slowest: Vec<(u64, Duration)> = setup.iter().map(|(conn, d)| (*conn, *d)).collect();
    slowest.sort_by_key(|(_, took)| std::cmp::Reverse(*took));
    for (conn, _) in slowest.iter().take(show) {
        let timeline: Vec<String> = steps[conn]
            .iter()
            .map(|(at, what)| format!("{:.2} ms {what}", millis(*at)))
            .collect();
        println!("call_setup: slow call: {}", timeline.join(" | "));
    }
    let mut latencies: Vec<Duration> = setup.into_values().collect();
    latencies.sort_unstable();
    println!(
        "call_setup: {total} calls placed in {:.1} s ({rate}/s for {seconds} s); {} outbound \
         connections, {} bridges",
        placing.as_secs_f64(),
        connected.len(),
        latencies.len()
    );
    if latencies.is_empty() {
        println!("call_setup: no bridge was sent; nothing to measure");
        std::process::exit(1);
    }
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let max = latencies[latencies.len() - 1];
    println!(
        "call_setup: outbound connect -> bridge: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
         (target p99 <= 5 ms: {})",
        millis(p50),
        millis(p99),
        millis(max),
        if p99 <= Duration::from_millis(5) {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// Whether a command is `sendmsg` executing `bridge`.
fn is_bridge(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("execute-app-name") && value.trim() == "bridge"
    })
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], percent: f64) -> Duration {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
