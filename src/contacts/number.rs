//! Phone numbers: normalising what people and carriers write into E.164, and telling the
//! country (and, for Quebec, the province) a number belongs to.

use std::str::FromStr;

use phonenumber::country::Id as CountryId;
use phonenumber::Mode;

/// The region assumed for numbers written without a country code ("514-555-0199" in Canada,
/// "01 23 45 67 89" in France). Settings key `default_region`, an ISO 3166 alpha-2 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(CountryId);

impl Region {
    /// `None` when the code is not a region the numbering plan knows.
    pub fn parse(code: &str) -> Option<Region> {
        CountryId::from_str(&code.trim().to_ascii_uppercase())
            .ok()
            .map(Region)
    }

    /// North American Numbering Plan regions dial out with 011, the rest of the world with 00.
    fn is_nanp(self) -> bool {
        phonenumber::metadata::DATABASE
            .by_id(self.0.as_ref())
            .is_some_and(|meta| meta.country_code() == 1)
    }

    pub fn code(self) -> String {
        format!("{:?}", self.0)
    }
}

/// A number in E.164 with what can be told about where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number {
    /// `+15145550199`
    pub e164: String,
    /// ISO 3166 alpha-2 code, e.g. "CA".
    pub country: Option<String>,
    /// Finer location when the numbering plan tells it, e.g. "CA-QC".
    pub location: Option<String>,
}

/// Area codes of the province of Quebec (NANP), where French is the expected language.
const QUEBEC_AREA_CODES: &[&str] = &[
    "263", "354", "367", "418", "438", "450", "468", "514", "579", "581", "819", "873",
];

/// Normalise `raw` (any common written form, or a `tel:` URI) to E.164. Numbers without a
/// country code are read in `default_region`. `None` when it is not a valid phone number
/// (short extensions such as "1000" or "*86" are not).
pub fn normalize(raw: &str, default_region: Region) -> Option<Number> {
    let text = raw.trim();
    let text = text.strip_prefix("tel:").unwrap_or(text);
    // tel: URIs may carry parameters (";ext=12", ";phone-context=..."): the number comes first.
    let text = text.split(';').next().unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    // Visual separators go before parsing: the parser misreads some hyphenated forms
    // ("+49-171-7654321" loses a digit).
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}'))
        .collect();
    // The parser applies the default region's national prefix even to numbers that carry
    // their own country code (+49 171... read in CA loses the 1), so international forms are
    // parsed without a region.
    let international = if compact.starts_with('+') {
        Some(compact.clone())
    } else if let Some(rest) = compact
        .strip_prefix("011")
        .filter(|_| default_region.is_nanp())
    {
        Some(format!("+{rest}"))
    } else {
        compact
            .strip_prefix("00")
            .filter(|_| !default_region.is_nanp())
            .map(|rest| format!("+{rest}"))
    };
    let parsed = match &international {
        Some(number) => phonenumber::parse(None, number).ok()?,
        None => phonenumber::parse(Some(default_region.0), &compact).ok()?,
    };
    // Fictional ranges (555-01xx) and new allocations fail strict validation but are real
    // enough for an address book; only numbers too short to be outside numbers are refused.
    if !phonenumber::is_valid(&parsed) && parsed.national().value() < 1_000_000 {
        return None;
    }
    let e164 = parsed.format().mode(Mode::E164).to_string();
    let country = parsed.country().id().map(|id| format!("{id:?}"));
    let location = match country.as_deref() {
        Some("CA") if QUEBEC_AREA_CODES.contains(&e164.get(2..5).unwrap_or("")) => {
            Some("CA-QC".to_owned())
        }
        _ => None,
    };
    Some(Number {
        e164,
        country,
        location,
    })
}

/// E.164 written for people: "+1 514-555-0199" style, as the number's country writes it.
pub fn display(e164: &str) -> String {
    match phonenumber::parse(None, e164) {
        Ok(parsed) => parsed.format().mode(Mode::International).to_string(),
        Err(_) => e164.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(code: &str) -> Region {
        Region::parse(code).unwrap()
    }

    #[test]
    fn written_forms_normalise_to_e164() {
        let ca = region("CA");
        let fr = region("fr");
        assert_eq!(
            normalize("+1 (514) 555-0199", fr).unwrap().e164,
            "+15145550199"
        );
        assert_eq!(normalize("514-555-0199", ca).unwrap().e164, "+15145550199");
        assert_eq!(
            normalize("0033 1 23 45 67 89", fr).unwrap().e164,
            "+33123456789"
        );
        assert_eq!(
            normalize("01 23 45 67 89", fr).unwrap().e164,
            "+33123456789"
        );
        assert_eq!(
            normalize("tel:+49-171-7654321", ca).unwrap().e164,
            "+491717654321"
        );
        assert_eq!(
            normalize("011 49 171 7654321", ca).unwrap().e164,
            "+491717654321"
        );
        assert_eq!(
            normalize("0049 171 7654321", fr).unwrap().e164,
            "+491717654321"
        );
    }

    #[test]
    fn country_and_quebec_location() {
        let ca = region("CA");
        let montreal = normalize("514-555-0199", ca).unwrap();
        assert_eq!(montreal.country.as_deref(), Some("CA"));
        assert_eq!(montreal.location.as_deref(), Some("CA-QC"));
        let toronto = normalize("416-555-0199", ca).unwrap();
        assert_eq!(toronto.location, None);
        let paris = normalize("+33 1 23 45 67 89", ca).unwrap();
        assert_eq!(paris.country.as_deref(), Some("FR"));
    }

    #[test]
    fn extensions_and_garbage_are_not_numbers() {
        let ca = region("CA");
        assert_eq!(normalize("1000", ca), None);
        assert_eq!(normalize("*86", ca), None);
        assert_eq!(normalize("", ca), None);
        assert_eq!(normalize("hello", ca), None);
        assert!(Region::parse("XX").is_none());
    }
}
