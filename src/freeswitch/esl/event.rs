//! Wire events turned into the plain types the rest of patchbay uses.
//!
//! Both links end here: event bodies are read as borrowed views ([`PlainView`], [`JsonView`];
//! the inbound hot path allocates only for values it keeps or must decode) or as an owned
//! [`WireEvent`] (the outbound session, which keeps whole completions), and all of them go
//! through the [`Headers`] trait into [`LinkEvent`] / [`ChannelEvent`]. Nothing outside
//! `freeswitch/` sees a header map.
//! Invariant: a mandatory header that is missing is an [`Error`], never a made-up default.

use std::time::Duration;

use std::borrow::Cow;
use std::ops::ControlFlow;

use super::frame::url_decode;
use super::scan::{self, RawValue};

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
    /// Every header in wire order, names as FreeSWITCH spelled them.
    fn each<'s>(&'s self, visit: impl FnMut(&'s str, &'s str));
}

/// One event as the outbound session decodes it: headers in wire order, values decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireEvent {
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Headers for WireEvent {
    fn each<'s>(&'s self, mut visit: impl FnMut(&'s str, &'s str)) {
        for (name, value) in &self.headers {
            visit(name, value);
        }
    }
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
    /// Decode a `text/event-plain` body into owned headers.
    pub fn from_plain(data: &[u8]) -> Result<WireEvent, Error> {
        let view = PlainView::parse(data)?;
        Ok(WireEvent {
            headers: view
                .entries
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.into_owned()))
                .collect(),
            body: view.body.map(Cow::into_owned),
        })
    }

    /// Decode a `text/event-json` body into owned headers.
    pub fn from_json(data: &[u8]) -> Result<WireEvent, Error> {
        let view = JsonView::parse(data)?;
        let mut event = WireEvent {
            headers: Vec::with_capacity(view.entries.len()),
            body: None,
        };
        for (name, value) in view.entries {
            if name == "_body" {
                event.body = Some(value.into_owned());
            } else {
                event.headers.push((name.into_owned(), value.into_owned()));
            }
        }
        Ok(event)
    }
}

fn find_header(entries: &[(impl AsRef<str>, Cow<'_, str>)], name: &str) -> Option<usize> {
    entries
        .iter()
        .position(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
}

/// A `text/event-plain` body read in place: URL-encoded `Name: value` lines, then optionally
/// `Content-Length: N`, an empty line and N raw bytes. Only values holding `%` are copied.
pub struct PlainView<'a> {
    entries: Vec<(&'a str, Cow<'a, str>)>,
    body: Option<Cow<'a, str>>,
}

impl<'a> PlainView<'a> {
    pub fn parse(data: &'a [u8]) -> Result<PlainView<'a>, Error> {
        let malformed = |detail: String| Error::Malformed {
            format: "plain",
            what: "event",
            detail,
        };
        // Values are URL-encoded, so the header block is ASCII; the raw body after it may
        // be anything, so only the valid prefix is taken as text.
        let text = match std::str::from_utf8(data) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&data[..error.valid_up_to()]).unwrap_or_default(),
        };
        let header_end = text.find("\n\n").ok_or_else(|| {
            malformed("the header block has no terminating empty line or is not UTF-8".into())
        })?;
        let block = &text[..header_end];
        let mut entries = Vec::with_capacity(128);
        let mut content_length = None;
        for line in block.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            // Names are short: a plain scan beats memchr's setup on every one of ~100 lines.
            let Some(colon) = line.bytes().position(|byte| byte == b':') else {
                return Err(malformed(format!("{line:?} has no ':'")));
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let value = value.strip_prefix(' ').unwrap_or(value);
            if name.eq_ignore_ascii_case("Content-Length") {
                content_length =
                    Some(value.parse::<usize>().map_err(|_| {
                        malformed(format!("Content-Length {value:?} is not a number"))
                    })?);
                continue;
            }
            entries.push((name, url_decode(value)));
        }
        let rest = &data[header_end + 2..];
        let body = match content_length {
            Some(length) => Some(String::from_utf8_lossy(rest.get(..length).ok_or_else(
                || {
                    malformed(format!(
                        "Content-Length says {length} bytes, only {} follow",
                        rest.len()
                    ))
                },
            )?)),
            None => None,
        };
        Ok(PlainView { entries, body })
    }
}

impl Headers for PlainView<'_> {
    fn each<'s>(&'s self, mut visit: impl FnMut(&'s str, &'s str)) {
        for (name, value) in &self.entries {
            visit(name, value);
        }
    }
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.entries, name).map(|index| self.entries[index].1.as_ref())
    }
    fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

/// A `text/event-json` body read in place: strings borrowed unless they hold escapes, arrays
/// turned back into FreeSWITCH's `ARRAY::a|:b`, the body in `_body`.
pub struct JsonView<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> JsonView<'a> {
    pub fn parse(data: &'a [u8]) -> Result<JsonView<'a>, Error> {
        let entries: JsonEntries<'a> =
            serde_json::from_slice(data).map_err(|error| Error::Malformed {
                format: "json",
                what: "event",
                detail: error.to_string(),
            })?;
        Ok(JsonView { entries: entries.0 })
    }
}

impl Headers for JsonView<'_> {
    fn each<'s>(&'s self, mut visit: impl FnMut(&'s str, &'s str)) {
        for (name, value) in &self.entries {
            visit(name, value);
        }
    }
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.entries, name).map(|index| self.entries[index].1.as_ref())
    }
    fn body(&self) -> Option<&str> {
        self.header("_body")
    }
}

struct JsonEntries<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de> serde::Deserialize<'de> for JsonEntries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> serde::de::Visitor<'de> for MapVisitor {
            type Value = JsonEntries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an ESL event object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(128));
                while let Some(key) = map.next_key::<JsonText<'de>>()? {
                    let value = map.next_value::<JsonText<'de>>()?;
                    entries.push((key.0, value.0));
                }
                Ok(JsonEntries(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// A JSON value as ESL text: strings as they are, arrays as `ARRAY::a|:b`, others printed.
struct JsonText<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, an array of strings or a scalar")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(value)))
            }
            fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(value.to_string())))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(value.to_string())))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(value.to_string())))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(value.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed("")))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Self::Value, S::Error> {
                let mut text = String::from("ARRAY::");
                let mut first = true;
                while let Some(item) = seq.next_element::<JsonText<'de>>()? {
                    if !first {
                        text.push_str("|:");
                    }
                    first = false;
                    text.push_str(&item.0);
                }
                Ok(JsonText(Cow::Owned(text)))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                _map: M,
            ) -> Result<Self::Value, M::Error> {
                Err(serde::de::Error::custom(
                    "an ESL event value is never an object",
                ))
            }
        }
        deserializer.deserialize_any(TextVisitor)
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

/// The headers [`ChannelFields::take`] reads, besides `variable_*` ones.
const CHANNEL_FIELDS: NameFilter = NameFilter::of(&[
    "Unique-ID",
    "Channel-Name",
    "Channel-Call-UUID",
    "Call-Direction",
    "Answer-State",
    "Hangup-Cause",
    "Caller-Caller-ID-Name",
    "Caller-Caller-ID-Number",
    "Caller-Destination-Number",
    "Other-Leg-Unique-ID",
    "Application",
    "Application-UUID",
    "Application-Data",
    "Application-Response",
    "DTMF-Digit",
]);

const KEPT_VARIABLE_NAMES: NameFilter = NameFilter::of(KEPT_VARIABLES);

/// A 128-bit Bloom-style filter over a few header names, keyed on length and first and last
/// byte: `false` means certainly not one of them, at the cost of a few integer operations.
struct NameFilter([u64; 2]);

impl NameFilter {
    const fn slot(name: &[u8]) -> u32 {
        let (len, first, last) = match name {
            [] => (0, 0, 0),
            [first, .., last] => (name.len() as u32, *first as u32, *last as u32),
            [only] => (1, *only as u32, *only as u32),
        };
        (len.wrapping_mul(31) ^ first.wrapping_mul(7) ^ last) & 127
    }

    const fn of(names: &[&str]) -> NameFilter {
        let mut bits = [0u64; 2];
        let mut index = 0;
        while index < names.len() {
            let slot = NameFilter::slot(names[index].as_bytes());
            bits[(slot >> 6) as usize] |= 1 << (slot & 63);
            index += 1;
        }
        NameFilter(bits)
    }

    fn may_hold(&self, name: &[u8]) -> bool {
        let slot = NameFilter::slot(name);
        self.0[(slot >> 6) as usize] & (1 << (slot & 63)) != 0
    }
}

/// A header value a [`ChannelEvent`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelField {
    /// `Channel-Name`, e.g. `sofia/internal/1000@10.0.0.2`.
    Name,
    CallUuid,
    AnswerState,
    HangupCause,
    CallerIdName,
    CallerIdNumber,
    DestinationNumber,
    OtherLegUuid,
    Application,
    ApplicationUuid,
    ApplicationData,
    ApplicationResponse,
}

impl ChannelField {
    const ALL: [ChannelField; 12] = [
        ChannelField::Name,
        ChannelField::CallUuid,
        ChannelField::AnswerState,
        ChannelField::HangupCause,
        ChannelField::CallerIdName,
        ChannelField::CallerIdNumber,
        ChannelField::DestinationNumber,
        ChannelField::OtherLegUuid,
        ChannelField::Application,
        ChannelField::ApplicationUuid,
        ChannelField::ApplicationData,
        ChannelField::ApplicationResponse,
    ];

    fn slot(self) -> usize {
        1 + self as usize
    }
}

/// Slot 0 holds the Unique-ID, then one per [`ChannelField`], then one per kept variable.
const SLOTS: usize = 1 + ChannelField::ALL.len() + KEPT_VARIABLES.len();
// `ChannelEvent::present` has one bit per slot.
const _: () = assert!(SLOTS <= 32);

/// One channel event in plain words.
///
/// The kept values sit one after another in a single string: the inbound link decodes every
/// channel event of the switch, and one allocation per event instead of one per value is
/// a good part of its speed (the events are freed on another thread than the one that
/// builds them, which makes each allocation dearer).
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub kind: ChannelEventKind,
    pub direction: Option<Direction>,
    pub dtmf_digit: Option<char>,
    text: String,
    /// Where each slot's value ends in `text`; it starts where the one before ends.
    ends: [u32; SLOTS],
    /// Bit `i` set when slot `i` has a value (an empty one counts).
    present: u32,
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
        let mut fields = ChannelFields::new(kind);
        event.each(|header, value| fields.take(header.as_bytes(), || Cow::Borrowed(value)));
        fields.finish(name).map(Some)
    }

    /// The channel's `Unique-ID`.
    pub fn uuid(&self) -> &str {
        self.slot(0).unwrap_or_default()
    }

    pub fn get(&self, field: ChannelField) -> Option<&str> {
        self.slot(field.slot())
    }

    /// A kept channel variable (name without `variable_`).
    pub fn variable(&self, name: &str) -> Option<&str> {
        let index = KEPT_VARIABLES.iter().position(|kept| *kept == name)?;
        self.slot(1 + ChannelField::ALL.len() + index)
    }

    fn slot(&self, index: usize) -> Option<&str> {
        if self.present & (1 << index) == 0 {
            return None;
        }
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        self.text.get(start..self.ends[index] as usize)
    }
}

impl std::fmt::Debug for ChannelEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("ChannelEvent");
        out.field("kind", &self.kind)
            .field("uuid", &self.uuid())
            .field("direction", &self.direction)
            .field("dtmf_digit", &self.dtmf_digit);
        for field in ChannelField::ALL {
            if let Some(value) = self.get(field) {
                out.field(&format!("{field:?}"), &value);
            }
        }
        let variables: Vec<(&str, &str)> = KEPT_VARIABLES
            .iter()
            .filter_map(|name| Some((*name, self.variable(name)?)))
            .collect();
        out.field("variables", &variables).finish()
    }
}

/// A [`ChannelEvent`] being filled from its headers, in one pass over them (they number
/// about 150 and this runs for every event on the inbound link). Values are decoded only
/// for the headers kept, and stay borrowed from the body until [`ChannelFields::finish`]
/// copies them all into one string.
struct ChannelFields<'v> {
    kind: ChannelEventKind,
    direction: Option<Direction>,
    dtmf_digit: Option<char>,
    values: [Option<Cow<'v, str>>; SLOTS],
}

impl<'v> ChannelFields<'v> {
    fn new(kind: ChannelEventKind) -> Self {
        ChannelFields {
            kind,
            direction: None,
            dtmf_digit: None,
            values: [const { None }; SLOTS],
        }
    }

    /// Take one header. FreeSWITCH spells these names one way only; the first of a repeated
    /// header wins, as [`Headers::header`] has it.
    fn take(&mut self, header: &[u8], value: impl FnOnce() -> Cow<'v, str>) {
        let slot = if let Some(variable) = header.strip_prefix(b"variable_") {
            // Most of the ~150 headers are none of ours: turn them away on a hash before any
            // byte comparison.
            if !KEPT_VARIABLE_NAMES.may_hold(variable) {
                return;
            }
            match KEPT_VARIABLES
                .iter()
                .position(|kept| kept.as_bytes() == variable)
            {
                Some(index) => 1 + ChannelField::ALL.len() + index,
                None => return,
            }
        } else {
            if !CHANNEL_FIELDS.may_hold(header) {
                return;
            }
            let field = match header {
                b"Unique-ID" => 0,
                b"Call-Direction" => {
                    self.direction = match value().as_ref() {
                        "inbound" => Some(Direction::Inbound),
                        "outbound" => Some(Direction::Outbound),
                        _ => None,
                    };
                    return;
                }
                b"DTMF-Digit" => {
                    self.dtmf_digit = value().chars().next();
                    return;
                }
                b"Channel-Name" => ChannelField::Name.slot(),
                b"Channel-Call-UUID" => ChannelField::CallUuid.slot(),
                b"Answer-State" => ChannelField::AnswerState.slot(),
                b"Hangup-Cause" => ChannelField::HangupCause.slot(),
                b"Caller-Caller-ID-Name" => ChannelField::CallerIdName.slot(),
                b"Caller-Caller-ID-Number" => ChannelField::CallerIdNumber.slot(),
                b"Caller-Destination-Number" => ChannelField::DestinationNumber.slot(),
                b"Other-Leg-Unique-ID" => ChannelField::OtherLegUuid.slot(),
                b"Application" => ChannelField::Application.slot(),
                b"Application-UUID" => ChannelField::ApplicationUuid.slot(),
                b"Application-Data" => ChannelField::ApplicationData.slot(),
                b"Application-Response" => ChannelField::ApplicationResponse.slot(),
                _ => return,
            };
            field
        };
        let kept = &mut self.values[slot];
        if kept.is_none() {
            *kept = Some(value());
        }
    }

    fn finish(self, event_name: &str) -> Result<ChannelEvent, Error> {
        if self.values[0].is_none() {
            return Err(Error::MissingHeader {
                event: event_name.to_owned(),
                header: "Unique-ID",
            });
        }
        let length: usize = self.values.iter().flatten().map(|value| value.len()).sum();
        // Offsets are u32: an event body is far below 4 GiB (frames are capped much lower).
        let mut text = String::with_capacity(length);
        let mut ends = [0u32; SLOTS];
        let mut present = 0u32;
        for (index, value) in self.values.iter().enumerate() {
            if let Some(value) = value {
                text.push_str(value);
                present |= 1 << index;
            }
            ends[index] = u32::try_from(text.len()).map_err(|_| Error::Malformed {
                format: "event",
                what: "channel event",
                detail: "kept values longer than 4 GiB".to_owned(),
            })?;
        }
        Ok(ChannelEvent {
            kind: self.kind,
            direction: self.direction,
            dtmf_digit: self.dtmf_digit,
            text,
            ends,
            present,
        })
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

/// One row of `show registrations as json` (the core registrations table mod_sofia fills).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RegistrationSummary {
    pub reg_user: String,
    #[serde(default)]
    pub realm: String,
    /// `sofia/internal/sip:1000@10.0.0.2:5060`.
    #[serde(default)]
    pub url: String,
    /// When the registration expires, in seconds since the epoch (as text).
    #[serde(default)]
    pub expires: String,
    #[serde(default)]
    pub network_ip: String,
    #[serde(default)]
    pub network_port: String,
}

/// Parse the output of `show registrations as json` (`{"row_count":0}` when there are none).
pub fn parse_registration_list(output: &str) -> Result<Vec<RegistrationSummary>, Error> {
    #[derive(serde::Deserialize)]
    struct Listing {
        #[serde(default)]
        rows: Vec<RegistrationSummary>,
    }
    let listing: Listing = serde_json::from_str(output).map_err(|error| Error::Malformed {
        format: "json",
        what: "show registrations output",
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
    Channel(ChannelEvent),
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
        /// The devices registered right now; `None` when FreeSWITCH could not say (what
        /// was known is then kept).
        registrations: Option<Vec<RegistrationSummary>>,
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
            _ => Ok(ChannelEvent::from_headers(event)?.map(LinkEvent::Channel)),
        }
    }
}

/// How an event body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Plain,
    Json,
}

impl LinkEvent {
    /// Decode one event body straight off the inbound link. Channel events, nearly all the
    /// traffic, take one pass that decodes only the values kept (see [`super::scan`]); other
    /// events, and bodies in a shape the scanners do not read, go through the full views.
    pub fn from_body(format: BodyFormat, body: &[u8]) -> Result<Option<LinkEvent>, Error> {
        fn scan<'b>(
            format: BodyFormat,
            body: &'b [u8],
            visit: impl FnMut(&'b [u8], RawValue<'b>) -> ControlFlow<()>,
        ) -> Result<(), scan::Unsupported> {
            match format {
                BodyFormat::Plain => scan::scan_plain(body, visit),
                BodyFormat::Json => scan::scan_json(body, visit),
            }
        }
        // FreeSWITCH writes Event-Name first, so finding it costs next to nothing.
        let mut event_name = None;
        let found = scan(format, body, |header, value| {
            if header.eq_ignore_ascii_case(b"Event-Name") {
                event_name = Some(value.decode());
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if let (Ok(()), Some(name)) = (found, &event_name) {
            if let Some(kind) = ChannelEventKind::parse(name) {
                let mut fields = ChannelFields::new(kind);
                let whole = scan(format, body, |header, value| {
                    fields.take(header, || value.decode());
                    ControlFlow::Continue(())
                });
                if whole.is_ok() {
                    return fields
                        .finish(name)
                        .map(|channel| Some(LinkEvent::Channel(channel)));
                }
            } else if matches!(name.as_ref(), "CUSTOM" | "HEARTBEAT") {
                // Registrations and gateway states are frequent too, and read a dozen
                // headers: collect just those, then decode as usual.
                let mut picked = Picked::default();
                let whole = scan(format, body, |header, value| {
                    if let Some(name) = PICKED_HEADERS
                        .iter()
                        .find(|name| name.as_bytes().eq_ignore_ascii_case(header))
                    {
                        picked.0.push((name, value.decode()));
                    }
                    ControlFlow::Continue(())
                });
                if whole.is_ok() {
                    return LinkEvent::from_headers(&picked);
                }
            }
        }
        match format {
            BodyFormat::Plain => LinkEvent::from_headers(&PlainView::parse(body)?),
            BodyFormat::Json => LinkEvent::from_headers(&JsonView::parse(body)?),
        }
    }
}

/// Every header [`LinkEvent::from_headers`] reads from CUSTOM sofia events and HEARTBEAT.
const PICKED_HEADERS: &[&str] = &[
    "Event-Name",
    "Event-Subclass",
    "username",
    "realm",
    "user",
    "host",
    "contact",
    "network-ip",
    "expires",
    "Gateway",
    "State",
    "Status",
    "Phrase",
    "Uptime-msec",
    "Session-Count",
];

/// The [`PICKED_HEADERS`] of one event, decoded, in wire order.
#[derive(Default)]
struct Picked<'a>(Vec<(&'static str, Cow<'a, str>)>);

impl Headers for Picked<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.0, name).map(|index| self.0[index].1.as_ref())
    }
    fn body(&self) -> Option<&str> {
        None
    }
    fn each<'s>(&'s self, mut visit: impl FnMut(&'s str, &'s str)) {
        for (name, value) in &self.0 {
            visit(name, value);
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
    fn json_view_borrows_strings_and_flattens_arrays() {
        let data = br#"{"Event-Name":"CHANNEL_ANSWER","Unique-ID":"u1","Caller-Caller-ID-Name":"Marie \"M\" <D\u00e9>","variable_originate_causes":["a;NONE","b;LOSE_RACE"],"Content-Length":"3","_body":"ok\n"}"#;
        let view = JsonView::parse(data).unwrap();
        assert_eq!(
            view.header("caller-caller-id-name"),
            Some("Marie \"M\" <Dé>")
        );
        assert_eq!(
            view.header("variable_originate_causes"),
            Some("ARRAY::a;NONE|:b;LOSE_RACE")
        );
        assert_eq!(view.body(), Some("ok\n"));
        let event = ChannelEvent::from_headers(&view).unwrap().unwrap();
        assert_eq!(event.kind, ChannelEventKind::Answer);
        assert!(JsonView::parse(br#"{"Event-Name":{"nested":"x"}}"#).is_err());
        assert!(JsonView::parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn plain_view_decodes_values_and_rejects_broken_blocks() {
        let data = b"Event-Name: CHANNEL_CREATE\nUnique-ID: u1\nCaller-Caller-ID-Name: Marie%20%3CD%C3%A9%3E\n\n";
        let view = PlainView::parse(data).unwrap();
        assert_eq!(view.header("Caller-Caller-ID-Name"), Some("Marie <Dé>"));
        assert!(view.body().is_none());
        assert!(PlainView::parse(b"Event-Name: X\nno colon here\n\n").is_err());
        assert!(PlainView::parse(b"Event-Name: X\n").is_err());
        assert!(PlainView::parse(b"Event-Name: \xff\n\n").is_err());
    }

    #[test]
    fn a_channel_event_keeps_each_value_apart_and_tells_empty_from_missing() {
        let data = b"Event-Name: CHANNEL_EXECUTE_COMPLETE\nUnique-ID: u1\n\
Channel-Name: sofia/internal/1000%40pbx\nApplication: bridge\nApplication-Data: \n\
Hangup-Cause: NORMAL_CLEARING\nHangup-Cause: SECOND\nvariable_read_result: success\n\
variable_not_kept: x\nvariable_billsec: 0\n\n";
        let view = PlainView::parse(data).unwrap();
        let event = ChannelEvent::from_headers(&view).unwrap().unwrap();
        assert_eq!(event.uuid(), "u1");
        assert_eq!(
            event.get(ChannelField::Name),
            Some("sofia/internal/1000@pbx")
        );
        assert_eq!(event.get(ChannelField::Application), Some("bridge"));
        assert_eq!(event.get(ChannelField::ApplicationData), Some(""));
        assert_eq!(event.get(ChannelField::ApplicationUuid), None);
        assert_eq!(
            event.get(ChannelField::HangupCause),
            Some("NORMAL_CLEARING")
        );
        assert_eq!(event.variable("read_result"), Some("success"));
        assert_eq!(event.variable("billsec"), Some("0"));
        assert_eq!(event.variable("duration"), None);
        assert_eq!(event.variable("not_kept"), None);
        let debug = format!("{event:?}");
        assert!(debug.contains("Application: \"bridge\""), "{debug}");
        assert!(debug.contains("(\"billsec\", \"0\")"), "{debug}");
    }

    #[test]
    fn a_channel_event_without_unique_id_is_an_error() {
        let view = PlainView::parse(b"Event-Name: CHANNEL_ANSWER\n\n").unwrap();
        assert!(matches!(
            ChannelEvent::from_headers(&view),
            Err(Error::MissingHeader {
                header: "Unique-ID",
                ..
            })
        ));
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
