//! Conditions: rule sections precompiled into Rust values and matched against one call
//! without touching Rhai. Semantics are docs/rules.md's, including AwesomeWM's surprises
//! (`rule` OR `rule_any`, empty `except` matches everything).

use chrono::{Datelike, Timelike};

use super::pattern::Pattern;
use crate::calls::Call;
use crate::contacts::Contact;

/// Call fields a condition can test, in the order of [`FIELD_NAMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    Uuid,
    Origin,
    PeerNumber,
    PeerName,
    CallerIdNumber,
    CallerIdName,
    DestinationNumber,
    Did,
    Country,
    Location,
    Contact,
    ContactGroups,
    Language,
    DeviceCount,
    Busy,
    DoNotDisturb,
    State,
    HangupCause,
    TimeInterval,
    Weekday,
}

/// Field names as rules write them.
pub const FIELD_NAMES: [&str; 20] = [
    "uuid",
    "origin",
    "peer_number",
    "peer_name",
    "caller_id_number",
    "caller_id_name",
    "destination_number",
    "did",
    "country",
    "location",
    "contact",
    "contact_groups",
    "language",
    "device_count",
    "busy",
    "do_not_disturb",
    "state",
    "hangup_cause",
    "time_interval",
    "weekday",
];

const FIELDS: [Field; 20] = [
    Field::Uuid,
    Field::Origin,
    Field::PeerNumber,
    Field::PeerName,
    Field::CallerIdNumber,
    Field::CallerIdName,
    Field::DestinationNumber,
    Field::Did,
    Field::Country,
    Field::Location,
    Field::Contact,
    Field::ContactGroups,
    Field::Language,
    Field::DeviceCount,
    Field::Busy,
    Field::DoNotDisturb,
    Field::State,
    Field::HangupCause,
    Field::TimeInterval,
    Field::Weekday,
];

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        FIELD_NAMES
            .iter()
            .position(|known| *known == name)
            .map(|index| FIELDS[index])
    }

    pub fn name(self) -> &'static str {
        FIELD_NAMES[self as usize]
    }

    /// Fields holding phone numbers, where `-`, `.` and `+` are easy to write by mistake.
    pub fn holds_number(self) -> bool {
        matches!(
            self,
            Field::PeerNumber | Field::CallerIdNumber | Field::DestinationNumber | Field::Did
        )
    }
}

/// The language a call is held in when its contact does not say: French for France and
/// Quebec, English elsewhere; unknown when the number's country is.
pub fn language_for(country: Option<&str>, location: Option<&str>) -> Option<&'static str> {
    match (country, location) {
        (_, Some("CA-QC")) | (Some("FR"), _) => Some("fr"),
        (Some(_), _) => Some("en"),
        (None, _) => None,
    }
}

/// The call's language as rules see it: the contact's, else [`language_for`] its country.
pub fn call_language(call: &Call) -> Option<&str> {
    call.contact
        .as_ref()
        .and_then(|contact| contact.language.as_deref())
        .or_else(|| language_for(call.country.as_deref(), call.location.as_deref()))
}

/// One call field's value, borrowed from the call.
#[derive(Clone, Copy, Debug)]
pub enum FieldValue<'a> {
    Unit,
    Bool(bool),
    Int(i64),
    Str(&'a str),
    List(&'a [String]),
    Contact(&'a Contact),
}

impl FieldValue<'_> {
    fn is_truthy(self) -> bool {
        !matches!(self, FieldValue::Unit | FieldValue::Bool(false))
    }
}

/// A call's fields, computed once per decision.
pub struct CallView<'a> {
    values: [FieldValue<'a>; 20],
    hhmm: u16,
    weekday: u8,
}

fn optional(text: Option<&str>) -> FieldValue<'_> {
    text.map_or(FieldValue::Unit, FieldValue::Str)
}

impl<'a> CallView<'a> {
    pub fn new(call: &'a Call) -> CallView<'a> {
        let time = call.local_time;
        let hhmm = (time.hour() * 100 + time.minute()) as u16;
        let weekday = time.weekday().num_days_from_monday() as u8;
        let groups: &[String] = call
            .contact
            .as_ref()
            .map_or(&[], |contact| contact.groups.as_slice());
        let values = [
            FieldValue::Str(&call.uuid),
            FieldValue::Str(call.origin.as_str()),
            FieldValue::Str(&call.peer_number),
            FieldValue::Str(call.peer_name()),
            FieldValue::Str(&call.caller_id_number),
            FieldValue::Str(&call.caller_id_name),
            FieldValue::Str(&call.destination_number),
            optional(call.did.as_deref()),
            optional(call.country.as_deref()),
            optional(call.location.as_deref()),
            call.contact
                .as_ref()
                .map_or(FieldValue::Unit, FieldValue::Contact),
            FieldValue::List(groups),
            optional(call_language(call)),
            FieldValue::Int(i64::from(call.device_count)),
            FieldValue::Bool(call.busy),
            FieldValue::Bool(call.do_not_disturb),
            FieldValue::Str(&call.state),
            optional(call.hangup_cause.as_deref()),
            FieldValue::Int(i64::from(hhmm)),
            FieldValue::Str(WEEKDAYS[usize::from(weekday)]),
        ];
        CallView {
            values,
            hhmm,
            weekday,
        }
    }

    pub fn get(&self, field: Field) -> FieldValue<'a> {
        self.values[field as usize]
    }
}

/// One value a rule compares a field with, precompiled.
#[derive(Clone, Debug)]
pub enum RuleValue {
    Unit,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Pattern),
    /// `time_interval: #{begins: HHMM, ends: HHMM}`.
    Interval {
        begins: u16,
        ends: u16,
    },
    /// `weekday`: a bit per day, Monday first.
    Weekdays(u8),
    /// Closures, arrays and maps: compared, never equal to a call field.
    Other(&'static str),
}

impl RuleValue {
    pub fn weekday_bit(name: &str) -> Option<u8> {
        WEEKDAYS
            .iter()
            .position(|day| *day == name)
            .map(|index| 1 << index)
    }

    pub fn weekday_names() -> &'static [&'static str] {
        &WEEKDAYS
    }
}

impl std::fmt::Display for RuleValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleValue::Unit => f.write_str("()"),
            RuleValue::Bool(flag) => write!(f, "{flag}"),
            RuleValue::Int(number) => write!(f, "{number}"),
            RuleValue::Float(number) => write!(f, "{number}"),
            RuleValue::Str(pattern) => write!(f, "{:?}", pattern.as_str()),
            RuleValue::Interval { begins, ends } => write!(
                f,
                "{:02}:{:02}-{:02}:{:02}",
                begins / 100,
                begins % 100,
                ends / 100,
                ends % 100
            ),
            RuleValue::Weekdays(bits) => {
                let days: Vec<&str> = WEEKDAYS
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| bits & (1 << index) != 0)
                    .map(|(_, day)| *day)
                    .collect();
                write!(f, "{}", days.join("/"))
            }
            RuleValue::Other(kind) => f.write_str(kind),
        }
    }
}

/// `a = call[field]` against rule value `b`.
fn compare(view: &CallView<'_>, a: FieldValue<'_>, b: &RuleValue) -> bool {
    match (a, b) {
        (_, RuleValue::Interval { begins, ends }) => {
            let now = view.hhmm;
            if begins <= ends {
                *begins <= now && now < *ends
            } else {
                now >= *begins || now < *ends
            }
        }
        (_, RuleValue::Weekdays(bits)) => bits & (1 << view.weekday) != 0,
        (FieldValue::List(items), b) => items
            .iter()
            .any(|item| compare(view, FieldValue::Str(item), b)),
        (FieldValue::Unit, RuleValue::Unit) => true,
        (FieldValue::Bool(x), RuleValue::Bool(y)) => x == *y,
        (FieldValue::Int(x), RuleValue::Int(y)) => x == *y,
        (FieldValue::Int(x), RuleValue::Float(y)) => (x as f64) == *y,
        (FieldValue::Str(text), RuleValue::Str(pattern)) => {
            text == pattern.as_str() || pattern.find(text)
        }
        _ => false,
    }
}

/// `rule_any` comparison: `()`/`false` never match, `true` means any truthy value.
fn compare_any(view: &CallView<'_>, a: FieldValue<'_>, b: &RuleValue) -> bool {
    if !a.is_truthy() {
        return false;
    }
    match b {
        RuleValue::Bool(true) => true,
        _ => compare(view, a, b),
    }
}

/// Which condition kept an entry from applying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Rule,
    RuleAny,
    RuleOrRuleAny,
    RuleEvery,
    Except,
    ExceptAny,
    RuleGreater,
    RuleLesser,
    /// A non-fallback entry of the same source matched.
    Fallback,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::Rule => "rule",
            Section::RuleAny => "rule_any",
            Section::RuleOrRuleAny => "rule and rule_any",
            Section::RuleEvery => "rule_every",
            Section::Except => "except",
            Section::ExceptAny => "except_any",
            Section::RuleGreater => "rule_greater",
            Section::RuleLesser => "rule_lesser",
            Section::Fallback => "fallback",
        }
    }
}

/// The first condition that failed, for `simulate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Miss {
    pub section: Section,
    /// The field that decided it (`None` for a whole section, e.g. an empty `except`).
    pub field: Option<Field>,
}

/// `rule_greater`/`rule_lesser` against a field that is missing or not a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareError {
    pub section: Section,
    pub field: Field,
    pub found: &'static str,
}

/// All conditions of one entry.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    pub rule: Option<Vec<(Field, RuleValue)>>,
    pub rule_any: Option<Vec<(Field, Vec<RuleValue>)>>,
    pub rule_every: Option<Vec<(Field, Vec<RuleValue>)>>,
    pub except: Option<Vec<(Field, RuleValue)>>,
    pub except_any: Option<Vec<(Field, Vec<RuleValue>)>>,
    pub rule_greater: Vec<(Field, f64)>,
    pub rule_lesser: Vec<(Field, f64)>,
}

/// The outcome of matching one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Miss(Miss),
    Error(CompareError),
}

fn first_failing(view: &CallView<'_>, tests: &[(Field, RuleValue)]) -> Option<Field> {
    tests
        .iter()
        .find(|(field, value)| !compare(view, view.get(*field), value))
        .map(|(field, _)| *field)
}

fn first_any_match(view: &CallView<'_>, tests: &[(Field, Vec<RuleValue>)]) -> Option<Field> {
    tests
        .iter()
        .find(|(field, values)| {
            let a = view.get(*field);
            values.iter().any(|value| compare_any(view, a, value))
        })
        .map(|(field, _)| *field)
}

fn number_of(a: FieldValue<'_>) -> Result<f64, &'static str> {
    match a {
        FieldValue::Int(number) => Ok(number as f64),
        FieldValue::Unit => Err("missing"),
        FieldValue::Str(_) | FieldValue::List(_) => Err("a string"),
        FieldValue::Bool(_) => Err("a boolean"),
        FieldValue::Contact(_) => Err("a map"),
    }
}

impl Conditions {
    pub fn evaluate(&self, view: &CallView<'_>) -> Outcome {
        let miss = |section, field| Outcome::Miss(Miss { section, field });
        let rule_failure = self.rule.as_ref().map(|tests| first_failing(view, tests));
        let any_match = self
            .rule_any
            .as_ref()
            .map(|tests| first_any_match(view, tests));
        match (rule_failure, any_match) {
            (None, None) | (Some(None), _) | (_, Some(Some(_))) => {}
            (Some(Some(field)), None) => return miss(Section::Rule, Some(field)),
            (None, Some(None)) => return miss(Section::RuleAny, None),
            (Some(Some(field)), Some(None)) => return miss(Section::RuleOrRuleAny, Some(field)),
        }
        if let Some(tests) = &self.rule_every {
            for (field, values) in tests {
                let a = view.get(*field);
                if !values.iter().any(|value| compare(view, a, value)) {
                    return miss(Section::RuleEvery, Some(*field));
                }
            }
        }
        if let Some(tests) = &self.except {
            if first_failing(view, tests).is_none() {
                return miss(Section::Except, tests.first().map(|(field, _)| *field));
            }
        }
        if let Some(tests) = &self.except_any {
            if let Some(field) = first_any_match(view, tests) {
                return miss(Section::ExceptAny, Some(field));
            }
        }
        for (section, tests) in [
            (Section::RuleGreater, &self.rule_greater),
            (Section::RuleLesser, &self.rule_lesser),
        ] {
            for (field, limit) in tests {
                let value = match number_of(view.get(*field)) {
                    Ok(value) => value,
                    Err(found) => {
                        return Outcome::Error(CompareError {
                            section,
                            field: *field,
                            found,
                        })
                    }
                };
                let passes = if section == Section::RuleGreater {
                    value > *limit
                } else {
                    value < *limit
                };
                if !passes {
                    return miss(section, Some(*field));
                }
            }
        }
        Outcome::Match
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_follows_country_and_quebec() {
        assert_eq!(language_for(Some("FR"), None), Some("fr"));
        assert_eq!(language_for(Some("CA"), Some("CA-QC")), Some("fr"));
        assert_eq!(language_for(Some("CA"), None), Some("en"));
        assert_eq!(language_for(Some("DE"), None), Some("en"));
        assert_eq!(language_for(None, None), None);
    }

    #[test]
    fn field_names_round_trip() {
        for name in FIELD_NAMES {
            assert_eq!(Field::parse(name).map(Field::name), Some(name));
        }
        assert_eq!(Field::parse("orgin"), None);
    }
}
