//! The operator's HTTP endpoints (axum): `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (the spec stores have their initial list). Served
//! by every replica, leader or not: all three on `--metrics-bind`, or the probes on their
//! own `--probe-bind` listener so that metrics can be bound and network-policed apart
//! from the kubelet's probes (issue 13).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once every reflector store has seen its initial list.
    pub ready: Arc<AtomicBool>,
}

/// Which endpoints one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// `/metrics`, `/healthz`, `/readyz`.
    All,
    /// `/metrics` only.
    Metrics,
    /// `/healthz` and `/readyz` only.
    Probes,
}

impl Endpoints {
    fn paths(self) -> &'static str {
        match self {
            Endpoints::All => "/metrics, /healthz, /readyz",
            Endpoints::Metrics => "/metrics",
            Endpoints::Probes => "/healthz, /readyz",
        }
    }
}

pub fn router(state: HttpState) -> Router {
    router_for(state, Endpoints::All)
}

pub fn router_for(state: HttpState, endpoints: Endpoints) -> Router {
    let mut r = Router::new();
    if endpoints != Endpoints::Probes {
        r = r.route("/metrics", get(metrics));
    }
    if endpoints != Endpoints::Metrics {
        r = r
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz));
    }
    r.with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the initial list of specs",
        )
            .into_response()
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving {}", endpoints.paths());
    axum::serve(listener, router_for(state, endpoints))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
