//! The rules engine: AwesomeWM-style matching of calls against rules written in Rhai.
//! Knows nothing of FreeSWITCH: a [`crate::calls::Call`] goes in, a decision comes out.

use std::fmt;

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

/// All rules of one snapshot, compiled once. (Being written on branch `rules`; this stub only
/// fixes the signature other modules build against.)
#[derive(Debug, Default)]
pub struct RuleSet {}

impl RuleSet {
    /// Compiles the files in order (defaults first, then the phone repo's, each in lexical
    /// order). Any error refuses the whole set, with every error found.
    pub fn compile(files: &[SourceFile]) -> Result<RuleSet, Vec<LoadError>> {
        let _ = files;
        Ok(RuleSet {})
    }
}
