//! `phone.toml`: the non-secret settings the person keeps in the phone repo (device names and
//! codecs, what each DID is for, caller ID names per language). Typed and validated; every
//! error points at a line and column of the file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::contacts::number::{normalize, Region};

/// Audio codecs FreeSWITCH can offer to a device, as its `codec-prefs` spells them.
pub const KNOWN_CODECS: &[&str] = &[
    "OPUS", "G722", "PCMU", "PCMA", "G729", "GSM", "SPEEX", "ILBC", "AMR", "AMR-WB", "L16",
];

/// The validated content of `phone.toml` (empty when the repo has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhoneConfig {
    /// Extension ("1000") -> device.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// DID number in E.164 -> what it is for.
    pub dids: BTreeMap<String, DidConfig>,
    /// Language code ("fr") -> caller ID name shown on outgoing calls in that language.
    pub caller_id: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    /// A name for people ("desk", "cell"), used in the journal and the call log.
    pub name: Option<String>,
    /// Codecs in order of preference, upper case.
    pub codecs: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DidConfig {
    /// ISO country code of the number (taken from the number when not written).
    pub country: Option<String>,
    /// Language the person speaks on this number ("fr").
    pub language: Option<String>,
    /// A name for people ("French number").
    pub name: Option<String>,
}

/// What is wrong in `phone.toml`, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PhoneConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "phone.toml:{}:{}: {}",
            self.line, self.column, self.message
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    devices: BTreeMap<Spanned<String>, RawDevice>,
    #[serde(default)]
    dids: BTreeMap<Spanned<String>, RawDid>,
    #[serde(default)]
    caller_id: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Option<Spanned<String>>,
    #[serde(default)]
    codecs: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDid {
    country: Option<Spanned<String>>,
    language: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
}

impl PhoneConfig {
    /// Parses and validates `phone.toml`; DIDs written without a country code are read in
    /// `region`.
    pub fn parse(text: &str, region: Region) -> Result<PhoneConfig, PhoneConfigError> {
        let at = |span: Range<usize>, message: String| {
            let (line, column) = line_and_column(text, span.start);
            PhoneConfigError {
                line,
                column,
                message,
            }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let message = error.message().trim().to_owned();
            at(error.span().unwrap_or(0..0), message)
        })?;
        let mut config = PhoneConfig::default();
        for (extension, device) in raw.devices {
            if extension.get_ref().is_empty()
                || !extension.get_ref().bytes().all(|b| b.is_ascii_digit())
            {
                return Err(at(
                    extension.span(),
                    format!(
                        "device \"{}\" is not an extension (expected digits, e.g. [devices.1000])",
                        extension.get_ref()
                    ),
                ));
            }
            let mut codecs = Vec::with_capacity(device.codecs.len());
            for codec in device.codecs {
                let upper = codec.get_ref().trim().to_ascii_uppercase();
                if !KNOWN_CODECS.contains(&upper.as_str()) {
                    let suggestion = closest(&upper, KNOWN_CODECS)
                        .map(|known| format!("did you mean {known}? "))
                        .unwrap_or_default();
                    return Err(at(
                        codec.span(),
                        format!(
                            "unknown codec \"{}\" ({suggestion}expected one of {})",
                            codec.get_ref(),
                            KNOWN_CODECS.join(", ")
                        ),
                    ));
                }
                codecs.push(upper);
            }
            let name = match device.name {
                Some(name) => Some(one_line(name, "device name", &at)?),
                None => None,
            };
            config
                .devices
                .insert(extension.into_inner(), DeviceConfig { name, codecs });
        }
        for (number, did) in raw.dids {
            let Some(normalized) = normalize(number.get_ref(), region) else {
                return Err(at(
                    number.span(),
                    format!(
                        "DID \"{}\" is not a phone number (expected e.g. [dids.\"+15145550100\"])",
                        number.get_ref()
                    ),
                ));
            };
            let country = match did.country {
                Some(code) => match Region::parse(code.get_ref()) {
                    Some(region) => Some(region.code()),
                    None => {
                        return Err(at(
                            code.span(),
                            format!(
                            "country \"{}\" is not an ISO 3166 code (expected e.g. \"CA\", \"FR\")",
                            code.get_ref()
                        ),
                        ))
                    }
                },
                None => normalized.country.clone(),
            };
            let language = match did.language {
                Some(language) => Some(language_code(language, &at)?),
                None => None,
            };
            let name = match did.name {
                Some(name) => Some(one_line(name, "DID name", &at)?),
                None => None,
            };
            if config.dids.contains_key(&normalized.e164) {
                return Err(at(
                    number.span(),
                    format!("DID {} is listed twice", normalized.e164),
                ));
            }
            config.dids.insert(
                normalized.e164,
                DidConfig {
                    country,
                    language,
                    name,
                },
            );
        }
        for (language, name) in raw.caller_id {
            let language = language_code(language, &at)?;
            let name = one_line(name, "caller ID name", &at)?;
            config.caller_id.insert(language, name);
        }
        Ok(config)
    }
}

fn language_code(
    code: Spanned<String>,
    at: &impl Fn(Range<usize>, String) -> PhoneConfigError,
) -> Result<String, PhoneConfigError> {
    let text = code.get_ref().trim();
    if (2..=3).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(at(
            code.span(),
            format!(
                "\"{}\" is not a language code (expected two letters, e.g. \"fr\", \"en\")",
                code.get_ref()
            ),
        ))
    }
}

/// Names end up in SIP headers and the journal: one non-empty line.
fn one_line(
    name: Spanned<String>,
    what: &str,
    at: &impl Fn(Range<usize>, String) -> PhoneConfigError,
) -> Result<String, PhoneConfigError> {
    let text = name.get_ref().trim();
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err(at(
            name.span(),
            format!("{what} must be one non-empty line of text"),
        ));
    }
    Ok(text.to_owned())
}

fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), *candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |index| index + 1);
    (line, offset - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> Region {
        Region::parse("CA").unwrap()
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
[devices.1000]
name = "desk"
codecs = ["opus", "PCMU"]

[dids."514-555-0100"]
language = "fr"
name = "French number"

[dids."+44 20 7946 0000"]

[caller_id]
fr = "Marie Dubois"
en = "Mary Dubois"
"#;
        let config = PhoneConfig::parse(text, ca()).unwrap();
        assert_eq!(config.devices["1000"].codecs, ["OPUS", "PCMU"]);
        assert_eq!(config.devices["1000"].name.as_deref(), Some("desk"));
        let french = &config.dids["+15145550100"];
        assert_eq!(french.country.as_deref(), Some("CA"));
        assert_eq!(french.language.as_deref(), Some("fr"));
        assert_eq!(config.dids["+442079460000"].country.as_deref(), Some("GB"));
        assert_eq!(config.caller_id["en"], "Mary Dubois");
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let error = PhoneConfig::parse("[devices.1000]\ncodecs = [\"OPUSS\"]\n", ca()).unwrap_err();
        assert_eq!(error.line, 2);
        assert_eq!(error.column, 11);
        assert!(
            error
                .to_string()
                .starts_with("phone.toml:2:11: unknown codec \"OPUSS\" (did you mean OPUS?"),
            "{error}"
        );

        let error = PhoneConfig::parse("\n\n[dids.\"hello\"]\n", ca()).unwrap_err();
        assert_eq!(error.line, 3, "{error}");
        assert!(error.message.contains("not a phone number"), "{error}");

        let error = PhoneConfig::parse("[devices.1000]\nnmae = \"x\"\n", ca()).unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(error.message.contains("nmae"), "{error}");

        let error = PhoneConfig::parse("[caller_id]\nfrench = \"x\"\n", ca()).unwrap_err();
        assert_eq!((error.line, error.column), (2, 1), "{error}");

        let error = PhoneConfig::parse("devices = [", ca()).unwrap_err();
        assert_eq!(error.line, 1, "{error}");
    }
}
