//! One commit of the phone repo, loaded and checked as a whole into an immutable [`Snapshot`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use git2::{ObjectType, Oid};

use crate::contacts::number::{normalize, Region};
use crate::contacts::{Contact, ContactBook, ContactFile};
use crate::rules::{
    Clock, DidSetting, LoadError, Resources, RuleSet, RuleSettings, Source, SourceFile,
};

use super::greetings::{GreetingIndex, GreetingStore};
use super::phone::PhoneConfig;
use super::{CommitFiles, Error};

const RULES_FOLDER: &str = "rules/";
const CONTACTS_FOLDER: &str = "contacts/";
const TEMPLATES_FOLDER: &str = "templates/";
const PHONE_CONFIG: &str = "phone.toml";

/// Past this many remembered numbers the cache starts over (address books that churn).
const NUMBER_CACHE_LIMIT: usize = 100_000;

/// Parsed contact files by path and blob id.
type ContactCache = HashMap<(String, Oid), Arc<ContactFile>>;

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

    /// Every template override of the commit: file name ("voicemail.txt") -> raw text.
    pub fn templates(&self) -> impl Iterator<Item = (&str, &str)> {
        self.templates
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
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
        if self.file.is_empty() {
            return f.write_str(&self.message);
        }
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
#[derive(Clone)]
pub struct Loader {
    default_rules: Vec<SourceFile>,
    region: Region,
    /// What rules read through `settings()`, from the settings file; each commit's
    /// `phone.toml` adds to it.
    rule_settings: RuleSettings,
    /// Local time for `now()` and time conditions (the settings' timezone).
    clock: Option<Arc<dyn Clock>>,
    /// `None` checks greetings without exporting them (`patchbay check`).
    greetings: Option<Arc<GreetingStore>>,
    /// Contact files of the last load by path and content: parsing and normalising numbers
    /// is most of a load, and most commits change one file or none.
    contact_cache: Arc<Mutex<ContactCache>>,
    /// Numbers as written -> E.164, kept across loads: normalising is the slow part of
    /// parsing, and a re-exported address book mostly repeats the numbers it had.
    number_cache: Arc<Mutex<HashMap<String, Option<String>>>>,
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
            rule_settings: RuleSettings::default(),
            clock: None,
            greetings,
            contact_cache: Arc::default(),
            number_cache: Arc::default(),
        }
    }

    /// Rules read `settings` and tell time with `clock` (the settings file's values and
    /// timezone; without this, empty settings and UTC).
    pub fn with_rule_context(mut self, settings: RuleSettings, clock: Arc<dyn Clock>) -> Loader {
        self.rule_settings = settings;
        self.clock = Some(clock);
        self
    }

    /// The settings file's values with this commit's `phone.toml` on top.
    fn rule_settings_for(&self, phone: &PhoneConfig) -> RuleSettings {
        let mut settings = self.rule_settings.clone();
        for (language, name) in &phone.caller_id {
            settings
                .caller_id
                .insert(language.to_lowercase(), name.clone());
        }
        for (number, did) in &phone.dids {
            match settings
                .dids
                .iter_mut()
                .find(|known| known.number == *number)
            {
                Some(known) => {
                    if did.country.is_some() {
                        known.country = did.country.clone();
                    }
                }
                None => settings.dids.push(DidSetting {
                    number: number.clone(),
                    country: did.country.clone(),
                }),
            }
        }
        settings
    }

    fn compile(
        &self,
        files: &[SourceFile],
        phone: &PhoneConfig,
    ) -> Result<RuleSet, Vec<LoadError>> {
        let rules = RuleSet::compile_with(files, &self.rule_settings_for(phone))?;
        Ok(match &self.clock {
            Some(clock) => rules.with_clock(Arc::clone(clock)),
            None => rules,
        })
    }

    /// Every `contacts/**.vcf` of the commit, reusing the parse of files that did not change.
    /// Bytes that are not UTF-8 are replaced, so a card with one odd character still loads.
    fn contact_book(&self, files: &CommitFiles) -> ContactBook {
        let mut cache = self
            .contact_cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut previous = std::mem::take(&mut *cache);
        let mut numbers = self
            .number_cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if numbers.len() > NUMBER_CACHE_LIMIT {
            numbers.clear();
        }
        let region = self.region;
        let mut to_e164 = |raw: &str| -> Option<String> {
            if let Some(known) = numbers.get(raw) {
                return known.clone();
            }
            let e164 = normalize(raw, region).map(|number| number.e164);
            numbers.insert(raw.to_owned(), e164.clone());
            e164
        };
        let mut parsed = Vec::new();
        for file in files.files.iter().filter(|file| {
            file.path.starts_with(CONTACTS_FOLDER)
                && file.path.to_ascii_lowercase().ends_with(".vcf")
        }) {
            let key = Oid::hash_object(ObjectType::Blob, &file.bytes)
                .ok()
                .map(|id| (file.path.clone(), id));
            let contact_file = key
                .as_ref()
                .and_then(|key| previous.remove(key))
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(&file.bytes);
                    Arc::new(ContactFile::parse_with(&file.path, &text, &mut to_e164))
                });
            if let Some(key) = key {
                cache.insert(key, Arc::clone(&contact_file));
            }
            parsed.push((file.path.clone(), contact_file));
        }
        ContactBook::from_parsed(parsed, self.region)
    }

    pub fn greeting_store(&self) -> Option<&Arc<GreetingStore>> {
        self.greetings.as_ref()
    }

    /// The snapshot in force before any good commit: patchbay's default rules alone.
    pub fn built_in(&self) -> Result<Snapshot, Error> {
        let rules = self
            .compile(&self.default_rules, &PhoneConfig::default())
            .map_err(|errors| {
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

        let rules = match self.compile(&rule_files, &phone) {
            Ok(rules) => Some(rules),
            Err(errors) => {
                problems.extend(errors.into_iter().map(load_error_problem));
                None
            }
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

        let contacts = self.contact_book(files);

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

/// Everything `patchbay check` tells the person about one commit (or working tree).
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The commit checked; empty for a working tree.
    pub commit: String,
    /// Problems that refuse the commit.
    pub problems: Vec<Problem>,
    /// Cards that would be skipped.
    pub bad_cards: Vec<crate::contacts::BadCard>,
    /// Numbers on more than one card.
    pub duplicates: Vec<crate::contacts::Duplicate>,
    /// Cards that would load.
    pub contact_count: usize,
}

impl CheckReport {
    /// True when the commit would go live.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line per finding, ripgrep style (`file:line:col: message`), problems first.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        lines.extend(self.bad_cards.iter().map(ToString::to_string));
        lines.extend(self.duplicates.iter().map(ToString::to_string));
        lines
    }
}

impl Loader {
    /// Checks files without exporting anything: every problem that would refuse them, and
    /// what would happen to the contacts.
    pub fn check(&self, files: &CommitFiles) -> CheckReport {
        let checker = Loader {
            greetings: None,
            ..self.clone()
        };
        let mut report = CheckReport {
            commit: files.commit.clone(),
            ..CheckReport::default()
        };
        match checker.load(files) {
            Ok(snapshot) => {
                let contacts = snapshot.contacts();
                report.bad_cards = contacts.bad_cards().cloned().collect();
                report.duplicates = contacts.duplicates().to_vec();
                report.contact_count = contacts.len();
            }
            Err(Error::Refused(refusal)) => {
                report.problems = refusal.problems;
                let contacts = self.contact_book(files);
                report.bad_cards = contacts.bad_cards().cloned().collect();
                report.duplicates = contacts.duplicates().to_vec();
                report.contact_count = contacts.len();
            }
            Err(other) => report.problems.push(Problem {
                file: String::new(),
                line: None,
                column: None,
                message: other.to_string(),
            }),
        }
        report
    }
}
