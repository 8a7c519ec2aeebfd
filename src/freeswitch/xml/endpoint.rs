//! The HTTP side of mod_xml_curl: Basic auth, the form, section dispatch, cached answers.
//!
//! Every document is rendered once per settings generation and kept as shared bytes, so a
//! directory lookup (one per REGISTER and per call to a device) is a form scan, a map lookup
//! and a reference-count increment. Any failure answers "not found" (status 200, so
//! FreeSWITCH falls back to its static XML quietly) and logs the cause; only a wrong password
//! (401), a wrong method (405) and an oversized body (413) answer otherwise.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use tokio::net::TcpListener;

use super::document::{self, DEVICE_CONTEXT, PUBLIC_CONTEXT};
use super::form;
use super::Error;
use crate::settings::{Device, Settings};

/// Larger bodies are not from FreeSWITCH (a dialplan lookup is ~5 KB; its own cap is 1 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// With no `sip_domain` set, directories for this many distinct domains stay cached; further
/// domains are rendered per request (still answered, never unbounded memory).
const MAX_CACHED_DOMAINS: usize = 16;

/// The endpoint's shared state: cheap to clone, swapped whole when settings change.
#[derive(Clone)]
pub struct XmlState {
    current: Arc<ArcSwap<Documents>>,
}

/// Everything one settings generation answers with.
struct Documents {
    /// `Basic <base64>` that requests must carry; `None` on loopback without credentials.
    authorization: Option<Box<[u8]>>,
    sofia_conf: Bytes,
    dialplan_public: Bytes,
    dialplan_default: Bytes,
    settings: Arc<Settings>,
    devices: HashMap<u32, Device>,
    /// The configured directory domain, when set; other domains get "not found".
    fixed_domain: Option<(String, HashMap<u32, Bytes>)>,
    /// Per-domain directories rendered on first use when no domain is configured.
    by_domain: RwLock<HashMap<String, Arc<HashMap<u32, Bytes>>>>,
}

impl XmlState {
    /// Renders every document for `settings`.
    pub fn new(settings: Arc<Settings>) -> Result<XmlState, Error> {
        Ok(XmlState {
            current: Arc::new(ArcSwap::from_pointee(Documents::build(settings)?)),
        })
    }

    /// Switches to new settings; requests in flight finish with the old documents.
    pub fn update(&self, settings: Arc<Settings>) -> Result<(), Error> {
        self.current.store(Arc::new(Documents::build(settings)?));
        Ok(())
    }

    /// The settings currently answered from.
    pub fn settings(&self) -> Arc<Settings> {
        self.current.load().settings.clone()
    }
}

impl Documents {
    fn build(settings: Arc<Settings>) -> Result<Documents, Error> {
        let xml = &settings.freeswitch.xml;
        let authorization = match (&xml.username, &xml.password) {
            (Some(user), Some(password)) => {
                let mut credentials =
                    String::with_capacity(user.len() + password.expose().len() + 1);
                credentials.push_str(user);
                credentials.push(':');
                credentials.push_str(password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
                Some(format!("Basic {encoded}").into_bytes().into_boxed_slice())
            }
            _ => None,
        };
        let dialplan = |context| -> Result<Bytes, Error> {
            Ok(document::dialplan(&settings, context)?
                .map(Bytes::from)
                .unwrap_or_else(|| Bytes::from_static(document::not_found().as_bytes())))
        };
        let devices: HashMap<u32, Device> = settings
            .devices()
            .into_iter()
            .map(|device| (device.extension, device))
            .collect();
        let fixed_domain = match &settings.freeswitch.sip_domain {
            Some(domain) => Some((
                domain.clone(),
                render_directory(&settings, &devices, domain)?,
            )),
            None => None,
        };
        Ok(Documents {
            authorization,
            sofia_conf: Bytes::from(document::sofia_conf(&settings)?),
            dialplan_public: dialplan(PUBLIC_CONTEXT)?,
            dialplan_default: dialplan(DEVICE_CONTEXT)?,
            devices,
            fixed_domain,
            by_domain: RwLock::new(HashMap::new()),
            settings,
        })
    }

    fn directory_user(&self, domain: &str, user: u32) -> Result<Option<Bytes>, Error> {
        if let Some((fixed, users)) = &self.fixed_domain {
            if !fixed.eq_ignore_ascii_case(domain) {
                return Ok(None);
            }
            return Ok(users.get(&user).cloned());
        }
        if !self.devices.contains_key(&user) {
            return Ok(None);
        }
        let cached = self
            .by_domain
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
            .cloned();
        let users = match cached {
            Some(users) => users,
            None => {
                let users = Arc::new(render_directory(&self.settings, &self.devices, domain)?);
                let mut cache = self
                    .by_domain
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if cache.len() < MAX_CACHED_DOMAINS {
                    cache.insert(domain.to_owned(), users.clone());
                }
                users
            }
        };
        Ok(users.get(&user).cloned())
    }
}

fn render_directory(
    settings: &Settings,
    devices: &HashMap<u32, Device>,
    domain: &str,
) -> Result<HashMap<u32, Bytes>, Error> {
    devices
        .iter()
        .map(|(&extension, device)| {
            document::directory_user(settings, domain, device)
                .map(|xml| (extension, Bytes::from(xml)))
        })
        .collect()
}

/// The endpoint as a router: POST on any path (FreeSWITCH's `gateway-url` decides the path).
pub fn router(state: XmlState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Serves until `shutdown` resolves, then drains requests in flight. Refuses a non-loopback
/// listener when the settings carry no credentials.
pub async fn serve(
    listener: TcpListener,
    state: XmlState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let address = listener.local_addr().map_err(|source| Error::Bind {
        address: state.settings().freeswitch.xml.listen,
        source,
    })?;
    check_exposure(address, &state)?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { address, source })
}

/// Binds the settings' listen address, after checking it may be exposed.
pub async fn bind(state: &XmlState) -> Result<TcpListener, Error> {
    let address = state.settings().freeswitch.xml.listen;
    check_exposure(address, state)?;
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind { address, source })
}

fn check_exposure(address: SocketAddr, state: &XmlState) -> Result<(), Error> {
    if !address.ip().is_loopback() && state.current.load().authorization.is_none() {
        return Err(Error::PublicWithoutCredentials(address));
    }
    Ok(())
}

async fn handle(State(state): State<XmlState>, request: Request) -> Response {
    let documents = state.current.load_full();
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "mod_xml_curl sends POST\n");
    }
    if let Some(expected) = &documents.authorization {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(given, expected) {
            tracing::warn!(
                "xml endpoint: request without the right Basic auth credentials, refused (check gateway-credentials in xml_curl.conf)"
            );
            let mut response = plain(StatusCode::UNAUTHORIZED, "credentials required\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"patchbay\""),
            );
            return response;
        }
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!("xml endpoint: request body unreadable or over {MAX_BODY_BYTES} bytes, refused: {error}");
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
    };
    match answer(&documents, &body) {
        Ok(Some(xml)) => xml_response(xml),
        Ok(None) => not_found(),
        Err(cause) => {
            tracing::warn!("xml endpoint: answered not found: {cause}");
            not_found()
        }
    }
}

/// Why a request got "not found" although it looked like one patchbay should answer.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Form(#[from] form::FormError),
    #[error(transparent)]
    Render(#[from] Error),
}

fn answer(documents: &Documents, body: &[u8]) -> Result<Option<Bytes>, Refusal> {
    let request = form::parse(body)?;
    match request.section {
        "directory" => {
            let Some(user) = request.user.as_deref() else {
                // purpose=gateways / network-list lookups: FreeSWITCH's static XML answers.
                return Ok(None);
            };
            if request.key.as_deref().is_some_and(|key| key != "id") {
                return Ok(None);
            }
            let Ok(extension) = user.parse::<u32>() else {
                tracing::debug!("xml endpoint: directory lookup for unknown user {user:?}");
                return Ok(None);
            };
            let domain = match request.key_value {
                "" => request.domain.as_deref().unwrap_or_default(),
                domain => domain,
            };
            let found = documents.directory_user(domain, extension)?;
            if found.is_none() {
                tracing::debug!(
                    "xml endpoint: directory lookup for unknown user {extension}@{domain}"
                );
            }
            Ok(found)
        }
        "configuration" if request.key_value == "sofia.conf" => {
            Ok(Some(documents.sofia_conf.clone()))
        }
        "dialplan" => {
            let context = request
                .hunt_context
                .as_deref()
                .or(request.caller_context.as_deref());
            Ok(match context {
                Some(PUBLIC_CONTEXT) => Some(documents.dialplan_public.clone()),
                Some(DEVICE_CONTEXT) => Some(documents.dialplan_default.clone()),
                _ => None,
            })
        }
        _ => Ok(None),
    }
}

fn xml_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

fn not_found() -> Response {
    xml_response(Bytes::from_static(document::not_found().as_bytes()))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const REGISTER_1000: &str = "hostname=vm&section=directory&tag_name=domain&key_name=name&key_value=127.0.0.1&Event-Name=REQUEST_PARAMS&action=sip_auth&sip_profile=internal&sip_auth_username=1000&sip_auth_method=REGISTER&key=id&user=1000&domain=127.0.0.1&ip=127.0.0.1";

    fn state(extra: &str) -> XmlState {
        let text = format!(r#"{{"device_password": "pw", "device_count": 3 {extra}}}"#);
        let settings =
            Settings::parse(&text, Path::new("settings.json")).unwrap_or_else(|e| panic!("{e}"));
        XmlState::new(Arc::new(settings)).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn post(state: &XmlState, body: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut builder = axum::http::Request::post("/freeswitch")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let request = builder
            .body(Body::from(body.to_owned()))
            .unwrap_or_else(|e| panic!("{e}"));
        let response = router(state.clone())
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn register_lookup_returns_the_device_password() {
        let state = state("");
        let (status, xml) = post(&state, REGISTER_1000, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            xml.contains("<param name=\"password\" value=\"pw1000\"/>"),
            "{xml}"
        );
        let (_, xml) = post(
            &state,
            &REGISTER_1000.replace("user=1000", "user=1003"),
            None,
        )
        .await;
        assert_eq!(xml, document::not_found());
    }

    #[tokio::test]
    async fn fixed_domain_refuses_other_domains() {
        let state = state(r#", "freeswitch": {"sip_domain": "pbx.example"}"#);
        let (_, xml) = post(&state, REGISTER_1000, None).await;
        assert_eq!(xml, document::not_found());
        let body = REGISTER_1000.replace("key_value=127.0.0.1", "key_value=PBX.example");
        let (_, xml) = post(&state, &body, None).await;
        assert!(xml.contains("pw1000"), "{xml}");
    }

    #[tokio::test]
    async fn basic_auth_is_required_when_configured() {
        let state = state(r#", "freeswitch": {"xml": {"username": "fs", "password": "s3cret"}}"#);
        let (status, _) = post(&state, REGISTER_1000, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = post(&state, REGISTER_1000, Some("Basic ZnM6d3Jvbmc=")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // base64("fs:s3cret")
        let (status, xml) = post(&state, REGISTER_1000, Some("Basic ZnM6czNjcmV0")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(xml.contains("pw1000"));
    }

    #[tokio::test]
    async fn settings_update_takes_effect_on_the_next_request() {
        let state = state("");
        let settings = Settings::parse(
            r#"{"device_password": "new", "device_count": 1}"#,
            Path::new("settings.json"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        state
            .update(Arc::new(settings))
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, xml) = post(&state, REGISTER_1000, None).await;
        assert!(xml.contains("new1000"), "{xml}");
    }

    #[tokio::test]
    async fn public_listener_without_credentials_is_refused() {
        let text = r#"{"device_password": "pw"}"#;
        let settings =
            Settings::parse(text, Path::new("settings.json")).unwrap_or_else(|e| panic!("{e}"));
        let state = XmlState::new(Arc::new(settings)).unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("0.0.0.0:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let error = serve(listener, state, std::future::ready(()))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("freeswitch.xml.listen: 0.0.0.0:"),
            "{error}"
        );
        assert!(error.contains("has no username/password"), "{error}");
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
