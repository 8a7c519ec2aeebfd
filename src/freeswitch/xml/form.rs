//! The mod_xml_curl POST body, read the way FreeSWITCH writes it: the five fixed fields
//! (`hostname`, `section`, `tag_name`, `key_name`, `key_value`) are sent without encoding,
//! every other value is percent-encoded (space as `%20`, so `+` is a plus; commas are left as
//! they are). Only the fields patchbay uses are kept, borrowed from the body when they hold no
//! escape, so a lookup allocates nothing. Pure, no I/O; the `xml_form` fuzz target drives it.

use std::borrow::Cow;

/// The fields of one request that decide the answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub hostname: &'a str,
    pub section: &'a str,
    pub tag_name: &'a str,
    pub key_name: &'a str,
    pub key_value: &'a str,
    /// Directory: `sip_auth`, `user_call`, `message-count`, ...
    pub action: Option<Cow<'a, str>>,
    /// Directory: what `user` is (`id`).
    pub key: Option<Cow<'a, str>>,
    pub user: Option<Cow<'a, str>>,
    pub domain: Option<Cow<'a, str>>,
    /// Directory lookups sofia makes for gateways and network lists.
    pub purpose: Option<Cow<'a, str>>,
    /// Configuration: the sofia profile being started.
    pub profile: Option<Cow<'a, str>>,
    /// Dialplan: the context the call is in.
    pub hunt_context: Option<Cow<'a, str>>,
    pub caller_context: Option<Cow<'a, str>>,
}

/// Why a body is not a mod_xml_curl request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("field {field}: not UTF-8 (expected FreeSWITCH's URL-encoded text)")]
    NotUtf8 { field: String },
    #[error("field {field}: bad percent escape (expected %XX with two hex digits)")]
    BadEscape { field: String },
    #[error("no section field (expected a mod_xml_curl POST: hostname=...&section=...)")]
    NoSection,
}

/// Reads a mod_xml_curl POST body.
pub fn parse(body: &[u8]) -> Result<Request<'_>, FormError> {
    let mut request = Request::default();
    let mut has_section = false;
    for pair in body.split(|&byte| byte == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        let fixed = match name {
            b"hostname" => Some(&mut request.hostname),
            b"section" => {
                if has_section {
                    continue;
                }
                has_section = true;
                Some(&mut request.section)
            }
            b"tag_name" => Some(&mut request.tag_name),
            b"key_name" => Some(&mut request.key_name),
            b"key_value" => Some(&mut request.key_value),
            _ => None,
        };
        if let Some(slot) = fixed {
            if slot.is_empty() {
                *slot = raw_str(name, value)?;
            }
            continue;
        }
        let slot = match name {
            b"action" => &mut request.action,
            b"key" => &mut request.key,
            b"user" => &mut request.user,
            b"domain" => &mut request.domain,
            b"purpose" => &mut request.purpose,
            b"profile" => &mut request.profile,
            b"Hunt-Context" => &mut request.hunt_context,
            b"Caller-Context" => &mut request.caller_context,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(decode(name, value)?);
        }
    }
    if !has_section {
        return Err(FormError::NoSection);
    }
    Ok(request)
}

fn field_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn raw_str<'a>(name: &[u8], value: &'a [u8]) -> Result<&'a str, FormError> {
    std::str::from_utf8(value).map_err(|_| FormError::NotUtf8 {
        field: field_name(name),
    })
}

/// Percent-decodes `value`, borrowing when there is nothing to decode.
fn decode<'a>(name: &[u8], value: &'a [u8]) -> Result<Cow<'a, str>, FormError> {
    if !value.contains(&b'%') {
        return raw_str(name, value).map(Cow::Borrowed);
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let escape = tail.get(..2).and_then(|hex| {
                let high = (hex[0] as char).to_digit(16)?;
                let low = (hex[1] as char).to_digit(16)?;
                u8::try_from(high * 16 + low).ok()
            });
            match escape {
                Some(decoded) => {
                    bytes.push(decoded);
                    rest = &tail[2..];
                }
                None => {
                    return Err(FormError::BadEscape {
                        field: field_name(name),
                    })
                }
            }
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8 {
            field: field_name(name),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The REGISTER lookup FreeSWITCH 1.10.12 sent (xml-curl-requests.txt, request 1).
    pub(crate) const SIP_AUTH_BODY: &str = "hostname=vm&section=directory&tag_name=domain&key_name=name&key_value=127.0.0.1&Event-Name=REQUEST_PARAMS&Core-UUID=6972680b-4c46-420a-a65f-d708359a37b2&FreeSWITCH-Hostname=vm&FreeSWITCH-Switchname=vm&FreeSWITCH-IPv4=192.0.2.2&FreeSWITCH-IPv6=fd00%3A%3A2&Event-Date-Local=2026-11-28%2006%3A19%3A33&Event-Date-GMT=Sat,%2028%20Nov%202026%2006%3A19%3A33%20GMT&Event-Date-Timestamp=1795846773054220&Event-Calling-File=sofia_reg.c&Event-Calling-Function=sofia_reg_parse_auth&Event-Calling-Line-Number=3124&Event-Sequence=637&action=sip_auth&sip_profile=internal&sip_user_agent=SIPp&sip_auth_username=1000&sip_auth_realm=127.0.0.1&sip_auth_nonce=0070fe1b-2970-4c4a-935d-9604083296eb&sip_auth_uri=sip%3A127.0.0.1%3A5060&sip_contact_user=1000&sip_contact_host=127.0.0.1&sip_to_user=1000&sip_to_host=127.0.0.1&sip_via_protocol=udp&sip_from_user=1000&sip_from_host=127.0.0.1&sip_call_id=1-16705%40127.0.0.1&sip_request_host=127.0.0.1&sip_auth_qop=auth&sip_auth_cnonce=6b8b4567&sip_auth_nc=00000001&sip_auth_response=a43a9115d9f7a3649b8e20e090c206bd&sip_auth_method=REGISTER&client_port=5074&key=id&user=1000&domain=127.0.0.1&ip=127.0.0.1";

    #[test]
    fn captured_sip_auth_lookup_borrows_every_field() {
        let request = parse(SIP_AUTH_BODY.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.hostname, "vm");
        assert_eq!(request.section, "directory");
        assert_eq!(request.tag_name, "domain");
        assert_eq!(request.key_name, "name");
        assert_eq!(request.key_value, "127.0.0.1");
        assert_eq!(request.action.as_deref(), Some("sip_auth"));
        assert_eq!(request.key.as_deref(), Some("id"));
        assert_eq!(request.user.as_deref(), Some("1000"));
        assert_eq!(request.domain.as_deref(), Some("127.0.0.1"));
        assert!(matches!(request.user, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn fixed_fields_are_raw_and_params_are_decoded() {
        let request = parse(b"hostname=a%20b&section=dialplan&tag_name=&key_name=&key_value=&Hunt-Context=pub%6Cic&user=a+b,c")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.hostname, "a%20b");
        assert_eq!(request.hunt_context.as_deref(), Some("public"));
        assert_eq!(request.user.as_deref(), Some("a+b,c"));
    }

    #[test]
    fn the_first_occurrence_wins() {
        let request = parse(b"section=directory&user=1000&section=dialplan&user=1001")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.section, "directory");
        assert_eq!(request.user.as_deref(), Some("1000"));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert_eq!(parse(b"garbage"), Err(FormError::NoSection));
        assert_eq!(parse(b""), Err(FormError::NoSection));
        assert_eq!(
            parse(b"section=directory&user=%zz"),
            Err(FormError::BadEscape {
                field: "user".into()
            })
        );
        assert_eq!(
            parse(b"section=directory&user=%4"),
            Err(FormError::BadEscape {
                field: "user".into()
            })
        );
        assert_eq!(
            parse(b"section=\xff\xfe"),
            Err(FormError::NotUtf8 {
                field: "section".into()
            })
        );
        assert_eq!(
            parse(b"section=directory&user=%ff"),
            Err(FormError::NotUtf8 {
                field: "user".into()
            })
        );
        // Fields patchbay does not read are never decoded, so their damage does not matter.
        assert!(parse(b"section=directory&junk=%zz\xff").is_ok());
    }
}
