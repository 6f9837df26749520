//! A mock Azure Resource Manager for the Microsoft.Network subset asenet uses (issue 3).
//!
//! The specification is docs/domain.md section 4 (ARM protocol: URL shapes, PUT semantics,
//! long-running operations, etags, errors, throttling, paging, headers; checklist 4.11) with
//! the validation rules of 2.8 and 3.7 and the App Service Environment API of 1.5.
//!
//! Data flow: a request enters [`app`] (module `routes`), passes the protocol checks
//! (faults, auth, api-version, throttling, body size), is dispatched to a handler that works
//! on the [`store`] under one lock, and leaves with ARM's headers. [`start`] serves the router
//! on 127.0.0.1 (optionally over TLS) with a connection layer that can drop connections for
//! the `reset` fault.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod faults;
pub mod lro;
pub mod model;
pub mod path;
pub mod seed;
pub mod service_tags;
pub mod stats;
pub mod store;
pub mod throttle;
pub mod validate;

mod admin;
mod persist;
mod routes;
mod server;
mod tls;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value;

pub use admin::ADMIN_TOKEN_HEADER;
pub use config::Config;
pub use error::ArmError;
pub use faults::{FaultAction, FaultSpec, PendingFault};
pub use routes::app;
pub use seed::Seed;
pub use server::{start, RunningMock, ServeOptions};
pub use service_tags::{PublishTag, ServiceTagsDoc, SERVICE_TAGS_FIXTURE};
pub use stats::Stats;

use faults::Faults;
use store::Store;
use throttle::Throttle;

/// Shared state of one mock instance; cheap to clone.
#[derive(Clone)]
pub struct MockState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    admin_token: String,
    store: Mutex<Store>,
    throttle: Mutex<Throttle>,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    persist: Mutex<persist::Persist>,
    service_tags: Mutex<ServiceTagsDoc>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not take the whole mock down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockState {
    /// Build a mock from a configuration and a seed topology (validated like PUTs).
    pub fn new(config: Config, seed: Seed) -> anyhow::Result<Self> {
        let mut store = Store::new(config.history_limit);
        seed::apply(&mut store, &seed)?;
        let service_tags = match &seed.service_tags {
            Some(doc) => ServiceTagsDoc::from_value(doc.clone()).map_err(anyhow::Error::msg)?,
            None => ServiceTagsDoc::fixture(),
        };
        let mut faults = Faults::default();
        for fault in &config.faults {
            faults.add(fault.clone());
        }
        let throttle = Throttle::new(config.throttling.clone(), config.scale());
        let admin_token = match config.admin_token.as_deref().map(str::trim) {
            Some("") => anyhow::bail!("adminToken: an empty admin token protects nothing"),
            Some(token) => token.to_owned(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                admin_token,
                store: Mutex::new(store),
                throttle: Mutex::new(throttle),
                faults: Mutex::new(faults),
                stats: Mutex::new(Stats::default()),
                persist: Mutex::new(persist::Persist::default()),
                service_tags: Mutex::new(service_tags),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The token every `/_admin` request must carry in `X-Mock-Admin-Token`.
    pub fn admin_token(&self) -> &str {
        &self.inner.admin_token
    }

    /// The store, with every operation whose deadline has passed completed.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        let mut store = lock(&self.inner.store);
        store.settle(Instant::now());
        store
    }

    pub(crate) fn throttle(&self) -> MutexGuard<'_, Throttle> {
        lock(&self.inner.throttle)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.inner.faults)
    }

    pub(crate) fn record_request(
        &self,
        method: &str,
        resource_type: &str,
        status: u16,
        fault: bool,
    ) {
        let mut stats = lock(&self.inner.stats);
        stats.record(method, resource_type, status);
        if fault {
            stats.faults_injected += 1;
        }
    }

    /// Counters since start or the last reset.
    pub fn stats(&self) -> Stats {
        lock(&self.inner.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.inner.stats) = Stats::default();
    }

    /// Every stored version of a resource in write order (id matched case-insensitively).
    pub fn history(&self, resource_id: &str) -> Vec<Value> {
        self.store().history(resource_id)
    }

    /// The current body of a resource as GET would return it.
    pub fn get_resource(&self, resource_id: &str) -> Option<Value> {
        routes::read_resource(self, resource_id)
    }

    /// The published service tags (what `ServiceTags_List` answers).
    pub fn service_tags(&self) -> ServiceTagsDoc {
        lock(&self.inner.service_tags).clone()
    }

    /// Publishes a new version of one tag (same as `POST /_admin/service-tags`); returns
    /// the new file-level `changeNumber`.
    pub fn publish_service_tag(&self, tag: &PublishTag) -> Result<u64, String> {
        lock(&self.inner.service_tags).publish(tag)
    }

    /// Arm a fault (same as `POST /_admin/faults`).
    pub fn inject_fault(&self, fault: FaultSpec) {
        self.faults().add(fault);
    }

    /// Faults still waiting for requests.
    pub fn pending_faults(&self) -> Vec<PendingFault> {
        self.faults().list()
    }

    pub fn clear_faults(&self) {
        self.faults().clear();
    }

    /// Write a resource as a foreign client would with PUT (validation, new etag, history,
    /// long-running operation). Returns the body the PUT answered with.
    pub fn put_raw(&self, resource_id: &str, body: Value) -> Result<Value, ArmError> {
        routes::put_raw(self, resource_id, body)
    }

    /// All resources as GET would return them, ordered by id.
    pub fn all_resources(&self) -> Vec<Value> {
        let store = self.store();
        let refs = store.subnet_references();
        store
            .resources()
            .values()
            .map(|e| store.render(e, &refs))
            .collect()
    }

    /// Load and from now on persist the state in `path` (atomic writes).
    pub fn persist_to(&self, path: PathBuf) -> anyhow::Result<()> {
        persist::attach(self, path)
    }

    /// Write the state file if a newer version exists.
    pub(crate) fn save(&self) {
        persist::save(self);
    }
}
