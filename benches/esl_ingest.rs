//! ESL event ingest over loopback: a local server plays FreeSWITCH, streaming a recorded mixed
//! event stream (the json and plain events of the captures that patchbay subscribes to,
//! repeated) as fast as the socket takes it; we measure events per second through the inbound
//! client into its consumer, and how many were dropped. The server is a plain OS thread (the
//! real FreeSWITCH is another process); the client runs on a two-worker tokio runtime, where
//! its reader task splits frames and the consumer task decodes each event as it takes it
//! (`LinkEvents::recv`), as patchbay's link watcher does. First it prints the decoder's own
//! cost per event, on one thread without sockets, which does not depend on what else the
//! machine is doing.
//!
//! mimalloc was tried: 15 % less CPU per event here, but call setup's p99 (benches/call_setup.rs)
//! doubled to 8-12 ms, so patchbay stays on the system allocator.
//!
//! Run: `cargo bench --bench esl_ingest` (release build). `ESL_INGEST_EVENTS` sets the count
//! (default 1 000 000).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use patchbay::freeswitch::esl::event::{BodyFormat, LinkEvent};
use patchbay::freeswitch::esl::frame::Frame;
use patchbay::freeswitch::esl::inbound;
use patchbay::journal::Journal;
use patchbay::settings::Secret;
use std::io::{Read, Write};

/// What patchbay subscribes to; FreeSWITCH sends nothing else on the link.
const SUBSCRIBED: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "CHANNEL_ORIGINATE",
    "BACKGROUND_JOB",
    "HEARTBEAT",
    "sofia%3A%3Aregister",
    "sofia::register",
    "sofia%3A%3Agateway_state",
    "sofia::gateway_state",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/freeswitch")
}

/// One pass over the captures: every subscribed event frame, byte for byte.
fn template() -> (Vec<u8>, usize) {
    let mut stream = Vec::new();
    let mut count = 0;
    for name in [
        "esl-inbound-call-json-internal-auth.txt",
        "esl-inbound-call.txt",
        "esl-inbound-call-fs-hangup.txt",
        "bridge-two-devices.txt",
        "gateway-states.txt",
    ] {
        let data = std::fs::read(fixtures().join(name)).expect("capture file");
        let mut pos = 0;
        while let Ok(Some((frame, used))) = Frame::parse(&data[pos..]) {
            let raw = &data[pos..pos + used];
            pos += used;
            if !frame
                .content_type()
                .is_some_and(|kind| kind.starts_with("text/event-"))
            {
                continue;
            }
            let body = frame.body().unwrap_or_default();
            let wanted = SUBSCRIBED.iter().any(|name| {
                let plain = format!("Event-Name: {name}\n");
                let json = format!("\"Event-Name\":\"{name}\"");
                let subclass = format!("Event-Subclass: {name}\n");
                let json_subclass = format!("\"Event-Subclass\":\"{name}\"");
                [plain, json, subclass, json_subclass]
                    .iter()
                    .any(|needle| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
            });
            if wanted {
                stream.extend_from_slice(raw);
                count += 1;
            }
        }
    }
    (stream, count)
}

/// Plays FreeSWITCH on its own OS thread with blocking sockets, as the real one is another
/// process: sharing patchbay's runtime would let the scheduler put both ends on one core.
fn serve(listener: std::net::TcpListener, template: Vec<u8>, repeats: usize) {
    let Ok((mut stream, _)) = listener.accept() else {
        return;
    };
    let _ = stream.write_all(&Frame::auth_request().to_wire());
    let mut buffer = Vec::new();
    let mut replied = 0;
    // auth, event subscription, show channels, show registrations: then stream.
    while replied < 4 {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        while let Ok(Some((command, used))) = Frame::parse_command(&buffer) {
            buffer.drain(..used);
            let line = command.command().unwrap_or_default().to_owned();
            let reply = if line.starts_with("api ") {
                Frame::api_response("{\"row_count\":0}").to_wire()
            } else {
                Frame::command_reply("+OK").to_wire()
            };
            let _ = stream.write_all(&reply);
            replied += 1;
        }
    }
    for _ in 0..repeats {
        if stream.write_all(&template).is_err() {
            return;
        }
    }
    // Keep the socket open until the client is done.
    let mut sink = [0u8; 64];
    let _ = stream.read(&mut sink);
}

/// User + system CPU seconds this process has used (Linux `/proc/self/stat`, 100 Hz ticks).
/// The machine is shared, so wall-clock rate alone says little; CPU per event does not
/// depend on what else runs.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The decoder alone, on one thread, without sockets: frames split and events decoded as
/// the inbound link does it. This is the part of the per-event cost that is ours; the best of
/// several rounds, since other work on a shared machine only ever adds time.
fn decode_only(template: &[u8]) {
    let (rounds, passes) = (7, 300);
    let mut best = f64::MAX;
    let mut decoded = 0usize;
    for _ in 0..rounds {
        decoded = 0;
        let started = Instant::now();
        for _ in 0..passes {
            let mut pos = 0;
            while let Ok(Some((frame, used))) = Frame::parse(&template[pos..]) {
                pos += used;
                let format = match frame.content_type() {
                    Some("text/event-json") => BodyFormat::Json,
                    _ => BodyFormat::Plain,
                };
                let body = frame.body().unwrap_or_default();
                if let Ok(Some(event)) = LinkEvent::from_body(format, body) {
                    decoded += 1;
                    std::hint::black_box(event);
                }
            }
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e6 / decoded.max(1) as f64);
    }
    println!(
        "esl_ingest: decode only, one thread, best of {rounds} rounds of {decoded} events: {best:.2} us/event"
    );
}

fn main() {
    let wanted: usize = std::env::var("ESL_INGEST_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (template, per_pass) = template();
    let repeats = wanted.div_ceil(per_pass);
    let total = repeats * per_pass;
    println!(
        "esl_ingest: {per_pass} events ({} KiB) per pass from the captures, {repeats} passes = {total} events ({} MiB)",
        template.len() / 1024,
        template.len() * repeats / (1024 * 1024)
    );
    decode_only(&template);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || serve(listener, template, repeats));
        let config = inbound::Config::new("127.0.0.1", addr.port(), Secret::new("ClueCon"));
        let (client, mut events) = inbound::Client::start(
            config,
            Journal::in_memory(chrono_tz::UTC),
            std::future::pending(),
        );
        // The consumer is a task on the runtime, as patchbay's link watcher is; consuming
        // on the thread that blocks on the runtime would measure thread wake-ups instead.
        let consumer = tokio::spawn(async move {
            let mut received = 0usize;
            let mut started = None;
            let mut cpu_at_start = None;
            while received < total {
                let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), events.recv()).await
                else {
                    break;
                };
                match event {
                    LinkEvent::LinkUp | LinkEvent::Snapshot { .. } => {}
                    LinkEvent::LinkDown { reason } => {
                        println!("link down: {reason}");
                        break;
                    }
                    _ => {
                        if started.is_none() {
                            started = Some(Instant::now());
                            cpu_at_start = cpu_seconds();
                        }
                        received += 1;
                    }
                }
            }
            (received, started, cpu_at_start)
        });
        let (received, started, cpu_at_start) = consumer.await.expect("consumer task");
        let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
        let rate = received as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
        println!(
            "esl_ingest: received {received} of {total} events in {:.2} s = {:.0} events/s, dropped {}",
            elapsed.as_secs_f64(),
            rate,
            client.dropped_events()
        );
        if let (Some(before), Some(after)) = (cpu_at_start, cpu_seconds()) {
            let cpu = after - before;
            println!(
                "esl_ingest: CPU {cpu:.2} s for both ends (server, client, consumer) = {:.1} us/event, {:.0} events per CPU-second",
                cpu * 1e6 / received.max(1) as f64,
                received as f64 / cpu.max(f64::EPSILON)
            );
        }
    });
}
