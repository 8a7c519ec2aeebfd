//! Outages: incidents with a beginning, updates, an end and a duration, for gateways (the
//! person's numbers), devices that dropped off the network and the FreeSWITCH link itself.
//!
//! The tracker is pure bookkeeping: callers feed it "down" and "up" observations with the
//! time, and turn what it returns into journal lines and `outage::begin` / `outage::end`
//! rule events. One incident per subject: a failure loop (FAILED, FAIL_WAIT, FAILED...) is
//! one incident with updates, not a new one per retry.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::journal::human_duration;

/// What is out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Subject {
    /// A DID's gateway, by gateway name.
    Gateway(String),
    /// A device whose registration expired (it vanished without unregistering).
    Device(String),
    /// The ESL link between patchbay and FreeSWITCH.
    Link,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Gateway(name) => write!(f, "gateway {name}"),
            Subject::Device(extension) => write!(f, "device {extension}"),
            Subject::Link => f.write_str("the FreeSWITCH link"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub subject: Subject,
    pub began: DateTime<Utc>,
    /// The latest reason given ("FAILED 503 Service Unavailable").
    pub detail: String,
    /// How many further "down" observations arrived while it was open.
    pub updates: u32,
}

/// What an observation did to the incident list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Began(Incident),
    Updated(Incident),
    Ended {
        incident: Incident,
        ended: DateTime<Utc>,
    },
}

impl Change {
    /// The journal line for this change.
    pub fn journal_line(&self) -> String {
        match self {
            Change::Began(incident) => {
                format!("outage: {} is down ({})", incident.subject, incident.detail)
            }
            Change::Updated(incident) => format!(
                "outage: {} still down ({}, attempt {})",
                incident.subject,
                incident.detail,
                incident.updates + 1
            ),
            Change::Ended { incident, ended } => {
                let lasted = (*ended - incident.began).to_std().unwrap_or_default();
                format!(
                    "{} is back after {}",
                    incident.subject,
                    human_duration(lasted)
                )
            }
        }
    }
}

#[derive(Default)]
pub struct Outages {
    open: HashMap<Subject, Incident>,
}

impl Outages {
    pub fn new() -> Outages {
        Outages::default()
    }

    /// The subject was seen down.
    pub fn down(&mut self, subject: Subject, detail: &str, now: DateTime<Utc>) -> Change {
        match self.open.get_mut(&subject) {
            Some(incident) => {
                incident.updates += 1;
                incident.detail = detail.to_owned();
                Change::Updated(incident.clone())
            }
            None => {
                let incident = Incident {
                    subject: subject.clone(),
                    began: now,
                    detail: detail.to_owned(),
                    updates: 0,
                };
                self.open.insert(subject, incident.clone());
                Change::Began(incident)
            }
        }
    }

    /// The subject was seen up; ends its incident if one was open.
    pub fn up(&mut self, subject: &Subject, now: DateTime<Utc>) -> Option<Change> {
        self.open.remove(subject).map(|incident| Change::Ended {
            incident,
            ended: now,
        })
    }

    /// Open incidents, oldest first.
    pub fn open(&self) -> Vec<Incident> {
        let mut open: Vec<Incident> = self.open.values().cloned().collect();
        open.sort_by_key(|incident| incident.began);
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_failure_loop_is_one_incident_with_a_duration() {
        let mut outages = Outages::new();
        let gateway = Subject::Gateway("did1".into());
        let began = outages.down(gateway.clone(), "FAILED 503 Service Unavailable", at(0));
        assert!(matches!(began, Change::Began(_)));
        assert_eq!(
            began.journal_line(),
            "outage: gateway did1 is down (FAILED 503 Service Unavailable)"
        );
        let again = outages.down(gateway.clone(), "FAILED 503 Service Unavailable", at(10));
        assert!(matches!(
            again,
            Change::Updated(Incident { updates: 1, .. })
        ));
        assert_eq!(outages.open().len(), 1);
        let ended = outages.up(&gateway, at(133)).unwrap();
        assert_eq!(
            ended.journal_line(),
            "gateway did1 is back after 2 min 13 s"
        );
        assert!(outages.open().is_empty());
        assert_eq!(outages.up(&gateway, at(140)), None);
    }

    #[test]
    fn subjects_are_independent() {
        let mut outages = Outages::new();
        outages.down(Subject::Link, "connection refused", at(0));
        outages.down(
            Subject::Device("1001".into()),
            "registration expired",
            at(5),
        );
        assert_eq!(outages.open().len(), 2);
        assert_eq!(outages.open()[0].subject, Subject::Link);
        let ended = outages.up(&Subject::Link, at(4)).unwrap();
        assert_eq!(
            ended.journal_line(),
            "the FreeSWITCH link is back after 4 s"
        );
    }
}
