//! The rules shipped with patchbay (top-level `rules/`, embedded in the binary), and the
//! settings values rules read through `settings()`. Defaults load before the phone repo's
//! rules, so a person's rule overrides them.

use std::collections::BTreeMap;

use rhai::{Dynamic, Map};

use super::{Source, SourceFile};

const FILES: &[(&str, &str)] = &[
    (
        "rules/10-ring.rhai",
        include_str!("../../rules/10-ring.rhai"),
    ),
    (
        "rules/20-language.rhai",
        include_str!("../../rules/20-language.rhai"),
    ),
    (
        "rules/30-voicemail.rhai",
        include_str!("../../rules/30-voicemail.rhai"),
    ),
    (
        "rules/40-outbound.rhai",
        include_str!("../../rules/40-outbound.rhai"),
    ),
    (
        "rules/50-night.rhai",
        include_str!("../../rules/50-night.rhai"),
    ),
    (
        "rules/90-menu.rhai",
        include_str!("../../rules/90-menu.rhai"),
    ),
];

/// The shipped rule files, as the "defaults" source.
pub fn files() -> Vec<SourceFile> {
    FILES
        .iter()
        .map(|(path, text)| SourceFile {
            source: Source::Defaults,
            path: (*path).to_owned(),
            text: (*text).to_owned(),
        })
        .collect()
}

/// One DID as rules see it (`settings().dids`): no credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DidSetting {
    /// E.164 number of the DID.
    pub number: String,
    /// ISO code of the DID's country, used to pick the DID for an outgoing call.
    pub country: Option<String>,
}

/// Settings values rules may read (`settings().caller_id.fr`, ...). Secrets never go here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSettings {
    /// Caller ID name per language ("en" -> "John Doe"); keys are lower-cased.
    pub caller_id: BTreeMap<String, String>,
    pub dids: Vec<DidSetting>,
    /// Seconds of ringing before voicemail.
    pub voicemail_delay: Option<u32>,
}

impl RuleSettings {
    pub(super) fn to_dynamic(&self) -> Dynamic {
        let caller_id: Map = self
            .caller_id
            .iter()
            .map(|(language, name)| (language.to_lowercase().into(), name.clone().into()))
            .collect();
        let dids: rhai::Array = self
            .dids
            .iter()
            .map(|did| {
                let mut map = Map::new();
                map.insert("number".into(), did.number.clone().into());
                map.insert(
                    "country".into(),
                    did.country.clone().map_or(Dynamic::UNIT, Dynamic::from),
                );
                Dynamic::from_map(map)
            })
            .collect();
        let mut map = Map::new();
        map.insert("caller_id".into(), Dynamic::from_map(caller_id));
        map.insert("dids".into(), Dynamic::from_array(dids));
        map.insert(
            "voicemail_delay".into(),
            self.voicemail_delay.map_or(Dynamic::UNIT, |seconds| {
                Dynamic::from_int(i64::from(seconds))
            }),
        );
        Dynamic::from_map(map)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;

    use super::*;
    use crate::calls::{Call, Origin};
    use crate::contacts::Contact;
    use crate::rules::{
        BridgeTo, CallScript, Decision, RecordOptions, Resources, RuleSet, ScriptError,
        SharedResources,
    };

    fn settings() -> RuleSettings {
        RuleSettings {
            caller_id: [("en", "John Doe"), ("fr", "Jean Untel")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            dids: vec![
                DidSetting {
                    number: "+15145550100".into(),
                    country: Some("CA".into()),
                },
                DidSetting {
                    number: "+33999999999".into(),
                    country: Some("FR".into()),
                },
            ],
            voicemail_delay: Some(25),
        }
    }

    struct Repo;

    impl Resources for Repo {
        fn contact(&self, _number: &str) -> Option<Contact> {
            None
        }
        fn greeting(&self, name: &str, _: Option<&str>, _: Option<&str>) -> Option<String> {
            ["wave.wav", "wave_fr.wav", "away_fr.wav", "busy.wav"]
                .contains(&name)
                .then(|| name.to_owned())
        }
    }

    fn external(from: &str, country: &str, hour: u32) -> Call {
        Call {
            uuid: "u1".into(),
            origin: Origin::External,
            peer_number: from.into(),
            caller_id_name: String::new(),
            caller_id_number: from.into(),
            destination_number: "+15145550100".into(),
            did: Some("+15145550100".into()),
            country: Some(country.into()),
            location: None,
            contact: None,
            local_time: NaiveDate::from_ymd_opt(2026, 12, 1)
                .and_then(|d| d.and_hms_opt(hour, 30, 0))
                .expect("valid time"),
            device_count: 2,
            busy: false,
            do_not_disturb: false,
            state: "ringing".into(),
            hangup_cause: None,
        }
    }

    fn decide(call: &Call) -> Decision {
        let rules = RuleSet::compile_with(&[], &settings()).expect("defaults compile");
        let resources: SharedResources = Arc::new(Repo);
        let decision = rules.decide(call, &resources);
        assert!(decision.errors.is_empty(), "{:?}", decision.errors);
        decision
    }

    #[test]
    fn external_calls_ring_every_device_and_are_recorded() {
        let decision = decide(&external("+15145550199", "CA", 14));
        assert_eq!(decision.bridge_to(), BridgeTo::AllDevices);
        assert!(decision.record());
        assert!(!decision.decline());
        assert_eq!(decision.voicemail_delay(), Some(25));
        assert_eq!(decision.language(), Some("en"));
        assert_eq!(decision.voicemail_greeting(), Some("wave.wav"));
    }

    #[test]
    fn do_not_disturb_sends_calls_from_outside_straight_to_voicemail() {
        let mut call = external("+15145550199", "CA", 14);
        call.do_not_disturb = true;
        let decision = decide(&call);
        assert!(decision.decline());
        assert_eq!(decision.voicemail_greeting(), Some("wave.wav"));
        assert!(decision
            .matched
            .iter()
            .any(|id| id.as_ref() == "do_not_disturb"));
        assert!(!decide(&external("+15145550199", "CA", 14)).decline());
    }

    #[test]
    fn french_callers_get_the_french_greeting() {
        let decision = decide(&external("+33123456789", "FR", 14));
        assert_eq!(decision.language(), Some("fr"));
        assert_eq!(decision.voicemail_greeting(), Some("wave_fr.wav"));
        let mut quebec = external("+15145550199", "CA", 14);
        quebec.location = Some("CA-QC".into());
        assert_eq!(decide(&quebec).language(), Some("fr"));
    }

    #[test]
    fn contact_language_wins_over_country() {
        let mut call = external("+33123456789", "FR", 14);
        call.contact = Some(Contact {
            uid: "c1".into(),
            name: "Hans".into(),
            language: Some("de".into()),
            ..Contact::default()
        });
        let decision = decide(&call);
        assert_eq!(decision.language(), Some("de"));
        assert_eq!(decision.voicemail_greeting(), Some("wave.wav"));
    }

    #[test]
    fn away_greeting_without_devices_and_busy_greeting_on_a_call() {
        let mut away = external("+33123456789", "FR", 14);
        away.device_count = 0;
        let decision = decide(&away);
        assert!(decision.decline());
        assert_eq!(decision.voicemail_greeting(), Some("away_fr.wav"));
        let mut busy = external("+15145550199", "CA", 14);
        busy.busy = true;
        let decision = decide(&busy);
        assert!(decision.decline());
        assert_eq!(decision.voicemail_greeting(), Some("busy.wav"));
    }

    #[test]
    fn night_filter_declines_abroad_except_canada_and_us() {
        assert!(decide(&external("+33123456789", "FR", 23)).decline());
        assert!(!decide(&external("+15145550199", "CA", 23)).decline());
        assert!(!decide(&external("+12125550199", "US", 23)).decline());
        assert!(!decide(&external("+33123456789", "FR", 12)).decline());
    }

    fn internal(to: &str, country: Option<&str>) -> Call {
        let mut call = external(to, "CA", 14);
        call.origin = Origin::Internal;
        call.country = country.map(str::to_owned);
        call.destination_number = to.into();
        call.did = None;
        call.caller_id_number = "1001".into();
        call
    }

    #[test]
    fn internal_calls_get_caller_id_and_did_by_destination() {
        let decision = decide(&internal("+33123456789", Some("FR")));
        assert_eq!(decision.caller_id(), Some("Jean Untel"));
        assert_eq!(decision.did(), Some("+33999999999"));
        assert!(!decision.record());
        let decision = decide(&internal("+491717654321", Some("DE")));
        assert_eq!(decision.caller_id(), Some("John Doe"));
        assert_eq!(decision.did(), Some("+15145550100"));
    }

    /// Records what the menu does; answers digits from a script.
    #[derive(Default)]
    struct Phone {
        digits: Vec<&'static str>,
        actions: Vec<String>,
        dnd: bool,
    }

    impl CallScript for Phone {
        fn answer(&mut self) -> Result<(), ScriptError> {
            self.actions.push("answer".into());
            Ok(())
        }
        fn play(&mut self, file: &str) -> Result<(), ScriptError> {
            self.actions.push(format!("play {file}"));
            Ok(())
        }
        fn get_digits(&mut self, max: u32, timeout_ms: u64) -> Result<String, ScriptError> {
            self.actions.push(format!("digits {max} {timeout_ms}"));
            if self.digits.is_empty() {
                return Err(ScriptError::new("caller hung up"));
            }
            Ok(self.digits.remove(0).to_owned())
        }
        fn record(&mut self, options: &RecordOptions) -> Result<String, ScriptError> {
            self.actions.push(format!("record {}", options.max_seconds));
            Ok("/tmp/r.wav".into())
        }
        fn transfer(&mut self, extension: &str) -> Result<(), ScriptError> {
            self.actions.push(format!("transfer {extension}"));
            Ok(())
        }
        fn hangup(&mut self, cause: &str) -> Result<(), ScriptError> {
            self.actions.push(format!("hangup {cause}"));
            Ok(())
        }
        fn play_new_voicemails(&mut self) -> Result<u32, ScriptError> {
            self.actions.push("voicemails".into());
            Ok(0)
        }
        fn record_greeting(&mut self, name: &str) -> Result<bool, ScriptError> {
            self.actions.push(format!("record greeting {name}"));
            Ok(true)
        }
        fn toggle_do_not_disturb(&mut self) -> Result<bool, ScriptError> {
            self.dnd = !self.dnd;
            self.actions.push(format!("dnd {}", self.dnd));
            Ok(self.dnd)
        }
    }

    fn menu(digits: Vec<&'static str>) -> Result<Vec<String>, crate::rules::Error> {
        let rules = RuleSet::compile_with(&[], &settings()).expect("defaults compile");
        let resources: SharedResources = Arc::new(Repo);
        let call = internal("*86", None);
        let decision = rules.decide(&call, &resources);
        assert_eq!(decision.dialplan_rule(), Some("menu"));
        let mut phone = Phone {
            digits,
            ..Phone::default()
        };
        rules.run_dialplan(&decision, &call, &resources, &mut phone)?;
        Ok(phone.actions)
    }

    #[test]
    fn star_86_menu_toggles_do_not_disturb() {
        let actions = menu(vec!["3"]).expect("menu runs");
        assert_eq!(
            actions,
            [
                "answer",
                "play menu_en.wav",
                "digits 1 5000",
                "dnd true",
                "play dnd_on_en.wav",
                "hangup NORMAL_CLEARING"
            ]
        );
    }

    #[test]
    fn star_86_menu_retries_then_records_a_greeting() {
        let actions = menu(vec!["9", "", "2"]).expect("menu runs");
        assert!(actions.contains(&"record greeting wave_en.wav".to_owned()));
        assert_eq!(
            actions.iter().filter(|a| *a == "play menu_en.wav").count(),
            3
        );
        assert_eq!(
            actions.last().map(String::as_str),
            Some("hangup NORMAL_CLEARING")
        );
    }

    #[test]
    fn star_86_menu_plays_voicemails_and_stops_when_the_caller_hangs_up() {
        let actions = menu(vec!["1"]).expect("menu runs");
        assert!(actions.contains(&"voicemails".to_owned()));
        assert!(actions.contains(&"play no_voicemail_en.wav".to_owned()));
        let error = menu(vec![]).expect_err("the caller hung up");
        assert!(error.to_string().contains("caller hung up"), "{error}");
        assert!(
            error.to_string().starts_with("rule 'menu': dialplan:"),
            "{error}"
        );
    }
}
