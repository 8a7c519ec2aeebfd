//! One commit of the phone repo, loaded and checked as a whole into an immutable [`Snapshot`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::contacts::number::Region;
use crate::contacts::{Contact, ContactBook};
use crate::rules::{Resources, RuleSet, Source, SourceFile};

use super::greetings::{GreetingIndex, GreetingStore};
use super::phone::PhoneConfig;
use super::{CommitFiles, Error};

const RULES_FOLDER: &str = "rules/";
const CONTACTS_FOLDER: &str = "contacts/";
const TEMPLATES_FOLDER: &str = "templates/";
const PHONE_CONFIG: &str = "phone.toml";

/// Everything one commit says about how calls are handled. Never changes once built; a call
/// keeps the `Arc<Snapshot>` it started with while newer commits go live.
#[derive(Debug)]
pub struct Snapshot {
    commit: String,
    rules: Arc<RuleSet>,
    contacts: ContactBook,
    greetings: GreetingIndex,
    phone: PhoneConfig,
    templates: HashMap<String, String>,
}

impl Snapshot {
    /// Full hex id of the commit; empty for the built-in snapshot used before any good commit.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    /// The first 7 hex digits, as people write commit ids.
    pub fn short_commit(&self) -> &str {
        short(&self.commit)
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub fn contacts(&self) -> &ContactBook {
        &self.contacts
    }

    pub fn greetings(&self) -> &GreetingIndex {
        &self.greetings
    }

    /// `phone.toml` (defaults when the repo has none).
    pub fn phone(&self) -> &PhoneConfig {
        &self.phone
    }

    /// An email or event template override from `templates/` ("voicemail.txt"), raw text.
    pub fn template(&self, name: &str) -> Option<&str> {
        self.templates.get(name).map(String::as_str)
    }
}

impl Resources for Snapshot {
    fn contact(&self, number: &str) -> Option<Contact> {
        self.contacts.contact(number)
    }

    fn greeting(
        &self,
        name: &str,
        language: Option<&str>,
        contact_uid: Option<&str>,
    ) -> Option<String> {
        self.greetings
            .resolve(name, language, contact_uid)
            .map(str::to_owned)
    }
}

pub(crate) fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// One thing wrong with a commit, located for the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A commit that cannot run, with every reason found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Full hex id.
    pub commit: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commit {} refused: ", short(&self.commit))?;
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Turns commits into snapshots: the rules shipped with patchbay, the default region for
/// numbers, and where greetings are exported.
#[derive(Clone, Debug)]
pub struct Loader {
    default_rules: Vec<SourceFile>,
    region: Region,
    /// `None` checks greetings without exporting them (`patchbay check`).
    greetings: Option<Arc<GreetingStore>>,
}

impl Loader {
    pub fn new(
        default_rules: Vec<SourceFile>,
        region: Region,
        greetings: Option<Arc<GreetingStore>>,
    ) -> Loader {
        Loader {
            default_rules,
            region,
            greetings,
        }
    }

    pub fn greeting_store(&self) -> Option<&Arc<GreetingStore>> {
        self.greetings.as_ref()
    }

    /// The snapshot in force before any good commit: patchbay's default rules alone.
    pub fn built_in(&self) -> Result<Snapshot, Error> {
        let rules = RuleSet::compile(&self.default_rules).map_err(|errors| {
            Error::Refused(Refusal {
                commit: String::new(),
                problems: errors.into_iter().map(load_error_problem).collect(),
            })
        })?;
        Ok(Snapshot {
            commit: String::new(),
            rules: Arc::new(rules),
            contacts: ContactBook::new(self.region),
            greetings: GreetingIndex::default(),
            phone: PhoneConfig::default(),
            templates: HashMap::new(),
        })
    }

    /// Loads one commit. Any rule, `phone.toml` or greeting problem refuses the whole commit
    /// (every problem found is listed); a bad vCard only skips that card.
    pub fn load(&self, files: &CommitFiles) -> Result<Snapshot, Error> {
        let mut problems = Vec::new();

        let mut rule_files = self.default_rules.clone();
        for file in files
            .files
            .iter()
            .filter(|file| file.path.starts_with(RULES_FOLDER) && file.path.ends_with(".rhai"))
        {
            match std::str::from_utf8(&file.bytes) {
                Ok(text) => rule_files.push(SourceFile {
                    source: Source::PhoneRepo,
                    path: file.path.clone(),
                    text: text.to_owned(),
                }),
                Err(error) => problems.push(not_utf8(&file.path, &file.bytes, error)),
            }
        }
        let rules = match RuleSet::compile(&rule_files) {
            Ok(rules) => Some(rules),
            Err(errors) => {
                problems.extend(errors.into_iter().map(load_error_problem));
                None
            }
        };

        let phone = match files.files.iter().find(|file| file.path == PHONE_CONFIG) {
            None => PhoneConfig::default(),
            Some(file) => match std::str::from_utf8(&file.bytes) {
                Ok(text) => match PhoneConfig::parse(text, self.region) {
                    Ok(config) => config,
                    Err(error) => {
                        problems.push(Problem {
                            file: PHONE_CONFIG.to_owned(),
                            line: Some(error.line),
                            column: Some(error.column),
                            message: error.message,
                        });
                        PhoneConfig::default()
                    }
                },
                Err(error) => {
                    problems.push(not_utf8(&file.path, &file.bytes, error));
                    PhoneConfig::default()
                }
            },
        };

        for bad in GreetingStore::check(&files.files) {
            problems.push(Problem {
                file: bad.path,
                line: None,
                column: None,
                message: format!(
                    "{} (save it as a PCM WAV, e.g. `sox in.mp3 -r 8000 -c 1 -b 16 out.wav`)",
                    bad.reason
                ),
            });
        }

        let mut templates = HashMap::new();
        for file in files
            .files
            .iter()
            .filter(|file| file.path.starts_with(TEMPLATES_FOLDER))
        {
            match std::str::from_utf8(&file.bytes) {
                Ok(text) => {
                    templates.insert(
                        file.path[TEMPLATES_FOLDER.len()..].to_owned(),
                        text.to_owned(),
                    );
                }
                Err(error) => problems.push(not_utf8(&file.path, &file.bytes, error)),
            }
        }

        let rules = match rules {
            Some(rules) if problems.is_empty() => rules,
            _ => {
                return Err(Error::Refused(Refusal {
                    commit: files.commit.clone(),
                    problems,
                }))
            }
        };

        let vcards: Vec<(&str, std::borrow::Cow<'_, str>)> = files
            .files
            .iter()
            .filter(|file| {
                file.path.starts_with(CONTACTS_FOLDER)
                    && file.path.to_ascii_lowercase().ends_with(".vcf")
            })
            .map(|file| (file.path.as_str(), String::from_utf8_lossy(&file.bytes)))
            .collect();
        let contacts = ContactBook::from_files(
            vcards.iter().map(|(path, text)| (*path, text.as_ref())),
            self.region,
        );

        let greetings = match &self.greetings {
            Some(store) => store.export(&files.files).map_err(|source| Error::Export {
                dir: store.dir().to_owned(),
                source,
            })?,
            None => GreetingStore::index_only(&files.files),
        };

        Ok(Snapshot {
            commit: files.commit.clone(),
            rules: Arc::new(rules),
            contacts,
            greetings,
            phone,
            templates,
        })
    }
}

fn load_error_problem(error: crate::rules::LoadError) -> Problem {
    let mut message = String::new();
    if let Some(rule) = &error.rule {
        message.push_str(&format!("rule '{rule}': "));
    }
    message.push_str(&error.message);
    if let Some(hint) = &error.hint {
        message.push_str(&format!(" ({hint})"));
    }
    Problem {
        file: error.file,
        line: error.line,
        column: error.column,
        message,
    }
}

fn not_utf8(path: &str, bytes: &[u8], error: std::str::Utf8Error) -> Problem {
    let offset = error.valid_up_to();
    let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    Problem {
        file: path.to_owned(),
        line: Some(line),
        column: None,
        message: "not UTF-8 text (save the file as UTF-8)".to_owned(),
    }
}
