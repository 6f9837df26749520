//! The ARM request pipeline and dispatch (domain.md 4).
//!
//! Steps, in order: injected faults, authentication (`Authorization: Bearer`), path parsing,
//! `api-version` (domain.md 4.1, 4.7), throttling (4.8), body size, then the handler. The
//! answer always leaves with ARM's tracing headers (4.10) and is counted in the statistics.

pub(crate) mod network;
mod operations;
pub(crate) mod web;

use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::error::ArmError;
use crate::faults::FaultAction;
use crate::lro::LroFailure;
use crate::model::Namespace;
use crate::path::{self, Target};
use crate::throttle::{Admission, OpClass};
use crate::MockState;

/// The scheme the client used (inserted by the server layer; `http` when absent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheme(pub &'static str);

/// The router: `/_admin/...` plus every ARM path.
pub fn app(state: MockState) -> Router {
    Router::new()
        .nest("/_admin", crate::admin::router(state.clone()))
        .fallback(handle)
        .with_state(state)
}

/// What a handler answers before the common headers are added.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(HeaderName, String)>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, body.to_string()).into_response(),
            None => self.status.into_response(),
        };
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

/// Per-request context handed to handlers.
pub(crate) struct Ctx {
    pub state: MockState,
    pub method: Method,
    /// `scheme://host:port` the client reached, for absolute URLs (domain.md 4.5, 4.9).
    pub base: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub api_version: String,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub lro_failure: Option<LroFailure>,
}

impl Ctx {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn header_str(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Retry-After` (integer seconds, at least 1) for a real-time delay, plus
/// `retry-after-ms`/`x-ms-retry-after-ms` when the delay is not a whole number of seconds
/// (sub-second values appear with `clockScale` > 1; both azure-core SDKs prefer them).
pub(crate) fn retry_after_headers(real: Duration) -> Vec<(HeaderName, String)> {
    let millis = real.as_millis().max(1);
    let secs = millis.div_ceil(1000).max(1);
    let mut headers = vec![(RETRY_AFTER, secs.to_string())];
    if !millis.is_multiple_of(1000) {
        headers.push((
            HeaderName::from_static("retry-after-ms"),
            millis.to_string(),
        ));
        headers.push((
            HeaderName::from_static("x-ms-retry-after-ms"),
            millis.to_string(),
        ));
    }
    headers
}

async fn handle(State(state): State<MockState>, request: Request) -> Response {
    let method = request.method().clone();
    let correlation = header_str(request.headers(), "x-ms-correlation-request-id")
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut label = "unknown";
    let mut ratelimit: Option<(&'static str, u32)> = None;
    let mut faulted = false;
    let mut poll_origin = None;
    let result = pipeline(
        &state,
        request,
        &mut label,
        &mut ratelimit,
        &mut faulted,
        &mut poll_origin,
    )
    .await;
    let mut response = match result {
        Ok(reply) => reply.into_response(),
        Err(err) => err.into_response(),
    };
    let status = response.status();
    let headers = response.headers_mut();
    if let Some(origin) = poll_origin {
        rewrite_poll_urls(headers, &origin);
    }
    if !headers.contains_key("x-ms-request-id") {
        headers.insert("x-ms-request-id", uuid_header());
    }
    if let Ok(value) = HeaderValue::from_str(&correlation) {
        headers.insert("x-ms-correlation-request-id", value);
    }
    let routing = format!(
        "WESTEUROPE:{}:{}",
        time::OffsetDateTime::now_utc().unix_timestamp(),
        uuid::Uuid::new_v4()
    );
    if let Ok(value) = HeaderValue::from_str(&routing) {
        headers.insert("x-ms-routing-request-id", value);
    }
    if let Some((name, remaining)) = ratelimit {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(remaining));
    }
    if status != StatusCode::NO_CONTENT && status != StatusCode::ACCEPTED {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    state.record_request(method.as_str(), label, status.as_u16(), faulted);
    response
}

/// The `foreignPollUrl` fault: operation URLs moved to `origin`, path and query kept.
fn rewrite_poll_urls(headers: &mut http::HeaderMap, origin: &str) {
    for name in ["azure-asyncoperation", "location"] {
        let Some(url) = headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&format!("{}{path}", origin.trim_end_matches('/')))
        {
            headers.insert(name, value);
        }
    }
}

fn uuid_header() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"))
}

async fn pipeline(
    state: &MockState,
    request: Request,
    label: &mut &'static str,
    ratelimit: &mut Option<(&'static str, u32)>,
    faulted: &mut bool,
    poll_origin: &mut Option<String>,
) -> Result<Reply, ArmError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if let Ok(target) = path::parse(&path) {
        *label = target.label();
    }

    // 1. Injected faults.
    let mut lro_failure = None;
    let fault = state.faults().take(parts.method.as_str(), &path);
    match fault {
        Some(FaultAction::Latency { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(FaultAction::Error {
            status,
            code,
            message,
            retry_after,
        }) => {
            *faulted = true;
            return Err(injected_error(state, status, code, message, retry_after));
        }
        Some(FaultAction::Reset) => {
            *faulted = true;
            let mut response = ArmError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ConnectionReset",
                "The connection was reset (injected fault).",
            );
            response
                .headers
                .push((HeaderName::from_static("x-mock-reset"), "1".into()));
            return Err(response);
        }
        Some(FaultAction::LroFailed {
            code,
            message,
            keep_write,
        }) => {
            *faulted = true;
            lro_failure = Some(LroFailure {
                code,
                message,
                keep_write,
            });
        }
        Some(FaultAction::ForeignPollUrl { origin }) => {
            *faulted = true;
            *poll_origin = Some(origin);
        }
        None => {}
    }

    // 2. Authentication (any non-empty bearer token).
    let authorized = header_str(&parts.headers, http::header::AUTHORIZATION)
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then_some(())
        })
        .is_some();
    if !authorized {
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or is not a bearer token.",
        )
        .with_header(
            http::header::WWW_AUTHENTICATE,
            "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
        ));
    }

    // 3. Path.
    let target = path::parse(&path)?;

    // 4. api-version.
    let query: Vec<(String, String)> = parts.uri.query().map(parse_query).unwrap_or_default();
    let api_version = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        })?;
    check_api_version(state, target.namespace(), &target, &api_version)?;

    // 5. Throttling per subscription (domain.md 4.8).
    let class = OpClass::from_method(&parts.method);
    let admission = {
        let now = std::time::Instant::now();
        let mut throttle = state.throttle();
        match throttle.admit(target.subscription(), class, now) {
            // NRP's own per-5-minute limits count only what ARM let through (domain.md 4.8).
            Admission::Allowed { remaining } if target.namespace() == Namespace::Network => {
                match throttle.admit_nrp(target.subscription(), class, now) {
                    Admission::Allowed { .. } => Admission::Allowed { remaining },
                    throttled => throttled,
                }
            }
            other => other,
        }
    };
    match admission {
        Admission::Allowed { remaining } => *ratelimit = Some((class.header(), remaining)),
        Admission::Throttled { retry_after } => {
            *ratelimit = Some((class.header(), 0));
            let mut err = ArmError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                format!(
                    "Number of '{}' requests for subscription '{}' exceeded the limit. Please try again after \
                     '{}' seconds.",
                    match class {
                        OpClass::Read => "read",
                        OpClass::Write => "write",
                        OpClass::Delete => "delete",
                    },
                    target.subscription(),
                    retry_after.as_secs_f64().ceil()
                ),
            );
            err.headers.extend(retry_after_headers(retry_after));
            return Err(err);
        }
    }

    // 6. Body.
    let limit = state.config().max_body_bytes;
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        ArmError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    })?;

    let host = header_str(&parts.headers, HOST).unwrap_or_else(|| "localhost".to_owned());
    let scheme = parts.extensions.get::<Scheme>().map_or("http", |s| s.0);
    let cx = Ctx {
        state: state.clone(),
        method: parts.method.clone(),
        base: format!("{scheme}://{host}"),
        path,
        query,
        api_version,
        if_match: header_str(&parts.headers, http::header::IF_MATCH),
        if_none_match: header_str(&parts.headers, http::header::IF_NONE_MATCH),
        lro_failure,
    };
    let reply = dispatch(&cx, target, &bytes)?;
    if matches!(cx.method, Method::PUT | Method::PATCH | Method::DELETE) {
        state.save();
    }
    Ok(reply)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                path::percent_decode(&s.replace('+', " ")).unwrap_or_else(|| s.to_owned())
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn injected_error(
    state: &MockState,
    status: u16,
    code: Option<String>,
    message: Option<String>,
    retry_after: Option<f64>,
) -> ArmError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = code.unwrap_or_else(|| FaultAction::default_code(status.as_u16()).to_owned());
    let message = message.unwrap_or_else(|| format!("{code} (injected fault)."));
    let mut err = ArmError::new(status, code, message);
    let retry = retry_after.or(match status.as_u16() {
        429 | 503 => Some(1.0),
        _ => None,
    });
    if let Some(secs) = retry.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
        err.headers
            .extend(retry_after_headers(state.config().real(secs)));
    }
    err
}

fn check_api_version(
    state: &MockState,
    namespace: Namespace,
    target: &Target,
    version: &str,
) -> Result<(), ArmError> {
    let versions = &state.config().api_versions;
    let accepted = match namespace {
        Namespace::Network => &versions.network,
        Namespace::Web => &versions.web,
        Namespace::Resources => &versions.resources,
    };
    if accepted.iter().any(|v| v.eq_ignore_ascii_case(version)) {
        return Ok(());
    }
    Err(ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidApiVersionParameter",
        format!(
            "The api-version '{version}' is invalid. The supported versions for '{}' ({}) are '{}'.",
            namespace.name(),
            target.label(),
            accepted.join(",")
        ),
    ))
}

fn method_not_allowed(cx: &Ctx) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "The method '{}' is not supported on '{}'.",
            cx.method, cx.path
        ),
    )
}

fn dispatch(cx: &Ctx, target: Target, body: &[u8]) -> Result<Reply, ArmError> {
    use Method as M;
    let object = || crate::validate::object(body);
    match (&cx.method, target) {
        (&M::GET, Target::ResourceGroups { sub }) => network::list_groups(cx, &sub),
        (&M::GET | &M::HEAD, Target::ResourceGroup { sub, rg }) => {
            network::get_group(cx, &sub, &rg)
        }
        (&M::PUT, Target::ResourceGroup { sub, rg }) => {
            network::put_group(cx, &sub, &rg, &object()?)
        }
        (&M::DELETE, Target::ResourceGroup { sub, rg }) => network::delete_group(cx, &sub, &rg),
        (&M::GET, Target::Collection { sub, rg, kind }) => {
            network::list(cx, &sub, rg.as_deref(), kind)
        }
        (
            &M::GET,
            Target::Item {
                sub,
                rg,
                kind,
                name,
            },
        ) => network::get_item(cx, &sub, &rg, kind, &name),
        (
            &M::PUT,
            Target::Item {
                sub,
                rg,
                kind,
                name,
            },
        ) if kind.writable() => network::put_item(cx, &sub, &rg, kind, &name, &object()?),
        (
            &M::PATCH,
            Target::Item {
                sub,
                rg,
                kind,
                name,
            },
        ) if kind.writable() => network::patch_item(cx, &sub, &rg, kind, &name, &object()?),
        (
            &M::DELETE,
            Target::Item {
                sub,
                rg,
                kind,
                name,
            },
        ) if kind.writable() => network::delete_item(cx, &sub, &rg, kind, &name),
        (
            &M::GET,
            Target::ChildCollection {
                sub,
                rg,
                kind,
                name,
                child,
            },
        ) => network::list_children(cx, &sub, &rg, kind, &name, child),
        (
            &M::GET,
            Target::ChildItem {
                sub,
                rg,
                kind,
                name,
                child,
                child_name,
            },
        ) => network::get_child(cx, &sub, &rg, kind, &name, child, &child_name),
        (
            &M::PUT,
            Target::ChildItem {
                sub,
                rg,
                kind,
                name,
                child,
                child_name,
            },
        ) if child.writable() => {
            network::put_child(cx, &sub, &rg, kind, &name, child, &child_name, &object()?)
        }
        (
            &M::DELETE,
            Target::ChildItem {
                sub,
                rg,
                kind,
                name,
                child,
                child_name,
            },
        ) if child.writable() => {
            network::delete_child(cx, &sub, &rg, kind, &name, child, &child_name)
        }
        (&M::GET, Target::AseVip { sub, rg, name }) => web::vip(cx, &sub, &rg, &name),
        (&M::GET, Target::AseInbound { sub, rg, name }) => web::inbound(cx, &sub, &rg, &name),
        (&M::GET, Target::ServiceTags { sub }) => Ok(Reply::json(
            StatusCode::OK,
            cx.state.service_tags().render(&sub),
        )),
        (&M::GET, Target::OperationStatus { id, .. }) => operations::status(cx, &id),
        (&M::GET, Target::OperationResult { id, .. }) => operations::result(cx, &id),
        _ => Err(method_not_allowed(cx)),
    }
}

/// One page of a collection with `nextLink` (domain.md 4.9): the skip token is the offset,
/// and the link repeats the original query (api-version included).
pub(crate) fn page(cx: &Ctx, items: Vec<Value>) -> Result<Reply, ArmError> {
    page_of(cx, items, |v| v)
}

/// One page of `items` (`$skipToken` = offset), rendering only the items on that page:
/// a list of a large collection would otherwise render every item for every page.
pub(crate) fn page_of<T>(
    cx: &Ctx,
    items: Vec<T>,
    render: impl Fn(T) -> Value,
) -> Result<Reply, ArmError> {
    let size = cx.state.config().page_size.max(1);
    let start = match cx.query("$skipToken") {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                format!("The skip token '{token}' is invalid."),
            )
        })?,
    };
    let total = items.len();
    let value: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(size)
        .map(render)
        .collect();
    let mut body = Map::new();
    body.insert("value".into(), Value::Array(value));
    if start.saturating_add(size) < total {
        let mut query: Vec<String> = cx
            .query
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("$skipToken"))
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        query.push(format!("$skipToken={}", start + size));
        body.insert(
            "nextLink".into(),
            json!(format!("{}{}?{}", cx.base, cx.path, query.join("&"))),
        );
    }
    Ok(Reply::json(StatusCode::OK, Value::Object(body)))
}

/// Percent-encode a query component (keeps `$`, `-`, `_`, `.`, `~` and alphanumerics).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A context for calls made through the library API rather than HTTP.
fn library_ctx(state: &MockState, method: Method, path: &str) -> Ctx {
    Ctx {
        state: state.clone(),
        method,
        base: "http://127.0.0.1".to_owned(),
        path: path.to_owned(),
        query: Vec::new(),
        api_version: "2024-03-01".to_owned(),
        if_match: None,
        if_none_match: None,
        lro_failure: None,
    }
}

/// `MockState::get_resource`: GET without HTTP.
pub(crate) fn read_resource(state: &MockState, id: &str) -> Option<Value> {
    let path = id.split('?').next().unwrap_or(id);
    let target = path::parse(path).ok()?;
    let cx = library_ctx(state, Method::GET, path);
    let reply = match target {
        Target::ResourceGroup { sub, rg } => network::get_group(&cx, &sub, &rg),
        Target::Item {
            sub,
            rg,
            kind,
            name,
        } => network::get_item(&cx, &sub, &rg, kind, &name),
        Target::ChildItem {
            sub,
            rg,
            kind,
            name,
            child,
            child_name,
        } => network::get_child(&cx, &sub, &rg, kind, &name, child, &child_name),
        _ => return None,
    };
    reply.ok()?.body
}

/// `MockState::put_raw`: PUT without HTTP (a foreign writer).
pub(crate) fn put_raw(state: &MockState, id: &str, body: Value) -> Result<Value, ArmError> {
    let Value::Object(object) = body else {
        return Err(ArmError::invalid_request_format(
            "The request body must be a JSON object.",
        ));
    };
    let target = path::parse(id)?;
    let cx = library_ctx(state, Method::PUT, id);
    let reply = match target {
        Target::ResourceGroup { sub, rg } => network::put_group(&cx, &sub, &rg, &object),
        Target::Item {
            sub,
            rg,
            kind,
            name,
        } if kind.writable() => network::put_item(&cx, &sub, &rg, kind, &name, &object),
        Target::ChildItem {
            sub,
            rg,
            kind,
            name,
            child,
            child_name,
        } if child.writable() => {
            network::put_child(&cx, &sub, &rg, kind, &name, child, &child_name, &object)
        }
        _ => Err(method_not_allowed(&cx)),
    }?;
    state.save();
    Ok(reply.body.unwrap_or(Value::Null))
}

/// Whether a response must be turned into a dropped connection.
pub(crate) fn is_reset(response: &Response) -> bool {
    response.headers().contains_key("x-mock-reset")
}
