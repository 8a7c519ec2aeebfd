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
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/freeswitch")
        .join(name)
}

/// The fixtures live next to the worktrees; fall back to the absolute path for other layouts.
pub fn read_fixture(name: &str) -> Vec<u8> {
    let local = fixture(name);
    std::fs::read(&local)
        .or_else(|_| std::fs::read(PathBuf::from("/work/shared/fixtures/freeswitch").join(name)))
        .unwrap_or_else(|error| panic!("{}: {error}", local.display()))
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
