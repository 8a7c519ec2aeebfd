//! Integration tests: `patchbay check` and `patchbay simulate` run as a person runs them, on
//! real git repos made here.

use std::path::Path;
use std::process::{Command, Output};

use git2::{IndexAddOption, Repository, Signature};
use tempfile::TempDir;

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write file");
    }
}

fn commit_all(repo: &Repository, message: &str) {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .expect("add files");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("find tree");
    let signature = Signature::now("Test", "test@example.com").expect("signature");
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
    .expect("commit");
}

/// A short real WAV, as greetings must be.
fn wav() -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).expect("wav writer");
    for sample in 0..800 {
        writer
            .write_sample(((sample % 16) as i16 - 8) * 1000)
            .expect("wav sample");
    }
    writer.finalize().expect("wav written");
    bytes.into_inner()
}

/// A phone repo with `files` and the greetings `greetings` (real WAVs) committed.
fn phone_repo_with(files: &[(&str, &str)], greetings: &[&str]) -> (TempDir, Repository) {
    let dir = TempDir::new().expect("temp dir");
    let repo = Repository::init(dir.path()).expect("git init");
    write(dir.path(), files);
    for name in greetings {
        let path = dir.path().join("greetings").join(name);
        std::fs::create_dir_all(path.parent().expect("greetings folder")).expect("mkdir");
        std::fs::write(path, wav()).expect("write greeting");
    }
    commit_all(&repo, "rules");
    (dir, repo)
}

fn phone_repo(files: &[(&str, &str)]) -> (TempDir, Repository) {
    phone_repo_with(files, &[])
}

fn patchbay(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_patchbay"))
        .args(args)
        .output()
        .expect("run patchbay");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

const VIP: &str = r#"// Family rings only the home phone, always.
rule(#{
    id: "family_home",
    rule: #{ peer_number: "^%+33123" },
    properties: #{ bridge_to: ["1001"], voicemail_delay: 40 },
});
"#;

#[test]
fn check_clean_repo_prints_a_summary_and_exits_0() {
    let (dir, _repo) = phone_repo(&[("rules/10-vip.rhai", VIP), ("README.md", "mine")]);
    let (code, out, err) = patchbay(&["check", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rules in 7 files OK"), "{out}");
    assert!(out.contains("1 from the phone repo"), "{out}");
}

#[test]
fn check_reports_every_error_with_place_and_hint_and_exits_1() {
    let (dir, _repo) = phone_repo(&[
        ("rules/10-vip.rhai", VIP),
        (
            "rules/20-night.rhai",
            "rule(#{\n    id: \"typo\",\n    rule_anny: #{ country: [\"FR\"] },\n});\nrule(#{ id: \"pattern\", rule: #{ peer_number: \"[0-9\" } });\n",
        ),
        ("rules/30-syntax.rhai", "rule(#{ id: \"x\" rule: #{} });\n"),
    ]);
    let (code, out, _) = patchbay(&["check", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(
            &"error: rules/20-night.rhai:1:1: rule 'typo': unknown key 'rule_anny' in the rule map"
        ),
        "{out}"
    );
    assert!(lines.contains(&"  hint: did you mean rule_any?"), "{out}");
    assert!(
        out.contains("error: rules/20-night.rhai:5:1: rule 'pattern': rule.peer_number: bad Lua pattern \"[0-9\""),
        "{out}"
    );
    assert!(out.contains("error: rules/30-syntax.rhai:1:"), "{out}");
    assert!(out.contains("3 errors in the commit"), "{out}");
}

#[test]
fn check_reads_the_commit_unless_asked_for_the_worktree() {
    let (dir, _repo) = phone_repo(&[("rules/10-vip.rhai", VIP)]);
    write(
        dir.path(),
        &[(
            "rules/20-draft.rhai",
            "rule(#{ id: \"draft\", excpt: #{} });",
        )],
    );
    let path = dir.path().to_str().expect("utf-8 path");
    let (code, out, _) = patchbay(&["check", path]);
    assert_eq!(code, 0, "the uncommitted draft is not checked: {out}");
    let (code, out, _) = patchbay(&["check", path, "--worktree"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rules/20-draft.rhai:1:1: rule 'draft': unknown key 'excpt'"),
        "{out}"
    );
    assert!(out.contains("hint: did you mean except?"), "{out}");
}

#[test]
fn check_warns_about_lua_magic_characters_in_numbers() {
    let (dir, _repo) = phone_repo(&[(
        "rules/10-office.rhai",
        "rule(#{ id: \"office\", rule: #{ peer_number: \"514-555\" } });\n",
    )]);
    let (code, out, _) = patchbay(&["check", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "a warning is not an error: {out}");
    assert!(
        out.contains("warning: rules/10-office.rhai:1:1: rule 'office':"),
        "{out}"
    );
    assert!(out.contains("contains '-'"), "{out}");
    assert!(
        out.contains("hint: write %- to match a literal '-'"),
        "{out}"
    );
}

#[test]
fn check_also_loads_phone_toml_and_greetings_like_the_daemon() {
    let (dir, _repo) = phone_repo_with(
        &[
            ("rules/10-vip.rhai", VIP),
            ("phone.toml", "[dids.\"hello\"]\n"),
            ("greetings/busy.wav", "not a wav"),
        ],
        &["wave.wav"],
    );
    let (code, out, _) = patchbay(&["check", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: phone.toml:1:"), "{out}");
    assert!(out.contains("not a phone number"), "{out}");
    assert!(
        out.contains("error: greetings/busy.wav: not a readable WAV file"),
        "{out}"
    );
    assert!(
        !out.contains("wave.wav"),
        "a good greeting is no problem: {out}"
    );
    assert!(out.contains("2 errors in the commit"), "{out}");
}

#[test]
fn check_outside_a_repo_is_a_clear_error() {
    let dir = TempDir::new().expect("temp dir");
    let (code, _, err) = patchbay(&["check", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(code, 2);
    assert!(err.contains("not a git repository"), "{err}");
}

fn simulate(repo: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["simulate", "--repo", repo.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let (code, out, err) = patchbay(&args);
    (code, format!("{out}{err}"))
}

#[test]
fn simulate_night_call_from_abroad_is_declined_and_explained() {
    let (dir, _repo) = phone_repo_with(&[("rules/10-vip.rhai", VIP)], &["wave_fr.wav"]);
    let (code, out) = simulate(
        dir.path(),
        &[
            "--from",
            "+44 20 7946 0958",
            "--to",
            "514-555-0100",
            "--at",
            "2026-12-01 23:30",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  from        +442079460958  (+44 20 7946 0958, GB)"),
        "{out}"
    );
    assert!(
        out.contains("  to          +15145550100  (+1 514-555-0100)"),
        "{out}"
    );
    assert!(out.contains("  local time  Tue 2026-12-01 23:30"), "{out}");
    assert!(out.contains("✓ night_filter"), "{out}");
    assert!(
        out.contains(
            "✗ family_home            rule: peer_number is \"+442079460958\", wanted \"^%+33123\""
        ),
        "{out}"
    );
    assert!(
        out.contains("1. Do not ring any device (declined by the rules)"),
        "{out}"
    );
    assert!(
        out.contains("Otherwise take a voicemail after the patchbay's built-in greeting"),
        "{out}"
    );
}

#[test]
fn simulate_daytime_call_from_family_uses_the_repo_rule_and_greeting() {
    let (dir, _repo) = phone_repo_with(&[("rules/10-vip.rhai", VIP)], &["wave_fr.wav"]);
    let (code, out) = simulate(
        dir.path(),
        &[
            "--from",
            "+33 1 23 45 67 89",
            "--to",
            "+15145550100",
            "--at",
            "2026-12-01 12:00",
            "--devices",
            "3",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("✓ family_home"), "{out}");
    assert!(out.contains("✗ night_filter"), "{out}");
    assert!(
        out.contains("time_interval is 12:00, wanted 22:00-07:00"),
        "{out}"
    );
    assert!(out.contains("early    language"), "{out}");
    assert!(out.contains("1. Ring 1001 at once for 40 s"), "{out}");
    assert!(
        out.contains("2. Record the conversation if someone answers"),
        "{out}"
    );
    assert!(out.contains("greeting greetings/wave_fr.wav"), "{out}");
}

#[test]
fn simulate_busy_and_no_devices() {
    let (dir, _repo) = phone_repo(&[("rules/10-vip.rhai", VIP)]);
    let at = [
        "--from",
        "+15145550199",
        "--to",
        "+15145550100",
        "--at",
        "2026-12-01 12:00",
    ];
    let (_, out) = simulate(dir.path(), &[&at[..], &["--busy"]].concat());
    assert!(out.contains("✓ busy_when_on_a_call"), "{out}");
    assert!(
        out.contains("devices     2 registered, already on a call"),
        "{out}"
    );
    let (_, out) = simulate(dir.path(), &[&at[..], &["--devices", "0"]].concat());
    assert!(out.contains("✓ away_when_no_device"), "{out}");
}

#[test]
fn simulate_star_86_from_a_device_runs_the_menu() {
    let (dir, _repo) = phone_repo(&[("rules/10-vip.rhai", VIP)]);
    let (code, out) = simulate(
        dir.path(),
        &["--from", "1001", "--to", "*86", "--at", "2026-12-01 12:00"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("internal (from one of your devices)"), "{out}");
    assert!(
        out.contains("Hand the call to the dialplan of rule 'menu'"),
        "{out}"
    );
}

#[test]
fn simulate_with_broken_rules_or_a_bad_time_says_so() {
    let (dir, _repo) = phone_repo(&[(
        "rules/10-bad.rhai",
        "rule(#{ id: \"b\", rule_lesser: #{ country: \"x\" } });",
    )]);
    let (code, out) = simulate(
        dir.path(),
        &["--from", "+15145550199", "--to", "+15145550100"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("run `patchbay check"), "{out}");
    let (code, out) = simulate(
        dir.path(),
        &[
            "--from",
            "+15145550199",
            "--to",
            "+15145550100",
            "--at",
            "tonight",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--at \"tonight\": expected a local time like \"2026-12-01 23:30\""),
        "{out}"
    );
}

const ALICE: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Alice Martin\r\nUID:alice\r\nCATEGORIES:family\r\nLANG:de\r\nTEL;TYPE=CELL:+33 6 12 34 56 78\r\nEND:VCARD\r\n";

const PHONE: &str = "[dids.\"+15145550100\"]\n\n[dids.\"+33987654321\"]\n\n[caller_id]\nfr = \"Marie Dubois\"\nen = \"Mary Dubois\"\n";

#[test]
fn simulate_finds_the_contact_and_reads_phone_toml() {
    let (dir, _repo) = phone_repo_with(
        &[("contacts/family.vcf", ALICE), ("phone.toml", PHONE)],
        &["wave.wav"],
    );
    let (code, out) = simulate(
        dir.path(),
        &[
            "--from",
            "+33 6 12 34 56 78",
            "--to",
            "+15145550100",
            "--at",
            "2026-12-01 12:00",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  contact     Alice Martin (family)"), "{out}");
    assert!(out.contains("  language    de"), "{out}");
    assert!(out.contains("✓ language_from_contact"), "{out}");
    assert!(out.contains("1 contacts, 1 greetings"), "{out}");
    let (code, out) = simulate(
        dir.path(),
        &[
            "--from",
            "1001",
            "--to",
            "+33 1 23 45 67 89",
            "--at",
            "2026-12-01 12:00",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1. Call +33123456789 through DID +33 9 87 65 43 21, showing caller ID \"Marie Dubois\""),
        "{out}"
    );
}

#[test]
fn simulate_refuses_a_commit_the_daemon_would_refuse() {
    let (dir, _repo) = phone_repo(&[("greetings/wave.wav", "not a wav")]);
    let (code, out) = simulate(
        dir.path(),
        &["--from", "+15145550199", "--to", "+15145550100"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: greetings/wave.wav"), "{out}");
}

mod docs {
    //! Every ```rhai example of docs/rules.md compiles with the defaults and runs against a few
    //! calls, its events and its dialplan without a rule error, so the page cannot drift.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use chrono::NaiveDate;
    use patchbay::calls::{Call, Origin};
    use patchbay::contacts::Contact;
    use patchbay::rules::{
        CallScript, DidSetting, FixedClock, NoResources, RecordOptions, RuleSet, RuleSettings,
        ScriptError, SharedResources, Source, SourceFile, Value, EVENTS,
    };

    fn examples() -> Vec<(usize, String)> {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rules.md"))
            .expect("docs/rules.md is readable");
        let mut examples = Vec::new();
        let mut current: Option<(usize, String)> = None;
        for (index, line) in page.lines().enumerate() {
            match (&mut current, line.trim_end()) {
                (None, "```rhai") => current = Some((index + 2, String::new())),
                (Some(_), "```") => examples.extend(current.take()),
                (Some((_, text)), line) => {
                    text.push_str(line);
                    text.push('\n');
                }
                (None, _) => {}
            }
        }
        examples
    }

    fn calls() -> Vec<Call> {
        let time = |hour| {
            NaiveDate::from_ymd_opt(2026, 12, 5)
                .and_then(|day| day.and_hms_opt(hour, 15, 0))
                .expect("valid time")
        };
        let external = Call {
            uuid: "doc-1".into(),
            origin: Origin::External,
            peer_number: "+33123456789".into(),
            caller_id_name: "Dr. Alice".into(),
            caller_id_number: "+33123456789".into(),
            destination_number: "+15145550100".into(),
            did: Some("+15145550100".into()),
            country: Some("FR".into()),
            location: None,
            contact: Some(Contact {
                uid: "alice".into(),
                name: "Alice".into(),
                groups: vec!["family".into(), "vip".into(), "work".into()],
                language: Some("fr".into()),
                numbers: vec!["+33123456789".into()],
            }),
            local_time: time(23),
            device_count: 2,
            busy: false,
            do_not_disturb: false,
            state: "ringing".into(),
            hangup_cause: None,
        };
        let mut stranger = external.clone();
        stranger.contact = None;
        stranger.local_time = time(10);
        stranger.busy = true;
        stranger.device_count = 0;
        let mut menu = external.clone();
        menu.origin = Origin::Internal;
        menu.peer_number = "*7".into();
        menu.destination_number = "*7".into();
        menu.country = None;
        menu.did = None;
        menu.contact = None;
        vec![external, stranger, menu]
    }

    struct Phone;

    impl CallScript for Phone {
        fn answer(&mut self) -> Result<(), ScriptError> {
            Ok(())
        }
        fn play(&mut self, _: &str) -> Result<(), ScriptError> {
            Ok(())
        }
        fn get_digits(&mut self, _: u32, _: u64) -> Result<String, ScriptError> {
            Ok("1".into())
        }
        fn record(&mut self, _: &RecordOptions) -> Result<String, ScriptError> {
            Ok("/tmp/memo.wav".into())
        }
        fn transfer(&mut self, _: &str) -> Result<(), ScriptError> {
            Ok(())
        }
        fn hangup(&mut self, _: &str) -> Result<(), ScriptError> {
            Ok(())
        }
        fn play_new_voicemails(&mut self) -> Result<u32, ScriptError> {
            Ok(1)
        }
        fn record_greeting(&mut self, _: &str) -> Result<bool, ScriptError> {
            Ok(true)
        }
        fn toggle_do_not_disturb(&mut self) -> Result<bool, ScriptError> {
            Ok(true)
        }
    }

    #[test]
    fn every_example_in_the_user_docs_compiles_and_runs() {
        let settings = RuleSettings {
            caller_id: BTreeMap::from([("en".to_owned(), "John Doe".to_owned())]),
            dids: vec![DidSetting {
                number: "+15145550100".into(),
                country: Some("CA".into()),
            }],
            voicemail_delay: Some(30),
        };
        let resources: SharedResources = Arc::new(NoResources);
        let examples = examples();
        assert!(
            examples.len() >= 30,
            "only {} examples found",
            examples.len()
        );
        let mut data = BTreeMap::new();
        data.insert("transcript".to_owned(), Value::from("call me back"));
        let data = Value::Map(data);
        for (line, text) in examples {
            let file = SourceFile {
                source: Source::PhoneRepo,
                path: format!("docs/rules.md:{line}"),
                text: text.clone(),
            };
            let rules = RuleSet::compile_with(&[file], &settings)
                .unwrap_or_else(|errors| panic!("docs/rules.md:{line}: {errors:?}\n{text}"));
            assert!(
                rules.warnings().is_empty(),
                "docs/rules.md:{line}: {:?}",
                rules.warnings()
            );
            let rules = rules.with_clock(Arc::new(FixedClock(calls()[0].local_time)));
            for call in calls() {
                let decision = rules.decide(&call, &resources);
                assert!(
                    decision.errors.is_empty() && !decision.safe_default,
                    "docs/rules.md:{line}: {:?}\n{text}",
                    decision.errors
                );
                if decision.has_dialplan() {
                    rules
                        .run_dialplan(&decision, &call, &resources, &mut Phone)
                        .unwrap_or_else(|error| panic!("docs/rules.md:{line}: {error}"));
                }
                for event in EVENTS {
                    let outcome = rules.run_event(event, &call, &data, &resources);
                    assert!(
                        outcome.errors.is_empty(),
                        "docs/rules.md:{line}: {:?}",
                        outcome.errors
                    );
                }
            }
        }
    }
}
