//! The one `Context` every reconcile shares (the kube-rs/controller-rs shape): the kube
//! client, the reflector stores of all specs, the engine (the pipeline), the event
//! recorder, metrics, leadership and settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::Client;

use super::engine::Engine;
use super::index::{key_of, Key};
use super::leader::Leadership;
use super::metrics::Metrics;
use crate::api::AseConnectivity;

/// The field manager of every write the controller makes (status, finalizer).
pub const FIELD_MANAGER: &str = "asenet";

/// The reflector stores of every watched namespace (one store when watching the cluster).
#[derive(Clone, Default)]
pub struct Stores(Vec<Store<AseConnectivity>>);

impl Stores {
    pub fn new(stores: Vec<Store<AseConnectivity>>) -> Self {
        Stores(stores)
    }

    /// Every spec in every store, sorted by namespace/name (deterministic plans).
    pub fn all(&self) -> Vec<Arc<AseConnectivity>> {
        let mut all: Vec<_> = self.0.iter().flat_map(|s| s.state()).collect();
        all.sort_by_key(|s| key_of(s));
        all
    }

    /// Resolves once every store has seen its initial list.
    pub async fn wait_until_ready(&self) -> bool {
        for s in &self.0 {
            if s.wait_until_ready().await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Controller settings (from `asenet controller` flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requeue interval of a spec whose reconcile succeeded: re-observes Azure, catches
    /// drift and VIP changes, writes nothing when in sync.
    pub resync: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(600),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub engine: Arc<dyn Engine>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    pub settings: Settings,
    /// Consecutive transient failures per spec, for the backoff of `error_policy`.
    pub(crate) failures: Mutex<HashMap<Key, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        engine: Arc<dyn Engine>,
        metrics: Arc<Metrics>,
        leadership: Leadership,
        settings: Settings,
        instance: Option<String>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "asenet".into(),
            instance,
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            engine,
            metrics,
            leadership,
            settings,
            failures: Mutex::default(),
        })
    }
}
