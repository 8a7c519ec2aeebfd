//! Every ESL command patchbay sends, typed, and the one place that turns them into wire text.
//!
//! Both links write [`Command::to_wire`] bytes and nothing else; there are no command
//! literals anywhere outside this file.
//! Invariant: a caller-supplied value holding CR or LF never reaches the wire, because one
//! line break is enough to smuggle a second command into the socket.

use std::fmt::Write as _;

use crate::settings::Secret;

/// A command that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value would break the line framing.
    #[error("esl command {command}: {field} holds a line break (CR or LF); refused so it cannot inject a second command")]
    LineBreak {
        command: &'static str,
        field: &'static str,
    },
    /// A value that must be one word holds a space or is empty.
    #[error("esl command {command}: {field} must be one non-empty word")]
    NotAWord {
        command: &'static str,
        field: &'static str,
    },
    /// A value holds dial-string syntax (`,` `|` `{` `}` `[` `]` `'`).
    #[error("esl command bridge: a {field} holds dial-string syntax (, | {{ }} [ ] '); refused so it cannot add or change legs")]
    DialSyntax { field: &'static str },
}

/// Event encoding asked of FreeSWITCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Json => "json",
        }
    }
}

/// Run a dialplan application on a channel (`sendmsg` with `call-command: execute`).
///
/// `event_uuid` comes back as `Application-UUID` on CHANNEL_EXECUTE(_COMPLETE), the only way to
/// tell this app's completion from any other's; `event-lock` keeps queued apps from running
/// nested inside this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    pub uuid: &'a str,
    pub app: &'a str,
    pub arg: Option<&'a str>,
    pub event_uuid: &'a str,
}

/// One ESL command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Log in to the inbound event socket (the password only ever goes on the wire).
    Auth {
        password: &'a Secret,
    },
    /// First command on an outbound socket; the reply carries the channel data.
    Connect,
    /// Subscribe an outbound socket to its own channel's events (`None` = FreeSWITCH's
    /// default, plain).
    MyEvents {
        format: Option<Format>,
    },
    /// Keep an outbound socket open after hangup for `seconds` (`None` = until `exit`).
    Linger {
        seconds: Option<u32>,
    },
    Exit,
    /// Subscribe to events: `event <format> EV1 EV2 [CUSTOM sub1 sub2]`.
    Event {
        format: Format,
        events: &'a [&'a str],
        custom: &'a [&'a str],
    },
    /// Synchronous API command (blocks event delivery until it finishes).
    Api {
        command: &'a str,
        args: &'a str,
    },
    /// Background API command; the result comes as a BACKGROUND_JOB event.
    BgApi {
        command: &'a str,
        args: &'a str,
    },
    Execute(Execute<'a>),
    /// Hang a channel up (`sendmsg` with `call-command: hangup`).
    Hangup {
        uuid: &'a str,
        cause: &'a str,
    },
}

impl Command<'_> {
    /// The command's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Auth { .. } => "auth",
            Command::Connect => "connect",
            Command::MyEvents { .. } => "myevents",
            Command::Linger { .. } => "linger",
            Command::Exit => "exit",
            Command::Event { .. } => "event",
            Command::Api { .. } => "api",
            Command::BgApi { .. } => "bgapi",
            Command::Execute(_) => "sendmsg execute",
            Command::Hangup { .. } => "sendmsg hangup",
        }
    }

    /// Append the command's exact wire bytes (ending with the empty line) to `out`.
    pub fn write_wire(&self, out: &mut String) -> Result<(), Error> {
        let command = self.name();
        match *self {
            Command::Auth { password } => {
                line(command, "password", password.expose())?;
                out.push_str("auth ");
                out.push_str(password.expose());
                out.push_str("\n\n");
            }
            Command::Connect => out.push_str("connect\n\n"),
            Command::MyEvents { format } => {
                out.push_str("myevents");
                if let Some(format) = format {
                    out.push(' ');
                    out.push_str(format.as_str());
                }
                out.push_str("\n\n");
            }
            Command::Linger { seconds } => match seconds {
                Some(seconds) => {
                    let _ = write!(out, "linger {seconds}\n\n");
                }
                None => out.push_str("linger\n\n"),
            },
            Command::Exit => out.push_str("exit\n\n"),
            Command::Event {
                format,
                events,
                custom,
            } => {
                out.push_str("event ");
                out.push_str(format.as_str());
                out.push_str(&event_list(events, custom)?);
                out.push_str("\n\n");
            }
            Command::Api { command: api, args } => {
                out.push_str("api ");
                out.push_str(&api_line(command, api, args)?);
                out.push_str("\n\n");
            }
            Command::BgApi { command: api, args } => {
                out.push_str("bgapi ");
                out.push_str(&api_line(command, api, args)?);
                out.push_str("\n\n");
            }
            Command::Execute(execute) => {
                word(command, "uuid", execute.uuid)?;
                word(command, "application name", execute.app)?;
                word(command, "Event-UUID", execute.event_uuid)?;
                out.push_str("sendmsg ");
                out.push_str(execute.uuid);
                out.push_str("\ncall-command: execute\nexecute-app-name: ");
                out.push_str(execute.app);
                if let Some(arg) = execute.arg {
                    line(command, "application argument", arg)?;
                    out.push_str("\nexecute-app-arg: ");
                    out.push_str(arg);
                }
                out.push_str("\nevent-lock: true\nEvent-UUID: ");
                out.push_str(execute.event_uuid);
                out.push_str("\n\n");
            }
            Command::Hangup { uuid, cause } => {
                word(command, "uuid", uuid)?;
                word(command, "hangup cause", cause)?;
                out.push_str("sendmsg ");
                out.push_str(uuid);
                out.push_str("\ncall-command: hangup\nhangup-cause: ");
                out.push_str(cause);
                out.push_str("\n\n");
            }
        }
        Ok(())
    }

    /// The command's exact wire bytes.
    pub fn to_wire(&self) -> Result<String, Error> {
        let mut out = String::with_capacity(128);
        self.write_wire(&mut out)?;
        Ok(out)
    }
}

/// The argument of `bridge`: `{var=value,...}[leg_timeout=N]ep1,[leg_timeout=N]ep2`, every
/// endpoint ringing at once (first answer wins).
///
/// Dial-string syntax characters inside a value would change which phones ring, so endpoints
/// and variables holding them are refused rather than escaped.
/// `name=value` of a dial string's `{}` or `[]` group; nothing that could end the group or
/// start another endpoint gets in.
fn push_variable(dial: &mut String, name: &str, value: &str) -> Result<(), Error> {
    const COMMAND: &str = "bridge";
    word(COMMAND, "variable name", name)?;
    line(COMMAND, "variable value", value)?;
    if name.contains('=') || name.contains(DIAL_SYNTAX) || value.contains(DIAL_SYNTAX) {
        return Err(Error::DialSyntax { field: "variable" });
    }
    dial.push_str(name);
    dial.push('=');
    dial.push_str(value);
    Ok(())
}

/// Characters with a meaning in a dial string.
const DIAL_SYNTAX: [char; 7] = [',', '|', '{', '}', '[', ']', '\''];

pub fn bridge_dial_string(
    endpoints: &[String],
    leg_timeout_secs: u64,
    variables: &[(String, String)],
    leg_variables: &[Vec<(String, String)>],
) -> Result<String, Error> {
    const COMMAND: &str = "bridge";
    if endpoints.is_empty() {
        return Err(Error::NotAWord {
            command: COMMAND,
            field: "endpoint list",
        });
    }
    let mut dial = String::with_capacity(64 * endpoints.len());
    if !variables.is_empty() {
        dial.push('{');
        for (index, (name, value)) in variables.iter().enumerate() {
            if index > 0 {
                dial.push(',');
            }
            push_variable(&mut dial, name, value)?;
        }
        dial.push('}');
    }
    for (index, endpoint) in endpoints.iter().enumerate() {
        word(COMMAND, "endpoint", endpoint)?;
        if endpoint.contains(DIAL_SYNTAX) {
            return Err(Error::DialSyntax { field: "endpoint" });
        }
        if index > 0 {
            dial.push(',');
        }
        let _ = write!(dial, "[leg_timeout={leg_timeout_secs}");
        for (name, value) in leg_variables.get(index).into_iter().flatten() {
            dial.push(',');
            push_variable(&mut dial, name, value)?;
        }
        dial.push(']');
        dial.push_str(endpoint);
    }
    Ok(dial)
}

/// The argument of `record`: `<path> <max_s> [<threshold> <silence_s>]`.
pub fn record_arg(path: &str, max_secs: u64, silence: Option<(u32, u64)>) -> Result<String, Error> {
    word("record", "path", path)?;
    Ok(match silence {
        Some((threshold, silence_secs)) => {
            format!("{path} {max_secs} {threshold} {silence_secs}")
        }
        None => format!("{path} {max_secs}"),
    })
}

/// The argument of `record_session` and `stop_record_session`: the path, one word.
pub fn record_session_arg(command: &'static str, path: &str) -> Result<String, Error> {
    word(command, "path", path)?;
    Ok(path.to_owned())
}

/// The argument of `play_and_get_digits` (one try; the digits land in `variable`).
pub fn digits_arg(
    min: u32,
    max: u32,
    timeout_ms: u64,
    terminators: &str,
    prompt: Option<&str>,
    variable: &str,
) -> Result<String, Error> {
    const COMMAND: &str = "play_and_get_digits";
    let terminators = if terminators.is_empty() {
        "none"
    } else {
        terminators
    };
    word(COMMAND, "terminators", terminators)?;
    let prompt = prompt.unwrap_or("silence_stream://250");
    word(COMMAND, "prompt", prompt)?;
    word(COMMAND, "variable", variable)?;
    let regex = if max <= 1 { "\\d" } else { "\\d+" };
    Ok(format!(
        "{min} {max} 1 {timeout_ms} {terminators} {prompt} silence_stream://250 {variable} {regex}"
    ))
}

/// ` EV1 EV2 CUSTOM sub1 sub2`, with a leading space.
fn event_list(events: &[&str], custom: &[&str]) -> Result<String, Error> {
    let mut list = String::with_capacity(64);
    for event in events {
        word("event", "event name", event)?;
        list.push(' ');
        list.push_str(event);
    }
    if !custom.is_empty() {
        list.push_str(" CUSTOM");
        for subclass in custom {
            word("event", "CUSTOM subclass", subclass)?;
            list.push(' ');
            list.push_str(subclass);
        }
    }
    if list.is_empty() {
        return Err(Error::NotAWord {
            command: "event",
            field: "event list",
        });
    }
    Ok(list)
}

fn api_line(command: &'static str, api: &str, args: &str) -> Result<String, Error> {
    word(command, "api command", api)?;
    line(command, "api arguments", args)?;
    if args.is_empty() {
        Ok(api.to_owned())
    } else {
        Ok(format!("{api} {args}"))
    }
}

fn line(command: &'static str, field: &'static str, value: &str) -> Result<(), Error> {
    if value.contains(['\r', '\n']) {
        return Err(Error::LineBreak { command, field });
    }
    Ok(())
}

fn word(command: &'static str, field: &'static str, value: &str) -> Result<(), Error> {
    line(command, field, value)?;
    if value.is_empty() || value.contains([' ', '\t']) {
        return Err(Error::NotAWord { command, field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_matches_the_captured_bytes() {
        let wire = Command::Execute(Execute {
            uuid: "9c0c00d4-d204-4b56-8ef5-02cd1eacdedd",
            app: "playback",
            arg: Some("tone_stream://%(1000,0,440)"),
            event_uuid: "5418308f-184d-4422-8151-ff408085dff7",
        })
        .to_wire()
        .unwrap();
        assert_eq!(
            wire,
            "sendmsg 9c0c00d4-d204-4b56-8ef5-02cd1eacdedd\ncall-command: execute\n\
             execute-app-name: playback\nexecute-app-arg: tone_stream://%(1000,0,440)\n\
             event-lock: true\nEvent-UUID: 5418308f-184d-4422-8151-ff408085dff7\n\n"
        );
    }

    #[test]
    fn line_breaks_in_caller_values_are_refused() {
        let sneaky = "/tmp/a.wav\n\napi hupall";
        let error = Command::Execute(Execute {
            uuid: "u",
            app: "playback",
            arg: Some(sneaky),
            event_uuid: "e",
        })
        .to_wire()
        .unwrap_err();
        assert!(matches!(error, Error::LineBreak { .. }), "{error}");
        assert!(Command::BgApi {
            command: "originate",
            args: "a\rb"
        }
        .to_wire()
        .is_err());
        assert!(Command::Hangup {
            uuid: "u",
            cause: "NORMAL_CLEARING\n"
        }
        .to_wire()
        .is_err());
        assert!(Command::Event {
            format: Format::Json,
            events: &["HEARTBEAT\nexit"],
            custom: &[]
        }
        .to_wire()
        .is_err());
    }

    #[test]
    fn event_subscription_lists_custom_subclasses_last() {
        let wire = Command::Event {
            format: Format::Json,
            events: &["HEARTBEAT", "BACKGROUND_JOB"],
            custom: &["sofia::register", "sofia::gateway_state"],
        }
        .to_wire()
        .unwrap();
        assert_eq!(
            wire,
            "event json HEARTBEAT BACKGROUND_JOB CUSTOM sofia::register sofia::gateway_state\n\n"
        );
    }

    #[test]
    fn dial_strings_and_app_arguments() {
        let endpoints = vec![
            "user/1000@example.com".to_owned(),
            "user/1001@example.com".to_owned(),
        ];
        assert_eq!(
            bridge_dial_string(&endpoints, 20, &[("ignore_early_media".into(), "true".into())], &[])
                .unwrap(),
            "{ignore_early_media=true}[leg_timeout=20]user/1000@example.com,[leg_timeout=20]user/1001@example.com"
        );
        let sneaky = vec!["user/1000@example.com,sofia/gateway/premium/1900".to_owned()];
        assert!(bridge_dial_string(&sneaky, 20, &[], &[]).is_err());
        assert!(bridge_dial_string(&endpoints, 20, &[("a".into(), "b}c".into())], &[]).is_err());
        // A leg's own variables go in its [] group, checked the same way.
        let cell = vec![vec![(
            "origination_caller_id_number".to_owned(),
            "41441234567".to_owned(),
        )]];
        assert_eq!(
            bridge_dial_string(&endpoints[..1], 20, &[], &cell).unwrap(),
            format!(
                "[leg_timeout=20,origination_caller_id_number=41441234567]{}",
                endpoints[0]
            )
        );
        let forged = vec![vec![("x".to_owned(), "1]sofia/gateway/evil/1".to_owned())]];
        assert!(bridge_dial_string(&endpoints, 20, &[], &forged).is_err());
        assert_eq!(
            record_arg("/r/vm.wav", 5, Some((200, 2))).unwrap(),
            "/r/vm.wav 5 200 2"
        );
        assert_eq!(
            digits_arg(
                1,
                1,
                15000,
                "#",
                Some("tone_stream://%(200,0,800)"),
                "fixture_digit"
            )
            .unwrap(),
            "1 1 1 15000 # tone_stream://%(200,0,800) silence_stream://250 fixture_digit \\d"
        );
    }

    #[test]
    fn simple_commands() {
        assert_eq!(Command::Connect.to_wire().unwrap(), "connect\n\n");
        assert_eq!(
            Command::MyEvents { format: None }.to_wire().unwrap(),
            "myevents\n\n"
        );
        assert_eq!(
            Command::Linger { seconds: Some(5) }.to_wire().unwrap(),
            "linger 5\n\n"
        );
        assert_eq!(
            Command::Hangup {
                uuid: "u1",
                cause: "NORMAL_CLEARING"
            }
            .to_wire()
            .unwrap(),
            "sendmsg u1\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
        );
    }
}
