//! The admin API under `/_admin` (no api-version; issue 3).
//!
//! Every request carries the mock's admin token in `X-Mock-Admin-Token` (401 otherwise),
//! and a request with a body, or with any `Content-Type`, must say `application/json`
//! (415 otherwise). Why (issue 13): a web page in a developer's browser can send a
//! "simple" cross-origin request (`text/plain` POST, no custom header) to a mock on
//! localhost; a custom header and a JSON content type both force a CORS preflight, which
//! the mock never answers, so such a page can neither arm faults nor read the state.
//!
//! - `GET /_admin/stats`: request counters since start or the last reset
//! - `POST /_admin/reset`: reset the counters (resources and faults are kept)
//! - `GET /_admin/state`: every resource as GET returns it
//! - `GET /_admin/history?id=<resource id>`: every stored version of a resource
//! - `GET|POST|DELETE /_admin/faults`: list, arm (one spec or a list) and clear faults
//! - `GET|POST /_admin/service-tags`: the published service tags (Azure's download format);
//!   publish a new version of one tag, `{"name", "addressPrefixes", "networkFeatures"?}`,
//!   which increments the tag's and the file's `changeNumber` (domain.md 5.1)

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ArmError;
use crate::faults::FaultSpec;
use crate::MockState;

/// The header carrying the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "x-mock-admin-token";

pub(crate) fn router(mock: MockState) -> Router<MockState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .route("/state", get(state))
        .route("/history", get(history))
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route(
            "/service-tags",
            get(list_service_tags).post(publish_service_tag),
        )
        .route_layer(middleware::from_fn_with_state(mock, guard))
}

async fn list_service_tags(State(state): State<MockState>) -> Json<Value> {
    Json(state.service_tags().document().clone())
}

async fn publish_service_tag(State(state): State<MockState>, body: axum::body::Bytes) -> Response {
    let tag = match serde_json::from_slice::<crate::PublishTag>(&body) {
        Ok(t) => t,
        Err(err) => {
            return ArmError::invalid_request_format(format!(
                "Invalid service tag publication: {err}"
            ))
            .into_response()
        }
    };
    match state.publish_service_tag(&tag) {
        Ok(n) => (StatusCode::CREATED, Json(json!({ "changeNumber": n }))).into_response(),
        Err(message) => {
            ArmError::invalid_request_format(format!("Invalid service tag publication: {message}"))
                .into_response()
        }
    }
}

/// The admin token, then the content type (see the module doc).
async fn guard(State(state): State<MockState>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(ADMIN_TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(token, state.admin_token().as_bytes()) {
        return ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AdminAuthenticationFailed",
            "The admin API needs the mock's admin token in the X-Mock-Admin-Token header (printed by mock-arm at start, or set with --admin-token).",
        )
        .into_response();
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let json = content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    );
    if !json && (content_type.is_some() || (writes && has_body)) {
        return ArmError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "The admin API accepts only Content-Type: application/json, not `{}`.",
                content_type.as_deref().unwrap_or("(none)")
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Compares without stopping at the first differing byte (no timing hint about the token).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn stats(State(state): State<MockState>) -> Json<crate::Stats> {
    Json(state.stats())
}

async fn reset(State(state): State<MockState>) -> StatusCode {
    state.reset_stats();
    StatusCode::NO_CONTENT
}

async fn state(State(state): State<MockState>) -> Json<Value> {
    Json(json!({ "resources": state.all_resources() }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    id: String,
}

async fn history(
    State(state): State<MockState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => {
            Json(json!({ "id": q.id, "versions": state.history(&q.id) })).into_response()
        }
        Err(_) => ArmError::new(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "The 'id' query parameter is required.",
        )
        .into_response(),
    }
}

async fn list_faults(State(state): State<MockState>) -> Json<Value> {
    Json(json!({ "faults": state.pending_faults() }))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(FaultSpec),
    Many(Vec<FaultSpec>),
}

async fn add_faults(State(state): State<MockState>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::One(spec)) => state.inject_fault(spec),
        Ok(OneOrMany::Many(specs)) => specs.into_iter().for_each(|spec| state.inject_fault(spec)),
        Err(err) => {
            return ArmError::invalid_request_format(format!("Invalid fault specification: {err}"))
                .into_response()
        }
    }
    (
        StatusCode::CREATED,
        Json(json!({ "faults": state.pending_faults() })),
    )
        .into_response()
}

async fn clear_faults(State(state): State<MockState>) -> StatusCode {
    state.clear_faults();
    StatusCode::NO_CONTENT
}
