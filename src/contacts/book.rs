//! The address book of one commit: cards in load order and an index from E.164 to card.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::number::{display, normalize, Region};
use super::vcard::{parse_file, BadCard, ParsedPhone};
use super::Contact;

/// A loaded card: what rules see ([`Contact`]) plus what the person needs to find it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactCard {
    pub contact: Contact,
    pub nickname: Option<String>,
    pub org: Option<String>,
    /// Every TEL as written, with its TYPE values.
    pub phones: Vec<ParsedPhone>,
    /// Path of the file in the repo.
    pub file: String,
    /// 1-based position of the card in its file.
    pub position: usize,
}

impl ContactCard {
    fn reference(&self) -> CardRef {
        CardRef {
            file: self.file.clone(),
            position: self.position,
            name: self.contact.name.clone(),
        }
    }
}

/// Where a card is, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardRef {
    pub file: String,
    pub position: usize,
    pub name: String,
}

impl fmt::Display for CardRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} card {} ({})", self.file, self.position, self.name)
    }
}

/// A number written on two cards: the first card (by file path, then position) keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The number, E.164.
    pub number: String,
    pub kept: CardRef,
    pub ignored: CardRef,
}

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is on two cards: {} gets the calls, {} is ignored for it (remove the number from one card)",
            display(&self.number),
            self.kept,
            self.ignored
        )
    }
}

/// The cards of one `.vcf` file with their numbers normalised: the costly part of loading,
/// shared between snapshots while the file does not change.
#[derive(Debug)]
pub struct ContactFile {
    cards: Vec<ContactCard>,
    bad_cards: Vec<BadCard>,
}

impl ContactFile {
    /// Parses one file; numbers written without a country code are read in `region`.
    pub fn parse(path: &str, text: &str, region: Region) -> ContactFile {
        ContactFile::parse_with(path, text, &mut |raw| {
            normalize(raw, region).map(|number| number.e164)
        })
    }

    /// Parses one file with `to_e164` turning a written number into E.164 (`None` when it is
    /// not a phone number), so a caller can remember numbers it has already normalised.
    pub fn parse_with(
        path: &str,
        text: &str,
        to_e164: &mut dyn FnMut(&str) -> Option<String>,
    ) -> ContactFile {
        let (parsed, bad_cards) = parse_file(path, text);
        let cards = parsed
            .into_iter()
            .map(|card| normalized_card(card, to_e164))
            .collect();
        ContactFile { cards, bad_cards }
    }

    pub fn cards(&self) -> &[ContactCard] {
        &self.cards
    }

    pub fn bad_cards(&self) -> &[BadCard] {
        &self.bad_cards
    }
}

fn normalized_card(
    card: super::ParsedCard,
    to_e164: &mut dyn FnMut(&str) -> Option<String>,
) -> ContactCard {
    let uid = card.uid.clone().unwrap_or_else(|| {
        let stem = card
            .file
            .rsplit('/')
            .next()
            .unwrap_or(&card.file)
            .trim_end_matches(".vcf");
        format!("{stem}-{}", card.position)
    });
    let mut numbers = Vec::with_capacity(card.phones.len());
    for phone in &card.phones {
        match to_e164(&phone.raw) {
            Some(e164) => {
                if !numbers.contains(&e164) {
                    numbers.push(e164);
                }
            }
            // Extensions and service codes stay on the card as written, unindexed.
            None => numbers.push(phone.raw.clone()),
        }
    }
    ContactCard {
        contact: Contact {
            uid,
            name: card.name,
            groups: card.groups,
            language: card.language,
            numbers,
        },
        nickname: card.nickname,
        org: card.org,
        phones: card.phones,
        file: card.file,
        position: card.position,
    }
}

/// Every contact of one commit, indexed by number.
#[derive(Debug)]
pub struct ContactBook {
    region: Region,
    /// In path order.
    files: Vec<Arc<ContactFile>>,
    /// E.164 -> (index in `files`, index in that file's cards).
    by_number: HashMap<String, (u32, u32)>,
    duplicates: Vec<Duplicate>,
}

impl ContactBook {
    /// An empty book; numbers written without a country code are read in `region`.
    pub fn new(region: Region) -> ContactBook {
        ContactBook {
            region,
            files: Vec::new(),
            by_number: HashMap::new(),
            duplicates: Vec::new(),
        }
    }

    /// Loads `(path, text)` pairs of `.vcf` files. Files are taken in path order whatever
    /// order they come in, so which card keeps a duplicate number never changes by accident.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
        region: Region,
    ) -> ContactBook {
        ContactBook::from_parsed(
            files.into_iter().map(|(path, text)| {
                (
                    path.to_owned(),
                    Arc::new(ContactFile::parse(path, text, region)),
                )
            }),
            region,
        )
    }

    /// Indexes files parsed earlier (see [`ContactFile::parse`]), in path order.
    pub fn from_parsed(
        files: impl IntoIterator<Item = (String, Arc<ContactFile>)>,
        region: Region,
    ) -> ContactBook {
        let mut files: Vec<(String, Arc<ContactFile>)> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut book = ContactBook::new(region);
        for (file_index, (_, file)) in files.iter().enumerate() {
            for (card_index, card) in file.cards.iter().enumerate() {
                for number in card.contact.numbers.iter().filter(|n| n.starts_with('+')) {
                    match book.by_number.get(number) {
                        Some(&(owner_file, owner_card)) => {
                            let owner = &files[owner_file as usize].1.cards[owner_card as usize];
                            // The same number twice on one card is not a conflict.
                            if !std::ptr::eq(owner, card) {
                                book.duplicates.push(Duplicate {
                                    number: number.clone(),
                                    kept: owner.reference(),
                                    ignored: card.reference(),
                                });
                            }
                        }
                        None => {
                            book.by_number
                                .insert(number.clone(), (file_index as u32, card_index as u32));
                        }
                    }
                }
            }
        }
        book.files = files.into_iter().map(|(_, file)| file).collect();
        book
    }

    /// The card owning `number`, written in any form (E.164, national, `tel:` URI, with
    /// spaces and dashes). A number already in E.164 is looked up without allocating.
    pub fn lookup(&self, number: &str) -> Option<&ContactCard> {
        let trimmed = number.trim();
        if is_e164(trimmed) {
            if let Some(&found) = self.by_number.get(trimmed) {
                return self.card_at(found);
            }
        }
        let normalized = normalize(trimmed, self.region)?;
        let found = *self.by_number.get(normalized.e164.as_str())?;
        self.card_at(found)
    }

    fn card_at(&self, (file, card): (u32, u32)) -> Option<&ContactCard> {
        self.files.get(file as usize)?.cards.get(card as usize)
    }

    /// The contact owning `number`, as the rules see it.
    pub fn contact(&self, number: &str) -> Option<Contact> {
        self.lookup(number).map(|card| card.contact.clone())
    }

    /// The card with this UID.
    pub fn by_uid(&self, uid: &str) -> Option<&ContactCard> {
        self.cards().find(|card| card.contact.uid == uid)
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// Every card, in load order.
    pub fn cards(&self) -> impl Iterator<Item = &ContactCard> {
        self.files.iter().flat_map(|file| file.cards.iter())
    }

    /// Numbers written on more than one card.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Cards that could not be read and were skipped.
    pub fn bad_cards(&self) -> impl Iterator<Item = &BadCard> {
        self.files.iter().flat_map(|file| file.bad_cards.iter())
    }

    pub fn len(&self) -> usize {
        self.files.iter().map(|file| file.cards.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many numbers are indexed.
    pub fn number_count(&self) -> usize {
        self.by_number.len()
    }
}

fn is_e164(text: &str) -> bool {
    text.len() > 1
        && text.len() <= 16
        && text.starts_with('+')
        && text[1..].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(files: &[(&str, &str)], region: &str) -> ContactBook {
        ContactBook::from_files(
            files.iter().map(|(path, text)| (*path, *text)),
            Region::parse(region).unwrap(),
        )
    }

    #[test]
    fn any_written_form_finds_the_card() {
        let book = book(
            &[(
                "contacts/a.vcf",
                "BEGIN:VCARD\nVERSION:3.0\nFN:Marie\nUID:m1\nTEL:(514) 555-0199\nEND:VCARD\n\
                 BEGIN:VCARD\nVERSION:4.0\nFN:Paris\nTEL;VALUE=uri:tel:+33-1-23-45-67-89\nEND:VCARD\n",
            )],
            "CA",
        );
        for written in [
            "+15145550199",
            "+1 (514) 555-0199",
            "514-555-0199",
            "tel:+1-514-555-0199",
        ] {
            assert_eq!(
                book.lookup(written).map(|c| c.contact.uid.as_str()),
                Some("m1"),
                "{written}"
            );
        }
        let paris = book.lookup("011 33 1 23 45 67 89").unwrap();
        assert_eq!(paris.contact.name, "Paris");
        assert_eq!(paris.contact.uid, "a-2");
        assert_eq!(paris.contact.numbers, ["+33123456789"]);
        assert!(book.lookup("+15145550000").is_none());
        assert!(book.lookup("garbage").is_none());
    }

    #[test]
    fn duplicates_go_to_the_first_file_whatever_the_input_order() {
        let files = [
            (
                "contacts/b.vcf",
                "BEGIN:VCARD\nFN:Bea\nTEL:+15145550199\nEND:VCARD\n",
            ),
            (
                "contacts/a.vcf",
                "BEGIN:VCARD\nFN:Ann\nTEL:514 555 0199\nEND:VCARD\n",
            ),
        ];
        let book = book(&files, "CA");
        assert_eq!(book.lookup("+15145550199").unwrap().contact.name, "Ann");
        assert_eq!(book.duplicates().len(), 1);
        let message = book.duplicates()[0].to_string();
        assert!(
            message.starts_with("+1 514-555-0199 is on two cards: contacts/a.vcf card 1 (Ann) gets the calls, contacts/b.vcf card 1 (Bea) is ignored"),
            "{message}"
        );
    }
}
