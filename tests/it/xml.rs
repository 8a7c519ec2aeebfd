//! Integration tests: the mod_xml_curl endpoint over real HTTP on loopback, and `patchbay run`
//! as a real process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchbay::freeswitch::xml::{document, serve, XmlState};
use patchbay::settings::Settings;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The seed README's settings.json sample, verbatim.
const SEED_SAMPLE: &str = r#"{
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

/// FreeSWITCH 1.10.12's directory lookup for a REGISTER of 1000 (xml-curl-requests.txt #1).
const REGISTER_1000: &str = "hostname=vm&section=directory&tag_name=domain&key_name=name&key_value=127.0.0.1&Event-Name=REQUEST_PARAMS&Core-UUID=6972680b-4c46-420a-a65f-d708359a37b2&FreeSWITCH-Hostname=vm&FreeSWITCH-Switchname=vm&FreeSWITCH-IPv4=192.0.2.2&FreeSWITCH-IPv6=fd00%3A%3A2&Event-Date-Local=2026-11-28%2006%3A19%3A33&Event-Date-GMT=Sat,%2028%20Nov%202026%2006%3A19%3A33%20GMT&Event-Date-Timestamp=1795846773054220&Event-Calling-File=sofia_reg.c&Event-Calling-Function=sofia_reg_parse_auth&Event-Calling-Line-Number=3124&Event-Sequence=637&action=sip_auth&sip_profile=internal&sip_user_agent=SIPp&sip_auth_username=1000&sip_auth_realm=127.0.0.1&sip_auth_nonce=0070fe1b-2970-4c4a-935d-9604083296eb&sip_auth_uri=sip%3A127.0.0.1%3A5060&sip_contact_user=1000&sip_contact_host=127.0.0.1&sip_to_user=1000&sip_to_host=127.0.0.1&sip_via_protocol=udp&sip_from_user=1000&sip_from_host=127.0.0.1&sip_call_id=1-16705%40127.0.0.1&sip_request_host=127.0.0.1&sip_auth_qop=auth&sip_auth_cnonce=6b8b4567&sip_auth_nc=00000001&sip_auth_response=a43a9115d9f7a3649b8e20e090c206bd&sip_auth_method=REGISTER&client_port=5074&key=id&user=1000&domain=127.0.0.1&ip=127.0.0.1";

/// sofia's startup request for sofia.conf (xml-curl-configuration.txt #1).
const SOFIA_CONF: &str = "hostname=vm&section=configuration&tag_name=configuration&key_name=name&key_value=sofia.conf&Event-Name=REQUEST_PARAMS&Core-UUID=960bdce0-0be8-4a34-a2c8-b73f8dfc08db&FreeSWITCH-Hostname=vm&FreeSWITCH-Switchname=vm&FreeSWITCH-IPv4=192.0.2.2&FreeSWITCH-IPv6=fd00%3A%3A2&Event-Date-Local=2026-11-28%2006%3A31%3A02&Event-Date-GMT=Sat,%2028%20Nov%202026%2006%3A31%3A02%20GMT&Event-Date-Timestamp=1795847462263410&Event-Calling-File=sofia.c&Event-Calling-Function=config_sofia&Event-Calling-Line-Number=4567&Event-Sequence=24";

/// A dialplan lookup in a context, shaped as FreeSWITCH sends it (empty fixed keys).
fn dialplan_body(context: &str) -> String {
    format!("hostname=vm&section=dialplan&tag_name=&key_name=&key_value=&Event-Name=REQUEST_PARAMS&Channel-Name=sofia/external/sipp%40127.0.0.1%3A5070&Caller-Destination-Number=9999&Caller-Context={context}&Hunt-Context={context}&Hunt-Destination-Number=9999")
}

/// A running endpoint on 127.0.0.1:0; dropping it stops the server.
struct Endpoint {
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(settings_text: &str) -> Endpoint {
    let settings = Settings::parse(settings_text, Path::new("settings.json"))
        .unwrap_or_else(|error| panic!("{error}"));
    let state = XmlState::new(Arc::new(settings)).unwrap_or_else(|error| panic!("{error}"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    Endpoint {
        address,
        _stop: stop,
    }
}

/// One HTTP/1.1 request written by hand (so hostile bytes go out unchanged); returns the
/// status code and body, or `None` when the server closed the connection without answering.
async fn raw_request(address: SocketAddr, head: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let mut request = head.replace('\n', "\r\n").into_bytes();
    request.extend_from_slice(body);
    // The server may answer (413) and close before reading everything: not a failure.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s"));
    if read.is_err() && response.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

async fn post_with(
    address: SocketAddr,
    extra_headers: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let head = format!(
        "POST /freeswitch HTTP/1.1\nHost: {address}\nUser-Agent: freeswitch-xml/1.0\nAccept: */*\n{extra_headers}Content-Type: {content_type}\nContent-Length: {}\nConnection: close\n\n",
        body.len()
    );
    raw_request(address, &head, body)
        .await
        .unwrap_or_else(|| panic!("connection closed without an answer"))
}

async fn post(address: SocketAddr, body: &str) -> (u16, String) {
    post_with(
        address,
        "",
        "application/x-www-form-urlencoded",
        body.as_bytes(),
    )
    .await
}

/// Every element with its attributes (normalized as a conforming XML parser would), in order.
fn elements(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    fn read(element: &BytesStart<'_>) -> (String, Vec<(String, String)>) {
        let attributes = element
            .attributes()
            .map(|attribute| {
                let attribute = attribute.unwrap_or_else(|error| panic!("{error}"));
                let value = attribute
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .unwrap_or_else(|error| panic!("{error}"));
                (attribute.key.as_ref().to_owned(), value.into_owned())
            })
            .collect();
        (element.name().as_ref().to_owned(), attributes)
    }
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(element)) | Ok(Event::Empty(element)) => out.push(read(&element)),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(error) => panic!("not well-formed XML ({error}): {xml}"),
        }
    }
    out
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The params of each gateway, by gateway name, read back from a sofia.conf document.
fn gateways(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut in_gateway = false;
    for (name, attributes) in elements(xml) {
        match name.as_str() {
            "gateway" => {
                in_gateway = true;
                let gateway_name = attribute(&attributes, "name").unwrap_or_default();
                out.push((gateway_name.to_owned(), Vec::new()));
            }
            "param" if in_gateway => {
                if let (Some(param), Some(value), Some(last)) = (
                    attribute(&attributes, "name"),
                    attribute(&attributes, "value"),
                    out.last_mut(),
                ) {
                    last.1.push((param.to_owned(), value.to_owned()));
                }
            }
            "domains" | "settings" => in_gateway = false,
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn sofia_conf_lists_every_did_of_the_seed_sample_as_a_gateway() {
    let second_did = r#"{
             "gateway_name": "my_did_gateway2", "pstn_number": "33123456789",
             "username": "u2", "password": "p2", "proxy": "sip.example.fr:5070",
             "realm": "example.fr", "domain": "example.fr", "register": false, "ping": 0 }"#;
    let settings = SEED_SAMPLE.replace(
        "        }\n    ]",
        &format!("        }},\n{second_did}\n    ]"),
    );
    let endpoint = start(&settings).await;
    let (status, xml) = post(endpoint.address, SOFIA_CONF).await;
    assert_eq!(status, 200);
    let found = gateways(&xml);
    let expected = [
        (
            "my_did_gateway1",
            vec![
                ("username", "my_username"),
                ("password", "my_password"),
                ("realm", "example.com"),
                ("proxy", "foo.example.com"),
                ("from-domain", "example.com"),
                ("extension", "1234567890"),
                ("register", "true"),
                ("expire-seconds", "120"),
                ("retry-seconds", "30"),
                ("caller-id-in-from", "true"),
                ("context", "public"),
                ("ping", "25"),
            ],
        ),
        (
            "my_did_gateway2",
            vec![
                ("username", "u2"),
                ("password", "p2"),
                ("realm", "example.fr"),
                ("proxy", "sip.example.fr:5070"),
                ("from-domain", "example.fr"),
                ("extension", "33123456789"),
                ("register", "false"),
                ("expire-seconds", "120"),
                ("retry-seconds", "30"),
                ("caller-id-in-from", "true"),
                ("context", "public"),
            ],
        ),
    ];
    assert_eq!(found.len(), expected.len(), "{xml}");
    for ((name, params), (expected_name, expected_params)) in found.iter().zip(&expected) {
        assert_eq!(name, expected_name);
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        assert_eq!(&params, expected_params);
    }
    // Both profiles, as the accepted capture has them.
    let profiles: Vec<String> = elements(&xml)
        .into_iter()
        .filter(|(name, _)| name == "profile")
        .filter_map(|(_, attributes)| attribute(&attributes, "name").map(str::to_owned))
        .collect();
    assert_eq!(profiles, ["internal", "external"]);
}

#[tokio::test]
async fn register_lookup_answers_the_device_password() {
    let endpoint = start(SEED_SAMPLE).await;
    let (status, xml) = post(endpoint.address, REGISTER_1000).await;
    assert_eq!(status, 200);
    let elements = elements(&xml);
    let domain = elements
        .iter()
        .find(|(name, _)| name == "domain")
        .and_then(|(_, attributes)| attribute(attributes, "name"));
    assert_eq!(domain, Some("127.0.0.1"));
    let user = elements
        .iter()
        .find(|(name, _)| name == "user")
        .and_then(|(_, attributes)| attribute(attributes, "id"));
    assert_eq!(user, Some("1000"));
    let password = elements
        .iter()
        .find(|(name, attributes)| {
            name == "param" && attribute(attributes, "name") == Some("password")
        })
        .and_then(|(_, attributes)| attribute(attributes, "value"));
    assert_eq!(password, Some("password1000"));

    let (_, xml) = post(
        endpoint.address,
        &REGISTER_1000.replace("user=1000", "user=1009"),
    )
    .await;
    assert!(xml.contains("value=\"password1009\""), "{xml}");
    // 10 devices: 1000..1009; 1010 does not exist.
    let (status, xml) = post(
        endpoint.address,
        &REGISTER_1000.replace("user=1000", "user=1010"),
    )
    .await;
    assert_eq!((status, xml.as_str()), (200, document::not_found()));
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401() {
    let settings = SEED_SAMPLE.replace(
        "\"voicemail_delay\": 30,",
        "\"voicemail_delay\": 30, \"freeswitch\": {\"xml\": {\"username\": \"freeswitch\", \"password\": \"x-secret\"}},",
    );
    let endpoint = start(&settings).await;
    let (status, body) = post(endpoint.address, REGISTER_1000).await;
    assert_eq!(status, 401);
    assert!(!body.contains("password1000"));
    // base64("freeswitch:wrong")
    let wrong = "Authorization: Basic ZnJlZXN3aXRjaDp3cm9uZw==\n";
    let (status, _) = post_with(
        endpoint.address,
        wrong,
        "application/x-www-form-urlencoded",
        REGISTER_1000.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    // base64("freeswitch:x-secret")
    let right = "Authorization: Basic ZnJlZXN3aXRjaDp4LXNlY3JldA==\n";
    let (status, xml) = post_with(
        endpoint.address,
        right,
        "application/x-www-form-urlencoded",
        REGISTER_1000.as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(xml.contains("password1000"));
}

#[tokio::test]
async fn unknown_sections_and_lookups_get_not_found() {
    let endpoint = start(SEED_SAMPLE).await;
    for body in [
        "hostname=vm&section=languages&tag_name=&key_name=&key_value=&macro_name=voicemail_hello&lang=en",
        "hostname=vm&section=chatplan&tag_name=&key_name=&key_value=",
        "hostname=vm&section=configuration&tag_name=configuration&key_name=name&key_value=voicemail.conf",
        "hostname=vm&section=directory&tag_name=domain&key_name=name&key_value=127.0.0.1&purpose=gateways&profile=external",
        &dialplan_body("features"),
    ] {
        let (status, xml) = post(endpoint.address, body).await;
        assert_eq!((status, xml.as_str()), (200, document::not_found()), "{body}");
    }
    let (_, xml) = post(endpoint.address, &dialplan_body("public")).await;
    assert!(
        xml.contains("<action application=\"socket\" data=\"127.0.0.1:8084 async full\"/>"),
        "{xml}"
    );
}

#[tokio::test]
async fn hostile_caller_id_comes_out_escaped_in_every_document() {
    let hostile = "A <b>&amp;\"q\" 'x' ]]> \nB";
    let json = serde_json::to_string(hostile).unwrap_or_else(|error| panic!("{error}"));
    let settings = format!(
        r#"{{"device_password": "pw", "caller_id": {{"EN": {json}}},
            "freeswitch": {{"devices": [{{"name": {json}}}]}},
            "dids": [{{"gateway_name": "gw", "pstn_number": "1", "username": "u", "password": "p",
                      "proxy": "x.example", "realm": "example", "domain": "example"}}]}}"#
    );
    let endpoint = start(&settings).await;
    let (_, directory) = post(endpoint.address, REGISTER_1000).await;
    let (_, sofia) = post(endpoint.address, SOFIA_CONF).await;
    let (_, dialplan) = post(endpoint.address, &dialplan_body("default")).await;
    for (what, xml, expected_variables) in [
        (
            "directory",
            &directory,
            &["effective_caller_id_name", "outbound_caller_id_name"][..],
        ),
        ("sofia.conf", &sofia, &["effective_caller_id_name"][..]),
    ] {
        assert!(
            !xml.contains("<b>") && !xml.contains("]]>") && !xml.contains(" \nB"),
            "{what}: {xml}"
        );
        for variable in expected_variables {
            let value = elements(xml)
                .into_iter()
                .find(|(name, attributes)| {
                    name == "variable" && attribute(attributes, "name") == Some(variable)
                })
                .and_then(|(_, attributes)| attribute(&attributes, "value").map(str::to_owned));
            assert_eq!(value.as_deref(), Some(hostile), "{what}: {variable}");
        }
    }
    // The dialplan carries no caller-supplied text, and is well-formed.
    assert!(elements(&dialplan).iter().any(|(name, _)| name == "action"));
    // A hostile domain in the request is escaped too (`&` cannot occur: the fixed fields are
    // sent unencoded, so it would end the field).
    let body = REGISTER_1000.replace("key_value=127.0.0.1", "key_value=a\"b<c>'d");
    let (_, xml) = post(endpoint.address, &body).await;
    let domain = elements(&xml)
        .into_iter()
        .find(|(name, _)| name == "domain")
        .and_then(|(_, attributes)| attribute(&attributes, "name").map(str::to_owned));
    assert_eq!(domain.as_deref(), Some("a\"b<c>'d"));
}

#[tokio::test]
async fn hostile_posts_get_not_found_or_4xx_and_the_server_carries_on() {
    let endpoint = start(SEED_SAMPLE).await;
    let address = endpoint.address;
    let form = "application/x-www-form-urlencoded";
    // Garbage, invalid UTF-8 in a field patchbay reads, bad escapes.
    for body in [
        &b"\x00\x01garbage\xff"[..],
        b"section=directory&user=\xff\xfe&key_value=127.0.0.1",
        b"section=\xc3\x28&user=1000",
        b"section=directory&user=%G0",
        b"&&&&====&&&",
    ] {
        let (status, xml) = post_with(address, "", form, body).await;
        assert_eq!((status, xml.as_str()), (200, document::not_found()));
    }
    // Unknown content types get not found too (FreeSWITCH always sends a form).
    for content_type in [
        "application/json",
        "text/plain; charset=latin1",
        "multipart/form-data; boundary=x",
    ] {
        let (status, xml) =
            post_with(address, "", content_type, b"{\"section\": \"directory\"}").await;
        assert_eq!((status, xml.as_str()), (200, document::not_found()));
    }
    // A 20 MB body is refused with 413 (or the connection is dropped), never buffered whole.
    let huge = vec![b'a'; 20 * 1024 * 1024];
    let head = format!(
        "POST /freeswitch HTTP/1.1\nHost: {address}\nContent-Type: {form}\nContent-Length: {}\nConnection: close\n\n",
        huge.len()
    );
    if let Some((status, _)) = raw_request(address, &head, &huge).await {
        assert_eq!(status, 413);
    }
    // A Content-Length larger than the data, then the client gives up.
    {
        let mut stream = TcpStream::connect(address)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let head = format!(
            "POST /x HTTP/1.1\r\nHost: {address}\r\nContent-Length: 5000\r\n\r\nsection=dir"
        );
        let _ = stream.write_all(head.as_bytes()).await;
    }
    // Not HTTP at all.
    let _ = raw_request(address, "\u{1}\u{2} nonsense\n\n", b"").await;
    // A GET is not what mod_xml_curl sends.
    let get = format!("GET /freeswitch HTTP/1.1\nHost: {address}\nConnection: close\n\n");
    let (status, _) = raw_request(address, &get, b"")
        .await
        .unwrap_or_else(|| panic!("no answer to GET"));
    assert_eq!(status, 405);
    // Still serving.
    let (status, xml) = post(address, REGISTER_1000).await;
    assert_eq!(status, 200);
    assert!(xml.contains("password1000"));
}

fn patchbay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_patchbay"))
}

#[test]
fn run_with_a_bad_settings_file_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let path = dir.path().join("settings.json");
    let bad = SEED_SAMPLE.replace("\"my_password\"", "12345");
    std::fs::write(&path, bad).unwrap_or_else(|error| panic!("{error}"));
    let output = patchbay()
        .args(["run", "--settings"])
        .arg(&path)
        .args(["--repo", "."])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "patchbay: {}: dids[0].password: expected a string, found a number",
            path.display()
        )
    );
    assert!(!stderr.contains("12345"));
}

#[test]
fn run_serves_lookups_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let port = {
        let probe =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        probe
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"))
            .port()
    };
    let settings = SEED_SAMPLE.replace(
        "\"voicemail_delay\": 30,",
        &format!("\"voicemail_delay\": 30, \"freeswitch\": {{\"xml\": {{\"listen\": \"127.0.0.1:{port}\"}}}},"),
    );
    let path = dir.path().join("settings.json");
    std::fs::write(&path, settings).unwrap_or_else(|error| panic!("{error}"));
    let mut child = patchbay()
        .args(["run", "--settings"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    while std::net::TcpStream::connect(address).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("patchbay did not listen on {address} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, xml) = runtime.block_on(post(address, REGISTER_1000));
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(terminated.success());
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(status, 200);
    assert!(xml.contains("password1000"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let journal = std::fs::read_to_string(dir.path().join("journal.log"))
        .unwrap_or_else(|error| panic!("{error}"));
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 2, "{journal}");
    assert!(lines[0].ends_with(&format!(
        "patchbay started: answering FreeSWITCH's lookups on {address}"
    )));
    assert!(lines[1].ends_with("patchbay stopped"));
}
