//! The sandboxed Rhai engine and the functions rule files may call (`rule`, `remove_rule`,
//! `on`, `greeting`, `contact`, `log`, `now`, `settings`). Nothing else in patchbay builds an
//! `Engine`; its limits are the sandbox the docs promise.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{Datelike, NaiveDateTime, Timelike};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext, Position};

use super::matcher::{call_language, FIELD_NAMES};
use super::{LoadError, Resources, Source, EVENTS};
use crate::calls::Call;
use crate::contacts::Contact;

/// Operations one evaluation (a file's top level, one closure call) may run.
pub const MAX_OPERATIONS: u64 = 100_000;
const MAX_CALL_LEVELS: usize = 32;
const MAX_STRING_SIZE: usize = 64 * 1024;
const MAX_ARRAY_SIZE: usize = 10_000;
const MAX_MAP_SIZE: usize = 10_000;
const MAX_MODULES: usize = 32;

/// What functions like `contact()` and `log()` need while a call is decided; handed to Rhai
/// as the evaluation's tag, so nothing global is shared between calls.
pub struct EvalCtx {
    pub resources: Arc<dyn Resources>,
    pub now: NaiveDateTime,
    pub language: Option<String>,
    pub contact_uid: Option<String>,
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// A rule map as `rule()` received it, before it is checked.
pub struct RawRule {
    pub id: String,
    pub map: Map,
    pub file: String,
    pub source: Source,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

pub struct RawHandler {
    pub event: String,
    pub function: FnPtr,
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// What the rule files registered while they ran at compile time.
#[derive(Default)]
pub struct Collector {
    /// `rule()` and friends only work while a rule file's top level runs.
    pub open: bool,
    pub file: String,
    pub source: Option<Source>,
    /// Rules registered in the current file, for automatic ids.
    pub file_rules: usize,
    pub rules: Vec<RawRule>,
    pub handlers: Vec<RawHandler>,
    pub errors: Vec<LoadError>,
}

pub fn lock(collector: &Mutex<Collector>) -> MutexGuard<'_, Collector> {
    collector
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn position_parts(position: Position) -> (Option<usize>, Option<usize>) {
    (position.line(), position.position())
}

/// The nearest of `candidates` to a misspelt `word`, when one is close enough to suggest.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

fn runtime_error(message: String) -> Box<EvalAltResult> {
    message.into()
}

fn eval_ctx<'a>(
    context: &'a NativeCallContext,
) -> Option<impl std::ops::Deref<Target = Arc<EvalCtx>> + 'a> {
    context
        .tag()
        .and_then(|tag| tag.read_lock::<Arc<EvalCtx>>())
}

/// The contact as rules see it (`call.contact`, `contact(number)`).
pub fn contact_map(contact: &Contact) -> Dynamic {
    let mut map = Map::new();
    map.insert("uid".into(), contact.uid.clone().into());
    map.insert("name".into(), contact.name.clone().into());
    map.insert(
        "groups".into(),
        Dynamic::from_array(contact.groups.iter().map(|g| g.clone().into()).collect()),
    );
    map.insert(
        "language".into(),
        contact
            .language
            .clone()
            .map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.insert(
        "numbers".into(),
        Dynamic::from_array(contact.numbers.iter().map(|n| n.clone().into()).collect()),
    );
    Dynamic::from_map(map)
}

fn optional(text: Option<&str>) -> Dynamic {
    text.map_or(Dynamic::UNIT, |text| Dynamic::from(text.to_owned()))
}

/// The call as rule closures see it: read-only fields (`call.peer_number`, `call["did"]`),
/// cheap to hand to each closure (one `Arc`).
#[derive(Clone)]
pub struct RuleCall {
    /// Values in the order of [`CALL_FIELDS`].
    fields: Arc<[Dynamic]>,
}

/// Fields a closure can read: the call fields plus `local_time`.
const CALL_FIELDS: [&str; FIELD_NAMES.len() + 1] = {
    let mut fields = [""; FIELD_NAMES.len() + 1];
    let mut index = 0;
    while index < FIELD_NAMES.len() {
        fields[index] = FIELD_NAMES[index];
        index += 1;
    }
    fields[index] = "local_time";
    fields
};

impl RuleCall {
    pub fn new(call: &Call) -> RuleCall {
        let fields: Vec<Dynamic> = CALL_FIELDS
            .iter()
            .map(|name| field_value(call, name))
            .collect();
        RuleCall {
            fields: fields.into(),
        }
    }

    fn get(&self, name: &str) -> Dynamic {
        CALL_FIELDS
            .iter()
            .position(|field| *field == name)
            .and_then(|index| self.fields.get(index))
            .cloned()
            .unwrap_or(Dynamic::UNIT)
    }
}

fn register_rule_call(engine: &mut Engine) {
    engine.register_type_with_name::<RuleCall>("Call");
    for (index, name) in CALL_FIELDS.iter().enumerate() {
        engine.register_get(name, move |call: &mut RuleCall| {
            call.fields.get(index).cloned().unwrap_or(Dynamic::UNIT)
        });
    }
    engine.register_indexer_get(|call: &mut RuleCall, name: &str| call.get(name));
    engine.register_fn("to_string", |call: &mut RuleCall| {
        let parts: Vec<String> = CALL_FIELDS
            .iter()
            .zip(call.fields.iter())
            .map(|(name, value)| format!("{name}: {value:?}"))
            .collect();
        format!("#{{{}}}", parts.join(", "))
    });
}

/// The call as a plain map (for the dialplan's call, which adds actions to it).
pub fn call_map(call: &Call) -> Map {
    CALL_FIELDS
        .iter()
        .map(|name| ((*name).into(), field_value(call, name)))
        .collect()
}

/// One of [`CALL_FIELDS`] of `call`, as Rhai sees it.
fn field_value(call: &Call, name: &str) -> Dynamic {
    let time = call.local_time;
    match name {
        "uuid" => call.uuid.clone().into(),
        "origin" => call.origin.as_str().into(),
        "peer_number" => call.peer_number.clone().into(),
        "peer_name" => call.peer_name().to_owned().into(),
        "caller_id_number" => call.caller_id_number.clone().into(),
        "caller_id_name" => call.caller_id_name.clone().into(),
        "destination_number" => call.destination_number.clone().into(),
        "did" => optional(call.did.as_deref()),
        "country" => optional(call.country.as_deref()),
        "location" => optional(call.location.as_deref()),
        "contact" => call.contact.as_ref().map_or(Dynamic::UNIT, contact_map),
        "contact_groups" => Dynamic::from_array(
            call.contact
                .iter()
                .flat_map(|contact| contact.groups.iter().map(|g| g.clone().into()))
                .collect(),
        ),
        "language" => optional(call_language(call)),
        "device_count" => Dynamic::from_int(i64::from(call.device_count)),
        "busy" => Dynamic::from_bool(call.busy),
        "do_not_disturb" => Dynamic::from_bool(call.do_not_disturb),
        "state" => call.state.clone().into(),
        "hangup_cause" => optional(call.hangup_cause.as_deref()),
        "time_interval" => Dynamic::from_int(i64::from(time.hour() * 100 + time.minute())),
        "weekday" => weekday_name(time).into(),
        "local_time" => time.format("%Y-%m-%d %H:%M").to_string().into(),
        _ => Dynamic::UNIT,
    }
}

fn weekday_name(time: NaiveDateTime) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [time.weekday().num_days_from_monday() as usize]
}

/// `now()`: the injected clock's local time, as a map rules can read without parsing.
pub fn time_map(time: NaiveDateTime) -> Dynamic {
    let mut map = Map::new();
    map.insert("year".into(), Dynamic::from_int(i64::from(time.year())));
    map.insert("month".into(), Dynamic::from_int(i64::from(time.month())));
    map.insert("day".into(), Dynamic::from_int(i64::from(time.day())));
    map.insert("hour".into(), Dynamic::from_int(i64::from(time.hour())));
    map.insert("minute".into(), Dynamic::from_int(i64::from(time.minute())));
    map.insert(
        "hhmm".into(),
        Dynamic::from_int(i64::from(time.hour() * 100 + time.minute())),
    );
    map.insert("weekday".into(), weekday_name(time).into());
    map.insert(
        "text".into(),
        time.format("%Y-%m-%d %H:%M").to_string().into(),
    );
    Dynamic::from_map(map)
}

/// A sandboxed engine with patchbay's functions; `compile_clock` answers `now()` at compile
/// time, when no call is being decided.
pub fn build(
    collector: Arc<Mutex<Collector>>,
    settings: Dynamic,
    compile_clock: Arc<dyn super::Clock>,
) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_modules(MAX_MODULES)
        .set_max_strings_interned(0);
    engine.disable_symbol("eval");
    // A misspelt variable is a load error that `check` reports, not a failure mid-call.
    engine.set_strict_variables(true);
    // Rules name their first closure parameter `call` (as AwesomeWM rules say `c`), but Rhai
    // reserves the word for `f.call(...)`; as an identifier it still works for that method.
    #[allow(deprecated)]
    engine.on_parse_token(|token, _, _| match token {
        rhai::Token::Reserved(word) if word.as_str() == "call" => rhai::Token::Identifier(word),
        other => other,
    });
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.on_print(|text| tracing::info!(target: "patchbay::rules", "{text}"));
    engine.on_debug(|text, source, position| {
        tracing::debug!(target: "patchbay::rules", "{}:{position}: {text}", source.unwrap_or("rules"))
    });

    let rules = collector.clone();
    engine.register_fn(
        "rule",
        move |context: NativeCallContext, map: Map| -> Result<(), Box<EvalAltResult>> {
            let mut collector = lock(&rules);
            if !collector.open {
                return Err(runtime_error(
                    "rule() only works at the top level of a rule file".into(),
                ));
            }
            let (line, column) = position_parts(context.call_position());
            collector.file_rules += 1;
            let file = collector.file.clone();
            let id = match map.get("id") {
                None => {
                    let stem = file.rsplit('/').next().unwrap_or(&file);
                    let stem = stem.strip_suffix(".rhai").unwrap_or(stem);
                    format!("{stem}#{}", collector.file_rules)
                }
                Some(id) if id.is_string() => id.to_string(),
                Some(other) => {
                    collector.errors.push(LoadError {
                        file,
                        line,
                        column,
                        rule: None,
                        message: format!("id must be a string, found {}", other.type_name()),
                        hint: Some("write id: \"night_filter\"".into()),
                    });
                    return Ok(());
                }
            };
            if let Some(earlier) = collector.rules.iter().find(|rule| rule.id == id) {
                let message = format!(
                    "id '{id}' is already used by a rule in {}{}",
                    earlier.file,
                    earlier.line.map(|l| format!(":{l}")).unwrap_or_default()
                );
                collector.errors.push(LoadError {
                    file,
                    line,
                    column,
                    rule: Some(id.clone()),
                    message,
                    hint: Some(format!(
                        "pick another id, or call remove_rule(\"{id}\") first to replace it"
                    )),
                });
                return Ok(());
            }
            let source = collector.source.unwrap_or(Source::PhoneRepo);
            collector.rules.push(RawRule {
                id,
                map,
                file,
                source,
                line,
                column,
            });
            Ok(())
        },
    );

    let removals = collector.clone();
    engine.register_fn(
        "remove_rule",
        move |context: NativeCallContext, id: &str| -> Result<(), Box<EvalAltResult>> {
            let mut collector = lock(&removals);
            if !collector.open {
                return Err(runtime_error(
                    "remove_rule() only works at the top level of a rule file".into(),
                ));
            }
            if let Some(index) = collector.rules.iter().position(|rule| rule.id == id) {
                collector.rules.remove(index);
                return Ok(());
            }
            let (line, column) = position_parts(context.call_position());
            let hint = nearest(id, collector.rules.iter().map(|rule| rule.id.as_str()))
                .map(|near| format!("did you mean remove_rule(\"{near}\")?"))
                .or_else(|| Some("rules load in lexical order; remove only earlier ones".into()));
            let file = collector.file.clone();
            collector.errors.push(LoadError {
                file,
                line,
                column,
                rule: None,
                message: format!("remove_rule: no earlier rule has id '{id}'"),
                hint,
            });
            Ok(())
        },
    );

    let handlers = collector;
    engine.register_fn(
        "on",
        move |context: NativeCallContext,
              event: &str,
              function: FnPtr|
              -> Result<(), Box<EvalAltResult>> {
            let mut collector = lock(&handlers);
            if !collector.open {
                return Err(runtime_error(
                    "on() only works at the top level of a rule file".into(),
                ));
            }
            let (line, column) = position_parts(context.call_position());
            let file = collector.file.clone();
            if !EVENTS.contains(&event) {
                let hint = nearest(event, EVENTS.iter().copied())
                    .map(|near| format!("did you mean \"{near}\"?"))
                    .or_else(|| Some(format!("known events: {}", EVENTS.join(", "))));
                collector.errors.push(LoadError {
                    file,
                    line,
                    column,
                    rule: None,
                    message: format!("on: unknown event '{event}'"),
                    hint,
                });
                return Ok(());
            }
            collector.handlers.push(RawHandler {
                event: event.to_owned(),
                function,
                file,
                line,
                column,
            });
            Ok(())
        },
    );

    engine.register_fn(
        "greeting",
        |context: NativeCallContext, name: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let ctx = eval_ctx(&context).ok_or_else(|| {
                runtime_error(
                    "greeting() only works while a call is decided (use it in a closure)".into(),
                )
            })?;
            Ok(ctx
                .resources
                .greeting(name, ctx.language.as_deref(), ctx.contact_uid.as_deref())
                .map_or(Dynamic::UNIT, Dynamic::from))
        },
    );
    engine.register_fn(
        "contact",
        |context: NativeCallContext, number: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let ctx = eval_ctx(&context).ok_or_else(|| {
                runtime_error(
                    "contact() only works while a call is decided (use it in a closure)".into(),
                )
            })?;
            Ok(ctx
                .resources
                .contact(number)
                .map_or(Dynamic::UNIT, |contact| contact_map(&contact)))
        },
    );
    engine.register_fn("log", |context: NativeCallContext, message: &str| {
        tracing::info!(target: "patchbay::rules", "{message}");
        if let Some(ctx) = eval_ctx(&context) {
            if let Ok(mut logs) = ctx.logs.lock() {
                logs.push(message.to_owned());
            }
        }
    });
    engine.register_fn("now", move |context: NativeCallContext| {
        match eval_ctx(&context) {
            Some(ctx) => time_map(ctx.now),
            None => time_map(compile_clock.now()),
        }
    });
    engine.register_fn("settings", move || settings.clone());
    register_rule_call(&mut engine);
    super::script::register(&mut engine);
    engine
}
