//! Creating a phone repo from a set of files (`patchbay init`, `patchbay demo`), and the demo
//! repo's content, built into the binary so `demo` works from any folder.

use std::path::Path;

use git2::{IndexAddOption, Repository, RepositoryInitOptions, Signature};

use super::CreateError;

/// A menu prompt of the demo repo: its path in a phone repo and its bytes.
macro_rules! prompt {
    ($name:literal) => {
        (
            concat!("greetings/", $name),
            include_bytes!(concat!("../../data/demo-repo/greetings/", $name)),
        )
    };
}

/// The `*86` menu's spoken prompts in English and French (espeak-ng, 8 kHz mono), which the
/// default menu rule plays from `greetings/` (`menu_<language>.wav` and the answers to each
/// choice). `patchbay init` puts them in a new repo; the demo repo has them too. A person
/// records their own by committing a WAV of the same name.
pub const MENU_PROMPTS: &[(&str, &[u8])] = &[
    prompt!("menu_en.wav"),
    prompt!("menu_fr.wav"),
    prompt!("no_voicemail_en.wav"),
    prompt!("no_voicemail_fr.wav"),
    prompt!("saved_en.wav"),
    prompt!("saved_fr.wav"),
    prompt!("not_saved_en.wav"),
    prompt!("not_saved_fr.wav"),
    prompt!("dnd_on_en.wav"),
    prompt!("dnd_on_fr.wav"),
    prompt!("dnd_off_en.wav"),
    prompt!("dnd_off_fr.wav"),
];

/// The demo phone repo (data/demo-repo in the source tree): path in the repo, bytes.
pub fn demo_files() -> Vec<(&'static str, &'static [u8])> {
    DEMO_OWN_FILES.iter().chain(MENU_PROMPTS).copied().collect()
}

/// The demo repo's files besides the menu prompts.
const DEMO_OWN_FILES: &[(&str, &[u8])] = &[
    (
        "README.md",
        include_bytes!("../../data/demo-repo/README.md"),
    ),
    (
        "phone.toml",
        include_bytes!("../../data/demo-repo/phone.toml"),
    ),
    (
        "rules/10-family.rhai",
        include_bytes!("../../data/demo-repo/rules/10-family.rhai"),
    ),
    (
        "rules/20-night.rhai",
        include_bytes!("../../data/demo-repo/rules/20-night.rhai"),
    ),
    (
        "rules/30-outgoing.rhai",
        include_bytes!("../../data/demo-repo/rules/30-outgoing.rhai"),
    ),
    (
        "contacts/family.vcf",
        include_bytes!("../../data/demo-repo/contacts/family.vcf"),
    ),
    (
        "contacts/work.vcf",
        include_bytes!("../../data/demo-repo/contacts/work.vcf"),
    ),
    (
        "greetings/away.wav",
        include_bytes!("../../data/demo-repo/greetings/away.wav"),
    ),
    (
        "greetings/busy.wav",
        include_bytes!("../../data/demo-repo/greetings/busy.wav"),
    ),
    (
        "greetings/fr/away.wav",
        include_bytes!("../../data/demo-repo/greetings/fr/away.wav"),
    ),
    (
        "greetings/fr/busy.wav",
        include_bytes!("../../data/demo-repo/greetings/fr/busy.wav"),
    ),
    (
        "greetings/contacts/mom.wav",
        include_bytes!("../../data/demo-repo/greetings/contacts/mom.wav"),
    ),
];

/// Creates a git repository in `dir` (new or empty) on branch `main`, writes `files` and
/// commits them; returns the commit id. A folder with anything in it is left untouched.
pub fn create_repo(
    dir: &Path,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<String, CreateError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|source| CreateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if entries.next().is_some() {
            return Err(CreateError::NotEmpty(dir.to_owned()));
        }
    }
    let git = |source| CreateError::Git {
        path: dir.to_owned(),
        source,
    };
    let mut options = RepositoryInitOptions::new();
    options.initial_head("main");
    let repo = Repository::init_opts(dir, &options).map_err(git)?;
    for (path, bytes) in files {
        if path.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(CreateError::BadPath((*path).to_owned()));
        }
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CreateError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&full, bytes).map_err(|source| CreateError::Io { path: full, source })?;
    }
    let mut index = repo.index().map_err(git)?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .map_err(git)?;
    index.write().map_err(git)?;
    let tree = repo
        .find_tree(index.write_tree().map_err(git)?)
        .map_err(git)?;
    // The person's own git identity when they have one, else a neutral one.
    let signature = repo
        .signature()
        .or_else(|_| Signature::now("patchbay", "patchbay@localhost"))
        .map_err(git)?;
    let commit = repo
        .commit(Some("HEAD"), &signature, &signature, message, &tree, &[])
        .map_err(git)?;
    Ok(commit.to_string())
}
