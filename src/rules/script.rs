//! The `dialplan` property: a closure that drives one call step by step (`call.answer()`,
//! `call.get_digits(1, 5000)`, ...), used for menus such as `*86`.
//!
//! The call flows implement [`CallScript`]; this file only turns Rhai method calls into calls
//! on it. Rhai values must be `'static`, so the closure runs on a scoped thread and talks to
//! the caller's `&mut dyn CallScript` over channels: the script stays borrowed, nothing is
//! shared between calls, and a panic in the script thread cannot escape.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, Map};

use super::matcher::FIELD_NAMES;

/// A call action that failed (the peer hung up, FreeSWITCH refused, ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub message: String,
}

impl ScriptError {
    pub fn new(message: impl Into<String>) -> ScriptError {
        ScriptError {
            message: message.into(),
        }
    }
}

/// `call.record(#{ max_seconds: 60, beep: true, name: "memo" })`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// Longest recording, in seconds (default 120).
    pub max_seconds: u32,
    /// Play a beep before recording (default true).
    pub beep: bool,
    /// A name for the recording, if the script gives one.
    pub name: Option<String>,
}

impl Default for RecordOptions {
    fn default() -> RecordOptions {
        RecordOptions {
            max_seconds: 120,
            beep: true,
            name: None,
        }
    }
}

/// What a `dialplan` closure can do with a call. Synchronous on purpose: the flows block on
/// each step (the closure runs on its own thread), and a script reads like a phone menu.
pub trait CallScript {
    fn answer(&mut self) -> Result<(), ScriptError>;
    /// Plays a sound file (a greeting name or a path FreeSWITCH knows).
    fn play(&mut self, file: &str) -> Result<(), ScriptError>;
    /// Collects up to `max_digits` DTMF digits, waiting at most `timeout_ms`; "" on timeout.
    fn get_digits(&mut self, max_digits: u32, timeout_ms: u64) -> Result<String, ScriptError>;
    /// Records the caller; returns where the recording went.
    fn record(&mut self, options: &RecordOptions) -> Result<String, ScriptError>;
    fn transfer(&mut self, extension: &str) -> Result<(), ScriptError>;
    fn hangup(&mut self, cause: &str) -> Result<(), ScriptError>;
    /// `*86` menu: plays the voicemails not heard yet; returns how many there were.
    fn play_new_voicemails(&mut self) -> Result<u32, ScriptError>;
    /// `*86` menu: records a new greeting `name` (e.g. "wave_fr.wav") into the phone repo;
    /// returns whether it was kept (a recording under 2 s is discarded).
    fn record_greeting(&mut self, name: &str) -> Result<bool, ScriptError>;
    /// `*86` menu: switches do-not-disturb; returns whether it is now on.
    fn toggle_do_not_disturb(&mut self) -> Result<bool, ScriptError>;
}

enum Request {
    Answer,
    Play(String),
    GetDigits(u32, u64),
    Record(RecordOptions),
    Transfer(String),
    Hangup(String),
    PlayNewVoicemails,
    RecordGreeting(String),
    ToggleDoNotDisturb,
    /// The closure returned (sent even when a copy of the call outlives it).
    Finished,
}

enum Answer {
    Done,
    Text(String),
    Count(u32),
    Flag(bool),
}

/// The `call` a dialplan closure receives: call fields plus the actions.
#[derive(Clone)]
pub struct ScriptCall {
    requests: mpsc::Sender<Request>,
    answers: Arc<Mutex<mpsc::Receiver<Result<Answer, ScriptError>>>>,
    fields: Arc<Map>,
}

impl ScriptCall {
    fn ask(&self, request: Request) -> Result<Answer, Box<EvalAltResult>> {
        self.requests
            .send(request)
            .map_err(|_| Box::<EvalAltResult>::from("the call is gone"))?;
        let answers = self
            .answers
            .lock()
            .map_err(|_| Box::<EvalAltResult>::from("the call is gone"))?;
        match answers.recv() {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(error.message.into()),
            Err(_) => Err("the call is gone".into()),
        }
    }
}

fn text(answer: Answer) -> String {
    match answer {
        Answer::Text(text) => text,
        _ => String::new(),
    }
}

fn record_options(map: &Map) -> Result<RecordOptions, Box<EvalAltResult>> {
    let mut options = RecordOptions::default();
    for (key, value) in map {
        match key.as_str() {
            "max_seconds" => {
                options.max_seconds = value
                    .as_int()
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or("record: max_seconds must be a number of seconds from 1 to 3600")?;
            }
            "beep" => {
                options.beep = value
                    .as_bool()
                    .map_err(|_| "record: beep must be true or false")?;
            }
            "name" => options.name = Some(value.to_string()),
            other => {
                return Err(format!(
                    "record: unknown option '{other}' (expected max_seconds, beep or name)"
                )
                .into())
            }
        }
    }
    Ok(options)
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptCall>("Call");
    for name in FIELD_NAMES.iter().copied().chain(["local_time"]) {
        engine.register_get(name, move |call: &mut ScriptCall| {
            call.fields.get(name).cloned().unwrap_or(Dynamic::UNIT)
        });
    }
    engine.register_fn("answer", |call: &mut ScriptCall| {
        call.ask(Request::Answer).map(|_| ())
    });
    engine.register_fn("play", |call: &mut ScriptCall, file: &str| {
        call.ask(Request::Play(file.to_owned())).map(|_| ())
    });
    engine.register_fn(
        "get_digits",
        |call: &mut ScriptCall, max: i64, timeout_ms: i64| -> Result<String, Box<EvalAltResult>> {
            let max = u32::try_from(max)
                .ok()
                .filter(|n| (1..=32).contains(n))
                .ok_or("get_digits: the digit count must be from 1 to 32")?;
            let timeout = u64::try_from(timeout_ms)
                .ok()
                .filter(|ms| *ms <= 600_000)
                .ok_or("get_digits: the timeout must be 0 to 600000 milliseconds")?;
            call.ask(Request::GetDigits(max, timeout)).map(text)
        },
    );
    engine.register_fn(
        "record",
        |call: &mut ScriptCall, options: Map| -> Result<String, Box<EvalAltResult>> {
            let options = record_options(&options)?;
            call.ask(Request::Record(options)).map(text)
        },
    );
    engine.register_fn("transfer", |call: &mut ScriptCall, extension: &str| {
        call.ask(Request::Transfer(extension.to_owned()))
            .map(|_| ())
    });
    engine.register_fn("hangup", |call: &mut ScriptCall, cause: &str| {
        call.ask(Request::Hangup(cause.to_owned())).map(|_| ())
    });
    engine.register_fn("hangup", |call: &mut ScriptCall| {
        call.ask(Request::Hangup("NORMAL_CLEARING".into()))
            .map(|_| ())
    });
    engine.register_fn("play_new_voicemails", |call: &mut ScriptCall| {
        call.ask(Request::PlayNewVoicemails)
            .map(|answer| match answer {
                Answer::Count(count) => i64::from(count),
                _ => 0,
            })
    });
    engine.register_fn("record_greeting", |call: &mut ScriptCall, name: &str| {
        call.ask(Request::RecordGreeting(name.to_owned()))
            .map(|answer| matches!(answer, Answer::Flag(true)))
    });
    engine.register_fn("toggle_do_not_disturb", |call: &mut ScriptCall| {
        call.ask(Request::ToggleDoNotDisturb)
            .map(|answer| matches!(answer, Answer::Flag(true)))
    });
}

fn perform(script: &mut dyn CallScript, request: Request) -> Result<Answer, ScriptError> {
    Ok(match request {
        Request::Answer => script.answer().map(|()| Answer::Done)?,
        Request::Play(file) => script.play(&file).map(|()| Answer::Done)?,
        Request::GetDigits(max, timeout) => Answer::Text(script.get_digits(max, timeout)?),
        Request::Record(options) => Answer::Text(script.record(&options)?),
        Request::Transfer(extension) => script.transfer(&extension).map(|()| Answer::Done)?,
        Request::Hangup(cause) => script.hangup(&cause).map(|()| Answer::Done)?,
        Request::PlayNewVoicemails => Answer::Count(script.play_new_voicemails()?),
        Request::RecordGreeting(name) => Answer::Flag(script.record_greeting(&name)?),
        Request::ToggleDoNotDisturb => Answer::Flag(script.toggle_do_not_disturb()?),
        Request::Finished => Answer::Done,
    })
}

/// Runs `evaluate` (which calls the dialplan closure with the `Dynamic` call it is given) on a
/// scoped thread, serving its requests with `script` on this one.
pub(super) fn drive<F>(fields: Map, script: &mut dyn CallScript, evaluate: F) -> Result<(), String>
where
    F: FnOnce(Dynamic) -> Result<(), String> + Send,
{
    let (request_tx, request_rx) = mpsc::channel::<Request>();
    let (answer_tx, answer_rx) = mpsc::channel();
    let call = ScriptCall {
        requests: request_tx,
        answers: Arc::new(Mutex::new(answer_rx)),
        fields: Arc::new(fields),
    };
    std::thread::scope(|scope| {
        let finished = call.requests.clone();
        let worker = scope.spawn(move || {
            let result = evaluate(Dynamic::from(call));
            let _ = finished.send(Request::Finished);
            result
        });
        for request in request_rx {
            if matches!(request, Request::Finished) {
                break;
            }
            if answer_tx.send(perform(script, request)).is_err() {
                break;
            }
        }
        worker
            .join()
            .unwrap_or_else(|_| Err("the dialplan stopped unexpectedly".into()))
    })
}
