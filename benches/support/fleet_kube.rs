//! A Kubernetes API stand-in for the fleet benchmark: just enough for the controller's
//! `reconcile` (benches/fleet.rs drives the real `asenet::controller::reconcile` through
//! kube-runtime's `Controller`).
//!
//! What a reconcile sends the API server and what this answers:
//! - `PATCH .../aseconnectivities/{name}/status` (server-side apply of the status): the
//!   object with the new status and a new resourceVersion; the change is also sent to the
//!   watch channel, as the API server's watch would, so the controller sees its own status
//!   writes exactly as in a cluster (a status change is a watch event that triggers a
//!   reconcile and wakes the dependents);
//! - `POST .../events` (the event recorder): the event echoed, 201;
//! - anything else: 404.
//!
//! Objects carry the finalizer from the start, so `finalizer()` goes straight to `Apply`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use asenet::api::{AseConnectivity, AseConnectivityStatus};
use futures::channel::mpsc::UnboundedSender;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::watcher;

type Key = (String, String);

/// The part of a status patch (server-side apply of `{apiVersion, kind, status}`) the
/// stand-in stores.
#[derive(serde::Deserialize)]
struct StatusPatch {
    status: Option<AseConnectivityStatus>,
}

/// Requests the stand-in answered, by kind.
#[derive(Debug, Default)]
pub struct KubeCounters {
    pub status_patches: AtomicU64,
    pub events: AtomicU64,
    pub other: AtomicU64,
}

/// The objects as the API server holds them, and the watch channel.
#[derive(Clone)]
pub struct FakeApi {
    objects: Arc<Mutex<HashMap<Key, AseConnectivity>>>,
    watch: UnboundedSender<watcher::Event<AseConnectivity>>,
    version: Arc<AtomicU64>,
    pub counters: Arc<KubeCounters>,
}

fn key_of(o: &AseConnectivity) -> Key {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

impl FakeApi {
    pub fn new(watch: UnboundedSender<watcher::Event<AseConnectivity>>) -> Self {
        FakeApi {
            objects: Arc::default(),
            watch,
            version: Arc::new(AtomicU64::new(1000)),
            counters: Arc::default(),
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<Key, AseConnectivity>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The initial list, as a watcher's first page: `Init`, `InitApply` each, `InitDone`.
    pub fn init(&self, specs: &[AseConnectivity]) {
        let mut objects = self.objects();
        let _ = self.watch.unbounded_send(watcher::Event::Init);
        for s in specs {
            objects.insert(key_of(s), s.clone());
            let _ = self
                .watch
                .unbounded_send(watcher::Event::InitApply(s.clone()));
        }
        let _ = self.watch.unbounded_send(watcher::Event::InitDone);
    }

    /// A user edits specs (`kubectl apply`): the spec changes, the status stays.
    pub fn edit(&self, specs: &[AseConnectivity]) {
        let mut objects = self.objects();
        for s in specs {
            let mut next = s.clone();
            if let Some(old) = objects.get(&key_of(s)) {
                next.status = old.status.clone();
            }
            next.metadata.resource_version =
                Some(self.version.fetch_add(1, Ordering::Relaxed).to_string());
            objects.insert(key_of(&next), next.clone());
            let _ = self.watch.unbounded_send(watcher::Event::Apply(next));
        }
    }

    /// The kube client over this stand-in.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let response = api.answer(request).await;
                    send.send_response(response);
                });
            }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let path = parts.uri.path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let reply = |status: StatusCode, body: Vec<u8>| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        };
        // /apis/asenet.io/v1alpha1/namespaces/{ns}/aseconnectivities/{name}/status
        if parts.method == http::Method::PATCH
            && segments.len() == 8
            && segments[5] == "aseconnectivities"
            && segments[7] == "status"
        {
            self.counters.status_patches.fetch_add(1, Ordering::Relaxed);
            let key = (segments[4].to_string(), segments[6].to_string());
            // Straight into the status type: no JSON tree built and copied (this stand-in
            // shares the bench's two cores with the controller it serves).
            let status = serde_json::from_slice::<StatusPatch>(&bytes)
                .ok()
                .and_then(|p| p.status);
            let updated = {
                let mut objects = self.objects();
                let Some(obj) = objects.get_mut(&key) else {
                    return reply(StatusCode::NOT_FOUND, b"{}".to_vec());
                };
                obj.status = status;
                obj.metadata.resource_version =
                    Some(self.version.fetch_add(1, Ordering::Relaxed).to_string());
                obj.clone()
            };
            let body = serde_json::to_vec(&updated).unwrap_or_default();
            let _ = self.watch.unbounded_send(watcher::Event::Apply(updated));
            return reply(StatusCode::OK, body);
        }
        if parts.method == http::Method::POST && segments.last() == Some(&"events") {
            self.counters.events.fetch_add(1, Ordering::Relaxed);
            return reply(StatusCode::CREATED, bytes.to_vec());
        }
        self.counters.other.fetch_add(1, Ordering::Relaxed);
        reply(
            StatusCode::NOT_FOUND,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                .to_vec(),
        )
    }
}
