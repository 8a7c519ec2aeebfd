//! Integration tests: the FreeSWITCH simulator over real TCP on loopback, spoken to with raw
//! bytes and read back with the ESL frame decoder.

use std::time::Duration;

use patchbay::freeswitch::esl::frame::{self, Frame};
use patchbay::sim::{Config, Entry, Faults, Sim};
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
