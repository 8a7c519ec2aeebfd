//! The live picture of the phone system: which devices are registered, which gateways (DIDs)
//! are up, which calls are in progress. Fed from FreeSWITCH events by the ESL side, read by
//! the call flows (device count, busy) and by `patchbay status`.
//!
//! A std `Mutex` guards it: every operation is a few map updates and nothing awaits while the
//! lock is held.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Origin;

/// How a gateway's registration state reads for the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
    /// Between two states (TRYING, REGISTER, UNREGED...): not a reason to raise an alarm.
    Transient,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub extension: String,
    pub contact: String,
    pub network_ip: String,
    pub registered_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub name: String,
    /// The sofia state as FreeSWITCH names it (REGED, FAIL_WAIT, ...).
    pub state: String,
    pub health: Health,
    /// When the gateway last changed between up and down.
    pub since: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveCall {
    pub uuid: String,
    pub origin: Origin,
    /// The other party, for people ("+1 514-555-0199" or a contact name).
    pub peer: String,
    pub started: DateTime<Utc>,
    pub answered: bool,
}

/// What `patchbay status` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub devices: Vec<Device>,
    pub gateways: Vec<Gateway>,
    pub calls: Vec<ActiveCall>,
}

/// A gateway moving between up and down (transient states never make one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayChange {
    pub name: String,
    pub from: Option<Health>,
    pub to: Health,
    pub state: String,
}

#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    devices: BTreeMap<String, Device>,
    gateways: BTreeMap<String, Gateway>,
    calls: HashMap<String, ActiveCall>,
    /// Legs whose DTMF a call flow follows (a bridged device's, for feature codes).
    digit_watchers: HashMap<String, tokio::sync::mpsc::UnboundedSender<char>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves maps that are still consistent (every
        // update is a single insert/remove), so keep serving rather than poison every call.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a REGISTER; returns true when the device was not registered before.
    pub fn device_registered(
        &self,
        extension: &str,
        contact: &str,
        network_ip: &str,
        expires_secs: u32,
        now: DateTime<Utc>,
    ) -> bool {
        let device = Device {
            extension: extension.to_owned(),
            contact: contact.to_owned(),
            network_ip: network_ip.to_owned(),
            registered_at: now,
            expires_at: now + Duration::seconds(i64::from(expires_secs)),
        };
        let mut state = self.lock();
        match state.devices.get_mut(extension) {
            Some(existing) => {
                // A refresh keeps the original registration time.
                existing.contact = device.contact;
                existing.network_ip = device.network_ip;
                existing.expires_at = device.expires_at;
                false
            }
            None => {
                state.devices.insert(extension.to_owned(), device);
                true
            }
        }
    }

    /// Records an unregister or an expiry; returns the device if it was registered.
    pub fn device_gone(&self, extension: &str) -> Option<Device> {
        self.lock().devices.remove(extension)
    }

    /// Drops registrations past their expiry (a missed expire event must not keep a dead
    /// device ringing forever); returns the extensions dropped.
    pub fn expire_devices(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut state = self.lock();
        let expired: Vec<String> = state
            .devices
            .values()
            .filter(|device| device.expires_at <= now)
            .map(|device| device.extension.clone())
            .collect();
        for extension in &expired {
            state.devices.remove(extension);
        }
        expired
    }

    /// Registered extensions, sorted.
    pub fn registered_devices(&self) -> Vec<String> {
        self.lock().devices.keys().cloned().collect()
    }

    pub fn device_count(&self) -> u32 {
        u32::try_from(self.lock().devices.len()).unwrap_or(u32::MAX)
    }

    /// Records a gateway state; returns a change when the gateway went up or down.
    pub fn gateway_state(
        &self,
        name: &str,
        sofia_state: &str,
        health: Health,
        now: DateTime<Utc>,
    ) -> Option<GatewayChange> {
        let mut state = self.lock();
        let previous = state.gateways.get(name).map(|gateway| gateway.health);
        let settled_before = state
            .gateways
            .get(name)
            .map(|gateway| gateway.health)
            .filter(|health| *health != Health::Transient);
        let entry = state
            .gateways
            .entry(name.to_owned())
            .or_insert_with(|| Gateway {
                name: name.to_owned(),
                state: sofia_state.to_owned(),
                health,
                since: now,
            });
        entry.state = sofia_state.to_owned();
        if health == Health::Transient {
            // Keep the last settled health so that REGISTER between two REGED is no change.
            if previous.is_none() {
                entry.health = Health::Transient;
            }
            return None;
        }
        entry.health = health;
        if settled_before == Some(health) {
            return None;
        }
        entry.since = now;
        Some(GatewayChange {
            name: name.to_owned(),
            from: settled_before,
            to: health,
            state: sofia_state.to_owned(),
        })
    }

    pub fn gateway(&self, name: &str) -> Option<Gateway> {
        self.lock().gateways.get(name).cloned()
    }

    /// Gateways currently up, sorted by name.
    pub fn gateways_up(&self) -> Vec<String> {
        let state = self.lock();
        state
            .gateways
            .values()
            .filter(|gateway| gateway.health == Health::Up)
            .map(|gateway| gateway.name.clone())
            .collect()
    }

    pub fn call_started(&self, uuid: &str, origin: Origin, peer: &str, now: DateTime<Utc>) {
        let call = ActiveCall {
            uuid: uuid.to_owned(),
            origin,
            peer: peer.to_owned(),
            started: now,
            answered: false,
        };
        self.lock().calls.insert(uuid.to_owned(), call);
    }

    pub fn call_answered(&self, uuid: &str) {
        if let Some(call) = self.lock().calls.get_mut(uuid) {
            call.answered = true;
        }
    }

    pub fn call_ended(&self, uuid: &str) -> Option<ActiveCall> {
        self.lock().calls.remove(uuid)
    }

    /// The person is on a call: some call other than `except` has been answered.
    /// Digits pressed on leg `uuid` from now on, until the leg hangs up or the receiver is
    /// dropped. A second watch on the same leg replaces the first.
    pub fn watch_leg_digits(&self, uuid: &str) -> tokio::sync::mpsc::UnboundedReceiver<char> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        self.lock().digit_watchers.insert(uuid.to_owned(), sender);
        receiver
    }

    /// A DTMF digit on some leg (from the event link).
    pub fn leg_digit(&self, uuid: &str, digit: char) {
        let mut state = self.lock();
        let delivered = match state.digit_watchers.get(uuid) {
            Some(watcher) => watcher.send(digit).is_ok(),
            None => return,
        };
        if !delivered {
            state.digit_watchers.remove(uuid);
        }
    }

    /// A leg hung up: nobody needs its digits any more.
    pub fn leg_gone(&self, uuid: &str) {
        self.lock().digit_watchers.remove(uuid);
    }

    pub fn busy(&self, except: &str) -> bool {
        self.lock()
            .calls
            .values()
            .any(|call| call.answered && call.uuid != except)
    }

    pub fn status(&self) -> Status {
        let state = self.lock();
        let mut calls: Vec<ActiveCall> = state.calls.values().cloned().collect();
        calls.sort_by_key(|call| call.started);
        Status {
            devices: state.devices.values().cloned().collect(),
            gateways: state.gateways.values().cloned().collect(),
            calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn registrations_refresh_and_expire() {
        let registry = Registry::new();
        assert!(registry.device_registered("1000", "sip:1000@10.0.0.2", "10.0.0.2", 60, at(0)));
        assert!(!registry.device_registered("1000", "sip:1000@10.0.0.2", "10.0.0.2", 60, at(30)));
        assert!(registry.device_registered("1001", "sip:1001@10.0.0.3", "10.0.0.3", 60, at(0)));
        assert_eq!(registry.device_count(), 2);
        // 1001 was not refreshed: gone at 60 s; 1000 was refreshed at 30 s: lives to 90 s.
        assert_eq!(registry.expire_devices(at(60)), vec!["1001".to_owned()]);
        assert_eq!(registry.registered_devices(), vec!["1000".to_owned()]);
        assert_eq!(registry.status().devices[0].registered_at, at(0));
        assert!(registry.device_gone("1000").is_some());
        assert_eq!(registry.device_count(), 0);
    }

    #[test]
    fn a_refresh_is_no_gateway_change() {
        let registry = Registry::new();
        let trying = registry.gateway_state("did1", "TRYING", Health::Transient, at(0));
        assert_eq!(trying, None);
        let up = registry
            .gateway_state("did1", "REGED", Health::Up, at(1))
            .unwrap();
        assert_eq!((up.from, up.to), (None, Health::Up));
        // Refresh: REGISTER then REGED.
        assert_eq!(
            registry.gateway_state("did1", "REGISTER", Health::Transient, at(10)),
            None
        );
        assert_eq!(
            registry.gateway_state("did1", "REGED", Health::Up, at(10)),
            None
        );
        assert_eq!(registry.gateway("did1").unwrap().since, at(1));
        // Failure loop: FAILED (down), FAIL_WAIT (down again: no change), UNREGED, TRYING.
        let down = registry
            .gateway_state("did1", "FAILED", Health::Down, at(20))
            .unwrap();
        assert_eq!((down.from, down.to), (Some(Health::Up), Health::Down));
        assert_eq!(
            registry.gateway_state("did1", "FAIL_WAIT", Health::Down, at(20)),
            None
        );
        assert_eq!(
            registry.gateway_state("did1", "TRYING", Health::Transient, at(30)),
            None
        );
        assert_eq!(registry.gateway("did1").unwrap().health, Health::Down);
        assert!(registry.gateways_up().is_empty());
        let back = registry
            .gateway_state("did1", "REGED", Health::Up, at(40))
            .unwrap();
        assert_eq!(back.from, Some(Health::Down));
        assert_eq!(registry.gateways_up(), vec!["did1".to_owned()]);
    }

    #[test]
    fn busy_means_another_answered_call() {
        let registry = Registry::new();
        registry.call_started("a", Origin::External, "+15145550199", at(0));
        assert!(!registry.busy("b"));
        registry.call_answered("a");
        assert!(registry.busy("b"));
        assert!(!registry.busy("a"));
        assert!(registry.call_ended("a").is_some());
        assert!(!registry.busy("b"));
    }
}
