//! ESL client tests over real loopback TCP: the outbound call server against replays of the
//! FreeSWITCH captures (byte for byte, modulo the Event-UUIDs we generate), hostile peers, and
//! the inbound client against scripted FreeSWITCH peers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use patchbay::calls::{
    CallControl, CallEvent, ControlError, DigitsRequest, PlaybackOutcome, RecordRequest,
};
use patchbay::freeswitch::esl::outbound::{self, ChannelData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub fn fixture(name: &str) -> PathBuf {
    super::captures::fixtures().join(name)
}

pub fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    FsToApp,
    AppToFs,
}

/// The blocks of an annotated outbound transcript, in order (NOTE markers skipped).
fn transcript(name: &str) -> Vec<(Direction, Vec<u8>)> {
    let data = read_fixture(name);
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(found) = find(&data[pos..], b"##### ") {
        let line_start = pos + found;
        let line_end = line_start + find(&data[line_start..], b"\n").expect("marker line end");
        let line = String::from_utf8_lossy(&data[line_start..line_end]).into_owned();
        let words: Vec<&str> = line.split(' ').collect();
        let direction = match words.get(3) {
            Some(&"FS->APP") => Direction::FsToApp,
            Some(&"APP->FS") => Direction::AppToFs,
            _ => {
                pos = line_end + 1;
                continue;
            }
        };
        let length: usize = words[4].parse().expect("byte count");
        let start = line_end + 1;
        blocks.push((direction, data[start..start + length].to_vec()));
        pos = start + length;
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    while let Some(found) = find(&data[pos..], from) {
        out.extend_from_slice(&data[pos..pos + found]);
        out.extend_from_slice(to);
        pos += found + from.len();
    }
    out.extend_from_slice(&data[pos..]);
    out
}

/// The Event-UUID a command carries, if any.
fn event_uuid(command: &[u8]) -> Option<Vec<u8>> {
    let start = find(command, b"Event-UUID: ")? + b"Event-UUID: ".len();
    let end = start + find(&command[start..], b"\n")?;
    Some(command[start..end].to_vec())
}

/// Play FreeSWITCH's side of a captured outbound session against our server at `addr`:
/// each APP->FS block must arrive exactly (with our Event-UUIDs in place of the captured
/// ones), each FS->APP block is sent with the same substitution so completions carry our
/// Application-UUIDs. Returns what our client sent.
async fn replay_fs_side(addr: std::net::SocketAddr, name: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to our server");
    let mut uuids: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut sent_by_app = Vec::new();
    for (direction, block) in transcript(name) {
        match direction {
            Direction::AppToFs => {
                let mut actual = vec![0; block.len()];
                tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut actual))
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "timed out waiting for {:?}",
                            String::from_utf8_lossy(&block)
                        )
                    })
                    .expect("read the client's command");
                let mut expected = block.clone();
                if let (Some(captured), Some(ours)) = (event_uuid(&block), event_uuid(&actual)) {
                    assert_ne!(captured, ours, "Event-UUIDs must be fresh");
                    expected = replace_all(&expected, &captured, &ours);
                    uuids.insert(captured, ours);
                }
                assert_eq!(
                    String::from_utf8_lossy(&actual),
                    String::from_utf8_lossy(&expected),
                    "our client must send exactly what the capture shows"
                );
                sent_by_app.extend_from_slice(&actual);
            }
            Direction::FsToApp => {
                let mut bytes = block;
                for (captured, ours) in &uuids {
                    bytes = replace_all(&bytes, captured, ours);
                }
                stream
                    .write_all(&bytes)
                    .await
                    .expect("send FreeSWITCH's frame");
            }
        }
    }
    // FreeSWITCH closes after the final disconnect notice.
    drop(stream);
    sent_by_app
}

fn fast_config(digits_variable: &str) -> outbound::Config {
    outbound::Config {
        linger_secs: Some(5),
        digits_variable: digits_variable.to_owned(),
        ..outbound::Config::default()
    }
}

#[derive(Debug)]
struct SessionReport {
    channel: ChannelData,
    playback: Result<PlaybackOutcome, ControlError>,
    record_ms: Option<u64>,
    digits: Option<String>,
    dtmf: Vec<char>,
    hangup: Result<(), ControlError>,
    finished: bool,
}

#[tokio::test]
async fn outbound_session_sends_exactly_the_captured_commands_and_matches_completions() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report_tx, mut report_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(outbound::serve_with(
        listener,
        fast_config("fixture_digit"),
        move |session: outbound::Session| {
            let report_tx = report_tx.clone();
            async move {
                let call = session.control;
                let mut events = call.subscribe();
                call.answer().await.expect("answer");
                let playback = call.playback("tone_stream://%(1000,0,440)").await;
                let record = call
                    .record(&RecordRequest {
                        path: format!("/recordings/vmail/vm-{}.wav", call.uuid()),
                        max: Duration::from_secs(5),
                        silence_threshold: Some(200),
                        silence: Duration::from_secs(2),
                    })
                    .await
                    .expect("record");
                let digits = call
                    .get_digits(&DigitsRequest {
                        min: 1,
                        max: 1,
                        timeout: Duration::from_secs(15),
                        terminators: "#".to_owned(),
                        prompt: Some("tone_stream://%(200,0,800)".to_owned()),
                    })
                    .await
                    .expect("get digits");
                let hangup = call.hangup("NORMAL_CLEARING").await;
                let mut dtmf = Vec::new();
                let mut finished = false;
                while let Ok(Ok(event)) =
                    tokio::time::timeout(Duration::from_secs(5), events.recv()).await
                {
                    match event {
                        CallEvent::Dtmf { digit } => dtmf.push(digit),
                        CallEvent::Finished { .. } => {
                            finished = true;
                            break;
                        }
                        _ => {}
                    }
                }
                let _ = report_tx
                    .send(SessionReport {
                        channel: session.channel,
                        playback,
                        record_ms: Some(record.ms),
                        digits,
                        dtmf,
                        hangup,
                        finished,
                    })
                    .await;
            }
        },
        async move {
            let _ = stop_rx.await;
        },
    ));

    let sent = replay_fs_side(addr, "outbound-socket-session.txt").await;
    let report = tokio::time::timeout(Duration::from_secs(10), report_rx.recv())
        .await
        .expect("the flow finished")
        .expect("a report");
    let _ = stop_tx.send(());
    server.await.unwrap();

    // Same bytes as the capture's app side, apart from the Event-UUIDs.
    let captured = read_fixture("outbound-socket-session.app-to-fs.raw");
    assert_eq!(sent.len(), captured.len());

    assert_eq!(report.channel.uuid, "9c0c00d4-d204-4b56-8ef5-02cd1eacdedd");
    assert_eq!(report.channel.caller_id_number.as_deref(), Some("sipp"));
    assert_eq!(report.channel.destination_number.as_deref(), Some("7777"));
    assert_eq!(report.channel.context.as_deref(), Some("public"));
    assert_eq!(report.playback, Ok(PlaybackOutcome::Played));
    assert_eq!(report.record_ms, Some(5820));
    assert_eq!(report.digits.as_deref(), Some("1"));
    assert_eq!(report.dtmf, vec!['1']);
    assert_eq!(report.hangup, Ok(()));
    assert!(report.finished, "CHANNEL_HANGUP_COMPLETE reaches the flow");
}

#[tokio::test]
async fn caller_hangup_settles_the_running_playback_and_refuses_what_follows() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report_tx, mut report_rx) = mpsc::channel(1);
    let server = tokio::spawn(outbound::serve_with(
        listener,
        fast_config("patchbay_digits"),
        move |session: outbound::Session| {
            let report_tx = report_tx.clone();
            async move {
                let call = session.control;
                call.answer().await.expect("answer");
                let playback = call.playback("tone_stream://%(1000,0,440);loops=20").await;
                let after = tokio::time::timeout(Duration::from_secs(2), call.answer()).await;
                let _ = report_tx.send((playback, after)).await;
            }
        },
        std::future::pending(),
    ));
    let sent = replay_fs_side(addr, "outbound-socket-caller-hangup.txt").await;
    assert_eq!(
        sent.len(),
        read_fixture("outbound-socket-caller-hangup.app-to-fs.raw").len()
    );
    let (playback, after) = tokio::time::timeout(Duration::from_secs(10), report_rx.recv())
        .await
        .expect("the flow finished")
        .expect("a report");
    assert_eq!(
        playback,
        Ok(PlaybackOutcome::Interrupted {
            response: "PLAYBACK ERROR".to_owned()
        })
    );
    let after = after.expect("a request after hangup fails promptly, it does not hang");
    assert!(
        matches!(after, Err(ControlError::HungUp { ref cause, .. }) if cause == "NORMAL_CLEARING"),
        "{after:?}"
    );
    server.abort();
}

/// Send `hostile` as FreeSWITCH's answer to `connect` and check the server drops us.
async fn assert_dropped(addr: std::net::SocketAddr, hostile: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut connect = [0u8; 9];
    stream.read_exact(&mut connect).await.unwrap();
    assert_eq!(&connect, b"connect\n\n");
    // A peer that stops reading may make our write fail: that is the point.
    let _ = stream.write_all(hostile).await;
    let _ = stream.shutdown().await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the server must drop a hostile connection, not hang on it"
    );
    assert!(
        rest.is_empty() || !rest.starts_with(b"myevents"),
        "no session may start on hostile input"
    );
}

#[tokio::test]
async fn hostile_outbound_input_drops_that_connection_and_others_carry_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sessions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sessions);
    let server = tokio::spawn(outbound::serve_with(
        listener,
        outbound::Config {
            handshake_timeout: Duration::from_secs(3),
            ..fast_config("fixture_digit")
        },
        move |session: outbound::Session| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let call = session.control;
                let _ = call.answer().await;
                let _ = call.playback("tone_stream://%(1000,0,440)").await;
            }
        },
        std::future::pending(),
    ));

    // Garbage, a line without a colon.
    assert_dropped(addr, b"this is not ESL at all\n\n").await;
    // Invalid UTF-8 in a header line.
    assert_dropped(
        addr,
        b"Content-Type: command/reply\nReply-Text: \xff\xfe\n\n",
    )
    .await;
    // A Content-Length larger than the data, then the socket closes.
    assert_dropped(
        addr,
        b"Content-Length: 5000\nContent-Type: text/event-plain\n\nEvent-Name: CHANNEL_ANSWER\n",
    )
    .await;
    // A non-numeric Content-Length.
    assert_dropped(addr, b"Content-Length: lots\n\n").await;
    // A 20 MB header block with no end.
    let mut huge = b"Event-Name: CHANNEL_DATA\nX-Padding: ".to_vec();
    huge.resize(20 * 1024 * 1024, b'a');
    assert_dropped(addr, &huge).await;
    // A connect reply that is not +OK.
    assert_dropped(
        addr,
        b"Content-Type: command/reply\nReply-Text: -ERR no\n\n",
    )
    .await;
    assert_eq!(sessions.load(Ordering::SeqCst), 0);

    // Meanwhile a real call still works, and frames split at every byte are reassembled.
    let transcript_blocks = transcript("outbound-socket-caller-hangup.txt");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut uuids: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (direction, block) in transcript_blocks.into_iter().take(12) {
        match direction {
            Direction::AppToFs => {
                let mut actual = vec![0; block.len()];
                tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut actual))
                    .await
                    .expect("command in time")
                    .unwrap();
                if let (Some(captured), Some(ours)) = (event_uuid(&block), event_uuid(&actual)) {
                    uuids.insert(captured, ours);
                }
            }
            Direction::FsToApp => {
                let mut bytes = block;
                for (captured, ours) in &uuids {
                    bytes = replace_all(&bytes, captured, ours);
                }
                for byte in bytes {
                    stream.write_all(&[byte]).await.unwrap();
                }
            }
        }
    }
    assert_eq!(sessions.load(Ordering::SeqCst), 1);
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Inbound link against a scripted FreeSWITCH peer
// ---------------------------------------------------------------------------------------------

use patchbay::freeswitch::esl::event::{GatewayState, LinkEvent};
use patchbay::freeswitch::esl::frame::{self, Frame};
use patchbay::freeswitch::esl::inbound;
use patchbay::journal::Journal;
use patchbay::settings::Secret;
use std::sync::Mutex;

/// The event frames of an inbound capture, byte for byte (replies and auth left out).
pub fn capture_event_frames(name: &str) -> Vec<Vec<u8>> {
    let data = read_fixture(name);
    let mut frames = Vec::new();
    let mut pos = 0;
    while let Ok(Some((frame, used))) = Frame::parse(&data[pos..]) {
        if frame
            .content_type()
            .is_some_and(|kind| kind.starts_with("text/event-"))
        {
            frames.push(data[pos..pos + used].to_vec());
        }
        pos += used;
    }
    frames
}

/// How the fake FreeSWITCH behaves on every connection.
#[derive(Clone, Default)]
struct Script {
    password: String,
    /// Raw frames sent right after the subscription is accepted.
    after_subscribe: Vec<u8>,
    /// Send a HEARTBEAT this often.
    heartbeat_every: Option<Duration>,
    /// Output of `show channels as json`.
    channels_json: String,
    /// Write every byte on its own, so frames arrive split at every possible point.
    split_every_byte: bool,
}

/// A scripted FreeSWITCH event socket: auth, event, api, bgapi (+ BACKGROUND_JOB), exit.
struct FakeSwitch {
    addr: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    commands: Arc<Mutex<Vec<String>>>,
}

impl FakeSwitch {
    async fn start(addr: &str, script: Script) -> FakeSwitch {
        let listener = TcpListener::bind(addr).await.expect("bind the fake switch");
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let commands: Arc<Mutex<Vec<String>>> = Arc::default();
        let accept_tasks = Arc::clone(&tasks);
        let accept_commands = Arc::clone(&commands);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let task = tokio::spawn(serve_fake(
                    stream,
                    script.clone(),
                    Arc::clone(&accept_commands),
                    Arc::clone(&accept_tasks),
                ));
                accept_tasks.lock().unwrap().push(task);
            }
        });
        tasks.lock().unwrap().push(accept);
        FakeSwitch {
            addr,
            tasks,
            commands,
        }
    }

    /// Like a crash: the listener and every connection vanish at once.
    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

impl Drop for FakeSwitch {
    fn drop(&mut self) {
        self.kill();
    }
}

fn background_job(job_uuid: &str, command: &str, body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_event_json(
        &mut out,
        [
            ("Event-Name", "BACKGROUND_JOB"),
            ("Core-UUID", "6972680b-4c46-420a-a65f-d708359a37b2"),
            ("Job-UUID", job_uuid),
            ("Job-Command", command),
        ],
        Some(body.as_bytes()),
    );
    out
}

fn heartbeat() -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_event_json(
        &mut out,
        [
            ("Event-Name", "HEARTBEAT"),
            ("Core-UUID", "6972680b-4c46-420a-a65f-d708359a37b2"),
            ("Uptime-msec", "123456"),
            ("Session-Count", "2"),
        ],
        None,
    );
    out
}

type Tasks = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// One connection; every task it spawns is registered in `tasks` so a kill takes it down too.
async fn serve_fake(
    stream: TcpStream,
    script: Script,
    commands: Arc<Mutex<Vec<String>>>,
    tasks: Tasks,
) {
    // Byte-by-byte writes must leave as separate segments, not be coalesced.
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let split = script.split_every_byte;
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            let written = if split {
                let mut result = Ok(());
                for byte in &bytes {
                    result = write.write_all(std::slice::from_ref(byte)).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            } else {
                write.write_all(&bytes).await
            };
            if written.is_err() {
                return;
            }
        }
    });
    tasks.lock().unwrap().push(writer);
    let mut helpers = Vec::new();
    let _ = out_tx.send(Frame::auth_request().to_wire());
    let mut buffer = Vec::new();
    'connection: loop {
        let mut chunk = [0u8; 4096];
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        while let Ok(Some((command, used))) = Frame::parse_command(&buffer) {
            buffer.drain(..used);
            let line = command.command().unwrap_or_default().to_owned();
            commands.lock().unwrap().push(line.clone());
            let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match verb {
                "auth" if rest == script.password => {
                    let _ = out_tx.send(Frame::command_reply("+OK accepted").to_wire());
                }
                "auth" => {
                    let _ = out_tx.send(Frame::command_reply("-ERR invalid").to_wire());
                    break 'connection;
                }
                "event" => {
                    let _ = out_tx
                        .send(Frame::command_reply("+OK event listener enabled json").to_wire());
                    if let Some(every) = script.heartbeat_every {
                        let out_tx = out_tx.clone();
                        helpers.push(tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(every).await;
                                if out_tx.send(heartbeat()).is_err() {
                                    return;
                                }
                            }
                        }));
                    }
                }
                "api" if rest == "show channels as json" => {
                    let _ =
                        out_tx.send(Frame::api_response(script.channels_json.clone()).to_wire());
                }
                "api" if rest == "show registrations as json" => {
                    let _ =
                        out_tx.send(Frame::api_response("{\"row_count\":0}".to_owned()).to_wire());
                    // The stream starts once the client has its picture of the channels
                    // and registrations.
                    let _ = out_tx.send(script.after_subscribe.clone());
                }
                "api" => {
                    let _ = out_tx.send(Frame::api_response(format!("output of {rest}")).to_wire());
                }
                "bgapi" => {
                    let job_uuid = uuid::Uuid::new_v4().to_string();
                    let _ = out_tx.send(Frame::bgapi_reply(&job_uuid).to_wire());
                    let delay = if rest.contains("slow") { 300 } else { 0 };
                    let out_tx = out_tx.clone();
                    let rest = rest.to_owned();
                    helpers.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        let body = format!("+OK result of {rest}\n");
                        let _ = out_tx.send(background_job(&job_uuid, "originate", &body));
                    }));
                }
                "exit" => {
                    let _ = out_tx.send(Frame::command_reply("+OK bye").to_wire());
                    break 'connection;
                }
                _ => {
                    let _ = out_tx.send(Frame::command_reply("-ERR command not found").to_wire());
                }
            }
        }
    }
    for helper in helpers {
        helper.abort();
    }
}

fn link_config(addr: std::net::SocketAddr, password: &str) -> inbound::Config {
    let mut config =
        inbound::Config::new(addr.ip().to_string(), addr.port(), Secret::new(password));
    config.backoff_max = Duration::from_millis(500);
    config
}

/// Receive until `matches` accepts an event (or fail after `within`).
async fn wait_for<T>(
    events: &mut patchbay::freeswitch::esl::inbound::LinkEvents,
    within: Duration,
    mut matches: impl FnMut(&LinkEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the expected link event in time")
            .expect("the link is still running");
        if let Some(found) = matches(&event) {
            return found;
        }
    }
}

#[tokio::test]
async fn inbound_subscribes_and_decodes_every_captured_event_kind() {
    let mut stream = Vec::new();
    for name in [
        "esl-inbound-call-json-internal-auth.txt",
        "esl-inbound-call.txt",
        "bridge-two-devices.txt",
        "gateway-states.txt",
    ] {
        for frame in capture_event_frames(name) {
            stream.extend_from_slice(&frame);
        }
    }
    let fake = FakeSwitch::start(
        "127.0.0.1:0",
        Script {
            password: "ClueCon".to_owned(),
            after_subscribe: stream,
            channels_json: r#"{"row_count":1,"rows":[{"uuid":"39304b84-2195-46a3-b7c0-ccd23cae187f","direction":"inbound","name":"sofia/external/sipp@127.0.0.1:5070","state":"CS_EXECUTE","callstate":"ACTIVE","cid_name":"sipp","cid_num":"sipp","dest":"9999"}]}"#.to_owned(),
            ..Script::default()
        },
    )
    .await;
    let journal = Journal::in_memory(chrono_tz::UTC);
    let (_stop_tx, stop_rx) = oneshot::channel::<()>();
    let (client, mut events) =
        inbound::Client::start(link_config(fake.addr, "ClueCon"), journal, async move {
            let _ = stop_rx.await;
        });

    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::LinkUp).then_some(())
    })
    .await;
    let channels = wait_for(&mut events, Duration::from_secs(5), |e| match e {
        LinkEvent::Snapshot { channels, .. } => Some(channels.clone()),
        _ => None,
    })
    .await;
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].dest, "9999");

    let mut kinds = Vec::new();
    let mut registrations = Vec::new();
    let mut gateway_states = Vec::new();
    let mut json_answer = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("events keep coming")
            .expect("link running");
        match event {
            LinkEvent::Channel(channel) => {
                if channel.kind == patchbay::freeswitch::esl::event::ChannelEventKind::Answer
                    && json_answer.is_none()
                {
                    json_answer = Some(channel.clone());
                }
                kinds.push(channel.kind);
            }
            LinkEvent::DeviceRegistered(registration) => registrations.push(registration),
            LinkEvent::GatewayState {
                gateway,
                state,
                status,
                phrase,
            } => {
                gateway_states.push((gateway, state, status, phrase));
                if state == GatewayState::Down {
                    break;
                }
            }
            _ => {}
        }
    }

    let subscription = fake
        .commands()
        .into_iter()
        .find(|c| c.starts_with("event "))
        .expect("a subscription");
    assert_eq!(
        subscription,
        "event json CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER \
         CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_DESTROY \
         CHANNEL_ORIGINATE DTMF BACKGROUND_JOB HEARTBEAT CUSTOM sofia::register sofia::unregister \
         sofia::expire sofia::gateway_state"
    );

    // The json capture's call, decoded from raw UTF-8 JSON.
    let answer = json_answer.expect("a CHANNEL_ANSWER");
    use patchbay::freeswitch::esl::event::ChannelField;
    assert_eq!(answer.get(ChannelField::AnswerState), Some("answered"));
    assert!(answer
        .get(ChannelField::Name)
        .unwrap_or_default()
        .starts_with("sofia/internal/"));
    use patchbay::freeswitch::esl::event::ChannelEventKind as Kind;
    for kind in [
        Kind::Create,
        Kind::Answer,
        Kind::Hangup,
        Kind::HangupComplete,
        Kind::Destroy,
        Kind::Bridge,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} decoded");
    }
    // Both devices of the bridge capture registered, from URL-encoded plain events.
    let users: Vec<_> = registrations.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(users, vec!["1000", "1001"]);
    assert_eq!(registrations[0].realm, "127.0.0.1");
    assert_eq!(registrations[0].expires, Some(600));
    assert_eq!(
        registrations[0].contact.as_deref(),
        Some("\"\" <sip:1000@127.0.0.1:5091>")
    );
    // Every gateway_state of the capture, in order, as the capture's own State: lines say.
    let raw = String::from_utf8_lossy(&read_fixture("gateway-states.txt")).into_owned();
    let expected: Vec<&str> = raw
        .lines()
        .filter_map(|line| line.strip_prefix("State: "))
        .collect();
    let got: Vec<&str> = gateway_states
        .iter()
        .map(|(_, s, _, _)| s.as_str())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(gateway_states[1].2, Some(200));
    let failed = gateway_states
        .iter()
        .find(|(_, s, _, _)| *s == GatewayState::Failed)
        .unwrap();
    assert_eq!(failed.3.as_deref(), Some("Service Unavailable"));
    assert!(gateway_states
        .iter()
        .all(|(gateway, _, _, _)| gateway == "did1"));
    assert_eq!(client.dropped_events(), 0);
}

#[tokio::test]
async fn bgapi_results_are_matched_by_job_uuid_not_by_order() {
    let fake = FakeSwitch::start(
        "127.0.0.1:0",
        Script {
            password: "ClueCon".to_owned(),
            channels_json: "{\"row_count\":0}".to_owned(),
            ..Script::default()
        },
    )
    .await;
    let (client, mut events) = inbound::Client::start(
        link_config(fake.addr, "ClueCon"),
        Journal::in_memory(chrono_tz::UTC),
        std::future::pending(),
    );
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::LinkUp).then_some(())
    })
    .await;
    // Keep the consumer draining so the link never stalls.
    tokio::spawn(async move { while events.recv().await.is_some() {} });

    let slow = client.bgapi("originate", "user/1000 slow");
    let fast = client.bgapi("originate", "user/1001 fast");
    let (slow, fast) = tokio::join!(slow, fast);
    assert_eq!(slow.unwrap(), "+OK result of originate user/1000 slow\n");
    assert_eq!(fast.unwrap(), "+OK result of originate user/1001 fast\n");
    assert_eq!(client.api("status", "").await.unwrap(), "output of status");
    assert!(client.bgapi("originate", "a\nexit").await.is_err());
}

#[tokio::test]
async fn killed_switch_is_reconnected_within_two_seconds_with_one_journal_line() {
    let script = Script {
        password: "ClueCon".to_owned(),
        channels_json: "{\"row_count\":0}".to_owned(),
        heartbeat_every: Some(Duration::from_millis(100)),
        ..Script::default()
    };
    let fake = FakeSwitch::start("127.0.0.1:0", script.clone()).await;
    let addr = fake.addr;
    let journal = Journal::in_memory(chrono_tz::UTC);
    let (client, mut events) = inbound::Client::start(
        link_config(addr, "ClueCon"),
        journal.clone(),
        std::future::pending(),
    );
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::Heartbeat { .. }).then_some(())
    })
    .await;

    fake.kill();
    drop(fake);
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::LinkDown { .. }).then_some(())
    })
    .await;
    assert!(!client.is_connected());
    assert!(matches!(
        client.api("status", "").await,
        Err(ref error) if error.is_connection_error()
    ));
    // Several retries fail meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let _restarted = FakeSwitch::start(&addr.to_string(), script).await;
    let back_at = std::time::Instant::now();
    let down_for = wait_for(&mut events, Duration::from_secs(3), |e| match e {
        LinkEvent::LinkRestored { down_for } => Some(*down_for),
        _ => None,
    })
    .await;
    assert!(
        back_at.elapsed() < Duration::from_secs(2),
        "reconnected {:?} after the switch came back",
        back_at.elapsed()
    );
    assert!(down_for >= Duration::from_millis(1500), "{down_for:?}");
    // Events flow again on the new connection.
    wait_for(&mut events, Duration::from_secs(3), |e| {
        matches!(e, LinkEvent::Heartbeat { .. }).then_some(())
    })
    .await;

    let lines = journal.recent();
    let down: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("FreeSWITCH link down"))
        .collect();
    let back: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("FreeSWITCH link back after"))
        .collect();
    assert_eq!(
        down.len(),
        1,
        "one line for the outage, not one per retry: {lines:?}"
    );
    assert_eq!(back.len(), 1, "{lines:?}");
    let seconds: f64 = back[0]
        .split("back after ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(" s").parse().ok())
        .expect("a duration in seconds");
    assert!(
        (seconds - down_for.as_secs_f64()).abs() < 0.11,
        "{seconds} vs {down_for:?}"
    );
}

#[tokio::test]
async fn a_silent_link_is_declared_dead_by_the_heartbeat_watchdog() {
    let silent = Script {
        password: "ClueCon".to_owned(),
        channels_json: "{\"row_count\":0}".to_owned(),
        ..Script::default()
    };
    let fake = FakeSwitch::start("127.0.0.1:0", silent).await;
    let mut config = link_config(fake.addr, "ClueCon");
    config.heartbeat_timeout = Duration::from_millis(400);
    let journal = Journal::in_memory(chrono_tz::UTC);
    let (_client, mut events) =
        inbound::Client::start(config, journal.clone(), std::future::pending());
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::LinkUp).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let reason = wait_for(&mut events, Duration::from_secs(3), |e| match e {
        LinkEvent::LinkDown { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("HEARTBEAT"), "{reason}");
    assert!(started.elapsed() < Duration::from_millis(2500));
    // The socket was still open: the watchdog, not the peer, ended it; then it reconnects.
    wait_for(&mut events, Duration::from_secs(3), |e| {
        matches!(e, LinkEvent::LinkRestored { .. }).then_some(())
    })
    .await;

    // A link with regular heartbeats stays up well past the watchdog interval.
    let lively = FakeSwitch::start(
        "127.0.0.1:0",
        Script {
            password: "ClueCon".to_owned(),
            channels_json: "{\"row_count\":0}".to_owned(),
            heartbeat_every: Some(Duration::from_millis(100)),
            ..Script::default()
        },
    )
    .await;
    let mut config = link_config(lively.addr, "ClueCon");
    config.heartbeat_timeout = Duration::from_millis(1000);
    let (_client, mut events) = inbound::Client::start(
        config,
        Journal::in_memory(chrono_tz::UTC),
        std::future::pending(),
    );
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
        assert!(!matches!(event, LinkEvent::LinkDown { .. }), "{event:?}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_reported_once_and_never_shown() {
    let fake = FakeSwitch::start(
        "127.0.0.1:0",
        Script {
            password: "right-one".to_owned(),
            ..Script::default()
        },
    )
    .await;
    let journal = Journal::in_memory(chrono_tz::UTC);
    let (_client, mut events) = inbound::Client::start(
        link_config(fake.addr, "wrong-secret-pw"),
        journal.clone(),
        std::future::pending(),
    );
    let reason = wait_for(&mut events, Duration::from_secs(5), |e| match e {
        LinkEvent::LinkDown { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!reason.contains("wrong-secret-pw"), "{reason}");
    let lines = journal.recent();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("FreeSWITCH link down"));
    assert!(!lines[0].contains("wrong-secret-pw"));
    // It keeps trying (several auth attempts reached the switch).
    let attempts = fake
        .commands()
        .iter()
        .filter(|c| c.starts_with("auth"))
        .count();
    assert!(attempts >= 2, "{attempts}");
}

// ---------------------------------------------------------------------------------------------
// Against the FreeSWITCH simulator (src/sim)
// ---------------------------------------------------------------------------------------------

use patchbay::sim::{self, Sim};

#[tokio::test]
async fn simulator_killed_and_restarted_link_is_back_within_two_seconds() {
    let sim = Sim::start(sim::Config {
        heartbeat: Duration::from_millis(200),
        ..sim::Config::default()
    })
    .await
    .expect("simulator");
    let addr = sim.esl_addr();
    let journal = Journal::in_memory(chrono_tz::UTC);
    let (client, mut events) = inbound::Client::start(
        link_config(addr, "ClueCon"),
        journal.clone(),
        std::future::pending(),
    );
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::Heartbeat { .. }).then_some(())
    })
    .await;
    assert!(client.bgapi("status", "").await.is_ok());

    sim.kill();
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::LinkDown { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sim.restart().await.expect("restart on the same port");
    let back_at = std::time::Instant::now();
    let down_for = wait_for(&mut events, Duration::from_secs(3), |e| match e {
        LinkEvent::LinkRestored { down_for } => Some(*down_for),
        _ => None,
    })
    .await;
    assert!(
        back_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        back_at.elapsed()
    );
    wait_for(&mut events, Duration::from_secs(3), |e| {
        matches!(e, LinkEvent::Heartbeat { .. }).then_some(())
    })
    .await;
    // Resubscribed: the restarted simulator saw a fresh `event json ...` and bgapi works again.
    let output = client
        .bgapi("status", "")
        .await
        .expect("bgapi after reconnect");
    assert!(!output.is_empty());
    let lines = journal.recent();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("FreeSWITCH link down"))
            .count(),
        1,
        "{lines:?}"
    );
    let back: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("link back after"))
        .collect();
    assert_eq!(back.len(), 1, "{lines:?}");
    assert!(back[0].ends_with(&format!("{:.1} s", down_for.as_secs_f64())));
}

#[tokio::test]
async fn simulated_inbound_call_reaches_the_outbound_socket_and_each_app_completes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket_addr = listener.local_addr().unwrap();
    let (report_tx, mut report_rx) = mpsc::channel(1);
    let server = tokio::spawn(outbound::serve_with(
        listener,
        outbound::Config {
            linger_secs: Some(1),
            ..outbound::Config::default()
        },
        move |session: outbound::Session| {
            let report_tx = report_tx.clone();
            async move {
                let call = session.control;
                let answer = call.answer().await;
                let playback = call.playback("tone_stream://%(1000,0,440)").await;
                let digits = call
                    .get_digits(&DigitsRequest {
                        min: 1,
                        max: 1,
                        timeout: Duration::from_secs(5),
                        terminators: "#".to_owned(),
                        prompt: None,
                    })
                    .await;
                let hangup = call.hangup("NORMAL_CLEARING").await;
                let _ = report_tx
                    .send((session.channel, answer, playback, digits, hangup))
                    .await;
            }
        },
        std::future::pending(),
    ));
    let sim = Sim::start(sim::Config {
        time_scale: 0.01,
        static_socket: Some(socket_addr.to_string()),
        ..sim::Config::default()
    })
    .await
    .expect("simulator");
    let handle = sim.place_call(sim::scenario::Call {
        from: "+15145550100".to_owned(),
        caller_name: "Marie <Dubois> & \"co\"".to_owned(),
        to: "+15145550199".to_owned(),
        dtmf: "7".to_owned(),
        ..sim::scenario::Call::default()
    });
    let (channel, answer, playback, digits, hangup) =
        tokio::time::timeout(Duration::from_secs(10), report_rx.recv())
            .await
            .expect("the flow ran")
            .expect("a report");
    let summary = tokio::time::timeout(Duration::from_secs(10), handle.finished())
        .await
        .expect("the call ended")
        .expect("a summary");
    server.abort();

    assert_eq!(channel.uuid, summary.uuid);
    assert_eq!(channel.caller_id_number.as_deref(), Some("+15145550100"));
    assert_eq!(
        channel.caller_id_name.as_deref(),
        Some("Marie <Dubois> & \"co\"")
    );
    assert_eq!(answer, Ok(()));
    assert_eq!(playback, Ok(PlaybackOutcome::Played));
    assert_eq!(digits, Ok(Some("7".to_owned())));
    assert_eq!(hangup, Ok(()));
    assert!(summary.answered);
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
    let apps: Vec<&str> = summary
        .apps
        .iter()
        .map(|(app, _, _)| app.as_str())
        .collect();
    assert_eq!(
        apps,
        vec!["answer", "playback", "play_and_get_digits", "hangup"]
    );
}

#[tokio::test]
async fn garbage_on_the_inbound_link_drops_the_connection_and_it_reconnects() {
    let fake = FakeSwitch::start(
        "127.0.0.1:0",
        Script {
            password: "ClueCon".to_owned(),
            channels_json: "{\"row_count\":0}".to_owned(),
            // A valid event, then bytes that are no ESL frame at all.
            after_subscribe: [
                heartbeat(),
                b"\xff\xfe garbage without a colon\n\n".to_vec(),
            ]
            .concat(),
            ..Script::default()
        },
    )
    .await;
    let (_client, mut events) = inbound::Client::start(
        link_config(fake.addr, "ClueCon"),
        Journal::in_memory(chrono_tz::UTC),
        std::future::pending(),
    );
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::Heartbeat { .. }).then_some(())
    })
    .await;
    let reason = wait_for(&mut events, Duration::from_secs(5), |e| match e {
        LinkEvent::LinkDown { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("esl frame"), "{reason}");
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, LinkEvent::LinkRestored { .. }).then_some(())
    })
    .await;
}

#[tokio::test]
async fn inbound_frames_split_at_every_byte_decode_the_same() {
    let fake = FakeSwitch::start(
        "127.0.0.1:0",
        Script {
            password: "ClueCon".to_owned(),
            channels_json: "{\"row_count\":0}".to_owned(),
            after_subscribe: capture_event_frames("gateway-states.txt").concat(),
            split_every_byte: true,
            ..Script::default()
        },
    )
    .await;
    let (_client, mut events) = inbound::Client::start(
        link_config(fake.addr, "ClueCon"),
        Journal::in_memory(chrono_tz::UTC),
        std::future::pending(),
    );
    let mut states = Vec::new();
    while states.last() != Some(&GatewayState::Down) {
        let state = wait_for(&mut events, Duration::from_secs(20), |e| match e {
            LinkEvent::GatewayState { state, .. } => Some(*state),
            LinkEvent::LinkDown { reason } => panic!("link dropped: {reason}"),
            _ => None,
        })
        .await;
        states.push(state);
    }
    assert_eq!(states.len(), 17);
    assert_eq!(states[2], GatewayState::Reged);
}

#[tokio::test]
async fn a_call_flow_that_panics_closes_its_socket_so_freeswitch_hangs_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(outbound::serve_with(
        listener,
        fast_config("fixture_digit"),
        |session: outbound::Session| async move {
            assert!(
                session.channel.uuid.is_empty(),
                "a deliberate bug in the call flow"
            );
        },
        std::future::pending(),
    ));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // connect, myevents and linger as in the capture, then nothing more from us.
    for (direction, block) in transcript("outbound-socket-session.txt")
        .into_iter()
        .take(6)
    {
        match direction {
            Direction::AppToFs => {
                let mut actual = vec![0; block.len()];
                stream.read_exact(&mut actual).await.unwrap();
                assert_eq!(actual, block);
            }
            Direction::FsToApp => stream.write_all(&block).await.unwrap(),
        }
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the socket is closed after the flow panicked")
        .expect("a clean close");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // The server itself is still accepting calls.
    let _again = TcpStream::connect(addr).await.expect("still listening");
    server.abort();
}

fn device(extension: &str, behaviour: sim::scenario::Behaviour) -> sim::scenario::Device {
    sim::scenario::Device {
        answer_after: 1.0,
        hangup_after: Some(2.0),
        ..sim::scenario::Device::new(extension, &format!("pw{extension}"), behaviour)
    }
}

#[tokio::test]
async fn bridge_through_the_simulator_reports_who_answered_or_why_nobody_did() {
    use patchbay::calls::{BridgeOutcome, BridgeRequest};
    use sim::scenario::Behaviour;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket_addr = listener.local_addr().unwrap();
    let (report_tx, mut report_rx) = mpsc::channel(2);
    let server = tokio::spawn(outbound::serve_with(
        listener,
        outbound::Config {
            linger_secs: Some(1),
            ..outbound::Config::default()
        },
        move |session: outbound::Session| {
            let report_tx = report_tx.clone();
            async move {
                let call = session.control;
                let endpoints = match session.channel.destination_number.as_deref() {
                    Some("+15145550199") => vec![
                        "user/1000@127.0.0.1".to_owned(),
                        "user/1001@127.0.0.1".to_owned(),
                    ],
                    _ => vec!["user/1002@127.0.0.1".to_owned()],
                };
                let outcome = call
                    .bridge(&BridgeRequest {
                        endpoints,
                        leg_variables: Vec::new(),
                        timeout: Duration::from_secs(5),
                        variables: vec![("ignore_early_media".to_owned(), "true".to_owned())],
                    })
                    .await;
                let _ = call.hangup("NORMAL_CLEARING").await;
                let _ = report_tx.send(outcome).await;
            }
        },
        std::future::pending(),
    ));
    let scenario = sim::Scenario {
        devices: vec![
            device("1000", Behaviour::NoAnswer),
            device("1001", Behaviour::Answer),
            device("1002", Behaviour::Busy),
        ],
        ..sim::Scenario::default()
    };
    let sim = Sim::start_with(
        sim::Config {
            time_scale: 0.01,
            static_socket: Some(socket_addr.to_string()),
            ..sim::Config::default()
        },
        scenario,
    )
    .await
    .expect("simulator");
    sim.run_scenario();
    let registered = async {
        while !(sim.is_registered("1000") && sim.is_registered("1001") && sim.is_registered("1002"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), registered)
        .await
        .expect("devices registered");

    let answered = sim.place_call(sim::scenario::Call {
        from: "+15145550100".to_owned(),
        to: "+15145550199".to_owned(),
        ..sim::scenario::Call::default()
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), report_rx.recv())
        .await
        .expect("the bridge ended")
        .expect("an outcome")
        .expect("no control error");
    let summary = answered.finished().await.expect("summary");
    match outcome {
        BridgeOutcome::Answered { other_uuid, .. } => {
            assert!(other_uuid.is_some_and(|uuid| uuid != summary.uuid));
        }
        other => panic!("expected an answer, got {other:?}"),
    }
    assert!(summary.bridged_to.is_some());
    let apps: Vec<(&str, &str)> = summary
        .apps
        .iter()
        .map(|(app, arg, _)| (app.as_str(), arg.as_str()))
        .collect();
    assert_eq!(apps[0], ("set", "continue_on_fail=true"));
    assert_eq!(apps[1], ("set", "hangup_after_bridge=false"));
    assert_eq!(
        apps[2],
        (
            "bridge",
            "{ignore_early_media=true}[leg_timeout=5]user/1000@127.0.0.1,[leg_timeout=5]user/1001@127.0.0.1"
        )
    );

    let busy = sim.place_call(sim::scenario::Call {
        from: "+15145550100".to_owned(),
        to: "+15145550198".to_owned(),
        ..sim::scenario::Call::default()
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), report_rx.recv())
        .await
        .expect("the bridge ended")
        .expect("an outcome")
        .expect("no control error: continue_on_fail keeps the caller");
    assert_eq!(
        outcome,
        BridgeOutcome::Failed {
            cause: "USER_BUSY".to_owned()
        }
    );
    let _ = busy.finished().await;
    server.abort();
}
