//! The rules shipped with patchbay (top-level `rules/`, embedded in the binary), and the
//! settings values rules read through `settings()`. Defaults load before the phone repo's
//! rules, so a person's rule overrides them.

use std::collections::BTreeMap;

use rhai::{Dynamic, Map};

use super::{Source, SourceFile};

const FILES: &[(&str, &str)] = &[
    ("rules/10-ring.rhai", include_str!("../../rules/10-ring.rhai")),
    ("rules/20-language.rhai", include_str!("../../rules/20-language.rhai")),
    ("rules/30-voicemail.rhai", include_str!("../../rules/30-voicemail.rhai")),
    ("rules/40-outbound.rhai", include_str!("../../rules/40-outbound.rhai")),
    ("rules/50-night.rhai", include_str!("../../rules/50-night.rhai")),
    ("rules/90-menu.rhai", include_str!("../../rules/90-menu.rhai")),
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
            self.voicemail_delay
                .map_or(Dynamic::UNIT, |seconds| Dynamic::from_int(i64::from(seconds))),
        );
        Dynamic::from_map(map)
    }
}
