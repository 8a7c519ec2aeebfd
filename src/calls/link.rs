//! What the inbound ESL link reports, applied to the live picture: device registrations and
//! gateway states go into the [`Registry`], failures become outage incidents, and the person
//! reads one journal line per thing that changed (not one per retry).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::outage::{Change, Outages, Subject};
use super::registry::{Health, Registry};
use super::session::Clock;
use crate::freeswitch::esl::event::{
    ChannelEventKind, GatewayState, LinkEvent, RegistrationSummary,
};
use crate::freeswitch::esl::inbound::LinkEvents;
use crate::journal::Journal;
use crate::repo::Snapshot;
use crate::rules::{SharedResources, Value};

/// Applies link events as they come.
pub struct LinkWatcher {
    registry: Arc<Registry>,
    outages: Arc<Mutex<Outages>>,
    journal: Journal,
    clock: Clock,
    /// The live phone repo, whose `outage::begin` / `outage::end` handlers run on changes.
    rules: Option<Arc<ArcSwap<Snapshot>>>,
}

fn health(state: GatewayState) -> Health {
    if state.is_up() {
        Health::Up
    } else if state.is_down() {
        Health::Down
    } else {
        Health::Transient
    }
}

impl LinkWatcher {
    pub fn new(
        registry: Arc<Registry>,
        outages: Arc<Mutex<Outages>>,
        journal: Journal,
        clock: Clock,
    ) -> LinkWatcher {
        LinkWatcher {
            registry,
            outages,
            journal,
            clock,
            rules: None,
        }
    }

    /// Runs the live rules' `outage::begin` and `outage::end` handlers for each incident.
    pub fn with_rules(mut self, snapshots: Arc<ArcSwap<Snapshot>>) -> LinkWatcher {
        self.rules = Some(snapshots);
        self
    }

    /// An incident began or ended: journal line (unless `quiet`), then the rules' handlers.
    fn changed(&self, change: &Change, quiet: bool) {
        if !quiet {
            self.journal.write(change.journal_line());
        }
        let Some(snapshots) = &self.rules else {
            return;
        };
        let (event, data) = match change {
            Change::Began(incident) => ("outage::begin", outage_data(incident, None)),
            Change::Ended { incident, ended } => {
                ("outage::end", outage_data(incident, Some(*ended)))
            }
            Change::Updated(_) => return,
        };
        let snapshot = snapshots.load_full();
        if snapshot.rules().handler_count(event) == 0 {
            return;
        }
        let journal = self.journal.clone();
        let run = move || {
            let resources: SharedResources = snapshot.clone();
            let outcome = snapshot
                .rules()
                .run_event_without_call(event, &data, &resources);
            for line in outcome.logs {
                journal.write(line);
            }
            for error in outcome.errors {
                journal.write(format!(
                    "rule problem in an `on(\"{event}\")` handler: {error}"
                ));
            }
        };
        // Off the link's path: a slow handler must not hold up registrations.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(run);
            }
            Err(_) => run(),
        }
    }

    /// Applies events until the link's channel closes.
    pub async fn run(self, mut events: LinkEvents) {
        while let Some(event) = events.recv().await {
            self.apply(&event);
        }
    }

    fn outages(&self) -> std::sync::MutexGuard<'_, Outages> {
        self.outages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ended(&self, subject: &Subject) {
        let change = self.outages().up(subject, (self.clock)());
        if let Some(change) = change {
            self.changed(&change, false);
        }
    }

    /// After a (re)connect: FreeSWITCH's registrations replace what was known, since the
    /// events of devices that came or went while the link was down reached nobody.
    fn replace_registrations(&self, registrations: &[RegistrationSummary], now: DateTime<Utc>) {
        let known = self.registry.registered_devices();
        for extension in &known {
            if !registrations.iter().any(|row| &row.reg_user == extension) {
                self.registry.device_gone(extension);
                self.journal.write(format!(
                    "device {extension} signed off while the FreeSWITCH link was down"
                ));
            }
        }
        for row in registrations {
            let expires_in = row.expires.parse::<i64>().ok().map_or(3600, |at| {
                (at - now.timestamp()).clamp(1, i64::from(u32::MAX))
            });
            let new = self.registry.device_registered(
                &row.reg_user,
                &row.url,
                &row.network_ip,
                u32::try_from(expires_in).unwrap_or(u32::MAX),
                now,
            );
            self.ended(&Subject::Device(row.reg_user.clone()));
            if new {
                self.journal.write(format!(
                    "device {} registered from {}",
                    row.reg_user,
                    if row.network_ip.is_empty() {
                        "an unknown address"
                    } else {
                        &row.network_ip
                    }
                ));
            }
        }
    }

    /// Applies one event.
    pub fn apply(&self, event: &LinkEvent) {
        let now = (self.clock)();
        match event {
            LinkEvent::DeviceRegistered(registration) => {
                let new = self.registry.device_registered(
                    &registration.user,
                    registration.contact.as_deref().unwrap_or(""),
                    registration.network_ip.as_deref().unwrap_or(""),
                    registration.expires.unwrap_or(3600),
                    now,
                );
                self.ended(&Subject::Device(registration.user.clone()));
                if new {
                    self.journal.write(format!(
                        "device {} registered from {}",
                        registration.user,
                        registration
                            .network_ip
                            .as_deref()
                            .unwrap_or("an unknown address")
                    ));
                }
            }
            LinkEvent::DeviceUnregistered(registration) => {
                if self.registry.device_gone(&registration.user).is_some() {
                    self.journal
                        .write(format!("device {} signed off", registration.user));
                }
            }
            LinkEvent::DeviceExpired(registration) => {
                self.registry.device_gone(&registration.user);
                let change = self.outages().down(
                    Subject::Device(registration.user.clone()),
                    "its registration expired without a refresh",
                    now,
                );
                if let Change::Began(_) = change {
                    self.changed(&change, false);
                }
            }
            LinkEvent::GatewayState {
                gateway,
                state,
                status,
                phrase,
            } => {
                let health = health(*state);
                let change = self
                    .registry
                    .gateway_state(gateway, state.as_str(), health, now);
                let subject = Subject::Gateway(gateway.clone());
                match health {
                    Health::Down => {
                        let detail = match (status, phrase) {
                            (Some(status), Some(phrase)) => {
                                format!("{} {status} {phrase}", state.as_str())
                            }
                            _ => state.as_str().to_owned(),
                        };
                        let change = self.outages().down(subject, &detail, now);
                        if let Change::Began(_) = change {
                            self.changed(&change, false);
                        }
                    }
                    Health::Up => {
                        let had_incident = self
                            .outages()
                            .open()
                            .iter()
                            .any(|incident| incident.subject == subject);
                        if had_incident {
                            self.ended(&subject);
                        } else if change.is_some() {
                            self.journal.write(format!("gateway {gateway} registered"));
                        }
                    }
                    Health::Transient => {}
                }
            }
            LinkEvent::LinkDown { reason } => {
                // The inbound client writes the journal line; the incident feeds `status`.
                let change = self.outages().down(Subject::Link, reason, now);
                if let Change::Began(_) = change {
                    self.changed(&change, true);
                }
            }
            LinkEvent::LinkRestored { .. } | LinkEvent::LinkUp => {
                let change = self.outages().up(&Subject::Link, now);
                if let Some(change) = change {
                    self.changed(&change, true);
                }
            }
            LinkEvent::Snapshot {
                registrations: Some(registrations),
                ..
            } => self.replace_registrations(registrations, now),
            LinkEvent::Channel(channel) => match (&channel.kind, channel.dtmf_digit) {
                (ChannelEventKind::Dtmf, Some(digit)) => {
                    self.registry.leg_digit(channel.uuid(), digit)
                }
                (ChannelEventKind::Hangup | ChannelEventKind::Destroy, _) => {
                    self.registry.leg_gone(channel.uuid())
                }
                _ => {}
            },
            LinkEvent::Heartbeat { .. }
            | LinkEvent::BackgroundJob { .. }
            | LinkEvent::Snapshot { .. } => {}
        }
    }
}

/// `data` of the outage events: `#{ what, kind, name, detail, began, seconds }`.
fn outage_data(
    incident: &super::outage::Incident,
    ended: Option<chrono::DateTime<chrono::Utc>>,
) -> Value {
    let (kind, name) = match &incident.subject {
        Subject::Gateway(name) => ("gateway", name.as_str()),
        Subject::Device(extension) => ("device", extension.as_str()),
        Subject::Link => ("link", ""),
    };
    let seconds = ended.map_or(0, |ended| (ended - incident.began).num_seconds().max(0));
    let mut data = BTreeMap::new();
    data.insert("what".to_owned(), Value::from(incident.subject.to_string()));
    data.insert("kind".to_owned(), Value::from(kind));
    data.insert("name".to_owned(), Value::from(name));
    data.insert("detail".to_owned(), Value::from(incident.detail.clone()));
    data.insert(
        "began".to_owned(),
        Value::from(
            incident
                .began
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    );
    data.insert("seconds".to_owned(), Value::Int(seconds));
    Value::Map(data)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::freeswitch::esl::event::Registration;

    fn watcher() -> (
        LinkWatcher,
        Arc<Registry>,
        Journal,
        Arc<std::sync::atomic::AtomicI64>,
    ) {
        let registry = Arc::new(Registry::new());
        let journal = Journal::in_memory(chrono_tz::UTC);
        let seconds = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let now = Arc::clone(&seconds);
        let clock: Clock = Arc::new(move || {
            DateTime::<Utc>::from_timestamp(
                1_764_000_000 + now.load(std::sync::atomic::Ordering::SeqCst),
                0,
            )
            .unwrap()
        });
        let watcher = LinkWatcher::new(
            Arc::clone(&registry),
            Arc::new(Mutex::new(Outages::new())),
            journal.clone(),
            clock,
        );
        (watcher, registry, journal, seconds)
    }

    fn gateway(state: GatewayState, status: Option<u16>) -> LinkEvent {
        LinkEvent::GatewayState {
            gateway: "did1".into(),
            state,
            status,
            phrase: status.map(|_| "Service Unavailable".to_owned()),
        }
    }

    fn lines(journal: &Journal) -> Vec<String> {
        journal
            .recent()
            .iter()
            .map(|line| line[20..].to_owned())
            .collect()
    }

    #[test]
    fn the_captured_failure_loop_is_one_incident() {
        let (watcher, registry, journal, seconds) = watcher();
        for (at, state, status) in [
            (0, GatewayState::Trying, None),
            (0, GatewayState::Register, Some(200)),
            (0, GatewayState::Reged, Some(200)),
            (15, GatewayState::Register, Some(200)),
            (15, GatewayState::Reged, Some(200)),
            (26, GatewayState::Failed, Some(503)),
            (26, GatewayState::FailWait, None),
            (36, GatewayState::Unreged, None),
            (36, GatewayState::Trying, None),
            (36, GatewayState::Failed, Some(503)),
            (36, GatewayState::FailWait, None),
            (100, GatewayState::Trying, None),
            (100, GatewayState::Reged, Some(200)),
        ] {
            seconds.store(at, std::sync::atomic::Ordering::SeqCst);
            watcher.apply(&gateway(state, status));
        }
        assert_eq!(
            lines(&journal),
            vec![
                "gateway did1 registered",
                "outage: gateway did1 is down (FAILED 503 Service Unavailable)",
                "gateway did1 is back after 1 min 14 s",
            ]
        );
        assert_eq!(registry.gateways_up(), vec!["did1".to_owned()]);
    }

    #[test]
    fn devices_register_sign_off_and_expire() {
        let (watcher, registry, journal, _) = watcher();
        let registration = Registration {
            user: "1000".into(),
            realm: "pbx".into(),
            contact: Some("sip:1000@10.0.0.2".into()),
            network_ip: Some("10.0.0.2".into()),
            expires: Some(600),
        };
        watcher.apply(&LinkEvent::DeviceRegistered(registration.clone()));
        watcher.apply(&LinkEvent::DeviceRegistered(registration.clone()));
        assert_eq!(registry.device_count(), 1);
        watcher.apply(&LinkEvent::DeviceExpired(registration.clone()));
        assert_eq!(registry.device_count(), 0);
        watcher.apply(&LinkEvent::DeviceRegistered(registration.clone()));
        watcher.apply(&LinkEvent::DeviceUnregistered(registration));
        assert_eq!(
            lines(&journal),
            vec![
                "device 1000 registered from 10.0.0.2",
                "outage: device 1000 is down (its registration expired without a refresh)",
                "device 1000 is back after 0 s",
                "device 1000 registered from 10.0.0.2",
                "device 1000 signed off",
            ]
        );
    }
}
