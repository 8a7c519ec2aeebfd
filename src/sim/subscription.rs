//! What one ESL listener receives: its event list, CUSTOM subclasses, filters and the
//! `myevents` restriction, with FreeSWITCH's semantics (mod_event_socket.c).

use std::collections::HashSet;

use super::event::{Event, Format};

/// Every event name FreeSWITCH 1.10 knows (switch_event.c `EVENT_NAMES`).
const EVENT_NAMES: &[&str] = &[
    "CUSTOM",
    "CLONE",
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "API",
    "LOG",
    "INBOUND_CHAN",
    "OUTBOUND_CHAN",
    "STARTUP",
    "SHUTDOWN",
    "PUBLISH",
    "UNPUBLISH",
    "TALK",
    "NOTALK",
    "SESSION_CRASH",
    "MODULE_LOAD",
    "MODULE_UNLOAD",
    "DTMF",
    "MESSAGE",
    "PRESENCE_IN",
    "NOTIFY_IN",
    "PRESENCE_OUT",
    "PRESENCE_PROBE",
    "MESSAGE_WAITING",
    "MESSAGE_QUERY",
    "ROSTER",
    "CODEC",
    "BACKGROUND_JOB",
    "DETECTED_SPEECH",
    "DETECTED_TONE",
    "PRIVATE_COMMAND",
    "HEARTBEAT",
    "TRAP",
    "ADD_SCHEDULE",
    "DEL_SCHEDULE",
    "EXE_SCHEDULE",
    "RE_SCHEDULE",
    "RELOADXML",
    "NOTIFY",
    "PHONE_FEATURE",
    "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE",
    "RECV_MESSAGE",
    "REQUEST_PARAMS",
    "CHANNEL_DATA",
    "GENERAL",
    "COMMAND",
    "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED",
    "SERVER_DISCONNECTED",
    "SEND_INFO",
    "RECV_INFO",
    "RECV_RTCP_MESSAGE",
    "SEND_RTCP_MESSAGE",
    "CALL_SECURE",
    "NAT",
    "RECORD_START",
    "RECORD_STOP",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "CALL_UPDATE",
    "FAILURE",
    "SOCKET_DATA",
    "MEDIA_BUG_START",
    "MEDIA_BUG_STOP",
    "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA",
    "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT",
    "CALL_DETAIL",
    "DEVICE_STATE",
    "TEXT",
    "SHUTDOWN_REQUESTED",
    "ALL",
];

/// The events `myevents` subscribes to (mod_event_socket.c).
pub(crate) const MYEVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_APPLICATION",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_DATA",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE",
    "DETECTED_SPEECH",
    "DTMF",
    "TALK",
    "NOTALK",
];

fn canonical_name(word: &str) -> Option<&'static str> {
    EVENT_NAMES
        .iter()
        .copied()
        .find(|name| name.eq_ignore_ascii_case(word))
}

/// One filter: a header and the value as the client typed it (`-` prefix, `/regex/`).
#[derive(Debug, Clone)]
struct Filter {
    header: String,
    raw: String,
    positive: bool,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Equals(String),
    Regex(regex::Regex),
    /// A `/regex/` that does not compile matches nothing, as a failed pcre does.
    Never,
}

/// A listener's subscription state.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    format: Option<Format>,
    all: bool,
    events: HashSet<&'static str>,
    subclasses: HashSet<String>,
    filters: Vec<Filter>,
    /// `myevents <uuid>`: only this channel's events (and its BACKGROUND_JOBs) pass.
    only_uuid: Option<String>,
}

impl Subscription {
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    pub fn is_listening(&self) -> bool {
        self.format.is_some()
    }

    /// `event <fmt> names…`: returns the reply text.
    pub fn event_command(&mut self, args: &str) -> String {
        let mut words = args.split_whitespace().peekable();
        let format = match words.peek().and_then(|w| Format::parse(w)) {
            Some(format) => {
                words.next();
                format
            }
            None => Format::Plain,
        };
        let mut keys = 0;
        let mut custom = false;
        for word in words {
            if custom {
                self.subclasses.insert(word.to_owned());
                continue;
            }
            let Some(name) = canonical_name(word) else {
                continue;
            };
            keys += 1;
            match name {
                "ALL" => self.all = true,
                "CUSTOM" => custom = true,
                _ => {
                    self.events.insert(name);
                }
            }
        }
        if keys == 0 {
            return "-ERR no keywords supplied".to_owned();
        }
        if self.format.is_none() {
            self.format = Some(format);
        }
        format!(
            "+OK event listener enabled {}",
            self.format.unwrap_or(format).as_str()
        )
    }

    /// `nixevent names…`.
    pub fn nixevent_command(&mut self, args: &str) -> String {
        let mut custom = false;
        let mut keys = 0;
        for word in args.split_whitespace() {
            if custom {
                self.subclasses.remove(word);
                continue;
            }
            let Some(name) = canonical_name(word) else {
                continue;
            };
            keys += 1;
            match name {
                "ALL" => {
                    self.all = false;
                    self.events.clear();
                    self.subclasses.clear();
                }
                "CUSTOM" => custom = true,
                _ => {
                    self.events.remove(name);
                }
            }
        }
        if keys == 0 {
            return "-ERR no keywords supplied".to_owned();
        }
        "+OK events nixed".to_owned()
    }

    /// `noevents`.
    pub fn noevents_command(&mut self) -> String {
        if self.format.take().is_none() {
            return "-ERR not listening for events".to_owned();
        }
        self.all = false;
        self.events.clear();
        self.subclasses.clear();
        "+OK no longer listening for events".to_owned()
    }

    /// `myevents <uuid> [fmt]` (inbound) or `myevents [fmt]` on an outbound socket.
    pub fn myevents(&mut self, uuid: &str, format: Format) -> String {
        self.format = Some(format);
        self.events.extend(MYEVENTS.iter().copied());
        self.only_uuid = Some(uuid.to_owned());
        "+OK Events Enabled".to_owned()
    }

    /// `filter <Header> <value>` and `filter delete <Header> [value]|all`.
    pub fn filter_command(&mut self, args: &str) -> String {
        let (name, value) = match args.trim().split_once(' ') {
            Some((name, value)) => (name, Some(value)),
            None => (args.trim(), None),
        };
        if name.eq_ignore_ascii_case("delete") {
            let Some(rest) = value else {
                return "-ERR invalid syntax".to_owned();
            };
            let (header, value) = match rest.split_once(' ') {
                Some((h, v)) => (h, Some(v)),
                None => (rest, None),
            };
            if header.eq_ignore_ascii_case("all") {
                self.filters.clear();
            } else {
                self.filters.retain(|f| {
                    !(f.header.eq_ignore_ascii_case(header) && value.is_none_or(|v| f.raw == v))
                });
            }
            return format!("+OK filter deleted. [{header}][{}]", value.unwrap_or(""));
        }
        let Some(value) = value.filter(|v| !name.is_empty() && !v.is_empty()) else {
            return "-ERR invalid syntax".to_owned();
        };
        let trimmed = value.trim_start_matches([' ', '+', '-']);
        let positive = !value.trim_start_matches([' ', '+']).starts_with('-');
        let matcher = if value.starts_with('/') || trimmed.starts_with('/') {
            let pattern = trimmed.trim_start_matches('/');
            let pattern = pattern.strip_suffix('/').unwrap_or(pattern);
            regex::Regex::new(pattern).map_or(Matcher::Never, Matcher::Regex)
        } else {
            Matcher::Equals(trimmed.to_owned())
        };
        self.filters.push(Filter {
            header: name.to_owned(),
            raw: value.to_owned(),
            positive,
            matcher,
        });
        format!("+OK filter added. [{name}]=[{value}]")
    }

    /// Whether this listener receives `event`.
    pub fn wants(&self, event: &Event) -> bool {
        self.wants_keyed(&EventKeys::of(event), event)
    }

    /// [`Subscription::wants`] with the headers every listener looks at read once per event
    /// (there is a listener per call's socket, and an event has some 150 headers).
    pub fn wants_keyed(&self, keys: &EventKeys<'_>, event: &Event) -> bool {
        if self.format.is_none() {
            return false;
        }
        let name = keys.name;
        // A call's socket hears only its own channel: the cheapest test, so first.
        if let Some(uuid) = &self.only_uuid {
            let own = keys.unique_id == Some(uuid.as_str());
            let own_job =
                name == "BACKGROUND_JOB" && event.get("Job-Owner-UUID") == Some(uuid.as_str());
            if !own && !own_job {
                return false;
            }
        }
        let listed = if self.all {
            true
        } else if name == "CUSTOM" {
            keys.subclass.is_some_and(|s| self.subclasses.contains(s))
        } else {
            self.events.contains(name)
        };
        if !listed {
            return false;
        }
        if self.filters.is_empty() {
            return true;
        }
        // Filters are OR-ed: a positive match lets the event through unless a negative one
        // matches too.
        let mut send = false;
        for filter in &self.filters {
            let Some(value) = event.get(&filter.header) else {
                continue;
            };
            if send && filter.positive {
                continue;
            }
            let matched = match &filter.matcher {
                Matcher::Equals(expected) => value.eq_ignore_ascii_case(expected),
                Matcher::Regex(re) => re.is_match(value),
                Matcher::Never => false,
            };
            if matched {
                if filter.positive {
                    send = true;
                } else {
                    return false;
                }
            }
        }
        send
    }
}

/// The headers of an event that decide who hears it.
pub struct EventKeys<'a> {
    name: &'a str,
    subclass: Option<&'a str>,
    unique_id: Option<&'a str>,
}

impl<'a> EventKeys<'a> {
    pub fn of(event: &'a Event) -> Self {
        EventKeys {
            name: event.name(),
            subclass: event.subclass(),
            unique_id: event.unique_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, pairs: &[(&str, &str)]) -> Event {
        let mut e = Event::bare().with("Event-Name", name);
        for (n, v) in pairs {
            e.push(*n, *v);
        }
        e
    }

    #[test]
    fn event_names_are_case_insensitive_and_custom_takes_subclasses() {
        let mut sub = Subscription::default();
        assert_eq!(sub.event_command("json bogus"), "-ERR no keywords supplied");
        assert!(!sub.is_listening());
        assert_eq!(
            sub.event_command("json channel_answer CUSTOM sofia::register CHANNEL_HANGUP"),
            "+OK event listener enabled json"
        );
        assert!(sub.wants(&event("CHANNEL_ANSWER", &[])));
        // Every word after CUSTOM is a subclass, even an event name.
        assert!(!sub.wants(&event("CHANNEL_HANGUP", &[])));
        assert!(sub.wants(&event("CUSTOM", &[("Event-Subclass", "sofia::register")])));
        assert!(!sub.wants(&event("CUSTOM", &[("Event-Subclass", "sofia::expire")])));
        // The first format sticks for the connection.
        assert_eq!(
            sub.event_command("plain HEARTBEAT"),
            "+OK event listener enabled json"
        );
        assert_eq!(sub.nixevent_command("CHANNEL_ANSWER"), "+OK events nixed");
        assert!(!sub.wants(&event("CHANNEL_ANSWER", &[])));
        assert_eq!(sub.noevents_command(), "+OK no longer listening for events");
        assert_eq!(sub.noevents_command(), "-ERR not listening for events");
    }

    #[test]
    fn filters_positive_negative_regex_and_delete() {
        let mut sub = Subscription::default();
        sub.event_command("plain ALL");
        assert!(sub.wants(&event("CUSTOM", &[("Event-Subclass", "x::y")])));
        assert_eq!(
            sub.filter_command("Unique-ID abc"),
            "+OK filter added. [Unique-ID]=[abc]"
        );
        assert!(sub.wants(&event("CHANNEL_ANSWER", &[("Unique-ID", "ABC")])));
        assert!(!sub.wants(&event("CHANNEL_ANSWER", &[("Unique-ID", "other")])));
        // A Unique-ID filter hides BACKGROUND_JOB, which has no Unique-ID.
        assert!(!sub.wants(&event("BACKGROUND_JOB", &[])));
        sub.filter_command("Event-Name /^BACKGROUND_/");
        assert!(sub.wants(&event("BACKGROUND_JOB", &[])));
        sub.filter_command("Answer-State -hangup");
        assert!(!sub.wants(&event(
            "CHANNEL_HANGUP",
            &[("Unique-ID", "abc"), ("Answer-State", "hangup")]
        )));
        assert_eq!(
            sub.filter_command("delete Answer-State"),
            "+OK filter deleted. [Answer-State][]"
        );
        assert!(sub.wants(&event(
            "CHANNEL_HANGUP",
            &[("Unique-ID", "abc"), ("Answer-State", "hangup")]
        )));
        assert_eq!(
            sub.filter_command("delete all"),
            "+OK filter deleted. [all][]"
        );
        assert!(sub.wants(&event("CHANNEL_ANSWER", &[("Unique-ID", "other")])));
        assert_eq!(sub.filter_command("Unique-ID"), "-ERR invalid syntax");
        assert_eq!(sub.filter_command("delete"), "-ERR invalid syntax");
    }

    #[test]
    fn myevents_keeps_own_channel_and_own_jobs() {
        let mut sub = Subscription::default();
        sub.myevents("u1", Format::Json);
        assert!(sub.wants(&event("CHANNEL_EXECUTE", &[("Unique-ID", "u1")])));
        assert!(!sub.wants(&event("CHANNEL_EXECUTE", &[("Unique-ID", "u2")])));
        assert!(!sub.wants(&event("CUSTOM", &[("Event-Subclass", "sofia::register")])));
        sub.event_command("json BACKGROUND_JOB");
        assert!(sub.wants(&event("BACKGROUND_JOB", &[("Job-Owner-UUID", "u1")])));
        assert!(!sub.wants(&event("BACKGROUND_JOB", &[("Job-Owner-UUID", "u9")])));
    }
}
