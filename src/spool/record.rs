//! The finished-call record: what the call flows hand to the spool when a call is over.
//!
//! Defined once here and re-exported as `spool::CallRecord`; the mail, the calendar event and
//! the journal line are all built from it. Strings that came from the network (caller ID
//! name, numbers) are untrusted and kept as received; every writer escapes them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calls::Origin;
use crate::contacts::Contact;

/// One finished call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// FreeSWITCH's Unique-ID of the A leg; the calendar UID and the Message-ID derive from it.
    pub uuid: String,
    pub origin: Origin,
    /// The other party's number, E.164 when it could be normalised.
    pub peer_number: String,
    /// The caller ID name as received (untrusted).
    pub caller_id_name: String,
    /// The address-book entry for the peer number, if any.
    pub contact: Option<Contact>,
    /// The DID involved: the number they called (inbound) or the one used to call out.
    pub did: Option<String>,
    /// Language of the call ("fr", "ko"), which picks the speech-to-text model.
    pub language: Option<String>,
    pub started: DateTime<Utc>,
    pub answered: Option<DateTime<Utc>>,
    pub ended: DateTime<Utc>,
    pub outcome: Outcome,
    /// The devices that rang, in the order they were bridged.
    pub devices_rung: Vec<String>,
    /// Every rule that matched, in order.
    pub rules_matched: Vec<String>,
    /// The rule whose decision was applied, if any.
    pub deciding_rule: Option<String>,
    pub hangup_cause: Option<String>,
    /// Where the conversation of an answered call was recorded (rules' `record`), if it was.
    #[serde(default)]
    pub conversation: Option<PathBuf>,
    /// Blind transfers during the call, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// Device legs that dropped mid-call (media timeout, network) while the caller stayed on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<DroppedLeg>,
    /// Who was with the caller in a three-way call, when there was one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conference: Vec<String>,
}

/// One blind transfer: who passed the caller on, to whom, and how they asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The device that transferred ("desk").
    pub from: String,
    /// Where the caller went ("cell", "+33 6 12 34 56 78").
    pub to: String,
    pub method: TransferMethod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMethod {
    /// The transfer feature code pressed on the device (`*1` number `#`).
    FeatureCode,
    /// The device's own transfer key (SIP REFER).
    Refer,
}

/// A device leg that ended on the device's side while the caller was still there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedLeg {
    pub device: String,
    /// FreeSWITCH's hangup cause for the leg (MEDIA_TIMEOUT, NORMAL_TEMPORARY_FAILURE, ...).
    pub cause: String,
}

/// How the call ended, as the person cares about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Outcome {
    /// Picked up on one of the person's devices.
    Answered { by_device: String, talk_secs: u64 },
    /// Rang out, no voicemail left.
    Missed,
    /// The caller left a message. `recording` is where the audio sits: FreeSWITCH's file when
    /// the flows hand the record over, the spool's own copy once submitted.
    Voicemail {
        recording: PathBuf,
        duration_secs: u64,
    },
    /// Placed from one of the person's devices.
    Outgoing {
        from_device: String,
        answered: bool,
        talk_secs: u64,
    },
    /// Refused by a rule without ringing anyone.
    Declined,
}

impl Outcome {
    /// The iCalendar category and the short word used in file names.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Answered { .. } => "answered",
            Outcome::Missed => "missed",
            Outcome::Voicemail { .. } => "voicemail",
            Outcome::Outgoing { .. } => "outgoing",
            Outcome::Declined => "declined",
        }
    }
}

impl CallRecord {
    /// The peer number as people write it ("+1 514-555-0199").
    pub fn peer_display(&self) -> String {
        crate::contacts::number::display(&self.peer_number)
    }

    /// The contact's name, else the caller ID name; `None` when neither says anything.
    /// Untrusted: control characters are still in there.
    pub fn peer_name(&self) -> Option<&str> {
        match &self.contact {
            Some(contact) if !contact.name.trim().is_empty() => Some(&contact.name),
            _ if !self.caller_id_name.trim().is_empty() => Some(&self.caller_id_name),
            _ => None,
        }
    }

    /// Who the call was with, for a subject line or a summary: the name, else the number.
    pub fn peer_label(&self) -> String {
        match self.peer_name() {
            Some(name) => name.to_owned(),
            None => self.peer_display(),
        }
    }

    /// Seconds of the call that matter to the person: talk time, message length, else 0.
    pub fn duration_secs(&self) -> u64 {
        match &self.outcome {
            Outcome::Answered { talk_secs, .. } | Outcome::Outgoing { talk_secs, .. } => *talk_secs,
            Outcome::Voicemail { duration_secs, .. } => *duration_secs,
            Outcome::Missed | Outcome::Declined => 0,
        }
    }
}

/// "0:42", "12:03", "1:02:03".
pub fn format_duration(secs: u64) -> String {
    let (hours, minutes, seconds) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(format_duration(42), "0:42");
        assert_eq!(format_duration(723), "12:03");
        assert_eq!(format_duration(3723), "1:02:03");
    }
}
