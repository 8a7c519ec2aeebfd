use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::contacts::Contact;

/// Where a call comes from, as the rules see it (`call.origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// From the outside world, through a DID.
    External,
    /// From one of the person's own devices.
    Internal,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::External => "external",
            Origin::Internal => "internal",
        }
    }
}

/// One call, as the rules engine sees it (the "call fields" of docs/rules.md).
///
/// Numbers are E.164 where they could be normalised, else as received. Strings that came
/// from the network (caller ID name and number) are untrusted and stay as received here;
/// whoever writes them into XML, a mail header or iCalendar escapes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// FreeSWITCH's Unique-ID of the call's A leg.
    pub uuid: String,
    pub origin: Origin,
    /// The other party's number (E.164 when it could be normalised).
    pub peer_number: String,
    /// The caller ID name as received (untrusted).
    pub caller_id_name: String,
    /// The caller ID number as received (untrusted).
    pub caller_id_number: String,
    /// The number that was dialled.
    pub destination_number: String,
    /// The DID involved (the number called for inbound calls), if any.
    pub did: Option<String>,
    /// ISO 3166 alpha-2 code of the peer number's country, if known.
    pub country: Option<String>,
    /// A finer location (e.g. "CA-QC") when the numbering plan tells it.
    pub location: Option<String>,
    /// The address-book entry for the peer number, if any.
    pub contact: Option<Contact>,
    /// Local time of the call in the settings' timezone.
    pub local_time: NaiveDateTime,
    /// Number of devices registered when the call arrived.
    pub device_count: u32,
    /// Whether the person is already on another call.
    pub busy: bool,
    /// Whether the person switched do-not-disturb on (`*86`, 3); kept across restarts.
    #[serde(default)]
    pub do_not_disturb: bool,
    /// Channel state in plain words ("ringing", "answered", "hangup").
    pub state: String,
    pub hangup_cause: Option<String>,
}

impl Call {
    /// The contact's name, else the caller ID name (`call.peer_name`).
    pub fn peer_name(&self) -> &str {
        match &self.contact {
            Some(contact) if !contact.name.is_empty() => &contact.name,
            _ => &self.caller_id_name,
        }
    }
}
