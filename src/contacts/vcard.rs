//! vCard 3.0 and 4.0 files into cards: what address books export (Google, Nextcloud, phones).
//!
//! Splitting, unfolding and quoted-printable soft breaks are done here, line by line, so that
//! one broken card is skipped and named while the others of the file load; each card's
//! properties are then parsed by ical's `VcardParser`, which is lenient about versions and
//! keeps `tel:` URIs intact. Nothing here normalises numbers: that is the book's job.

use std::fmt;

use ical::parser::vcard::component::VcardContact;
use ical::property::Property;
use ical::VcardParser;

/// One card as read from a file, before its numbers are indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedCard {
    /// Path of the file in the repo ("contacts/family.vcf").
    pub file: String,
    /// 1-based position of the card in its file.
    pub position: usize,
    pub uid: Option<String>,
    pub name: String,
    pub nickname: Option<String>,
    pub org: Option<String>,
    pub groups: Vec<String>,
    /// Lower-case primary language subtag ("fr" for "fr-CA").
    pub language: Option<String>,
    pub phones: Vec<ParsedPhone>,
}

/// A TEL property: the number as written and its TYPE values ("cell", "work").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedPhone {
    pub raw: String,
    pub types: Vec<String>,
}

/// A card that could not be read; the rest of its file still loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadCard {
    pub file: String,
    /// 1-based position of the card in its file.
    pub position: usize,
    /// FN when it could be read, to help the person find the card.
    pub name: Option<String>,
    pub reason: String,
}

impl fmt::Display for BadCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: card {}", self.file, self.position)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, " skipped: {}", self.reason)
    }
}

/// Every card of one `.vcf` file, in file order, and the cards that were skipped.
pub fn parse_file(file: &str, text: &str) -> (Vec<ParsedCard>, Vec<BadCard>) {
    let mut cards = Vec::new();
    let mut bad = Vec::new();
    for raw in split_cards(text) {
        let position = raw.position;
        match raw.problem {
            Some(reason) => bad.push(BadCard {
                file: file.to_owned(),
                position,
                name: raw.lines.iter().find_map(|line| fn_value(line.as_str())),
                reason,
            }),
            None => match parse_card(file, position, &raw.lines) {
                Ok(card) => cards.push(card),
                Err(reason) => bad.push(BadCard {
                    file: file.to_owned(),
                    position,
                    name: raw.lines.iter().find_map(|line| fn_value(line.as_str())),
                    reason,
                }),
            },
        }
    }
    (cards, bad)
}

/// The lines of one BEGIN:VCARD..END:VCARD block, unfolded.
struct RawCard {
    position: usize,
    lines: Vec<String>,
    problem: Option<String>,
}

fn split_cards(text: &str) -> Vec<RawCard> {
    let mut cards: Vec<RawCard> = Vec::new();
    let mut current: Option<RawCard> = None;
    for line in logical_lines(text) {
        if line.eq_ignore_ascii_case("BEGIN:VCARD") {
            if let Some(mut open) = current.take() {
                open.problem = Some("no END:VCARD before the next BEGIN:VCARD".to_owned());
                cards.push(open);
            }
            current = Some(RawCard {
                position: cards.len() + 1,
                lines: vec![line],
                problem: None,
            });
        } else if line.eq_ignore_ascii_case("END:VCARD") {
            if let Some(mut open) = current.take() {
                open.lines.push(line);
                cards.push(open);
            }
        } else if let Some(open) = current.as_mut() {
            open.lines.push(line);
        }
        // Text outside a card (comments some tools add) is not part of any contact.
    }
    if let Some(mut open) = current.take() {
        open.problem = Some("the file ends before END:VCARD".to_owned());
        cards.push(open);
    }
    cards
}

/// Physical lines joined into logical ones: RFC folding (a line starting with a space or tab
/// continues the previous one) and quoted-printable soft breaks (a QP value ending in `=`).
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut soft_break = false;
    for physical in text.split('\n') {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        if let Some(last) = lines.last_mut() {
            if soft_break {
                last.pop();
                last.push_str(physical.trim_start());
                soft_break = is_quoted_printable(last) && last.ends_with('=');
                continue;
            }
            if let Some(rest) = physical
                .strip_prefix(' ')
                .or_else(|| physical.strip_prefix('\t'))
            {
                last.push_str(rest);
                soft_break = is_quoted_printable(last) && last.ends_with('=');
                continue;
            }
        }
        if physical.trim().is_empty() {
            soft_break = false;
            continue;
        }
        let line = physical.trim_end().to_owned();
        soft_break = is_quoted_printable(&line) && line.ends_with('=');
        lines.push(line);
    }
    lines
}

/// The name-and-parameters part of a content line (before the first `:` outside quotes).
fn head_of(line: &str) -> &str {
    let mut quoted = false;
    for (index, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => return &line[..index],
            _ => {}
        }
    }
    line
}

fn is_quoted_printable(line: &str) -> bool {
    head_of(line)
        .to_ascii_uppercase()
        .contains("QUOTED-PRINTABLE")
}

/// FN's value, for naming a card that could not be parsed.
fn fn_value(line: &str) -> Option<String> {
    let head = head_of(line);
    let name = head.split(';').next().unwrap_or(head);
    let name = name.rsplit('.').next().unwrap_or(name);
    if name.eq_ignore_ascii_case("FN") && head.len() < line.len() {
        let value = unescape_text(&line[head.len() + 1..]);
        Some(value).filter(|value| !value.trim().is_empty())
    } else {
        None
    }
}

/// vCard 2.1-style bare parameters (`TEL;CELL;VOICE:`) that some phones still write in 3.0
/// files become `TYPE=` ones, which ical's parser requires.
fn name_bare_parameters(line: &str) -> String {
    let head = head_of(line);
    if !head.contains(';') {
        return line.to_owned();
    }
    let mut out = String::with_capacity(line.len() + 16);
    for (index, part) in head.split(';').enumerate() {
        if index > 0 {
            out.push(';');
            if !part.contains('=') && !part.contains('"') {
                if part.eq_ignore_ascii_case("QUOTED-PRINTABLE") {
                    out.push_str("ENCODING=");
                } else {
                    out.push_str("TYPE=");
                }
            }
        }
        out.push_str(part);
    }
    out.push_str(&line[head.len()..]);
    out
}

fn parse_card(file: &str, position: usize, lines: &[String]) -> Result<ParsedCard, String> {
    let mut text = String::with_capacity(lines.iter().map(|line| line.len() + 2).sum());
    for line in lines {
        text.push_str(&name_bare_parameters(line));
        text.push_str("\r\n");
    }
    let mut parser = VcardParser::new(text.as_bytes());
    let contact: VcardContact = match parser.next() {
        Some(Ok(contact)) => contact,
        Some(Err(error)) => return Err(error.to_string()),
        None => return Err("empty card".to_owned()),
    };
    let mut card = ParsedCard {
        file: file.to_owned(),
        position,
        ..ParsedCard::default()
    };
    let mut structured_name = None;
    for property in &contact.properties {
        let name = property.name.rsplit('.').next().unwrap_or(&property.name);
        let name = name.to_ascii_uppercase();
        if name == "PHOTO" || name == "LOGO" || name == "SOUND" || name == "KEY" {
            continue;
        }
        let Some(value) = decoded_value(property) else {
            continue;
        };
        match name.as_str() {
            "FN" => card.name = unescape_text(&value).trim().to_owned(),
            "N" => structured_name = Some(name_from_n(&value)),
            "NICKNAME" => card.nickname = non_empty(unescape_text(&value)),
            "ORG" => {
                let parts: Vec<String> = split_unescaped(&value, ';')
                    .into_iter()
                    .map(|part| part.trim().to_owned())
                    .filter(|part| !part.is_empty())
                    .collect();
                card.org = non_empty(parts.join(", "));
            }
            "UID" => card.uid = non_empty(unescape_text(&value).trim().to_owned()),
            "CATEGORIES" => {
                for group in split_unescaped(&value, ',') {
                    let group = group.trim();
                    if !group.is_empty() && !card.groups.iter().any(|known| known == group) {
                        card.groups.push(group.to_owned());
                    }
                }
            }
            "LANG" if card.language.is_none() => {
                let primary = value.split(['-', '_']).next().unwrap_or("").trim();
                if !primary.is_empty() && primary.chars().all(|c| c.is_ascii_alphabetic()) {
                    card.language = Some(primary.to_ascii_lowercase());
                }
            }
            "TEL" => {
                let raw = value.trim().to_owned();
                if !raw.is_empty() {
                    card.phones.push(ParsedPhone {
                        raw,
                        types: type_values(property),
                    });
                }
            }
            _ => {}
        }
    }
    if card.name.is_empty() {
        card.name = structured_name
            .filter(|name| !name.is_empty())
            .ok_or_else(|| "it has no name (FN or N)".to_owned())?;
    }
    Ok(card)
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|text| !text.trim().is_empty())
}

/// The value with quoted-printable decoded (other encodings are only used by PHOTO & co).
fn decoded_value(property: &Property) -> Option<String> {
    let value = property.value.as_deref()?;
    let quoted_printable = property.params.iter().flatten().any(|(key, values)| {
        key.eq_ignore_ascii_case("ENCODING")
            && values
                .iter()
                .any(|value| value.eq_ignore_ascii_case("QUOTED-PRINTABLE"))
    });
    if !quoted_printable {
        return Some(value.to_owned());
    }
    let latin1 = property.params.iter().flatten().any(|(key, values)| {
        key.eq_ignore_ascii_case("CHARSET")
            && values.iter().any(|value| {
                value.eq_ignore_ascii_case("ISO-8859-1") || value.eq_ignore_ascii_case("LATIN1")
            })
    });
    let bytes = decode_quoted_printable(value);
    Some(if latin1 {
        bytes.iter().map(|&byte| char::from(byte)).collect()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn decode_quoted_printable(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'=' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                index += 3;
                continue;
            }
            if index + 1 == bytes.len() {
                // A soft break left at the very end.
                break;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    out
}

fn type_values(property: &Property) -> Vec<String> {
    let mut types = Vec::new();
    for (key, values) in property.params.iter().flatten() {
        if key.eq_ignore_ascii_case("TYPE") {
            for value in values {
                for one in value.split(',') {
                    let one = one.trim().to_ascii_lowercase();
                    if !one.is_empty() && !types.contains(&one) {
                        types.push(one);
                    }
                }
            }
        }
    }
    types
}

/// "Dubois;Marie;;Dr.;" -> "Marie Dubois".
fn name_from_n(value: &str) -> String {
    let parts = split_unescaped(value, ';');
    let family = parts.first().map(|part| part.trim()).unwrap_or("");
    let given = parts.get(1).map(|part| part.trim()).unwrap_or("");
    match (given.is_empty(), family.is_empty()) {
        (false, false) => format!("{given} {family}"),
        (false, true) => given.to_owned(),
        (true, false) => family.to_owned(),
        (true, true) => String::new(),
    }
}

/// Splits on `separator` where it is not escaped with a backslash, unescaping each part.
fn split_unescaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') | Some('N') => current.push(' '),
                Some(other) => current.push(other),
                None => {}
            }
        } else if c == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// TEXT value unescaped; a newline in a name becomes a space, names are one line.
fn unescape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') | Some('N') => out.push(' '),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_and_4_cards_with_all_fields() {
        let text = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Marie Dubois\r\nN:Dubois;Marie;;;\r\n\
            NICKNAME:Mimi\r\nORG:Acme\\, Inc.;Sales\r\nUID:urn:uuid:1234\r\n\
            CATEGORIES:family,VIP\r\nTEL;TYPE=CELL,VOICE:+1 (514) 555-0199\r\n\
            PHOTO;ENCODING=b;TYPE=JPEG:AAAA\r\nEND:VCARD\r\n\
            BEGIN:VCARD\nVERSION:4.0\nFN:Jean Martin\nLANG;PREF=1:fr-CA\nLANG;PREF=2:en\n\
            TEL;VALUE=uri;TYPE=\"work,voice\":tel:+33-1-23-45-67-89\nEND:VCARD\n";
        let (cards, bad) = parse_file("contacts/a.vcf", text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(cards.len(), 2);
        let marie = &cards[0];
        assert_eq!(marie.name, "Marie Dubois");
        assert_eq!(marie.nickname.as_deref(), Some("Mimi"));
        assert_eq!(marie.org.as_deref(), Some("Acme, Inc., Sales"));
        assert_eq!(marie.uid.as_deref(), Some("urn:uuid:1234"));
        assert_eq!(marie.groups, ["family", "VIP"]);
        assert_eq!(marie.phones[0].raw, "+1 (514) 555-0199");
        assert_eq!(marie.phones[0].types, ["cell", "voice"]);
        let jean = &cards[1];
        assert_eq!(jean.position, 2);
        assert_eq!(jean.language.as_deref(), Some("fr"));
        assert_eq!(jean.phones[0].raw, "tel:+33-1-23-45-67-89");
        assert_eq!(jean.phones[0].types, ["work", "voice"]);
    }

    #[test]
    fn folded_lines_and_quoted_printable() {
        let text = "BEGIN:VCARD\nVERSION:3.0\nFN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Ren=C3=\n\
            =A9 Lef=C3=A8vre\nCATEGORIES:fri\n ends,work\nTEL;CELL;VOICE:514-555-\n 0100\nEND:VCARD\n";
        let (cards, bad) = parse_file("contacts/b.vcf", text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(cards[0].name, "René Lefèvre");
        assert_eq!(cards[0].groups, ["friends", "work"]);
        assert_eq!(cards[0].phones[0].raw, "514-555-0100");
        assert_eq!(cards[0].phones[0].types, ["cell", "voice"]);
    }

    #[test]
    fn broken_cards_are_named_and_the_others_load() {
        let text = "BEGIN:VCARD\nVERSION:3.0\nFN:Good One\nTEL:+15145550100\nEND:VCARD\n\
            BEGIN:VCARD\nVERSION:3.0\nTEL:+15145550101\nEND:VCARD\n\
            BEGIN:VCARD\nVERSION:3.0\nFN:No End\nBEGIN:VCARD\nVERSION:4.0\nFN:Last\n\
            this line has no colon\nEND:VCARD\n";
        let (cards, bad) = parse_file("contacts/c.vcf", text);
        assert_eq!(cards.len(), 1);
        assert_eq!(cards[0].name, "Good One");
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(
            bad[0].to_string(),
            "contacts/c.vcf: card 2 skipped: it has no name (FN or N)"
        );
        assert_eq!(bad[1].position, 3);
        assert_eq!(bad[1].name.as_deref(), Some("No End"));
        assert_eq!(bad[2].position, 4);
        assert!(bad[2]
            .to_string()
            .starts_with("contacts/c.vcf: card 4 (Last) skipped: "));
    }

    #[test]
    fn name_falls_back_to_n() {
        let text = "BEGIN:VCARD\nVERSION:3.0\nN:Tremblay;Luc;;;\nEND:VCARD\n";
        let (cards, _) = parse_file("x.vcf", text);
        assert_eq!(cards[0].name, "Luc Tremblay");
    }
}
