//! The end-to-end harness shared by the call tests and the call-setup benchmark: a phone
//! repo, settings, the daemon and the FreeSWITCH simulator wired together over loopback.
//! The benchmark includes this file by path, so it depends on nothing else in tests/it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use patchbay::daemon::{Daemon, Handles};
use patchbay::settings::{Secret, Settings};
use patchbay::sim::scenario::{Call, Scenario};
use patchbay::sim::{self, Sim};
use tokio::sync::oneshot;

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Makes a phone repo with one commit: a contact, a greeting, and `rules` as the person's
/// rule file.
pub(crate) fn phone_repo(dir: &Path, rules: &str) -> PathBuf {
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
    // The tests run at any hour: from 22:00 to 07:00 the default night filter would send
    // every caller from abroad straight to voicemail, and the call tests would depend on
    // the time of day.
    let rules = format!("remove_rule(\"night_filter\");\n{rules}");
    std::fs::write(repo.join("rules/50-mine.rhai"), rules).unwrap();
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

pub(crate) fn settings(dir: &Path, voicemail_delay: u32) -> Settings {
    let text = format!(
        r#"{{
            "device_count": 2,
            "device_password": "pw",
            "voicemail_delay": {voicemail_delay},
            "reoffer_seconds": 4,
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

pub(crate) struct Running {
    _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) sim: Sim,
    pub(crate) handles: Handles,
    stop: Option<oneshot::Sender<()>>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub(crate) async fn start(scenario: &str, voicemail_delay: u32) -> Running {
        Self::start_with_rules(scenario, voicemail_delay, "// my rules\n").await
    }

    /// As [`Running::start`], with `rules` as the person's rule file in the phone repo.
    pub(crate) async fn start_with_rules(
        scenario: &str,
        voicemail_delay: u32,
        rules: &str,
    ) -> Running {
        Self::start_with_settings(scenario, voicemail_delay, rules, |_| {}).await
    }

    /// As [`Running::start_with_rules`], with the settings changed by `adjust` first.
    #[allow(dead_code)]
    pub(crate) async fn start_with_settings(
        scenario: &str,
        voicemail_delay: u32,
        rules: &str,
        adjust: impl FnOnce(&mut Settings),
    ) -> Running {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        phone_repo(&dir, rules);
        let mut settings = settings(&dir, voicemail_delay);
        adjust(&mut settings);
        let mut daemon = Daemon::bind(settings, None).await.unwrap();
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

    pub(crate) async fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
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

    pub(crate) fn journal_has(&self, needle: &str) -> bool {
        self.handles
            .journal
            .recent()
            .iter()
            .any(|line| line.contains(needle))
    }

    pub(crate) fn files(&self, folder: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join(folder))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.daemon).await;
        self.sim.stop();
    }
}

pub(crate) fn call_from(number: &str, name: &str, hangup_after: Option<f64>) -> Call {
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
