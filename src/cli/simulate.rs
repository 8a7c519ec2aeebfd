//! `patchbay simulate`: dry-run one call through the phone repo's rules (at HEAD) and the
//! shipped defaults, and show what the rules saw, which rules applied and why the others did
//! not, the resulting properties and what patchbay would do. Nothing is dialled.

use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{Datelike, NaiveDateTime};

use super::SimulateArgs;
use crate::calls::{Call, Origin};
use crate::contacts::number::{display, normalize, Region};
use crate::repo::{Loader, Refusal, Snapshot};
use crate::rules::{
    BridgeTo, Clock, Decision, DidSetting, FixedClock, NoResources, Properties, RuleSet,
    RuleSettings, SharedResources, Source, SourceFile, SystemClock,
};

/// What the repo gives the simulation.
struct RepoInput {
    rules: Vec<SourceFile>,
    /// Contacts, greetings and phone.toml of HEAD; `None` outside a phone repo.
    snapshot: Option<Snapshot>,
    note: String,
}

/// The repo's HEAD as the daemon would load it; `Err` lists why the commit would be refused.
fn read_repo(repo: &Path, region: Region) -> anyhow::Result<Result<RepoInput, Refusal>> {
    let commit = match crate::repo::read_commit(repo, "HEAD", &[]) {
        Ok(commit) => commit,
        Err(crate::repo::TreeError::Open { .. }) => {
            return Ok(Ok(RepoInput {
                rules: Vec::new(),
                snapshot: None,
                note: format!(
                    "{} is not a phone repo: only patchbay's default rules apply",
                    repo.display()
                ),
            }))
        }
        Err(error) => return Err(error.into()),
    };
    let snapshot = match Loader::new(Vec::new(), region, None).load(&commit) {
        Ok(snapshot) => snapshot,
        Err(crate::repo::Error::Refused(refusal)) => return Ok(Err(refusal)),
        Err(error) => return Err(error.into()),
    };
    let mut rules = Vec::new();
    for file in &commit.files {
        if file.path.starts_with("rules/") && file.path.ends_with(".rhai") {
            let text = String::from_utf8(file.bytes.clone())
                .with_context(|| format!("{}: not UTF-8 text", file.path))?;
            rules.push(SourceFile {
                source: Source::PhoneRepo,
                path: file.path.clone(),
                text,
            });
        }
    }
    Ok(Ok(RepoInput {
        note: format!(
            "commit {}: {} contacts, {} greetings",
            snapshot.short_commit(),
            snapshot.contacts().len(),
            snapshot.greetings().len()
        ),
        rules,
        snapshot: Some(snapshot),
    }))
}

/// What rules read through `settings()`, from the repo's phone.toml.
fn rule_settings(snapshot: Option<&Snapshot>) -> RuleSettings {
    let Some(snapshot) = snapshot else {
        return RuleSettings::default();
    };
    let phone = snapshot.phone();
    RuleSettings {
        caller_id: phone
            .caller_id
            .iter()
            .map(|(language, name)| (language.to_lowercase(), name.clone()))
            .collect(),
        dids: phone
            .dids
            .iter()
            .map(|(number, did)| DidSetting {
                number: number.clone(),
                country: did.country.clone(),
            })
            .collect(),
        voicemail_delay: None,
    }
}

fn parse_time(text: &str) -> anyhow::Result<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M")
        .with_context(|| format!("--at {text:?}: expected a local time like \"2026-12-01 23:30\""))
}

fn build_call(args: &SimulateArgs, region: Region, local_time: NaiveDateTime) -> Call {
    let from = normalize(&args.from, region);
    let to = normalize(&args.to, region);
    // A caller that is not a full phone number (1001, a SIP user) is one of the person's devices.
    let origin = if from.is_some() {
        Origin::External
    } else {
        Origin::Internal
    };
    let peer = match origin {
        Origin::External => from.clone(),
        Origin::Internal => to.clone(),
    };
    let peer_number = match (&peer, origin) {
        (Some(number), _) => number.e164.clone(),
        (None, Origin::External) => args.from.clone(),
        (None, Origin::Internal) => args.to.clone(),
    };
    Call {
        uuid: "simulated".into(),
        origin,
        peer_number,
        caller_id_name: String::new(),
        caller_id_number: from.as_ref().map_or(args.from.clone(), |n| n.e164.clone()),
        destination_number: to.as_ref().map_or(args.to.clone(), |n| n.e164.clone()),
        did: match origin {
            Origin::External => Some(to.map_or(args.to.clone(), |n| n.e164)),
            Origin::Internal => None,
        },
        country: peer.as_ref().and_then(|n| n.country.clone()),
        location: peer.and_then(|n| n.location),
        contact: None,
        local_time,
        device_count: args.devices,
        busy: args.busy,
        do_not_disturb: args.do_not_disturb,
        state: "ringing".into(),
        hangup_cause: None,
    }
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let Some(region) = Region::parse(&args.region) else {
        bail!(
            "--region {:?}: not a country code (expected e.g. CA, FR)",
            args.region
        );
    };
    let timezone = chrono_tz::Tz::from_str(&args.timezone).map_err(|_| {
        anyhow::anyhow!(
            "--timezone {:?}: not an IANA timezone (expected e.g. America/Montreal)",
            args.timezone
        )
    })?;
    let local_time = match &args.at {
        Some(text) => parse_time(text)?,
        None => SystemClock(timezone).now(),
    };
    let input = match read_repo(&args.repo, region)? {
        Ok(input) => input,
        Err(refusal) => {
            for problem in &refusal.problems {
                println!("error: {problem}");
            }
            println!(
                "patchbay would refuse commit {}: run `patchbay check {}` for details",
                refusal.commit.get(..7).unwrap_or(&refusal.commit),
                args.repo.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let settings = rule_settings(input.snapshot.as_ref());
    let rules = match RuleSet::compile_with(&input.rules, &settings) {
        Ok(rules) => rules.with_clock(Arc::new(FixedClock(local_time))),
        Err(errors) => {
            for error in &errors {
                println!("error: {error}");
            }
            println!(
                "the rules do not compile: run `patchbay check {}` for details",
                args.repo.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let resources: SharedResources = match input.snapshot {
        Some(snapshot) => Arc::new(snapshot),
        None => Arc::new(NoResources),
    };
    let mut call = build_call(args, region, local_time);
    call.contact = resources.contact(&call.peer_number);
    let decision = rules.decide(&call, &resources);
    print!("{}", report(&rules, &call, &decision, &input.note));
    Ok(ExitCode::SUCCESS)
}

/// `+33123456789  (+33 1 23 45 67 89, FR)`: E.164 as the rules see it, then as people write it.
fn number_with_country(number: &str, country: Option<&str>, location: Option<&str>) -> String {
    let mut details = Vec::new();
    if number.starts_with('+') {
        details.push(display(number));
    }
    details.extend(location.or(country).map(str::to_owned));
    if details.is_empty() {
        number.to_owned()
    } else {
        format!("{number}  ({})", details.join(", "))
    }
}

/// The whole report, as printed.
pub fn report(rules: &RuleSet, call: &Call, decision: &Decision, note: &str) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let weekday = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        [call.local_time.weekday().num_days_from_monday() as usize];
    line("Call".into());
    let (from, to) = match call.origin {
        Origin::External => (
            number_with_country(
                &call.peer_number,
                call.country.as_deref(),
                call.location.as_deref(),
            ),
            number_with_country(&call.destination_number, None, None),
        ),
        Origin::Internal => (
            call.caller_id_number.clone(),
            number_with_country(
                &call.peer_number,
                call.country.as_deref(),
                call.location.as_deref(),
            ),
        ),
    };
    let origin = match call.origin {
        Origin::External => "external (from outside, through a DID)",
        Origin::Internal => "internal (from one of your devices)",
    };
    line(format!("  {:<12}{origin}", "origin"));
    line(format!("  {:<12}{from}", "from"));
    line(format!("  {:<12}{to}", "to"));
    let contact = match &call.contact {
        Some(contact) if contact.groups.is_empty() => contact.name.clone(),
        Some(contact) => format!("{} ({})", contact.name, contact.groups.join(", ")),
        None => "not in your contacts".into(),
    };
    line(format!("  {:<12}{contact}", "contact"));
    line(format!(
        "  {:<12}{}",
        "language",
        decision.language().unwrap_or("unknown")
    ));
    line(format!(
        "  {:<12}{weekday} {}",
        "local time",
        call.local_time.format("%Y-%m-%d %H:%M")
    ));
    line(format!(
        "  {:<12}{} registered, {}",
        "devices",
        call.device_count,
        if call.busy {
            "already on a call"
        } else {
            "not on a call"
        }
    ));
    if call.do_not_disturb {
        line(format!("  {:<12}on", "do-not-disturb"));
    }
    line(format!("  {:<12}{note}", "repo"));

    let width = rules.rule_ids().map(str::len).max().unwrap_or(0).max(8);
    line(String::new());
    line("Rules that applied, in order".into());
    if decision.matched.is_empty() {
        line("  (none)".into());
    }
    for id in &decision.matched {
        let place = rules
            .rule_origin(id)
            .map(|(source, place)| match source {
                Source::Defaults => format!("{place} (patchbay default)"),
                Source::PhoneRepo => place,
            })
            .unwrap_or_default();
        line(format!("  ✓ {id:<width$}  {place}"));
    }
    line(String::new());
    line("Rules that did not apply".into());
    if decision.unmatched.is_empty() {
        line("  (none)".into());
    }
    for id in rules.rule_ids() {
        if let Some(unmatched) = decision.unmatched.iter().find(|u| &*u.rule == id) {
            line(format!(
                "  ✗ {id:<width$}  {}",
                rules.explain(unmatched, call)
            ));
        }
    }

    line(String::new());
    line("Properties".into());
    let phases = [
        ("early", &decision.early),
        ("normal", &decision.normal),
        ("delayed", &decision.delayed),
    ];
    let key_width = phases
        .iter()
        .flat_map(|(_, properties)| properties.iter().map(|(key, _)| key.len()))
        .max()
        .unwrap_or(0);
    let mut any = false;
    for (phase, properties) in phases {
        any |= print_phase(&mut line, phase, properties, key_width);
    }
    if !any {
        line("  (none)".into());
    }

    line(String::new());
    line("What patchbay would do".into());
    for (index, action) in actions(call, decision).iter().enumerate() {
        line(format!("  {}. {action}", index + 1));
    }
    if !decision.logs.is_empty() {
        line(String::new());
        line("Rule logs".into());
        for message in &decision.logs {
            line(format!("  {message}"));
        }
    }
    if !decision.errors.is_empty() {
        line(String::new());
        line("Rule errors".into());
        for error in &decision.errors {
            line(format!("  {error}"));
        }
    }
    out
}

fn print_phase(
    line: &mut impl FnMut(String),
    phase: &str,
    properties: &Properties,
    width: usize,
) -> bool {
    for (index, (key, value)) in properties.iter().enumerate() {
        let label = if index == 0 { phase } else { "" };
        line(format!("  {label:<9}{key:<width$}  {value}"));
    }
    !properties.is_empty()
}

fn actions(call: &Call, decision: &Decision) -> Vec<String> {
    let mut steps = Vec::new();
    if decision.safe_default {
        steps.push("A rule failed, so the safe default applies (see the errors below):".into());
    }
    if let Some(rule) = decision.dialplan_rule() {
        steps.push(format!(
            "Hand the call to the dialplan of rule '{rule}' (an interactive menu: try it from a phone)"
        ));
        return steps;
    }
    if let Some(cause) = decision.hangup() {
        steps.push(format!("Hang up ({cause})"));
        return steps;
    }
    if decision.answer() {
        steps.push("Answer the call".into());
    }
    match call.origin {
        Origin::External => {
            if decision.decline() {
                steps.push("Do not ring any device (declined by the rules)".into());
            } else {
                let delay = decision
                    .voicemail_delay()
                    .map(|seconds| format!(" for {seconds} s"))
                    .unwrap_or_default();
                match decision.bridge_to() {
                    BridgeTo::AllDevices if call.device_count == 0 => {
                        steps.push("Ring nothing: no device is registered".into())
                    }
                    BridgeTo::AllDevices => steps.push(format!(
                        "Ring all {} registered devices at once{delay}",
                        call.device_count
                    )),
                    BridgeTo::Targets(targets) => {
                        steps.push(format!("Ring {} at once{delay}", targets.join(", ")))
                    }
                }
                if decision.record() {
                    steps.push("Record the conversation if someone answers".into());
                }
            }
            let greeting = decision
                .voicemail_greeting()
                .map(|name| format!("greeting {name}"))
                .unwrap_or_else(|| "patchbay's built-in greeting".into());
            steps.push(format!("Otherwise take a voicemail after the {greeting}"));
        }
        Origin::Internal => {
            let via = decision
                .did()
                .map(|did| format!(" through DID {}", display(did)))
                .unwrap_or_else(|| " (no DID chosen: the settings list none)".into());
            let shown = decision
                .caller_id()
                .map(|name| format!(", showing caller ID {name:?}"))
                .unwrap_or_default();
            steps.push(format!("Call {}{via}{shown}", call.destination_number));
            if decision.record() {
                steps.push("Record the conversation".into());
            }
        }
    }
    steps
}
