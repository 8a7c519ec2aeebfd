//! The rules engine: AwesomeWM-style matching of calls against rules written in Rhai.
//!
//! Knows nothing of FreeSWITCH: a [`crate::calls::Call`] goes in, a [`Decision`] (plain Rust
//! values) comes out. [`RuleSet::compile`] runs the rule files once per snapshot; plain rule
//! values become Rust structures (`matcher`), so deciding a call only enters Rhai for closures.
//! Neighbours: `repo` builds the [`SourceFile`]s and implements [`Resources`]; the call flows
//! read the decision and implement [`CallScript`] for `dialplan` menus. Invariant: nothing a
//! rule does can panic, hang or fail a call; a failing rule yields the safe default decision.

use std::fmt;
use std::sync::Arc;

use chrono::NaiveDateTime;

mod compile;
mod decision;
pub mod defaults;
mod engine;
mod matcher;
mod pattern;
mod script;
#[cfg(test)]
mod tests;
mod value;

pub use compile::RuleSet;
pub use decision::{BridgeTo, Decision, EventOutcome, Properties, RuleError, Unmatched};
pub use defaults::{DidSetting, RuleSettings};
pub use engine::MAX_OPERATIONS;
pub use matcher::{language_for, Field, Miss, Section, FIELD_NAMES};
pub use pattern::{Pattern, PatternError};
pub use script::{CallScript, RecordOptions, ScriptError};
pub use value::Value;

/// Events user code can handle with `on(name, closure)`.
pub const EVENTS: &[&str] = &[
    "call::new",
    "call::answered",
    "missed",
    "voicemail",
    "state::hangup",
    "peer::busy",
    "dtmf",
    "device::registered",
    "outage::begin",
    "outage::end",
    "rule::match",
];

/// Where `now()` comes from: local time in the settings' timezone. Injected so that tests and
/// `simulate` control it.
pub trait Clock: Send + Sync {
    fn now(&self) -> NaiveDateTime;
}

/// The wall clock in a timezone.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock(pub chrono_tz::Tz);

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        chrono::Utc::now().with_timezone(&self.0).naive_local()
    }
}

/// Always the same time.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub NaiveDateTime);

impl Clock for FixedClock {
    fn now(&self) -> NaiveDateTime {
        self.0
    }
}

/// Resources with nothing in them: no contacts, no greetings.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoResources;

impl Resources for NoResources {
    fn contact(&self, _number: &str) -> Option<Contact> {
        None
    }
    fn greeting(&self, _: &str, _: Option<&str>, _: Option<&str>) -> Option<String> {
        None
    }
}

/// Errors of the rules engine at run time (load errors are [`LoadError`]s).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("rule '{rule}': {message}")]
    Rule { rule: String, message: String },
    #[error("this decision has no dialplan (no matching rule sets the dialplan property)")]
    NoDialplan,
}

/// A shared handle on resources, as the engine keeps them for the length of an evaluation.
pub type SharedResources = Arc<dyn Resources>;

use crate::contacts::Contact;

/// What rules can look up outside themselves (`contact(number)`, `greeting(name)`).
/// The phone repo's snapshot implements it; tests use small in-memory tables.
pub trait Resources: Send + Sync {
    /// The contact owning this number (any format the person may write; normalised inside).
    fn contact(&self, number: &str) -> Option<Contact>;
    /// The file FreeSWITCH should play for greeting `name` (e.g. "wave_fr.wav"), trying the
    /// contact's own greeting and the language variant first. `None` when nothing matches.
    fn greeting(
        &self,
        name: &str,
        language: Option<&str>,
        contact_uid: Option<&str>,
    ) -> Option<String>;
}

/// Where a rule file comes from: patchbay's shipped defaults load first, the phone repo's after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Defaults,
    PhoneRepo,
}

/// One rule file to compile.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub source: Source,
    /// Path as the person sees it, e.g. "rules/20-night.rhai".
    pub path: String,
    pub text: String,
}

/// A rule file that does not compile, or a rule that is wrong, located for the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The rule id, when the error belongs to one rule.
    pub rule: Option<String>,
    pub message: String,
    /// One line telling what to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule '{rule}'")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}
