//! The admin API under `/_admin` (no auth, no api-version; issue 3).
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
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ArmError;
use crate::faults::FaultSpec;
use crate::MockState;

pub(crate) fn router() -> Router<MockState> {
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
