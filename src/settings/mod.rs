//! The settings file: secrets and servers, kept outside git, validated with clear errors.
//!
//! Owns parsing (JSON with `//` and `/* */` comments, the seed's `settings.json` as written),
//! the defaults and the checks that run before anything starts. Other modules receive a loaded
//! [`Settings`] and embed their own sections (`repo`, `email`, `calendar`, `stt`, `spool`).
//! Invariant: a [`Settings`] value has passed validation, and no secret it holds ever appears
//! in an error, a warning or a `Debug` print (they are [`Secret`]s).

mod error;
mod keys;
mod secret;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

pub use error::Error;
pub use secret::Secret;

use crate::calendar::CalendarSettings;
use crate::contacts::number::Region;
use crate::notify::EmailSettings;
use crate::repo::RepoSettings;
use crate::spool::SpoolSettings;
use crate::voicemail::SttSettings;
use keys::{field_names, Shape};

/// The first device extension; devices are 1000, 1001, ... as in the seed.
pub const FIRST_EXTENSION: u32 = 1000;
/// More devices than this is a typo, not one person's phones.
pub const MAX_DEVICES: u32 = 500;

/// The whole settings file, validated.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// How many devices (directory users 1000, 1001, ...) when `freeswitch.devices` is absent.
    #[serde(default = "defaults::device_count")]
    pub device_count: u32,
    /// Device passwords are this followed by the extension ("password1000"), as in the seed.
    pub device_password: Secret,
    /// Seconds the devices ring before voicemail answers.
    #[serde(default = "defaults::voicemail_delay")]
    pub voicemail_delay: u32,
    /// Seconds the devices ring again when an answered call drops on the device's side
    /// (media timeout, network failure) while the caller is still there; 0 turns it off.
    #[serde(default = "defaults::reoffer_seconds")]
    pub reoffer_seconds: u32,
    /// Role -> address ("owner" -> "me@example.com"); who receives which mail.
    #[serde(default)]
    pub emails: BTreeMap<String, String>,
    /// Language code -> caller ID name shown on outgoing calls ("EN" -> "John Doe").
    #[serde(default)]
    pub caller_id: BTreeMap<String, String>,
    /// The phone numbers (SIP accounts at a provider), one gateway each.
    #[serde(default)]
    pub dids: Vec<Did>,
    /// The link to FreeSWITCH and the SIP profiles patchbay generates for it.
    #[serde(default)]
    pub freeswitch: FreeswitchSettings,
    /// Local time for rules, the journal and calendar events (IANA name).
    #[serde(default = "defaults::timezone", deserialize_with = "parse_timezone")]
    pub timezone: Tz,
    /// Region for numbers written without a country code (ISO 3166 code, e.g. "CA").
    #[serde(default = "defaults::region", deserialize_with = "parse_region")]
    pub default_region: Region,
    /// Where FreeSWITCH writes recordings and patchbay reads them (a shared volume).
    #[serde(default = "defaults::recordings_dir")]
    pub recordings_dir: PathBuf,
    /// Where patchbay exports greetings for FreeSWITCH to play (a shared volume).
    #[serde(default = "defaults::greetings_dir")]
    pub greetings_dir: PathBuf,
    /// The readable log for the person.
    #[serde(default = "defaults::journal")]
    pub journal: PathBuf,
    #[serde(default)]
    pub repo: RepoSettings,
    #[serde(default)]
    pub email: EmailSettings,
    #[serde(default)]
    pub calendar: CalendarSettings,
    #[serde(default)]
    pub stt: SttSettings,
    #[serde(default)]
    pub spool: SpoolSettings,
    /// Soft problems found while loading (unknown keys); the file loaded anyway.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// One phone number: a SIP account at a provider, registered as a sofia gateway.
#[derive(Clone, Debug, Deserialize)]
pub struct Did {
    /// The gateway's name in FreeSWITCH (letters, digits, `_`, `-`, `.`).
    pub gateway_name: String,
    /// The number as the provider writes it.
    pub pstn_number: String,
    pub username: String,
    pub password: Secret,
    /// Where REGISTER and calls go (host or host:port).
    pub proxy: String,
    pub realm: String,
    /// Sent as the gateway's from-domain.
    pub domain: String,
    /// ISO code of the number's country (for picking the DID by destination).
    #[serde(default)]
    pub country: Option<String>,
    /// Language code of this number's caller ID (a key of `caller_id`).
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default = "defaults::yes")]
    pub register: bool,
    /// Short, so a NAT keeps the mapping open (the seed's advice).
    #[serde(default = "defaults::expire_seconds")]
    pub expire_seconds: u32,
    /// OPTIONS ping interval in seconds; 0 turns pinging off.
    #[serde(default = "defaults::ping")]
    pub ping: u32,
    #[serde(default = "defaults::retry_seconds")]
    pub retry_seconds: u32,
    #[serde(default = "defaults::yes")]
    pub caller_id_in_from: bool,
}

/// The `freeswitch` section: the three links and the SIP profiles.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct FreeswitchSettings {
    pub esl: EslSettings,
    pub xml: XmlSettings,
    pub outbound: OutboundSettings,
    /// The directory domain devices register to; `None` answers any domain FreeSWITCH asks.
    pub sip_domain: Option<String>,
    /// The profile devices register on.
    #[serde(deserialize_with = "parse_internal_profile")]
    pub internal: ProfileSettings,
    /// The profile gateways (DIDs) use.
    #[serde(deserialize_with = "parse_external_profile")]
    pub external: ProfileSettings,
    /// SIPS (TLS) on both profiles; needs certificates in FreeSWITCH's tls folder.
    pub tls: bool,
    /// Codec preference order for both profiles.
    pub codecs: Vec<String>,
    /// Devices with names and codecs; replaces `device_count` when present.
    pub devices: Option<Vec<DeviceSettings>>,
}

/// Inbound ESL: where patchbay connects to FreeSWITCH's event socket.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct EslSettings {
    pub host: String,
    pub port: u16,
    pub password: Secret,
}

/// The mod_xml_curl endpoint patchbay serves.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct XmlSettings {
    #[serde(deserialize_with = "parse_socket_addr")]
    pub listen: SocketAddr,
    /// Basic auth user; required when `listen` is not a loopback address.
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// The outbound socket FreeSWITCH connects to for every call.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct OutboundSettings {
    #[serde(deserialize_with = "parse_socket_addr")]
    pub listen: SocketAddr,
    /// The address FreeSWITCH dials (`socket <address> async full`) when it differs from
    /// `listen` (listening on 0.0.0.0, containers); host:port.
    pub address: Option<String>,
}

/// Addresses and port of one SIP profile.
#[derive(Clone, Debug)]
pub struct ProfileSettings {
    /// IPv4 address or "auto" (FreeSWITCH's guess of the local address).
    pub sip_ip: String,
    pub sip_port: u16,
    pub rtp_ip: String,
    /// Public address behind NAT: IPv4, "auto-nat", "stun:host" or "host:name"; `None` (an
    /// empty string in the file) = same as sip_ip.
    pub ext_sip_ip: Option<String>,
    pub ext_rtp_ip: Option<String>,
}

/// A profile as written in the file: only the keys given; the rest come from that profile's
/// defaults (the two profiles differ in port).
#[derive(Deserialize)]
struct ProfileOverrides {
    sip_ip: Option<String>,
    sip_port: Option<u16>,
    rtp_ip: Option<String>,
    ext_sip_ip: Option<String>,
    ext_rtp_ip: Option<String>,
}

impl ProfileOverrides {
    fn over(self, defaults: ProfileSettings) -> ProfileSettings {
        let external = |given: Option<String>, default| match given {
            Some(value) if value.is_empty() => None,
            Some(value) => Some(value),
            None => default,
        };
        ProfileSettings {
            sip_ip: self.sip_ip.unwrap_or(defaults.sip_ip),
            sip_port: self.sip_port.unwrap_or(defaults.sip_port),
            rtp_ip: self.rtp_ip.unwrap_or(defaults.rtp_ip),
            ext_sip_ip: external(self.ext_sip_ip, defaults.ext_sip_ip),
            ext_rtp_ip: external(self.ext_rtp_ip, defaults.ext_rtp_ip),
        }
    }
}

fn parse_internal_profile<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ProfileSettings, D::Error> {
    ProfileOverrides::deserialize(deserializer)
        .map(|overrides| overrides.over(ProfileSettings::with_port(INTERNAL_SIP_PORT)))
}

fn parse_external_profile<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ProfileSettings, D::Error> {
    ProfileOverrides::deserialize(deserializer)
        .map(|overrides| overrides.over(ProfileSettings::with_port(EXTERNAL_SIP_PORT)))
}

/// FreeSWITCH's usual ports for the two profiles.
const INTERNAL_SIP_PORT: u16 = 5060;
const EXTERNAL_SIP_PORT: u16 = 5080;

/// One device in the explicit list.
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceSettings {
    /// Shown as the caller ID name on calls between devices.
    pub name: String,
    /// Default: 1000 + its position in the list.
    #[serde(default)]
    pub extension: Option<u32>,
    /// Default: device_password followed by the extension.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Codecs for this device only, as `absolute_codec_string`.
    #[serde(default)]
    pub codecs: Vec<String>,
}

/// A device as the directory serves it, with defaults resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub extension: u32,
    pub name: String,
    pub password: Secret,
    pub codecs: Vec<String>,
}

mod defaults {
    use super::*;

    pub fn device_count() -> u32 {
        1
    }
    pub fn voicemail_delay() -> u32 {
        30
    }
    pub fn reoffer_seconds() -> u32 {
        30
    }
    pub fn timezone() -> Tz {
        Tz::UTC
    }
    pub fn region() -> Region {
        Region::parse("CA").unwrap_or_else(|| unreachable!("CA is a region"))
    }
    pub fn recordings_dir() -> PathBuf {
        PathBuf::from("recordings")
    }
    pub fn greetings_dir() -> PathBuf {
        PathBuf::from("greetings")
    }
    pub fn journal() -> PathBuf {
        PathBuf::from("journal.log")
    }
    pub fn yes() -> bool {
        true
    }
    pub fn expire_seconds() -> u32 {
        120
    }
    pub fn ping() -> u32 {
        25
    }
    pub fn retry_seconds() -> u32 {
        30
    }
}

impl Default for FreeswitchSettings {
    fn default() -> Self {
        FreeswitchSettings {
            esl: EslSettings::default(),
            xml: XmlSettings::default(),
            outbound: OutboundSettings::default(),
            sip_domain: None,
            internal: ProfileSettings::with_port(INTERNAL_SIP_PORT),
            external: ProfileSettings::with_port(EXTERNAL_SIP_PORT),
            tls: false,
            codecs: ["OPUS", "G722", "PCMU", "PCMA"].map(String::from).to_vec(),
            devices: None,
        }
    }
}

impl Default for EslSettings {
    fn default() -> Self {
        EslSettings {
            host: "127.0.0.1".to_owned(),
            port: 8021,
            password: Secret::new("ClueCon"),
        }
    }
}

impl Default for XmlSettings {
    fn default() -> Self {
        XmlSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            username: None,
            password: None,
        }
    }
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8084)),
            address: None,
        }
    }
}

impl ProfileSettings {
    fn with_port(sip_port: u16) -> Self {
        ProfileSettings {
            sip_ip: "auto".to_owned(),
            sip_port,
            rtp_ip: "auto".to_owned(),
            ext_sip_ip: Some("auto-nat".to_owned()),
            ext_rtp_ip: Some("auto-nat".to_owned()),
        }
    }
}

impl Settings {
    /// Reads, parses and validates the file at `path`. Relative paths inside it are resolved
    /// against the file's folder. Unknown keys end up in [`Settings::warnings`].
    pub fn load(path: &Path) -> Result<Settings, Error> {
        let read_error = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_string(&mut text))
            .map_err(read_error)?;
        let mut settings = Settings::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        for dir in [
            &mut settings.recordings_dir,
            &mut settings.greetings_dir,
            &mut settings.journal,
        ] {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        for warning in &settings.warnings {
            tracing::warn!("{}: {warning}", path.display());
        }
        Ok(settings)
    }

    /// Parses and validates settings text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Settings, Error> {
        let stripped = strip_comments(text, path)?;
        let mut deserializer = serde_json::Deserializer::from_str(&stripped);
        let mut settings: Settings =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let key = error.path().to_string();
                let inner = error.into_inner();
                if !inner.is_data() {
                    return syntax_error(path, &inner);
                }
                let message = error::describe_data_error(&inner);
                match error::missing_field(&inner) {
                    Some(field) => Error::Invalid {
                        path: path.to_owned(),
                        key: join_key(&key, &field),
                        message: "is missing (this key has no default; add it)".to_owned(),
                    },
                    None => Error::Invalid {
                        path: path.to_owned(),
                        key: if key == "." {
                            "(top level)".to_owned()
                        } else {
                            key
                        },
                        message,
                    },
                }
            })?;
        deserializer
            .end()
            .map_err(|error| syntax_error(path, &error))?;
        // Second pass only for warnings; the text is known to be valid JSON here.
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&stripped) {
            keys::unknown_keys(&value, &settings_shape(), "", &mut settings.warnings);
        }
        settings.validate(path)?;
        Ok(settings)
    }

    /// The devices the directory serves: the explicit list, or `device_count` numbered ones.
    pub fn devices(&self) -> Vec<Device> {
        match &self.freeswitch.devices {
            Some(list) => list
                .iter()
                .zip(FIRST_EXTENSION..)
                .map(|(device, position)| {
                    let extension = device.extension.unwrap_or(position);
                    Device {
                        extension,
                        name: device.name.clone(),
                        password: device
                            .password
                            .clone()
                            .unwrap_or_else(|| self.device_password_for(extension)),
                        codecs: device.codecs.clone(),
                    }
                })
                .collect(),
            None => (FIRST_EXTENSION..FIRST_EXTENSION + self.device_count)
                .map(|extension| Device {
                    extension,
                    name: format!("Device {extension}"),
                    password: self.device_password_for(extension),
                    codecs: Vec::new(),
                })
                .collect(),
        }
    }

    fn device_password_for(&self, extension: u32) -> Secret {
        Secret::new(format!("{}{extension}", self.device_password.expose()))
    }

    /// The caller ID name for a language, falling back to "EN", then to any entry.
    pub fn caller_id_name(&self, language: Option<&str>) -> Option<&str> {
        language
            .and_then(|language| self.caller_id.get(language))
            .or_else(|| self.caller_id.get("EN"))
            .or_else(|| self.caller_id.values().next())
            .map(String::as_str)
    }

    /// What the dialplan's `socket` action dials.
    pub fn outbound_address(&self) -> String {
        match &self.freeswitch.outbound.address {
            Some(address) => address.clone(),
            None => self.freeswitch.outbound.listen.to_string(),
        }
    }

    /// Every secret in the file, for the journal's filter.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut secrets = vec![
            self.device_password.clone(),
            self.freeswitch.esl.password.clone(),
        ];
        secrets.extend(self.freeswitch.xml.password.clone());
        secrets.extend(self.dids.iter().map(|did| did.password.clone()));
        for device in self.freeswitch.devices.iter().flatten() {
            secrets.extend(device.password.clone());
        }
        secrets
    }

    fn validate(&self, path: &Path) -> Result<(), Error> {
        let invalid = |key: String, message: String| Error::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if self.device_password.is_empty() {
            return Err(invalid(
                "device_password".into(),
                "is empty (expected the prefix of every device's SIP password)".into(),
            ));
        }
        match &self.freeswitch.devices {
            None if self.device_count == 0 || self.device_count > MAX_DEVICES => {
                return Err(invalid(
                    "device_count".into(),
                    format!("expected a number from 1 to {MAX_DEVICES}"),
                ));
            }
            Some(list) if list.is_empty() || list.len() > MAX_DEVICES as usize => {
                return Err(invalid(
                    "freeswitch.devices".into(),
                    format!("expected from 1 to {MAX_DEVICES} devices"),
                ));
            }
            _ => {}
        }
        let mut extensions = std::collections::BTreeSet::new();
        for (index, device) in self.devices().iter().enumerate() {
            let key = |field: &str| format!("freeswitch.devices[{index}].{field}");
            if device.name.trim().is_empty() {
                return Err(invalid(key("name"), "is empty (expected a name)".into()));
            }
            if !(100..=99_999).contains(&device.extension) {
                return Err(invalid(
                    key("extension"),
                    "expected an extension from 100 to 99999".into(),
                ));
            }
            if !extensions.insert(device.extension) {
                return Err(invalid(
                    key("extension"),
                    format!(
                        "{} is used twice (expected one per device)",
                        device.extension
                    ),
                ));
            }
            check_codecs(&device.codecs).map_err(|message| invalid(key("codecs"), message))?;
        }
        check_codecs(&self.freeswitch.codecs)
            .map_err(|message| invalid("freeswitch.codecs".into(), message))?;
        for (role, address) in &self.emails {
            if !looks_like_address(address) {
                return Err(invalid(
                    format!("emails.{role}"),
                    format!("\"{address}\" is not an address (expected name@domain)"),
                ));
            }
        }
        let mut gateway_names = std::collections::BTreeSet::new();
        for (index, did) in self.dids.iter().enumerate() {
            let key = |field: &str| format!("dids[{index}].{field}");
            if did.gateway_name.is_empty()
                || !did
                    .gateway_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(invalid(
                    key("gateway_name"),
                    format!(
                        "\"{}\" is not a gateway name (expected letters, digits, '_', '-' or '.')",
                        did.gateway_name
                    ),
                ));
            }
            if !gateway_names.insert(did.gateway_name.as_str()) {
                return Err(invalid(
                    key("gateway_name"),
                    format!(
                        "\"{}\" is used twice (expected one per DID)",
                        did.gateway_name
                    ),
                ));
            }
            for (field, value) in [
                ("pstn_number", &did.pstn_number),
                ("username", &did.username),
                ("proxy", &did.proxy),
                ("realm", &did.realm),
                ("domain", &did.domain),
            ] {
                if value.trim().is_empty() {
                    return Err(invalid(key(field), "is empty (expected a value)".into()));
                }
            }
            if let Some(country) = &did.country {
                if Region::parse(country).is_none() {
                    return Err(invalid(
                        key("country"),
                        format!("\"{country}\" is not a country (expected an ISO code like CA)"),
                    ));
                }
            }
            if did.register && did.expire_seconds < 10 {
                return Err(invalid(
                    key("expire_seconds"),
                    "expected 10 seconds or more".into(),
                ));
            }
        }
        for (name, profile) in [
            ("internal", &self.freeswitch.internal),
            ("external", &self.freeswitch.external),
        ] {
            let key = |field: &str| format!("freeswitch.{name}.{field}");
            for (field, value) in [("sip_ip", &profile.sip_ip), ("rtp_ip", &profile.rtp_ip)] {
                if value != "auto" && value.parse::<Ipv4Addr>().is_err() {
                    return Err(invalid(
                        key(field),
                        format!("\"{value}\" is not an IPv4 address (expected one, or \"auto\"; IPv6 is left off on purpose)"),
                    ));
                }
            }
            for (field, value) in [
                ("ext_sip_ip", &profile.ext_sip_ip),
                ("ext_rtp_ip", &profile.ext_rtp_ip),
            ] {
                if let Some(value) = value {
                    let known_form = value == "auto"
                        || value == "auto-nat"
                        || value.starts_with("stun:")
                        || value.starts_with("host:")
                        || value.parse::<Ipv4Addr>().is_ok();
                    if !known_form {
                        return Err(invalid(
                            key(field),
                            format!("\"{value}\" is not an external address (expected an IPv4 address, \"auto-nat\", \"stun:HOST\" or \"host:NAME\")"),
                        ));
                    }
                }
            }
            if profile.sip_port == 0 {
                return Err(invalid(
                    key("sip_port"),
                    "expected a port from 1 to 65535".into(),
                ));
            }
        }
        if self.freeswitch.internal.sip_port == self.freeswitch.external.sip_port {
            return Err(invalid(
                "freeswitch.external.sip_port".into(),
                "is the same as freeswitch.internal.sip_port (expected two different ports)".into(),
            ));
        }
        let xml = &self.freeswitch.xml;
        match (&xml.username, &xml.password) {
            (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                if user.contains(':') {
                    return Err(invalid(
                        "freeswitch.xml.username".into(),
                        "contains ':' (expected a user name without it, as Basic auth needs)"
                            .into(),
                    ));
                }
            }
            (None, None) if is_loopback(xml.listen.ip()) => {}
            (None, None) => {
                return Err(invalid(
                    "freeswitch.xml.username".into(),
                    format!(
                        "is missing, but freeswitch.xml.listen is {} (expected a username and password for any address other than 127.0.0.1)",
                        xml.listen
                    ),
                ));
            }
            _ => {
                return Err(invalid(
                    "freeswitch.xml".into(),
                    "expected both username and password (non-empty), or neither".into(),
                ));
            }
        }
        if let Some(domain) = &self.freeswitch.sip_domain {
            if domain.trim().is_empty() {
                return Err(invalid(
                    "freeswitch.sip_domain".into(),
                    "is empty (expected a domain, or leave the key out)".into(),
                ));
            }
        }
        if let Some(address) = &self.freeswitch.outbound.address {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid(
                    "freeswitch.outbound.address".into(),
                    format!("\"{address}\" is not host:port (expected e.g. 10.0.0.5:8084)"),
                ));
            }
        }
        if self.freeswitch.esl.host.trim().is_empty() {
            return Err(invalid(
                "freeswitch.esl.host".into(),
                "is empty (expected FreeSWITCH's address)".into(),
            ));
        }
        Ok(())
    }
}

fn join_key(parent: &str, field: &str) -> String {
    if parent == "." || parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

fn looks_like_address(address: &str) -> bool {
    address.rsplit_once('@').is_some_and(|(name, domain)| {
        !name.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !address.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

fn check_codecs(codecs: &[String]) -> Result<(), String> {
    for codec in codecs {
        let valid = !codec.is_empty()
            && codec
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@.-_/".contains(c));
        if !valid {
            return Err(format!(
                "\"{codec}\" is not a codec name (expected names like PCMU, OPUS or G722@16000)"
            ));
        }
    }
    Ok(())
}

/// Replaces comments with spaces (keeping line and column numbers right for errors).
fn strip_comments(text: &str, path: &Path) -> Result<String, Error> {
    let mut stripped = String::with_capacity(text.len());
    json_comments::StripComments::new(text.as_bytes())
        .read_to_string(&mut stripped)
        .map_err(|source| Error::Syntax {
            path: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("{source} (expected JSON with // or /* */ comments)"),
        })?;
    Ok(stripped)
}

fn syntax_error(path: &Path, error: &serde_json::Error) -> Error {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    Error::Syntax {
        path: path.to_owned(),
        line: error.line(),
        column: error.column(),
        message: format!(
            "{} (expected JSON; comments are allowed)",
            full.strip_suffix(&suffix).unwrap_or(&full)
        ),
    }
}

fn parse_timezone<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "\"{name}\" is not a timezone (expected an IANA name like America/Montreal)"
        ))
    })
}

fn parse_region<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Region, D::Error> {
    let code = String::deserialize(deserializer)?;
    Region::parse(&code).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "\"{code}\" is not a region (expected an ISO 3166 code like CA or FR)"
        ))
    })
}

fn parse_socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse::<SocketAddr>().map_err(|_| {
        serde::de::Error::custom(format!(
            "\"{text}\" is not an address (expected IP:PORT like 127.0.0.1:8080)"
        ))
    })
}

/// The key layout, for unknown-key warnings; field lists come from the derives.
fn settings_shape() -> Shape {
    Shape::Struct {
        fields: field_names::<Settings>(),
        child: |key| match key {
            "dids" => Shape::List(|_| Shape::Leaf, field_names::<Did>()),
            "freeswitch" => Shape::Struct {
                fields: field_names::<FreeswitchSettings>(),
                child: |key| match key {
                    "esl" => leaf_struct(field_names::<EslSettings>()),
                    "xml" => leaf_struct(field_names::<XmlSettings>()),
                    "outbound" => leaf_struct(field_names::<OutboundSettings>()),
                    "internal" | "external" => leaf_struct(field_names::<ProfileOverrides>()),
                    "devices" => Shape::List(|_| Shape::Leaf, field_names::<DeviceSettings>()),
                    _ => Shape::Leaf,
                },
            },
            "repo" => leaf_struct(field_names::<RepoSettings>()),
            "email" => leaf_struct(field_names::<EmailSettings>()),
            "calendar" => leaf_struct(field_names::<CalendarSettings>()),
            "stt" => leaf_struct(field_names::<SttSettings>()),
            "spool" => leaf_struct(field_names::<SpoolSettings>()),
            _ => Shape::Leaf,
        },
    }
}

fn leaf_struct(fields: &'static [&'static str]) -> Shape {
    Shape::Struct {
        fields,
        child: |_| Shape::Leaf,
    }
}

#[cfg(test)]
mod tests;
