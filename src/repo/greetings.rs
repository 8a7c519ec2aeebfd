//! Greetings: checking the WAVs of a commit, exporting them where FreeSWITCH reads them, and
//! finding the right one for a call (the contact's own, the language's, the plain one).
//!
//! Exported files are named after their content hash (the git blob id), written once through
//! a temporary name and never rewritten, so a file an in-flight call is playing stays the same
//! bytes at the same path. A file is deleted only when no live snapshot refers to it: each
//! snapshot holds an `Arc<ExportedSet>` and the store keeps only weak references to them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use git2::{ObjectType, Oid};

use super::RepoFile;

/// The folder of the phone repo that holds greetings.
pub const GREETINGS_FOLDER: &str = "greetings/";

/// The exported files one snapshot refers to; alive as long as the snapshot is.
#[derive(Debug, Default)]
pub struct ExportedSet {
    file_names: HashSet<String>,
}

/// The greetings of one snapshot: repo name ("fr/away.wav") -> path FreeSWITCH plays.
#[derive(Debug, Default)]
pub struct GreetingIndex {
    by_name: HashMap<String, String>,
    /// Keeps the exported files of this snapshot from being cleaned up.
    _exported: Arc<ExportedSet>,
}

/// A greeting of the commit that is not a WAV FreeSWITCH can play.
#[derive(Debug)]
pub struct BadGreeting {
    pub path: String,
    pub reason: String,
}

/// The export folder and the snapshots that still use files in it.
#[derive(Debug)]
pub struct GreetingStore {
    dir: PathBuf,
    live: Mutex<Vec<Weak<ExportedSet>>>,
}

impl GreetingStore {
    /// Exports into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<GreetingStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(GreetingStore {
            dir,
            live: Mutex::new(Vec::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks every `greetings/**/*.wav` of a commit: all must be readable WAVs.
    pub fn check(files: &[RepoFile]) -> Vec<BadGreeting> {
        greeting_files(files)
            .filter_map(|file| {
                check_wav(&file.bytes).err().map(|reason| BadGreeting {
                    path: file.path.clone(),
                    reason,
                })
            })
            .collect()
    }

    /// Writes the commit's greetings (already checked) into the export folder and indexes
    /// them. Files already there (same content) are left untouched.
    pub fn export(&self, files: &[RepoFile]) -> io::Result<GreetingIndex> {
        let mut by_name = HashMap::new();
        let mut file_names = HashSet::new();
        for file in greeting_files(files) {
            let id = Oid::hash_object(ObjectType::Blob, &file.bytes)
                .map_err(|error| io::Error::other(error.message().to_owned()))?;
            let file_name = format!("{id}.wav");
            let target = self.dir.join(&file_name);
            if !target.exists() {
                write_once(&self.dir, &target, &file.bytes)?;
            }
            let name = file.path[GREETINGS_FOLDER.len()..].to_owned();
            by_name.insert(name, target.to_string_lossy().into_owned());
            file_names.insert(file_name);
        }
        let exported = Arc::new(ExportedSet { file_names });
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        live.push(Arc::downgrade(&exported));
        Ok(GreetingIndex {
            by_name,
            _exported: exported,
        })
    }

    /// Indexes the commit's greetings without exporting them (`patchbay check`): paths point
    /// into the repo ("greetings/fr/away.wav").
    pub fn index_only(files: &[RepoFile]) -> GreetingIndex {
        let by_name = greeting_files(files)
            .map(|file| {
                (
                    file.path[GREETINGS_FOLDER.len()..].to_owned(),
                    file.path.clone(),
                )
            })
            .collect();
        GreetingIndex {
            by_name,
            _exported: Arc::default(),
        }
    }

    /// Deletes exported files that no live snapshot refers to; returns how many.
    pub fn clean(&self) -> io::Result<usize> {
        let referenced: HashSet<String> = {
            let mut live = self
                .live
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            live.retain(|set| set.strong_count() > 0);
            live.iter()
                .filter_map(Weak::upgrade)
                .flat_map(|set| set.file_names.iter().cloned().collect::<Vec<_>>())
                .collect()
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Only our own files: 40 hex digits and .wav; anything else there is not ours.
            let ours = name.len() == 44
                && name.ends_with(".wav")
                && name[..40].bytes().all(|b| b.is_ascii_hexdigit());
            if ours && !referenced.contains(name) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl GreetingIndex {
    /// The exported path for the greeting `name` ("away" or "away.wav"), trying in order:
    /// the contact's own for this name (`contacts/<uid>/<name>.wav`), the contact's own
    /// (`contacts/<uid>.wav`), the language's (`<lang>/<name>.wav`, then the primary subtag
    /// of "fr-CA"), and the plain one (`<name>.wav`).
    pub fn resolve(
        &self,
        name: &str,
        language: Option<&str>,
        contact_uid: Option<&str>,
    ) -> Option<&str> {
        let name = name.trim().trim_start_matches('/');
        if name.is_empty() || name.split('/').any(|part| part == "..") {
            return None;
        }
        let with_extension;
        let name = if name.to_ascii_lowercase().ends_with(".wav") {
            name
        } else {
            with_extension = format!("{name}.wav");
            &with_extension
        };
        let mut candidates: Vec<String> = Vec::with_capacity(5);
        if let Some(uid) = contact_uid.filter(|uid| !uid.is_empty() && !uid.contains('/')) {
            candidates.push(format!("contacts/{uid}/{name}"));
            candidates.push(format!("contacts/{uid}.wav"));
        }
        if let Some(language) = language.filter(|language| !language.is_empty()) {
            let language = language.to_ascii_lowercase();
            candidates.push(format!("{language}/{name}"));
            if let Some(primary) = language.split(['-', '_']).next() {
                if primary != language {
                    candidates.push(format!("{primary}/{name}"));
                }
            }
        }
        candidates.push(name.to_owned());
        candidates
            .iter()
            .find_map(|candidate| self.by_name.get(candidate.as_str()))
            .map(String::as_str)
    }

    /// Greeting names as in the repo, relative to `greetings/`, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn greeting_files(files: &[RepoFile]) -> impl Iterator<Item = &RepoFile> {
    files.iter().filter(|file| {
        file.path.starts_with(GREETINGS_FOLDER) && file.path.to_ascii_lowercase().ends_with(".wav")
    })
}

/// A WAV FreeSWITCH can play: a valid header, PCM samples, and some audio.
fn check_wav(bytes: &[u8]) -> Result<(), String> {
    let reader = hound::WavReader::new(Cursor::new(bytes))
        .map_err(|error| format!("not a readable WAV file ({error})"))?;
    let spec = reader.spec();
    if reader.duration() == 0 {
        return Err("the WAV file holds no audio".to_owned());
    }
    if spec.sample_format == hound::SampleFormat::Int && spec.bits_per_sample > 32 {
        return Err(format!(
            "{} bits per sample is not supported",
            spec.bits_per_sample
        ));
    }
    Ok(())
}

/// Written under a temporary name then renamed, so FreeSWITCH never sees half a file.
fn write_once(dir: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = dir.join(format!(
        ".partial-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, target)
    })();
    if written.is_err() {
        // Best effort: a leftover partial file is harmless but untidy.
        let _ = fs::remove_file(&temporary);
    }
    written
}
