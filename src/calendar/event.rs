//! One call as an iCalendar VEVENT (icalendar crate, RFC 5545 escaping and folding).

use base64::Engine as _;
use icalendar::{Calendar, Component, Event, EventLike, Property};

use crate::notify::{CallContext, Overrides, Templates};
use crate::spool::record::{format_duration, Outcome};

/// PRODID of every calendar object patchbay writes.
pub const PRODID: &str = "-//patchbay//call log//EN";

/// The event's UID, derived from the call UUID only, so a retried PUT names the same event.
/// FreeSWITCH UUIDs are used as they are; anything else is hashed into a safe name.
pub fn uid_for(call_uuid: &str) -> String {
    let safe = !call_uuid.is_empty()
        && call_uuid.len() <= 64
        && call_uuid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if safe {
        format!("patchbay-call-{call_uuid}")
    } else {
        let hashed = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, call_uuid.as_bytes());
        format!("patchbay-call-{}", hashed.simple())
    }
}

/// "Voicemail from Marie Dubois (0:42)", "Missed call from +1 514-555-0199",
/// "Call with Marie Dubois, 12 min".
pub fn summary(call: &CallContext<'_>) -> String {
    let record = call.record;
    let who = record.peer_label();
    match &record.outcome {
        Outcome::Voicemail { duration_secs, .. } => {
            format!("Voicemail from {who} ({})", format_duration(*duration_secs))
        }
        Outcome::Missed => format!("Missed call from {who}"),
        Outcome::Declined => format!("Declined call from {who}"),
        Outcome::Answered { talk_secs, .. } => format!("Call with {who}, {}", minutes(*talk_secs)),
        Outcome::Outgoing {
            answered: true,
            talk_secs,
            ..
        } => format!("Call with {who}, {}", minutes(*talk_secs)),
        Outcome::Outgoing {
            answered: false, ..
        } => format!("Unanswered call to {who}"),
    }
}

fn minutes(secs: u64) -> String {
    if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{} min", (secs + 30) / 60)
    }
}

/// The whole calendar object (VCALENDAR with one VEVENT) for a call, as text.
/// `audio` is the voicemail recording to attach, if any. Returns the text and the template
/// fallback message, if the repo's `event.txt` failed.
pub fn build(
    call: &CallContext<'_>,
    audio: Option<&[u8]>,
    templates: &Templates,
    overrides: &Overrides,
) -> Result<(String, Option<String>), crate::notify::Error> {
    let record = call.record;
    let description = templates.render(
        "event.txt",
        &call.template_values(),
        overrides.get("event.txt").as_deref(),
    )?;
    let mut categories = vec!["Phone call".to_owned(), capitalised(record.outcome.kind())];
    if let Some(contact) = &record.contact {
        categories.extend(contact.groups.iter().cloned());
    }
    let mut event = Event::new();
    event
        .uid(&uid_for(&record.uuid))
        .timestamp(record.ended)
        .starts(record.started)
        .ends(record.ended.max(record.started))
        .summary(&text_value(&summary(call)))
        .description(&text_value(description.text.trim_end()))
        .categories(categories);
    let mut calendar = Calendar::empty();
    calendar
        .append_property(Property::new("VERSION", "2.0"))
        .append_property(Property::new("PRODID", PRODID))
        .push(event.done());
    let mut text = calendar.done().to_string();
    if let Some(audio) = audio {
        // icalendar's folding rescans the line from its start for every fold (quadratic: tens
        // of seconds for a minute of audio), so the ASCII-only ATTACH line is folded here.
        let attach = attach_line(audio);
        match text.rfind("END:VEVENT\r\n") {
            Some(at) => text.insert_str(at, &attach),
            None => {
                return Err(crate::notify::Error::Template {
                    name: "event".into(),
                    reason: "the calendar writer produced no VEVENT".into(),
                })
            }
        }
    }
    Ok((text, description.fallback))
}

/// `ATTACH;FMTTYPE=audio/wav;ENCODING=BASE64;VALUE=BINARY:…` folded at 75 octets, CRLF ended.
fn attach_line(audio: &[u8]) -> String {
    let mut line = String::from("ATTACH;FMTTYPE=audio/wav;ENCODING=BASE64;VALUE=BINARY:");
    base64::engine::general_purpose::STANDARD.encode_string(audio, &mut line);
    let mut folded = String::with_capacity(line.len() + line.len() / 25 + 2);
    // Base64 and the parameters are ASCII: every byte index is a character boundary.
    let mut rest = line.as_str();
    let mut limit = 75;
    while rest.len() > limit {
        let (head, tail) = rest.split_at(limit);
        folded.push_str(head);
        folded.push_str("\r\n ");
        rest = tail;
        // Continuation lines start with the folding space.
        limit = 74;
    }
    folded.push_str(rest);
    folded.push_str("\r\n");
    folded
}

/// iCalendar TEXT may hold line breaks (escaped as `\n` by the writer) but no raw CR or other
/// control characters, which would break the content line.
fn text_value(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\r' => '\n',
            '\n' | '\t' => c,
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::Origin;
    use crate::spool::CallRecord;
    use chrono::TimeZone;

    fn record(name: &str, outcome: Outcome) -> CallRecord {
        let start = chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 19, 3, 0)
            .unwrap();
        CallRecord {
            uuid: "3f7a6c1e-0000-4000-8000-000000000001".into(),
            origin: Origin::External,
            peer_number: "+15145550199".into(),
            caller_id_name: name.into(),
            contact: None,
            did: None,
            language: None,
            started: start,
            answered: None,
            ended: start + chrono::Duration::seconds(42),
            outcome,
            devices_rung: vec!["desk".into(), "cell".into()],
            rules_matched: vec!["night".into()],
            deciding_rule: Some("night".into()),
            hangup_cause: Some("NORMAL_CLEARING".into()),
            transfers: Vec::new(),
            drops: Vec::new(),
            conference: Vec::new(),
            conversation: None,
        }
    }

    fn context(record: &CallRecord) -> CallContext<'_> {
        CallContext {
            record,
            transcript: None,
            no_transcript: "no model",
            timezone: chrono_tz::UTC,
        }
    }

    #[test]
    fn summaries_read_like_the_issue() {
        let voicemail = record(
            "Marie Dubois",
            Outcome::Voicemail {
                recording: "r.wav".into(),
                duration_secs: 42,
            },
        );
        assert_eq!(
            summary(&context(&voicemail)),
            "Voicemail from Marie Dubois (0:42)"
        );
        let missed = record("", Outcome::Missed);
        assert_eq!(
            summary(&context(&missed)),
            "Missed call from +1 514-555-0199"
        );
        let answered = record(
            "Marie Dubois",
            Outcome::Answered {
                by_device: "desk".into(),
                talk_secs: 720,
            },
        );
        assert_eq!(
            summary(&context(&answered)),
            "Call with Marie Dubois, 12 min"
        );
    }

    #[test]
    fn event_escapes_untrusted_text_and_attaches_audio() {
        let call = record(
            "Doe, John; \"CEO\"\r\nATTENDEE:mailto:x@y",
            Outcome::Voicemail {
                recording: "r.wav".into(),
                duration_secs: 42,
            },
        );
        let (text, fallback) = build(
            &context(&call),
            Some(b"RIFFdata"),
            &Templates::new(),
            &Overrides::default(),
        )
        .unwrap();
        assert!(fallback.is_none());
        let unfolded = text.replace("\r\n ", "");
        assert!(unfolded.contains("UID:patchbay-call-3f7a6c1e-0000-4000-8000-000000000001\r\n"));
        assert!(unfolded.contains("PRODID:-//patchbay//call log//EN\r\n"));
        assert!(
            unfolded.contains(
                "SUMMARY:Voicemail from Doe\\, John\\; \"CEO\"\\nATTENDEE:mailto:x@y (0:42)\r\n"
            ),
            "{unfolded}"
        );
        assert!(!unfolded.contains("\r\nATTENDEE"), "{unfolded}");
        assert!(
            unfolded.contains("CATEGORIES:Phone call,Voicemail\r\n"),
            "{unfolded}"
        );
        assert!(unfolded.contains("ATTACH;"), "{unfolded}");
        assert!(unfolded.contains(":UklGRmRhdGE=\r\n"), "{unfolded}");
        assert!(text.lines().all(|l| l.len() <= 75));
        assert!(unfolded.contains("DTSTART:20261128T190300Z\r\n"));
        assert!(unfolded.contains("DTEND:20261128T190342Z\r\n"));
        assert!(
            unfolded.contains("Devices rung: desk\\, cell"),
            "{unfolded}"
        );
    }

    #[test]
    fn a_minute_of_audio_is_folded_at_75_octets_and_decodes_back() {
        let audio: Vec<u8> = (0..960_044u32).map(|i| (i * 7 % 251) as u8).collect();
        let started = std::time::Instant::now();
        let line = attach_line(&audio);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(line.split("\r\n").all(|l| l.len() <= 75));
        let unfolded = line.replace("\r\n ", "");
        let value = unfolded.trim_end().split_once(':').unwrap().1;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        assert!(decoded == audio);
    }

    #[test]
    fn odd_call_uuids_still_give_safe_stable_uids() {
        assert_eq!(uid_for("../x y"), uid_for("../x y"));
        assert!(uid_for("../x y")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
