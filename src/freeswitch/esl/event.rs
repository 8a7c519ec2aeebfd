//! Wire events turned into the plain types the rest of patchbay uses.
//!
//! Both links end here: the inbound client hands freeswitch-esl-tokio's events, the outbound
//! session hands its own [`WireEvent`]s, and both go through the [`Headers`] view into
//! [`LinkEvent`] / [`ChannelEvent`]. Nothing outside `freeswitch/` sees a header map.
//! Invariant: a mandatory header that is missing is an [`Error`], never a made-up default.

use std::time::Duration;

use freeswitch_esl_tokio::EslEvent;

use super::frame::{url_decode, Frame};

/// An event that cannot be turned into a plain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("esl event {event}: header {header} is missing (FreeSWITCH always sends it)")]
    MissingHeader { event: String, header: &'static str },
    #[error("esl event {event}: header {header} is {value:?}, expected {expected}")]
    BadHeader {
        event: String,
        header: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("esl event: {what} is not a valid {format} event: {detail}")]
    Malformed {
        format: &'static str,
        what: &'static str,
        detail: String,
    },
}

/// Read access to an event's headers, whichever side decoded it.
pub trait Headers {
    /// A header's (decoded) value; names are matched without regard to case.
    fn header(&self, name: &str) -> Option<&str>;
    fn body(&self) -> Option<&str>;
}

impl Headers for EslEvent {
    fn header(&self, name: &str) -> Option<&str> {
        self.header_str(name)
    }
    fn body(&self) -> Option<&str> {
        EslEvent::body(self)
    }
}

/// One event as the outbound session decodes it: headers in wire order, values decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireEvent {
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Headers for WireEvent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
    fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

impl WireEvent {
    /// Decode a `text/event-plain` body: URL-encoded `Name: value` lines, then optionally
    /// `Content-Length: N`, an empty line and N raw bytes (the same shape as a frame).
    pub fn from_plain(data: &[u8]) -> Result<WireEvent, Error> {
        let malformed = |detail: String| Error::Malformed {
            format: "plain",
            what: "event",
            detail,
        };
        let (frame, _) = Frame::parse(data)
            .map_err(|error| malformed(error.to_string()))?
            .ok_or_else(|| {
                malformed("the header block or the announced body is cut short".to_owned())
            })?;
        let headers = frame
            .headers()
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("Content-Length"))
            .map(|(name, value)| (name.clone(), url_decode(value).into_owned()))
            .collect();
        let body = frame
            .into_body()
            .map(|body| String::from_utf8_lossy(&body).into_owned());
        Ok(WireEvent { headers, body })
    }

    /// Decode a `text/event-json` body: one object of strings (arrays kept as JSON text),
    /// the body in `_body`.
    pub fn from_json(data: &[u8]) -> Result<WireEvent, Error> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(data)
            .map_err(|error| Error::Malformed {
                format: "json",
                what: "event",
                detail: error.to_string(),
            })?;
        let mut event = WireEvent {
            headers: Vec::with_capacity(object.len()),
            body: None,
        };
        for (name, value) in object {
            let value = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            if name == "_body" {
                event.body = Some(value);
            } else {
                event.headers.push((name, value));
            }
        }
        Ok(event)
    }
}

/// The 11 gateway registration states of `sofia_reg.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayState {
    Unreged,
    Trying,
    Register,
    Reged,
    Unregister,
    Failed,
    FailWait,
    Expired,
    Noreg,
    Down,
    Timeout,
}

impl GatewayState {
    pub fn parse(state: &str) -> Option<GatewayState> {
        Some(match state {
            "UNREGED" => GatewayState::Unreged,
            "TRYING" => GatewayState::Trying,
            "REGISTER" => GatewayState::Register,
            "REGED" => GatewayState::Reged,
            "UNREGISTER" => GatewayState::Unregister,
            "FAILED" => GatewayState::Failed,
            "FAIL_WAIT" => GatewayState::FailWait,
            "EXPIRED" => GatewayState::Expired,
            "NOREG" => GatewayState::Noreg,
            "DOWN" => GatewayState::Down,
            "TIMEOUT" => GatewayState::Timeout,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GatewayState::Unreged => "UNREGED",
            GatewayState::Trying => "TRYING",
            GatewayState::Register => "REGISTER",
            GatewayState::Reged => "REGED",
            GatewayState::Unregister => "UNREGISTER",
            GatewayState::Failed => "FAILED",
            GatewayState::FailWait => "FAIL_WAIT",
            GatewayState::Expired => "EXPIRED",
            GatewayState::Noreg => "NOREG",
            GatewayState::Down => "DOWN",
            GatewayState::Timeout => "TIMEOUT",
        }
    }

    /// Registered: calls can come in through it.
    pub fn is_up(self) -> bool {
        self == GatewayState::Reged
    }

    /// Registration failed or was removed.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            GatewayState::Failed
                | GatewayState::FailWait
                | GatewayState::Timeout
                | GatewayState::Down
        )
    }

    /// On the way somewhere (a refresh passes REGISTER on its way back to REGED).
    pub fn is_transient(self) -> bool {
        !self.is_up() && !self.is_down()
    }
}

/// A device registration, from the CUSTOM sofia::register / unregister / expire events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub user: String,
    pub realm: String,
    /// The SIP contact as the device sent it (untrusted).
    pub contact: Option<String>,
    pub network_ip: Option<String>,
    /// Seconds the registration lasts (0 when it ends).
    pub expires: Option<u32>,
}

/// What kind of channel event this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEventKind {
    Create,
    Progress,
    ProgressMedia,
    Answer,
    Bridge,
    Unbridge,
    Originate,
    Park,
    Unpark,
    Execute,
    ExecuteComplete,
    Hangup,
    HangupComplete,
    Destroy,
    Dtmf,
    State,
    /// Any other CHANNEL_* or call event, by name.
    Other(String),
}

impl ChannelEventKind {
    fn parse(name: &str) -> Option<ChannelEventKind> {
        Some(match name {
            "CHANNEL_CREATE" => ChannelEventKind::Create,
            "CHANNEL_PROGRESS" => ChannelEventKind::Progress,
            "CHANNEL_PROGRESS_MEDIA" => ChannelEventKind::ProgressMedia,
            "CHANNEL_ANSWER" => ChannelEventKind::Answer,
            "CHANNEL_BRIDGE" => ChannelEventKind::Bridge,
            "CHANNEL_UNBRIDGE" => ChannelEventKind::Unbridge,
            "CHANNEL_ORIGINATE" => ChannelEventKind::Originate,
            "CHANNEL_PARK" => ChannelEventKind::Park,
            "CHANNEL_UNPARK" => ChannelEventKind::Unpark,
            "CHANNEL_EXECUTE" => ChannelEventKind::Execute,
            "CHANNEL_EXECUTE_COMPLETE" => ChannelEventKind::ExecuteComplete,
            "CHANNEL_HANGUP" => ChannelEventKind::Hangup,
            "CHANNEL_HANGUP_COMPLETE" => ChannelEventKind::HangupComplete,
            "CHANNEL_DESTROY" => ChannelEventKind::Destroy,
            "DTMF" => ChannelEventKind::Dtmf,
            "CHANNEL_STATE" => ChannelEventKind::State,
            other if other.starts_with("CHANNEL_") || other == "CALL_UPDATE" => {
                ChannelEventKind::Other(other.to_owned())
            }
            _ => return None,
        })
    }
}

/// Call direction as FreeSWITCH sees the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Channel variables worth carrying out of an event; the rest stay on the wire.
const KEPT_VARIABLES: &[&str] = &[
    "hangup_cause",
    "sip_hangup_disposition",
    "duration",
    "billsec",
    "originate_disposition",
    "originate_failed_cause",
    "bridge_channel",
    "last_bridge_to",
    "bridge_hangup_cause",
    "record_ms",
    "silence_hits_exhausted",
    "read_result",
    "playback_terminator_used",
    "patchbay_digits",
    "sip_from_user",
    "sip_to_user",
    "sip_req_user",
];

/// One channel event in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub kind: ChannelEventKind,
    pub name: Option<String>,
    pub uuid: String,
    pub call_uuid: Option<String>,
    pub direction: Option<Direction>,
    pub answer_state: Option<String>,
    pub hangup_cause: Option<String>,
    pub caller_id_name: Option<String>,
    pub caller_id_number: Option<String>,
    pub destination_number: Option<String>,
    pub other_leg_uuid: Option<String>,
    pub application: Option<String>,
    pub application_uuid: Option<String>,
    pub application_data: Option<String>,
    pub application_response: Option<String>,
    pub dtmf_digit: Option<char>,
    /// The few `variable_*` values patchbay reads, without the prefix.
    pub variables: Vec<(String, String)>,
}

impl ChannelEvent {
    /// Decode a channel event; `Ok(None)` when the event is not a channel event.
    pub fn from_headers(event: &impl Headers) -> Result<Option<ChannelEvent>, Error> {
        let Some(name) = event.header("Event-Name") else {
            return Err(Error::MissingHeader {
                event: "(unnamed)".to_owned(),
                header: "Event-Name",
            });
        };
        let Some(kind) = ChannelEventKind::parse(name) else {
            return Ok(None);
        };
        let uuid = event
            .header("Unique-ID")
            .ok_or_else(|| Error::MissingHeader {
                event: name.to_owned(),
                header: "Unique-ID",
            })?;
        let owned = |header: &str| event.header(header).map(str::to_owned);
        let direction = match event.header("Call-Direction") {
            Some("inbound") => Some(Direction::Inbound),
            Some("outbound") => Some(Direction::Outbound),
            _ => None,
        };
        let dtmf_digit = event
            .header("DTMF-Digit")
            .and_then(|digit| digit.chars().next());
        let mut variables = Vec::new();
        let mut key = String::with_capacity(40);
        for variable in KEPT_VARIABLES {
            key.clear();
            key.push_str("variable_");
            key.push_str(variable);
            if let Some(value) = event.header(&key) {
                variables.push(((*variable).to_owned(), value.to_owned()));
            }
        }
        Ok(Some(ChannelEvent {
            kind,
            name: owned("Channel-Name"),
            uuid: uuid.to_owned(),
            call_uuid: owned("Channel-Call-UUID"),
            direction,
            answer_state: owned("Answer-State"),
            hangup_cause: owned("Hangup-Cause"),
            caller_id_name: owned("Caller-Caller-ID-Name"),
            caller_id_number: owned("Caller-Caller-ID-Number"),
            destination_number: owned("Caller-Destination-Number"),
            other_leg_uuid: owned("Other-Leg-Unique-ID"),
            application: owned("Application"),
            application_uuid: owned("Application-UUID"),
            application_data: owned("Application-Data"),
            application_response: owned("Application-Response"),
            dtmf_digit,
            variables,
        }))
    }

    /// A kept channel variable (name without `variable_`).
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One row of `show channels as json`, used to rebuild the picture after a reconnect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChannelSummary {
    pub uuid: String,
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub callstate: String,
    #[serde(default)]
    pub cid_name: String,
    #[serde(default)]
    pub cid_num: String,
    #[serde(default)]
    pub dest: String,
    #[serde(default)]
    pub call_uuid: String,
}

/// Parse the output of `show channels as json` (`{"row_count":0}` when there are none).
pub fn parse_channel_list(output: &str) -> Result<Vec<ChannelSummary>, Error> {
    #[derive(serde::Deserialize)]
    struct Listing {
        #[serde(default)]
        rows: Vec<ChannelSummary>,
    }
    let listing: Listing = serde_json::from_str(output).map_err(|error| Error::Malformed {
        format: "json",
        what: "show channels output",
        detail: error.to_string(),
    })?;
    Ok(listing.rows)
}

/// What the inbound link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    DeviceRegistered(Registration),
    DeviceUnregistered(Registration),
    DeviceExpired(Registration),
    GatewayState {
        gateway: String,
        state: GatewayState,
        /// SIP status code when a response caused the change (`200`, `503`).
        status: Option<u16>,
        phrase: Option<String>,
    },
    Channel(Box<ChannelEvent>),
    Heartbeat {
        uptime_msec: Option<u64>,
        session_count: Option<u32>,
    },
    BackgroundJob {
        job_uuid: String,
        body: String,
    },
    /// Connected and subscribed (first time and after every reconnect).
    LinkUp,
    /// The channels FreeSWITCH has right after (re)connecting; events are never replayed,
    /// so this replaces whatever was known before.
    Snapshot {
        channels: Vec<ChannelSummary>,
    },
    LinkDown {
        reason: String,
    },
    /// Connected again after an outage.
    LinkRestored {
        down_for: Duration,
    },
}

impl LinkEvent {
    /// Decode one wire event; `Ok(None)` for events patchbay does not use.
    pub fn from_headers(event: &impl Headers) -> Result<Option<LinkEvent>, Error> {
        let name = event
            .header("Event-Name")
            .ok_or_else(|| Error::MissingHeader {
                event: "(unnamed)".to_owned(),
                header: "Event-Name",
            })?;
        match name {
            "HEARTBEAT" => Ok(Some(LinkEvent::Heartbeat {
                uptime_msec: event.header("Uptime-msec").and_then(|v| v.parse().ok()),
                session_count: event.header("Session-Count").and_then(|v| v.parse().ok()),
            })),
            "BACKGROUND_JOB" => {
                let job_uuid = event
                    .header("Job-UUID")
                    .ok_or_else(|| Error::MissingHeader {
                        event: name.to_owned(),
                        header: "Job-UUID",
                    })?;
                Ok(Some(LinkEvent::BackgroundJob {
                    job_uuid: job_uuid.to_owned(),
                    body: event.body().unwrap_or_default().to_owned(),
                }))
            }
            "CUSTOM" => custom_event(event),
            _ => Ok(ChannelEvent::from_headers(event)?
                .map(|channel| LinkEvent::Channel(Box::new(channel)))),
        }
    }
}

fn custom_event(event: &impl Headers) -> Result<Option<LinkEvent>, Error> {
    let Some(subclass) = event.header("Event-Subclass") else {
        return Ok(None);
    };
    let required = |header: &'static str| {
        event
            .header(header)
            .map(str::to_owned)
            .ok_or_else(|| Error::MissingHeader {
                event: subclass.to_owned(),
                header,
            })
    };
    let registration = |user: &'static str, realm: &'static str| -> Result<Registration, Error> {
        Ok(Registration {
            user: required(user)?,
            realm: required(realm)?,
            contact: event.header("contact").map(str::to_owned),
            network_ip: event.header("network-ip").map(str::to_owned),
            expires: event.header("expires").and_then(|v| v.parse().ok()),
        })
    };
    Ok(Some(match subclass {
        "sofia::register" => LinkEvent::DeviceRegistered(registration("username", "realm")?),
        "sofia::unregister" => LinkEvent::DeviceUnregistered(registration("username", "realm")?),
        "sofia::expire" => LinkEvent::DeviceExpired(registration("user", "host")?),
        "sofia::gateway_state" => {
            let gateway = required("Gateway")?;
            let raw_state = required("State")?;
            let state = GatewayState::parse(&raw_state).ok_or_else(|| Error::BadHeader {
                event: subclass.to_owned(),
                header: "State",
                value: raw_state.clone(),
                expected: "one of sofia's gateway states (REGED, FAILED, ...)",
            })?;
            LinkEvent::GatewayState {
                gateway,
                state,
                status: event.header("Status").and_then(|v| v.parse().ok()),
                phrase: event.header("Phrase").map(str::to_owned),
            }
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_event_with_a_body() {
        let data = b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nContent-Length: 4\n\n+OK\n";
        let event = WireEvent::from_plain(data).unwrap();
        match LinkEvent::from_headers(&event).unwrap() {
            Some(LinkEvent::BackgroundJob { job_uuid, body }) => {
                assert_eq!(job_uuid, "j1");
                assert_eq!(body, "+OK\n");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_short_body_is_an_error_not_a_panic() {
        let data = b"Event-Name: BACKGROUND_JOB\nContent-Length: 400\n\n+OK\n";
        assert!(WireEvent::from_plain(data).is_err());
        assert!(WireEvent::from_json(b"{\"Event-Name\": ").is_err());
    }

    #[test]
    fn gateway_states_classify() {
        let up: Vec<_> = [
            "UNREGED",
            "TRYING",
            "REGISTER",
            "REGED",
            "UNREGISTER",
            "FAILED",
            "FAIL_WAIT",
            "EXPIRED",
            "NOREG",
            "DOWN",
            "TIMEOUT",
        ]
        .iter()
        .map(|s| GatewayState::parse(s).unwrap())
        .collect();
        assert_eq!(up.iter().filter(|s| s.is_up()).count(), 1);
        assert_eq!(up.iter().filter(|s| s.is_down()).count(), 4);
        assert_eq!(up.iter().filter(|s| s.is_transient()).count(), 6);
        assert!(up
            .iter()
            .all(|s| GatewayState::parse(s.as_str()) == Some(*s)));
    }

    #[test]
    fn channel_list_parses_empty_and_rows() {
        assert!(parse_channel_list("{\"row_count\":0}").unwrap().is_empty());
        let rows = parse_channel_list(
            r#"{"row_count":1,"rows":[{"uuid":"u1","direction":"inbound","name":"sofia/x","state":"CS_EXECUTE","callstate":"ACTIVE","cid_name":"A","cid_num":"1","dest":"9999"}]}"#,
        )
        .unwrap();
        assert_eq!(rows[0].uuid, "u1");
        assert_eq!(rows[0].dest, "9999");
        assert!(parse_channel_list("-ERR no reply").is_err());
    }
}
