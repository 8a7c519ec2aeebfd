//! Matching semantics, one test per row and surprise of docs/rules.md.

use std::sync::Arc;

use chrono::NaiveDate;

use super::*;
use crate::calls::{Call, Origin};
use crate::contacts::Contact;

fn at(hour: u32, minute: u32) -> chrono::NaiveDateTime {
    // 2026-12-01 is a Tuesday.
    NaiveDate::from_ymd_opt(2026, 12, 1)
        .and_then(|day| day.and_hms_opt(hour, minute, 0))
        .expect("valid test time")
}

/// An external call from Paris to the person's Montreal DID, Tuesday 14:30, two devices.
fn call() -> Call {
    Call {
        uuid: "7f4de4bc-0001".into(),
        origin: Origin::External,
        peer_number: "+33123456789".into(),
        caller_id_name: "PARIS".into(),
        caller_id_number: "+33123456789".into(),
        destination_number: "+15145550100".into(),
        did: Some("+15145550100".into()),
        country: Some("FR".into()),
        location: None,
        contact: None,
        local_time: at(14, 30),
        device_count: 2,
        busy: false,
        do_not_disturb: false,
        state: "ringing".into(),
        hangup_cause: None,
    }
}

fn alice() -> Contact {
    Contact {
        uid: "alice-1".into(),
        name: "Alice Martin".into(),
        groups: vec!["family".into(), "friends".into()],
        language: Some("de".into()),
        numbers: vec!["+33123456789".into()],
    }
}

fn file(text: &str) -> SourceFile {
    SourceFile {
        source: Source::PhoneRepo,
        path: "rules/10-test.rhai".into(),
        text: text.into(),
    }
}

fn compile(text: &str) -> RuleSet {
    RuleSet::compile_only(&[file(text)], &RuleSettings::default())
        .unwrap_or_else(|errors| panic!("{text}\n{errors:?}"))
        .with_clock(Arc::new(FixedClock(at(14, 30))))
}

fn compile_errors(text: &str) -> Vec<LoadError> {
    match RuleSet::compile_only(&[file(text)], &RuleSettings::default()) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(errors) => errors,
    }
}

fn resources() -> SharedResources {
    Arc::new(NoResources)
}

fn decide(text: &str, call: &Call) -> Decision {
    compile(text).decide(call, &resources())
}

/// Whether an entry with conditions `conditions` applies to `call`.
fn applies(conditions: &str, call: &Call) -> bool {
    let decision = decide(&format!("rule(#{{ id: \"t\", {conditions} }});"), call);
    decision.matched.iter().any(|id| &**id == "t")
}

fn with(change: impl FnOnce(&mut Call)) -> Call {
    let mut call = call();
    change(&mut call);
    call
}

// --- rule ---------------------------------------------------------------------------------

#[test]
fn no_conditions_matches_every_call() {
    assert!(applies("", &call()));
    assert!(applies("", &with(|c| c.origin = Origin::Internal)));
}

#[test]
fn rule_every_field_must_match() {
    assert!(applies(
        r#"rule: #{ origin: "external", country: "FR" }"#,
        &call()
    ));
    assert!(!applies(
        r#"rule: #{ origin: "external", country: "DE" }"#,
        &call()
    ));
}

#[test]
fn empty_rule_matches_everything() {
    assert!(applies("rule: #{}", &call()));
}

#[test]
fn rule_equal_strings_match() {
    assert!(applies(r#"rule: #{ state: "ringing" }"#, &call()));
}

#[test]
fn rule_nil_matches_a_missing_field() {
    assert!(applies("rule: #{ contact: () }", &call()));
    assert!(!applies(
        "rule: #{ contact: () }",
        &with(|c| c.contact = Some(alice()))
    ));
    assert!(applies("rule: #{ hangup_cause: () }", &call()));
}

#[test]
fn rule_booleans_compare_by_value() {
    assert!(applies("rule: #{ busy: false }", &call()));
    assert!(!applies("rule: #{ busy: true }", &call()));
    assert!(applies("rule: #{ busy: true }", &with(|c| c.busy = true)));
}

// --- rule OR rule_any -------------------------------------------------------------------

#[test]
fn rule_or_rule_any_rule_alone_suffices() {
    assert!(applies(
        r#"rule: #{ country: "FR" }, rule_any: #{ country: ["DE"] }"#,
        &call()
    ));
}

#[test]
fn rule_or_rule_any_rule_any_alone_suffices() {
    assert!(applies(
        r#"rule: #{ country: "DE" }, rule_any: #{ country: ["FR"] }"#,
        &call()
    ));
}

#[test]
fn rule_or_rule_any_both_failing_is_no_match() {
    assert!(!applies(
        r#"rule: #{ country: "DE" }, rule_any: #{ country: ["IT"] }"#,
        &call()
    ));
}

#[test]
fn rule_any_some_field_some_value() {
    assert!(applies(
        r#"rule_any: #{ country: ["DE", "FR"], origin: ["internal"] }"#,
        &call()
    ));
    assert!(applies(
        r#"rule_any: #{ country: ["DE"], origin: ["external"] }"#,
        &call()
    ));
    assert!(!applies(
        r#"rule_any: #{ country: ["DE"], origin: ["internal"] }"#,
        &call()
    ));
}

#[test]
fn empty_rule_any_never_matches() {
    assert!(!applies("rule_any: #{}", &call()));
}

#[test]
fn rule_any_ignores_nil_fields() {
    assert!(!applies("rule_any: #{ location: [()] }", &call()));
}

#[test]
fn rule_any_ignores_false_fields() {
    assert!(!applies("rule_any: #{ busy: [false] }", &call()));
    assert!(applies("rule: #{ busy: false }", &call()));
}

#[test]
fn rule_any_true_means_any_truthy_value() {
    assert!(applies("rule_any: #{ country: [true] }", &call()));
    assert!(!applies("rule_any: #{ location: [true] }", &call()));
    assert!(applies(
        "rule_any: #{ contact: [true] }",
        &with(|c| c.contact = Some(alice()))
    ));
    assert!(!applies("rule_any: #{ contact: [true] }", &call()));
    assert!(applies(
        "rule_any: #{ device_count: [true] }",
        &with(|c| c.device_count = 0)
    ));
}

#[test]
fn rule_any_lone_value_is_a_list_of_one() {
    assert!(applies(r#"rule_any: #{ country: "FR" }"#, &call()));
}

// --- rule_every ---------------------------------------------------------------------------

#[test]
fn rule_every_each_field_matches_one_of_its_values() {
    assert!(applies(
        r#"rule_every: #{ country: ["FR", "BE"], origin: ["external"] }"#,
        &call()
    ));
    assert!(!applies(
        r#"rule_every: #{ country: ["FR", "BE"], origin: ["internal"] }"#,
        &call()
    ));
}

#[test]
fn rule_every_is_anded_with_rule() {
    assert!(!applies(
        r#"rule: #{ origin: "external" }, rule_every: #{ country: ["DE"] }"#,
        &call()
    ));
}

// --- except / except_any ------------------------------------------------------------------

#[test]
fn except_blocks_when_all_fields_match() {
    assert!(!applies(r#"except: #{ country: "FR" }"#, &call()));
    assert!(applies(
        r#"except: #{ country: "FR", busy: true }"#,
        &call()
    ));
}

#[test]
fn empty_except_matches_everything_so_entry_never_applies() {
    assert!(!applies("except: #{}", &call()));
    assert!(!applies(
        r#"rule: #{ origin: "external" }, except: #{}"#,
        &call()
    ));
}

#[test]
fn except_any_blocks_when_any_field_matches() {
    assert!(!applies(
        r#"except_any: #{ country: ["CA", "FR"] }"#,
        &call()
    ));
    assert!(applies(
        r#"except_any: #{ country: ["CA", "US"] }"#,
        &call()
    ));
}

#[test]
fn empty_except_any_never_matches_so_entry_applies() {
    assert!(applies("except_any: #{}", &call()));
}

#[test]
fn except_any_ignores_nil_like_rule_any() {
    assert!(applies("except_any: #{ location: [()] }", &call()));
}

// --- comparing one value ------------------------------------------------------------------

#[test]
fn integer_equals_float() {
    assert!(applies("rule: #{ device_count: 2.0 }", &call()));
    assert!(applies("rule: #{ device_count: 2 }", &call()));
    assert!(!applies("rule: #{ device_count: 2.5 }", &call()));
}

#[test]
fn no_string_number_coercion() {
    assert!(!applies(r#"rule: #{ device_count: "2" }"#, &call()));
    let numeric = with(|c| c.destination_number = "1000".into());
    assert!(!applies("rule: #{ destination_number: 1000 }", &numeric));
    assert!(applies(
        r#"rule: #{ destination_number: "1000" }"#,
        &numeric
    ));
}

#[test]
fn no_case_folding() {
    assert!(!applies(r#"rule: #{ country: "fr" }"#, &call()));
    assert!(!applies(r#"rule: #{ caller_id_name: "paris" }"#, &call()));
}

#[test]
fn closure_as_rule_value_is_compared_never_called() {
    let decision = decide(
        r#"rule(#{ id: "t", rule: #{ country: |c| { log("called"); true } } });"#,
        &call(),
    );
    assert!(decision.matched.is_empty());
    assert!(decision.logs.is_empty());
}

#[test]
fn pattern_is_searched_unanchored() {
    assert!(applies(r#"rule: #{ peer_number: "3456" }"#, &call()));
    assert!(applies(r#"rule: #{ caller_id_name: "AR" }"#, &call()));
}

#[test]
fn pattern_caret_anchors_at_start() {
    assert!(applies(r#"rule: #{ peer_number: "^%+33" }"#, &call()));
    assert!(!applies(r#"rule: #{ peer_number: "^33" }"#, &call()));
}

#[test]
fn pattern_dollar_anchors_at_end() {
    assert!(applies(r#"rule: #{ peer_number: "789$" }"#, &call()));
    assert!(!applies(r#"rule: #{ peer_number: "678$" }"#, &call()));
}

#[test]
fn pattern_dash_in_a_number_is_a_quantifier() {
    // "+33 1-23" reads as "+33 ", then zero or more '1', then "23": it misses "+33123...".
    let dashed = with(|c| c.caller_id_name = "01-23-45".into());
    assert!(!applies(r#"rule: #{ caller_id_name: "01-23" }"#, &dashed));
    assert!(applies(r#"rule: #{ caller_id_name: "01%-23" }"#, &dashed));
    assert!(applies(r#"rule: #{ peer_number: "3312-3" }"#, &call()));
}

#[test]
fn pattern_dot_matches_any_character() {
    assert!(applies(r#"rule: #{ peer_number: "33.23" }"#, &call()));
    assert!(!applies(r#"rule: #{ peer_number: "33%.23" }"#, &call()));
}

#[test]
fn pattern_percent_escapes_and_classes() {
    assert!(applies(r#"rule: #{ peer_number: "^%+%d+$" }"#, &call()));
    assert!(!applies(r#"rule: #{ caller_id_name: "%d" }"#, &call()));
}

#[test]
fn pattern_empty_match_is_no_match() {
    assert!(!applies(r#"rule: #{ caller_id_name: "" }"#, &call()));
    assert!(!applies(r#"rule: #{ caller_id_name: "%d*" }"#, &call()));
    let empty = with(|c| c.caller_id_name = String::new());
    // Equal values still match before patterns are tried.
    assert!(applies(r#"rule: #{ caller_id_name: "" }"#, &empty));
}

#[test]
fn malformed_pattern_is_a_load_error_with_file_rule_and_pattern() {
    let errors = compile_errors(r#"rule(#{ id: "bad", rule: #{ peer_number: "[0-9" } });"#);
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.starts_with("rules/10-test.rhai:1:1: rule 'bad':"),
        "{text}"
    );
    assert!(text.contains("\"[0-9\""), "{text}");
    assert!(text.contains("missing ']'"), "{text}");
}

#[test]
fn array_field_matches_if_any_element_matches() {
    let known = with(|c| c.contact = Some(alice()));
    assert!(applies(r#"rule: #{ contact_groups: "friends" }"#, &known));
    assert!(applies(r#"rule: #{ contact_groups: "^fam" }"#, &known));
    assert!(!applies(r#"rule: #{ contact_groups: "work" }"#, &known));
    assert!(applies(
        r#"rule_any: #{ contact_groups: ["work", "family"] }"#,
        &known
    ));
    assert!(!applies(r#"rule: #{ contact_groups: "friends" }"#, &call()));
}

// --- rule_greater / rule_lesser -------------------------------------------------------------

#[test]
fn rule_greater_and_lesser_compare_numbers() {
    assert!(applies("rule_greater: #{ device_count: 1 }", &call()));
    assert!(!applies("rule_greater: #{ device_count: 2 }", &call()));
    assert!(applies("rule_lesser: #{ device_count: 3 }", &call()));
    assert!(!applies("rule_lesser: #{ device_count: 2 }", &call()));
    assert!(applies("rule_greater: #{ device_count: 1.5 }", &call()));
}

#[test]
fn rule_greater_on_a_missing_field_is_an_error_and_no_match() {
    let decision = decide(
        r#"rule(#{ id: "t", rule_greater: #{ hangup_cause: 1 } });"#,
        &call(),
    );
    assert!(decision.matched.is_empty());
    assert_eq!(decision.errors.len(), 1);
    assert_eq!(decision.errors[0].rule, "t");
    assert!(decision.errors[0]
        .message
        .contains("hangup_cause is missing"));
    assert!(!decision.safe_default);
}

#[test]
fn rule_lesser_on_a_string_is_an_error_once_per_rule() {
    let decision = decide(
        r#"rule(#{ id: "t", rule_lesser: #{ country: 3, peer_number: 5 } });"#,
        &call(),
    );
    assert!(decision.matched.is_empty());
    assert_eq!(decision.errors.len(), 1, "{:?}", decision.errors);
    assert!(decision.errors[0].message.contains("a string"));
}

#[test]
fn rule_greater_limit_must_be_a_number() {
    let errors = compile_errors(r#"rule(#{ id: "t", rule_greater: #{ device_count: "1" } });"#);
    assert!(errors[0].message.contains("must be a number"));
}

// --- virtual fields -------------------------------------------------------------------------

#[test]
fn busy_is_a_field() {
    assert!(applies("rule: #{ busy: true }", &with(|c| c.busy = true)));
}

#[test]
fn device_count_in_rule_greater_and_lesser() {
    assert!(applies(
        "rule: #{ device_count: 0 }",
        &with(|c| c.device_count = 0)
    ));
    assert!(applies(
        "rule_lesser: #{ device_count: 1 }",
        &with(|c| c.device_count = 0)
    ));
}

fn night(hour: u32, minute: u32) -> bool {
    applies(
        "rule: #{ time_interval: #{ begins: 2200, ends: 700 } }",
        &with(|c| c.local_time = at(hour, minute)),
    )
}

#[test]
fn time_interval_wraps_past_midnight() {
    assert!(night(23, 30));
    assert!(night(6, 59));
    assert!(night(0, 0));
    assert!(!night(14, 30));
}

#[test]
fn time_interval_begins_inclusive_ends_exclusive() {
    assert!(night(22, 0));
    assert!(!night(7, 0));
    assert!(!night(21, 59));
}

#[test]
fn time_interval_within_one_day() {
    let office = "rule: #{ time_interval: #{ begins: 900, ends: 1700 } }";
    assert!(applies(office, &with(|c| c.local_time = at(9, 0))));
    assert!(!applies(office, &with(|c| c.local_time = at(17, 0))));
    assert!(!applies(office, &with(|c| c.local_time = at(8, 59))));
}

#[test]
fn time_interval_must_be_well_formed() {
    let errors = compile_errors(
        r#"rule(#{ id: "t", rule: #{ time_interval: #{ begins: 2260, ends: 700 } } });"#,
    );
    assert!(errors[0].message.contains("time_interval"));
}

#[test]
fn weekday_matches_the_local_weekday() {
    assert!(applies(r#"rule: #{ weekday: ["tue", "wed"] }"#, &call()));
    assert!(!applies(r#"rule: #{ weekday: ["sat", "sun"] }"#, &call()));
    assert!(applies(
        r#"rule_any: #{ weekday: ["sat", "tue"] }"#,
        &call()
    ));
}

#[test]
fn weekday_typo_is_an_error_with_suggestion() {
    let errors = compile_errors(r#"rule(#{ id: "t", rule: #{ weekday: ["satu"] } });"#);
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean \"sat\"?"));
}

#[test]
fn virtual_fields_do_not_short_circuit_the_section() {
    // AwesomeWM would return early on the virtual field; patchbay still checks country.
    assert!(!applies(
        r#"rule: #{ time_interval: #{ begins: 1400, ends: 1500 }, country: "DE" }"#,
        &call()
    ));
    assert!(applies(
        r#"rule: #{ time_interval: #{ begins: 1400, ends: 1500 }, country: "FR" }"#,
        &call()
    ));
    assert!(!applies(
        r#"rule: #{ country: "FR", weekday: ["sun"] }"#,
        &call()
    ));
}

// --- call fields --------------------------------------------------------------------------

#[test]
fn every_call_field_can_be_matched() {
    let known = with(|c| {
        c.contact = Some(alice());
        c.location = Some("FR-IDF".into());
        c.hangup_cause = Some("NORMAL_CLEARING".into());
    });
    for condition in [
        r#"uuid: "^7f4d""#,
        r#"origin: "external""#,
        r#"peer_number: "+33123456789""#,
        r#"peer_name: "Alice""#,
        r#"caller_id_number: "^%+33""#,
        r#"caller_id_name: "PARIS""#,
        r#"destination_number: "5550100$""#,
        r#"did: "+15145550100""#,
        r#"country: "FR""#,
        r#"location: "FR%-IDF""#,
        r#"contact_groups: "family""#,
        r#"language: "de""#,
        "device_count: 2",
        "busy: false",
        r#"state: "ringing""#,
        r#"hangup_cause: "NORMAL""#,
    ] {
        assert!(
            applies(&format!("rule: #{{ {condition} }}"), &known),
            "{condition}"
        );
    }
}

#[test]
fn peer_name_falls_back_to_caller_id_name() {
    assert!(applies(r#"rule: #{ peer_name: "PARIS" }"#, &call()));
}

#[test]
fn language_is_the_contacts_else_from_country() {
    assert!(applies(r#"rule: #{ language: "fr" }"#, &call()));
    assert!(applies(
        r#"rule: #{ language: "de" }"#,
        &with(|c| c.contact = Some(alice()))
    ));
    let quebec = with(|c| {
        c.country = Some("CA".into());
        c.location = Some("CA-QC".into());
    });
    assert!(applies(r#"rule: #{ language: "fr" }"#, &quebec));
    assert!(applies(
        r#"rule: #{ language: "en" }"#,
        &with(|c| c.country = Some("US".into()))
    ));
}

// --- rule map checks ------------------------------------------------------------------------

#[test]
fn unknown_rule_key_names_the_nearest_valid_one() {
    let errors = compile_errors(r#"rule(#{ id: "t", rule_anny: #{ country: ["FR"] } });"#);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("unknown key 'rule_anny'"));
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean rule_any?"));
}

#[test]
fn unknown_call_field_names_the_nearest_valid_one() {
    let errors = compile_errors(r#"rule(#{ id: "t", rule: #{ orgin: "external" } });"#);
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean origin?"));
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let errors = compile_errors(
        r#"
rule(#{ id: "a", excpt: #{} });
rule(#{ id: "b", rule: #{ country: "(" } });
rule(#{ id: "a", rule: #{} });
"#,
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[1].line, Some(3));
    assert!(errors[2].message.contains("already used"));
}

#[test]
fn syntax_errors_have_line_and_column() {
    let errors = compile_errors("rule(#{ id: \"t\" rule: #{} });");
    assert_eq!(errors[0].line, Some(1));
    assert!(errors[0].column.is_some());
    assert!(errors[0].hint.is_some());
}

// --- fallback, remove_rule, ordering ----------------------------------------------------

#[test]
fn fallback_applies_only_when_nothing_else_of_its_source_matched() {
    let rules = r#"
rule(#{ id: "known", rule: #{ contact: () }, except: #{ busy: true }, properties: #{ voicemail: "a.wav" } });
rule(#{ id: "otherwise", fallback: true, properties: #{ voicemail: "b.wav" } });
"#;
    let decision = decide(rules, &call());
    assert_eq!(decision.voicemail_greeting(), Some("a.wav"));
    assert!(!decision.matched.iter().any(|id| &**id == "otherwise"));
    let decision = decide(rules, &with(|c| c.busy = true));
    assert_eq!(decision.voicemail_greeting(), Some("b.wav"));
}

#[test]
fn fallback_looks_only_at_its_own_source() {
    let defaults = SourceFile {
        source: Source::Defaults,
        path: "rules/10-defaults.rhai".into(),
        text: r#"rule(#{ id: "d", properties: #{ voicemail: "d.wav" } });"#.into(),
    };
    let user = file(r#"rule(#{ id: "u", fallback: true, properties: #{ record: true } });"#);
    let set = RuleSet::compile_only(&[user, defaults], &RuleSettings::default()).expect("compiles");
    let decision = set.decide(&call(), &resources());
    let ids: Vec<&str> = decision.matched.iter().map(|id| &**id).collect();
    assert_eq!(ids, ["d", "u"]);
}

#[test]
fn remove_rule_drops_an_earlier_rule() {
    let decision = decide(
        r#"
rule(#{ id: "ring", properties: #{ record: true } });
remove_rule("ring");
"#,
        &call(),
    );
    assert!(decision.matched.is_empty());
    assert!(!decision.record());
}

#[test]
fn remove_rule_of_an_unknown_id_is_an_error_with_suggestion() {
    let errors = compile_errors(
        r#"
rule(#{ id: "night_filter" });
remove_rule("night_filtre");
"#,
    );
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("did you mean remove_rule(\"night_filter\")?")
    );
}

#[test]
fn user_rule_overrides_a_default_and_can_remove_one() {
    let user = file(
        r#"
remove_rule("night_filter");
rule(#{ id: "mine", rule: #{ origin: "external" }, properties: #{ record: false } });
"#,
    );
    let set = RuleSet::compile(&[user]).expect("defaults and user rules compile");
    let night_call = with(|c| c.local_time = at(23, 30));
    let decision = set.decide(&night_call, &resources());
    assert!(!decision.decline(), "night filter removed");
    assert!(
        !decision.record(),
        "user rule wins over the default record: true"
    );
    assert!(decision
        .matched
        .iter()
        .any(|id| &**id == "external_ring_all"));
}

#[test]
fn last_writer_wins() {
    let decision = decide(
        r#"
rule(#{ id: "a", properties: #{ voicemail: "a.wav", caller_id: "A" } });
rule(#{ id: "b", rule: #{ country: "FR" }, properties: #{ voicemail: "b.wav" } });
rule(#{ id: "c", rule: #{ country: "DE" }, properties: #{ voicemail: "c.wav" } });
"#,
        &call(),
    );
    assert_eq!(decision.voicemail_greeting(), Some("b.wav"));
    assert_eq!(decision.caller_id(), Some("A"));
    let ids: Vec<&str> = decision.matched.iter().map(|id| &**id).collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn overridden_closures_are_not_called() {
    let decision = decide(
        r#"
rule(#{ id: "a", properties: #{ voicemail: |call| { log("a ran"); "a.wav" } } });
rule(#{ id: "b", properties: #{ voicemail: "b.wav" } });
"#,
        &call(),
    );
    assert_eq!(decision.voicemail_greeting(), Some("b.wav"));
    assert!(decision.logs.is_empty());
}

#[test]
fn unit_property_unsets_an_earlier_value() {
    let decision = decide(
        r#"
rule(#{ id: "a", properties: #{ bridge_to: "1001" } });
rule(#{ id: "b", properties: #{ bridge_to: () } });
"#,
        &call(),
    );
    assert_eq!(decision.bridge_to(), BridgeTo::AllDevices);
}

// --- phases and closures --------------------------------------------------------------

#[test]
fn properties_land_in_their_phase() {
    let decision = decide(
        r#"rule(#{ id: "a", properties: #{ record: true, language: "fr", voicemail: "v.wav", mood: "calm" } });"#,
        &call(),
    );
    assert_eq!(decision.early.get("language"), Some(&Value::from("fr")));
    assert_eq!(
        decision.normal.get("voicemail"),
        Some(&Value::from("v.wav"))
    );
    assert_eq!(decision.normal.get("mood"), Some(&Value::from("calm")));
    assert_eq!(decision.delayed.get("record"), Some(&Value::Bool(true)));
}

#[test]
fn closures_see_earlier_phases_values() {
    let decision = decide(
        r#"
rule(#{ id: "late", properties: #{ voicemail: |call, props| `wave_${props.language}.wav` } });
rule(#{ id: "early", properties: #{ language: "fr" } });
"#,
        &call(),
    );
    assert_eq!(decision.voicemail_greeting(), Some("wave_fr.wav"));
}

#[test]
fn delayed_closures_see_normal_values() {
    let decision = decide(
        r#"rule(#{ id: "a", properties: #{ record: |call, props| props.mood == "chatty", mood: "chatty" } });"#,
        &call(),
    );
    assert!(decision.record());
}

#[test]
fn closures_read_call_fields() {
    let decision = decide(
        r#"rule(#{ id: "a", properties: #{ caller_id: |call| `${call.country}:${call.device_count}` } });"#,
        &call(),
    );
    assert_eq!(decision.caller_id(), Some("FR:2"));
}

#[test]
fn closures_may_capture_variables() {
    let decision = decide(
        r#"
let office = "+15145550111";
rule(#{ id: "a", properties: #{ bridge_to: |call| [office, "1001"] } });
"#,
        &call(),
    );
    assert_eq!(
        decision.bridge_to(),
        BridgeTo::Targets(vec!["+15145550111".into(), "1001".into()])
    );
}

#[test]
fn callbacks_run_in_rule_order_after_normal_properties() {
    let decision = decide(
        r#"
rule(#{ id: "a", callback: |call, props| log(`a sees ${props.voicemail}`) });
rule(#{ id: "b", properties: #{ voicemail: "v.wav" }, callback: |call| log("b") });
"#,
        &call(),
    );
    assert_eq!(decision.logs, ["a sees v.wav", "b"]);
}

#[test]
fn callback_errors_are_logged_and_the_call_goes_on() {
    let decision = decide(
        r#"
rule(#{ id: "broken", callback: |call| undefined_function() , properties: #{ record: true } });
rule(#{ id: "fine", callback: |call| log("still here") });
"#,
        &call(),
    );
    assert!(!decision.safe_default);
    assert!(decision.record());
    assert_eq!(decision.logs, ["still here"]);
    assert_eq!(decision.errors.len(), 1);
    assert_eq!(decision.errors[0].rule, "broken");
    assert!(decision.errors[0].message.starts_with("callback:"));
}

#[test]
fn a_throwing_property_closure_gives_the_safe_default() {
    let decision = decide(
        r#"rule(#{ id: "thrower", properties: #{ decline: true, voicemail: |call| throw "nope" } });"#,
        &call(),
    );
    assert!(decision.safe_default);
    assert!(!decision.decline());
    assert_eq!(decision.bridge_to(), BridgeTo::AllDevices);
    assert_eq!(decision.errors[0].rule, "thrower");
}

#[test]
fn endless_loop_is_stopped_by_the_budget_and_names_the_rule() {
    let start = std::time::Instant::now();
    let decision = decide(
        r#"rule(#{ id: "spinner", properties: #{ voicemail: |call| { loop {} } } });"#,
        &call(),
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert!(decision.safe_default);
    let error = decision.errors[0].to_string();
    assert!(
        error.starts_with("rule 'spinner': property voicemail:"),
        "{error}"
    );
    assert!(error.contains("too many operations"), "{error}");
}

#[test]
fn endless_loop_at_the_top_level_is_a_load_error() {
    let errors = compile_errors("loop {}");
    assert!(
        errors[0].message.contains("too many operations"),
        "{errors:?}"
    );
}

#[test]
fn eval_and_file_imports_are_refused() {
    let errors = compile_errors(r#"eval("rule(#{})");"#);
    assert!(errors[0].message.contains("eval"), "{errors:?}");
    let errors = compile_errors(r#"import "/etc/passwd" as p;"#);
    assert!(!errors.is_empty());
}

#[test]
fn modules_come_from_rules_lib() {
    let module = SourceFile {
        source: Source::PhoneRepo,
        path: "rules/lib/names.rhai".into(),
        text: r#"fn office() { "+15145550111" }"#.into(),
    };
    let rules = file(
        r#"rule(#{ id: "a", properties: #{ bridge_to: |call| { import "lib/names" as names; names::office() } } });"#,
    );
    let set = RuleSet::compile_only(&[rules, module], &RuleSettings::default()).expect("compiles");
    assert_eq!(set.rule_ids().collect::<Vec<_>>(), ["a"]);
    let decision = set.decide(&call(), &resources());
    assert_eq!(
        decision.bridge_to(),
        BridgeTo::Targets(vec!["+15145550111".into()])
    );
}

#[test]
fn now_comes_from_the_injected_clock() {
    let set = compile(r#"rule(#{ id: "a", properties: #{ stamp: |call| now().text } });"#)
        .with_clock(Arc::new(FixedClock(at(23, 45))));
    let decision = set.decide(&call(), &resources());
    assert_eq!(
        decision.get("stamp"),
        Some(&Value::from("2026-12-01 23:45"))
    );
}

struct Greetings;

impl Resources for Greetings {
    fn contact(&self, number: &str) -> Option<Contact> {
        (number == "+33123456789").then(alice)
    }
    fn greeting(&self, name: &str, _: Option<&str>, _: Option<&str>) -> Option<String> {
        ["wave.wav", "wave_fr.wav", "away.wav"]
            .contains(&name)
            .then(|| format!("/greetings/{name}"))
    }
}

#[test]
fn greeting_and_contact_use_the_resources() {
    let set = compile(
        r#"rule(#{ id: "a", properties: #{
            voicemail: |call| greeting("wave_fr.wav"),
            caller_id: |call| contact(call.peer_number).name,
        } });"#,
    );
    let resources: SharedResources = Arc::new(Greetings);
    let decision = set.decide(&call(), &resources);
    assert_eq!(
        decision.voicemail_greeting(),
        Some("/greetings/wave_fr.wav")
    );
    assert_eq!(decision.caller_id(), Some("Alice Martin"));
}

#[test]
fn property_types_are_checked_at_load() {
    let errors =
        compile_errors(r#"rule(#{ id: "t", properties: #{ decline: "yes", dialplan: "menu" } });"#);
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn number_patterns_with_magic_characters_warn() {
    let set = compile(r#"rule(#{ id: "t", rule: #{ peer_number: "514-555", did: "+1514" } });"#);
    assert_eq!(set.warnings().len(), 1, "{:?}", set.warnings());
    assert!(set.warnings()[0].message.contains("'-'"));
}

#[test]
fn unmatched_rules_say_which_condition_failed() {
    let set = compile(
        r#"
rule(#{ id: "de", rule: #{ country: "DE" } });
rule(#{ id: "blocked", except_any: #{ country: ["FR"] } });
rule(#{ id: "never", except: #{} });
"#,
    );
    let call = call();
    let decision = set.decide(&call, &resources());
    let explained: Vec<String> = decision
        .unmatched
        .iter()
        .map(|unmatched| set.explain(unmatched, &call))
        .collect();
    assert_eq!(
        explained,
        [
            "rule: country is \"FR\", wanted \"DE\"",
            "except_any: country is \"FR\", one of [\"FR\"]",
            "except is empty, so it matches every call",
        ]
    );
}

#[test]
fn event_handlers_receive_call_and_data() {
    let set = compile(
        r#"
on("voicemail", |call, data| log(`${call.peer_number}: ${data.transcript}`));
on("missed", |call| log("missed"));
"#,
    );
    let mut data = std::collections::BTreeMap::new();
    data.insert("transcript".to_owned(), Value::from("call me back"));
    let outcome = set.run_event("voicemail", &call(), &Value::Map(data), &resources());
    assert_eq!(outcome.handled, 1);
    assert_eq!(outcome.logs, ["+33123456789: call me back"]);
    assert_eq!(set.handler_count("missed"), 1);
    assert_eq!(set.handler_count("dtmf"), 0);
}

#[test]
fn outage_handlers_get_no_call_and_the_outage_as_data() {
    let set = compile(
        r#"
on("outage::begin", |call, data| log(`${data.what} down (${data.detail}); call is ${type_of(call)}`));
on("outage::end", |call, data| { if call == () { log(`${data.what} back after ${data.seconds} s`); } });
"#,
    );
    let mut data = std::collections::BTreeMap::new();
    data.insert("what".to_owned(), Value::from("gateway did1"));
    data.insert("detail".to_owned(), Value::from("FAILED 503"));
    data.insert("seconds".to_owned(), Value::Int(42));
    let data = Value::Map(data);
    let outcome = set.run_event_without_call("outage::begin", &data, &resources());
    assert_eq!(outcome.errors, []);
    assert_eq!(outcome.logs, ["gateway did1 down (FAILED 503); call is ()"]);
    let outcome = set.run_event_without_call("outage::end", &data, &resources());
    assert_eq!(outcome.logs, ["gateway did1 back after 42 s"]);
}

#[test]
fn unknown_event_is_an_error_with_suggestion() {
    let errors = compile_errors(r#"on("mised", |call| ());"#);
    assert_eq!(errors[0].hint.as_deref(), Some("did you mean \"missed\"?"));
}

#[test]
fn rule_outside_the_top_level_is_refused_at_run_time() {
    let decision = decide(
        r#"rule(#{ id: "sneaky", callback: |call| rule(#{ id: "late" }) });"#,
        &call(),
    );
    assert_eq!(decision.errors.len(), 1);
    assert!(decision.errors[0].message.contains("top level"));
}

#[test]
fn misspelt_variable_in_a_closure_is_a_load_error() {
    let errors = compile_errors(
        r#"let office = "1001"; rule(#{ id: "t", properties: #{ bridge_to: |call| ofice } });"#,
    );
    assert!(errors[0].message.contains("ofice"), "{errors:?}");
    assert_eq!(errors[0].line, Some(1));
}

#[test]
fn helper_functions_stay_in_their_file() {
    let first = SourceFile {
        source: Source::PhoneRepo,
        path: "rules/10-a.rhai".into(),
        text: r#"fn pick() { "a.wav" } rule(#{ id: "a", properties: #{ voicemail: |call| pick() } });"#
            .into(),
    };
    let second = SourceFile {
        source: Source::PhoneRepo,
        path: "rules/20-b.rhai".into(),
        text: r#"fn pick() { "b" } rule(#{ id: "b", properties: #{ mood: |call| pick() } });"#
            .into(),
    };
    let set = RuleSet::compile_only(&[first, second], &RuleSettings::default()).expect("compiles");
    let decision = set.decide(&call(), &resources());
    assert_eq!(decision.voicemail_greeting(), Some("a.wav"));
    assert_eq!(decision.get("mood"), Some(&Value::from("b")));
}

#[test]
fn rule_sets_and_decisions_cross_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<RuleSet>();
    shareable::<Decision>();
}

struct Silent;

impl CallScript for Silent {
    fn answer(&mut self) -> Result<(), ScriptError> {
        Ok(())
    }
    fn play(&mut self, _: &str) -> Result<(), ScriptError> {
        Ok(())
    }
    fn get_digits(&mut self, _: u32, _: u64) -> Result<String, ScriptError> {
        Ok(String::new())
    }
    fn record(&mut self, _: &RecordOptions) -> Result<String, ScriptError> {
        Ok(String::new())
    }
    fn transfer(&mut self, _: &str) -> Result<(), ScriptError> {
        Ok(())
    }
    fn hangup(&mut self, _: &str) -> Result<(), ScriptError> {
        Ok(())
    }
    fn play_new_voicemails(&mut self) -> Result<u32, ScriptError> {
        Ok(0)
    }
    fn record_greeting(&mut self, _: &str) -> Result<bool, ScriptError> {
        Ok(true)
    }
    fn toggle_do_not_disturb(&mut self) -> Result<bool, ScriptError> {
        Ok(false)
    }
}

#[test]
fn endless_dialplan_is_stopped_by_the_budget() {
    let set = compile(
        r#"rule(#{ id: "stuck_menu", properties: #{ dialplan: |call| { call.answer(); loop { call.get_digits(1, 10); } } } });"#,
    );
    let decision = set.decide(&call(), &resources());
    let error = set
        .run_dialplan(&decision, &call(), &resources(), &mut Silent)
        .expect_err("the budget stops the loop");
    let text = error.to_string();
    assert!(text.starts_with("rule 'stuck_menu': dialplan:"), "{text}");
    assert!(text.contains("too many operations"), "{text}");
}

#[test]
fn a_decision_without_dialplan_cannot_run_one() {
    let set = compile(r#"rule(#{ id: "plain" });"#);
    let decision = set.decide(&call(), &resources());
    assert_eq!(
        set.run_dialplan(&decision, &call(), &resources(), &mut Silent),
        Err(Error::NoDialplan)
    );
}

#[test]
fn bad_record_options_are_script_errors() {
    let set = compile(
        r#"rule(#{ id: "memo", properties: #{ dialplan: |call| { call.record(#{ max_secs: 5 }); } } });"#,
    );
    let decision = set.decide(&call(), &resources());
    let error = set
        .run_dialplan(&decision, &call(), &resources(), &mut Silent)
        .expect_err("unknown option");
    assert!(
        error.to_string().contains("unknown option 'max_secs'"),
        "{error}"
    );
}

#[test]
fn the_call_is_read_only_for_closures() {
    let decision = decide(
        r#"
rule(#{ id: "a", properties: #{ mood: |call| { call.country = "XX"; "changed" } } });
rule(#{ id: "b", properties: #{ caller_id: |call| call.country } });
"#,
        &call(),
    );
    assert!(decision.safe_default, "writing to call is refused");
    assert_eq!(decision.errors[0].rule, "a");
}
