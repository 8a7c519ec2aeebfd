//! Contacts: vCard parsing and the phone-number index (E.164, default region).
//!
//! [`ContactBook`] is built once per phone-repo commit from every `contacts/*.vcf` and is
//! read on the ring path, so a lookup is one normalisation and one hash probe. The repo's
//! snapshot owns the book; the rules see [`Contact`] values only. Invariant: every number
//! belongs to exactly one card, chosen the same way on every load (file path, then card
//! order), and every conflict or skipped card is reported, never silently dropped.

mod book;
pub mod number;
mod vcard;

pub use book::{CardRef, ContactBook, ContactCard, Duplicate};
pub use vcard::{parse_file, BadCard, ParsedCard, ParsedPhone};

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
