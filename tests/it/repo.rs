//! Integration tests: the phone repo, with real git repositories in temp dirs (git2), a real
//! export folder and the watcher thread as `patchbay run` starts it.

use std::future::pending;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::{Repository, RepositoryInitOptions, Signature};
use patchbay::calls::{Call, Origin};
use patchbay::contacts::number::Region;
use patchbay::journal::Journal;
use patchbay::repo::{
    create_repo, demo_files, read_commit, read_worktree, GreetingStore, Loader, Outcome,
    RepoHandle, RepoSettings, Watcher,
};
use patchbay::rules::{Resources, SharedResources};

/// A working repo on branch `main` where the test plays the person committing.
struct PersonRepo {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl PersonRepo {
    fn new() -> PersonRepo {
        let dir = tempfile::tempdir().unwrap();
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &options).unwrap();
        PersonRepo { dir, repo }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the files, removes `(path, None)` ones, commits everything; returns the id.
    fn commit(&self, files: &[(&str, Option<&[u8]>)], message: &str) -> String {
        for (path, bytes) in files {
            let full = self.path().join(path);
            match bytes {
                Some(bytes) => {
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, bytes).unwrap();
                }
                None => std::fs::remove_file(&full).unwrap(),
            }
        }
        let mut index = self.repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("Person", "person@example.org").unwrap();
        let parent = self
            .repo
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap()
            .to_string()
    }
}

fn wav(frequency: f32, milliseconds: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut bytes, spec).unwrap();
        for n in 0..(8 * milliseconds) {
            let t = n as f32 / 8000.0;
            let sample = (t * frequency * std::f32::consts::TAU).sin() * 8000.0;
            writer.write_sample(sample as i16).unwrap();
        }
        writer.finalize().unwrap();
    }
    bytes.into_inner()
}

fn vcard(name: &str, uid: &str, tel: &str) -> String {
    format!("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nUID:{uid}\r\nTEL;TYPE=CELL:{tel}\r\nEND:VCARD\r\n")
}

struct Running {
    watcher: Watcher,
    journal: Journal,
    greetings_dir: PathBuf,
    _greetings: tempfile::TempDir,
}

impl Running {
    fn handle(&self) -> RepoHandle {
        self.watcher.handle()
    }

    /// Journal lines that mention `text`.
    fn lines_with(&self, text: &str) -> Vec<String> {
        self.journal
            .recent()
            .into_iter()
            .filter(|line| line.contains(text))
            .collect()
    }
}

fn start(settings: RepoSettings, region: &str) -> Running {
    let greetings = tempfile::tempdir().unwrap();
    let greetings_dir = greetings.path().join("export");
    let store = Arc::new(GreetingStore::new(&greetings_dir).unwrap());
    let loader = Loader::new(Vec::new(), Region::parse(region).unwrap(), Some(store));
    let journal = Journal::in_memory(chrono_tz::UTC);
    let watcher = Watcher::start(&settings, loader, journal.clone(), pending()).unwrap();
    Running {
        watcher,
        journal,
        greetings_dir,
        _greetings: greetings,
    }
}

fn local(repo: &PersonRepo, poll_interval_ms: u64) -> RepoSettings {
    RepoSettings {
        path: repo.path().to_owned(),
        poll_interval_ms,
        ..RepoSettings::default()
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// A repo whose one commit holds Alice Martin's card.
fn alice_only() -> PersonRepo {
    let person = PersonRepo::new();
    person.commit(
        &[(
            "contacts/friends.vcf",
            Some(vcard("Alice Martin", "alice", "+1 514 555 0101").as_bytes()),
        )],
        "first",
    );
    person
}

#[tokio::test]
async fn an_idle_repo_is_looked_at_once_per_poll_not_in_a_loop() {
    let person = alice_only();
    let running = start(local(&person, 200), "CA");
    let handle = running.handle();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = handle.looks();
    tokio::time::sleep(2 * SECOND).await;
    let looks = handle.looks() - before;
    // Ten polls in two seconds; reading the ref must not wake the watcher again (inotify
    // reports opens), which spun a core on thousands of looks per second.
    assert!((5..=20).contains(&looks), "{looks} looks in 2 s");
}

#[tokio::test]
async fn a_commit_changes_the_next_lookup_within_a_second_without_restart() {
    let person = alice_only();
    // Polling every 10 s: only the filesystem watch on .git/refs can make the deadline.
    let running = start(local(&person, 10_000), "CA");
    let handle = running.handle();
    assert_eq!(
        handle.snapshot().contact("514-555-0101").unwrap().name,
        "Alice Martin"
    );

    let in_flight = handle.snapshot();
    let committed_at = Instant::now();
    let second = person.commit(
        &[(
            "contacts/friends.vcf",
            Some(vcard("Alice Tremblay", "alice", "+1 514 555 0101").as_bytes()),
        )],
        "alice married",
    );
    let live = handle.wait_live(&second, SECOND).await.unwrap();
    assert!(
        committed_at.elapsed() < SECOND,
        "{:?}",
        committed_at.elapsed()
    );
    assert_eq!(live.commit(), second);
    assert_eq!(
        handle.snapshot().contact("+15145550101").unwrap().name,
        "Alice Tremblay"
    );
    // The call that started before keeps what it started with.
    assert_eq!(
        in_flight.contact("+15145550101").unwrap().name,
        "Alice Martin"
    );
    assert_eq!(
        running
            .lines_with(&format!("commit {} is live", &second[..7]))
            .len(),
        1
    );
}

#[tokio::test]
async fn the_tree_of_the_commit_is_loaded_not_the_working_tree() {
    let person = PersonRepo::new();
    let first = person.commit(
        &[(
            "contacts/a.vcf",
            Some(vcard("Committed", "c", "+15145550111").as_bytes()),
        )],
        "first",
    );
    std::fs::write(
        person.path().join("contacts/a.vcf"),
        vcard("Uncommitted", "c", "+15145550111"),
    )
    .unwrap();
    let running = start(local(&person, 100), "CA");
    let snapshot = running.handle().snapshot();
    assert_eq!(snapshot.commit(), first);
    assert_eq!(snapshot.contact("+15145550111").unwrap().name, "Committed");
}

#[tokio::test]
async fn a_bad_commit_keeps_the_old_snapshot_and_the_next_good_one_goes_live() {
    let person = PersonRepo::new();
    let good = person.commit(
        &[
            (
                "contacts/a.vcf",
                Some(vcard("Bob", "bob", "+15145550122").as_bytes()),
            ),
            ("greetings/away.wav", Some(&wav(440.0, 200))),
            ("phone.toml", Some(b"[caller_id]\nfr = \"Marie\"\n")),
        ],
        "good",
    );
    let running = start(local(&person, 100), "CA");
    let handle = running.handle();
    assert_eq!(handle.snapshot().commit(), good);

    // Line 3 has a codec typo; the contact change in the same commit must not go live either.
    let bad_toml = person.commit(
        &[
            (
                "contacts/a.vcf",
                Some(vcard("Robert", "bob", "+15145550122").as_bytes()),
            ),
            (
                "phone.toml",
                Some(b"[devices.1000]\nname = \"desk\"\ncodecs = [\"OPUSS\"]\n"),
            ),
        ],
        "typo",
    );
    match handle.wait_for(&bad_toml, SECOND).await.unwrap() {
        Outcome::Refused(refusal) => {
            assert_eq!(refusal.problems.len(), 1);
            assert_eq!(refusal.problems[0].file, "phone.toml");
            assert_eq!(refusal.problems[0].line, Some(3));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(handle.snapshot().commit(), good);
    assert_eq!(
        handle.snapshot().contact("+15145550122").unwrap().name,
        "Bob"
    );
    let lines = running.lines_with(&bad_toml[..7]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!(
            "commit {} refused: phone.toml:3:11: unknown codec \"OPUSS\"",
            &bad_toml[..7]
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!("still running commit {}", &good[..7])),
        "{}",
        lines[0]
    );

    // A greeting that is not a WAV refuses the commit too, naming the file.
    let bad_wav = person.commit(
        &[
            ("phone.toml", Some(b"[caller_id]\nfr = \"Marie\"\n")),
            ("greetings/fr/away.wav", Some(b"ID3 this is an mp3 renamed")),
        ],
        "mp3",
    );
    assert!(matches!(
        handle.wait_for(&bad_wav, SECOND).await.unwrap(),
        Outcome::Refused(_)
    ));
    let lines = running.lines_with(&bad_wav[..7]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("greetings/fr/away.wav: not a readable WAV file"),
        "{}",
        lines[0]
    );
    assert_eq!(handle.snapshot().commit(), good);

    // Fixing it: the next good commit is taken normally, with everything since the good one.
    let fixed = person.commit(
        &[("greetings/fr/away.wav", Some(&wav(660.0, 200)))],
        "fixed",
    );
    let live = handle.wait_live(&fixed, SECOND).await.unwrap();
    assert_eq!(live.contact("+15145550122").unwrap().name, "Robert");
    assert!(live.greeting("away", Some("fr"), None).is_some());
    // Each refused commit was journaled once, not once per poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.lines_with(&bad_toml[..7]).len(), 1);
    assert_eq!(running.lines_with(&bad_wav[..7]).len(), 1);
}

/// An inbound call from `number` to the person's DID, as the call flow builds it from the
/// live snapshot.
fn call_from(snapshot: &patchbay::repo::Snapshot, number: &str) -> Call {
    Call {
        uuid: "a1b2c3d4-0001".into(),
        origin: Origin::External,
        peer_number: number.into(),
        caller_id_name: "CALLER".into(),
        caller_id_number: number.into(),
        destination_number: "+15145550100".into(),
        did: Some("+15145550100".into()),
        country: Some("CA".into()),
        location: Some("CA-QC".into()),
        contact: snapshot.contact(number),
        local_time: chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
            .and_then(|day| day.and_hms_opt(14, 30, 0))
            .unwrap(),
        device_count: 2,
        busy: false,
        do_not_disturb: false,
        state: "ringing".into(),
        hangup_cause: None,
    }
}

#[tokio::test]
async fn a_commit_changes_the_next_call_decision_within_a_second() {
    let family_rule = |delay: u32| {
        format!(
            "rule(#{{\n    id: \"family\",\n    rule: #{{ contact_groups: \"family\" }},\n    properties: #{{ voicemail_delay: {delay}, voicemail: |call, props| greeting(\"away\") }},\n}});\n"
        )
    };
    let mom = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Claire Roy\r\nUID:mom\r\nCATEGORIES:family\r\nTEL:514-555-0142\r\nEND:VCARD\r\n";
    let person = PersonRepo::new();
    let mom_audio = wav(330.0, 200);
    let first = person.commit(
        &[
            ("rules/10-family.rhai", Some(family_rule(40).as_bytes())),
            ("contacts/family.vcf", Some(mom.as_bytes())),
            ("greetings/away.wav", Some(&wav(440.0, 200))),
            ("greetings/contacts/mom.wav", Some(&mom_audio)),
        ],
        "family rings longer",
    );
    let running = start(local(&person, 500), "CA");
    let handle = running.handle();
    let snapshot = handle.wait_live(&first, SECOND).await.unwrap();
    let resources: SharedResources = snapshot.clone();
    let decision = snapshot
        .rules()
        .decide(&call_from(&snapshot, "+15145550142"), &resources);
    assert_eq!(decision.voicemail_delay(), Some(40));
    let greeting = decision.voicemail_greeting().unwrap().to_owned();
    assert_eq!(
        std::fs::read(&greeting).unwrap(),
        mom_audio,
        "Mom hears her own greeting"
    );

    let committed_at = Instant::now();
    let second = person.commit(
        &[("rules/10-family.rhai", Some(family_rule(15).as_bytes()))],
        "shorter",
    );
    let snapshot = handle.wait_live(&second, SECOND).await.unwrap();
    assert!(committed_at.elapsed() < SECOND);
    let resources: SharedResources = snapshot.clone();
    let decision = snapshot
        .rules()
        .decide(&call_from(&snapshot, "514 555 0142"), &resources);
    assert_eq!(decision.voicemail_delay(), Some(15));
    // A stranger is not family: the rule does not apply.
    let stranger = snapshot
        .rules()
        .decide(&call_from(&snapshot, "+15145550999"), &resources);
    assert_ne!(stranger.voicemail_delay(), Some(15));
}

#[tokio::test]
async fn a_rule_that_does_not_compile_refuses_the_commit_with_file_and_line() {
    let person = PersonRepo::new();
    let good = person.commit(
        &[(
            "rules/10-ok.rhai",
            Some(b"rule(#{ id: \"ok\", properties: #{ record: true } });\n"),
        )],
        "good",
    );
    let running = start(local(&person, 100), "CA");
    let handle = running.handle();
    let bad = person.commit(
        &[(
            "rules/20-night.rhai",
            Some(b"// night\n\nrule(#{ id: \"night\", rule: #{ origin: \"external\" \n"),
        )],
        "broken",
    );
    assert!(matches!(
        handle.wait_for(&bad, SECOND).await.unwrap(),
        Outcome::Refused(_)
    ));
    assert_eq!(handle.snapshot().commit(), good);
    let lines = running.lines_with(&bad[..7]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The file ends inside the map opened on line 3: the parser reports the line after it.
    assert!(
        lines[0].contains(&format!(
            "commit {} refused: rules/20-night.rhai:4:1: ",
            &bad[..7]
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!("still running commit {}", &good[..7])),
        "{}",
        lines[0]
    );
    let fixed = person.commit(&[("rules/20-night.rhai", None)], "revert");
    handle.wait_live(&fixed, SECOND).await.unwrap();
}

/// 2,000 contacts in the forms address books export: vCard 3.0 and 4.0, several cards per
/// file, folded lines, quoted-printable names, `tel:` URIs, 2.1-style bare TYPE parameters.
fn address_book(malformed: bool) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for file in 0..40u32 {
        let mut text = String::new();
        for card in 0..50 {
            let n = file * 50 + card;
            // 555-01xx numbers are fictional; spread the rest over 438 and 450.
            let area = if n.is_multiple_of(2) { 438 } else { 450 };
            let line = 1000 + n;
            match n % 4 {
                0 => text.push_str(&format!(
                    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person {n}\r\nUID:p{n}\r\nCATEGORIES:generated,batch{file}\r\nTEL;TYPE=CELL:({area}) 555-{line}\r\nEND:VCARD\r\n"
                )),
                1 => text.push_str(&format!(
                    "BEGIN:VCARD\nVERSION:4.0\nFN:Person {n}\nUID:urn:uuid:p{n}\nLANG:fr-CA\nTEL;VALUE=uri;TYPE=\"voice,home\":tel:+1-{area}-555-{line}\nEND:VCARD\n"
                )),
                2 => text.push_str(&format!(
                    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:P=C3=A9rson=\r\nne {n}\r\nUID:p{n}\r\nNOTE:a long note that some exporter folded over two lines because it was lo\r\n nger than seventy-five octets\r\nTEL;HOME;VOICE:+1 {area} 555 {line}\r\nEND:VCARD\r\n"
                )),
                _ => text.push_str(&format!(
                    "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Person;{n};;;\r\nFN:Person\r\n  {n}\r\nUID:p{n}\r\nORG:Acme\r\nTEL;TYPE=WORK:+1{area}555{line}\r\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQEASABIAAD\r\nEND:VCARD\r\n"
                )),
            }
        }
        files.push((format!("contacts/batch{file:02}.vcf"), text));
    }
    let mut known = String::new();
    known.push_str(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Montreal Friend\r\nUID:montreal\r\nTEL;TYPE=CELL:+1 (514) 555-0199\r\nEND:VCARD\r\n",
    );
    known.push_str(
        "BEGIN:VCARD\nVERSION:4.0\nFN:Paris Friend\nUID:paris\nLANG:fr\nTEL;VALUE=uri;TYPE=work:tel:+33-1-23-45-67-89\nEND:VCARD\n",
    );
    if malformed {
        known.push_str("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Broken Bob\r\nTEL;TYPE=CELL:+15145550177\r\nno colon on this line\r\nEND:VCARD\r\n");
        known.push_str("BEGIN:VCARD\r\nVERSION:3.0\r\nTEL:+15145550178\r\nEND:VCARD\r\n");
    }
    files.push(("contacts/zz-known.vcf".to_owned(), known));
    files
}

#[tokio::test]
async fn a_2000_contact_book_in_mixed_formats_resolves_every_written_form() {
    let person = PersonRepo::new();
    let book = address_book(true);
    let files: Vec<(&str, Option<&[u8]>)> = book
        .iter()
        .map(|(path, text)| (path.as_str(), Some(text.as_bytes())))
        .collect();
    let commit = person.commit(&files, "address book");

    let running = start(local(&person, 100), "CA");
    let snapshot = running.handle().snapshot();
    assert_eq!(snapshot.commit(), commit);
    let contacts = snapshot.contacts();
    assert_eq!(contacts.len(), 2002);
    assert_eq!(contacts.number_count(), 2002);
    assert!(contacts.duplicates().is_empty());
    for written in ["+1 (514) 555-0199", "514-555-0199"] {
        assert_eq!(
            snapshot.contact(written).unwrap().uid,
            "montreal",
            "{written}"
        );
    }
    assert_eq!(
        snapshot.contact("0033 1 23 45 67 89"),
        None,
        "00 is not the way out of Canada"
    );
    assert_eq!(
        snapshot.contact("011 33 1 23 45 67 89").unwrap().uid,
        "paris"
    );
    // Every generated card is found by its number, whichever form its file used.
    for n in [0u32, 1, 2, 3, 998, 1999] {
        let area = if n.is_multiple_of(2) { 438 } else { 450 };
        let contact = snapshot
            .contact(&format!("{area}-555-{}", 1000 + n))
            .unwrap_or_else(|| panic!("person {n}"));
        match n % 4 {
            1 => {
                assert_eq!(contact.uid, format!("urn:uuid:p{n}"));
                assert_eq!(contact.language.as_deref(), Some("fr"));
            }
            2 => assert_eq!(contact.name, format!("Pérsonne {n}")),
            3 => assert_eq!(contact.name, format!("Person {n}")),
            _ => assert_eq!(
                contact.groups,
                ["generated".to_owned(), format!("batch{}", n / 50)]
            ),
        }
    }
    // The malformed cards are skipped and named; they do not refuse the commit.
    let skipped = running.lines_with("contacts/zz-known.vcf: card");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].contains("card 3 (Broken Bob) skipped"),
        "{}",
        skipped[0]
    );
    assert!(
        skipped[1].contains("card 4 skipped: it has no name"),
        "{}",
        skipped[1]
    );
    assert!(snapshot.contact("+15145550177").is_none());

    // The same commit read with France as the default region.
    let files = read_commit(person.path(), &commit, &[]).unwrap();
    let french = Loader::new(Vec::new(), Region::parse("FR").unwrap(), None)
        .load(&files)
        .unwrap();
    for written in ["0033 1 23 45 67 89", "01 23 45 67 89", "+33 1 23 45 67 89"] {
        assert_eq!(french.contact(written).unwrap().uid, "paris", "{written}");
    }
    assert_eq!(french.contact("+1 (514) 555-0199").unwrap().uid, "montreal");
}

#[tokio::test]
async fn an_in_flight_greeting_stays_readable_after_a_commit_changes_it() {
    let person = PersonRepo::new();
    let first_audio = wav(440.0, 300);
    let first = person.commit(
        &[
            ("greetings/away.wav", Some(&first_audio)),
            ("greetings/fr/away.wav", Some(&wav(550.0, 300))),
            ("greetings/contacts/alice.wav", Some(&wav(330.0, 300))),
            (
                "contacts/a.vcf",
                Some(vcard("Alice", "alice", "+15145550133").as_bytes()),
            ),
        ],
        "greetings",
    );
    let running = start(local(&person, 100), "CA");
    let handle = running.handle();
    let call = handle.wait_live(&first, SECOND).await.unwrap();

    // Resolution: the contact's own, then the language's, then the plain one.
    let plain = call.greeting("away.wav", None, None).unwrap();
    let french = call.greeting("away", Some("fr-CA"), None).unwrap();
    let alice = call.greeting("away", Some("fr"), Some("alice")).unwrap();
    assert_ne!(plain, french);
    assert_ne!(french, alice);
    assert_eq!(
        call.greeting("away", Some("de"), Some("bob")).unwrap(),
        plain
    );
    assert_eq!(call.greeting("../../etc/passwd", None, None), None);
    assert_eq!(call.greeting("missing", None, None), None);
    for path in [&plain, &french, &alice] {
        assert!(
            Path::new(path).starts_with(&running.greetings_dir),
            "{path}"
        );
    }
    assert_eq!(std::fs::read(&plain).unwrap(), first_audio);

    // The person records a new greeting while a call plays the old one.
    let new_audio = wav(880.0, 300);
    let second = person.commit(&[("greetings/away.wav", Some(&new_audio))], "new greeting");
    let live = handle.wait_live(&second, SECOND).await.unwrap();
    let new_plain = live.greeting("away", None, None).unwrap();
    assert_ne!(new_plain, plain);
    assert_eq!(std::fs::read(&new_plain).unwrap(), new_audio);
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        first_audio,
        "the in-flight file changed"
    );

    // Once the call ends and another commit goes live, the old file is cleaned up.
    drop(call);
    let third = person.commit(&[("greetings/other.wav", Some(&wav(220.0, 100)))], "third");
    handle.wait_live(&third, SECOND).await.unwrap();
    assert!(!Path::new(&plain).exists(), "old greeting not cleaned");
    assert!(Path::new(&new_plain).exists());
    assert!(Path::new(&french).exists());
}

#[tokio::test]
async fn a_remote_is_fetched_and_an_outage_is_journaled_once() {
    let server = tempfile::tempdir().unwrap();
    let bare_path = server.path().join("phone.git");
    Repository::init_bare(&bare_path).unwrap();
    let person = PersonRepo::new();
    person
        .repo
        .remote("origin", bare_path.to_str().unwrap())
        .unwrap();
    let push = |person: &PersonRepo| {
        let mut origin = person.repo.find_remote("origin").unwrap();
        origin
            .push(&["+refs/heads/main:refs/heads/main"], None)
            .unwrap();
    };
    let first = person.commit(
        &[(
            "contacts/a.vcf",
            Some(vcard("Carol", "carol", "+15145550144").as_bytes()),
        )],
        "first",
    );
    push(&person);

    let copy = tempfile::tempdir().unwrap();
    let settings = RepoSettings {
        path: copy.path().join("mirror.git"),
        remote: Some(bare_path.to_str().unwrap().to_owned()),
        poll_interval_ms: 50,
        fetch_interval_ms: 100,
        ..RepoSettings::default()
    };
    let running = start(settings, "CA");
    let handle = running.handle();
    handle.wait_live(&first, SECOND).await.unwrap();

    let second = person.commit(
        &[(
            "contacts/a.vcf",
            Some(vcard("Caroline", "carol", "+15145550144").as_bytes()),
        )],
        "second",
    );
    push(&person);
    let live = handle.wait_live(&second, SECOND).await.unwrap();
    assert_eq!(live.contact("+15145550144").unwrap().name, "Caroline");

    // The server goes away for a while: many failed fetches, one line.
    let away = server.path().join("moved.git");
    std::fs::rename(&bare_path, &away).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let down = running.lines_with("cannot fetch");
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].contains(bare_path.to_str().unwrap()), "{}", down[0]);
    assert_eq!(handle.snapshot().commit(), second);

    std::fs::rename(&away, &bare_path).unwrap();
    let third = person.commit(
        &[(
            "contacts/a.vcf",
            Some(vcard("Caro", "carol", "+15145550144").as_bytes()),
        )],
        "third",
    );
    push(&person);
    handle.wait_live(&third, 2 * SECOND).await.unwrap();
    assert_eq!(running.lines_with("works again").len(), 1);
    assert_eq!(running.lines_with("cannot fetch").len(), 1);
}

#[test]
fn the_demo_repo_loads_with_its_contacts_greetings_and_phone_toml() {
    // Every file of data/demo-repo is built into the binary.
    let on_disk =
        read_worktree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo-repo")).unwrap();
    let demo = demo_files();
    let demo_bytes = |wanted: &str| {
        demo.iter()
            .find(|(path, _)| *path == wanted)
            .unwrap_or_else(|| panic!("{wanted} is not in the demo repo"))
            .1
    };
    let mut built_in: Vec<&str> = demo.iter().map(|(path, _)| *path).collect();
    built_in.sort_unstable();
    let on_disk_paths: Vec<&str> = on_disk
        .files
        .iter()
        .map(|file| file.path.as_str())
        .collect();
    assert_eq!(built_in, on_disk_paths);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo");
    let commit = create_repo(&path, &demo, "demo").unwrap();
    let files = read_commit(&path, "main", &[]).unwrap();
    assert_eq!(files.commit, commit);
    let store = Arc::new(GreetingStore::new(dir.path().join("export")).unwrap());
    let loader = Loader::new(Vec::new(), Region::parse("CA").unwrap(), Some(store));
    let report = loader.check(&files);
    assert!(
        report.is_ok() && report.lines().is_empty(),
        "{:?}",
        report.lines()
    );
    let snapshot = loader.load(&files).unwrap();

    let mom = snapshot.contact("514 555 0142").unwrap();
    assert_eq!(
        (mom.uid.as_str(), mom.groups.as_slice()),
        ("mom", &["family".to_owned()][..])
    );
    assert_eq!(snapshot.contact("(450) 555-0177").unwrap().uid, "mom");
    let mom_greeting = snapshot
        .greeting("away", Some("en"), Some(&mom.uid))
        .unwrap();
    let mom_audio = demo_bytes("greetings/contacts/mom.wav");
    assert_eq!(std::fs::read(mom_greeting).unwrap(), mom_audio);

    let marie = snapshot.contact("+33 6 12 34 56 78").unwrap();
    assert_eq!(marie.language.as_deref(), Some("fr"));
    let busy = snapshot
        .greeting("busy", marie.language.as_deref(), Some(&marie.uid))
        .unwrap();
    let french_busy = demo_bytes("greetings/fr/busy.wav");
    assert_eq!(std::fs::read(busy).unwrap(), french_busy);
    // The *86 menu's prompts are greetings like the others: the French menu for French.
    let menu = snapshot.greeting("menu_fr.wav", Some("fr"), None).unwrap();
    let french_menu = demo_bytes("greetings/menu_fr.wav");
    assert_eq!(std::fs::read(menu).unwrap(), french_menu);

    let phone = snapshot.phone();
    assert_eq!(phone.devices["1000"].name.as_deref(), Some("desk"));
    assert_eq!(phone.dids["+15145550100"].language.as_deref(), Some("fr"));
    assert_eq!(phone.dids["+33123456789"].country.as_deref(), Some("FR"));
    assert_eq!(phone.caller_id["fr"], "Sam Roy");
}

#[test]
fn check_reports_refusals_skipped_cards_and_duplicates_without_exporting() {
    let person = PersonRepo::new();
    let commit = person.commit(
        &[
            (
                "contacts/a.vcf",
                Some(vcard("Ann", "ann", "+15145550155").as_bytes()),
            ),
            (
                "contacts/b.vcf",
                Some(
                    format!(
                        "{}BEGIN:VCARD\nVERSION:3.0\nEND:VCARD\n",
                        vcard("Bea", "bea", "514 555 0155")
                    )
                    .as_bytes(),
                ),
            ),
            ("phone.toml", Some(b"[dids.\"12\"]\n")),
            (
                "templates/voicemail.txt",
                Some(b"Voicemail from {{ caller }}"),
            ),
        ],
        "mixed",
    );
    let files = read_commit(person.path(), &commit, &[]).unwrap();
    let report = Loader::new(Vec::new(), Region::parse("CA").unwrap(), None).check(&files);
    assert!(!report.is_ok());
    assert_eq!(report.contact_count, 2);
    let lines = report.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("phone.toml:1:7: DID \"12\" is not a phone number"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        "contacts/b.vcf: card 2 skipped: it has no name (FN or N)"
    );
    assert!(lines[2].starts_with("+1 514-555-0155 is on two cards: contacts/a.vcf card 1 (Ann) gets the calls, contacts/b.vcf card 1 (Bea) is ignored"), "{}", lines[2]);

    // Once fixed, the templates come with the snapshot.
    let fixed = person.commit(&[("phone.toml", None)], "fix");
    let files = read_commit(person.path(), &fixed, &[]).unwrap();
    let snapshot = Loader::new(Vec::new(), Region::parse("CA").unwrap(), None)
        .load(&files)
        .unwrap();
    assert_eq!(
        snapshot.template("voicemail.txt"),
        Some("Voicemail from {{ caller }}")
    );
    assert_eq!(snapshot.template("missing.txt"), None);
}

#[test]
fn unchanged_contact_files_are_shared_between_snapshots() {
    let person = PersonRepo::new();
    let first = person.commit(
        &[
            (
                "contacts/a.vcf",
                Some(vcard("Ann", "ann", "+15145550161").as_bytes()),
            ),
            (
                "contacts/b.vcf",
                Some(vcard("Bea", "bea", "514 555 0162").as_bytes()),
            ),
        ],
        "first",
    );
    let second = person.commit(
        &[(
            "contacts/b.vcf",
            Some(vcard("Beatrice", "bea", "514 555 0162").as_bytes()),
        )],
        "second",
    );
    let loader = Loader::new(Vec::new(), Region::parse("CA").unwrap(), None);
    let load = |commit: &str| {
        loader
            .load(&read_commit(person.path(), commit, &[]).unwrap())
            .unwrap()
    };
    let (old, new) = (load(&first), load(&second));
    let (old_ann, new_ann) = (
        old.contacts().lookup("+15145550161").unwrap(),
        new.contacts().lookup("+15145550161").unwrap(),
    );
    assert!(
        std::ptr::eq(old_ann, new_ann),
        "a.vcf did not change: its cards are shared"
    );
    assert_eq!(old.contact("+15145550162").unwrap().name, "Bea");
    assert_eq!(new.contact("+15145550162").unwrap().name, "Beatrice");
}

#[tokio::test]
async fn before_any_good_commit_the_default_rules_run_alone() {
    let person = PersonRepo::new();
    let running = start(local(&person, 50), "CA");
    let handle = running.handle();
    assert_eq!(handle.snapshot().commit(), "");
    assert!(
        handle.snapshot().rules().rule_ids().count() > 0,
        "patchbay's defaults are loaded"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.lines_with("no commit on branch main yet").len(), 1);

    let bad = person.commit(
        &[("phone.toml", Some(b"[caller_id]\nfr = \"\"\n"))],
        "bad first",
    );
    assert!(matches!(
        handle.wait_for(&bad, SECOND).await.unwrap(),
        Outcome::Refused(_)
    ));
    let lines = running.lines_with(&bad[..7]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("phone.toml:2:6: caller ID name must be one non-empty line of text"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("still running patchbay's default rules"),
        "{}",
        lines[0]
    );
    assert_eq!(handle.snapshot().commit(), "");

    let good = person.commit(
        &[("phone.toml", Some(b"[caller_id]\nfr = \"Sam\"\n"))],
        "good",
    );
    let live = handle.wait_live(&good, SECOND).await.unwrap();
    assert_eq!(live.phone().caller_id["fr"], "Sam");
}
