//! ARM error bodies (domain.md 4.7).
//!
//! Every failure the mock produces, from protocol checks to validation, is an [`ArmError`]:
//! an HTTP status plus the `{"error":{"code","message"}}` body that ARM and the
//! Microsoft.Network resource provider (NRP) return. Handlers return `Result<_, ArmError>`
//! and the pipeline in `routes` turns the error into a response, so no request path can end
//! without an ARM-shaped body.

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::json;

/// An ARM error response: status, code, message and optional extra headers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// NRP errors carry `"details": []`; ARM front-door errors do not (domain.md 4.7).
    pub nrp_details: bool,
    pub headers: Vec<(HeaderName, String)>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            nrp_details: false,
            headers: Vec::new(),
        }
    }

    /// A 400 from the resource provider (validation, domain.md 2.8 / 3.7).
    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message).nrp()
    }

    /// Mark the error as produced by NRP (adds `details: []`).
    pub fn nrp(mut self) -> Self {
        self.nrp_details = true;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// `InvalidRequestFormat`: the body could not be parsed (domain.md 2.8, 4.7).
    pub fn invalid_request_format(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(
            "InvalidRequestFormat",
            format!("Cannot parse the request. {detail}"),
        )
    }

    /// 404 `ResourceGroupNotFound`, produced by the ARM front door (domain.md 4.7).
    pub fn resource_group_not_found(rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        )
        .with_header(HeaderName::from_static("x-ms-failure-cause"), "gateway")
    }

    /// 404 `ResourceNotFound` for a missing top-level resource (domain.md 4.7).
    pub fn resource_not_found(type_name: &str, name: &str, rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource '{type_name}/{name}' under resource group '{rg}' was not found. \
                 For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    /// 404 `NotFound` for a missing child resource, as NRP words it (domain.md 4.7).
    pub fn child_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Resource {id} not found."),
        )
        .nrp()
    }

    /// 412 `PreconditionFailed` (domain.md 4.6).
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            message,
        )
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if self.nrp_details {
            error["details"] = json!([]);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}
