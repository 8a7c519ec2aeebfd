//! `patchbay init DIR`: a new phone repo the person owns, committed once on branch `main`, with
//! a starter rule file, a sample contact, a commented `phone.toml` and a README.

use std::path::Path;
use std::process::ExitCode;

use crate::repo::{create_repo, CreateError, MENU_PROMPTS};

use super::InitArgs;

/// The files of a new phone repo (path, content).
pub const STARTER_FILES: &[(&str, &str)] = &[
    ("README.md", README),
    ("rules/50-mine.rhai", MY_RULES),
    ("contacts/people.vcf", SAMPLE_CONTACT),
    ("phone.toml", PHONE_TOML),
    ("greetings/README.md", GREETINGS_README),
    (
        ".gitignore",
        "# Recordings and exports never belong here.\n*.tmp\n",
    ),
];

pub fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let commit = create(&args.dir)?;
    println!(
        "created the phone repo {} (branch main, commit {})\n\
         next: edit rules/50-mine.rhai and contacts/people.vcf, commit, and point the settings' \
         repo.path at this folder",
        args.dir.display(),
        &commit[..7.min(commit.len())]
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates the repo and its first commit; returns the commit id. Refuses a folder that
/// exists and is not empty, so nothing of the person's is overwritten.
pub fn create(dir: &Path) -> Result<String, CreateError> {
    let files: Vec<(&str, &[u8])> = STARTER_FILES
        .iter()
        .map(|(path, text)| (*path, text.as_bytes()))
        .chain(MENU_PROMPTS.iter().copied())
        .collect();
    create_repo(dir, &files, "A new phone repo (patchbay init)")
}

const README: &str = r#"# My phone

This repository is my phone system. patchbay follows the `main` branch: whatever I commit here
decides how my next call is handled, within a second, without restarting anything.

- `rules/*.rhai`: my rules (who rings, when voicemail picks up, which number I call out with).
  patchbay's own default rules run first; mine come after and override them. Start with
  `rules/50-mine.rhai`.
- `contacts/*.vcf`: my address book, as exported by my phone, Google or Nextcloud (vCard 3.0 or
  4.0). A caller's number is matched whatever way it is written.
- `greetings/`: voicemail greetings as WAV files. `greetings/fr/away.wav` is the French
  version of `away`, `greetings/contacts/<uid>.wav` is what one contact hears.
- `phone.toml`: names and codecs of my devices, what each of my numbers is for, my caller ID.
- `templates/`: optional replacements for the email and calendar texts.

Before committing, `patchbay check` shows every mistake as file:line. If I commit a mistake
anyway, nothing changes: the previous commit keeps running, and the journal says which commit,
file and line was refused and why. Fixing it in a new commit is all it takes.

Passwords never go here: they live in patchbay's settings file.
"#;

const MY_RULES: &str = r#"// My rules. They load after patchbay's defaults, in file-name order, so they win.
// Each rule has conditions (rule, rule_any, except, ...) and properties; every rule that
// matches a call adds its properties, and later rules override earlier ones.
// Remove the `//` in front of an example to use it, then commit.

// Family rings my phones for 40 seconds before voicemail:
// rule(#{
//     id: "family_rings_longer",
//     rule: #{ contact_groups: "family" },
//     properties: #{ voicemail_delay: 40 },
// });

// At night, calls from numbers I do not know go straight to voicemail:
// rule(#{
//     id: "quiet_nights",
//     rule: #{ origin: "external", time_interval: #{ begins: 2200, ends: 700 } },
//     except: #{ contact: () },
//     properties: #{ decline: true },
// });

// When I call France, show my French number:
// rule(#{
//     id: "call_france_from_paris",
//     rule: #{ origin: "internal", country: "FR" },
//     properties: #{ did: "+33123456789" },
// });
"#;

const SAMPLE_CONTACT: &str = "BEGIN:VCARD\r
VERSION:4.0\r
UID:sample-contact\r
FN:Sample Contact\r
N:Contact;Sample;;;\r
CATEGORIES:family\r
LANG:en\r
TEL;VALUE=uri;TYPE=cell:tel:+1-514-555-0199\r
NOTE:Replace me with your own contacts (export a .vcf from your phone or address book).\r
END:VCARD\r
";

const PHONE_TOML: &str = r#"# Non-secret settings of my phone (passwords go in patchbay's settings file).

# My devices, by extension: a name people understand, and codecs in order of preference.
# [devices.1000]
# name = "desk"
# codecs = ["OPUS", "G722", "PCMU"]

# My phone numbers (DIDs): their country and the language I answer them in.
# [dids."+15145550100"]
# name = "Montreal number"
# language = "fr"

# The name shown when I call out, per language.
# [caller_id]
# en = "Sample Person"
# fr = "Sample Person"
"#;

const GREETINGS_README: &str = r#"Put voicemail greetings here as WAV files (16-bit PCM; 8 kHz mono is plenty):

    greetings/away.wav              the greeting named "away"
    greetings/fr/away.wav           the same in French, for French-speaking callers
    greetings/contacts/<uid>.wav    what one contact hears (uid: the UID of their vCard)

To convert a recording: sox recording.m4a -r 8000 -c 1 -b 16 greetings/away.wav

The *86 menu speaks with the prompts here, in English and French: menu_en.wav (the choices),
no_voicemail_en.wav, saved_en.wav, not_saved_en.wav, dnd_on_en.wav, dnd_off_en.wav, and the
same ending in _fr. Replace any of them with your own voice by committing a WAV of that name;
add another language with the same names ending in its code (menu_de.wav, ...).
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contacts::number::Region;
    use crate::repo::{read_commit, Loader};
    use crate::rules::Resources;
    use git2::Repository;

    #[test]
    fn a_new_repo_loads_as_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone");
        let commit = create(&path).unwrap();
        let repo = Repository::open(&path).unwrap();
        assert_eq!(repo.head().unwrap().shorthand().unwrap(), "main");
        let files = read_commit(&path, "main", &[]).unwrap();
        assert_eq!(files.commit, commit);
        assert_eq!(files.files.len(), STARTER_FILES.len() + MENU_PROMPTS.len());
        // The *86 menu has something to say in both languages the default rules speak.
        for prompt in ["greetings/menu_en.wav", "greetings/dnd_on_fr.wav"] {
            assert!(
                files.files.iter().any(|file| file.path == prompt),
                "{prompt} missing"
            );
        }
        let snapshot = Loader::new(Vec::new(), Region::parse("CA").unwrap(), None)
            .load(&files)
            .unwrap();
        let contact = snapshot.contact("514-555-0199").unwrap();
        assert_eq!(contact.name, "Sample Contact");
        assert_eq!(contact.groups, ["family"]);
    }

    #[test]
    fn a_folder_with_files_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = create(dir.path()).unwrap_err().to_string();
        assert!(
            error.ends_with("the folder is not empty (give a new or empty folder)"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
            "mine"
        );
        assert!(!dir.path().join(".git").exists());
    }
}
