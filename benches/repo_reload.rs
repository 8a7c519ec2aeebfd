//! Commit-to-live latency and snapshot memory for a big phone repo: 200 rules, 5,000 contacts,
//! 50 greetings. Run with `cargo bench --bench repo_reload`.
//!
//! Latency is measured as `patchbay run` sees it: the watcher thread (default 500 ms poll
//! plus the filesystem watch on `.git/refs`) notices the commit, reads its tree, compiles the
//! rules, indexes the contacts, checks and exports the greetings, and swaps the snapshot.
//! Memory is the net heap a snapshot holds, counted by a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::{IndexAddOption, Repository, RepositoryInitOptions, Signature};
use patchbay::contacts::number::Region;
use patchbay::journal::Journal;
use patchbay::repo::{read_commit, GreetingStore, Loader, RepoSettings, Watcher};
use patchbay::rules::Resources;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RULE_FILES: usize = 20;
const RULES_PER_FILE: usize = 10;
const CONTACT_FILES: usize = 50;
const CONTACTS_PER_FILE: usize = 100;
const GREETINGS: usize = 50;
const COMMITS: usize = 15;

fn rule_file(file: usize, generation: usize) -> String {
    let mut text = format!("// generated rules, file {file}, generation {generation}\n");
    for rule in 0..RULES_PER_FILE {
        let n = file * RULES_PER_FILE + rule;
        text.push_str(&format!(
            "rule(#{{\n    id: \"rule_{n}\",\n    rule: #{{ origin: \"external\", peer_number: \"555{:04}$\" }},\n    properties: #{{ voicemail_delay: {} }},\n}});\n",
            n,
            10 + (n + generation) % 30
        ));
    }
    text
}

fn contact_file(file: usize, generation: usize) -> String {
    let mut text = String::new();
    for card in 0..CONTACTS_PER_FILE {
        let n = file * CONTACTS_PER_FILE + card;
        let area = [438, 450, 514, 579][n % 4];
        if n.is_multiple_of(2) {
            text.push_str(&format!(
                "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person {n} g{generation}\r\nUID:p{n}\r\nCATEGORIES:friends\r\nTEL;TYPE=CELL:({area}) 555-{:04}\r\nEND:VCARD\r\n",
                n % 10_000
            ));
        } else {
            text.push_str(&format!(
                "BEGIN:VCARD\nVERSION:4.0\nFN:Person {n} g{generation}\nUID:p{n}\nLANG:fr\nTEL;VALUE=uri;TYPE=work:tel:+1-{area}-555-{:04}\nEND:VCARD\n",
                n % 10_000
            ));
        }
    }
    text
}

fn greeting(n: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).expect("wav header");
    for i in 0..8000u32 {
        let t = i as f32 / 8000.0;
        let sample = (t * (200.0 + n as f32 * 10.0) * std::f32::consts::TAU).sin() * 6000.0;
        writer.write_sample(sample as i16).expect("wav sample");
    }
    writer.finalize().expect("wav finalize");
    bytes.into_inner()
}

fn commit_all(repo: &Repository, message: &str) -> String {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("index write");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("find tree");
    let signature = Signature::now("Bench", "bench@example.org").expect("signature");
    let parent = repo.head().ok().and_then(|head| head.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        message,
        &tree,
        &parents,
    )
    .expect("commit")
    .to_string()
}

fn write(root: &Path, path: &str, bytes: &[u8]) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(full, bytes).expect("write");
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("phone");
    let mut options = RepositoryInitOptions::new();
    options.initial_head("main");
    let repo = Repository::init_opts(&root, &options).expect("init");
    for file in 0..RULE_FILES {
        write(
            &root,
            &format!("rules/{file:02}-gen.rhai"),
            rule_file(file, 0).as_bytes(),
        );
    }
    for file in 0..CONTACT_FILES {
        write(
            &root,
            &format!("contacts/{file:02}.vcf"),
            contact_file(file, 0).as_bytes(),
        );
    }
    for n in 0..GREETINGS {
        let path = match n % 3 {
            0 => format!("greetings/g{n}.wav"),
            1 => format!("greetings/fr/g{n}.wav"),
            _ => format!("greetings/contacts/p{n}.wav"),
        };
        write(&root, &path, &greeting(n));
    }
    let first = commit_all(&repo, "big repo");
    let region = Region::parse("CA").expect("region");

    // Memory: the net heap one snapshot holds (the commit's raw files are freed before).
    // A first load warms process-wide lazy state (the numbering-plan metadata and its regexes)
    // and writes the greetings out, so the measured load counts the snapshot alone.
    let export = dir.path().join("export");
    let store = Arc::new(GreetingStore::new(&export).expect("export dir"));
    let files = read_commit(&root, &first, &[]).expect("read commit");
    let started = Instant::now();
    let warm_up = Loader::new(Vec::new(), region, Some(store.clone()))
        .load(&files)
        .expect("load");
    let first_load = started.elapsed();
    drop(warm_up);
    let loader = Loader::new(Vec::new(), region, Some(store.clone()));
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    let snapshot = loader.load(&files).expect("load");
    let load_time = started.elapsed();
    let snapshot_bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let raw_bytes: usize = files.files.iter().map(|file| file.bytes.len()).sum();
    println!(
        "snapshot: {} contacts, {} numbers, {} greetings, {} rules in {} files; first load (greetings written) {:.1} ms; full load, nothing cached {:.1} ms; heap held {:.2} MiB (commit files {:.2} MiB, freed after load)",
        snapshot.contacts().len(),
        snapshot.contacts().number_count(),
        snapshot.greetings().len(),
        RULE_FILES * RULES_PER_FILE,
        RULE_FILES,
        first_load.as_secs_f64() * 1000.0,
        load_time.as_secs_f64() * 1000.0,
        snapshot_bytes as f64 / (1024.0 * 1024.0),
        raw_bytes as f64 / (1024.0 * 1024.0),
    );

    // Ring-path lookups.
    let lookups = 100_000;
    let started = Instant::now();
    let mut found = 0;
    for n in 0..lookups {
        let number = format!("+1514555{:04}", (n * 4 + 2) % 5000);
        found += usize::from(snapshot.contact(&number).is_some());
    }
    let e164 = started.elapsed();
    let started = Instant::now();
    for n in 0..lookups {
        let number = format!("(514) 555-{:04}", (n * 4 + 2) % 5000);
        found += usize::from(snapshot.contact(&number).is_some());
    }
    let national = started.elapsed();
    println!(
        "lookup: E.164 {:.2} us, national form {:.2} us (per lookup incl. formatting the query; {found} hits)",
        e164.as_secs_f64() * 1e6 / lookups as f64,
        national.as_secs_f64() * 1e6 / lookups as f64,
    );
    drop(snapshot);
    drop(files);

    // Commit-to-live through the watcher.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = RepoSettings {
        path: root.clone(),
        ..RepoSettings::default()
    };
    let journal = Journal::in_memory(chrono_tz::UTC);
    let watcher =
        Watcher::start(&settings, loader, journal, std::future::pending()).expect("watcher");
    let handle = watcher.handle();
    let mut latencies = Vec::with_capacity(COMMITS);
    for generation in 1..=COMMITS {
        let file = generation % RULE_FILES;
        write(
            &root,
            &format!("rules/{file:02}-gen.rhai"),
            rule_file(file, generation).as_bytes(),
        );
        let file = generation % CONTACT_FILES;
        write(
            &root,
            &format!("contacts/{file:02}.vcf"),
            contact_file(file, generation).as_bytes(),
        );
        let commit = commit_all(&repo, &format!("generation {generation}"));
        let started = Instant::now();
        runtime
            .block_on(handle.wait_live(&commit, Duration::from_secs(10)))
            .expect("commit went live");
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "commit-to-live over {COMMITS} commits (each changes a rule file and a 100-card contacts file): median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target <= 300 ms)",
        ms(latencies[COMMITS / 2]),
        ms(latencies[COMMITS * 9 / 10]),
        ms(latencies[COMMITS - 1]),
    );

    // The person re-exports the whole address book: every contact file changes, the numbers
    // in it mostly do not.
    for file in 0..CONTACT_FILES {
        write(
            &root,
            &format!("contacts/{file:02}.vcf"),
            contact_file(file, 1000).as_bytes(),
        );
    }
    let commit = commit_all(&repo, "re-exported address book");
    let started = Instant::now();
    runtime
        .block_on(handle.wait_live(&commit, Duration::from_secs(10)))
        .expect("commit went live");
    println!(
        "commit-to-live, address book re-exported (all {} cards rewritten): {:.1} ms",
        CONTACT_FILES * CONTACTS_PER_FILE,
        ms(started.elapsed())
    );
    drop(watcher);
}
