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
    let text = patchbay_status(&running);
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
    // The default rules record calls from outside; nobody answered, so the conversation
    // recording stops before voicemail answers and only the message is kept.
    assert!(
        apps.starts_with(&[
            "record_session",
            "bridge",
            "stop_record_session",
            "answer",
            "playback",
            "playback"
        ]),
        "{:?}",
        summary.apps
    );
    assert_eq!(summary.recordings.len(), 1, "{summary:?}");
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

/// The desk does not answer; the person's cellphone, rung at the same time through a DID,
/// does, and it is shown the caller's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cellphone_outside_rings_with_the_desk_and_answers() {
    const RULES: &str = r#"
rule(#{
    id: "desk_and_cell",
    rule: #{ origin: "external" },
    properties: #{ bridge_to: ["1000", "+15145550199"] },
});
"#;
    const SCENARIO: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "no_answer"

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;
    let running = Running::start_with_rules(SCENARIO, 10, RULES).await;
    let summary = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", Some(5.0)))
        .finished()
        .await
        .unwrap();
    let bridge = summary
        .apps
        .iter()
        .find(|(app, _, _)| app == "bridge")
        .map(|(_, arg, _)| arg.clone())
        .expect("a bridge");
    assert!(bridge.contains("[leg_timeout=10]user/1000@"), "{bridge}");
    assert!(
        bridge.contains(
            "[leg_timeout=10,origination_caller_id_number=41441234567]sofia/gateway/did1/+15145550199"
        ),
        "{bridge}"
    );
    assert!(voicemails(&summary).is_empty(), "{:?}", summary.apps);
    running
        .wait_until("the call's journal line", || {
            running.journal_has("Marie Dubois")
        })
        .await;
    let line = without_recording_step(&journal_line(&running, "Marie Dubois"));
    assert!(line.contains("answered on +1"), "{line}");
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

/// The apps patchbay ran on the caller's channel, without the `set`s and the background
/// recording of the conversation (the default rules record every outside call).
fn apps_run(summary: &sim::CallSummary) -> Vec<&str> {
    summary
        .apps
        .iter()
        .map(|(app, _, _)| app.as_str())
        .filter(|app| !matches!(*app, "set" | "record_session" | "stop_record_session"))
        .collect()
}

/// The voicemails `record` wrote (not the conversation `record_session` kept).
fn voicemails(summary: &sim::CallSummary) -> Vec<&std::path::PathBuf> {
    summary
        .recordings
        .iter()
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("vm-"))
        })
        .collect()
}

/// A journal line without its "conversation recorded in <path>" step (the default rules
/// record every outside call; the path is a temporary folder).
fn without_recording_step(line: &str) -> String {
    match line.find("; conversation recorded in ") {
        Some(start) => {
            let rest = &line[start + 2..];
            let end = rest.find("; ").map_or(line.len(), |end| start + 2 + end);
            format!("{}{}", &line[..start], &line[end..])
        }
        None => line.to_owned(),
    }
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
    assert!(voicemails(&summary).is_empty(), "no voicemail");
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
    let line = without_recording_step(&journal_line(&running, "answered again on extension 1000"));
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
    assert_eq!(voicemails(&summary).len(), 1, "a voicemail was recorded");
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
    assert!(voicemails(&summary).is_empty(), "no voicemail");
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
    let line = without_recording_step(&journal_line(&running, "transferred the call to"));
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

/// The desk answers and passes the caller on to a cellphone outside, with the transfer code.
const TRANSFERRING_OUT: &str = r#"
[[device]]
extension = "1000"
password = "pw1000"
behaviour = "answer"
answer_after = 1.0
hangup_after = 20.0
press = "*10015145550199#"
press_after = 1.0

[[gateway]]
name = "did1"
registrar = "ok"
proxy = "sip.example.net:5060"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_transfers_the_caller_to_an_outside_number_through_a_did() {
    let running = Running::start(TRANSFERRING_OUT, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+41441234567", "MARIE D", Some(8.0)))
        .finished()
        .await
        .unwrap();
    let bridges: Vec<&str> = summary
        .apps
        .iter()
        .filter(|(app, _, _)| app == "bridge")
        .map(|(_, arg, _)| arg.as_str())
        .collect();
    assert_eq!(bridges.len(), 2, "{:?}", summary.apps);
    assert!(
        bridges[1].contains("sofia/gateway/did1/+15145550199"),
        "the second bridge calls the number through the DID's gateway: {bridges:?}"
    );
    // The cellphone is shown who is really calling, on that leg only.
    assert!(
        bridges[1].contains("[leg_timeout=10,origination_caller_id_number=41441234567]"),
        "{bridges:?}"
    );
    assert!(!bridges[1].contains("user/"), "{bridges:?}");
    assert!(
        voicemails(&summary).is_empty(),
        "no voicemail: {:?}",
        summary.apps
    );
    running
        .wait_until("the call's journal line", || {
            running.journal_has("transferred the call to")
        })
        .await;
    let line = without_recording_step(&journal_line(&running, "transferred the call to"));
    assert!(
        line.contains("answered on extension 1000; extension 1000 transferred the call to +1 514"),
        "{line}"
    );
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = unfolded_event(&running);
    assert!(
        event.contains("Transferred: extension 1000 to +1 514"),
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
    let line = without_recording_step(&lines[0]);
    assert!(
        line.contains(
            "answered on extension 1000; extension 1000 transferred the call to extension 1001; \
             rang extension 1001; answered on extension 1001"
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
    let line = without_recording_step(&journal_line(&running, "three-way call"));
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

/// A device dialling `*86` and pressing `digits` when the menu asks.
fn menu_call(digits: &str) -> Call {
    Call {
        from: "1000".to_owned(),
        to: "*86".to_owned(),
        context: Some("default".to_owned()),
        dtmf: digits.to_owned(),
        // A caller who never hangs up: the menu itself must end the call.
        ..Call::default()
    }
}

/// What the call played, in order.
fn played(summary: &sim::CallSummary) -> Vec<String> {
    summary
        .apps
        .iter()
        .filter(|(app, _, _)| app == "playback")
        .map(|(_, arg, _)| arg.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_86_then_1_plays_new_voicemails_oldest_first_once() {
    let scenario = SCENARIO.replace("behaviour = \"answer\"", "behaviour = \"no_answer\"");
    let running = Running::start(&scenario, 1).await;
    for (caller, messages) in [("+4915112345678", 1), ("+4930123456", 2)] {
        let summary = running
            .sim
            .place_call(call_from(caller, "", Some(20.0)))
            .finished()
            .await
            .unwrap();
        assert_eq!(summary.recordings.len(), 1, "{summary:?}");
        running
            .wait_until("the voicemail kept in the mailbox", || {
                running
                    .files("recordings/mailbox")
                    .iter()
                    .filter(|path| path.extension().is_some_and(|ext| ext == "wav"))
                    .count()
                    == messages
            })
            .await;
    }
    let mut mailbox: Vec<String> = running
        .files("recordings/mailbox")
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    mailbox.sort();

    let summary = running
        .sim
        .place_call(menu_call("1"))
        .finished()
        .await
        .unwrap();
    let heard: Vec<String> = played(&summary)
        .into_iter()
        .filter(|file| file.contains("/mailbox/"))
        .collect();
    assert_eq!(heard, mailbox, "both messages, oldest first: {summary:?}");
    assert_eq!(
        summary.apps.last().map(|(app, _, _)| app.as_str()),
        Some("hangup"),
        "{:?}",
        summary.apps
    );
    running
        .wait_until("the menu's journal line", || {
            running.journal_has("extension 1000 opened *86; played 2 new voicemails; menu finished")
        })
        .await;

    // Heard messages are not new any more: the second time there is nothing to play.
    let summary = running
        .sim
        .place_call(menu_call("1"))
        .finished()
        .await
        .unwrap();
    let files = played(&summary);
    assert!(
        files.iter().all(|file| !file.contains("/mailbox/")),
        "{files:?}"
    );
    assert!(
        files.contains(&"no_voicemail_en.wav".to_owned()),
        "{files:?}"
    );
    running
        .wait_until("the second menu's journal line", || {
            running.journal_has("opened *86; no new voicemail; menu finished")
        })
        .await;
    // What was heard is on disk, for the daemon's next start.
    let heard = std::fs::read_to_string(running.dir.join("recordings/mailbox/heard.json")).unwrap();
    for message in &mailbox {
        let name = message.rsplit('/').next().unwrap();
        assert!(heard.contains(name), "{heard}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_86_then_2_records_a_greeting_commits_it_and_the_next_caller_hears_it() {
    let scenario = SCENARIO.replace("behaviour = \"answer\"", "behaviour = \"no_answer\"");
    let running = Running::start(&scenario, 1).await;
    let summary = running
        .sim
        .place_call(menu_call("2"))
        .finished()
        .await
        .unwrap();
    let apps: Vec<&str> = summary
        .apps
        .iter()
        .map(|(app, _, _)| app.as_str())
        .collect();
    let record = apps
        .iter()
        .position(|app| *app == "record")
        .expect("a record");
    assert_eq!(
        summary.apps[record - 1].1,
        "tone_stream://%(250,0,1000)",
        "a beep before recording: {:?}",
        summary.apps
    );
    assert!(
        played(&summary).contains(&"saved_en.wav".to_owned()),
        "{:?}",
        summary.apps
    );
    running
        .wait_until("the greeting's journal line", || {
            running.journal_has(
                "greeting wave_en.wav recorded from extension 1000 (0:03) and committed to the phone repo",
            )
        })
        .await;

    let repo = git2::Repository::open(running.dir.join("phone")).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert!(
        head.message()
            .unwrap()
            .starts_with("Greeting wave_en.wav recorded on the phone"),
        "{:?}",
        head.message()
    );
    let entry = head
        .tree()
        .unwrap()
        .get_path(std::path::Path::new("greetings/wave_en.wav"))
        .expect("the greeting is in the commit");
    let bytes = repo.find_blob(entry.id()).unwrap().content().to_vec();
    let wav = hound::WavReader::new(std::io::Cursor::new(&bytes)).unwrap();
    assert_eq!(wav.duration(), 3 * 8000, "3 s until the silence detector");
    // The person's checkout shows the new greeting, with nothing left to commit.
    assert_eq!(
        std::fs::read(running.dir.join("phone/greetings/wave_en.wav")).unwrap(),
        bytes
    );
    assert!(repo
        .statuses(None)
        .unwrap()
        .iter()
        .all(|status| status.status().is_empty()));

    // The watcher takes the commit live; the next English-speaking caller hears it.
    let short = head.id().to_string()[..7].to_owned();
    running
        .wait_until("the new commit to go live", || {
            running.journal_has(&format!("commit {short} is live"))
        })
        .await;
    let summary = running
        .sim
        .place_call(call_from("+4915112345678", "", Some(8.0)))
        .finished()
        .await
        .unwrap();
    let greeting = running
        .dir
        .join("greetings")
        .join(format!("{}.wav", entry.id()));
    assert_eq!(
        played(&summary).first(),
        Some(&greeting.display().to_string()),
        "{:?}",
        summary.apps
    );
    running.stop().await;
}

/// What `patchbay status` prints, run as the person runs it.
fn patchbay_status(running: &Running) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(["status", "--settings"])
        .arg(running.dir.join("settings.json"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_86_then_3_switches_do_not_disturb_for_the_next_callers() {
    let running = Running::start(SCENARIO, 10).await;
    let summary = running
        .sim
        .place_call(menu_call("3"))
        .finished()
        .await
        .unwrap();
    assert!(
        played(&summary).contains(&"dnd_on_en.wav".to_owned()),
        "{:?}",
        summary.apps
    );
    running
        .wait_until("the switch's journal line", || {
            running.journal_has("do-not-disturb is on (switched on extension 1000)")
        })
        .await;
    // Kept on disk: a restarted daemon reads it back.
    assert!(patchbay::calls::mailbox::DoNotDisturb::load(&running.dir.join("recordings")).is_on());
    running
        .wait_until("`patchbay status` to say so", || {
            patchbay_status(&running).contains("Do not disturb is ON")
        })
        .await;

    // The desk would answer after 1 s; with do-not-disturb nothing rings.
    let summary = running
        .sim
        .place_call(call_from("+4915112345678", "", Some(12.0)))
        .finished()
        .await
        .unwrap();
    assert!(
        summary.apps.iter().all(|(app, _, _)| app != "bridge"),
        "{:?}",
        summary.apps
    );
    assert_eq!(summary.recordings.len(), 1, "{summary:?}");
    running
        .wait_until("the voicemail's journal line", || {
            running.journal_has("do-not-disturb was on; voicemail 0:")
        })
        .await;

    let summary = running
        .sim
        .place_call(menu_call("3"))
        .finished()
        .await
        .unwrap();
    assert!(played(&summary).contains(&"dnd_off_en.wav".to_owned()));
    running
        .wait_until("the switch's second journal line", || {
            running.journal_has("do-not-disturb is off (switched on extension 1000)")
        })
        .await;
    // The menu call must be over, or the next caller finds the person busy.
    running
        .wait_until("the menu call to end", || {
            running.handles.registry.status().calls.is_empty()
        })
        .await;
    // From Canada: the default night filter lets it ring at any hour.
    let summary = running
        .sim
        .place_call(call_from("+15145550199", "", None))
        .finished()
        .await
        .unwrap();
    assert!(
        summary.answered && summary.bridged_to.is_some(),
        "{summary:?}; journal: {:#?}",
        running.handles.journal.recent()
    );
    running.stop().await;
}

/// The default rules set `record` for calls from outside: the answered conversation is
/// recorded from the answer to the hangup, and the journal and the calendar say where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_the_rules_record_is_recorded_and_its_file_named() {
    let running = Running::start(SCENARIO, 10).await;
    let summary = running
        .sim
        .place_call(call_from("+15145550199", "", None))
        .finished()
        .await
        .unwrap();
    assert!(summary.answered, "{summary:?}");
    let recording = running
        .dir
        .join("recordings")
        .join(format!("call-{}.wav", summary.uuid));
    let apps: Vec<(&str, &str)> = summary
        .apps
        .iter()
        .map(|(app, arg, _)| (app.as_str(), arg.as_str()))
        .collect();
    let session = apps
        .iter()
        .position(|(app, _)| *app == "record_session")
        .unwrap_or_else(|| panic!("record_session was sent: {apps:?}"));
    assert_eq!(apps[session].1, recording.display().to_string());
    assert!(
        apps[..session].contains(&("set", "RECORD_ANSWER_REQ=true")),
        "{apps:?}"
    );
    let bridge = apps.iter().position(|(app, _)| *app == "bridge").unwrap();
    assert!(
        session < bridge,
        "recording set up before the bridge: {apps:?}"
    );
    assert_eq!(summary.recordings, vec![recording.clone()]);
    // The desk talks for 3 s after answering; the ringing before is not in the file.
    let wav = hound::WavReader::open(&recording).unwrap();
    let seconds = f64::from(wav.duration()) / 8000.0;
    assert!((2.5..10.0).contains(&seconds), "{seconds} s");
    running
        .wait_until("the call's journal line", || {
            running.journal_has(&format!(
                "answered on extension 1000; conversation recorded in {}",
                recording.display()
            ))
        })
        .await;
    running
        .wait_until("the calendar entry", || {
            !running.files("calendar").is_empty()
        })
        .await;
    let event = std::fs::read_to_string(&running.files("calendar")[0]).unwrap();
    let unfolded = event.replace("\r\n ", "");
    assert!(
        unfolded.contains(&format!("Recording: {}", recording.display())),
        "{event}"
    );
    running.stop().await;
}

/// The person's rules hear about outages: `outage::begin` when a number's gateway goes
/// down, `outage::end` with how long it lasted when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hear_when_a_gateway_goes_down_and_comes_back() {
    const RULES: &str = r#"
on("outage::begin", |call, data| log(`rules: ${data.what} went down (${data.detail}), call ${type_of(call)}`));
on("outage::end", |call, data| log(`rules: ${data.kind} ${data.name} is back after ${data.seconds} s`));
"#;
    let running = Running::start_with_rules(SCENARIO, 10, RULES).await;
    assert!(running.sim.kill_gateway("did1"));
    running
        .wait_until("the outage::begin handler's line", || {
            running.journal_has("rules: gateway did1 went down (DOWN), call ()")
        })
        .await;
    let gateway = patchbay::sim::scenario::Scenario::parse(
        "[[gateway]]\nname = \"did1\"\nregistrar = \"ok\"\nproxy = \"sip.example.net:5060\"\n",
        "test",
    )
    .unwrap()
    .gateways
    .remove(0);
    running.sim.start_gateway(gateway);
    running
        .wait_until("the outage::end handler's line", || {
            running.journal_has("rules: gateway did1 is back after ")
        })
        .await;
    // The daemon's own lines are still there, once each.
    let journal = running.handles.journal.recent();
    assert_eq!(
        journal
            .iter()
            .filter(|line| line.contains("outage: gateway did1 is down (DOWN)"))
            .count(),
        1,
        "{journal:#?}"
    );
    running.stop().await;
}

/// Devices that come and go while FreeSWITCH is unreachable send their events to nobody:
/// after the reconnect patchbay asks FreeSWITCH for its registrations, and `patchbay status`
/// shows the devices really registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_freeswitch_restart_the_registered_devices_are_the_real_ones() {
    let running = Running::start(SCENARIO, 10).await;
    let status = || patchbay_status(&running);
    let registered = || {
        let mut devices = running.handles.registry.registered_devices();
        devices.sort();
        devices
    };
    assert_eq!(registered(), ["1000", "1001"]);

    // The desk phone signs off while FreeSWITCH is down for patchbay.
    running.sim.kill();
    running
        .wait_until("the link to go down", || {
            running.journal_has("FreeSWITCH link down")
        })
        .await;
    assert!(running.sim.unregister("1001"));
    running.sim.restart().await.unwrap();
    running
        .wait_until("the registrations to be read again", || {
            registered() == ["1000"]
        })
        .await;
    assert!(running.journal_has("device 1001 signed off while the FreeSWITCH link was down"));
    running
        .wait_until("`patchbay status` to show one device", || {
            let text = status();
            text.contains("Devices registered: 1\n  1000 ")
        })
        .await;

    // And one that registers meanwhile is there after the next reconnect.
    running.sim.kill();
    running
        .wait_until("the link to go down again", || {
            running
                .handles
                .journal
                .recent()
                .iter()
                .filter(|line| line.contains("FreeSWITCH link down"))
                .count()
                == 2
        })
        .await;
    running.sim.register("1001", "pw1001").await.unwrap();
    running.sim.restart().await.unwrap();
    running
        .wait_until("both devices again", || registered() == ["1000", "1001"])
        .await;
    running
        .wait_until("`patchbay status` to show both devices", || {
            status().contains("Devices registered: 2")
        })
        .await;
    running.stop().await;
}

/// A phone repo fetched from a server is not patchbay's to write: the greeting stays in the
/// recordings folder, the journal says where, and the caller hears it was not saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_86_then_2_with_a_fetched_repo_keeps_the_greeting_in_the_recordings() {
    let running = Running::start_with_settings(SCENARIO, 10, "// mine\n", |settings| {
        let person = settings.repo.path.clone();
        settings.repo.remote = Some(person.display().to_string());
        settings.repo.path = person.with_file_name("phone-copy.git");
    })
    .await;
    let summary = running
        .sim
        .place_call(menu_call("2"))
        .finished()
        .await
        .unwrap();
    assert!(
        played(&summary).contains(&"not_saved_en.wav".to_owned()),
        "{:?}",
        summary.apps
    );
    let kept = running
        .dir
        .join("recordings")
        .join(format!("greeting-{}-1.wav", summary.uuid));
    running
        .wait_until("the greeting's journal line", || {
            running.journal_has(&format!(
                "greeting wave_en.wav recorded from extension 1000 (0:03) but not committed to the phone repo: the phone repo is fetched from a server (settings repo.remote); commit it there; the recording is kept at {}",
                kept.display()
            ))
        })
        .await;
    let wav = hound::WavReader::open(&kept).unwrap();
    assert_eq!(wav.duration(), 3 * 8000);
    // Neither the person's repo nor patchbay's copy got a commit.
    for repo in ["phone", "phone-copy.git"] {
        let repo = git2::Repository::open(running.dir.join(repo)).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_glob("refs/*").unwrap();
        let messages: Vec<String> = walk
            .map(|id| {
                repo.find_commit(id.unwrap())
                    .unwrap()
                    .message()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(
            messages.iter().all(|m| !m.starts_with("Greeting")),
            "{messages:?}"
        );
    }
    running.stop().await;
}

/// A greeting under 2 s is a slip, not a greeting: nothing is committed or kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_86_then_2_and_hanging_up_at_once_commits_nothing() {
    let running = Running::start(SCENARIO, 10).await;
    // Menu digit after 0.5 s, beep for 1 s: the recording gets about 1.5 s.
    let call = Call {
        hangup_after: Some(3.0),
        ..menu_call("2")
    };
    let summary = running.sim.place_call(call).finished().await.unwrap();
    running
        .wait_until("the menu's journal line", || {
            running.journal_has("extension 1000 opened *86;")
        })
        .await;
    let recorded = summary
        .recordings
        .iter()
        .map(|path| hound::WavReader::open(path).map(|wav| wav.duration()))
        .collect::<Vec<_>>();
    assert!(
        running.journal_has("greeting wave_en.wav too short, not kept"),
        "{recorded:?}; {:#?}",
        running.handles.journal.recent()
    );
    let repo = git2::Repository::open(running.dir.join("phone")).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head.message().unwrap(), "my phone\n");
    assert!(!running.dir.join("phone/greetings/wave_en.wav").exists());
    for path in &summary.recordings {
        assert!(!path.exists(), "{} was discarded", path.display());
    }
    running.stop().await;
}
