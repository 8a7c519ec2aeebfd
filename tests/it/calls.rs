//! Integration tests: whole calls, end to end. The daemon (xml endpoint, outbound socket
//! server, inbound ESL link, phone repo, spool) runs against the FreeSWITCH simulator over
//! real TCP and HTTP on loopback; the assertions are on what a person would notice: which
//! phones rang, what was recorded, the journal line, the mail and the calendar entry.

use patchbay::sim::{self, scenario::Call};

use crate::running::{call_from, Running};

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
        .place_call(call_from("+4915112345678", "", Some(20.0)))
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
            running.journal_has("; voicemail 0:")
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

/// The caller gives up the moment FreeSWITCH hands the call to patchbay, before patchbay
/// has set up its socket (`myevents`, `linger`): still a missed call, with its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_as_the_call_reaches_patchbay_is_still_a_missed_call() {
    let running = Running::start(SCENARIO, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+4915112345678", "", Some(0.0)))
        .finished()
        .await
        .unwrap();
    assert!(!summary.answered);
    running
        .wait_until("the missed call's journal line", || {
            running.journal_has("+49 1511 2345678 called your French number")
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

/// The person's rules for the load test: the caller ID name says how the call should go.
/// "busy" is switched off: one person cannot take 200 calls at once, and with it every call
/// after the first answered one would go straight to voicemail.
const LOAD_RULES: &str = r#"
remove_rule("busy_when_on_a_call");
rule(#{
    id: "load_to_voicemail",
    rule_any: #{ caller_id_name: ["^Voicemail ", "^Missed "] },
    properties: #{ bridge_to: ["1001"] },
});
"#;

const LOAD_SCENARIO: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 0.3
hangup_after = 0.5

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "no_answer"

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

/// How a load-test call should end, and how its calendar entry is titled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expected {
    /// Both phones ring, the desk answers after 0.3 s and hangs up 0.5 s later.
    Answered,
    /// Only the phone that never answers rings; after 1 s voicemail records 5 s of silence.
    Voicemail,
    /// Only the phone that never answers rings; the caller gives up after 0.5 s.
    Missed,
}

impl Expected {
    fn summary(self) -> &'static str {
        match self {
            Expected::Answered => "SUMMARY:Call with",
            Expected::Voicemail => "SUMMARY:Voicemail from",
            Expected::Missed => "SUMMARY:Missed call from",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_each_end_with_exactly_one_record() {
    const CALLS: usize = 200;
    let running = Running::start_with_rules(LOAD_SCENARIO, 1, LOAD_RULES).await;
    let mut calls = Vec::with_capacity(CALLS);
    for index in 0..CALLS {
        let (expected, name, hangup_after) = match index % 3 {
            0 => (Expected::Answered, "Answers", None),
            1 => (Expected::Voicemail, "Voicemail", None),
            _ => (Expected::Missed, "Missed", Some(0.5)),
        };
        // Zero-padded: no caller's name is the start of another's.
        let name = format!("{name} {index:03}");
        let number = format!("+4930123{index:04}");
        let handle = running
            .sim
            .place_call(call_from(&number, &name, hangup_after));
        calls.push((expected, name, handle));
        // 200 calls in two seconds.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let mut placed = Vec::with_capacity(CALLS);
    for (expected, name, handle) in calls {
        let summary = tokio::time::timeout(std::time::Duration::from_secs(60), handle.finished())
            .await
            .unwrap_or_else(|_| panic!("{name}'s call never ended"))
            .unwrap();
        match expected {
            Expected::Answered => assert!(summary.answered, "{name}: {summary:?}"),
            Expected::Voicemail => {
                assert_eq!(summary.recordings.len(), 1, "{name}: {summary:?}")
            }
            Expected::Missed => assert!(
                !summary.answered && summary.recordings.is_empty(),
                "{name}: {summary:?}"
            ),
        }
        placed.push((expected, name, summary));
    }

    running
        .wait_until("every call's session to finish", || {
            running.handles.registry.status().calls.is_empty()
        })
        .await;
    running
        .wait_until("the spool to drain", || {
            running
                .handles
                .spool
                .pending()
                .is_ok_and(|jobs| jobs.is_empty())
        })
        .await;
    assert_eq!(running.handles.spool.dead().unwrap(), Vec::<String>::new());

    let journal = std::fs::read_to_string(running.dir.join("journal.log")).unwrap();
    let mut calendar: Vec<String> = running
        .files("calendar")
        .iter()
        .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".ics"))
        .collect();
    calendar.sort();
    let mut expected_calendar = Vec::with_capacity(CALLS);
    for (expected, name, summary) in &placed {
        let caller = format!("{name} (");
        let lines: Vec<&str> = journal
            .lines()
            .filter(|line| line.contains(&caller))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{name}: one journal line: {lines:#?}; the call: {summary:?}"
        );
        let file = format!("patchbay-call-{}.ics", summary.uuid);
        let event = std::fs::read_to_string(running.dir.join("calendar").join(&file))
            .unwrap_or_else(|error| panic!("{name}: calendar entry {file}: {error}"));
        assert!(event.contains(expected.summary()), "{name}: {event}");
        expected_calendar.push(file);
    }
    expected_calendar.sort();
    assert_eq!(calendar, expected_calendar, "one calendar entry per call");
    running.stop().await;
}

/// The desk answers, then its media stops (wifi gone) while the caller is still there.
const DROPPING_DESK: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 1.0
hangup_after = 3.0
drop_after = 2.0
drop_cause = "MEDIA_TIMEOUT"

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "no_answer"

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

/// The apps patchbay ran on the caller's channel, without the `set`s.
fn apps_run(summary: &sim::CallSummary) -> Vec<&str> {
    summary
        .apps
        .iter()
        .map(|(app, _, _)| app.as_str())
        .filter(|app| *app != "set")
        .collect()
}

/// The one calendar entry, with iCalendar's line folding undone.
fn unfolded_event(running: &Running) -> String {
    let files = running.files("calendar");
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("\r\n ", "")
}

fn journal_line(running: &Running, needle: &str) -> String {
    running
        .handles
        .journal
        .recent()
        .into_iter()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no journal line with {needle:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_drops_on_the_desk_rings_again_and_the_desk_picks_up_again() {
    let running = Running::start(DROPPING_DESK, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", Some(60.0)))
        .finished()
        .await
        .unwrap();
    // The caller was never hung up on: the devices rang a second time, the desk answered
    // again, and patchbay hung up once the desk did.
    assert_eq!(
        apps_run(&summary),
        ["bridge", "bridge", "hangup"],
        "{:?}",
        summary.apps
    );
    assert!(summary
        .apps
        .iter()
        .any(|(app, arg, _)| app == "set" && arg == "hangup_after_bridge=false"));
    assert!(summary
        .apps
        .iter()
        .any(|(app, arg, _)| app == "set" && arg.starts_with("ringback=")));
    assert!(summary.recordings.is_empty(), "no voicemail");
    assert_eq!(summary.hangup_cause, "NORMAL_CLEARING");
    let log = running.sim.log().entries();
    assert!(log.iter().any(|e| matches!(e, sim::log::Entry::DeviceDropped { device, cause, .. } if device == "1000" && cause == "MEDIA_TIMEOUT")));
    let answers = log
        .iter()
        .filter(|e| matches!(e, sim::log::Entry::DeviceAnswered { device, .. } if device == "1000"))
        .count();
    assert_eq!(answers, 2, "the desk answered twice");
    let rang_1001 = log
        .iter()
        .filter(|e| matches!(e, sim::log::Entry::DeviceRang { device, .. } if device == "1001"))
        .count();
    assert_eq!(rang_1001, 2, "every device rang again");
    running
        .wait_until("the call's journal line", || {
            running.journal_has("answered again on extension 1000")
        })
        .await;
    let line = journal_line(&running, "answered again on extension 1000");
    assert!(
        line.contains(
            "answered on extension 1000; the call dropped on extension 1000 (media timeout); \
             rang extension 1000, extension 1001 again; answered again on extension 1000"
        ),
        "{line}"
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = unfolded_event(&running);
    assert!(event.contains("SUMMARY:Call with Marie Dubois"), "{event}");
    assert!(
        event.contains("Call dropped on: extension 1000 (media timeout)"),
        "the record tells of the drop: {event}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_drops_and_nobody_picks_up_again_goes_to_voicemail() {
    let scenario = DROPPING_DESK.replace(
        "drop_cause = \"MEDIA_TIMEOUT\"",
        "drop_cause = \"NORMAL_TEMPORARY_FAILURE\"\nafter_drop = \"no_answer\"",
    );
    let running = Running::start(&scenario, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+4915112345678", "", Some(60.0)))
        .finished()
        .await
        .unwrap();
    let apps = apps_run(&summary);
    assert!(
        apps.starts_with(&["bridge", "bridge", "answer", "playback", "playback", "record"]),
        "{:?}",
        summary.apps
    );
    assert_eq!(summary.recordings.len(), 1, "a voicemail was recorded");
    let log = running.sim.log().entries();
    assert!(log.iter().any(|e| matches!(e, sim::log::Entry::DeviceDropped { device, cause, .. } if device == "1000" && cause == "NORMAL_TEMPORARY_FAILURE")));
    running
        .wait_until("the call's journal line", || {
            running.journal_has("nobody picked up again")
        })
        .await;
    let line = journal_line(&running, "nobody picked up again");
    assert!(
        line.contains(
            "the call dropped on extension 1000 (normal temporary failure); rang extension 1000, \
             extension 1001 again; nobody picked up again within 4 s; voicemail 0:0"
        ),
        "{line}"
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = unfolded_event(&running);
    assert!(event.contains("SUMMARY:Voicemail from +49"), "{event}");
    assert!(
        event.contains("Call dropped on: extension 1000 (normal temporary failure)"),
        "{event}"
    );
    running.stop().await;
}

/// The desk answers and passes the caller on to the other phone with the transfer code.
const TRANSFERRING_DESK: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 1.0
hangup_after = 20.0
press = "*11001#"
press_after = 1.0

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "answer"
answer_after = 2.0
hangup_after = 2.0

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_transfers_the_caller_with_the_transfer_code_and_the_other_phone_answers() {
    let running = Running::start(TRANSFERRING_DESK, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", Some(60.0)))
        .finished()
        .await
        .unwrap();
    assert_eq!(
        apps_run(&summary),
        ["bridge", "bridge", "hangup"],
        "{:?}",
        summary.apps
    );
    let bridges: Vec<&str> = summary
        .apps
        .iter()
        .filter(|(app, _, _)| app == "bridge")
        .map(|(_, arg, _)| arg.as_str())
        .collect();
    assert!(
        bridges[1].contains("user/1001@") && !bridges[1].contains("user/1000@"),
        "the second bridge rings only the target: {bridges:?}"
    );
    assert!(summary.recordings.is_empty(), "no voicemail");
    let log = running.sim.log().entries();
    assert!(log.iter().any(|e| matches!(e, sim::log::Entry::DevicePressed { device, digits, .. } if device == "1000" && digits == "*11001#")));
    // patchbay hung the desk's leg up itself, on the call's own socket.
    assert!(
        log.iter()
            .any(|e| matches!(e, sim::log::Entry::Command { line, .. }
            if line.starts_with("api uuid_kill ") && line.ends_with(" NORMAL_CLEARING"))),
        "uuid_kill of the desk's leg"
    );
    assert!(log
        .iter()
        .any(|e| matches!(e, sim::log::Entry::DeviceAnswered { device, .. } if device == "1001")));
    running
        .wait_until("the call's journal line", || {
            running.journal_has("transferred the call to")
        })
        .await;
    let line = journal_line(&running, "transferred the call to");
    assert!(
        line.contains(
            "answered on extension 1000; extension 1000 transferred the call to extension 1001; \
             answered on extension 1001"
        ),
        "{line}"
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = unfolded_event(&running);
    assert!(event.contains("SUMMARY:Call with Marie Dubois"), "{event}");
    assert!(
        event.contains("Transferred: extension 1000 to extension 1001 (transfer code)"),
        "{event}"
    );
    running.stop().await;
}

/// The desk answers and uses its own transfer key (a SIP REFER) to pass the caller on.
const REFERRING_DESK: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 1.0
hangup_after = 20.0
refer_to = "1001"
refer_after = 1.0

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "answer"
answer_after = 2.0
hangup_after = 2.0

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_transfers_the_caller_by_refer_and_the_other_phone_answers() {
    let running = Running::start(REFERRING_DESK, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", Some(60.0)))
        .finished()
        .await
        .unwrap();
    // FreeSWITCH ran the dialplan again for the transferred caller and opened a second
    // socket to patchbay, which rang the target.
    assert_eq!(
        apps_run(&summary),
        ["bridge", "bridge", "hangup"],
        "{:?}",
        summary.apps
    );
    let bridges: Vec<&str> = summary
        .apps
        .iter()
        .filter(|(app, _, _)| app == "bridge")
        .map(|(_, arg, _)| arg.as_str())
        .collect();
    assert!(
        bridges[1].contains("user/1001@") && !bridges[1].contains("user/1000@"),
        "{bridges:?}"
    );
    let log = running.sim.log().entries();
    assert!(log.iter().any(|e| matches!(e, sim::log::Entry::DeviceReferred { device, to, .. } if device == "1000" && to == "1001")));
    let sockets = log
        .iter()
        .filter(|e| {
            matches!(
                e,
                sim::log::Entry::Connected {
                    kind: sim::log::ConnKind::Outbound,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        sockets, 2,
        "one socket session before the transfer, one after"
    );
    assert!(log
        .iter()
        .any(|e| matches!(e, sim::log::Entry::DeviceAnswered { device, .. } if device == "1001")));
    running
        .wait_until("the call's journal line", || {
            running.journal_has("transferred the call to")
        })
        .await;
    let lines: Vec<String> = running
        .handles
        .journal
        .recent()
        .into_iter()
        .filter(|line| line.contains("Marie Dubois"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one journal line for the whole call: {lines:#?}"
    );
    assert!(
        lines[0].contains(
            "answered on extension 1000; extension 1000 transferred the call to extension 1001; \
             rang extension 1001; answered on extension 1001"
        ),
        "{}",
        lines[0]
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = unfolded_event(&running);
    assert!(event.contains("SUMMARY:Call with Marie Dubois"), "{event}");
    assert!(
        event.contains("Transferred: extension 1000 to extension 1001 (phone's transfer key)"),
        "{event}"
    );
    running.stop().await;
}

/// The desk answers and adds the other phone with the conference code.
const CONFERENCING_DESK: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 1.0
hangup_after = 8.0
press = "*31001#"
press_after = 1.0

[[device]]
extension = "1001"
password = "pw1001"
behaviour = "answer"
answer_after = 2.0
hangup_after = 3.0

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_makes_it_a_three_way_call_with_the_conference_code() {
    let running = Running::start(CONFERENCING_DESK, 10).await;
    let call = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", Some(60.0)));
    let summary = tokio::time::timeout(std::time::Duration::from_secs(120), call.finished())
        .await
        .unwrap_or_else(|_| {
            let log: Vec<String> = running
                .sim
                .log()
                .entries()
                .iter()
                .filter(|e| {
                    !matches!(
                        e,
                        sim::log::Entry::Emitted { .. } | sim::log::Entry::GatewayState { .. }
                    )
                })
                .map(|e| e.to_string())
                .collect();
            panic!("the call never ended: {log:#?}")
        })
        .unwrap();
    assert_eq!(
        apps_run(&summary),
        ["bridge", "conference", "hangup"],
        "{:?}",
        summary.apps
    );
    let room = summary
        .apps
        .iter()
        .find(|(app, _, _)| app == "conference")
        .map(|(_, arg, _)| arg.clone())
        .unwrap();
    assert_eq!(
        room,
        format!("patchbay-{}@default+flags{{mintwo}}", summary.uuid)
    );
    let log = running.sim.log().entries();
    let commands: Vec<&str> = log
        .iter()
        .filter_map(|e| match e {
            sim::log::Entry::Command { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    let name = format!("patchbay-{}", summary.uuid);
    assert!(
        commands
            .iter()
            .any(|line| line.starts_with("api uuid_transfer ")
                && line.ends_with(&format!(" conference:{name}@default inline"))),
        "the desk's leg moved to the room: {commands:#?}"
    );
    assert!(
        commands
            .iter()
            .any(|line| *line == format!("api conference {name} dial user/1001@127.0.0.1")),
        "the other phone dialled into the room: {commands:#?}"
    );
    // Three people in the room; the last two leave when the first two have gone.
    let joined: Vec<&str> = log
        .iter()
        .filter_map(|e| match e {
            sim::log::Entry::ConferenceJoined { room, member, .. } if *room == name => {
                Some(member.as_str())
            }
            _ => None,
        })
        .collect();
    let mut sorted = joined.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["+41441234567", "1000", "1001"], "{joined:?}");
    let left: Vec<&str> = log
        .iter()
        .filter_map(|e| match e {
            sim::log::Entry::ConferenceLeft { room, member, .. } if *room == name => {
                Some(member.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(left.len(), 3, "everyone left: {left:?}");
    assert_eq!(
        left[2], "+41441234567",
        "the caller was the last, once alone: {left:?}"
    );
    running
        .wait_until("the call's journal line", || {
            running.journal_has("three-way call")
        })
        .await;
    let line = journal_line(&running, "three-way call");
    assert!(
        line.contains(
            "answered on extension 1000; extension 1000 made it a three-way call: the caller, \
             extension 1000 and extension 1001 were connected; the three-way call ended after 0:"
        ),
        "{line}"
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = unfolded_event(&running);
    assert!(
        event.contains("Three-way call with: extension 1000\\, extension 1001"),
        "{event}"
    );
    running.stop().await;
}
