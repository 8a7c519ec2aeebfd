//! The rules engine: AwesomeWM-style matching of calls against rules written in Rhai.
//! Knows nothing of FreeSWITCH: a [`crate::calls::Call`] goes in, a decision comes out.

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
