//! Contacts: vCard parsing and the phone-number index (E.164, default region).

pub mod number;

use serde::{Deserialize, Serialize};

/// One address-book entry, as the rules and the mails see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The vCard UID (or one derived from the file and position when the card has none).
    pub uid: String,
    /// Display name (FN).
    pub name: String,
    /// CATEGORIES.
    pub groups: Vec<String>,
    /// LANG, as a lower-case language code ("fr", "en"), if any.
    pub language: Option<String>,
    /// Every TEL of the card, normalised to E.164 where possible.
    pub numbers: Vec<String>,
}
