//! Compiling a snapshot's rule files: run each file once in the sandbox, collect what it
//! registered, and turn every rule map into Rust [`Conditions`] and properties. A rule with a
//! typo or a malformed pattern refuses the whole set, with every error found.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rhai::module_resolvers::StaticModuleResolver;
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, FnPtr, Map, Module, Scope, AST};

use super::engine::{self, lock, nearest, Collector, RawRule};
use super::matcher::{Conditions, Field, RuleValue, FIELD_NAMES};
use super::pattern::Pattern;
use super::value::Value;
use super::{defaults, Clock, LoadError, RuleSettings, Source, SourceFile, SystemClock};

/// Keys a rule map may have.
pub const RULE_KEYS: &[&str] = &[
    "id",
    "rule",
    "rule_any",
    "rule_every",
    "except",
    "except_any",
    "rule_greater",
    "rule_lesser",
    "properties",
    "callback",
    "fallback",
];

/// A closure from a rule file, called through the functions of the file that defined it (so
/// a helper `fn` in one file never replaces a same-named one in another).
pub(super) struct Closure {
    name: String,
    /// Index of the defining file in [`RuleSet::functions`].
    file: usize,
    curry: Vec<Dynamic>,
    /// Parameters after the captured ones: 0, 1 (call) or 2 (call, props).
    arity: usize,
    pub rule: Arc<str>,
    /// What it is for, for error messages ("property voicemail", "callback").
    pub what: String,
}

pub(super) enum Prop {
    Plain(Value),
    Closure(usize),
}

/// One rule, ready to match.
pub(super) struct Entry {
    pub id: Arc<str>,
    pub source: Source,
    pub file: String,
    pub line: Option<usize>,
    pub conditions: Conditions,
    /// (index in [`RuleSet::keys`], value).
    pub properties: Vec<(usize, Prop)>,
    pub callback: Option<usize>,
    pub fallback: bool,
    /// `rule_greater`/`rule_lesser` errors go to the log once per rule, not once per call.
    pub compare_error_logged: AtomicBool,
}

/// All rules of one snapshot, compiled once; cheap to share (`Arc<RuleSet>`) across calls.
pub struct RuleSet {
    pub(super) engine: Engine,
    /// Functions (and closures) of each rule file, in load order.
    pub(super) functions: Vec<AST>,
    pub(super) entries: Vec<Entry>,
    pub(super) closures: Vec<Closure>,
    pub(super) handlers: Vec<(String, usize)>,
    /// Every property name used by some rule; properties refer to it by index, so merging
    /// compares integers, not strings.
    pub(super) keys: Vec<Arc<str>>,
    pub(super) clock: Arc<dyn Clock>,
    warnings: Vec<LoadError>,
    files: usize,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.entries.len())
            .field("handlers", &self.handlers.len())
            .field("files", &self.files)
            .finish()
    }
}

impl Default for RuleSet {
    fn default() -> RuleSet {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock(chrono_tz::UTC));
        let collector = Arc::new(Mutex::new(Collector::default()));
        RuleSet {
            engine: engine::build(collector, Dynamic::from_map(Map::new()), clock.clone()),
            functions: Vec::new(),
            entries: Vec::new(),
            closures: Vec::new(),
            handlers: Vec::new(),
            keys: Vec::new(),
            clock,
            warnings: Vec::new(),
            files: 0,
        }
    }
}

impl Closure {
    pub(super) fn arity_wants_second(&self) -> bool {
        self.arity >= 2
    }

    pub(super) fn call(
        &self,
        rules: &RuleSet,
        tag: &Dynamic,
        call: &Dynamic,
        second: &Dynamic,
    ) -> Result<Dynamic, String> {
        let mut args: Vec<Dynamic> = Vec::with_capacity(self.curry.len() + self.arity);
        args.extend(self.curry.iter().cloned());
        if self.arity >= 1 {
            args.push(call.clone());
        }
        if self.arity >= 2 {
            args.push(second.clone());
        }
        let options = CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true)
            .with_tag(tag.clone());
        rules
            .engine
            .call_fn_with_options::<Dynamic>(
                options,
                &mut Scope::new(),
                &rules.functions[self.file],
                &self.name,
                args,
            )
            .map_err(|error| describe_eval_error(*error))
    }
}

/// Rhai's message, lower case, with a hint for the limits people hit.
pub(super) fn describe_eval_error(mut error: EvalAltResult) -> String {
    let position = error.take_position();
    let budget = matches!(error, EvalAltResult::ErrorTooManyOperations(..));
    let mut message = lower_first(&error.to_string());
    if let (Some(line), Some(column)) = (position.line(), position.position()) {
        message = format!("line {line}:{column}: {message}");
    }
    if budget {
        message.push_str(&format!(
            " (over the budget of {} operations: look for an endless loop)",
            engine::MAX_OPERATIONS
        ));
    }
    message
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Where a rule came from, for its errors.
struct At<'a> {
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    rule: &'a str,
}

impl At<'_> {
    fn error(&self, message: String, hint: Option<String>) -> LoadError {
        LoadError {
            file: self.file.to_owned(),
            line: self.line,
            column: self.column,
            rule: Some(self.rule.to_owned()),
            message,
            hint,
        }
    }
}

fn unknown_key_hint(key: &str, known: &[&str]) -> Option<String> {
    nearest(key, known.iter().copied())
        .map(|near| format!("did you mean {near}?"))
        .or_else(|| Some(format!("expected one of: {}", known.join(", "))))
}

impl RuleSet {
    /// Compiles the files in order (defaults first, then the phone repo's, each in lexical
    /// order). When `files` holds no [`Source::Defaults`] file, patchbay's shipped defaults are
    /// loaded first. Any error refuses the whole set, with every error found.
    pub fn compile(files: &[SourceFile]) -> Result<RuleSet, Vec<LoadError>> {
        RuleSet::compile_with(files, &RuleSettings::default())
    }

    /// [`RuleSet::compile`] with the settings rules read through `settings()`.
    pub fn compile_with(
        files: &[SourceFile],
        settings: &RuleSettings,
    ) -> Result<RuleSet, Vec<LoadError>> {
        if files.iter().any(|file| file.source == Source::Defaults) {
            return RuleSet::compile_only(files, settings);
        }
        let mut all = defaults::files();
        all.extend(files.iter().cloned());
        RuleSet::compile_only(&all, settings)
    }

    /// Compiles exactly `files`, without adding the shipped defaults.
    pub fn compile_only(
        files: &[SourceFile],
        settings: &RuleSettings,
    ) -> Result<RuleSet, Vec<LoadError>> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock(chrono_tz::UTC));
        let mut files: Vec<&SourceFile> = files.iter().collect();
        files.sort_by(|a, b| {
            (a.source != Source::Defaults, &a.path).cmp(&(b.source != Source::Defaults, &b.path))
        });
        let collector = Arc::new(Mutex::new(Collector::default()));
        let mut engine = engine::build(collector.clone(), settings.to_dynamic(), clock.clone());
        let mut errors = Vec::new();

        let (modules, rule_files): (Vec<&SourceFile>, Vec<&SourceFile>) =
            files.into_iter().partition(|file| is_module(&file.path));
        let mut resolver = StaticModuleResolver::new();
        for file in modules {
            let ast = match compile_file(&engine, file) {
                Ok(ast) => ast,
                Err(error) => {
                    errors.push(*error);
                    continue;
                }
            };
            match Module::eval_ast_as_new(Scope::new(), &ast, &engine) {
                Ok(module) => resolver.insert(module_name(&file.path), module),
                Err(error) => errors.push(runtime_load_error(&file.path, *error)),
            }
        }
        engine.set_module_resolver(resolver);

        let mut functions: Vec<AST> = Vec::with_capacity(rule_files.len());
        let mut function_files: Vec<&str> = Vec::with_capacity(rule_files.len());
        for file in &rule_files {
            let ast = match compile_file(&engine, file) {
                Ok(ast) => ast,
                Err(error) => {
                    errors.push(*error);
                    continue;
                }
            };
            {
                let mut collector = lock(&collector);
                collector.open = true;
                collector.file = file.path.clone();
                collector.source = Some(file.source);
                collector.file_rules = 0;
            }
            let outcome = engine.run_ast(&ast);
            lock(&collector).open = false;
            if let Err(error) = outcome {
                errors.push(runtime_load_error(&file.path, *error));
            }
            functions.push(ast.clone_functions_only());
            function_files.push(&file.path);
        }

        let (raw_rules, raw_handlers, collected) = {
            let mut collector = lock(&collector);
            (
                std::mem::take(&mut collector.rules),
                std::mem::take(&mut collector.handlers),
                std::mem::take(&mut collector.errors),
            )
        };
        errors.extend(collected);

        let arities: Vec<HashMap<String, usize>> = functions
            .iter()
            .map(|ast| {
                ast.iter_functions()
                    .map(|function| (function.name.to_owned(), function.params.len()))
                    .collect()
            })
            .collect();
        let mut builder = Builder {
            files: &function_files,
            arities: &arities,
            closures: Vec::new(),
            keys: Vec::new(),
            key_index: HashMap::new(),
            warnings: Vec::new(),
            errors,
        };
        let mut entries = Vec::with_capacity(raw_rules.len());
        for raw in raw_rules {
            if let Some(entry) = builder.entry(raw) {
                entries.push(entry);
            }
        }
        let mut handlers = Vec::new();
        for raw in raw_handlers {
            let label = format!("on(\"{}\")", raw.event);
            let at = At {
                file: &raw.file,
                line: raw.line,
                column: raw.column,
                rule: &label,
            };
            let what = format!("handler for {}", raw.event);
            let rule: Arc<str> = format!("{label} in {}", raw.file).into();
            if let Some(closure) = builder.closure(&at, &raw.function, rule, what) {
                handlers.push((raw.event.clone(), closure));
            }
        }
        if !builder.errors.is_empty() {
            let order = |file: &str| rule_files.iter().position(|f| f.path == file);
            builder
                .errors
                .sort_by_key(|error| (order(&error.file), error.line, error.column));
            return Err(builder.errors);
        }
        Ok(RuleSet {
            engine,
            functions,
            entries,
            closures: builder.closures,
            handlers,
            keys: builder.keys,
            clock,
            warnings: builder.warnings,
            files: rule_files.len(),
        })
    }

    /// Replaces the clock `now()` reads.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> RuleSet {
        self.clock = clock;
        self
    }

    /// Things that compile but are probably not what the person meant (e.g. `-` in a number
    /// pattern).
    pub fn warnings(&self) -> &[LoadError] {
        &self.warnings
    }

    /// Rule ids in the order they apply.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|entry| &*entry.id)
    }

    /// How many rule files (not modules) were compiled.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Where rule `id` was defined, as "file:line".
    pub fn rule_origin(&self, id: &str) -> Option<(Source, String)> {
        self.entries
            .iter()
            .find(|entry| &*entry.id == id)
            .map(|entry| {
                let place = match entry.line {
                    Some(line) => format!("{}:{line}", entry.file),
                    None => entry.file.clone(),
                };
                (entry.source, place)
            })
    }
}

/// Files under `rules/lib/` are modules for `import`, not rule files.
fn is_module(path: &str) -> bool {
    path.split('/').any(|part| part == "lib")
}

/// `rules/lib/util.rhai` is imported as "lib/util".
fn module_name(path: &str) -> String {
    let name = path.strip_prefix("rules/").unwrap_or(path);
    name.strip_suffix(".rhai").unwrap_or(name).to_owned()
}

fn compile_file(engine: &Engine, file: &SourceFile) -> Result<AST, Box<LoadError>> {
    match engine.compile(&file.text) {
        Ok(mut ast) => {
            ast.set_source(file.path.as_str());
            Ok(ast)
        }
        Err(error) => {
            let message = lower_first(&error.0.to_string());
            let hint = parse_hint(&message);
            Err(Box::new(LoadError {
                file: file.path.clone(),
                line: error.1.line(),
                column: error.1.position(),
                rule: None,
                message,
                hint: Some(hint.into()),
            }))
        }
    }
}

fn parse_hint(message: &str) -> &'static str {
    if message.contains("eval") {
        "eval is disabled in rules; call functions directly"
    } else if message.contains("expecting ','") || message.contains("expecting '}'") {
        "a ',' between map entries or a closing '}' is probably missing"
    } else if message.contains("expecting ';'") {
        "end each statement with ';'"
    } else if message.contains("unknown operator") || message.contains("unexpected") {
        "check the syntax near here: maps are #{ key: value }, closures |call, props| ..."
    } else {
        "fix the syntax here; docs/rules.md has an example of every construct"
    }
}

fn runtime_load_error(file: &str, mut error: EvalAltResult) -> LoadError {
    let position = error.take_position();
    let hint = match &error {
        EvalAltResult::ErrorTooManyOperations(..) => {
            "the top level of a rule file ran past its budget: look for an endless loop"
        }
        EvalAltResult::ErrorFunctionNotFound(..) => {
            "the functions rules can call are listed in docs/rules.md"
        }
        EvalAltResult::ErrorModuleNotFound(..) | EvalAltResult::ErrorTooManyModules(..) => {
            "imports come only from rules/lib/ in the phone repo, e.g. import \"lib/util\" as util;"
        }
        _ => "this runs once when the rules load; fix it before committing",
    };
    LoadError {
        file: file.to_owned(),
        line: position.line(),
        column: position.position(),
        rule: None,
        message: lower_first(&error.to_string()),
        hint: Some(hint.into()),
    }
}

struct Builder<'a> {
    files: &'a [&'a str],
    arities: &'a [HashMap<String, usize>],
    closures: Vec<Closure>,
    keys: Vec<Arc<str>>,
    key_index: HashMap<String, usize>,
    warnings: Vec<LoadError>,
    errors: Vec<LoadError>,
}

impl Builder<'_> {
    fn closure(
        &mut self,
        at: &At<'_>,
        function: &FnPtr,
        rule: Arc<str>,
        what: String,
    ) -> Option<usize> {
        let name = function.fn_name();
        let file = self.files.iter().position(|path| *path == at.file);
        let Some((file, params)) =
            file.and_then(|file| Some((file, self.arities[file].get(name)?)))
        else {
            self.errors.push(at.error(
                format!("{what}: '{name}' is not a function defined in the rule files"),
                Some("write a closure, e.g. |call, props| ...".into()),
            ));
            return None;
        };
        let arity = params.saturating_sub(function.curry().len());
        if arity > 2 {
            self.errors.push(at.error(
                format!("{what}: the closure takes {arity} parameters"),
                Some("closures receive (call, props): write |call, props| ...".into()),
            ));
            return None;
        }
        self.closures.push(Closure {
            name: name.to_owned(),
            file,
            curry: function.curry().to_vec(),
            arity,
            rule,
            what,
        });
        Some(self.closures.len() - 1)
    }

    fn entry(&mut self, raw: RawRule) -> Option<Entry> {
        let errors_before = self.errors.len();
        let at = At {
            file: &raw.file,
            line: raw.line,
            column: raw.column,
            rule: &raw.id,
        };
        let id: Arc<str> = raw.id.as_str().into();
        let mut conditions = Conditions::default();
        let mut properties = Vec::new();
        let mut callback = None;
        let mut fallback = false;
        for (key, value) in &raw.map {
            let key = key.as_str();
            match key {
                "id" => {}
                "rule" => conditions.rule = self.single_section(&at, key, value),
                "except" => conditions.except = self.single_section(&at, key, value),
                "rule_any" => conditions.rule_any = self.list_section(&at, key, value),
                "rule_every" => conditions.rule_every = self.list_section(&at, key, value),
                "except_any" => conditions.except_any = self.list_section(&at, key, value),
                "rule_greater" => conditions.rule_greater = self.number_section(&at, key, value),
                "rule_lesser" => conditions.rule_lesser = self.number_section(&at, key, value),
                "properties" => properties = self.properties(&at, &id, value),
                "callback" => match value.clone().try_cast::<FnPtr>() {
                    Some(function) => {
                        callback = self.closure(&at, &function, id.clone(), "callback".into())
                    }
                    None => self.errors.push(at.error(
                        format!("callback must be a closure, found {}", value.type_name()),
                        Some("write callback: |call, props| log(\"...\")".into()),
                    )),
                },
                "fallback" => match value.as_bool() {
                    Ok(flag) => fallback = flag,
                    Err(found) => self.errors.push(at.error(
                        format!("fallback must be true or false, found {found}"),
                        None,
                    )),
                },
                unknown => self.errors.push(at.error(
                    format!("unknown key '{unknown}' in the rule map"),
                    unknown_key_hint(unknown, RULE_KEYS),
                )),
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Entry {
            id,
            source: raw.source,
            file: raw.file,
            line: raw.line,
            conditions,
            properties,
            callback,
            fallback,
            compare_error_logged: AtomicBool::new(false),
        })
    }

    fn section_map<'m>(
        &mut self,
        at: &At<'_>,
        key: &str,
        value: &'m Dynamic,
    ) -> Option<impl std::ops::Deref<Target = Map> + 'm> {
        let map = value.read_lock::<Map>();
        if map.is_none() {
            self.errors.push(at.error(
                format!("{key} must be a map, found {}", value.type_name()),
                Some(format!("write {key}: #{{ origin: \"external\" }}")),
            ));
        }
        map
    }

    fn field(&mut self, at: &At<'_>, section: &str, name: &str) -> Option<Field> {
        let field = Field::parse(name);
        if field.is_none() {
            self.errors.push(at.error(
                format!("unknown call field '{name}' in {section}"),
                unknown_key_hint(name, &FIELD_NAMES),
            ));
        }
        field
    }

    fn single_section(
        &mut self,
        at: &At<'_>,
        key: &str,
        value: &Dynamic,
    ) -> Option<Vec<(Field, RuleValue)>> {
        let map = self.section_map(at, key, value)?;
        let mut tests = Vec::with_capacity(map.len());
        for (name, value) in map.iter() {
            let Some(field) = self.field(at, key, name) else {
                continue;
            };
            if let Some(value) = self.rule_value(at, key, field, value) {
                tests.push((field, value));
            }
        }
        Some(tests)
    }

    fn list_section(
        &mut self,
        at: &At<'_>,
        key: &str,
        value: &Dynamic,
    ) -> Option<Vec<(Field, Vec<RuleValue>)>> {
        let map = self.section_map(at, key, value)?;
        let mut tests = Vec::with_capacity(map.len());
        for (name, value) in map.iter() {
            let Some(field) = self.field(at, key, name) else {
                continue;
            };
            let values: Vec<RuleValue> = match value.read_lock::<rhai::Array>() {
                Some(items) => items
                    .iter()
                    .filter_map(|item| self.rule_value(at, key, field, item))
                    .collect(),
                // A lone value is read as a list of one.
                None => self.rule_value(at, key, field, value).into_iter().collect(),
            };
            tests.push((field, values));
        }
        Some(tests)
    }

    fn number_section(&mut self, at: &At<'_>, key: &str, value: &Dynamic) -> Vec<(Field, f64)> {
        let Some(map) = self.section_map(at, key, value) else {
            return Vec::new();
        };
        let mut tests = Vec::with_capacity(map.len());
        for (name, value) in map.iter() {
            let Some(field) = self.field(at, key, name) else {
                continue;
            };
            if matches!(field, Field::TimeInterval | Field::Weekday) {
                self.errors.push(at.error(
                    format!("{key}: {name} cannot be compared as a number"),
                    Some("use rule: #{ time_interval: #{ begins: 2200, ends: 700 } }".into()),
                ));
                continue;
            }
            let limit = value
                .as_int()
                .map(|n| n as f64)
                .or_else(|_| value.as_float());
            match limit {
                Ok(limit) => tests.push((field, limit)),
                Err(found) => self.errors.push(at.error(
                    format!("{key}.{name} must be a number, found {found}"),
                    Some(format!("write {key}: #{{ {name}: 1 }}")),
                )),
            }
        }
        tests
    }

    fn rule_value(
        &mut self,
        at: &At<'_>,
        section: &str,
        field: Field,
        value: &Dynamic,
    ) -> Option<RuleValue> {
        let name = field.name();
        match field {
            Field::TimeInterval => {
                let parsed = value.read_lock::<Map>().and_then(|map| {
                    let hhmm = |key: &str| {
                        map.get(key)
                            .and_then(|v| v.as_int().ok())
                            .filter(|n| (0..2400).contains(n) && n % 100 < 60)
                            .and_then(|n| u16::try_from(n).ok())
                    };
                    Some((hhmm("begins")?, hhmm("ends")?, map.len()))
                });
                return match parsed {
                    Some((begins, ends, 2)) => Some(RuleValue::Interval { begins, ends }),
                    _ => {
                        self.errors.push(at.error(
                            format!("{section}.time_interval must be #{{ begins: HHMM, ends: HHMM }} with times from 0 to 2359"),
                            Some("write time_interval: #{ begins: 2200, ends: 700 }".into()),
                        ));
                        None
                    }
                };
            }
            Field::Weekday => {
                let names: Vec<String> = match value.read_lock::<rhai::Array>() {
                    Some(items) => items.iter().map(|item| item.to_string()).collect(),
                    None => vec![value.to_string()],
                };
                let mut bits = 0;
                for day in &names {
                    match RuleValue::weekday_bit(day) {
                        Some(bit) => bits |= bit,
                        None => {
                            let hint = nearest(day, RuleValue::weekday_names().iter().copied())
                                .map(|near| format!("did you mean \"{near}\"?"))
                                .or_else(|| {
                                    Some("days are mon, tue, wed, thu, fri, sat, sun".into())
                                });
                            self.errors.push(
                                at.error(format!("{section}.weekday: '{day}' is not a day"), hint),
                            );
                            return None;
                        }
                    }
                }
                return Some(RuleValue::Weekdays(bits));
            }
            _ => {}
        }
        if value.is_unit() {
            Some(RuleValue::Unit)
        } else if let Ok(flag) = value.as_bool() {
            Some(RuleValue::Bool(flag))
        } else if let Ok(number) = value.as_int() {
            Some(RuleValue::Int(number))
        } else if let Ok(number) = value.as_float() {
            Some(RuleValue::Float(number))
        } else if value.is_string() {
            let text = value.to_string();
            match Pattern::new(&text) {
                Ok(pattern) => {
                    if field.holds_number() {
                        self.warn_number_pattern(at, section, name, &text);
                    }
                    Some(RuleValue::Str(pattern))
                }
                Err(error) => {
                    self.errors.push(at.error(
                        format!("{section}.{name}: bad Lua pattern {text:?}: {error}"),
                        Some("escape magic characters with %, e.g. %+ %- %. %(".into()),
                    ));
                    None
                }
            }
        } else if value.is_fnptr() {
            Some(RuleValue::Other("a closure"))
        } else if value.is_array() {
            Some(RuleValue::Other("an array"))
        } else {
            Some(RuleValue::Other("a map"))
        }
    }

    fn warn_number_pattern(&mut self, at: &At<'_>, section: &str, name: &str, text: &str) {
        let body = text.strip_prefix('^').unwrap_or(text);
        let magic = body
            .char_indices()
            .find(|(index, c)| {
                let escaped = *index > 0 && body.as_bytes()[index - 1] == b'%';
                !escaped && (matches!(c, '-' | '.') || (*c == '+' && *index > 0))
            })
            .map(|(_, c)| c);
        if let Some(c) = magic {
            let meaning = match c {
                '-' => "repeats the character before it zero or more times",
                '.' => "matches any character",
                _ => "repeats the character before it",
            };
            self.warnings.push(at.error(
                format!("{section}.{name}: {text:?} contains '{c}', which in a Lua pattern {meaning}"),
                Some(format!("write %{c} to match a literal '{c}', or compare E.164 numbers without separators")),
            ));
        }
    }

    fn key(&mut self, name: &str) -> usize {
        if let Some(index) = self.key_index.get(name) {
            return *index;
        }
        self.keys.push(Arc::from(name));
        self.key_index.insert(name.to_owned(), self.keys.len() - 1);
        self.keys.len() - 1
    }

    fn properties(&mut self, at: &At<'_>, id: &Arc<str>, value: &Dynamic) -> Vec<(usize, Prop)> {
        let Some(map) = self.section_map(at, "properties", value) else {
            return Vec::new();
        };
        let mut properties = Vec::with_capacity(map.len());
        for (key, value) in map.iter() {
            let key = key.as_str();
            if let Some(function) = value.clone().try_cast::<FnPtr>() {
                let what = format!("property {key}");
                if let Some(closure) = self.closure(at, &function, id.clone(), what) {
                    let key = self.key(key);
                    properties.push((key, Prop::Closure(closure)));
                }
                continue;
            }
            let plain = Value::from_dynamic(value);
            let expected = match key {
                "dialplan" => Some("a closure, e.g. |call, props| { call.answer(); }"),
                "decline" | "record" | "answer" => {
                    (!matches!(plain, Value::Bool(_) | Value::Unit)).then_some("true or false")
                }
                "voicemail_delay" => (!matches!(&plain, Value::Int(n) if *n >= 0)
                    && plain != Value::Unit)
                    .then_some("a number of seconds"),
                "bridge_to" => (!match &plain {
                    Value::Str(_) | Value::Unit => true,
                    Value::Array(items) => items.iter().all(|item| item.as_str().is_some()),
                    _ => false,
                })
                .then_some("a device or number, or an array of them"),
                "language" | "did" | "caller_id" | "voicemail" | "country" | "location" => {
                    (!matches!(plain, Value::Str(_) | Value::Unit)).then_some("a string")
                }
                _ => None,
            };
            if let Some(expected) = expected {
                self.errors.push(at.error(
                    format!("property {key} must be {expected}, found {plain}"),
                    None,
                ));
                continue;
            }
            let key = self.key(key);
            properties.push((key, Prop::Plain(plain)));
        }
        properties
    }
}
