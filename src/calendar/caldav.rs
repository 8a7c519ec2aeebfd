//! A thin CalDAV client: discovery of the calendar collection and conditional PUTs.
//!
//! One HTTP/1.1 connection per request (a call log writes a few events an hour), plain or
//! TLS (rustls, webpki roots). Redirects are followed, 401/403 become a clear settings error,
//! `If-None-Match: *` makes every PUT idempotent: 412 means the event is already there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use quick_xml::events::Event as XmlEvent;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::Error;
use crate::settings::Secret;

/// Responses bigger than this are refused (a REPORT listing with audio attachments included).
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

/// An HTTP response, fully read.
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A CalDAV account: where to start discovery and how to log in.
pub struct CalDav {
    start: Uri,
    /// "Basic ..." built from the secret; `HeaderValue::set_sensitive` keeps it out of Debug.
    authorization: Option<HeaderValue>,
    /// The calendar collection, once found (ends with '/').
    collection: tokio::sync::Mutex<Option<Uri>>,
    /// Name of the calendar created when the account has none.
    calendar_name: String,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl CalDav {
    /// `url` is a principal URL, a calendar home or the calendar collection itself.
    pub fn new(
        url: &str,
        username: Option<&str>,
        password: &Secret,
        calendar_name: &str,
        timeout: Duration,
    ) -> Result<CalDav, Error> {
        let start = parse_url(url)?;
        let authorization = match username {
            Some(user) => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()));
                let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                    Error::Settings {
                        field: "calendar.caldav.username",
                        reason: "holds characters that cannot go into an HTTP header".into(),
                    }
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Settings {
                field: "calendar.caldav",
                reason: format!("cannot set up TLS: {e}"),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(CalDav {
            start,
            authorization,
            collection: tokio::sync::Mutex::new(None),
            calendar_name: calendar_name.to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// Stores one calendar object under `name` (e.g. "patchbay-call-….ics") unless an object
    /// of that name exists. `Ok(true)`: created now; `Ok(false)`: it was already there.
    pub async fn put_new(&self, name: &str, ics: &str) -> Result<bool, Error> {
        let body = Bytes::copy_from_slice(ics.as_bytes());
        let mut created_collection = false;
        loop {
            let collection = self.collection().await?;
            let url = join(&collection, name)?;
            let response = self
                .request(
                    Method::PUT,
                    &url,
                    &[
                        ("if-none-match", "*"),
                        ("content-type", "text/calendar; charset=utf-8"),
                    ],
                    body.clone(),
                )
                .await?;
            match response.status {
                StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => return Ok(true),
                StatusCode::PRECONDITION_FAILED => return Ok(false),
                // The collection vanished (or never existed): make it once, then try again.
                StatusCode::CONFLICT | StatusCode::NOT_FOUND if !created_collection => {
                    created_collection = true;
                    self.make_calendar(&collection).await?;
                }
                status => return Err(status_error("PUT", &url, status, &response.body)),
            }
        }
    }

    /// The calendar collection URL, discovered on first use and kept.
    pub async fn collection(&self) -> Result<Uri, Error> {
        let mut cached = self.collection.lock().await;
        if let Some(url) = cached.as_ref() {
            return Ok(url.clone());
        }
        let found = self.discover().await?;
        *cached = Some(found.clone());
        Ok(found)
    }

    /// Start URL is a calendar: use it. Else follow current-user-principal and
    /// calendar-home-set to the first calendar there; no calendar: create one.
    async fn discover(&self) -> Result<Uri, Error> {
        let (url, start) = self.propfind(&self.start, 0).await?;
        let Some(here) = start.first() else {
            return Err(Error::Discovery {
                url: self.start.to_string(),
                reason: "the server listed nothing".into(),
            });
        };
        if here.is_calendar {
            return Ok(with_slash(&url));
        }
        let mut home = here.calendar_home.clone();
        if home.is_none() {
            if let Some(principal) = &here.principal {
                let principal = resolve(&url, principal)?;
                let (_, listed) = self.propfind(&principal, 0).await?;
                home = listed.into_iter().find_map(|r| r.calendar_home);
            }
        }
        let home = match home {
            Some(home) => with_slash(&resolve(&url, &home)?),
            None if here.is_collection => with_slash(&url),
            None => {
                return Err(Error::Discovery {
                    url: self.start.to_string(),
                    reason: "no calendar, calendar home or principal there (expected a CalDAV URL)"
                        .into(),
                })
            }
        };
        let (home_url, children) = self.propfind(&home, 1).await?;
        if let Some(calendar) = children.iter().find(|r| r.is_calendar) {
            return Ok(with_slash(&resolve(&home_url, &calendar.href)?));
        }
        let created = join(&with_slash(&home_url), &format!("{}/", self.calendar_name))?;
        self.make_calendar(&created).await?;
        Ok(created)
    }

    async fn make_calendar(&self, url: &Uri) -> Result<(), Error> {
        let body = concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>"#,
            r#"<D:displayname>Calls</D:displayname>"#,
            r#"<C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>"#,
            r#"</D:prop></D:set></C:mkcalendar>"#
        );
        let method = Method::from_bytes(b"MKCALENDAR").map_err(|_| Error::Discovery {
            url: url.to_string(),
            reason: "MKCALENDAR".into(),
        })?;
        let response = self
            .request(
                method,
                url,
                &[("content-type", "application/xml; charset=utf-8")],
                Bytes::from_static(body.as_bytes()),
            )
            .await?;
        match response.status {
            // 405: something already exists there.
            s if s.is_success() || s == StatusCode::METHOD_NOT_ALLOWED => Ok(()),
            status => Err(status_error("MKCALENDAR", url, status, &response.body)),
        }
    }

    async fn propfind(&self, url: &Uri, depth: u8) -> Result<(Uri, Vec<Listed>), Error> {
        let body = concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>"#,
            r#"<D:resourcetype/><D:current-user-principal/><C:calendar-home-set/>"#,
            r#"</D:prop></D:propfind>"#
        );
        let depth = depth.to_string();
        let (final_url, response) = self
            .request_following(
                Method::from_bytes(b"PROPFIND").map_err(|_| Error::Discovery {
                    url: url.to_string(),
                    reason: "PROPFIND".into(),
                })?,
                url,
                &[
                    ("depth", depth.as_str()),
                    ("content-type", "application/xml; charset=utf-8"),
                ],
                Bytes::from_static(body.as_bytes()),
            )
            .await?;
        if response.status != StatusCode::MULTI_STATUS {
            return Err(status_error(
                "PROPFIND",
                &final_url,
                response.status,
                &response.body,
            ));
        }
        let listed = parse_multistatus(&response.body).map_err(|reason| Error::Discovery {
            url: final_url.to_string(),
            reason,
        })?;
        Ok((final_url, listed))
    }

    /// One request, plus redirects (same method and body), returning the final URL.
    pub async fn request_following(
        &self,
        method: Method,
        url: &Uri,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(Uri, Response), Error> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let (response, location) = self
                .send(method.clone(), &url, headers, body.clone())
                .await?;
            match (response.status.is_redirection(), location) {
                (true, Some(location)) => url = resolve(&url, &location)?,
                _ => return Ok((url, response)),
            }
        }
        Err(Error::Discovery {
            url: url.to_string(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// A request with redirects followed, returning only the response.
    pub async fn request(
        &self,
        method: Method,
        url: &Uri,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, Error> {
        Ok(self.request_following(method, url, headers, body).await?.1)
    }

    async fn send(
        &self,
        method: Method,
        url: &Uri,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(Response, Option<String>), Error> {
        let transport = |reason: String| Error::Transport {
            url: url.to_string(),
            reason,
        };
        let host = url.host().ok_or_else(|| transport("no host".into()))?;
        let https = url.scheme_str() == Some("https");
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = match url.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.path_and_query().map_or("/", |p| p.as_str()))
            .header("host", host_header)
            .header("user-agent", "patchbay");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;

        let exchange = async {
            let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| transport(e.to_string()))?;
            if https {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| transport(e.to_string()))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| transport(format!("TLS: {e}")))?;
                exchange(tls, request).await.map_err(transport)
            } else {
                exchange(tcp, request).await.map_err(transport)
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {:?}", self.timeout)))?
    }
}

async fn exchange<S>(
    stream: S,
    request: http::Request<Full<Bytes>>,
) -> Result<(Response, Option<String>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match response {
        Ok(response) => {
            let status = response.status();
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((Response { status, body }, location))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

fn status_error(method: &str, url: &Uri, status: StatusCode, body: &[u8]) -> Error {
    let detail: String = String::from_utf8_lossy(body)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Error::Status {
        method: method.to_owned(),
        url: url.to_string(),
        status,
        detail: detail.trim().to_owned(),
    }
}

/// What a PROPFIND said about one resource.
#[derive(Debug, Default, PartialEq)]
struct Listed {
    href: String,
    is_collection: bool,
    is_calendar: bool,
    principal: Option<String>,
    calendar_home: Option<String>,
}

/// Reads a DAV multistatus by local names (servers pick their own prefixes).
fn parse_multistatus(body: &[u8]) -> Result<Vec<Listed>, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    let mut current = Listed::default();
    let mut text = String::new();
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not a DAV answer: {e}"))?;
        match event {
            XmlEvent::Start(start) => {
                let name = start.local_name().as_ref().to_owned();
                if name == "response" {
                    current = Listed::default();
                }
                text.clear();
                stack.push(name);
            }
            XmlEvent::Empty(empty) if stack.last().map(String::as_str) == Some("resourcetype") => {
                match empty.local_name().as_ref() {
                    "collection" => current.is_collection = true,
                    "calendar" => current.is_calendar = true,
                    _ => {}
                }
            }
            XmlEvent::Text(chunk) => text.push_str(&chunk.xml10_content()),
            XmlEvent::GeneralRef(reference) => {
                if let Ok(Some(c)) = reference.resolve_char_ref() {
                    text.push(c);
                } else {
                    match reference.as_ref() {
                        "amp" => text.push('&'),
                        "lt" => text.push('<'),
                        "gt" => text.push('>'),
                        "quot" => text.push('"'),
                        "apos" => text.push('\''),
                        _ => {}
                    }
                }
            }
            XmlEvent::End(_) => {
                let closed = stack.pop();
                match closed.as_deref() {
                    Some("response") => listed.push(std::mem::take(&mut current)),
                    Some("href") => {
                        let value = text.trim().to_owned();
                        let parent = stack.last().map(String::as_str);
                        match parent {
                            Some("response") => current.href = value,
                            Some("current-user-principal") => current.principal = Some(value),
                            Some("calendar-home-set") => current.calendar_home = Some(value),
                            _ => {}
                        }
                    }
                    _ => {}
                }
                text.clear();
            }
            XmlEvent::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(listed)
}

fn parse_url(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url.parse().map_err(|_| Error::Settings {
        field: "calendar.caldav.url",
        reason: format!("\"{url}\" is not a URL (expected http(s)://host/path/)"),
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(Error::Settings {
            field: "calendar.caldav.url",
            reason: format!("\"{url}\" is not an http(s) URL (expected http(s)://host/path/)"),
        }),
    }
}

/// `reference` (absolute URL, absolute path or relative path) against `base`.
fn resolve(base: &Uri, reference: &str) -> Result<Uri, Error> {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return parse_url(reference);
    }
    let path = if reference.starts_with('/') {
        reference.to_owned()
    } else {
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{reference}")
    };
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    parse_url(&format!("{scheme}://{authority}{path}"))
}

fn with_slash(url: &Uri) -> Uri {
    if url.path().ends_with('/') {
        return url.clone();
    }
    let text = format!(
        "{}://{}{}/",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str()),
        url.path()
    );
    text.parse().unwrap_or_else(|_| url.clone())
}

/// `collection` (ending in '/') + a name made only of URL-safe characters.
fn join(collection: &Uri, name: &str) -> Result<Uri, Error> {
    let path = format!("{}{}", collection.path(), name);
    resolve(collection, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_is_read_whatever_the_prefixes() {
        let body = br#"<?xml version="1.0"?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
 <response><href>/alice/</href><propstat><prop>
   <resourcetype><principal/><collection/></resourcetype>
   <current-user-principal><href>/alice/</href></current-user-principal>
   <C:calendar-home-set><href>/alice/</href></C:calendar-home-set>
 </prop><status>HTTP/1.1 200 OK</status></propstat></response>
 <response><href>/alice/calls/</href><propstat><prop>
   <resourcetype><collection/><C:calendar/></resourcetype>
 </prop></propstat></response>
</multistatus>"#;
        let listed = parse_multistatus(body).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].calendar_home.as_deref(), Some("/alice/"));
        assert_eq!(listed[0].principal.as_deref(), Some("/alice/"));
        assert!(!listed[0].is_calendar);
        assert_eq!(listed[1].href, "/alice/calls/");
        assert!(listed[1].is_calendar);
        assert!(parse_multistatus(b"<a><b></a>").is_err());
    }

    #[test]
    fn references_resolve_against_the_base() {
        let base: Uri = "http://h:1/alice/calls/".parse().unwrap();
        assert_eq!(
            resolve(&base, "/bob/").unwrap().to_string(),
            "http://h:1/bob/"
        );
        assert_eq!(
            resolve(&base, "x.ics").unwrap().to_string(),
            "http://h:1/alice/calls/x.ics"
        );
        assert_eq!(
            with_slash(&"http://h/a".parse().unwrap()).to_string(),
            "http://h/a/"
        );
        assert!(parse_url("ftp://x/").is_err());
    }
}
