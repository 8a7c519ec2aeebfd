//! `patchbay demo`: the whole system on embedded defaults. A simulated FreeSWITCH with two
//! phones (desk, cell) and two numbers (Montreal, Paris), the demo phone repo shipped in
//! data/demo-repo committed into a fresh git repo, mail to a local Maildir and the call log to
//! a local vdir. A few scripted calls run; the journal is printed as it is written, then where
//! every result went.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use include_dir::{include_dir, Dir};

use super::DemoArgs;
use crate::daemon::Daemon;
use crate::settings::{Secret, Settings};
use crate::sim::log::Entry;
use crate::sim::scenario::Scenario;
use crate::sim::{self, Sim};

/// The demo phone repo: rules, contacts, greetings, phone.toml.
static DEMO_REPO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/data/demo-repo");

/// The settings a person would write, with `{dir}` standing for the demo's folder.
const DEMO_SETTINGS: &str = r#"{
    /* The seed's keys */
    "device_count": 2,
    "device_password": "demo-device-",
    "voicemail_delay": 5,
    "emails": { "owner": "sam@example.org" },
    "caller_id": { "EN": "Sam Roy", "FR": "Sam Roy" },
    "dids": [
        { "gateway_name": "montreal", "pstn_number": "+15145550100", "username": "5145550100",
          "password": "demo-carrier-secret", "proxy": "sip.example.net", "realm": "example.net",
          "domain": "example.net", "country": "CA", "language": "fr" },
        { "gateway_name": "paris", "pstn_number": "+33123456789", "username": "0123456789",
          "password": "demo-carrier-secret", "proxy": "sip.example.fr", "realm": "example.fr",
          "domain": "example.fr", "country": "FR", "language": "fr" }
    ],
    "timezone": "America/Montreal",
    "default_region": "CA",
    "recordings_dir": "{dir}/recordings",
    "greetings_dir": "{dir}/greetings",
    "journal": "{dir}/journal.log",
    "freeswitch": {
        "esl": { "host": "127.0.0.1", "port": 8021, "password": "ClueCon" },
        "xml": { "listen": "127.0.0.1:0" },
        "outbound": { "listen": "127.0.0.1:0" },
        "sip_domain": "127.0.0.1"
    },
    "repo": { "path": "{dir}/phone", "branch": "main", "poll_interval_ms": 200 },
    "email": { "from": "patchbay <phone@example.org>", "to": ["sam@example.org"], "maildir": "{dir}/mail" },
    "calendar": { "vdir": "{dir}/calendar" },
    "spool": { "path": "{dir}/spool", "retry_initial_ms": 500 }
}"#;

/// Two phones and two numbers; three calls: Mom (family rings longer, the desk picks up),
/// Marie from Paris (nobody answers in time: voicemail), an unknown caller who gives up.
const DEMO_SCENARIO: &str = r#"
[[device]]
extension = "1000"
password = "demo-device-1000"
behaviour = "answer"
answer_after = 8.0
hangup_after = 4.0

[[device]]
extension = "1001"
password = "demo-device-1001"
behaviour = "no_answer"

[[gateway]]
name = "montreal"
registrar = "ok"
proxy = "sip.example.net:5060"
expire_seconds = 600

[[gateway]]
name = "paris"
registrar = "ok"
proxy = "sip.example.fr:5060"
expire_seconds = 600

[[call]]
from = "+15145550142"
caller_name = "CLAIRE ROY"
to = "+15145550100"
gateway = "montreal"
at = 1.0

[[call]]
from = "+33612345678"
caller_name = "M DUBOIS"
to = "+33123456789"
gateway = "paris"
at = 2.0
hangup_after = 14.0
audio = "{dir}/caller-speaks.wav"

[[call]]
from = "+4915112345678"
to = "+15145550100"
gateway = "montreal"
at = 3.0
hangup_after = 2.0
"#;

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = match &args.output {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("patchbay-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: cannot create the demo folder", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(&dir))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the demo phone repo into `repo` and commits it, as a person would.
fn make_phone_repo(repo: &Path) -> anyhow::Result<()> {
    if repo.join(".git").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(repo).with_context(|| format!("{}: cannot create", repo.display()))?;
    DEMO_REPO
        .extract(repo)
        .with_context(|| format!("{}: cannot write the demo phone repo", repo.display()))?;
    let git = git2::Repository::init_opts(
        repo,
        git2::RepositoryInitOptions::new().initial_head("main"),
    )
    .with_context(|| format!("{}: cannot create a git repo", repo.display()))?;
    let mut index = git.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = git.find_tree(index.write_tree()?)?;
    let signature = git2::Signature::now("Sam Roy", "sam@example.org")?;
    git.commit(Some("HEAD"), &signature, &signature, "My phone", &tree, &[])?;
    Ok(())
}

fn say(text: impl AsRef<str>) {
    println!("{}", text.as_ref());
}

async fn demo(dir: &Path) -> anyhow::Result<()> {
    let dir_text = dir.display().to_string();
    make_phone_repo(&dir.join("phone"))?;
    // What the Paris caller "says" into voicemail: the demo's own away greeting.
    let speech = DEMO_REPO
        .get_file("greetings/away.wav")
        .context("the demo repo has no greetings/away.wav")?;
    std::fs::write(dir.join("caller-speaks.wav"), speech.contents())?;

    let settings_path = dir.join("settings.json");
    let settings_text = DEMO_SETTINGS.replace("{dir}", &dir_text);
    std::fs::write(&settings_path, &settings_text)?;
    let settings = Settings::parse(&settings_text, &settings_path)?;
    let mut daemon = Daemon::bind(settings, None).await?;

    let scenario = Scenario::parse(&DEMO_SCENARIO.replace("{dir}", &dir_text), "demo scenario")?;
    let calls = scenario.calls.len();
    let config = sim::Config {
        xml_url: Some(format!("http://{}/freeswitch/xml", daemon.xml_address())),
        recordings_dir: Some(dir.join("recordings")),
        password: Secret::new("ClueCon"),
        ..sim::Config::default()
    };
    let sim = Sim::start_with(config, scenario).await?;
    daemon.set_esl(sim.esl_addr());
    let handles = daemon.handles().clone();

    say("patchbay demo: a simulated FreeSWITCH with two phones (desk 1000, cell 1001) and two");
    say("numbers (Montreal +1 514-555-0100, Paris +33 1 23 45 67 89), your demo phone repo, three calls.");
    say("");
    let mut journal = handles.journal.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(line) = journal.recv().await {
            say(format!("  {line}"));
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(async {
        let _ = stopped.await;
    }));
    sim.log()
        .wait_for(
            Duration::from_secs(10),
            |entry| matches!(entry, Entry::Command { line, .. } if line.starts_with("event json")),
        )
        .await
        .context("patchbay did not connect to the simulator")?;
    sim.run_scenario();
    // Phones refresh their registration now and then; refresh the demo's until patchbay has
    // seen them, so a REGISTER that raced the event subscription costs nothing.
    let registered = tokio::time::Instant::now() + Duration::from_secs(20);
    while handles.registry.device_count() < 2 && tokio::time::Instant::now() < registered {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if handles.registry.device_count() < 2 {
            for extension in ["1000", "1001"] {
                let _ = sim
                    .register(extension, &format!("demo-device-{extension}"))
                    .await;
            }
        }
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let ended = sim
            .log()
            .entries()
            .iter()
            .filter(|entry| matches!(entry, Entry::CallEnded { .. }))
            .count();
        let queued = handles.spool.pending().map(|jobs| jobs.len()).unwrap_or(0);
        if ended >= calls && queued == 0 && handles.registry.status().calls.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            say("  (the demo took longer than 90 s; stopping)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last spool step and journal lines land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    sim.stop();
    printer.abort();

    let count = |folder: PathBuf| {
        std::fs::read_dir(folder)
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    say("");
    say("Where the results went:");
    say(format!(
        "  journal       {}",
        dir.join("journal.log").display()
    ));
    say(format!(
        "  emails        {} ({} messages, a Maildir)",
        dir.join("mail/new").display(),
        count(dir.join("mail/new"))
    ));
    say(format!(
        "  call log      {} ({} events, one .ics each)",
        dir.join("calendar").display(),
        count(dir.join("calendar"))
    ));
    say(format!(
        "  phone repo    {} (commit a rule change: the next call follows it)",
        dir.join("phone").display()
    ));
    say(format!("  settings      {}", settings_path.display()));
    say("");
    say(format!(
        "Try: patchbay simulate --repo {} --from +33612345678 --to +33123456789",
        dir.join("phone").display()
    ));
    Ok(())
}
