//! Scenario files (TOML): the devices that register, the gateways and how their registrar
//! behaves, and the inbound calls to place. Times are in seconds and are scaled by the
//! simulator's time factor.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;

/// What a device does when it rings.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Behaviour {
    /// Answers after `answer_after` seconds.
    #[default]
    Answer,
    /// Rings until cancelled.
    NoAnswer,
    /// Rejects with USER_BUSY.
    Busy,
    /// Is not registered: the leg fails with USER_NOT_REGISTERED.
    Unregistered,
}

/// A SIP phone registered on the internal profile.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub extension: String,
    /// The password the phone sends in its REGISTER (checked against the directory).
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Seconds of ringing before it answers.
    #[serde(default = "default_answer_after")]
    pub answer_after: f64,
    /// Seconds after answering when the device hangs up (never when absent).
    #[serde(default)]
    pub hangup_after: Option<f64>,
    /// Register at start (through the xml endpoint when one is configured).
    #[serde(default = "yes")]
    pub register: bool,
    /// Seconds after answering when the device's media stops (wifi gone, phone vanished):
    /// FreeSWITCH ends its leg with `drop_cause`. Happens on the first answered call only.
    #[serde(default)]
    pub drop_after: Option<f64>,
    /// The hangup cause FreeSWITCH gives the dropped leg (default MEDIA_TIMEOUT, what the RTP
    /// timeout reports; NORMAL_TEMPORARY_FAILURE, RECOVERY_ON_TIMER_EXPIRE also occur).
    #[serde(default)]
    pub drop_cause: Option<String>,
    /// How the device behaves on later rings once it has dropped a call (default: as before).
    #[serde(default)]
    pub after_drop: Option<Behaviour>,
    /// DTMF the device's user presses `press_after` seconds into an answered call, such as a
    /// transfer feature code (`*11001#`). Pressed on the first answered call only.
    #[serde(default)]
    pub press: Option<String>,
    #[serde(default)]
    pub press_after: Option<f64>,
    /// The target of a blind transfer the device makes by SIP REFER `refer_after` seconds
    /// into an answered call (`1001`, `+33612345678`). On the first answered call only.
    #[serde(default)]
    pub refer_to: Option<String>,
    #[serde(default)]
    pub refer_after: Option<f64>,
}

impl Device {
    /// A registered device with the given behaviour and no mid-call acts.
    pub fn new(extension: &str, password: &str, behaviour: Behaviour) -> Device {
        Device {
            extension: extension.to_owned(),
            password: password.to_owned(),
            behaviour,
            answer_after: default_answer_after(),
            hangup_after: None,
            register: true,
            drop_after: None,
            drop_cause: None,
            after_drop: None,
            press: None,
            press_after: None,
            refer_to: None,
            refer_after: None,
        }
    }
}

/// How a gateway's registrar answers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Registrar {
    /// 200 OK to every REGISTER.
    #[default]
    Ok,
    /// Answers 503 (as sofia does for an ICMP port-unreachable).
    Fail,
    /// Never answers.
    Timeout,
    /// register=false: the gateway stays NOREG.
    Noreg,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: String,
    #[serde(default)]
    pub registrar: Registrar,
    #[serde(default = "default_proxy")]
    pub proxy: String,
    #[serde(default = "default_expire")]
    pub expire_seconds: f64,
    #[serde(default = "default_retry")]
    pub retry_seconds: f64,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// How many failure cycles to run before stopping (keeps tests finite).
    #[serde(default = "default_cycles")]
    pub max_cycles: u32,
}

/// An inbound call from the PSTN to one of the DIDs.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The caller's number.
    pub from: String,
    #[serde(default)]
    pub caller_name: String,
    /// The number dialled: a DID for calls from the PSTN.
    pub to: String,
    /// Dialplan context: `public` (a call from a carrier, the default) or `default` (a
    /// registered device calling out; `from` is then its extension).
    #[serde(default)]
    pub context: Option<String>,
    /// The gateway the call comes in on.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Seconds after start.
    #[serde(default)]
    pub at: f64,
    /// Seconds after the call starts when the caller hangs up (never when absent).
    #[serde(default)]
    pub hangup_after: Option<f64>,
    /// Digits the caller presses when asked (read / play_and_get_digits).
    #[serde(default)]
    pub dtmf: String,
    /// WAV clip the caller "speaks" (recorded by `record`); silence when absent.
    #[serde(default)]
    pub audio: Option<PathBuf>,
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default, rename = "device")]
    pub devices: Vec<Device>,
    #[serde(default, rename = "gateway")]
    pub gateways: Vec<Gateway>,
    #[serde(default, rename = "call")]
    pub calls: Vec<Call>,
}

fn yes() -> bool {
    true
}
fn default_answer_after() -> f64 {
    1.0
}
fn default_proxy() -> String {
    "127.0.0.1:5090".into()
}
fn default_expire() -> f64 {
    30.0
}
fn default_retry() -> f64 {
    30.0
}
fn default_timeout() -> f64 {
    60.0
}
fn default_cycles() -> u32 {
    3
}

impl Scenario {
    /// Parses scenario TOML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, Error> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| Error::Scenario {
            path: origin.to_owned(),
            message: format!("{}: {}", err.path(), err.inner().message()),
        })
    }

    /// Reads a scenario file; relative audio paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| Error::Scenario {
            path: origin.clone(),
            message: format!("cannot read the scenario: {err}"),
        })?;
        let mut scenario = Self::parse(&text, &origin)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for call in &mut scenario.calls {
            if let Some(audio) = &call.audio {
                if audio.is_relative() {
                    call.audio = Some(base.join(audio));
                }
            }
        }
        Ok(scenario)
    }

    pub fn device(&self, extension: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.extension == extension)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_gateways_calls_with_defaults() {
        let text = r#"
            [[device]]
            extension = "1000"
            password = "secret1000"
            answer_after = 2.5

            [[device]]
            extension = "1001"
            behaviour = "no_answer"

            [[gateway]]
            name = "did1"
            registrar = "timeout"
            timeout_seconds = 6

            [[call]]
            from = "+41441234567"
            to = "+33123456789"
            hangup_after = 20
            dtmf = "1"
        "#;
        let scenario = Scenario::parse(text, "demo.toml").unwrap();
        assert_eq!(scenario.devices.len(), 2);
        assert_eq!(
            scenario.device("1001").unwrap().behaviour,
            Behaviour::NoAnswer
        );
        assert_eq!(scenario.device("1000").unwrap().answer_after, 2.5);
        assert_eq!(scenario.gateways[0].registrar, Registrar::Timeout);
        assert_eq!(scenario.gateways[0].retry_seconds, 30.0);
        assert_eq!(scenario.calls[0].hangup_after, Some(20.0));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = Scenario::parse(
            "[[device]]\nextension = \"1\"\nbehaviour = \"sings\"\n",
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml: device[0].behaviour"), "{err}");
    }
}
