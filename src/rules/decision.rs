//! Deciding one call: match every entry in Rust, merge the matching entries' properties (last
//! writer wins), then resolve them phase by phase, calling closures only for the values that
//! won. Also runs `on(...)` handlers and `dialplan` closures.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Map};

use super::compile::{Prop, RuleSet};
use super::engine::{call_map, EvalCtx, RuleCall};
use super::matcher::{call_language, CallView, FieldValue, Miss, Outcome, RuleValue, Section};
use super::script::{self, CallScript};
use super::value::Value;
use super::{Error, SharedResources, Source};
use crate::calls::Call;

/// When a property applies; later phases read earlier results in `props`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Early,
    Normal,
    Delayed,
}

fn phase_of(key: &str) -> Phase {
    match key {
        "language" | "did" | "country" | "location" => Phase::Early,
        "decline" | "hangup" | "answer" | "record" | "bridge_to" => Phase::Delayed,
        _ => Phase::Normal,
    }
}

/// Resolved properties of one phase, in the order they were first set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties(Vec<(String, Value)>);

impl Properties {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(name, _)| name == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }
}

/// Who rings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BridgeTo {
    /// Every registered device (the default).
    AllDevices,
    /// These devices and/or numbers, at once.
    Targets(Vec<String>),
}

/// A rule that failed while a call was decided or an event handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule '{}': {}", self.rule, self.message)
    }
}

/// A rule that did not apply, and the first condition that kept it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmatched {
    pub rule: Arc<str>,
    pub miss: Miss,
}

/// What the rules decided for one call.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// `language`, `did`, `country`, `location`.
    pub early: Properties,
    /// Everything else (`voicemail`, `caller_id`, `voicemail_delay`, user keys, `dialplan`).
    pub normal: Properties,
    /// `decline`, `hangup`, `answer`, `record`, `bridge_to`.
    pub delayed: Properties,
    /// Ids of the rules that applied, in order.
    pub matched: Vec<Arc<str>>,
    pub unmatched: Vec<Unmatched>,
    /// Rules that failed; the call went on (callbacks) or got the safe default.
    pub errors: Vec<RuleError>,
    /// What `log()` wrote while deciding.
    pub logs: Vec<String>,
    /// A rule failed (over budget, threw): ring all registered devices, then voicemail.
    pub safe_default: bool,
    dialplan: Option<(usize, Arc<str>)>,
}

impl Decision {
    /// The value of property `key`, whatever its phase.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.early
            .get(key)
            .or_else(|| self.normal.get(key))
            .or_else(|| self.delayed.get(key))
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(Value::is_truthy)
    }

    pub fn bridge_to(&self) -> BridgeTo {
        match self.get("bridge_to") {
            Some(Value::Str(target)) => BridgeTo::Targets(vec![target.clone()]),
            Some(Value::Array(items)) => BridgeTo::Targets(
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => BridgeTo::AllDevices,
        }
    }

    /// The greeting to play before recording a voicemail (`None`: patchbay's default).
    pub fn voicemail_greeting(&self) -> Option<&str> {
        self.text("voicemail")
    }

    /// Skip ringing, go to voicemail.
    pub fn decline(&self) -> bool {
        self.flag("decline")
    }

    pub fn record(&self) -> bool {
        self.flag("record")
    }

    pub fn answer(&self) -> bool {
        self.flag("answer")
    }

    /// The hangup cause to end the call with, if a rule hangs up (`hangup: true` is
    /// "NORMAL_CLEARING").
    pub fn hangup(&self) -> Option<&str> {
        match self.get("hangup") {
            Some(Value::Str(cause)) => Some(cause),
            Some(value) if value.is_truthy() => Some("NORMAL_CLEARING"),
            _ => None,
        }
    }

    /// Seconds of ringing before voicemail.
    pub fn voicemail_delay(&self) -> Option<u32> {
        self.get("voicemail_delay")
            .and_then(Value::as_int)
            .and_then(|seconds| u32::try_from(seconds).ok())
    }

    pub fn caller_id(&self) -> Option<&str> {
        self.text("caller_id")
    }

    pub fn did(&self) -> Option<&str> {
        self.text("did")
    }

    pub fn language(&self) -> Option<&str> {
        self.text("language")
    }

    /// Whether a `dialplan` closure takes over the call ([`RuleSet::run_dialplan`]).
    pub fn has_dialplan(&self) -> bool {
        self.dialplan.is_some()
    }

    /// The rule whose `dialplan` won.
    pub fn dialplan_rule(&self) -> Option<&str> {
        self.dialplan.as_ref().map(|(_, rule)| &**rule)
    }

    fn into_safe_default(self) -> Decision {
        Decision {
            matched: self.matched,
            unmatched: self.unmatched,
            errors: self.errors,
            logs: self.logs,
            safe_default: true,
            ..Decision::default()
        }
    }
}

/// What running the handlers of one event did.
#[derive(Clone, Debug, Default)]
pub struct EventOutcome {
    /// Handlers that ran (including failed ones).
    pub handled: usize,
    pub errors: Vec<RuleError>,
    pub logs: Vec<String>,
}

/// Lazily built Rhai views of the call and context, shared by the closures of one decision.
struct Evaluation<'a> {
    rules: &'a RuleSet,
    /// `None` for events that happen outside any call (outages): closures get `()`.
    call: Option<&'a Call>,
    resources: &'a SharedResources,
    call_value: Option<Dynamic>,
    tag: Option<Dynamic>,
    language: Option<String>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl<'a> Evaluation<'a> {
    fn new(rules: &'a RuleSet, call: &'a Call, resources: &'a SharedResources) -> Evaluation<'a> {
        Evaluation::without_call(rules, resources).with_call(call)
    }

    fn without_call(rules: &'a RuleSet, resources: &'a SharedResources) -> Evaluation<'a> {
        Evaluation {
            rules,
            call: None,
            resources,
            call_value: None,
            tag: None,
            language: None,
            logs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn with_call(mut self, call: &'a Call) -> Evaluation<'a> {
        self.call = Some(call);
        self.language = call_language(call).map(str::to_owned);
        self
    }

    fn set_language(&mut self, language: Option<&str>) {
        if let Some(language) = language {
            if self.language.as_deref() != Some(language) {
                self.language = Some(language.to_owned());
                self.tag = None;
            }
        }
    }

    fn tag(&mut self) -> Dynamic {
        self.tag
            .get_or_insert_with(|| {
                Dynamic::from(Arc::new(EvalCtx {
                    resources: self.resources.clone(),
                    now: self.rules.clock.now(),
                    language: self.language.clone(),
                    contact_uid: self
                        .call
                        .and_then(|call| call.contact.as_ref())
                        .map(|c| c.uid.clone()),
                    logs: self.logs.clone(),
                }))
            })
            .clone()
    }

    fn call_value(&mut self) -> Dynamic {
        let call = self.call;
        self.call_value
            .get_or_insert_with(|| {
                call.map_or(Dynamic::UNIT, |call| Dynamic::from(RuleCall::new(call)))
            })
            .clone()
    }

    fn call(
        &mut self,
        closure: usize,
        second: impl FnOnce() -> Dynamic,
    ) -> Result<Dynamic, RuleError> {
        let closure = &self.rules.closures[closure];
        let tag = self.tag();
        let call = self.call_value();
        let second = if closure.arity_wants_second() {
            second()
        } else {
            Dynamic::UNIT
        };
        closure
            .call(self.rules, &tag, &call, &second)
            .map_err(|message| RuleError {
                rule: closure.rule.to_string(),
                message: format!("{}: {message}", closure.what),
            })
    }

    fn take_logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .map(|mut logs| std::mem::take(&mut *logs))
            .unwrap_or_default()
    }
}

fn props_map(decision: &Decision) -> Dynamic {
    let mut map = Map::new();
    for properties in [&decision.early, &decision.normal, &decision.delayed] {
        for (key, value) in properties.iter() {
            map.insert(key.into(), value.to_dynamic());
        }
    }
    Dynamic::from_map(map)
}

impl RuleSet {
    /// Decides `call`: never fails; a rule that throws or runs past its budget gives the safe
    /// default decision with the error in [`Decision::errors`].
    pub fn decide(&self, call: &Call, resources: &SharedResources) -> Decision {
        let view = CallView::new(call);
        let mut decision = Decision {
            unmatched: Vec::with_capacity(self.entries.len()),
            ..Decision::default()
        };
        let mut matched: Vec<usize> = Vec::with_capacity(self.entries.len());
        for (index, entry) in self.entries.iter().enumerate() {
            match entry.conditions.evaluate(&view) {
                Outcome::Match => matched.push(index),
                Outcome::Miss(miss) => decision.unmatched.push(Unmatched {
                    rule: entry.id.clone(),
                    miss,
                }),
                Outcome::Error(error) => {
                    let message = format!(
                        "{}: call field {} is {}, not a number (the rule does not apply)",
                        error.section.name(),
                        error.field.name(),
                        error.found
                    );
                    if !entry.compare_error_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(target: "patchbay::rules", rule = %entry.id, "{message}");
                    }
                    decision.errors.push(RuleError {
                        rule: entry.id.to_string(),
                        message,
                    });
                    decision.unmatched.push(Unmatched {
                        rule: entry.id.clone(),
                        miss: Miss {
                            section: error.section,
                            field: Some(error.field),
                        },
                    });
                }
            }
        }
        let applies = |source: Source| {
            matched.iter().any(|&index| {
                let entry = &self.entries[index];
                entry.source == source && !entry.fallback
            })
        };
        let (defaults_matched, repo_matched) =
            (applies(Source::Defaults), applies(Source::PhoneRepo));
        matched.retain(|&index| {
            let entry = &self.entries[index];
            let shadowed = entry.fallback
                && match entry.source {
                    Source::Defaults => defaults_matched,
                    Source::PhoneRepo => repo_matched,
                };
            if shadowed {
                decision.unmatched.push(Unmatched {
                    rule: entry.id.clone(),
                    miss: Miss {
                        section: Section::Fallback,
                        field: None,
                    },
                });
            }
            !shadowed
        });
        decision.matched = matched
            .iter()
            .map(|&index| self.entries[index].id.clone())
            .collect();

        // Last writer wins; keys keep the position of their first writer.
        const UNSET: (u32, u32) = (u32::MAX, u32::MAX);
        let mut slots = vec![UNSET; self.keys.len()];
        let mut order: Vec<usize> = Vec::with_capacity(16);
        for &index in &matched {
            for (position, (key, _)) in self.entries[index].properties.iter().enumerate() {
                if slots[*key] == UNSET {
                    order.push(*key);
                }
                slots[*key] = (index as u32, position as u32);
            }
        }
        let merged: Vec<(&str, &Prop, usize)> = order
            .iter()
            .map(|&key| {
                let (index, position) = slots[key];
                let entry = &self.entries[index as usize];
                (
                    &*self.keys[key],
                    &entry.properties[position as usize].1,
                    index as usize,
                )
            })
            .collect();

        let mut evaluation = Evaluation::new(self, call, resources);
        for phase in [Phase::Early, Phase::Normal] {
            if let Err(error) = self.resolve_phase(phase, &merged, &mut evaluation, &mut decision) {
                decision.errors.push(error);
                decision.logs = evaluation.take_logs();
                return decision.into_safe_default();
            }
            if phase == Phase::Early {
                evaluation.set_language(decision.early.get("language").and_then(Value::as_str));
            }
        }
        for &index in &matched {
            if let Some(callback) = self.entries[index].callback {
                if let Err(error) = evaluation.call(callback, || props_map(&decision)) {
                    tracing::warn!(target: "patchbay::rules", "{error}");
                    decision.errors.push(error);
                }
            }
        }
        if let Err(error) =
            self.resolve_phase(Phase::Delayed, &merged, &mut evaluation, &mut decision)
        {
            decision.errors.push(error);
            decision.logs = evaluation.take_logs();
            return decision.into_safe_default();
        }
        decision.logs = evaluation.take_logs();
        decision
    }

    fn resolve_phase(
        &self,
        phase: Phase,
        merged: &[(&str, &Prop, usize)],
        evaluation: &mut Evaluation<'_>,
        decision: &mut Decision,
    ) -> Result<(), RuleError> {
        for &(key, prop, index) in merged {
            if phase_of(key) != phase {
                continue;
            }
            let value = match prop {
                Prop::Plain(value) => value.clone(),
                Prop::Closure(closure) if key == "dialplan" => {
                    decision.dialplan = Some((*closure, self.entries[index].id.clone()));
                    Value::Closure
                }
                Prop::Closure(closure) => {
                    let result = evaluation.call(*closure, || props_map(decision))?;
                    Value::from_dynamic(&result)
                }
            };
            // `()` unsets: a later rule can take back what an earlier one set.
            if value == Value::Unit {
                continue;
            }
            let properties = match phase {
                Phase::Early => &mut decision.early,
                Phase::Normal => &mut decision.normal,
                Phase::Delayed => &mut decision.delayed,
            };
            properties.set(key, value);
        }
        Ok(())
    }

    /// How many `on(event, ...)` handlers there are for `event`.
    pub fn handler_count(&self, event: &str) -> usize {
        self.handlers
            .iter()
            .filter(|(name, _)| name == event)
            .count()
    }

    /// Runs the handlers of `event` as `f(call, data)`, in file order. Meant to run off the
    /// call's critical path (e.g. `spawn_blocking`); errors are collected, never raised.
    pub fn run_event(
        &self,
        event: &str,
        call: &Call,
        data: &Value,
        resources: &SharedResources,
    ) -> EventOutcome {
        self.run_handlers(Evaluation::new(self, call, resources), event, data)
    }

    /// Runs the handlers of an event that belongs to no call (`outage::begin`,
    /// `outage::end`) as `f((), data)`, like [`RuleSet::run_event`] otherwise.
    pub fn run_event_without_call(
        &self,
        event: &str,
        data: &Value,
        resources: &SharedResources,
    ) -> EventOutcome {
        self.run_handlers(Evaluation::without_call(self, resources), event, data)
    }

    fn run_handlers(
        &self,
        mut evaluation: Evaluation<'_>,
        event: &str,
        data: &Value,
    ) -> EventOutcome {
        let mut outcome = EventOutcome::default();
        for (_, closure) in self.handlers.iter().filter(|(name, _)| name == event) {
            outcome.handled += 1;
            if let Err(error) = evaluation.call(*closure, || data.to_dynamic()) {
                tracing::warn!(target: "patchbay::rules", "{error}");
                outcome.errors.push(error);
            }
        }
        outcome.logs = evaluation.take_logs();
        outcome
    }

    /// Runs the decision's `dialplan` closure, driving `script` (see [`CallScript`]). The
    /// decision must come from this rule set.
    pub fn run_dialplan(
        &self,
        decision: &Decision,
        call: &Call,
        resources: &SharedResources,
        script: &mut dyn CallScript,
    ) -> Result<(), Error> {
        let Some((index, rule)) = &decision.dialplan else {
            return Err(Error::NoDialplan);
        };
        let closure = match self.closures.get(*index) {
            Some(closure) if closure.rule == *rule => closure,
            _ => return Err(Error::NoDialplan),
        };
        let mut evaluation = Evaluation::new(self, call, resources);
        evaluation.set_language(decision.language());
        let tag = evaluation.tag();
        let props = props_map(decision);
        script::drive(call_map(call), script, |call_value| {
            closure.call(self, &tag, &call_value, &props).map(|_| ())
        })
        .map_err(|message| Error::Rule {
            rule: rule.to_string(),
            message: format!("dialplan: {message}"),
        })
    }

    /// A sentence telling why `unmatched` did not apply to `call`, for `simulate`.
    pub fn explain(&self, unmatched: &Unmatched, call: &Call) -> String {
        let Some(entry) = self.entries.iter().find(|entry| entry.id == unmatched.rule) else {
            return unmatched.miss.section.name().to_owned();
        };
        let view = CallView::new(call);
        let field = unmatched.miss.field;
        let found = |field| show(view.get(field), field);
        let conditions = &entry.conditions;
        let single = |tests: &Option<Vec<(super::Field, RuleValue)>>| {
            tests
                .as_ref()
                .and_then(|tests| tests.iter().find(|(f, _)| Some(*f) == field))
                .map(|(_, value)| value.to_string())
                .unwrap_or_default()
        };
        let list = |tests: &Option<Vec<(super::Field, Vec<RuleValue>)>>| {
            tests
                .as_ref()
                .and_then(|tests| tests.iter().find(|(f, _)| Some(*f) == field))
                .map(|(_, values)| {
                    values
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        match (unmatched.miss.section, field) {
            (Section::Rule, Some(f)) => {
                format!(
                    "rule: {} is {}, wanted {}",
                    f.name(),
                    found(f),
                    single(&conditions.rule)
                )
            }
            (Section::RuleOrRuleAny, Some(f)) => format!(
                "rule: {} is {}, wanted {}; and nothing in rule_any matched",
                f.name(),
                found(f),
                single(&conditions.rule)
            ),
            (Section::RuleAny, _) => {
                let fields: Vec<String> = conditions
                    .rule_any
                    .iter()
                    .flatten()
                    .map(|(f, _)| format!("{} is {}", f.name(), found(*f)))
                    .collect();
                if fields.is_empty() {
                    "rule_any is empty, so it never matches".into()
                } else {
                    format!("rule_any: nothing matched ({})", fields.join(", "))
                }
            }
            (Section::RuleEvery, Some(f)) => format!(
                "rule_every: {} is {}, wanted one of [{}]",
                f.name(),
                found(f),
                list(&conditions.rule_every)
            ),
            (Section::Except, _) => match conditions.except.as_deref() {
                Some([]) | None => "except is empty, so it matches every call".into(),
                Some(tests) => {
                    let fields: Vec<String> = tests
                        .iter()
                        .map(|(f, _)| format!("{} is {}", f.name(), found(*f)))
                        .collect();
                    format!("except matched ({})", fields.join(", "))
                }
            },
            (Section::ExceptAny, Some(f)) => format!(
                "except_any: {} is {}, one of [{}]",
                f.name(),
                found(f),
                list(&conditions.except_any)
            ),
            (section @ (Section::RuleGreater | Section::RuleLesser), Some(f)) => {
                let tests = if section == Section::RuleGreater {
                    &conditions.rule_greater
                } else {
                    &conditions.rule_lesser
                };
                let limit = tests
                    .iter()
                    .find(|(test, _)| *test == f)
                    .map(|(_, limit)| limit.to_string())
                    .unwrap_or_default();
                let relation = if section == Section::RuleGreater {
                    "more than"
                } else {
                    "less than"
                };
                format!(
                    "{}: {} is {}, not {relation} {limit}",
                    section.name(),
                    f.name(),
                    found(f)
                )
            }
            (Section::Fallback, _) => format!(
                "fallback: another {} rule matched",
                match entry.source {
                    Source::Defaults => "default",
                    Source::PhoneRepo => "phone repo",
                }
            ),
            (section, _) => section.name().to_owned(),
        }
    }
}

fn show(value: FieldValue<'_>, field: super::Field) -> String {
    match (value, field) {
        (FieldValue::Int(hhmm), super::Field::TimeInterval) => {
            format!("{:02}:{:02}", hhmm / 100, hhmm % 100)
        }
        (FieldValue::Unit, _) => "()".into(),
        (FieldValue::Bool(flag), _) => flag.to_string(),
        (FieldValue::Int(number), _) => number.to_string(),
        (FieldValue::Str(text), _) => format!("{text:?}"),
        (FieldValue::List(items), _) => format!("{items:?}"),
        (FieldValue::Contact(contact), _) => format!("contact {:?}", contact.name),
    }
}
