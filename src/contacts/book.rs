//! The address book of one commit: cards in load order and an index from E.164 to card.

use std::collections::HashMap;
use std::fmt;

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

/// Every contact of one commit, indexed by number.
#[derive(Debug)]
pub struct ContactBook {
    region: Region,
    cards: Vec<ContactCard>,
    /// E.164 -> index in `cards`.
    by_number: HashMap<String, u32>,
    duplicates: Vec<Duplicate>,
    bad_cards: Vec<BadCard>,
}

impl ContactBook {
    /// An empty book; numbers written without a country code are read in `region`.
    pub fn new(region: Region) -> ContactBook {
        ContactBook {
            region,
            cards: Vec::new(),
            by_number: HashMap::new(),
            duplicates: Vec::new(),
            bad_cards: Vec::new(),
        }
    }

    /// Loads `(path, text)` pairs of `.vcf` files. Files are taken in path order whatever
    /// order they come in, so which card keeps a duplicate number never changes by accident.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
        region: Region,
    ) -> ContactBook {
        let mut files: Vec<(&str, &str)> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        let mut book = ContactBook::new(region);
        for (path, text) in files {
            let (cards, bad) = parse_file(path, text);
            book.bad_cards.extend(bad);
            for card in cards {
                book.add(card);
            }
        }
        book
    }

    fn add(&mut self, card: super::ParsedCard) {
        let index = self.cards.len() as u32;
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
            match normalize(&phone.raw, self.region) {
                Some(number) => {
                    if !numbers.contains(&number.e164) {
                        numbers.push(number.e164);
                    }
                }
                // Extensions and service codes stay on the card as written, unindexed.
                None => numbers.push(phone.raw.clone()),
            }
        }
        let loaded = ContactCard {
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
        };
        for number in loaded.contact.numbers.iter().filter(|n| n.starts_with('+')) {
            match self.by_number.get(number) {
                Some(&owner) => self.duplicates.push(Duplicate {
                    number: number.clone(),
                    kept: self.cards[owner as usize].reference(),
                    ignored: loaded.reference(),
                }),
                None => {
                    self.by_number.insert(number.clone(), index);
                }
            }
        }
        self.cards.push(loaded);
    }

    /// The card owning `number`, written in any form (E.164, national, `tel:` URI, with
    /// spaces and dashes). A number already in E.164 is looked up without allocating.
    pub fn lookup(&self, number: &str) -> Option<&ContactCard> {
        let trimmed = number.trim();
        if is_e164(trimmed) {
            if let Some(&index) = self.by_number.get(trimmed) {
                return self.cards.get(index as usize);
            }
        }
        let normalized = normalize(trimmed, self.region)?;
        let index = *self.by_number.get(normalized.e164.as_str())?;
        self.cards.get(index as usize)
    }

    /// The contact owning `number`, as the rules see it.
    pub fn contact(&self, number: &str) -> Option<Contact> {
        self.lookup(number).map(|card| card.contact.clone())
    }

    /// The card with this UID.
    pub fn by_uid(&self, uid: &str) -> Option<&ContactCard> {
        self.cards.iter().find(|card| card.contact.uid == uid)
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// Every card, in load order.
    pub fn cards(&self) -> &[ContactCard] {
        &self.cards
    }

    /// Numbers written on more than one card.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Cards that could not be read and were skipped.
    pub fn bad_cards(&self) -> &[BadCard] {
        &self.bad_cards
    }

    pub fn len(&self) -> usize {
        self.cards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
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
