//! The simulator's side of mod_xml_curl: POSTs lookups to the configured endpoint with the
//! exact form fields FreeSWITCH 1.10.12 sends, and reads the answers (directory users and the
//! dialplan's `socket` action). A failure or a "not found" document is reported as such, never
//! guessed around.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use quick_xml::events::Event as XmlEvent;

use crate::freeswitch::esl::frame::url_encode_into;

use super::Inner;

/// How long a lookup may take (FreeSWITCH's own default is no limit; tests want an answer).
const TIMEOUT: Duration = Duration::from_secs(5);
/// mod_xml_curl's default `response-max-bytes`.
const MAX_RESPONSE: usize = 1024 * 1024;

/// Why a lookup gave nothing usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no xml endpoint configured")]
    NoEndpoint,
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: the answer is not a FreeSWITCH document: {reason}")]
    BadXml { url: String, reason: String },
    #[error("{url}: not found")]
    NotFound { url: String },
}

/// The first five form fields, sent unencoded, then `(name, value)` params to URL-encode.
pub(crate) struct Form {
    body: Vec<u8>,
}

impl Form {
    pub(crate) fn new(hostname: &str, section: &str, tag: &str, key: &str, value: &str) -> Self {
        let body = format!(
            "hostname={hostname}&section={section}&tag_name={tag}&key_name={key}&key_value={value}"
        )
        .into_bytes();
        Form { body }
    }

    pub(crate) fn param(&mut self, name: &str, value: &str) -> &mut Self {
        self.body.push(b'&');
        self.body.extend_from_slice(name.as_bytes());
        self.body.push(b'=');
        url_encode_into(value, &mut self.body);
        self
    }

    /// Appends an event's headers as params (core headers, channel data, variables).
    pub(crate) fn event(&mut self, event: &super::Event) -> &mut Self {
        for (name, value) in event.headers() {
            self.param(name, value);
        }
        self
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.body
    }
}

/// POSTs a lookup and returns the response body; non-200 and transport errors are errors.
pub(crate) async fn post(inner: &Inner, form: Form) -> Result<String, LookupError> {
    let Some(url) = inner.config().xml_url.clone() else {
        return Err(LookupError::NoEndpoint);
    };
    let http_err = |reason: String| LookupError::Http {
        url: url.clone(),
        reason,
    };
    let mut request = http::Request::post(url.as_str())
        .header(http::header::USER_AGENT, "freeswitch-xml/1.0")
        .header(http::header::ACCEPT, "*/*")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if let Some((user, password)) = &inner.config().xml_credentials {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", password.expose()));
        request = request.header(http::header::AUTHORIZATION, format!("Basic {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(form.into_bytes())))
        .map_err(|err| http_err(format!("bad request: {err}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| http_err("timed out".into()))?
        .map_err(|err| http_err(format!("HTTP error 0: {err}")))?;
    let status = response.status();
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| http_err("timed out reading the answer".into()))?
        .map_err(|err| http_err(format!("reading the answer: {err}")))?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(http_err(format!("received HTTP error {}", status.as_u16())));
    }
    if body.len() > MAX_RESPONSE {
        return Err(http_err(format!(
            "answer of {} bytes is over the 1 MiB limit",
            body.len()
        )));
    }
    String::from_utf8(body.to_vec()).map_err(|_| LookupError::BadXml {
        url: url.clone(),
        reason: "not UTF-8".into(),
    })
}

/// A directory user as the xml endpoint described it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: String,
    pub params: HashMap<String, String>,
    /// Variables in document order.
    pub variables: Vec<(String, String)>,
}

/// Finds `user_id` in a directory document; `Ok(None)` when the document is "not found" or has
/// no such user.
pub fn parse_directory(xml: &str, user_id: &str) -> Result<Option<DirectoryUser>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut in_directory = false;
    let mut user: Option<DirectoryUser> = None;
    let mut depth_in_user = 0usize;
    let mut seen_document = false;
    loop {
        let event = reader.read_event().map_err(|err| err.to_string())?;
        match event {
            XmlEvent::Eof => break,
            XmlEvent::Start(ref e) | XmlEvent::Empty(ref e) => {
                let is_start = matches!(event, XmlEvent::Start(_));
                let qname = e.name();
                let tag: &str = qname.as_ref();
                let attrs = attributes(e)?;
                match tag {
                    "document" => seen_document = true,
                    "section" => {
                        let section = attrs.get("name").map(String::as_str);
                        if section == Some("result") {
                            return Ok(None);
                        }
                        in_directory = section == Some("directory");
                    }
                    "user"
                        if in_directory
                            && user.is_none()
                            && is_start
                            && attrs.get("id").map(String::as_str) == Some(user_id) =>
                    {
                        user = Some(DirectoryUser {
                            id: user_id.to_owned(),
                            ..Default::default()
                        });
                        depth_in_user = 1;
                        continue;
                    }
                    "param" if depth_in_user > 0 => {
                        if let (Some(user), Some(n), Some(v)) =
                            (&mut user, attrs.get("name"), attrs.get("value"))
                        {
                            user.params.insert(n.clone(), v.clone());
                        }
                    }
                    "variable" if depth_in_user > 0 => {
                        if let (Some(user), Some(n), Some(v)) =
                            (&mut user, attrs.get("name"), attrs.get("value"))
                        {
                            user.variables.push((n.clone(), v.clone()));
                        }
                    }
                    _ => {}
                }
                if depth_in_user > 0 && is_start {
                    depth_in_user += 1;
                }
            }
            XmlEvent::End(_) if depth_in_user > 0 => {
                depth_in_user -= 1;
                if depth_in_user == 0 {
                    return Ok(user);
                }
            }
            _ => {}
        }
    }
    if !seen_document {
        return Err("no <document> element".into());
    }
    Ok(user)
}

/// What the dialplan answered for a call: the `socket` action's target, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAction {
    /// Hosts to try in order (`a:p|b:p`).
    pub hosts: Vec<String>,
    pub async_mode: bool,
    pub full: bool,
}

/// Reads the dialplan document for `destination` in `context` and returns the first matching
/// extension's actions as (application, data) pairs.
pub fn parse_dialplan(
    xml: &str,
    context: &str,
    destination: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut in_context = false;
    let mut condition_matches: Option<bool> = None;
    let mut actions = Vec::new();
    let mut in_extension = false;
    loop {
        let event = reader.read_event().map_err(|err| err.to_string())?;
        match event {
            XmlEvent::Eof => break,
            XmlEvent::Start(ref e) | XmlEvent::Empty(ref e) => {
                let is_start = matches!(event, XmlEvent::Start(_));
                let attrs = attributes(e)?;
                let qname = e.name();
                let tag: &str = qname.as_ref();
                match tag {
                    "section" if attrs.get("name").map(String::as_str) == Some("result") => {
                        return Err("not found".into());
                    }
                    "context" => {
                        let name = attrs.get("name").map(String::as_str);
                        in_context = name == Some(context) || name == Some("global");
                    }
                    "extension" if in_context && is_start => {
                        in_extension = true;
                        condition_matches = None;
                    }
                    "condition" if in_extension => {
                        let field = attrs.get("field").map(String::as_str).unwrap_or("");
                        let expression = attrs.get("expression").map(String::as_str).unwrap_or("");
                        let matched = if field.is_empty() && expression.is_empty() {
                            true
                        } else if field == "destination_number" || field == "${destination_number}"
                        {
                            regex::Regex::new(expression)
                                .map(|re| re.is_match(destination))
                                .unwrap_or(false)
                        } else {
                            true
                        };
                        condition_matches = Some(condition_matches.unwrap_or(true) && matched);
                    }
                    "action" if in_extension && condition_matches == Some(true) => {
                        let app = attrs.get("application").cloned().unwrap_or_default();
                        let data = attrs.get("data").cloned().unwrap_or_default();
                        actions.push((app, data));
                    }
                    _ => {}
                }
            }
            XmlEvent::End(ref e) if AsRef::<str>::as_ref(&e.name()) == "extension" => {
                in_extension = false;
                if !actions.is_empty() {
                    return Ok(actions);
                }
            }
            _ => {}
        }
    }
    Ok(actions)
}

/// Parses a `socket` action's data: `host:port[|host:port] [async] [full]`.
pub fn parse_socket_data(data: &str) -> Option<SocketAction> {
    let mut words = data.split_whitespace();
    let hosts: Vec<String> = words.next()?.split('|').map(str::to_owned).collect();
    let mut action = SocketAction {
        hosts,
        async_mode: false,
        full: false,
    };
    for word in words {
        match word {
            "async" => action.async_mode = true,
            "full" => action.full = true,
            _ => {}
        }
    }
    Some(action)
}

fn attributes(e: &quick_xml::events::BytesStart<'_>) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| err.to_string())?;
        let key = AsRef::<str>::as_ref(&attr.key).to_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| err.to_string())?
            .into_owned();
        map.insert(key, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_keeps_fixed_fields_raw_and_encodes_params() {
        let mut form = Form::new("fsim", "directory", "domain", "name", "127.0.0.1");
        form.param("Event-Date-GMT", "Sat, 28 Nov 2026 06:19:33 GMT")
            .param("sip_call_id", "1-16705@127.0.0.1");
        assert_eq!(
            String::from_utf8(form.into_bytes()).unwrap(),
            "hostname=fsim&section=directory&tag_name=domain&key_name=name&key_value=127.0.0.1&Event-Date-GMT=Sat,%2028%20Nov%202026%2006%3A19%3A33%20GMT&sip_call_id=1-16705%40127.0.0.1"
        );
    }

    #[test]
    fn directory_user_params_and_variables() {
        let xml = r#"<document type="freeswitch/xml"><section name="directory"><domain name="d">
            <params><param name="dial-string" value="x"/></params>
            <users><user id="999"><params><param name="password" value="no"/></params></user>
            <user id="1000" cacheable="60000"><params><param name="password" value="p&amp;1"/></params>
            <variables><variable name="effective_caller_id_name" value="Desk &lt;1&gt;"/></variables></user></users>
            </domain></section></document>"#;
        let user = parse_directory(xml, "1000").unwrap().unwrap();
        assert_eq!(user.params.get("password").map(String::as_str), Some("p&1"));
        assert_eq!(
            user.variables,
            vec![("effective_caller_id_name".to_owned(), "Desk <1>".to_owned())]
        );
        assert_eq!(parse_directory(xml, "2000").unwrap(), None);
        let not_found = r#"<document type="freeswitch/xml"><section name="result"><result status="not found"/></section></document>"#;
        assert_eq!(parse_directory(not_found, "1000").unwrap(), None);
        assert!(
            parse_directory("<document><section", "1000").is_err()
                || parse_directory("<document><section", "1000")
                    .unwrap()
                    .is_none()
        );
    }

    #[test]
    fn dialplan_socket_action_is_found() {
        let xml = r#"<document type="freeswitch/xml"><section name="dialplan"><context name="public">
            <extension name="other"><condition field="destination_number" expression="^5000$"><action application="hangup"/></condition></extension>
            <extension name="patchbay"><condition field="destination_number" expression="^.*$">
            <action application="socket" data="127.0.0.1:8084|127.0.0.1:8085 async full"/></condition></extension>
            </context></section></document>"#;
        let actions = parse_dialplan(xml, "public", "+33123").unwrap();
        assert_eq!(
            actions,
            vec![(
                "socket".to_owned(),
                "127.0.0.1:8084|127.0.0.1:8085 async full".to_owned()
            )]
        );
        let socket = parse_socket_data(&actions[0].1).unwrap();
        assert_eq!(socket.hosts, vec!["127.0.0.1:8084", "127.0.0.1:8085"]);
        assert!(socket.async_mode && socket.full);
        assert!(parse_dialplan(xml, "nowhere", "1").unwrap().is_empty());
    }
}
