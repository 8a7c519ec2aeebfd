use super::*;

/// The sample from the seed's README, byte for byte (comment included).
pub(crate) const SEED_SAMPLE: &str = r#"{
    "device_count": 10,
    "device_password": "password",
    "voicemail_delay": 30,
    "emails": {
        /* Define emails for whatever role you want */
    },
    "caller_id": {
        "EN": "John Doe",
        "FR": "Jean Untel"
    },
    "dids": [
        {
             "gateway_name": "my_did_gateway1",
             "pstn_number": "1234567890",
             "username": "my_username",
             "password": "my_password",
             "proxy": "foo.example.com",
             "realm": "example.com",
             "domain": "example.com"
        }
    ]
}
"#;

fn parse(text: &str) -> Result<Settings, Error> {
    Settings::parse(text, Path::new("settings.json"))
}

fn error_text(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for {text}"),
        Err(error) => error.to_string(),
    }
}

/// A valid file with `extra` spliced into the top-level object.
fn with(extra: &str) -> String {
    format!(r#"{{"device_password": "pw", {extra}}}"#)
}

const TWO_DIDS: &str = r#""dids": [
    {"gateway_name": "a", "pstn_number": "1", "username": "u", "password": "p1",
     "proxy": "x.example", "realm": "example", "domain": "example"},
    {"gateway_name": "b", "pstn_number": "2", "username": "u", "password": 987654,
     "proxy": "x.example", "realm": "example", "domain": "example"}
]"#;

#[test]
fn seed_sample_loads_as_written() {
    let settings = parse(SEED_SAMPLE).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(settings.device_count, 10);
    assert_eq!(settings.device_password.expose(), "password");
    assert_eq!(settings.voicemail_delay, 30);
    assert!(settings.emails.is_empty());
    assert_eq!(settings.caller_id_name(Some("FR")), Some("Jean Untel"));
    assert_eq!(settings.caller_id_name(None), Some("John Doe"));
    let did = &settings.dids[0];
    assert_eq!(
        (
            did.gateway_name.as_str(),
            did.pstn_number.as_str(),
            did.username.as_str(),
            did.password.expose(),
            did.proxy.as_str(),
            did.realm.as_str(),
            did.domain.as_str()
        ),
        (
            "my_did_gateway1",
            "1234567890",
            "my_username",
            "my_password",
            "foo.example.com",
            "example.com",
            "example.com"
        )
    );
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    let devices = settings.devices();
    assert_eq!(devices.len(), 10);
    assert_eq!(devices[0].extension, 1000);
    assert_eq!(devices[0].password.expose(), "password1000");
    assert_eq!(devices[9].extension, 1009);
    assert_eq!(devices[9].password.expose(), "password1009");
}

#[test]
fn defaults_follow_the_seeds_security_advice() {
    let settings = parse(SEED_SAMPLE).unwrap_or_else(|error| panic!("{error}"));
    let did = &settings.dids[0];
    assert!(did.register);
    assert!(did.expire_seconds <= 120 && did.ping > 0 && did.ping <= 30);
    let fs = &settings.freeswitch;
    assert_eq!(
        fs.xml.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(fs.external.ext_sip_ip.as_deref(), Some("auto-nat"));
    assert!(!fs.internal.sip_ip.contains(':'), "IPv4 only");
    assert_eq!(settings.outbound_address(), "127.0.0.1:8084");
    assert_eq!(settings.timezone, Tz::UTC);
}

#[test]
fn wrong_type_names_the_key_path_and_hides_the_value() {
    let message = error_text(&with(TWO_DIDS));
    assert_eq!(
        message,
        "settings.json: dids[1].password: expected a string, found a number"
    );
    assert!(!message.contains("987654"));
}

#[test]
fn missing_key_is_named_with_its_path() {
    let message = error_text(
        r#"{"device_password": "pw", "dids": [{"gateway_name": "a", "pstn_number": "1",
        "username": "u", "proxy": "p", "realm": "r", "domain": "d"}]}"#,
    );
    assert_eq!(
        message,
        "settings.json: dids[0].password: is missing (this key has no default; add it)"
    );
    let message = error_text("{}");
    assert_eq!(
        message,
        "settings.json: device_password: is missing (this key has no default; add it)"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let message = error_text("{\n  \"device_password\": \"pw\",\n  \"device_count\": ,\n}");
    assert!(
        message.starts_with("settings.json: line 3, column 19: expected value"),
        "{message}"
    );
    let message = error_text("{\"device_password\": \"pw\"} trailing");
    assert!(message.starts_with("settings.json: line 1"), "{message}");
}

#[test]
fn unknown_timezone_region_and_address_are_explained() {
    assert_eq!(
        error_text(&with(r#""timezone": "Mars/Olympus""#)),
        "settings.json: timezone: \"Mars/Olympus\" is not a timezone (expected an IANA name like America/Montreal)"
    );
    assert_eq!(
        error_text(&with(r#""default_region": "XX""#)),
        "settings.json: default_region: \"XX\" is not a region (expected an ISO 3166 code like CA or FR)"
    );
    assert_eq!(
        error_text(&with(r#""freeswitch": {"xml": {"listen": "localhost"}}"#)),
        "settings.json: freeswitch.xml.listen: \"localhost\" is not an address (expected IP:PORT like 127.0.0.1:8080)"
    );
}

#[test]
fn public_xml_listen_address_needs_credentials() {
    let message = error_text(&with(
        r#""freeswitch": {"xml": {"listen": "0.0.0.0:8080"}}"#,
    ));
    assert!(
        message.starts_with("settings.json: freeswitch.xml.username: is missing, but freeswitch.xml.listen is 0.0.0.0:8080"),
        "{message}"
    );
    let message = error_text(&with(
        r#""freeswitch": {"xml": {"listen": "0.0.0.0:8080", "username": "fs"}}"#,
    ));
    assert_eq!(
        message,
        "settings.json: freeswitch.xml: expected both username and password (non-empty), or neither"
    );
    let settings = parse(&with(
        r#""freeswitch": {"xml": {"listen": "0.0.0.0:8080", "username": "fs", "password": "s3cret!"}}"#,
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(!format!("{settings:?}").contains("s3cret!"));
}

#[test]
fn insane_values_are_refused() {
    assert_eq!(
        error_text(&with(r#""device_count": 0"#)),
        "settings.json: device_count: expected a number from 1 to 500"
    );
    assert_eq!(
        error_text(&with(r#""device_count": 100000"#)),
        "settings.json: device_count: expected a number from 1 to 500"
    );
    assert_eq!(
        error_text(&with(r#""emails": {"owner": "bob@"}"#)),
        "settings.json: emails.owner: \"bob@\" is not an address (expected name@domain)"
    );
    assert_eq!(
        error_text(r#"{"device_password": ""}"#),
        "settings.json: device_password: is empty (expected the prefix of every device's SIP password)"
    );
    assert_eq!(
        error_text(&with(
            r#""freeswitch": {"internal": {"sip_ip": "fd00::2"}}"#
        )),
        "settings.json: freeswitch.internal.sip_ip: \"fd00::2\" is not an IPv4 address (expected one, or \"auto\"; IPv6 is left off on purpose)"
    );
    assert_eq!(
        error_text(&with(r#""freeswitch": {"codecs": ["PCMU,PCMA"]}"#)),
        "settings.json: freeswitch.codecs: \"PCMU,PCMA\" is not a codec name (expected names like PCMU, OPUS or G722@16000)"
    );
}

#[test]
fn duplicate_and_malformed_gateways_are_refused() {
    let did = r#"{"gateway_name": "a", "pstn_number": "1", "username": "u", "password": "p",
        "proxy": "x", "realm": "r", "domain": "d"}"#;
    assert_eq!(
        error_text(&with(&format!(r#""dids": [{did}, {did}]"#))),
        "settings.json: dids[1].gateway_name: \"a\" is used twice (expected one per DID)"
    );
    let bad = did.replace("\"a\"", "\"a/b\"");
    assert_eq!(
        error_text(&with(&format!(r#""dids": [{bad}]"#))),
        "settings.json: dids[0].gateway_name: \"a/b\" is not a gateway name (expected letters, digits, '_', '-' or '.')"
    );
    let empty_proxy = did.replace("\"x\"", "\"\"");
    assert_eq!(
        error_text(&with(&format!(r#""dids": [{empty_proxy}]"#))),
        "settings.json: dids[0].proxy: is empty (expected a value)"
    );
}

#[test]
fn explicit_devices_resolve_extensions_passwords_and_codecs() {
    let settings = parse(&with(
        r#""freeswitch": {"devices": [
            {"name": "Desk", "codecs": ["PCMA"]},
            {"name": "Cell", "extension": 2000, "password": "own-secret"}
        ]}"#,
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    let devices = settings.devices();
    assert_eq!(devices[0].extension, 1000);
    assert_eq!(devices[0].password.expose(), "pw1000");
    assert_eq!(devices[0].codecs, ["PCMA"]);
    assert_eq!(devices[1].extension, 2000);
    assert_eq!(devices[1].password.expose(), "own-secret");
    assert_eq!(
        error_text(&with(
            r#""freeswitch": {"devices": [{"name": "A", "extension": 1001}, {"name": "B"}]}"#
        )),
        "settings.json: freeswitch.devices[1].extension: 1001 is used twice (expected one per device)"
    );
}

#[test]
fn a_partly_written_profile_keeps_its_own_defaults() {
    let settings = parse(&with(
        r#""freeswitch": {"external": {"ext_sip_ip": "stun:stun.example.com", "ext_rtp_ip": ""},
                          "internal": {"sip_ip": "192.168.1.2"}}"#,
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    let fs = &settings.freeswitch;
    assert_eq!(fs.external.sip_port, 5080);
    assert_eq!(
        fs.external.ext_sip_ip.as_deref(),
        Some("stun:stun.example.com")
    );
    assert_eq!(fs.external.ext_rtp_ip, None);
    assert_eq!(fs.internal.sip_port, 5060);
    assert_eq!(fs.internal.sip_ip, "192.168.1.2");
    assert_eq!(fs.internal.ext_sip_ip.as_deref(), Some("auto-nat"));
}

#[test]
fn unknown_keys_warn_with_the_nearest_valid_key() {
    let settings = parse(&with(
        r#""voicemail_dealy": 20, "freeswitch": {"esl": {"prot": 8021}}, "flavour": 1"#,
    ))
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        settings.warnings,
        [
            "flavour: unknown key, ignored",
            "freeswitch.esl.prot: unknown key, ignored (did you mean \"port\"?)",
            "voicemail_dealy: unknown key, ignored (did you mean \"voicemail_delay\"?)",
        ]
    );
}

#[test]
fn load_resolves_relative_paths_and_names_unreadable_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let path = dir.path().join("settings.json");
    std::fs::write(&path, SEED_SAMPLE).unwrap_or_else(|error| panic!("{error}"));
    let settings = Settings::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(settings.journal, dir.path().join("journal.log"));
    assert_eq!(settings.recordings_dir, dir.path().join("recordings"));
    let missing = dir.path().join("nope.json");
    let message = match Settings::load(&missing) {
        Ok(_) => panic!("loaded a missing file"),
        Err(error) => error.to_string(),
    };
    assert!(
        message.starts_with(&format!("{}: ", missing.display())),
        "{message}"
    );
    assert!(
        message.ends_with("(check the path given to --settings)"),
        "{message}"
    );
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let settings = parse(SEED_SAMPLE).unwrap_or_else(|error| panic!("{error}"));
    let debug = format!("{settings:?}");
    assert!(!debug.contains("my_password"));
    assert!(!debug.contains("\"password\""));
    let secrets = settings.secrets();
    assert!(secrets
        .iter()
        .any(|secret| secret.expose() == "my_password"));
    let message = error_text(&SEED_SAMPLE.replace(
        "\"voicemail_delay\": 30",
        "\"voicemail_delay\": \"my_password\"",
    ));
    assert!(!message.contains("my_password"), "{message}");
}
