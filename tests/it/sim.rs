//! Integration tests: the FreeSWITCH simulator over real TCP on loopback, spoken to with raw
//! bytes and read back with the ESL frame decoder.

use std::time::Duration;

use patchbay::freeswitch::esl::frame::{self, Frame};
use patchbay::sim::scenario::{Behaviour, Device};
use patchbay::sim::{Config, Entry, Faults, Scenario, Sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// A raw ESL client: writes bytes, reads whole frames.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the simulator");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects, checks the auth/request greeting and authenticates with ClueCon.
    pub async fn authed(sim: &Sim) -> Client {
        let mut client = Client::connect(sim.esl_addr()).await;
        let greeting = client.frame().await;
        assert_eq!(greeting.content_type(), Some("auth/request"));
        assert_eq!(client.command("auth ClueCon").await, "+OK accepted");
        client
    }

    pub async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, or `None` when the simulator closed the socket.
    pub async fn try_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) =
                Frame::parse(&self.buf).expect("simulator sent a bad frame")
            {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("no frame from the simulator within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn frame(&mut self) -> Frame {
        self.try_frame()
            .await
            .expect("the simulator closed the connection")
    }

    /// Sends a command and returns the Reply-Text of its command/reply, skipping events.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\n\n")).await;
        loop {
            let frame = self.frame().await;
            if frame.content_type() == Some("command/reply") {
                return frame.header("Reply-Text").unwrap_or_default().to_owned();
            }
        }
    }

    /// Sends `api …` and returns the body of the api/response.
    pub async fn api(&mut self, line: &str) -> String {
        self.send(&format!("api {line}\n\n")).await;
        loop {
            let frame = self.frame().await;
            if frame.content_type() == Some("api/response") {
                return String::from_utf8(frame.into_body().unwrap_or_default())
                    .expect("utf-8 output");
            }
        }
    }

    /// The next event frame, decoded from plain: its headers (decoded) and body.
    pub async fn event(&mut self) -> Frame {
        loop {
            let frame = self.frame().await;
            if frame.content_type() == Some("text/event-plain") {
                let body = frame.into_body().unwrap_or_default();
                let (event, _) = Frame::parse(&body)
                    .expect("event body")
                    .expect("whole event");
                let mut decoded = Frame::new();
                for (name, value) in event.headers() {
                    if name != "Content-Length" {
                        decoded.push_header(name.as_str(), frame::url_decode(value).into_owned());
                    }
                }
                return match event.into_body() {
                    Some(body) => decoded.with_body(body),
                    None => decoded,
                };
            }
        }
    }

    /// Whether the simulator closed the connection (reads until EOF, skipping frames).
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.try_frame()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn fast_config() -> Config {
    Config {
        heartbeat: Duration::from_secs(3600),
        ..Config::default()
    }
}

#[tokio::test]
async fn auth_accepts_the_password_and_refuses_commands_before_it() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut client = Client::connect(sim.esl_addr()).await;
    assert_eq!(
        client.frame().await.to_wire(),
        b"Content-Type: auth/request\n\n"
    );
    assert_eq!(client.command("api status").await, "-ERR command not found");
    assert_eq!(client.command("auth ClueCon").await, "+OK accepted");
    assert!(client.api("status").await.starts_with("UP 0 years"));

    let mut wrong = Client::connect(sim.esl_addr()).await;
    wrong.frame().await;
    assert_eq!(wrong.command("auth nope").await, "-ERR invalid");
    let notice = wrong.frame().await;
    assert_eq!(notice.content_type(), Some("text/disconnect-notice"));
    assert_eq!(notice.body(), Some(frame::GOODBYE));
    assert!(wrong.closed().await);
    // The password never reaches the observable log.
    let log = format!("{:?}", sim.log().entries());
    assert!(
        log.contains("auth ***") && !log.contains("ClueCon"),
        "{log}"
    );
}

#[tokio::test]
async fn first_command_must_arrive_in_time() {
    let config = Config {
        first_command_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let sim = Sim::start(config).await.unwrap();
    let mut client = Client::connect(sim.esl_addr()).await;
    client.frame().await;
    assert!(
        client.closed().await,
        "the simulator keeps a silent connection open"
    );
}

#[tokio::test]
async fn events_custom_subclasses_and_filters() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut client = Client::authed(&sim).await;
    assert_eq!(
        client.command("event plain nonsense").await,
        "-ERR no keywords supplied"
    );
    assert_eq!(
        client
            .command("event plain channel_answer CUSTOM sofia::register")
            .await,
        "+OK event listener enabled plain"
    );
    // Not subscribed: never delivered.
    sim.emit(sim.new_event("CHANNEL_CREATE").with("Unique-ID", "a"));
    let mut register = sim.new_event("CUSTOM");
    register
        .set("Event-Subclass", "sofia::register")
        .push("from-user", "1000");
    sim.emit(register);
    sim.emit(
        sim.new_event("CHANNEL_ANSWER")
            .with("Unique-ID", "a")
            .with("Caller-Caller-ID-Name", "Zoë & <co>"),
    );
    let first = client.event().await;
    assert_eq!(first.header("Event-Subclass"), Some("sofia::register"));
    let second = client.event().await;
    assert_eq!(second.header("Event-Name"), Some("CHANNEL_ANSWER"));
    assert_eq!(second.header("Caller-Caller-ID-Name"), Some("Zoë & <co>"));

    assert_eq!(
        client.command("filter Unique-ID b").await,
        "+OK filter added. [Unique-ID]=[b]"
    );
    sim.emit(sim.new_event("CHANNEL_ANSWER").with("Unique-ID", "a"));
    sim.emit(sim.new_event("CHANNEL_ANSWER").with("Unique-ID", "b"));
    assert_eq!(client.event().await.header("Unique-ID"), Some("b"));
    assert_eq!(
        client.command("filter delete all").await,
        "+OK filter deleted. [all][]"
    );
    assert_eq!(
        client.command("noevents").await,
        "+OK no longer listening for events"
    );
    assert_eq!(client.command("bogus").await, "-ERR command not found");
    assert_eq!(
        client.command("linger").await,
        "-ERR not controlling a session"
    );
}

#[tokio::test]
async fn json_events_carry_raw_utf8() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut client = Client::authed(&sim).await;
    assert_eq!(
        client.command("event json ALL").await,
        "+OK event listener enabled json"
    );
    sim.emit(
        sim.new_event("CHANNEL_CREATE")
            .with("Caller-Caller-ID-Name", "Zoë \"Z\""),
    );
    let frame = loop {
        let frame = client.frame().await;
        if frame.content_type() == Some("text/event-json") {
            break frame;
        }
    };
    let body = frame.body().unwrap();
    assert_eq!(
        frame.header("Content-Length"),
        Some(body.len().to_string().as_str())
    );
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["Event-Name"], "CHANNEL_CREATE");
    assert_eq!(json["Caller-Caller-ID-Name"], "Zoë \"Z\"");
    assert!(
        std::str::from_utf8(body).unwrap().contains("Zoë"),
        "UTF-8 must not be escaped in json"
    );
}

#[tokio::test]
async fn api_is_synchronous_and_unknown_commands_say_so() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut client = Client::authed(&sim).await;
    assert_eq!(
        client.api("frobnicate now").await,
        "-ERR frobnicate Command not found!\n"
    );
    assert_eq!(
        client.api("show channels as json").await,
        "{\"row_count\":0}"
    );
    assert_eq!(
        client.api("uuid_kill nope").await,
        "-ERR No such channel!\n"
    );
    assert_eq!(client.api("reloadxml").await, "+OK [Success]\n");
    assert_eq!(
        client.api("sofia status gateway nope").await,
        "Invalid Gateway!\n"
    );
    let uuid = client.api("create_uuid").await;
    assert!(uuid::Uuid::parse_str(&uuid).is_ok(), "{uuid:?}");
    assert_eq!(
        client
            .command(&format!("sendmsg {uuid}\ncall-command: hangup"))
            .await,
        format!("-ERR invalid session id [{uuid}]")
    );
}

/// `show registrations as json` lists the devices registered now, with FreeSWITCH's columns
/// (what patchbay reads back after a reconnect).
#[tokio::test]
async fn show_registrations_lists_the_devices_registered_now() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut client = Client::authed(&sim).await;
    assert_eq!(
        client.api("show registrations as json").await,
        "{\"row_count\":0}"
    );
    sim.register("1000", "").await.unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&client.api("show registrations as json").await).unwrap();
    assert_eq!(json["row_count"], 1);
    let row = &json["rows"][0];
    assert_eq!(row["reg_user"], "1000");
    assert_eq!(row["network_ip"], "127.0.0.1");
    assert_eq!(row["network_proto"], "udp");
    let url = row["url"].as_str().unwrap();
    assert!(
        url.starts_with("sofia/internal/sip:1000@127.0.0.1:"),
        "{url}"
    );
    let expires: u64 = row["expires"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now..=now + 600).contains(&expires), "{expires} vs {now}");
    assert!(sim.unregister("1000"));
    assert_eq!(
        client.api("show registrations as json").await,
        "{\"row_count\":0}"
    );
}

#[tokio::test]
async fn bgapi_replies_with_job_uuid_then_background_job() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut client = Client::authed(&sim).await;
    client.command("event plain BACKGROUND_JOB").await;
    client
        .send("bgapi status\nJob-UUID: 7f4db0f2-1111-4222-8333-944445555666\n\n")
        .await;
    let reply = client.frame().await;
    assert_eq!(
        reply.to_wire(),
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: 7f4db0f2-1111-4222-8333-944445555666\nJob-UUID: 7f4db0f2-1111-4222-8333-944445555666\n\n"
    );
    let job = client.event().await;
    assert_eq!(job.header("Event-Name"), Some("BACKGROUND_JOB"));
    assert_eq!(
        job.header("Job-UUID"),
        Some("7f4db0f2-1111-4222-8333-944445555666")
    );
    assert_eq!(job.header("Job-Command"), Some("status"));
    assert!(job.body().unwrap().starts_with(b"UP 0 years"));

    // Without a Job-UUID header the simulator makes one up and reports it both ways.
    let reply = client.command("bgapi originate user/1000 &park()").await;
    let job_uuid = reply.strip_prefix("+OK Job-UUID: ").unwrap().to_owned();
    let job = client.event().await;
    assert_eq!(job.header("Job-UUID"), Some(job_uuid.as_str()));
    assert_eq!(job.header("Job-Command-Arg"), Some("user/1000 &park()"));
    assert!(job.body().unwrap().starts_with(b"-ERR "));
}

#[tokio::test]
async fn heartbeat_fires_on_the_configured_interval() {
    let config = Config {
        heartbeat: Duration::from_millis(100),
        ..Config::default()
    };
    let sim = Sim::start(config).await.unwrap();
    let mut client = Client::authed(&sim).await;
    client.command("event plain HEARTBEAT").await;
    let beat = client.event().await;
    assert_eq!(beat.header("Event-Name"), Some("HEARTBEAT"));
    assert_eq!(beat.header("Event-Info"), Some("System Ready"));
    let next = client.event().await;
    let seq = |f: &Frame| {
        f.header("Event-Sequence")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap()
    };
    assert!(seq(&next) > seq(&beat));
}

#[tokio::test]
async fn killed_and_restarted_on_the_same_port() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let addr = sim.esl_addr();
    let mut client = Client::authed(&sim).await;
    sim.kill();
    assert!(client.closed().await);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "port still open after kill"
    );
    sim.restart().await.unwrap();
    assert_eq!(sim.esl_addr(), addr);
    let mut again = Client::authed(&sim).await;
    again.command("event plain CHANNEL_CREATE").await;
    sim.emit(sim.new_event("CHANNEL_CREATE"));
    assert_eq!(
        again.event().await.header("Event-Name"),
        Some("CHANNEL_CREATE")
    );

    sim.stop();
    let notice = again.frame().await;
    assert_eq!(
        notice.body(),
        Some(&b"The system is being shut down.\n"[..])
    );
    assert!(again.closed().await);
}

#[tokio::test]
async fn a_listener_that_loses_too_many_events_is_killed() {
    let config = Config {
        event_queue_capacity: 4,
        lost_events_limit: 10,
        ..fast_config()
    };
    let sim = Sim::start(config).await.unwrap();
    let mut client = Client::authed(&sim).await;
    client.command("event plain CHANNEL_CREATE").await;
    sim.set_faults(Faults {
        stall_delivery: true,
        ..Faults::default()
    });
    for _ in 0..20 {
        sim.emit(sim.new_event("CHANNEL_CREATE"));
    }
    let notice = loop {
        let frame = client.frame().await;
        if frame.content_type() == Some("text/disconnect-notice") {
            break frame;
        }
    };
    assert_eq!(notice.body(), Some(frame::KILLED_LOST_EVENTS));
    assert!(client.closed().await);
    let lost = sim
        .log()
        .wait_for(WAIT, |e| matches!(e, Entry::EventsLost { .. }))
        .await;
    assert!(
        matches!(lost, Some(Entry::EventsLost { lost: 11, .. })),
        "{lost:?}"
    );
}

#[tokio::test]
async fn frames_split_into_single_bytes_and_slow_replies_still_parse() {
    let sim = Sim::start(fast_config()).await.unwrap();
    sim.set_faults(Faults {
        split_writes: Some(1),
        slow_reply: Duration::from_millis(30),
        ..Faults::default()
    });
    let mut client = Client::authed(&sim).await;
    client.command("event plain CHANNEL_ANSWER").await;
    sim.emit(sim.new_event("CHANNEL_ANSWER").with("Unique-ID", "split"));
    assert_eq!(client.event().await.header("Unique-ID"), Some("split"));
    // Commands split at every byte on the way in work too.
    for byte in b"api create_uuid\n\n" {
        client.send_bytes(&[*byte]).await;
        tokio::task::yield_now().await;
    }
    let frame = client.frame().await;
    assert_eq!(frame.content_type(), Some("api/response"));
}

#[tokio::test]
async fn hostile_input_drops_only_that_connection() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut good = Client::authed(&sim).await;

    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("invalid utf-8", b"api st\xffatus\n\n".to_vec()),
        (
            "huge content-length",
            b"sendevent CUSTOM\nContent-Length: 99999999999\n\n".to_vec(),
        ),
        (
            "bad content-length",
            b"sendevent CUSTOM\nContent-Length: ten\n\n".to_vec(),
        ),
        (
            "header without colon",
            b"sendevent CUSTOM\nthis is not a header\n\n".to_vec(),
        ),
    ];
    for (what, bytes) in hostile {
        let mut bad = Client::authed(&sim).await;
        bad.send_bytes(&bytes).await;
        assert!(bad.closed().await, "{what}: connection kept open");
    }

    // A 20 MB header block without an end.
    let mut bad = Client::authed(&sim).await;
    let line = format!("X-Junk: {}\n", "j".repeat(1000));
    let block = line.repeat(20_000);
    let _ = bad.stream.write_all(b"sendevent CUSTOM\n").await;
    let _ = bad.stream.write_all(block.as_bytes()).await;
    assert!(bad.closed().await, "20 MB header block accepted");

    // A Content-Length larger than the data, then the peer leaves.
    let mut short = Client::authed(&sim).await;
    short
        .send("sendevent CUSTOM\nContent-Length: 100\n\nonly a few")
        .await;
    short.stream.shutdown().await.unwrap();

    let errors = sim
        .log()
        .entries()
        .into_iter()
        .filter(|e| matches!(e, Entry::ConnectionError { .. }))
        .count();
    assert!(errors >= 5, "only {errors} connection errors logged");
    let truncated = sim
        .log()
        .wait_for(WAIT, |e| matches!(e, Entry::ConnectionError { error, .. } if error.contains("middle of a frame")))
        .await;
    assert!(truncated.is_some());
    // Garbage that is a well-formed line is an unknown command, as in FreeSWITCH.
    assert_eq!(good.command("garbage !!").await, "-ERR command not found");
    assert!(good.api("status").await.starts_with("UP "));
}

#[tokio::test]
async fn sendevent_reaches_subscribers_with_its_body() {
    let sim = Sim::start(fast_config()).await.unwrap();
    let mut watcher = Client::authed(&sim).await;
    watcher.command("event plain CUSTOM test::ping").await;
    let mut sender = Client::authed(&sim).await;
    let reply = sender
        .command(
            "sendevent CUSTOM\nEvent-Subclass: test::ping\nX-Who: me\ncontent-length: 5\n\nhello",
        )
        .await;
    assert!(reply.starts_with("+OK "), "{reply}");
    let event = watcher.event().await;
    assert_eq!(event.header("X-Who"), Some("me"));
    assert_eq!(event.body(), Some(&b"hello"[..]));
}

/// The application side of an outbound socket, as patchbay plays it: raw bytes in and out.
struct App {
    client: Client,
}

impl App {
    /// Accepts the simulator's connection and does the `connect` handshake.
    async fn accept(listener: &tokio::net::TcpListener) -> (App, Frame) {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("no call reached the socket")
            .unwrap();
        let mut client = Client {
            stream,
            buf: Vec::new(),
        };
        client.send("connect\n\n").await;
        let reply = client.frame().await;
        (App { client }, reply)
    }

    /// Sends a sendmsg execute with an Event-UUID and waits for its EXECUTE_COMPLETE,
    /// returning every event seen on the way (the completion last).
    async fn execute(&mut self, uuid: &str, app: &str, arg: &str) -> Vec<Frame> {
        let event_uuid = uuid::Uuid::new_v4().to_string();
        let arg_line = if arg.is_empty() {
            String::new()
        } else {
            format!("execute-app-arg: {arg}\n")
        };
        self.client
            .send(&format!("sendmsg {uuid}\ncall-command: execute\nexecute-app-name: {app}\n{arg_line}event-lock: true\nEvent-UUID: {event_uuid}\n\n"))
            .await;
        let mut seen = Vec::new();
        let mut got_ok = false;
        loop {
            let frame = self.client.frame().await;
            if frame.content_type() == Some("command/reply") {
                assert_eq!(frame.header("Reply-Text"), Some("+OK"));
                got_ok = true;
                continue;
            }
            let event = decode_plain(frame);
            let done = event.header("Event-Name") == Some("CHANNEL_EXECUTE_COMPLETE")
                && event.header("Application-UUID") == Some(event_uuid.as_str());
            seen.push(event);
            if done {
                assert!(
                    got_ok,
                    "EXECUTE_COMPLETE came before the +OK of the sendmsg"
                );
                return seen;
            }
        }
    }
}

fn decode_plain(frame: Frame) -> Frame {
    assert_eq!(frame.content_type(), Some("text/event-plain"), "{frame:?}");
    let body = frame.into_body().unwrap_or_default();
    let (event, _) = Frame::parse(&body).unwrap().unwrap();
    let mut decoded = Frame::new();
    for (name, value) in event.headers() {
        decoded.push_header(name.as_str(), frame::url_decode(value).into_owned());
    }
    decoded
}

fn names(events: &[Frame]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.header("Event-Name").unwrap_or("").to_owned())
        .collect()
}

async fn outbound_sim(extra: impl FnOnce(&mut Config)) -> (Sim, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = fast_config();
    config.static_socket = Some(listener.local_addr().unwrap().to_string());
    config.time_scale = 0.02;
    extra(&mut config);
    (Sim::start(config).await.unwrap(), listener)
}

#[tokio::test]
async fn outbound_call_answer_playback_record_hangup_with_application_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let clip_path = dir.path().join("caller.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&clip_path, spec).unwrap();
    for i in 0..16_000 {
        writer
            .write_sample(((i as f64 * 0.1).sin() * 8000.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();

    let (sim, listener) = outbound_sim(|_| {}).await;
    let mut watcher = Client::authed(&sim).await;
    watcher
        .command("event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_DESTROY")
        .await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "+41441234567".into(),
        caller_name: "Zoë <Z>".into(),
        to: "+33123456789".into(),
        audio: Some(clip_path.clone()),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&listener).await;
    // The connect reply: channel data first, the reply headers last, values URL-encoded.
    let headers = reply.headers();
    let last: Vec<&str> = headers[headers.len() - 4..]
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        last,
        ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    );
    assert_eq!(reply.header("Reply-Text"), Some("%2BOK%0A"));
    assert_eq!(reply.header("Event-Name"), Some("CHANNEL_DATA"));
    assert_eq!(
        reply.header("Caller-Caller-ID-Name"),
        Some("Zo%C3%AB%20%3CZ%3E")
    );
    assert_eq!(
        reply.header("Caller-Destination-Number"),
        Some("%2B33123456789")
    );
    assert_eq!(reply.body(), None);
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    assert_eq!(uuid, call.uuid);

    assert_eq!(app.client.command("myevents").await, "+OK Events Enabled");
    assert_eq!(
        app.client.command("linger 5").await,
        "+OK will linger 5 seconds"
    );
    let answer = app.execute(&uuid, "answer", "").await;
    assert_eq!(
        names(&answer),
        [
            "CHANNEL_EXECUTE",
            "CHANNEL_PROGRESS_MEDIA",
            "CHANNEL_ANSWER",
            "CHANNEL_EXECUTE_COMPLETE"
        ]
    );

    let playback = app
        .execute(&uuid, "playback", "tone_stream://%(1000,0,440)")
        .await;
    assert_eq!(
        playback.last().unwrap().header("Application-Response"),
        Some("FILE PLAYED")
    );
    let missing = app
        .execute(&uuid, "playback", "/nowhere/greeting.wav")
        .await;
    assert_eq!(
        missing.last().unwrap().header("Application-Response"),
        Some("FILE NOT FOUND")
    );

    let recording = dir.path().join("vm").join("message.wav");
    let record = app
        .execute(&uuid, "record", &format!("{} 5 200 1", recording.display()))
        .await;
    let done = record.last().unwrap();
    assert_eq!(done.header("Application-Response"), Some("_none_"));
    // 2 s of speech then 1 s of silence stops the recording: 3 s.
    assert_eq!(done.header("variable_record_ms"), Some("3000"));
    let reader = hound::WavReader::open(&recording).unwrap();
    assert_eq!(
        reader.spec(),
        hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int
        }
    );
    assert_eq!(reader.duration(), 24_000);
    let samples: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(
        samples[..16_000].iter().any(|s| s.abs() > 4000),
        "the caller's audio is missing"
    );
    assert!(samples[16_000..].iter().all(|s| *s == 0));

    let hangup = app.execute(&uuid, "hangup", "NORMAL_CLEARING").await;
    let tail = names(&hangup);
    assert_eq!(
        tail[..3],
        [
            "CHANNEL_EXECUTE",
            "CHANNEL_HANGUP",
            "CHANNEL_EXECUTE_COMPLETE"
        ]
    );
    let mut rest = Vec::new();
    let linger = loop {
        let frame = app.client.frame().await;
        if frame.content_type() == Some("text/disconnect-notice") {
            break frame;
        }
        rest.push(decode_plain(frame));
    };
    assert_eq!(
        names(&rest),
        [
            "CHANNEL_UNPARK",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_STATE",
            "CHANNEL_STATE",
            "CHANNEL_HANGUP_COMPLETE"
        ]
    );
    assert_eq!(rest[1].header("Application"), Some("socket"));
    assert_eq!(linger.header("Content-Disposition"), Some("linger"));
    assert_eq!(linger.header("Linger-Time"), Some("5"));
    assert_eq!(
        linger.header("Controlled-Session-UUID"),
        Some(uuid.as_str())
    );
    let goodbye = app.client.frame().await;
    assert_eq!(goodbye.header("Content-Disposition"), Some("disconnect"));
    assert_eq!(goodbye.body(), Some(frame::GOODBYE));
    assert!(
        app.client.closed().await,
        "CHANNEL_DESTROY or more came on the outbound socket"
    );

    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
    assert!(summary.answered);
    assert_eq!(summary.recordings, vec![recording]);
    // Inbound listeners see the whole life, DESTROY included.
    let seen: Vec<String> = [
        watcher.event().await,
        watcher.event().await,
        watcher.event().await,
    ]
    .iter()
    .map(|e| e.header("Event-Name").unwrap().to_owned())
    .collect();
    assert_eq!(
        seen,
        ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_DESTROY"]
    );
    let log = sim.log().entries();
    assert!(log
        .iter()
        .any(|e| matches!(e, Entry::Command { line, .. } if *line == format!("sendmsg {uuid}"))));
}

#[tokio::test]
async fn caller_hangup_during_playback_gives_playback_error_after_hangup() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "100".into(),
        to: "200".into(),
        hangup_after: Some(10.0),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    app.client.command("myevents").await;
    app.client.command("linger").await;
    app.execute(&uuid, "answer", "").await;
    let events = app
        .execute(&uuid, "playback", "tone_stream://%(1000,0,440);loops=20")
        .await;
    let order = names(&events);
    let hangup = order
        .iter()
        .position(|n| n == "CHANNEL_HANGUP")
        .expect("no CHANNEL_HANGUP");
    assert_eq!(hangup, order.len() - 2, "{order:?}");
    assert_eq!(
        events.last().unwrap().header("Application-Response"),
        Some("PLAYBACK ERROR")
    );
    let linger = loop {
        let frame = app.client.frame().await;
        if frame.content_type() == Some("text/disconnect-notice") {
            break frame;
        }
    };
    assert_eq!(linger.header("Linger-Time"), Some("-1"));
    // Lingering forever: the session stays until the application says exit.
    assert_eq!(app.client.command("exit").await, "+OK bye");
    let goodbye = app.client.frame().await;
    assert_eq!(goodbye.header("Content-Disposition"), Some("disconnect"));
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
}

#[tokio::test]
async fn digits_from_the_scenario_and_unknown_session_ids() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "1".into(),
        to: "2".into(),
        dtmf: "42".into(),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    app.client.command("myevents").await;
    app.execute(&uuid, "answer", "").await;
    let events = app
        .execute(
            &uuid,
            "play_and_get_digits",
            "1 2 1 5000 # silence_stream://250 silence_stream://250 choice \\d+",
        )
        .await;
    assert_eq!(names(&events).iter().filter(|n| *n == "DTMF").count(), 2);
    assert_eq!(events.last().unwrap().header("variable_choice"), Some("42"));
    assert_eq!(app.client.command("getvar choice").await, "42");
    assert_eq!(
        app.client
            .command("sendmsg 00000000-0000-0000-0000-000000000000\ncall-command: hangup")
            .await,
        "-ERR invalid session id [00000000-0000-0000-0000-000000000000]"
    );
    app.client
        .send(&format!(
            "sendmsg {uuid}\ncall-command: hangup\nhangup-cause: CALL_REJECTED\n\n"
        ))
        .await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "CALL_REJECTED");
}

fn device(
    extension: &str,
    behaviour: Behaviour,
    answer_after: f64,
    hangup_after: Option<f64>,
) -> Device {
    Device {
        answer_after,
        hangup_after,
        ..Device::new(extension, &format!("pw{extension}"), behaviour)
    }
}

async fn bridge_sim(devices: Vec<Device>) -> (Sim, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        static_socket: Some(listener.local_addr().unwrap().to_string()),
        time_scale: 0.02,
        ..fast_config()
    };
    let scenario = Scenario {
        devices,
        ..Scenario::default()
    };
    let sim = Sim::start_with(config, scenario.clone()).await.unwrap();
    for device in scenario
        .devices
        .iter()
        .filter(|d| d.behaviour != Behaviour::Unregistered)
    {
        sim.register(&device.extension, &device.password)
            .await
            .unwrap();
    }
    (sim, listener)
}

async fn call_on_socket(
    sim: &Sim,
    listener: &tokio::net::TcpListener,
) -> (App, String, patchbay::sim::CallHandle) {
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "+15551230000".into(),
        to: "+33123456789".into(),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    app.client.command("myevents").await;
    app.client.command("linger 1").await;
    (app, uuid, call)
}

#[tokio::test]
async fn bridge_first_answer_wins_and_the_other_device_loses_the_race() {
    let (sim, listener) = bridge_sim(vec![
        device("1000", Behaviour::Answer, 1.0, Some(2.0)),
        device("1001", Behaviour::NoAnswer, 1.0, None),
    ])
    .await;
    let mut watcher = Client::authed(&sim).await;
    watcher.command("event plain ALL").await;
    let (mut app, uuid, call) = call_on_socket(&sim, &listener).await;
    let events = app
        .execute(&uuid, "bridge", "user/1000@127.0.0.1,user/1001@127.0.0.1")
        .await;
    let order = names(&events);
    assert_eq!(
        order,
        [
            "CHANNEL_EXECUTE",
            "CHANNEL_PROGRESS",
            "CHANNEL_PROGRESS_MEDIA",
            "CHANNEL_ANSWER",
            "CHANNEL_BRIDGE",
            "CHANNEL_UNBRIDGE",
            "CHANNEL_EXECUTE_COMPLETE"
        ],
        "only the A leg's events reach the outbound socket"
    );
    let bridge = &events[4];
    assert_eq!(bridge.header("Bridge-A-Unique-ID"), Some(uuid.as_str()));
    let b_uuid = bridge.header("Bridge-B-Unique-ID").unwrap().to_owned();
    assert_eq!(bridge.header("Other-Leg-Destination-Number"), Some("1000"));
    app.client
        .send(&format!("sendmsg {uuid}\ncall-command: hangup\n\n"))
        .await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.bridged_to.as_deref(), Some("1000"));

    // The inbound listener saw both B legs: OUTGOING twice before CREATE, the loser's LOSE_RACE.
    let mut per_leg: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    loop {
        let event = watcher.event().await;
        let name = event.header("Event-Name").unwrap().to_owned();
        let id = event.header("Unique-ID").unwrap_or("").to_owned();
        let cause = event.header("Hangup-Cause").unwrap_or("").to_owned();
        let done = name == "CHANNEL_DESTROY" && id == uuid;
        per_leg.entry(id).or_default().push((name, cause));
        if done {
            break;
        }
    }
    let loser = per_leg
        .iter()
        .find(|(id, evs)| {
            **id != uuid && **id != b_uuid && evs.iter().any(|(n, _)| n == "CHANNEL_OUTGOING")
        })
        .map(|(_, evs)| evs.clone())
        .expect("no events for the losing leg");
    let loser_names: Vec<&str> = loser.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        loser_names[..5],
        [
            "CHANNEL_OUTGOING",
            "CHANNEL_OUTGOING",
            "CHANNEL_STATE",
            "CHANNEL_CREATE",
            "CHANNEL_ORIGINATE"
        ]
    );
    assert!(
        loser
            .iter()
            .any(|(n, c)| n == "CHANNEL_HANGUP" && c == "LOSE_RACE"),
        "{loser:?}"
    );
    let winner: Vec<&str> = per_leg[&b_uuid].iter().map(|(n, _)| n.as_str()).collect();
    // As in bridge-two-devices.txt: PROGRESS then CALLSTATE RINGING, ANSWER then CALLSTATE.
    let progress = winner
        .iter()
        .position(|n| *n == "CHANNEL_PROGRESS")
        .unwrap();
    assert_eq!(winner[progress + 1], "CHANNEL_CALLSTATE");
    let answer = winner.iter().position(|n| *n == "CHANNEL_ANSWER").unwrap();
    assert_eq!(winner[answer + 1], "CHANNEL_CALLSTATE");
    assert!(
        winner.contains(&"CHANNEL_ANSWER") && winner.contains(&"CHANNEL_DESTROY"),
        "{winner:?}"
    );
    let log = sim.log().entries();
    assert!(log.contains(&Entry::DeviceLostRace {
        device: "1001".into(),
        call: "+15551230000".into()
    }));
    assert!(log.contains(&Entry::DeviceAnswered {
        device: "1000".into(),
        call: "+15551230000".into()
    }));
}

#[tokio::test]
async fn bridge_timeout_fails_with_no_answer_unless_continue_on_fail() {
    let (sim, listener) = bridge_sim(vec![
        device("1000", Behaviour::NoAnswer, 1.0, None),
        device("1001", Behaviour::NoAnswer, 1.0, None),
    ])
    .await;
    let (mut app, uuid, call) = call_on_socket(&sim, &listener).await;
    app.execute(&uuid, "set", "call_timeout=3").await;
    app.execute(&uuid, "set", "continue_on_fail=NO_ANSWER,USER_BUSY")
        .await;
    let events = app.execute(&uuid, "bridge", "user/1000,user/1001").await;
    let done = events.last().unwrap();
    assert_eq!(
        done.header("variable_originate_disposition"),
        Some("NO_ANSWER")
    );
    assert!(!names(&events).contains(&"CHANNEL_HANGUP".to_owned()));
    // Without continue_on_fail the A leg is hung up with the cause.
    app.execute(&uuid, "set", "continue_on_fail=false").await;
    app.client.command(&format!("sendmsg {uuid}\ncall-command: execute\nexecute-app-name: bridge\nexecute-app-arg: user/1000\nEvent-UUID: last")).await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "NO_ANSWER");
}

#[tokio::test]
async fn bridge_to_busy_and_unregistered_devices_fails_with_their_cause() {
    let (sim, listener) = bridge_sim(vec![
        device("1000", Behaviour::Busy, 1.0, None),
        device("1001", Behaviour::Unregistered, 1.0, None),
    ])
    .await;
    let (mut app, uuid, call) = call_on_socket(&sim, &listener).await;
    app.client.command(&format!("sendmsg {uuid}\ncall-command: execute\nexecute-app-name: bridge\nexecute-app-arg: user/1001,user/1000\nEvent-UUID: b1")).await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "USER_NOT_REGISTERED");
    let log = sim.log().entries();
    assert!(log.contains(&Entry::DeviceBusy {
        device: "1000".into(),
        call: "+15551230000".into()
    }));
    assert!(!log
        .iter()
        .any(|e| matches!(e, Entry::DeviceRang { device, .. } if device == "1001")));
}

/// A small mod_xml_curl endpoint for the tests: records every POST body and answers
/// directory lookups for user 1000 and dialplan lookups with a `socket` action.
struct XmlEndpoint {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for XmlEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn xml_endpoint(
    user_params: &'static str,
    socket: String,
    basic: Option<&'static str>,
) -> XmlEndpoint {
    use axum::{http::HeaderMap, routing::post, Router};
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let app = Router::new().route(
        "/fsapi",
        post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            let socket = socket.clone();
            async move {
                if let Some(expected) = basic {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if auth != expected {
                        return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                    }
                }
                seen.lock().unwrap().push(body.clone());
                let not_found = r#"<document type="freeswitch/xml"><section name="result"><result status="not found"/></section></document>"#;
                let xml = if body.contains("section=directory") && body.contains("&user=1000&") {
                    format!(
                        r#"<document type="freeswitch/xml"><section name="directory"><domain name="127.0.0.1"><users><user id="1000"><params>{user_params}</params><variables><variable name="effective_caller_id_name" value="Desk &amp; co"/><variable name="user_context" value="default"/></variables></user></users></domain></section></document>"#
                    )
                } else if body.contains("section=dialplan") {
                    format!(
                        r#"<document type="freeswitch/xml"><section name="dialplan"><context name="public"><extension name="patchbay"><condition field="destination_number" expression="^.*$"><action application="socket" data="{socket} async full"/></condition></extension></context></section></document>"#
                    )
                } else {
                    not_found.to_owned()
                };
                (axum::http::StatusCode::OK, xml)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fsapi", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    XmlEndpoint { url, bodies, task }
}

fn form_names(body: &str) -> Vec<String> {
    body.split('&')
        .map(|p| p.split('=').next().unwrap_or("").to_owned())
        .collect()
}

fn capture_form_names(index: usize) -> Vec<String> {
    let text =
        std::fs::read_to_string(super::captures::fixtures().join("xml-curl-requests.txt")).unwrap();
    let body = text
        .split("--- body ---\n")
        .nth(index + 1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    form_names(body)
}

#[tokio::test]
async fn register_checks_the_directory_password_like_freeswitch() {
    let endpoint = xml_endpoint(
        r#"<param name="password" value="s3cret&amp;"/>"#,
        String::new(),
        None,
    )
    .await;
    let config = Config {
        xml_url: Some(endpoint.url.clone()),
        ..fast_config()
    };
    let sim = Sim::start(config).await.unwrap();
    let mut watcher = Client::authed(&sim).await;
    watcher
        .command("event plain CUSTOM sofia::register sofia::register_failure sofia::unregister")
        .await;

    sim.register("1000", "s3cret&").await.unwrap();
    assert!(sim.is_registered("1000"));
    let event = watcher.event().await;
    assert_eq!(event.header("Event-Subclass"), Some("sofia::register"));
    assert_eq!(event.header("from-user"), Some("1000"));
    assert_eq!(event.header("status"), Some("Registered(UDP)"));
    assert_eq!(event.header("effective_caller_id_name"), Some("Desk & co"));
    // The POST has exactly the fields FreeSWITCH sends for a REGISTER (action=sip_auth).
    let body = endpoint.bodies.lock().unwrap()[0].clone();
    assert_eq!(form_names(&body), capture_form_names(0));
    assert!(
        body.contains("&action=sip_auth&sip_profile=internal&"),
        "{body}"
    );

    let err = sim.register("1000", "wrong").await.unwrap_err();
    assert!(err.to_string().contains("wrong password"), "{err}");
    assert_eq!(
        watcher.event().await.header("Event-Subclass"),
        Some("sofia::register_failure")
    );
    let err = sim.register("2000", "whatever").await.unwrap_err();
    assert!(err.to_string().contains("no such user"), "{err}");
    assert_eq!(watcher.event().await.header("to-user"), Some("2000"));

    assert!(sim.unregister("1000"));
    assert_eq!(
        watcher.event().await.header("Event-Subclass"),
        Some("sofia::unregister")
    );
    assert!(!sim.is_registered("1000"));
}

#[tokio::test]
async fn register_accepts_an_a1_hash_and_sends_basic_auth() {
    // md5("1000:127.0.0.1:pass1000")
    let hash = format!("{:x}", md5::compute("1000:127.0.0.1:pass1000"));
    let params: &'static str =
        Box::leak(format!(r#"<param name="a1-hash" value="{hash}"/>"#).into_boxed_str());
    // "fs:xmlpass" in base64
    let endpoint = xml_endpoint(params, String::new(), Some("Basic ZnM6eG1scGFzcw==")).await;
    let config = Config {
        xml_url: Some(endpoint.url.clone()),
        xml_credentials: Some(("fs".into(), patchbay::settings::Secret::new("xmlpass"))),
        ..fast_config()
    };
    let sim = Sim::start(config).await.unwrap();
    sim.register("1000", "pass1000").await.unwrap();
    assert!(sim.register("1000", "pass1001").await.is_err());

    let no_auth = Sim::start(Config {
        xml_url: Some(endpoint.url.clone()),
        ..fast_config()
    })
    .await
    .unwrap();
    let err = no_auth.register("1000", "pass1000").await.unwrap_err();
    assert!(err.to_string().contains("HTTP error 401"), "{err}");
}

#[tokio::test]
async fn dialplan_lookup_routes_the_call_to_the_socket_it_names() {
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket = app_listener.local_addr().unwrap().to_string();
    let endpoint = xml_endpoint("", socket, None).await;
    let config = Config {
        xml_url: Some(endpoint.url.clone()),
        time_scale: 0.02,
        ..fast_config()
    };
    let sim = Sim::start(config).await.unwrap();
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "+4144".into(),
        to: "+33123".into(),
        hangup_after: Some(1.0),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&app_listener).await;
    assert_eq!(reply.header("Caller-Destination-Number"), Some("%2B33123"));
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "ORIGINATOR_CANCEL");
    assert!(app.client.closed().await);
    let body = endpoint.bodies.lock().unwrap()[0].clone();
    assert!(body.starts_with("hostname=fsim&section=dialplan&tag_name=&key_name=&key_value=&Event-Name=REQUEST_PARAMS&"), "{body}");
    for field in [
        "Caller-Destination-Number=%2B33123",
        "Hunt-Destination-Number=%2B33123",
        "Hunt-Context=public",
        "variable_sip_req_user=%2B33123",
        "Unique-ID=",
    ] {
        assert!(body.contains(field), "{field} missing from {body}");
    }
}

#[tokio::test]
async fn gateways_walk_through_their_registration_states() {
    let sim = Sim::start(Config {
        time_scale: 0.01,
        ..fast_config()
    })
    .await
    .unwrap();
    let mut watcher = Client::authed(&sim).await;
    watcher
        .command("event plain CUSTOM sofia::gateway_state sofia::gateway_add sofia::gateway_delete")
        .await;
    let gateway = |name: &str, registrar| patchbay::sim::scenario::Gateway {
        name: name.into(),
        registrar,
        proxy: "127.0.0.1:5090".into(),
        expire_seconds: 30.0,
        retry_seconds: 10.0,
        timeout_seconds: 6.0,
        max_cycles: 2,
    };
    sim.start_gateway(gateway("good", patchbay::sim::scenario::Registrar::Ok));
    let mut states = Vec::new();
    while states.len() < 6 {
        let e = watcher.event().await;
        let state = e.header("State").unwrap_or("");
        states.push(format!(
            "{}:{}{}",
            e.header("Event-Subclass").unwrap(),
            state,
            e.header("Status")
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        ));
    }
    assert_eq!(
        states,
        [
            "sofia::gateway_add:",
            "sofia::gateway_state:TRYING",
            "sofia::gateway_state:REGISTER/200",
            "sofia::gateway_state:REGED",
            "sofia::gateway_state:REGISTER/200",
            "sofia::gateway_state:REGED"
        ]
    );
    let mut status_client = Client::authed(&sim).await;
    let status = status_client.api("sofia status gateway good").await;
    assert!(
        status.contains("State   \tREGED\nStatus  \tUP\n"),
        "{status}"
    );
    let xml = status_client.api("sofia xmlstatus gateway good").await;
    assert!(
        xml.contains("<from>&lt;sip:good@127.0.0.1:5090&gt;</from>"),
        "{xml}"
    );
    assert!(sim.kill_gateway("good"));
    loop {
        let e = watcher.event().await;
        if e.header("Event-Subclass") == Some("sofia::gateway_delete") {
            break;
        }
    }

    sim.start_gateway(gateway("bad", patchbay::sim::scenario::Registrar::Fail));
    sim.start_gateway(gateway(
        "silent",
        patchbay::sim::scenario::Registrar::Timeout,
    ));
    let mut bad = Vec::new();
    let mut silent = Vec::new();
    while bad.len() < 7 || silent.len() < 6 {
        let e = watcher.event().await;
        let state = e.header("State").unwrap_or("add").to_owned();
        match e.header("Gateway") {
            Some("bad") => bad.push(state),
            Some("silent") => silent.push(state),
            _ => {}
        }
    }
    assert_eq!(
        bad[..7],
        [
            "add",
            "TRYING",
            "FAILED",
            "FAIL_WAIT",
            "UNREGED",
            "TRYING",
            "FAILED"
        ]
    );
    assert_eq!(
        silent[..6],
        ["add", "TRYING", "TIMEOUT", "FAILED", "FAIL_WAIT", "UNREGED"]
    );
    assert_eq!(
        sim.gateway_state("bad").as_deref().map(|s| s != "REGED"),
        Some(true)
    );
}

#[tokio::test]
async fn the_client_library_understands_the_simulator() {
    use freeswitch_esl_tokio::{EslClient, EventFormat};
    let sim = Sim::start(fast_config()).await.unwrap();
    let addr = sim.esl_addr();
    for format in [EventFormat::Plain, EventFormat::Json] {
        let (client, mut events) = EslClient::connect("127.0.0.1", addr.port(), "ClueCon")
            .await
            .unwrap();
        client
            .subscribe_events_raw(format, "CHANNEL_ANSWER BACKGROUND_JOB")
            .await
            .unwrap();
        let status = client.api("status").await.unwrap();
        assert!(status.body().unwrap().starts_with("UP 0 years"));
        let tricky = "Zoë <z> & \"q\" ]]> 100% %41\nline2";
        let mut event = sim.new_event("CHANNEL_ANSWER");
        event
            .push("Unique-ID", "u-1")
            .push("Caller-Caller-ID-Name", tricky)
            .push("variable_DP_MATCH", "ARRAY::a|:b");
        sim.emit(event.clone());
        let got = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for (name, value) in event.headers() {
            let theirs = got
                .header_str(name)
                .unwrap_or_else(|| panic!("{format:?}: {name} missing"));
            if name == "variable_DP_MATCH" {
                assert!(
                    theirs == "ARRAY::a|:b" || theirs == "[\"a\",\"b\"]",
                    "{format:?}: {theirs}"
                );
            } else if name == "Caller-Caller-ID-Name" && format == EventFormat::Plain {
                // The lossy-% rule: "%41" is sent unencoded, so it decodes to "A".
                assert_eq!(theirs, tricky.replace("%41", "A"), "{format:?}");
            } else {
                assert_eq!(theirs, value, "{format:?}: {name}");
            }
        }
        let reply = client.bgapi("create_uuid").await.unwrap();
        let job = reply.job_uuid().unwrap().to_owned();
        let done = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(done.header_str("Job-UUID"), Some(job.as_str()));
        assert_eq!(done.body().map(str::len), Some(36));
    }
}

#[test]
fn the_demo_scenario_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/scenarios/demo.toml");
    let scenario = Scenario::load(&path).unwrap();
    assert!(scenario.devices.len() >= 2);
    assert!(!scenario.gateways.is_empty());
    assert!(!scenario.calls.is_empty());
    assert!(scenario.calls.iter().all(|c| !c.to.is_empty()));
}

#[tokio::test]
async fn a_scenario_registers_its_devices_and_places_its_calls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        static_socket: Some(listener.local_addr().unwrap().to_string()),
        time_scale: 0.01,
        ..fast_config()
    };
    let scenario = Scenario::parse(
        r#"
        [[device]]
        extension = "1000"
        [[gateway]]
        name = "did1"
        [[call]]
        from = "+41441234567"
        to = "+33123456789"
        at = 1.0
        hangup_after = 2.0
        "#,
        "inline.toml",
    )
    .unwrap();
    let sim = Sim::start_with(config, scenario).await.unwrap();
    sim.run_scenario();
    let (mut app, reply) = App::accept(&listener).await;
    assert_eq!(
        reply.header("Caller-Caller-ID-Number"),
        Some("%2B41441234567")
    );
    assert!(app.client.closed().await);
    assert!(sim.is_registered("1000"));
    let ended = sim
        .log()
        .wait_for(WAIT, |e| matches!(e, Entry::CallEnded { .. }))
        .await;
    assert!(matches!(ended, Some(Entry::CallEnded { cause, .. }) if cause == "ORIGINATOR_CANCEL"));
    let reged = sim
        .log()
        .wait_for(
            WAIT,
            |e| matches!(e, Entry::GatewayState { state, .. } if state == "REGED"),
        )
        .await;
    assert!(reged.is_some());
}

#[tokio::test]
async fn events_wait_while_an_api_command_runs() {
    let (sim, _listener) =
        bridge_sim(vec![device("1000", Behaviour::Answer, 10.0, Some(1.0))]).await;
    let mut client = Client::authed(&sim).await;
    client.command("event plain CUSTOM test::during").await;
    client.send("api originate user/1000 &park()\n\n").await;
    // Emitted while the originate is still ringing (200 ms of scaled ringing).
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut during = sim.new_event("CUSTOM");
    during.set("Event-Subclass", "test::during");
    sim.emit(during);
    let first = client.frame().await;
    assert_eq!(
        first.content_type(),
        Some("api/response"),
        "an event overtook the api reply"
    );
    let output = String::from_utf8(first.body().unwrap().to_vec()).unwrap();
    assert!(output.starts_with("+OK "), "{output}");
    assert_eq!(
        client.event().await.header("Event-Subclass"),
        Some("test::during")
    );
    let uuid = output.trim().trim_start_matches("+OK ").to_owned();
    let rows: serde_json::Value =
        serde_json::from_str(&client.api("show channels as json").await).unwrap();
    assert_eq!(rows["row_count"], 1);
    assert_eq!(rows["rows"][0]["uuid"], uuid.as_str());
    assert_eq!(client.api(&format!("uuid_kill {uuid}")).await, "+OK\n");
}

#[tokio::test]
async fn garbage_on_an_outbound_socket_ends_only_that_call() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let doomed = sim.place_call(patchbay::sim::scenario::Call {
        from: "1".into(),
        to: "2".into(),
        ..Default::default()
    });
    let (mut bad, _) = App::accept(&listener).await;
    bad.client
        .send_bytes(b"myevents\nContent-Length: 12\xff\n\n")
        .await;
    assert!(bad.client.closed().await);
    let summary = tokio::time::timeout(WAIT, doomed.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
    let error = sim
        .log()
        .wait_for(WAIT, |e| matches!(e, Entry::ConnectionError { .. }))
        .await;
    assert!(error.is_some());

    let fine = sim.place_call(patchbay::sim::scenario::Call {
        from: "3".into(),
        to: "4".into(),
        ..Default::default()
    });
    let (mut good, reply) = App::accept(&listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    assert_eq!(good.client.command("myevents").await, "+OK Events Enabled");
    good.execute(&uuid, "answer", "").await;
    good.client
        .send(&format!(
            "sendmsg {uuid}\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n"
        ))
        .await;
    assert_eq!(
        tokio::time::timeout(WAIT, fine.finished())
            .await
            .unwrap()
            .unwrap()
            .hangup_cause,
        "USER_BUSY"
    );
}

#[tokio::test]
async fn killing_the_simulator_drops_its_calls_and_a_restart_starts_clean() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "1".into(),
        to: "2".into(),
        ..Default::default()
    });
    let (mut app, _) = App::accept(&listener).await;
    app.client.command("myevents").await;
    sim.kill();
    // No hangup events and no goodbye: the socket just closes.
    assert!(app.client.try_frame().await.is_none());
    assert_eq!(
        tokio::time::timeout(WAIT, call.finished())
            .await
            .unwrap()
            .unwrap()
            .hangup_cause,
        "CRASH"
    );
    sim.restart().await.unwrap();
    let mut client = Client::authed(&sim).await;
    assert_eq!(
        client.api("show channels as json").await,
        "{\"row_count\":0}"
    );
}

#[tokio::test]
async fn a_device_calling_out_arrives_in_the_default_context_and_loops_repeat_an_app() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "1000".into(),
        to: "0041441234567".into(),
        context: Some("default".into()),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&listener).await;
    assert_eq!(
        reply.header("Channel-Name"),
        Some("sofia/internal/1000%40127.0.0.1")
    );
    assert_eq!(reply.header("Caller-Context"), Some("default"));
    assert_eq!(
        reply.header("variable_sofia_profile_name"),
        Some("internal")
    );
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    app.client.command("myevents").await;
    app.execute(&uuid, "answer", "").await;
    // loops: 3 runs of a 1 s tone, one EXECUTE_COMPLETE per run, the last one ends the wait.
    let event_uuid = "loop-1";
    app.client
        .send(&format!("sendmsg {uuid}\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: tone_stream://%(1000,0,440)\nloops: 3\nEvent-UUID: {event_uuid}\n\n"))
        .await;
    let mut completions = 0;
    while completions < 3 {
        let frame = app.client.frame().await;
        if frame.content_type() != Some("text/event-plain") {
            continue;
        }
        let event = decode_plain(frame);
        if event.header("Event-Name") == Some("CHANNEL_EXECUTE_COMPLETE") {
            assert_eq!(event.header("Application-UUID"), Some(event_uuid));
            completions += 1;
            assert_eq!(
                event.header("variable_current_loop"),
                Some(completions.to_string().as_str())
            );
        }
    }
    app.client
        .send(&format!("sendmsg {uuid}\ncall-command: hangup\n\n"))
        .await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        summary
            .apps
            .iter()
            .filter(|(app, _, _)| app == "playback")
            .count(),
        3
    );
}

#[tokio::test]
async fn uuid_transfer_ends_the_socket_and_runs_the_dialplan_again() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "+4144".into(),
        to: "+33123".into(),
        ..Default::default()
    });
    let (mut first, reply) = App::accept(&listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    first.client.command("myevents").await;
    first.execute(&uuid, "answer", "").await;
    let mut admin = Client::authed(&sim).await;
    assert_eq!(
        admin
            .api(&format!("uuid_transfer {uuid} 5000 XML default"))
            .await,
        "+OK\n"
    );
    let mut seen = Vec::new();
    let goodbye = loop {
        let frame = first.client.frame().await;
        if frame.content_type() == Some("text/disconnect-notice") {
            break frame;
        }
        seen.push(decode_plain(frame));
    };
    assert_eq!(names(&seen), ["CHANNEL_UNPARK", "CHANNEL_EXECUTE_COMPLETE"]);
    assert_eq!(seen[1].header("Application"), Some("socket"));
    assert_eq!(goodbye.header("Content-Disposition"), Some("disconnect"));
    assert!(first.client.closed().await);

    let (mut second, reply) = App::accept(&listener).await;
    assert_eq!(reply.header("Unique-ID"), Some(uuid.as_str()));
    assert_eq!(reply.header("Caller-Destination-Number"), Some("5000"));
    assert_eq!(reply.header("Caller-Context"), Some("default"));
    second.client.command("myevents").await;
    // The new socket controls the call as long as it stays: a hangup from it ends the call.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        admin.api(&format!("uuid_exists {uuid}")).await,
        "true",
        "the call died with the first socket"
    );
    second
        .client
        .send(&format!(
            "sendmsg {uuid}\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
        ))
        .await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
    assert_eq!(summary.apps.len(), 1, "{:?}", summary.apps);
}

#[tokio::test]
async fn record_stops_at_its_time_limit_and_expire_removes_a_registration() {
    let dir = tempfile::tempdir().unwrap();
    let clip_path = dir.path().join("long.wav");
    // 16 kHz stereo: the simulator converts to 8 kHz mono.
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&clip_path, spec).unwrap();
    for i in 0..16_000 * 5 {
        let sample = ((i as f64 * 0.05).sin() * 10_000.0) as i16;
        writer.write_sample(sample).unwrap();
        writer.write_sample(0i16).unwrap();
    }
    writer.finalize().unwrap();
    let (sim, listener) = outbound_sim(|c| c.recordings_dir = Some(dir.path().to_path_buf())).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "1".into(),
        to: "2".into(),
        audio: Some(clip_path),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    app.client.command("myevents").await;
    app.execute(&uuid, "answer", "").await;
    let events = app.execute(&uuid, "record", "vm/limited.wav 2").await;
    assert_eq!(
        events.last().unwrap().header("variable_record_ms"),
        Some("2000")
    );
    let reader = hound::WavReader::open(dir.path().join("vm/limited.wav")).unwrap();
    assert_eq!(
        (
            reader.spec().sample_rate,
            reader.spec().channels,
            reader.duration()
        ),
        (8000, 1, 16_000)
    );
    let samples: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(
        samples.iter().any(|s| s.abs() > 5000),
        "left channel lost in the conversion"
    );
    app.client
        .send(&format!("sendmsg {uuid}\ncall-command: hangup\n\n"))
        .await;
    tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();

    let mut watcher = Client::authed(&sim).await;
    watcher.command("event plain CUSTOM sofia::expire").await;
    sim.register("1000", "x").await.unwrap();
    assert!(sim.expire("1000"));
    let expired = watcher.event().await;
    assert_eq!(expired.header("user"), Some("1000"));
    assert!(!sim.is_registered("1000"));
    assert!(!sim.expire("1000"));
}

#[tokio::test]
async fn a_leg_timeout_stops_one_device_before_another_answers() {
    let (sim, listener) = bridge_sim(vec![
        device("1000", Behaviour::NoAnswer, 1.0, None),
        device("1001", Behaviour::Answer, 3.0, Some(1.0)),
    ])
    .await;
    let (mut app, uuid, call) = call_on_socket(&sim, &listener).await;
    let events = app
        .execute(&uuid, "bridge", "[leg_timeout=1]user/1000,user/1001")
        .await;
    assert!(names(&events).contains(&"CHANNEL_BRIDGE".to_owned()));
    app.client
        .send(&format!("sendmsg {uuid}\ncall-command: hangup\n\n"))
        .await;
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.bridged_to.as_deref(), Some("1001"));
    assert_eq!(
        sim.log().executed("bridge"),
        ["[leg_timeout=1]user/1000,user/1001"]
    );
    let log = sim.log().entries();
    assert!(
        !log.iter()
            .any(|e| matches!(e, Entry::DeviceLostRace { .. })),
        "1000 had already stopped ringing"
    );
}

#[tokio::test]
async fn absurd_app_arguments_do_not_crash_the_simulator() {
    let (sim, listener) = outbound_sim(|_| {}).await;
    let call = sim.place_call(patchbay::sim::scenario::Call {
        from: "1".into(),
        to: "2".into(),
        ..Default::default()
    });
    let (mut app, reply) = App::accept(&listener).await;
    let uuid = frame::url_decode(reply.header("Unique-ID").unwrap()).into_owned();
    app.client.command("myevents").await;
    for (name, arg) in [
        ("sleep", "NaN"),
        ("sleep", "-5"),
        ("playback", "silence_stream://x"),
        ("record", "/dev/null/x.wav nan"),
        ("set", "continue_on_fail=true"),
        ("bridge", "{call_timeout=inf}user/9"),
        ("set", "novalue"),
    ] {
        let events = app.execute(&uuid, name, arg).await;
        assert_eq!(events.last().unwrap().header("Application"), Some(name));
    }
    // A sleep far beyond the test's patience is cut short by a hangup from the app.
    app.client
        .send(&format!("sendmsg {uuid}\ncall-command: execute\nexecute-app-name: sleep\nexecute-app-arg: 1e400\nEvent-UUID: long\n\n"))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut admin = Client::authed(&sim).await;
    assert_eq!(admin.api(&format!("uuid_kill {uuid}")).await, "+OK\n");
    let summary = tokio::time::timeout(WAIT, call.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
}

/// Load check, run by hand in release:
/// `cargo test --release --test it -- --ignored sim::simulator_event_throughput --nocapture`.
/// The simulator replays the events of a captured call (plain) to one raw reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn simulator_event_throughput() {
    const EVENTS: usize = 200_000;
    let config = Config {
        log_events: false,
        event_queue_capacity: EVENTS + 10,
        ..fast_config()
    };
    let sim = Sim::start(config).await.unwrap();
    let captured = std::fs::read(super::captures::fixtures().join("esl-inbound-call.txt")).unwrap();
    let mut templates = Vec::new();
    let mut rest = &captured[..];
    while let Some((frame, used)) = Frame::parse(rest).unwrap() {
        rest = &rest[used..];
        if frame.content_type() == Some("text/event-plain") {
            let (event, _) = Frame::parse(frame.body().unwrap()).unwrap().unwrap();
            let headers = event
                .headers()
                .iter()
                .map(|(n, v)| (n.clone(), frame::url_decode(v).into_owned()))
                .collect();
            templates.push(patchbay::sim::Event::from_parts(
                headers,
                event.body().map(<[u8]>::to_vec),
            ));
        }
    }
    let mut client = Client::authed(&sim).await;
    client.command("event plain ALL").await;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < EVENTS {
            client.frame().await;
            seen += 1;
        }
    });
    let started = std::time::Instant::now();
    for i in 0..EVENTS {
        sim.emit(templates[i % templates.len()].clone());
    }
    reader.await.unwrap();
    let elapsed = started.elapsed();
    let bytes: usize = templates.iter().map(|t| t.headers().len()).sum::<usize>() / templates.len();
    println!(
        "{EVENTS} events ({} templates, ~{bytes} headers each) in {:.2} s: {:.0} events/s",
        templates.len(),
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}
