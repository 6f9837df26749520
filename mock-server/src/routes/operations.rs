//! Operation status and result endpoints (domain.md 4.5).

use http::StatusCode;

use super::{retry_after_headers, Ctx, Reply};
use crate::error::ArmError;
use crate::lro::{self, OpKind, OpState};

fn unknown(id: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Operation {id} not found."),
    )
    .nrp()
}

/// `Azure-AsyncOperation`: always 200 with `{"status": ...}` (plus `error` when failed).
pub(super) fn status(cx: &Ctx, id: &str) -> Result<Reply, ArmError> {
    let store = cx.state.store();
    let op = store.op(id).ok_or_else(|| unknown(id))?;
    let mut reply = Reply::json(StatusCode::OK, op.status_body());
    if op.in_progress() {
        let config = cx.state.config();
        reply
            .headers
            .extend(retry_after_headers(config.real(config.lro_retry_after)));
    }
    Ok(reply)
}

/// `Location`: 202 while running, then what the synchronous call would have answered.
pub(super) fn result(cx: &Ctx, id: &str) -> Result<Reply, ArmError> {
    let store = cx.state.store();
    let op = store.op(id).ok_or_else(|| unknown(id))?;
    match &op.state {
        OpState::InProgress => {
            let config = cx.state.config();
            let sub = cx.path.split('/').nth(2).unwrap_or_default();
            let mut reply = Reply::empty(StatusCode::ACCEPTED).header(
                http::header::LOCATION,
                lro::result_url(&cx.base, sub, &op.location, &op.id, &cx.api_version),
            );
            reply
                .headers
                .extend(retry_after_headers(config.real(config.lro_retry_after)));
            Ok(reply)
        }
        OpState::Failed { code, message } => {
            Err(ArmError::bad_request(code.clone(), message.clone()))
        }
        OpState::Succeeded => match op.kind {
            OpKind::Delete => Ok(Reply::empty(StatusCode::NO_CONTENT)),
            OpKind::Put => match store.render_key(&op.resource_key) {
                Some(body) => Ok(Reply::json(StatusCode::OK, body)),
                None => Ok(Reply::empty(StatusCode::NO_CONTENT)),
            },
        },
    }
}
