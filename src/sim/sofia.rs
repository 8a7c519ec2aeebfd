//! The simulated mod_sofia: device registrations checked against the mod_xml_curl directory
//! (digest auth as FreeSWITCH computes it, with `password` or `a1-hash`), the CUSTOM
//! sofia::register / register_failure / unregister / expire events, and gateways walking
//! through their registration states as the gateway-states captures show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::log::Entry;
use super::scenario::{Gateway, Registrar};
use super::xml_curl::{self, Form, LookupError};
use super::{lock_mutex, Event, Inner};

/// Why a REGISTER was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("register {user}: {source}")]
    Lookup { user: String, source: LookupError },
    #[error("register {user}: the directory has no such user")]
    UnknownUser { user: String },
    #[error("register {user}: the directory answer is not valid XML: {reason}")]
    BadDirectory { user: String, reason: String },
    #[error("register {user}: the directory user has neither password nor a1-hash")]
    NoPassword { user: String },
    #[error("register {user}: wrong password (digest response mismatch)")]
    WrongPassword { user: String },
}

/// One device registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub user: String,
    pub contact: String,
    pub call_id: String,
    pub network_port: u16,
    pub expires: u32,
    /// When the registration runs out, in seconds since the epoch (`show registrations`).
    pub expires_at: u64,
    /// Variables the directory gave the user (caller ID, context, ...).
    pub variables: Vec<(String, String)>,
}

fn md5_hex(text: &str) -> String {
    format!("{:x}", md5::compute(text.as_bytes()))
}

/// The port a simulated phone "sends" from: stable per extension, like sipp's local ports.
fn device_port(extension: &str) -> u16 {
    let sum: u32 = extension.bytes().map(u32::from).sum();
    5090 + (sum % 800) as u16
}

/// REGISTERs `extension` with `password`: asks the directory, checks the digest, emits
/// sofia::register or sofia::register_failure.
pub(crate) async fn register(
    inner: &Arc<Inner>,
    extension: &str,
    password: &str,
) -> Result<(), RegisterError> {
    let domain = inner.config().domain.clone();
    let port = device_port(extension);
    let call_id = format!("{}@127.0.0.1", uuid::Uuid::new_v4().simple());
    let variables = if inner.config().xml_url.is_some() {
        let nonce = uuid::Uuid::new_v4().to_string();
        let cnonce = format!("{:08x}", rand::random::<u32>());
        let uri = format!("sip:{domain}:5060");
        let ha1 = md5_hex(&format!("{extension}:{domain}:{password}"));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        let core = inner.new_event(
            "REQUEST_PARAMS",
            None,
            ("sofia_reg.c", "sofia_reg_parse_auth", 3124),
        );
        let mut form = Form::new(
            &inner.config().hostname,
            "directory",
            "domain",
            "name",
            &domain,
        );
        form.event(&core);
        for (name, value) in [
            ("action", "sip_auth"),
            ("sip_profile", "internal"),
            ("sip_user_agent", "fsim"),
            ("sip_auth_username", extension),
            ("sip_auth_realm", &domain),
            ("sip_auth_nonce", &nonce),
            ("sip_auth_uri", &uri),
            ("sip_contact_user", extension),
            ("sip_contact_host", "127.0.0.1"),
            ("sip_to_user", extension),
            ("sip_to_host", &domain),
            ("sip_via_protocol", "udp"),
            ("sip_from_user", extension),
            ("sip_from_host", &domain),
            ("sip_call_id", &call_id),
            ("sip_request_host", &domain),
            ("sip_auth_qop", "auth"),
            ("sip_auth_cnonce", &cnonce),
            ("sip_auth_nc", "00000001"),
            ("sip_auth_response", &response),
            ("sip_auth_method", "REGISTER"),
            ("client_port", &port.to_string()),
            ("key", "id"),
            ("user", extension),
            ("domain", &domain),
            ("ip", "127.0.0.1"),
        ] {
            form.param(name, value);
        }
        let digest = Digest {
            nonce: &nonce,
            cnonce: &cnonce,
            ha2: &ha2,
            response: &response,
        };
        let checked = check_directory(inner, form, extension, &domain, &digest).await;
        match checked {
            Ok(variables) => variables,
            Err(err) => {
                inner.log().push(Entry::Registration {
                    user: extension.to_owned(),
                    ok: false,
                    reason: err.to_string(),
                });
                emit_register_failure(inner, extension, &domain, port);
                return Err(err);
            }
        }
    } else {
        // Without an endpoint FreeSWITCH would use its static directory; the scenario is it.
        Vec::new()
    };
    let registration = Registration {
        user: extension.to_owned(),
        contact: format!("\"\" <sip:{extension}@127.0.0.1:{port}>"),
        call_id,
        network_port: port,
        expires: 600,
        expires_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
            + 600,
        variables,
    };
    emit_register(inner, &registration, &domain);
    inner.log().push(Entry::Registration {
        user: extension.to_owned(),
        ok: true,
        reason: "Registered(UDP)".into(),
    });
    lock_mutex(&inner.registrations).insert(extension.to_owned(), registration);
    Ok(())
}

/// The digest values of one REGISTER attempt (qop=auth, nc=00000001).
struct Digest<'a> {
    nonce: &'a str,
    cnonce: &'a str,
    ha2: &'a str,
    response: &'a str,
}

/// Asks the directory for the user and checks the digest as sofia does; returns the user's
/// variables.
async fn check_directory(
    inner: &Arc<Inner>,
    form: Form,
    extension: &str,
    domain: &str,
    digest: &Digest<'_>,
) -> Result<Vec<(String, String)>, RegisterError> {
    let user = extension.to_owned();
    let answer = xml_curl::post(inner, form).await;
    let outcome = match &answer {
        Ok(_) => "answered".to_owned(),
        Err(err) => err.to_string(),
    };
    inner.log().push(Entry::XmlCurl {
        section: "directory".into(),
        outcome,
    });
    let xml = answer.map_err(|source| RegisterError::Lookup {
        user: user.clone(),
        source,
    })?;
    let found = xml_curl::parse_directory(&xml, extension).map_err(|reason| {
        RegisterError::BadDirectory {
            user: user.clone(),
            reason,
        }
    })?;
    let Some(found) = found else {
        return Err(RegisterError::UnknownUser { user });
    };
    let ha1 = match (found.params.get("a1-hash"), found.params.get("password")) {
        (Some(hash), _) => hash.to_ascii_lowercase(),
        (None, Some(password)) => md5_hex(&format!("{extension}:{domain}:{password}")),
        (None, None) => return Err(RegisterError::NoPassword { user }),
    };
    let Digest {
        nonce,
        cnonce,
        ha2,
        response,
    } = digest;
    let expected = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
    if expected != *response {
        return Err(RegisterError::WrongPassword { user });
    }
    Ok(found.variables)
}

fn sofia_event(inner: &Inner, subclass: &str, function: &str, line: u32) -> Event {
    inner.new_event("CUSTOM", Some(subclass), ("sofia_reg.c", function, line))
}

fn emit_register(inner: &Inner, reg: &Registration, domain: &str) {
    let mut event = sofia_event(
        inner,
        "sofia::register",
        "sofia_reg_handle_register_token",
        2059,
    );
    let port = reg.network_port.to_string();
    event
        .push("profile-name", "internal")
        .push("from-user", reg.user.as_str())
        .push("from-host", domain)
        .push("presence-hosts", format!("{domain},{domain}"))
        .push("contact", reg.contact.as_str())
        .push("call-id", reg.call_id.as_str())
        .push("rpid", "unknown")
        .push("status", "Registered(UDP)")
        .push("expires", reg.expires.to_string())
        .push("to-user", reg.user.as_str())
        .push("to-host", domain)
        .push("network-ip", "127.0.0.1")
        .push("network-port", port)
        .push("username", reg.user.as_str())
        .push("realm", domain)
        .push("user-agent", "fsim");
    for (name, value) in &reg.variables {
        event.push(name.as_str(), value.as_str());
    }
    inner.emit(event);
}

fn emit_register_failure(inner: &Inner, extension: &str, domain: &str, port: u16) {
    let mut event = sofia_event(
        inner,
        "sofia::register_failure",
        "sofia_reg_parse_auth",
        3206,
    );
    event
        .push("profile-name", "internal")
        .push("to-user", extension)
        .push("to-host", domain)
        .push("network-ip", "127.0.0.1")
        .push("user-agent", "fsim")
        .push("network-port", port.to_string())
        .push("registration-type", "register");
    inner.emit(event);
}

/// The phone sends REGISTER with Expires: 0.
pub(crate) fn unregister(inner: &Inner, extension: &str) -> bool {
    let Some(reg) = lock_mutex(&inner.registrations).remove(extension) else {
        return false;
    };
    let domain = inner.config().domain.clone();
    let mut event = sofia_event(
        inner,
        "sofia::unregister",
        "sofia_reg_handle_register_token",
        1706,
    );
    event
        .push("profile-name", "internal")
        .push("from-user", reg.user.as_str())
        .push("from-host", domain.as_str())
        .push("contact", reg.contact.as_str())
        .push("call-id", reg.call_id.as_str())
        .push("rpid", "unknown")
        .push("expires", "0")
        .push("network-ip", "127.0.0.1")
        .push("network-port", reg.network_port.to_string())
        .push("username", reg.user.as_str())
        .push("realm", domain.as_str())
        .push("user-agent", "fsim");
    inner.emit(event);
    true
}

/// The registration ran out without a refresh.
pub(crate) fn expire(inner: &Inner, extension: &str) -> bool {
    let Some(reg) = lock_mutex(&inner.registrations).remove(extension) else {
        return false;
    };
    let domain = inner.config().domain.clone();
    let mut event = sofia_event(inner, "sofia::expire", "sofia_reg_del_callback", 1089);
    event
        .push("profile-name", "internal")
        .push("call-id", reg.call_id.as_str())
        .push("user", reg.user.as_str())
        .push("host", domain.as_str())
        .push("contact", reg.contact.as_str())
        .push("expires", reg.expires.to_string())
        .push("status", "Registered(UDP)")
        .push("proto", "sip")
        .push("from", format!("{}@{domain}", reg.user))
        .push("login", format!("sip:mod_sofia@{domain}:5060"))
        .push("rpid", "unknown")
        .push("username", reg.user.as_str())
        .push("realm", domain.as_str())
        .push("user-agent", "fsim")
        .push("network-ip", "127.0.0.1")
        .push("network-port", reg.network_port.to_string());
    inner.emit(event);
    true
}

/// What `sofia status gateway` reports about one gateway.
#[derive(Debug, Clone)]
pub struct GatewayStatus {
    pub name: String,
    pub realm: String,
    pub proxy: String,
    pub expires: u32,
    pub state: String,
    pub up_since: Option<Instant>,
}

/// Ping-Status and Register-Network-* bookkeeping, as the captures show them.
struct GatewayWire {
    ping_up: bool,
    network: Option<(String, u16)>,
}

fn emit_gateway_state(
    inner: &Inner,
    name: &str,
    state: &str,
    wire: &GatewayWire,
    status: Option<(&str, &str)>,
) {
    let mut event = sofia_event(
        inner,
        "sofia::gateway_state",
        "sofia_reg_fire_custom_gateway_state_event",
        156,
    );
    event
        .push("Gateway", name)
        .push("State", state)
        .push("Ping-Status", if wire.ping_up { "UP" } else { "DOWN" });
    if let Some((ip, port)) = &wire.network {
        event
            .push("Register-Network-IP", ip.as_str())
            .push("Register-Network-Port", port.to_string());
    }
    if let Some((code, phrase)) = status {
        event.push("Phrase", phrase).push("Status", code);
    }
    inner.emit(event);
    {
        let mut gateways = lock_mutex(&inner.gateways);
        if let Some(gateway) = gateways.get_mut(name) {
            gateway.state = state.to_owned();
            if state == "REGED" && gateway.up_since.is_none() {
                gateway.up_since = Some(Instant::now());
            } else if state != "REGED" && state != "REGISTER" {
                gateway.up_since = None;
            }
        }
    }
    inner.log().push(Entry::GatewayState {
        gateway: name.to_owned(),
        state: state.to_owned(),
    });
}

/// Adds a gateway and runs its registration state machine in the background.
pub(crate) fn start_gateway(inner: &Arc<Inner>, gateway: Gateway) {
    let name = gateway.name.clone();
    let (host, port) = match gateway.proxy.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(5060)),
        None => (gateway.proxy.clone(), 5060),
    };
    lock_mutex(&inner.gateways).insert(
        name.clone(),
        GatewayStatus {
            name: name.clone(),
            realm: host.clone(),
            proxy: gateway.proxy.clone(),
            expires: gateway.expire_seconds as u32,
            state: "UNREGED".into(),
            up_since: None,
        },
    );
    let mut add = sofia_event(inner, "sofia::gateway_add", "sofia_reg_add_gateway", 3723);
    add.push("Gateway", name.as_str())
        .push("profile-name", "external");
    inner.emit(add);
    let task_inner = Arc::clone(inner);
    let task = tokio::spawn(async move {
        run_gateway(&task_inner, &gateway, host, port).await;
    });
    if let Some(old) = lock_mutex(&inner.gateway_tasks).insert(name, task) {
        old.abort();
    }
}

async fn run_gateway(inner: &Inner, gw: &Gateway, host: String, port: u16) {
    let name = gw.name.as_str();
    let mut wire = GatewayWire {
        ping_up: false,
        network: None,
    };
    if gw.registrar == Registrar::Noreg {
        emit_gateway_state(inner, name, "NOREG", &wire, None);
        return;
    }
    let sleep = |seconds: f64| tokio::time::sleep(inner.scaled(seconds));
    let mut failures = 0u32;
    emit_gateway_state(inner, name, "TRYING", &wire, None);
    loop {
        match gw.registrar {
            Registrar::Ok => {
                wire.network = Some((host.clone(), port));
                emit_gateway_state(inner, name, "REGISTER", &wire, Some(("200", "OK")));
                wire.ping_up = true;
                emit_gateway_state(inner, name, "REGED", &wire, None);
                // Refreshes come at about a third of the expiry, as sofia's captures show.
                sleep(gw.expire_seconds / 3.0).await;
                continue;
            }
            Registrar::Fail => {
                wire.network = Some((host.clone(), 0));
                emit_gateway_state(
                    inner,
                    name,
                    "FAILED",
                    &wire,
                    Some(("503", "Service Unavailable")),
                );
                wire.ping_up = false;
            }
            Registrar::Timeout | Registrar::Noreg => {
                sleep(gw.timeout_seconds).await;
                emit_gateway_state(inner, name, "TIMEOUT", &wire, None);
                emit_gateway_state(inner, name, "FAILED", &wire, None);
            }
        }
        emit_gateway_state(inner, name, "FAIL_WAIT", &wire, None);
        failures += 1;
        // The wait grows with the failure count (retry-seconds x failures).
        sleep(gw.retry_seconds * f64::from(failures)).await;
        emit_gateway_state(inner, name, "UNREGED", &wire, None);
        if failures >= gw.max_cycles {
            return;
        }
        emit_gateway_state(inner, name, "TRYING", &wire, None);
    }
}

/// `killgw`: the gateway goes DOWN and is deleted.
pub(crate) fn kill_gateway(inner: &Inner, name: &str) -> bool {
    if let Some(task) = lock_mutex(&inner.gateway_tasks).remove(name) {
        task.abort();
    }
    if !lock_mutex(&inner.gateways).contains_key(name) {
        return false;
    }
    let wire = GatewayWire {
        ping_up: false,
        network: None,
    };
    emit_gateway_state(inner, name, "DOWN", &wire, None);
    lock_mutex(&inner.gateways).remove(name);
    let mut delete = sofia_event(
        inner,
        "sofia::gateway_delete",
        "sofia_reg_release_gateway__",
        3747,
    );
    delete
        .push("Gateway", name)
        .push("profile-name", "external");
    inner.emit(delete);
    true
}

impl GatewayStatus {
    fn is_up(&self) -> bool {
        self.state == "REGED" || self.state == "NOREG"
    }

    fn uptime(&self) -> Duration {
        self.up_since.map(|t| t.elapsed()).unwrap_or_default()
    }

    fn rows(&self) -> Vec<(&'static str, &'static str, String)> {
        let status = if self.is_up() { "UP" } else { "DOWN" };
        vec![
            ("Name    ", "name", self.name.clone()),
            ("Profile ", "profile", "external".into()),
            ("Scheme  ", "scheme", "Digest".into()),
            ("Realm   ", "realm", self.realm.clone()),
            ("Username", "username", self.name.clone()),
            ("Password", "password", "yes".into()),
            (
                "From    ",
                "from",
                format!("<sip:{}@{}>", self.name, self.proxy),
            ),
            (
                "Contact ",
                "contact",
                format!(
                    "<sip:gw+{}@127.0.0.1:5080;transport=udp;gw={}>",
                    self.name, self.name
                ),
            ),
            ("Exten   ", "exten", self.name.clone()),
            (
                "To      ",
                "to",
                format!("sip:{}@{}", self.name, self.proxy),
            ),
            ("Proxy   ", "proxy", format!("sip:{}", self.proxy)),
            ("Context ", "context", "public".into()),
            ("Expires ", "expires", self.expires.to_string()),
            ("Freq    ", "freq", self.expires.to_string()),
            ("Ping    ", "ping", "0".into()),
            ("PingFreq", "pingfreq", "0".into()),
            ("", "pingmin", "0".into()),
            ("", "pingcount", "0".into()),
            ("", "pingmax", "0".into()),
            ("PingTime", "pingtime", "0.00".into()),
            ("", "pinging", "0".into()),
            ("PingState", "", "0/0/0".into()),
            ("State   ", "state", self.state.clone()),
            ("Status  ", "status", status.into()),
            ("Uptime  ", "", format!("{}s", self.uptime().as_secs())),
            ("", "uptime-usec", self.uptime().as_micros().to_string()),
            ("CallsIN ", "calls-in", "0".into()),
            ("CallsOUT", "calls-out", "0".into()),
            ("FailedCallsIN", "failed-calls-in", "0".into()),
            ("FailedCallsOUT", "failed-calls-out", "0".into()),
        ]
    }

    /// The tab-separated `sofia status gateway <name>` output.
    pub fn text_status(&self) -> String {
        let rule = "=".repeat(97);
        let mut out = format!("{rule}\n");
        for (key, _, value) in self.rows().into_iter().filter(|(k, _, _)| !k.is_empty()) {
            out.push_str(&format!("{key}\t{value}\n"));
        }
        out.push_str(&rule);
        out.push('\n');
        out
    }

    /// The `sofia xmlstatus gateway <name>` output, values XML-escaped.
    pub fn xml_status(&self) -> String {
        let mut out =
            String::from("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n  <gateway>\n");
        for (_, tag, value) in self.rows().into_iter().filter(|(_, t, _)| !t.is_empty()) {
            let value = quick_xml::escape::escape(value.as_str());
            out.push_str(&format!("    <{tag}>{value}</{tag}>\n"));
        }
        out.push_str("  </gateway>\n");
        out
    }
}
