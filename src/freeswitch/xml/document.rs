//! The XML documents mod_xml_curl receives: directory users, sofia.conf, the dialplan and
//! "not found". Each is a tree of typed structs that quick-xml's serializer writes, so every
//! string from settings or from a request (names, domains, passwords) is escaped by the
//! serializer and never pasted into markup.

use std::sync::LazyLock;

use serde::Serialize;

use super::Error;
use crate::settings::{Device, Did, ProfileSettings, Settings};

/// Prepended to every document; FreeSWITCH's parser accepts it and it pins the encoding.
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n";

/// The context device calls start in (each directory user's `user_context`).
pub const DEVICE_CONTEXT: &str = "default";
/// The context calls from the DIDs' gateways start in.
pub const PUBLIC_CONTEXT: &str = "public";

#[derive(Serialize)]
#[serde(rename = "document")]
struct Document<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    section: Section<'a>,
}

#[derive(Serialize)]
struct Section<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@description", skip_serializing_if = "Option::is_none")]
    description: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<Domain<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration: Option<Configuration<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    context: Vec<Context<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ResultStatus>,
}

impl<'a> Section<'a> {
    fn named(name: &'static str) -> Self {
        Section {
            name,
            description: None,
            domain: None,
            configuration: None,
            context: Vec::new(),
            result: None,
        }
    }
}

#[derive(Serialize)]
struct ResultStatus {
    #[serde(rename = "@status")]
    status: &'static str,
}

#[derive(Serialize)]
struct Param<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@value")]
    value: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct Params<'a> {
    param: Vec<Param<'a>>,
}

#[derive(Serialize)]
struct Variable<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@value")]
    value: std::borrow::Cow<'a, str>,
    #[serde(rename = "@direction", skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
}

#[derive(Serialize)]
struct Variables<'a> {
    variable: Vec<Variable<'a>>,
}

fn param<'a>(name: &'static str, value: impl Into<std::borrow::Cow<'a, str>>) -> Param<'a> {
    Param {
        name,
        value: value.into(),
    }
}

fn variable<'a>(name: &'static str, value: impl Into<std::borrow::Cow<'a, str>>) -> Variable<'a> {
    Variable {
        name,
        value: value.into(),
        direction: None,
    }
}

// ---------------------------------------------------------------------------------------------
// directory

#[derive(Serialize)]
struct Domain<'a> {
    #[serde(rename = "@name")]
    name: &'a str,
    params: Params<'a>,
    users: Users<'a>,
}

#[derive(Serialize)]
struct Users<'a> {
    user: Vec<User<'a>>,
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(rename = "@id")]
    id: String,
    params: Params<'a>,
    variables: Variables<'a>,
}

/// Where a registered device is reached; the vanilla directory's dial-string without verto.
const DIAL_STRING: &str = "{^^:sip_invite_domain=${dialed_domain}:presence_id=${dialed_user}@${dialed_domain}}${sofia_contact(*/${dialed_user}@${dialed_domain})}";

/// The directory document for one device in `domain` (the domain FreeSWITCH asked for).
pub fn directory_user(settings: &Settings, domain: &str, device: &Device) -> Result<String, Error> {
    let extension = device.extension.to_string();
    let mut variables = vec![
        variable("user_context", DEVICE_CONTEXT),
        variable("accountcode", extension.clone()),
        variable("effective_caller_id_name", device.name.as_str()),
        variable("effective_caller_id_number", extension.clone()),
    ];
    if let Some(name) = settings.caller_id_name(None) {
        variables.push(variable("outbound_caller_id_name", name));
    }
    if let Some(did) = settings.dids.first() {
        variables.push(variable(
            "outbound_caller_id_number",
            did.pstn_number.as_str(),
        ));
    }
    if !device.codecs.is_empty() {
        variables.push(variable("absolute_codec_string", device.codecs.join(",")));
    }
    let user = User {
        id: extension,
        params: Params {
            param: vec![param("password", device.password.expose())],
        },
        variables: Variables {
            variable: variables,
        },
    };
    let mut section = Section::named("directory");
    section.domain = Some(Domain {
        name: domain,
        params: Params {
            param: vec![param("dial-string", DIAL_STRING)],
        },
        users: Users { user: vec![user] },
    });
    render(section)
}

// ---------------------------------------------------------------------------------------------
// configuration: sofia.conf

#[derive(Serialize)]
struct Configuration<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@description")]
    description: &'static str,
    global_settings: Params<'a>,
    profiles: Profiles<'a>,
}

#[derive(Serialize)]
struct Profiles<'a> {
    profile: Vec<Profile<'a>>,
}

#[derive(Serialize)]
struct Profile<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    gateways: Gateways<'a>,
    domains: Domains,
    settings: Params<'a>,
}

#[derive(Serialize)]
struct Gateways<'a> {
    gateway: Vec<Gateway<'a>>,
}

#[derive(Serialize)]
struct Gateway<'a> {
    #[serde(rename = "@name")]
    name: &'a str,
    param: Vec<Param<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<Variables<'a>>,
}

#[derive(Serialize)]
struct Domains {
    domain: ProfileDomain,
}

#[derive(Serialize)]
struct ProfileDomain {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@alias")]
    alias: bool,
    #[serde(rename = "@parse")]
    parse: bool,
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

fn gateway<'a>(settings: &'a Settings, did: &'a Did) -> Gateway<'a> {
    let mut params = vec![
        param("username", did.username.as_str()),
        param("password", did.password.expose()),
        param("realm", did.realm.as_str()),
        param("proxy", did.proxy.as_str()),
        param("from-domain", did.domain.as_str()),
        // Inbound calls through this gateway arrive with the DID as destination number.
        param("extension", did.pstn_number.as_str()),
        param("register", yes_no(did.register)),
        param("expire-seconds", did.expire_seconds.to_string()),
        param("retry-seconds", did.retry_seconds.to_string()),
        param("caller-id-in-from", yes_no(did.caller_id_in_from)),
        param("context", PUBLIC_CONTEXT),
    ];
    if did.ping > 0 {
        params.push(param("ping", did.ping.to_string()));
    }
    let mut outbound = vec![Variable {
        name: "effective_caller_id_number",
        value: did.pstn_number.as_str().into(),
        direction: Some("outbound"),
    }];
    if let Some(name) = settings.caller_id_name(did.language.as_deref()) {
        outbound.push(Variable {
            name: "effective_caller_id_name",
            value: name.into(),
            direction: Some("outbound"),
        });
    }
    Gateway {
        name: &did.gateway_name,
        param: params,
        variables: Some(Variables { variable: outbound }),
    }
}

/// Parameters both profiles share: addresses, codecs, DTMF, TLS.
fn common_profile_params<'a>(
    settings: &'a Settings,
    profile: &'a ProfileSettings,
    context: &'static str,
    tls_port: u16,
) -> Vec<Param<'a>> {
    let codecs = settings.freeswitch.codecs.join(",");
    let mut params = vec![
        param("debug", "0"),
        param("sip-trace", "no"),
        param("sip-port", profile.sip_port.to_string()),
        param("sip-ip", profile.sip_ip.as_str()),
        param("rtp-ip", profile.rtp_ip.as_str()),
        param("dialplan", "XML"),
        param("context", context),
        param("rfc2833-pt", "101"),
        param("dtmf-duration", "2000"),
        param("inbound-codec-prefs", codecs.clone()),
        param("outbound-codec-prefs", codecs),
        param("inbound-codec-negotiation", "generous"),
        param("rtp-timer-name", "soft"),
        param("local-network-acl", "localnet.auto"),
        param("hold-music", "local_stream://moh"),
        param("nonce-ttl", "60"),
        param("rtp-timeout-sec", "300"),
        param("rtp-hold-timeout-sec", "1800"),
        param("inbound-late-negotiation", "true"),
        param("tls", yes_no(settings.freeswitch.tls)),
        param("tls-only", "false"),
        param("tls-bind-params", "transport=tls"),
        param("tls-sip-port", tls_port.to_string()),
        param("tls-version", "tlsv1.2"),
        param("tls-verify-date", "true"),
        param("tls-verify-policy", "none"),
    ];
    if let Some(ext_sip_ip) = &profile.ext_sip_ip {
        params.push(param("ext-sip-ip", ext_sip_ip.as_str()));
    }
    if let Some(ext_rtp_ip) = &profile.ext_rtp_ip {
        params.push(param("ext-rtp-ip", ext_rtp_ip.as_str()));
    }
    params
}

/// sofia.conf: the internal profile for devices and the external one with a gateway per DID.
/// FreeSWITCH asks for it at startup, per profile and on rescan; the answer is always whole.
pub fn sofia_conf(settings: &Settings) -> Result<String, Error> {
    let fs = &settings.freeswitch;
    let mut internal = common_profile_params(settings, &fs.internal, PUBLIC_CONTEXT, 5061);
    internal.extend([
        param("auth-calls", "true"),
        param("auth-subscriptions", "true"),
        param("auth-all-packets", "false"),
        param("inbound-reg-force-matching-username", "true"),
        param("apply-nat-acl", "nat.auto"),
        // Devices behind NAT: keep their mapping open and reach them at the public address.
        param("nat-options-ping", "true"),
        param("manage-presence", "false"),
        param("challenge-realm", "auto_from"),
        param("log-auth-failures", "true"),
    ]);
    if let Some(domain) = &fs.sip_domain {
        internal.push(param("force-register-domain", domain.as_str()));
        internal.push(param("force-register-db-domain", domain.as_str()));
    }
    let mut external = common_profile_params(settings, &fs.external, PUBLIC_CONTEXT, 5081);
    external.extend([
        param("auth-calls", "false"),
        param("manage-presence", "false"),
    ]);
    let profiles = vec![
        Profile {
            name: "internal",
            gateways: Gateways {
                gateway: Vec::new(),
            },
            domains: Domains {
                domain: ProfileDomain {
                    name: "all",
                    alias: true,
                    parse: false,
                },
            },
            settings: Params { param: internal },
        },
        Profile {
            name: "external",
            gateways: Gateways {
                gateway: settings
                    .dids
                    .iter()
                    .map(|did| gateway(settings, did))
                    .collect(),
            },
            domains: Domains {
                domain: ProfileDomain {
                    name: "all",
                    alias: false,
                    parse: true,
                },
            },
            settings: Params { param: external },
        },
    ];
    let mut section = Section::named("configuration");
    section.description = Some("sofia.conf from patchbay");
    section.configuration = Some(Configuration {
        name: "sofia.conf",
        description: "sofia Endpoint",
        global_settings: Params {
            param: vec![param("log-level", "0"), param("debug-presence", "0")],
        },
        profiles: Profiles { profile: profiles },
    });
    render(section)
}

// ---------------------------------------------------------------------------------------------
// dialplan

#[derive(Serialize)]
struct Context<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    extension: Extension<'a>,
}

#[derive(Serialize)]
struct Extension<'a> {
    #[serde(rename = "@name")]
    name: &'static str,
    condition: Condition<'a>,
}

#[derive(Serialize)]
struct Condition<'a> {
    #[serde(rename = "@field")]
    field: &'static str,
    #[serde(rename = "@expression")]
    expression: &'static str,
    action: Vec<Action<'a>>,
}

#[derive(Serialize)]
struct Action<'a> {
    #[serde(rename = "@application")]
    application: &'static str,
    #[serde(rename = "@data")]
    data: std::borrow::Cow<'a, str>,
}

/// The dialplan for `context` (public or default): every call goes to patchbay's outbound
/// socket, which decides. `None` for other contexts, so FreeSWITCH keeps its own.
pub fn dialplan(settings: &Settings, context: &str) -> Result<Option<String>, Error> {
    let name = match context {
        PUBLIC_CONTEXT => PUBLIC_CONTEXT,
        DEVICE_CONTEXT => DEVICE_CONTEXT,
        _ => return Ok(None),
    };
    let mut data = settings.outbound_address();
    data.push_str(" async full");
    let mut section = Section::named("dialplan");
    section.description = Some("every call goes to patchbay");
    section.context = vec![Context {
        name,
        extension: Extension {
            name: "patchbay",
            condition: Condition {
                field: "destination_number",
                expression: "^(.*)$",
                action: vec![Action {
                    application: "socket",
                    data: data.into(),
                }],
            },
        },
    }];
    render(section).map(Some)
}

// ---------------------------------------------------------------------------------------------
// not found

static NOT_FOUND: LazyLock<String> = LazyLock::new(|| {
    let mut section = Section::named("result");
    section.result = Some(ResultStatus {
        status: "not found",
    });
    // Nothing in this tree can fail to serialize (constant strings only).
    render(section).unwrap_or_default()
});

/// The "not found" document: FreeSWITCH moves on to its static XML.
pub fn not_found() -> &'static str {
    &NOT_FOUND
}

fn render(section: Section<'_>) -> Result<String, Error> {
    let document = Document {
        kind: "freeswitch/xml",
        section,
    };
    let mut out = String::with_capacity(1024);
    out.push_str(DECLARATION);
    let mut serializer = quick_xml::se::Serializer::new(&mut out);
    serializer.indent(' ', 2);
    document.serialize(serializer).map_err(Error::Render)?;
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::parse(text, Path::new("settings.json")).unwrap_or_else(|error| panic!("{error}"))
    }

    const SAMPLE: &str = r#"{
        "device_password": "pw", "device_count": 2,
        "caller_id": {"EN": "John Doe", "FR": "Jean Untel"},
        "dids": [
          {"gateway_name": "gw1", "pstn_number": "15145550199", "username": "u1", "password": "p1",
           "proxy": "sip.example.com", "realm": "example.com", "domain": "example.com",
           "language": "FR"}
        ],
        "freeswitch": {"outbound": {"listen": "127.0.0.1:9000"},
                       "devices": [{"name": "Desk", "codecs": ["PCMA", "G722"]}]}
    }"#;

    /// (element path, attribute name, attribute value) for every attribute, unescaped.
    fn attributes(xml: &str) -> Vec<(String, String, String)> {
        let mut reader = Reader::from_str(xml);
        let mut stack: Vec<String> = Vec::new();
        let mut out = Vec::new();
        loop {
            match reader.read_event() {
                Ok(Event::Start(element)) => {
                    stack.push(element.name().as_ref().to_owned());
                    collect(&element, &stack, &mut out);
                }
                Ok(Event::Empty(element)) => {
                    stack.push(element.name().as_ref().to_owned());
                    collect(&element, &stack, &mut out);
                    stack.pop();
                }
                Ok(Event::End(_)) => {
                    stack.pop();
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(error) => panic!("{error}"),
            }
        }
        out
    }

    fn collect(
        element: &quick_xml::events::BytesStart<'_>,
        stack: &[String],
        out: &mut Vec<(String, String, String)>,
    ) {
        for attribute in element.attributes() {
            let attribute = attribute.unwrap_or_else(|error| panic!("{error}"));
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .unwrap_or_else(|error| panic!("{error}"));
            out.push((
                stack.join("/"),
                attribute.key.as_ref().to_owned(),
                value.into_owned(),
            ));
        }
    }

    #[test]
    fn directory_user_carries_password_codecs_and_caller_id() {
        let settings = settings(SAMPLE);
        let device = &settings.devices()[0];
        let xml = directory_user(&settings, "10.0.0.1", device).unwrap_or_else(|e| panic!("{e}"));
        assert!(xml.starts_with("<?xml version=\"1.0\""));
        assert!(xml.contains("<domain name=\"10.0.0.1\">"), "{xml}");
        assert!(xml.contains("<user id=\"1000\">"), "{xml}");
        assert!(
            xml.contains("<param name=\"password\" value=\"pw1000\"/>"),
            "{xml}"
        );
        assert!(xml.contains("name=\"absolute_codec_string\" value=\"PCMA,G722\""));
        assert!(xml.contains("name=\"effective_caller_id_name\" value=\"Desk\""));
        assert!(xml.contains("name=\"user_context\" value=\"default\""));
        assert!(xml.contains("name=\"outbound_caller_id_name\" value=\"John Doe\""));
    }

    #[test]
    fn sofia_conf_has_gateway_params_and_language_caller_id() {
        let xml = sofia_conf(&settings(SAMPLE)).unwrap_or_else(|e| panic!("{e}"));
        for expected in [
            "<gateway name=\"gw1\">",
            "<param name=\"username\" value=\"u1\"/>",
            "<param name=\"password\" value=\"p1\"/>",
            "<param name=\"proxy\" value=\"sip.example.com\"/>",
            "<param name=\"from-domain\" value=\"example.com\"/>",
            "<param name=\"register\" value=\"true\"/>",
            "<param name=\"ping\" value=\"25\"/>",
            "name=\"effective_caller_id_name\" value=\"Jean Untel\" direction=\"outbound\"",
            "<profile name=\"internal\">",
            "<domain name=\"all\" alias=\"false\" parse=\"true\"/>",
        ] {
            assert!(xml.contains(expected), "missing {expected} in {xml}");
        }
    }

    #[test]
    fn dialplan_sends_both_contexts_to_the_outbound_socket() {
        let settings = settings(SAMPLE);
        for context in ["public", "default"] {
            let xml = dialplan(&settings, context)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("no dialplan for {context}"));
            assert!(
                xml.contains(&format!("<context name=\"{context}\">")),
                "{xml}"
            );
            assert!(
                xml.contains("application=\"socket\" data=\"127.0.0.1:9000 async full\""),
                "{xml}"
            );
        }
        assert!(dialplan(&settings, "features")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
    }

    #[test]
    fn not_found_is_the_documented_shape() {
        assert_eq!(
            not_found(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<document type=\"freeswitch/xml\">\n  <section name=\"result\">\n    <result status=\"not found\"/>\n  </section>\n</document>\n"
        );
    }

    #[test]
    fn hostile_names_round_trip_through_the_serializer() {
        let hostile = "Eve <b>&amp; \"quoted\" 'single' ]]> \nnext line";
        let json_hostile = serde_json::to_string(hostile).unwrap_or_else(|e| panic!("{e}"));
        let text = SAMPLE
            .replace("\"John Doe\"", &json_hostile)
            .replace("\"Jean Untel\"", &json_hostile)
            .replace("\"Desk\"", &json_hostile);
        let settings = settings(&text);
        let directory = directory_user(&settings, "a\"b<c", &settings.devices()[0])
            .unwrap_or_else(|e| panic!("{e}"));
        let sofia = sofia_conf(&settings).unwrap_or_else(|e| panic!("{e}"));
        for xml in [&directory, &sofia] {
            assert!(!xml.contains("<b>") && !xml.contains("]]>") && !xml.contains(" \nnext"));
            let values: Vec<String> = attributes(xml)
                .into_iter()
                .filter(|(_, name, _)| name == "value")
                .map(|(_, _, value)| value)
                .collect();
            assert!(values.iter().any(|value| value == hostile), "{xml}");
        }
        let domains: Vec<_> = attributes(&directory)
            .into_iter()
            .filter(|(path, name, _)| path.ends_with("section/domain") && name == "name")
            .collect();
        assert_eq!(domains[0].2, "a\"b<c");
    }
}
