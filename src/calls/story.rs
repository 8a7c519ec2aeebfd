//! The journal line of a call: what happened, in the person's words, built step by step as
//! the call goes and written once when it ends:
//! `Marie Dubois (+33 1 23 45 67 89) called your French number; rang desk, cell; no answer
//! after 30 s; voicemail 0:42`.

use crate::contacts::number::display;

/// A call's steps, joined into one journal line at the end.
#[derive(Clone, Debug, Default)]
pub struct Story {
    steps: Vec<String>,
}

/// "Marie Dubois (+33 1 23 45 67 89)", or just the number when the name is unknown or is the
/// number itself. `name` is untrusted (caller ID): the journal flattens control characters.
pub fn who(name: &str, number: &str) -> String {
    let shown = if number.starts_with('+') {
        display(number)
    } else {
        number.to_owned()
    };
    let name = name.trim();
    if name.is_empty() || name == number || name == shown {
        shown
    } else {
        format!("{name} ({shown})")
    }
}

/// "your French number" for a DID whose country is known, else "your number +1 514-555-0100".
pub fn which_number(did_number: &str, did_country: Option<&str>) -> String {
    match did_country.and_then(country_adjective) {
        Some(adjective) => format!("your {adjective} number"),
        None => format!(
            "your number {}",
            if did_number.starts_with('+') {
                display(did_number)
            } else {
                did_number.to_owned()
            }
        ),
    }
}

fn country_adjective(code: &str) -> Option<&'static str> {
    Some(match code.to_ascii_uppercase().as_str() {
        "FR" => "French",
        "CA" => "Canadian",
        "US" => "American",
        "GB" => "British",
        "DE" => "German",
        "BE" => "Belgian",
        "CH" => "Swiss",
        "ES" => "Spanish",
        "IT" => "Italian",
        "NL" => "Dutch",
        "PT" => "Portuguese",
        "MX" => "Mexican",
        "JP" => "Japanese",
        "KR" => "Korean",
        "AU" => "Australian",
        _ => return None,
    })
}

impl Story {
    /// A story starting with its first step ("X called your French number").
    pub fn begin(first: impl Into<String>) -> Story {
        Story {
            steps: vec![first.into()],
        }
    }

    pub fn step(&mut self, text: impl Into<String>) {
        self.steps.push(text.into());
    }

    /// The one journal line.
    pub fn line(&self) -> String {
        self.steps.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_example() {
        let mut story = Story::begin(format!(
            "{} called {}",
            who("Marie Dubois", "+33123456789"),
            which_number("+33987654321", Some("FR"))
        ));
        story.step("rang desk, cell");
        story.step("no answer after 30 s");
        story.step("voicemail 0:42");
        assert_eq!(
            story.line(),
            "Marie Dubois (+33 1 23 45 67 89) called your French number; rang desk, cell; \
             no answer after 30 s; voicemail 0:42"
        );
    }

    #[test]
    fn unknown_names_and_countries() {
        assert_eq!(who("", "+15145550199"), "+1 514-555-0199");
        assert_eq!(who("+15145550199", "+15145550199"), "+1 514-555-0199");
        assert_eq!(who("desk", "1000"), "desk (1000)");
        assert_eq!(
            which_number("+15145550100", None),
            "your number +1 514-555-0100"
        );
        assert_eq!(
            which_number("+15145550100", Some("ca")),
            "your Canadian number"
        );
    }
}
