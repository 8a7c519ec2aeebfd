//! Integration tests: the FreeSWITCH captures replayed through the decoders and encoders.
//!
//! Every byte-exact capture in the fixtures folder is split into frames with our decoder
//! (`esl::frame`) and, for the events, with the client's decoder (freeswitch-esl-tokio, fed the
//! same bytes over a loopback socket); both must agree header by header and on the body. Every
//! frame is then re-encoded with the simulator's encoders and compared with the captured bytes.
//!
//! Differences that are inherent, and how they are handled:
//! - the "lossy %" rule: a value whose decoded form holds `%` + two hex digits cannot round-trip;
//!   the captures contain none, so the comparison is byte-exact;
//! - JSON key order is FreeSWITCH's header order, so JSON is read with an order-keeping visitor;
//! - the client normalises the case of some header names (`API-Command` becomes
//!   `Api-Command`) and looks them up case-insensitively, so names are compared that way;
//! - the client keeps a JSON array as JSON text, plain events as `ARRAY::a|:b` (see
//!   `normalise_array`);
//! - the client keeps an event's own `Content-Length` as a header; we check it against the body;
//! - the client's event map keeps one value per header name (FreeSWITCH repeats `Hangup-Cause`
//!   in HANGUP_COMPLETE with the same value), so the client comparison is per name.

use std::collections::HashMap;
use std::time::Duration;

use freeswitch_esl_tokio::EslClient;
use patchbay::freeswitch::esl::frame::{self, Frame};
use patchbay::sim::{Event, Format};

/// The FreeSWITCH 1.10.12 captures, vendored in tests/fixtures/freeswitch (a copy of the
/// project's shared captures, byte for byte).
pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/freeswitch")
}

/// The byte-exact raw streams from FreeSWITCH (the annotated .txt files of set 2 are covered by
/// their .raw twins; esl-probe-status-and-subscribe.txt is printed, not byte-exact).
const FS_STREAMS: &[&str] = &[
    "esl-inbound-call.txt",
    "esl-inbound-call-fs-hangup.txt",
    "esl-inbound-call-json-internal-auth.txt",
    "esl-inbound-call-CHANNEL_CREATE-only.txt",
    "bridge-two-devices.txt",
    "bridge-two-devices-caller-cancel.txt",
    "gateway-states.txt",
    "gateway-states-timeout.txt",
    "outbound-socket-session.fs-to-app.raw",
    "outbound-socket-caller-hangup.fs-to-app.raw",
    "outbound-socket-default-context-json-exit.fs-to-app.raw",
];

const APP_STREAMS: &[&str] = &[
    "outbound-socket-session.app-to-fs.raw",
    "outbound-socket-caller-hangup.app-to-fs.raw",
    "outbound-socket-default-context-json-exit.app-to-fs.raw",
];

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Splits a stream into frames, each with the exact bytes it took.
fn split(bytes: &[u8], commands: bool) -> Vec<(Frame, Vec<u8>)> {
    let mut rest = bytes;
    let mut frames = Vec::new();
    loop {
        let parsed = if commands {
            Frame::parse_command(rest)
        } else {
            Frame::parse(rest)
        };
        match parsed.expect("capture frame must decode") {
            Some((frame, used)) => {
                frames.push((frame, rest[..used].to_vec()));
                rest = &rest[used..];
            }
            None => break,
        }
    }
    assert!(
        rest.iter().all(|b| *b == b'\n'),
        "undecoded tail: {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(200)])
    );
    frames
}

/// JSON objects with their key order kept.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Decodes an event frame's body into plain headers (decoded) and a body.
fn decode_event(frame: &Frame) -> Event {
    let body = frame.body().expect("event frames have a body");
    match frame.content_type() {
        Some("text/event-plain") => {
            let (inner, used) = Frame::parse(body)
                .unwrap()
                .expect("whole event in the body");
            assert_eq!(used, body.len(), "event body has trailing bytes");
            let headers = inner
                .headers()
                .iter()
                .filter(|(n, _)| !(inner.body().is_some() && n == "Content-Length"))
                .map(|(n, v)| (n.clone(), frame::url_decode(v).into_owned()))
                .collect();
            Event::from_parts(headers, inner.body().map(<[u8]>::to_vec))
        }
        Some("text/event-json") => {
            let Ordered(entries) = serde_json::from_slice(body).expect("json event");
            let mut headers = Vec::new();
            let mut event_body = None;
            for (name, value) in entries {
                match (name.as_str(), value) {
                    ("_body", serde_json::Value::String(text)) => {
                        event_body = Some(text.into_bytes())
                    }
                    ("Content-Length", _) => {}
                    (_, serde_json::Value::String(text)) => headers.push((name, text)),
                    (_, serde_json::Value::Array(items)) => {
                        let items: Vec<&str> =
                            items.iter().map(|i| i.as_str().unwrap_or("")).collect();
                        headers.push((name, format!("ARRAY::{}", items.join("|:"))));
                    }
                    (_, other) => panic!("unexpected JSON value for {name}: {other}"),
                }
            }
            Event::from_parts(headers, event_body)
        }
        other => panic!("not an event: {other:?}"),
    }
}

/// Re-encodes a frame with the simulator's encoders.
fn reencode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    match frame.content_type() {
        Some("text/event-plain") => decode_event(frame).write(Format::Plain, &mut out),
        Some("text/event-json") => decode_event(frame).write(Format::Json, &mut out),
        Some("api/response") => {
            Frame::api_response(frame.body().unwrap_or_default()).write_to(&mut out)
        }
        Some("auth/request") => Frame::auth_request().write_to(&mut out),
        Some("command/reply") if frame.header("Job-UUID").is_some() => {
            Frame::bgapi_reply(frame.header("Job-UUID").unwrap()).write_to(&mut out)
        }
        Some("command/reply") if frame.header("Event-Name") == Some("CHANNEL_DATA") => {
            // The outbound connect reply: decode the channel data and encode it again.
            let data: Vec<(String, String)> = frame
                .headers()
                .iter()
                .take_while(|(n, _)| n != "Content-Type")
                .map(|(n, v)| (n.clone(), frame::url_decode(v).into_owned()))
                .collect();
            let async_mode = frame.header("Socket-Mode") == Some("async");
            let full = frame.header("Control") == Some("full");
            Frame::connect_reply(
                data.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                async_mode,
                full,
            )
            .write_to(&mut out)
        }
        Some("command/reply") => {
            Frame::command_reply(frame.header("Reply-Text").unwrap_or_default()).write_to(&mut out)
        }
        Some("text/disconnect-notice") if frame.header("Content-Disposition") == Some("linger") => {
            let linger = frame
                .header("Linger-Time")
                .and_then(|t| t.parse::<u32>().ok());
            Frame::linger_notice(
                frame.header("Controlled-Session-UUID").unwrap(),
                frame.header("Channel-Name").unwrap(),
                linger,
            )
            .write_to(&mut out)
        }
        Some("text/disconnect-notice") => Frame::disconnect_notice(
            frame.header("Controlled-Session-UUID"),
            frame.body().unwrap_or_default(),
        )
        .write_to(&mut out),
        other => panic!("no encoder for {other:?}"),
    }
    out
}

#[test]
fn every_captured_frame_decodes_and_reencodes_byte_exact() {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for name in FS_STREAMS {
        let bytes = read(name);
        let frames = split(&bytes, false);
        assert!(frames.len() > 3, "{name}: only {} frames", frames.len());
        for (index, (frame, raw)) in frames.iter().enumerate() {
            let content_type = frame.content_type().unwrap_or("?").to_owned();
            let again = reencode(frame);
            assert!(
                again == *raw,
                "{name}: frame {index} ({content_type}) differs after re-encoding:\n--- captured\n{}\n--- encoded\n{}",
                String::from_utf8_lossy(raw),
                String::from_utf8_lossy(&again)
            );
            *counts.entry(content_type).or_default() += 1;
        }
    }
    for content_type in [
        "text/event-plain",
        "text/event-json",
        "command/reply",
        "api/response",
        "text/disconnect-notice",
        "auth/request",
    ] {
        assert!(
            counts.get(content_type).copied().unwrap_or(0) > 0,
            "no {content_type} frame was checked: {counts:?}"
        );
    }
}

#[test]
fn frame_counts_match_the_capture_indexes() {
    for (stream, index) in [
        ("bridge-two-devices.txt", "bridge-two-devices.index.txt"),
        (
            "bridge-two-devices-caller-cancel.txt",
            "bridge-two-devices-caller-cancel.index.txt",
        ),
        ("gateway-states.txt", "gateway-states.index.txt"),
        (
            "gateway-states-timeout.txt",
            "gateway-states-timeout.index.txt",
        ),
    ] {
        let frames = split(&read(stream), false);
        let index_text = String::from_utf8(read(index)).unwrap();
        let listed: Vec<(usize, usize)> = index_text
            .lines()
            .filter(|l| l.starts_with('#'))
            .filter_map(|l| {
                let off = l
                    .split("off=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let len = l
                    .split("len=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((off, len))
            })
            .collect();
        assert_eq!(frames.len(), listed.len(), "{stream}");
        let mut offset = 0;
        for ((_, raw), (off, len)) in frames.iter().zip(&listed) {
            assert_eq!((offset, raw.len()), (*off, *len), "{stream}");
            offset += raw.len();
        }
    }
}

#[test]
fn application_commands_decode_with_their_headers() {
    for name in APP_STREAMS {
        let frames = split(&read(name), true);
        let first = frames[0].0.command().unwrap();
        assert_eq!(first, "connect", "{name}");
        for (frame, raw) in &frames {
            let line = frame.command().unwrap();
            if line.starts_with("sendmsg") && frame.header("call-command") == Some("execute") {
                assert!(frame.header("execute-app-name").is_some(), "{name}: {line}");
                assert!(frame.header("Event-UUID").is_some(), "{name}: {line}");
            }
            // Commands re-encode to the same bytes (first line, headers, blank line).
            let mut again = Frame::command_line(line);
            for (n, v) in frame.headers() {
                again.push_header(n.as_str(), v.as_str());
            }
            assert_eq!(again.to_wire(), *raw, "{name}: {line}");
        }
    }
}

/// The client keeps a JSON array value as its JSON text (`["a","b"]`) where plain events give
/// `ARRAY::a|:b`; both mean the same list, so the client's form is converted before comparing.
fn normalise_array(client: &str, ours: &str) -> String {
    if ours.starts_with("ARRAY::") && client.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<String>>(client) {
            return format!("ARRAY::{}", items.join("|:"));
        }
    }
    client.to_owned()
}

/// Feeds a capture to freeswitch-esl-tokio over loopback and collects the events it decodes.
async fn client_events(bytes: Vec<u8>) -> Vec<freeswitch_esl_tokio::EslEvent> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut stream, _) = listener.accept().await.unwrap();
        // Odd-sized writes so frames straddle reads.
        for chunk in bytes.chunks(1021) {
            stream.write_all(chunk).await.unwrap();
        }
        stream.shutdown().await.unwrap();
        // Keep the socket until the client has read everything.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let options = freeswitch_esl_tokio::EslConnectOptions::new().with_event_queue_size(100_000);
    let (_client, mut events) = EslClient::adopt_stream_with_options(stream, &[], options).unwrap();
    let mut decoded = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        match item {
            Ok(event) => decoded.push(event),
            Err(err) => panic!("client decoder failed: {err}"),
        }
    }
    writer.abort();
    decoded
}

#[tokio::test]
async fn our_decoder_and_the_clients_agree_on_every_event() {
    for name in FS_STREAMS {
        let bytes = read(name);
        let frames = split(&bytes, false);
        // The client is fed everything after the auth greeting (it would treat a second
        // auth/request as a desync) and up to the final disconnect notice.
        let skip = frames
            .first()
            .filter(|(f, _)| f.content_type() == Some("auth/request"))
            .map_or(0, |(_, raw)| raw.len());
        let ours: Vec<Event> = frames
            .iter()
            .filter(|(f, _)| {
                matches!(
                    f.content_type(),
                    Some("text/event-plain" | "text/event-json")
                )
            })
            .map(|(f, _)| decode_event(f))
            .collect();
        assert!(!ours.is_empty(), "{name}: no events");
        let theirs = client_events(bytes[skip..].to_vec()).await;
        assert_eq!(ours.len(), theirs.len(), "{name}: event count");
        for (index, (mine, client)) in ours.iter().zip(&theirs).enumerate() {
            let client_headers = client.headers();
            let mut names_seen = std::collections::HashSet::new();
            for (header, value) in mine.headers() {
                names_seen.insert(header.to_ascii_lowercase());
                let theirs = client.header_str(header).map(|v| normalise_array(v, value));
                assert_eq!(
                    theirs.as_deref(),
                    Some(value.as_str()),
                    "{name}: event {index} header {header}"
                );
            }
            for header in client_headers
                .keys()
                .filter(|h| !h.eq_ignore_ascii_case("Content-Length"))
            {
                assert!(
                    names_seen.contains(&header.to_ascii_lowercase()),
                    "{name}: event {index}: client has extra header {header}"
                );
            }
            let client_body = client
                .raw_body()
                .or_else(|| client.body().map(str::as_bytes));
            assert_eq!(client_body, mine.body(), "{name}: event {index} body");
            // The client keeps the event's own Content-Length as a header; it must be the body's.
            if let Some(length) = client.header_str("Content-Length") {
                let body_len = mine.body().map_or(0, <[u8]>::len).to_string();
                assert_eq!(length, body_len, "{name}: event {index} Content-Length");
            }
        }
    }
}

/// One message of an annotated outbound transcript.
struct Block {
    from_app: bool,
    bytes: Vec<u8>,
}

/// Reads an outbound-socket-*.txt transcript: `##### <time> +<s> APP->FS|FS->APP <N> bytes (...)
/// #####` lines, each followed by exactly N raw bytes (NOTE lines carry none).
fn transcript(name: &str) -> Vec<Block> {
    let data = read(name);
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(start) = find(&data[pos..], b"\n##### ").map(|i| pos + i + 1) {
        let line_end = start + find(&data[start..], b"\n").expect("marker line ends");
        let line = String::from_utf8_lossy(&data[start..line_end]).into_owned();
        pos = line_end + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(direction), Some(count)) = (words.get(3), words.get(4)) else {
            continue;
        };
        let from_app = match *direction {
            "APP->FS" => true,
            "FS->APP" => false,
            _ => continue,
        };
        let Ok(count) = count.parse::<usize>() else {
            continue;
        };
        blocks.push(Block {
            from_app,
            bytes: data[pos..pos + count].to_vec(),
        });
        pos += count;
        // The next marker starts with the newline that ends the block.
        pos -= 1;
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What matters about a frame for comparing the simulator with FreeSWITCH's behaviour.
fn shape(frame: &Frame) -> String {
    let mask = |text: &str| {
        let re = regex::Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
            .unwrap();
        re.replace_all(text, "<uuid>").into_owned()
    };
    match frame.content_type() {
        Some("command/reply") if frame.header("Event-Name") == Some("CHANNEL_DATA") => {
            "connect reply".into()
        }
        Some("command/reply") => {
            format!("reply {}", mask(frame.header("Reply-Text").unwrap_or("")))
        }
        Some("api/response") => format!(
            "api {}",
            String::from_utf8_lossy(frame.body().unwrap_or_default())
        ),
        Some("text/disconnect-notice") => format!(
            "notice {} {}",
            frame.header("Content-Disposition").unwrap_or(""),
            frame.header("Linger-Time").unwrap_or("")
        ),
        Some("text/event-plain" | "text/event-json") => {
            let event = decode_event(frame);
            let mut text = format!("{} {}", frame.content_type().unwrap_or(""), event.name());
            if let Some(app) = event.get("Application") {
                text.push_str(&format!(
                    " {app} -> {}",
                    event.get("Application-Response").unwrap_or("(running)")
                ));
            }
            if event.name() == "DTMF" {
                text.push_str(&format!(" {}", event.get("DTMF-Digit").unwrap_or("")));
            }
            text
        }
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn outbound_sessions_replayed_against_the_simulator_answer_like_freeswitch() {
    use patchbay::sim::scenario::Call;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cases = [
        (
            "outbound-socket-session.txt",
            Call {
                from: "sipp".into(),
                to: "7777".into(),
                dtmf: "1".into(),
                ..Default::default()
            },
        ),
        (
            "outbound-socket-caller-hangup.txt",
            Call {
                from: "sipp".into(),
                to: "7777".into(),
                hangup_after: Some(10.0),
                ..Default::default()
            },
        ),
        (
            "outbound-socket-default-context-json-exit.txt",
            Call {
                from: "1000".into(),
                to: "7777".into(),
                context: Some("default".into()),
                ..Default::default()
            },
        ),
    ];
    for (name, call) in cases {
        let blocks = transcript(name);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = patchbay::sim::Config {
            static_socket: Some(listener.local_addr().unwrap().to_string()),
            time_scale: 0.02,
            heartbeat: Duration::from_secs(3600),
            ..patchbay::sim::Config::default()
        };
        let sim = patchbay::sim::Sim::start(config).await.unwrap();
        let handle = sim.place_call(call);
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        // The capture's channel uuid, replaced by the simulator's in what the app sends.
        let captured_connect = Frame::parse(&blocks[1].bytes).unwrap().unwrap().0;
        let captured_uuid =
            frame::url_decode(captured_connect.header("Unique-ID").unwrap()).into_owned();
        let mut buf = Vec::new();
        let mut index = 0;
        while index < blocks.len() {
            let block = &blocks[index];
            index += 1;
            assert!(
                block.from_app,
                "{name}: transcript out of step at block {index}"
            );
            let text = String::from_utf8_lossy(&block.bytes).replace(&captured_uuid, &handle.uuid);
            stream.write_all(text.as_bytes()).await.unwrap();
            while index < blocks.len() && !blocks[index].from_app {
                let expected = Frame::parse(&blocks[index].bytes).unwrap().unwrap().0;
                index += 1;
                let got = loop {
                    if let Some((frame, used)) = Frame::parse(&buf).unwrap() {
                        buf.drain(..used);
                        break frame;
                    }
                    let mut chunk = [0u8; 65536];
                    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{name}: the simulator did not send `{}`", shape(&expected))
                        })
                        .unwrap();
                    assert!(n > 0, "{name}: closed before `{}`", shape(&expected));
                    buf.extend_from_slice(&chunk[..n]);
                };
                assert_eq!(
                    shape(&got),
                    shape(&expected).replace(&captured_uuid, &handle.uuid),
                    "{name}: block {index}"
                );
            }
        }
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok() && rest.is_empty() && buf.is_empty(),
            "{name}: more after the last captured frame"
        );
        tokio::time::timeout(Duration::from_secs(5), handle.finished())
            .await
            .unwrap()
            .unwrap();
    }
}

/// The inbound link's one-pass decoder must read every captured event exactly as the full
/// header views do: same kind, same fields, same kept variables, same errors.
#[test]
fn the_one_pass_event_decoder_agrees_with_the_full_views_on_every_captured_event() {
    use patchbay::freeswitch::esl::event::{BodyFormat, JsonView, LinkEvent, PlainView};
    let mut compared = HashMap::<&str, usize>::new();
    for name in FS_STREAMS {
        for (frame, _) in split(&read(name), false) {
            let (format, body) = match (frame.content_type(), frame.body()) {
                (Some("text/event-plain"), Some(body)) => (BodyFormat::Plain, body),
                (Some("text/event-json"), Some(body)) => (BodyFormat::Json, body),
                _ => continue,
            };
            let full = match format {
                BodyFormat::Plain => {
                    PlainView::parse(body).and_then(|v| LinkEvent::from_headers(&v))
                }
                BodyFormat::Json => JsonView::parse(body).and_then(|v| LinkEvent::from_headers(&v)),
            };
            let fast = LinkEvent::from_body(format, body);
            assert_eq!(fast, full, "{name}: {}", String::from_utf8_lossy(body));
            let kind = match &fast {
                Ok(Some(LinkEvent::Channel(_))) => "channel",
                Ok(Some(LinkEvent::GatewayState { .. })) => "gateway",
                Ok(Some(LinkEvent::DeviceRegistered(_))) => "register",
                Ok(Some(_)) => "other",
                Ok(None) => "unused",
                Err(_) => "error",
            };
            *compared.entry(kind).or_default() += 1;
        }
    }
    for kind in ["channel", "gateway", "register", "unused"] {
        assert!(
            compared.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} event: {compared:?}"
        );
    }
}

/// Caller-controlled text inside an event (escapes, multi-byte UTF-8, a forged header name
/// inside a value) and damaged bodies: both decoders still agree, and damage is an error.
#[test]
fn the_one_pass_event_decoder_agrees_with_the_full_views_on_hostile_events() {
    use patchbay::freeswitch::esl::event::{BodyFormat, JsonView, LinkEvent, PlainView};
    let json = [
        r#"{"Event-Name":"CHANNEL_CREATE","Unique-ID":"u1","Caller-Caller-ID-Name":"\"Unique-ID\":\"forged\" <é> \\ \u0041\ud83d\ude00","variable_sip_from_user":"+33 1","variable_sip_to_user":["a","b"]}"#,
        r#"{"Event-Name":"CHANNEL_CREATE","Unique-ID":"u1","Caller-Caller-ID-Name":"cut"#,
        r#"{"Event-Name":"CHANNEL_CREATE","Unique-ID":"u1","Session-Count":3}"#,
        r#"{"Event-Name":"CHANNEL_CREATE","Caller-Caller-ID-Name":"no uuid"}"#,
        r#"{"Event-Name":"CUSTOM","Event-Subclass":"sofia::gateway_state","Gateway":"did\"1","State":"REGED","Status":"200"}"#,
        r#"{"Event-Name":"CUSTOM","Event-Subclass":"sofia::gateway_state","Gateway":"did1","State":"NOPE"}"#,
        r#"{"Event-Name":"HEARTBEAT","Uptime-msec":"1234","Session-Count":"2"}"#,
        r#"{"Event-Name":"CHANNEL_CREATE","Unique-ID":"u1"} {"#,
    ];
    for body in json {
        let full = JsonView::parse(body.as_bytes()).and_then(|v| LinkEvent::from_headers(&v));
        let fast = LinkEvent::from_body(BodyFormat::Json, body.as_bytes());
        assert_eq!(fast, full, "{body}");
    }
    let plain: [&[u8]; 5] = [
        b"Event-Name: CHANNEL_ANSWER\nUnique-ID: u1\nCaller-Caller-ID-Name: %22Unique-ID%3A%20forged%0A%22%20%3C%C3%A9%3E\nvariable_duration: 42\n\n",
        b"Event-Name: CHANNEL_ANSWER\nUnique-ID: u1\nbroken line\n\n",
        b"Event-Name: CUSTOM\nEvent-Subclass: sofia%3A%3Aregister\nusername: 1000\nrealm: example.org\nexpires: 300\n\n",
        b"Event-Name: CUSTOM\nEvent-Subclass: sofia%3A%3Aregister\nrealm: example.org\n\n",
        b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 4\n\n+OK\n",
    ];
    for body in plain {
        let full = PlainView::parse(body).and_then(|v| LinkEvent::from_headers(&v));
        let fast = LinkEvent::from_body(BodyFormat::Plain, body);
        assert_eq!(fast, full, "{}", String::from_utf8_lossy(body));
    }
    // Where the full view gives up on what FreeSWITCH never sends (CRLF line ends, bytes that
    // are not UTF-8), the one-pass decoder reads on: nothing is lost, bad bytes become U+FFFD.
    let uuid_of = |body: &[u8]| match LinkEvent::from_body(BodyFormat::Plain, body) {
        Ok(Some(LinkEvent::Channel(channel))) => channel.uuid().to_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        uuid_of(b"Event-Name: CHANNEL_ANSWER\r\nUnique-ID: u1\r\n\r\n"),
        "u1"
    );
    assert_eq!(
        uuid_of(b"Event-Name: CHANNEL_ANSWER\nUnique-ID: \xff\xfe\n\n"),
        "\u{fffd}\u{fffd}"
    );
}
