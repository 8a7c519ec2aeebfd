//! The text templates (minijinja) for mails and event descriptions.
//!
//! Defaults live in the project's `templates/` folder and are embedded in the binary. The
//! phone repo may hold a template of the same name; the repo loader hands its text over through
//! [`Overrides::set`]. An override that fails to render falls back to the default and the
//! render result says why, so the caller can put it in the journal.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use minijinja::Environment;
use serde::Serialize;

use super::Error;

/// Every default template: (name, text).
const DEFAULTS: &[(&str, &str)] = &[
    (
        "voicemail.txt",
        include_str!("../../templates/voicemail.txt"),
    ),
    ("missed.txt", include_str!("../../templates/missed.txt")),
    ("outage.txt", include_str!("../../templates/outage.txt")),
    (
        "refused-commit.txt",
        include_str!("../../templates/refused-commit.txt"),
    ),
    ("event.txt", include_str!("../../templates/event.txt")),
];

/// The template texts from the phone repo's `templates/` folder, by file name. A cheap-to-clone
/// handle: the repo loader swaps in a new map per snapshot, renderers read the current one.
#[derive(Clone, Default)]
pub struct Overrides {
    texts: Arc<ArcSwap<BTreeMap<String, String>>>,
}

impl Overrides {
    /// Replaces every override (file name such as "voicemail.txt" -> template text).
    pub fn set(&self, texts: BTreeMap<String, String>) {
        self.texts.store(Arc::new(texts));
    }

    /// The override for this template, if the repo has one.
    pub fn get(&self, name: &str) -> Option<String> {
        self.texts.load().get(name).cloned()
    }
}

/// A rendered template, and why the repo's version was not used if it failed.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    /// Set when the repo's template failed and the default was used instead.
    pub fallback: Option<String>,
}

/// The embedded default templates, parsed once.
pub struct Templates {
    defaults: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut defaults = plain_environment();
        for (name, text) in DEFAULTS {
            // The defaults ship with the binary and a unit test renders each; a broken one is
            // reported when used rather than at startup.
            if let Err(error) = defaults.add_template(name, text) {
                tracing::error!("templates/{name}: {error:#}");
            }
        }
        Templates { defaults }
    }

    /// Renders `name` with `context`, preferring the repo's `override_text`.
    pub fn render(
        &self,
        name: &str,
        context: &impl Serialize,
        override_text: Option<&str>,
    ) -> Result<Rendered, Error> {
        let mut fallback = None;
        if let Some(text) = override_text {
            match render_one(name, text, context) {
                Ok(text) => {
                    return Ok(Rendered {
                        text,
                        fallback: None,
                    })
                }
                Err(error) => {
                    fallback = Some(format!(
                        "templates/{name} in the phone repo: {error}; used the default template instead"
                    ))
                }
            }
        }
        let template = self
            .defaults
            .get_template(name)
            .map_err(|error| Error::Template {
                name: name.to_owned(),
                reason: describe(&error),
            })?;
        let text = template.render(context).map_err(|error| Error::Template {
            name: name.to_owned(),
            reason: describe(&error),
        })?;
        Ok(Rendered { text, fallback })
    }
}

/// Templates produce plain text (mail bodies, iCalendar TEXT), so nothing is HTML-escaped;
/// undefined variables are errors so a typo in a repo template falls back visibly.
fn plain_environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    environment.set_keep_trailing_newline(true);
    environment
}

fn render_one(name: &str, text: &str, context: &impl Serialize) -> Result<String, String> {
    let mut environment = plain_environment();
    environment
        .add_template(name, text)
        .map_err(|e| describe(&e))?;
    let template = environment.get_template(name).map_err(|e| describe(&e))?;
    template.render(context).map_err(|e| describe(&e))
}

/// "line 3: undefined value" rather than minijinja's multi-line debug display.
fn describe(error: &minijinja::Error) -> String {
    let mut text = match error.line() {
        Some(line) => format!("line {line}: {}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

/// Splits a mail template's output: the first line is the subject, the rest the body.
pub fn split_subject(rendered: &str) -> (String, String) {
    let rendered = rendered.trim_start_matches(['\r', '\n']);
    let (subject, body) = rendered.split_once('\n').unwrap_or((rendered, ""));
    (
        subject.trim().to_owned(),
        body.trim_start_matches(['\r', '\n']).to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn full_context() -> minijinja::Value {
        context! {
            caller => "Marie Dubois", number => "+33 1 23 45 67 89", duration => "0:42",
            time => "Saturday 28 November 2026 14:03", called => "+1 514-555-0100",
            rule => "family", transcript => "bonjour", confidence => 91,
            no_transcript => "", devices => vec!["desk", "cell"], rules => vec!["family"],
            transfers => vec!["desk to cell (transfer code)"], drops => Vec::<String>::new(),
            conference => Vec::<String>::new(), conversation => "/recordings/call-1.wav",
            hangup_cause => "NORMAL_CLEARING", outcome => "Voicemail, 0:42", voicemail => true,
            what => "gateway did1 down", since => "14:03", detail => "", commit => "3f2a1c9",
            summary => "night rules", errors => vec!["rules/20-night.rhai:12: unknown key"],
        }
    }

    #[test]
    fn every_default_renders() {
        let templates = Templates::new();
        for (name, _) in DEFAULTS {
            let rendered = templates.render(name, &full_context(), None).unwrap();
            assert!(rendered.fallback.is_none());
            assert!(!rendered.text.trim().is_empty(), "{name}");
        }
        let voicemail = templates
            .render("voicemail.txt", &full_context(), None)
            .unwrap();
        let (subject, body) = split_subject(&voicemail.text);
        assert_eq!(subject, "Voicemail from Marie Dubois (0:42)");
        assert!(body.contains("bonjour"), "{body}");
        assert!(body.contains("+1 514-555-0100"), "{body}");
        assert!(body.contains("\"family\""), "{body}");
    }

    #[test]
    fn a_repo_template_overrides_and_a_broken_one_falls_back() {
        let templates = Templates::new();
        let custom = templates
            .render(
                "voicemail.txt",
                &full_context(),
                Some("VM {{ caller }}\n\nsaid: {{ transcript }}"),
            )
            .unwrap();
        assert_eq!(custom.text, "VM Marie Dubois\n\nsaid: bonjour");
        assert!(custom.fallback.is_none());

        let broken = templates
            .render(
                "voicemail.txt",
                &full_context(),
                Some("VM {{ caller }\n\n{{ nope }}"),
            )
            .unwrap();
        assert!(broken.text.starts_with("Voicemail from Marie Dubois"));
        let why = broken.fallback.unwrap();
        assert!(
            why.starts_with("templates/voicemail.txt in the phone repo: line 1: "),
            "{why}"
        );

        let undefined = templates
            .render("voicemail.txt", &full_context(), Some("{{ callerr }}"))
            .unwrap();
        assert!(undefined.fallback.unwrap().contains("undefined"));
    }
}
