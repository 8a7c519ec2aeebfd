//! Integration tests: whole calls, end to end. The daemon (xml endpoint, outbound socket
//! server, inbound ESL link, phone repo, spool) runs against the FreeSWITCH simulator over
//! real TCP and HTTP on loopback; the assertions are on what a person would notice: which
//! phones rang, what was recorded, the journal line, the mail and the calendar entry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use patchbay::daemon::{Daemon, Handles};
use patchbay::settings::{Secret, Settings};
use patchbay::sim::scenario::{Call, Scenario};
use patchbay::sim::{self, Sim};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// Makes a phone repo with one commit: a contact, a greeting, a rule file of the person's.
fn phone_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("phone");
    std::fs::create_dir_all(repo.join("contacts")).unwrap();
    std::fs::create_dir_all(repo.join("greetings")).unwrap();
    std::fs::create_dir_all(repo.join("rules")).unwrap();
    std::fs::write(
        repo.join("contacts/marie.vcf"),
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:marie\r\nFN:Marie Dubois\r\nTEL;TYPE=cell:+41 44 123 45 67\r\nLANG:fr\r\nEND:VCARD\r\n",
    )
    .unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(repo.join("greetings/wave.wav"), spec).unwrap();
    for i in 0..8000 {
        wav.write_sample(((i as f32 * 0.05).sin() * 3000.0) as i16)
            .unwrap();
    }
    wav.finalize().unwrap();
    std::fs::write(repo.join("rules/50-mine.rhai"), "// my rules\n").unwrap();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "my phone"]);
    repo
}

fn settings(dir: &Path, voicemail_delay: u32) -> Settings {
    let text = format!(
        r#"{{
            "device_count": 2,
            "device_password": "pw",
            "voicemail_delay": {voicemail_delay},
            "caller_id": {{ "EN": "John Doe", "FR": "Jean Untel" }},
            "dids": [{{ "gateway_name": "did1", "pstn_number": "+33123456789", "username": "u",
                        "password": "carrier-secret", "proxy": "sip.example.net", "realm": "example.net",
                        "domain": "example.net", "country": "FR" }}],
            "timezone": "Europe/Paris",
            "default_region": "FR",
            "recordings_dir": "{dir}/recordings",
            "greetings_dir": "{dir}/greetings",
            "journal": "{dir}/journal.log",
            "freeswitch": {{
                "esl": {{ "host": "127.0.0.1", "port": 1, "password": "ClueCon" }},
                "xml": {{ "listen": "127.0.0.1:0" }},
                "outbound": {{ "listen": "127.0.0.1:0" }},
                "sip_domain": "127.0.0.1"
            }},
            "repo": {{ "path": "{dir}/phone", "branch": "main", "poll_interval_ms": 100 }},
            "email": {{ "maildir": "{dir}/mail" }},
            "calendar": {{ "vdir": "{dir}/calendar" }},
            "spool": {{ "path": "{dir}/spool", "retry_initial_ms": 100 }}
        }}"#,
        dir = dir.display()
    );
    // On disk too, for `patchbay status --settings`.
    std::fs::write(dir.join("settings.json"), &text).unwrap();
    Settings::parse(&text, &dir.join("settings.json")).unwrap()
}

const SCENARIO: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 1.0
hangup_after = 3.0

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "no_answer"

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

struct Running {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    sim: Sim,
    handles: Handles,
    stop: Option<oneshot::Sender<()>>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(scenario: &str, voicemail_delay: u32) -> Running {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        phone_repo(&dir);
        let mut daemon = Daemon::bind(settings(&dir, voicemail_delay), None)
            .await
            .unwrap();
        let config = sim::Config {
            xml_url: Some(format!("http://{}/freeswitch/xml", daemon.xml_address())),
            time_scale: 1.0,
            heartbeat: Duration::from_secs(1),
            recordings_dir: Some(dir.join("recordings")),
            password: Secret::new("ClueCon"),
            ..sim::Config::default()
        };
        let sim = Sim::start_with(config, Scenario::parse(scenario, "test").unwrap())
            .await
            .unwrap();
        daemon.set_esl(sim.esl_addr());
        let handles = daemon.handles().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let daemon = tokio::spawn(daemon.run(async {
            let _ = stopped.await;
        }));
        // Real phones register whenever they like and FreeSWITCH keeps the registrations;
        // the simulator forgets them, so the link must be listening before they arrive.
        sim.log()
            .wait_for(WAIT, |e| matches!(e, sim::log::Entry::Command { line, .. } if line.starts_with("event json")))
            .await
            .expect("patchbay subscribed to events");
        sim.run_scenario();
        let running = Running {
            _dir: tmp,
            dir,
            sim,
            handles,
            stop: Some(stop),
            daemon,
        };
        // Phones refresh their registration; do it here until patchbay has seen both, so a
        // REGISTER that raced the event subscription under load does not fail the test.
        let deadline = tokio::time::Instant::now() + WAIT;
        while running.handles.registry.device_count() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for both devices; journal: {:#?}",
                running.handles.journal.recent()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            for (extension, password) in [("1000", "pw1000"), ("1001", "pw1001")] {
                let _ = running.sim.register(extension, password).await;
            }
        }
        running
            .wait_until("gateway up", || {
                !running.handles.registry.gateways_up().is_empty()
            })
            .await;
        running
    }

    async fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; journal: {:#?}",
                self.handles.journal.recent()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn journal_has(&self, needle: &str) -> bool {
        self.handles
            .journal
            .recent()
            .iter()
            .any(|line| line.contains(needle))
    }

    fn files(&self, folder: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join(folder))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.daemon).await;
        self.sim.stop();
    }
}

fn call_from(number: &str, name: &str, hangup_after: Option<f64>) -> Call {
    Call {
        from: number.to_owned(),
        caller_name: name.to_owned(),
        to: "+33123456789".to_owned(),
        gateway: Some("did1".to_owned()),
        at: 0.0,
        hangup_after,
        ..Call::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_calls_both_phones_ring_the_desk_answers() {
    let running = Running::start(SCENARIO, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", None))
        .finished()
        .await
        .unwrap();
    assert!(summary.answered, "{summary:?}");
    let bridge = summary
        .apps
        .iter()
        .find(|(app, _, _)| app == "bridge")
        .expect("a bridge was sent");
    assert!(
        bridge.1.contains("user/1000@127.0.0.1") && bridge.1.contains("user/1001@127.0.0.1"),
        "{bridge:?}"
    );
    let log = running.sim.log().entries();
    assert!(log
        .iter()
        .any(|e| matches!(e, sim::log::Entry::DeviceAnswered { device, .. } if device == "1000")));
    assert!(log
        .iter()
        .any(|e| matches!(e, sim::log::Entry::DeviceLostRace { device, .. } if device == "1001")));
    running
        .wait_until("the call's journal line", || {
            running.journal_has("Marie Dubois (+41 44 123 45 67) called your French number")
        })
        .await;
    let line = running
        .handles
        .journal
        .recent()
        .into_iter()
        .find(|line| line.contains("called your French number"))
        .unwrap();
    assert!(
        line.contains("rang extension 1000, extension 1001; answered on extension 1000"),
        "{line}"
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = std::fs::read_to_string(&running.files("calendar")[0]).unwrap();
    assert!(event.contains("SUMMARY:Call with Marie Dubois"), "{event}");
    // `patchbay status`, as the person runs it, sees the phones and the number.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["status", "--settings"])
        .arg(running.dir.join("settings.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Devices registered: 2"), "{text}");
    assert!(text.contains("did1") && text.contains(" up "), "{text}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answers_then_voicemail_is_recorded_mailed_and_logged() {
    let scenario = SCENARIO.replace("behaviour = \"answer\"", "behaviour = \"no_answer\"");
    let running = Running::start(&scenario, 1).await;
    let summary = running
        .sim
        .place_call(call_from("+4915112345678", "", Some(6.0)))
        .finished()
        .await
        .unwrap();
    let apps: Vec<&str> = summary
        .apps
        .iter()
        .map(|(app, _, _)| app.as_str())
        .filter(|app| *app != "set")
        .collect();
    assert!(
        apps.starts_with(&["bridge", "answer", "playback", "playback"]),
        "{:?}",
        summary.apps
    );
    assert!(apps.contains(&"record"), "{apps:?}");
    let greeting = &summary
        .apps
        .iter()
        .find(|(app, _, _)| app == "playback")
        .unwrap()
        .1;
    assert!(
        greeting.starts_with(&running.dir.join("greetings").display().to_string()),
        "greeting played from the export: {greeting}"
    );
    running
        .wait_until("the voicemail's journal line", || {
            running.journal_has("voicemail 0:0")
        })
        .await;
    running
        .wait_until("the voicemail mail", || {
            !running.files("mail/new").is_empty()
        })
        .await;
    let mail = std::fs::read_to_string(&running.files("mail/new")[0]).unwrap();
    assert!(mail.contains("audio/wav"), "the recording is attached");
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = std::fs::read_to_string(&running.files("calendar")[0]).unwrap();
    assert!(event.contains("SUMMARY:Voicemail from +49"), "{event}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_while_it_rings_is_a_missed_call() {
    let scenario = SCENARIO.replace("behaviour = \"answer\"", "behaviour = \"no_answer\"");
    let running = Running::start(&scenario, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+4915112345678", "", Some(1.0)))
        .finished()
        .await
        .unwrap();
    assert!(!summary.answered);
    assert!(summary.recordings.is_empty());
    running
        .wait_until("the missed call's journal line", || {
            running.journal_has("the caller hung up while it rang")
        })
        .await;
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = std::fs::read_to_string(&running.files("calendar")[0]).unwrap();
    assert!(event.contains("SUMMARY:Missed call from +49"), "{event}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_calls_out_through_the_did_of_the_destination_country_with_its_caller_id() {
    let running = Running::start(SCENARIO, 10).await;
    let call = Call {
        from: "1000".to_owned(),
        to: "0612345678".to_owned(),
        context: Some("default".to_owned()),
        hangup_after: Some(3.0),
        ..Call::default()
    };
    let summary = running.sim.place_call(call).finished().await.unwrap();
    let bridge = summary
        .apps
        .iter()
        .find(|(app, _, _)| app == "bridge")
        .expect("a bridge was sent");
    assert!(
        bridge.1.contains("sofia/gateway/did1/+33612345678"),
        "through the French DID: {bridge:?}"
    );
    assert!(
        bridge
            .1
            .contains("origination_caller_id_number=+33123456789"),
        "the DID's number as caller ID: {bridge:?}"
    );
    running
        .wait_until("the outgoing call's journal line", || {
            running
                .journal_has("extension 1000 called +33 6 12 34 56 78; through your French number")
        })
        .await;
    running.stop().await;
}
