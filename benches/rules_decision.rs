//! Decision time for one call against 200 rules (mixed conditions, a quarter with closure
//! properties, time_interval and country conditions) with 5,000 contacts in the resources.
//! Prints p50/p99 over many decisions. Run on one core:
//! `taskset -c 0 cargo bench --bench rules_decision`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use patchbay::calls::{Call, Origin};
use patchbay::contacts::Contact;
use patchbay::rules::{
    FixedClock, Resources, RuleSet, RuleSettings, SharedResources, Source, SourceFile,
};

struct AddressBook {
    by_number: HashMap<String, Contact>,
}

impl Resources for AddressBook {
    fn contact(&self, number: &str) -> Option<Contact> {
        self.by_number.get(number).cloned()
    }

    fn greeting(&self, name: &str, _: Option<&str>, _: Option<&str>) -> Option<String> {
        name.starts_with("wave")
            .then(|| format!("/greetings/{name}"))
    }
}

fn address_book() -> AddressBook {
    let by_number = (0..5_000)
        .map(|index| {
            let number = format!("+1514555{index:04}");
            let contact = Contact {
                uid: format!("uid-{index}"),
                name: format!("Contact {index}"),
                groups: vec![if index % 3 == 0 { "family" } else { "work" }.to_owned()],
                language: (index % 2 == 0).then(|| "fr".to_owned()),
                numbers: vec![number.clone()],
            };
            (number, contact)
        })
        .collect();
    AddressBook { by_number }
}

fn rules_text(closures: bool) -> String {
    let countries = ["FR", "CA", "US", "DE", "GB", "BE", "CH", "IT"];
    let mut text = String::new();
    for index in 0..200 {
        let country = countries[index % countries.len()];
        let other = countries[(index + 3) % countries.len()];
        let conditions = match index % 5 {
            0 => format!(
                "rule: #{{ origin: \"external\", time_interval: #{{ begins: {}, ends: {} }} }}",
                (index % 24) * 100,
                ((index + 8) % 24) * 100
            ),
            1 => format!("rule_any: #{{ country: [\"{country}\", \"{other}\"], contact_groups: [\"family\"] }}"),
            2 => format!("rule: #{{ peer_number: \"^%+1514555{}\" }}, except_any: #{{ country: [\"{other}\"] }}", index % 10),
            3 => format!("rule_every: #{{ country: [\"{country}\", \"CA\"], origin: [\"external\"] }}, rule_greater: #{{ device_count: {} }}", index % 3),
            _ => format!("rule: #{{ weekday: [\"mon\", \"tue\", \"wed\"], busy: false }}, except: #{{ country: \"{other}\" }}"),
        };
        let properties = if closures && index % 4 == 0 {
            match index % 3 {
                0 => "voicemail: |call, props| greeting(`wave_${props.language}.wav`)".to_owned(),
                1 => "caller_id: |call| { let c = contact(call.peer_number); if c == () { call.peer_name } else { c.name } }".to_owned(),
                _ => "voicemail_delay: |call, props| if call.busy { 5 } else { 20 + call.device_count }".to_owned(),
            }
        } else {
            format!(
                "voicemail_delay: {}, record: {}, tag_{}: \"{country}\"",
                10 + index % 30,
                index % 2 == 0,
                index % 7
            )
        };
        text.push_str(&format!(
            "rule(#{{ id: \"rule_{index}\", {conditions}, properties: #{{ {properties} }} }});\n"
        ));
    }
    text
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// p50, p99 and max of `runs` decisions of `call`, after a warm-up.
fn measure(
    rules: &RuleSet,
    call: &Call,
    resources: &SharedResources,
    runs: usize,
) -> (Duration, Duration, Duration) {
    for _ in 0..2_000 {
        std::hint::black_box(rules.decide(call, resources));
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let decision = rules.decide(std::hint::black_box(call), resources);
        samples.push(start.elapsed());
        std::hint::black_box(decision);
    }
    samples.sort();
    (
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    )
}

fn compile(text: String, clock: FixedClock) -> (RuleSet, Duration) {
    let files = [SourceFile {
        source: Source::PhoneRepo,
        path: "rules/10-bench.rhai".into(),
        text,
    }];
    let start = Instant::now();
    let rules = RuleSet::compile_only(&files, &RuleSettings::default())
        .unwrap_or_else(|errors| panic!("bench rules do not compile: {errors:?}"))
        .with_clock(Arc::new(clock));
    (rules, start.elapsed())
}

fn main() {
    let local_time = NaiveDate::from_ymd_opt(2026, 12, 1)
        .and_then(|day| day.and_hms_opt(23, 30, 0))
        .expect("valid time");
    let (rules, compile_time) = compile(rules_text(true), FixedClock(local_time));
    let (plain_rules, _) = compile(rules_text(false), FixedClock(local_time));
    let book = address_book();
    let peer = "+15145550042";
    let call = Call {
        uuid: "bench".into(),
        origin: Origin::External,
        peer_number: peer.into(),
        caller_id_name: "CALLER".into(),
        caller_id_number: peer.into(),
        destination_number: "+15145550100".into(),
        did: Some("+15145550100".into()),
        country: Some("CA".into()),
        location: Some("CA-QC".into()),
        contact: book.contact(peer),
        local_time,
        device_count: 2,
        busy: false,
        do_not_disturb: false,
        state: "ringing".into(),
        hangup_cause: None,
    };
    let resources: SharedResources = Arc::new(book);

    let first = rules.decide(&call, &resources);
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let runs = 20_000;
    let (p50, p99, max) = measure(&rules, &call, &resources, runs);
    let (plain_p50, plain_p99, _) = measure(&plain_rules, &call, &resources, runs);
    println!(
        "rules_decision: 200 rules, 50 with closure properties ({} matched), 5000 contacts, {runs} decisions",
        first.matched.len()
    );
    println!("  compile  {compile_time:>9.1?}");
    println!("  p50      {p50:>9.1?}");
    println!("  p99      {p99:>9.1?}");
    println!("  max      {max:>9.1?}");
    println!("  same rules without closures: p50 {plain_p50:.1?}, p99 {plain_p99:.1?}");
}
