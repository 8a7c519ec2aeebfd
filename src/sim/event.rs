//! Events as the simulator builds them: ordered headers with plain (decoded) values and an
//! optional body, encoded to plain or json only when a listener wants them.

use crate::freeswitch::esl::frame;

/// The wire format a listener chose with `event plain|json|xml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
    /// Accepted as FreeSWITCH does, but sent as plain: XML events are not simulated.
    Xml,
}

impl Format {
    /// Parses the format word of `event`/`myevents`, case-insensitively.
    pub fn parse(word: &str) -> Option<Format> {
        if word.eq_ignore_ascii_case("plain") {
            Some(Format::Plain)
        } else if word.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else if word.eq_ignore_ascii_case("xml") {
            Some(Format::Xml)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Json => "json",
            Format::Xml => "xml",
        }
    }
}

/// One FreeSWITCH event. Header values are plain text; encoding happens in [`Event::write`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Event {
    /// An event with no headers yet; the simulator adds the core headers when it is created
    /// through `Sim`, so most callers use that instead.
    pub fn bare() -> Self {
        Self::default()
    }

    /// Builds an event from decoded headers and a body, e.g. one read back from a capture.
    pub fn from_parts(headers: Vec<(String, String)>, body: Option<Vec<u8>>) -> Self {
        Self { headers, body }
    }

    /// Appends a header (FreeSWITCH keeps duplicates; lookups return the first).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the first header with this name, or appends it.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name.to_owned(), value)),
        }
        self
    }

    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }

    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) -> &mut Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of a header, names matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn name(&self) -> &str {
        self.get("Event-Name").unwrap_or("")
    }

    pub fn subclass(&self) -> Option<&str> {
        self.get("Event-Subclass")
    }

    pub fn unique_id(&self) -> Option<&str> {
        self.get("Unique-ID")
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Appends the event as a whole ESL frame in `format` to `out`.
    pub fn write(&self, format: Format, out: &mut Vec<u8>) {
        let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        match format {
            Format::Plain | Format::Xml => frame::write_event_plain(out, headers, self.body()),
            Format::Json => frame::write_event_json(out, headers, self.body()),
        }
    }
}
