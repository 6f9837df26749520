//! The in-cluster operator (`asenet controller`): a kube-runtime `Controller` over
//! `AseConnectivity` specs that keeps Azure converged through the pipeline and reports in
//! `status`, events and metrics (docs/design.md sections 2-4).
//!
//! Data flow: watchers (one per watched namespace, or one for the cluster) feed reflector
//! stores of all specs, each object shrunk first ([`store::for_store`]: no managed fields,
//! no last-applied manifest, a digest of `status.rules`) → the controller schedules
//! reconciles, at most `max_concurrent_reconciles` at a time (a spec's spec, deletion or
//! finalizer changed — not its status —, a spec it depends on changed ([`index`]), its
//! resync is due, this replica became leader) → [`reconcile::reconcile`] plans the spec's
//! connected component (the specs sharing a parent with it or linked by `environmentRef`s)
//! holding the locks of the component's Azure parents, and writes through the
//! [`engine::Engine`] (the pipeline) → status by server-side apply, events by kube's
//! `Recorder`. [`http`] serves `/metrics`, `/healthz`, `/readyz`; [`leader`] holds the
//! Lease.

pub mod context;
pub mod engine;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Config;
use kube::runtime::reflector::{self, reflector, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::Client;
use tracing::{debug, info, warn};

pub use context::{Context, Settings, Stores, FIELD_MANAGER};
pub use engine::{Engine, EngineError, Planned, Retry};
pub use leader::{Leadership, LeaseSettings};
pub use metrics::Metrics;
pub use reconcile::{error_policy, reconcile, Error, FINALIZER};

use crate::api::AseConnectivity;

/// How to run the operator.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Namespaces to watch; empty: the whole cluster.
    pub namespaces: Vec<String>,
    /// Only specs with these labels (`team=network,tier!=test`).
    pub label_selector: Option<String>,
    pub settings: Settings,
    pub metrics_addr: SocketAddr,
    /// A separate listener for `/healthz` and `/readyz`; `None` (or the metrics address):
    /// the probes are served with the metrics.
    pub probe_addr: Option<SocketAddr>,
    /// `None`: leader election off, this replica always writes (one replica only!).
    pub lease: Option<LeaseSettings>,
    /// Reported in events (`reportingInstance`): the pod name.
    pub instance: Option<String>,
    /// At most this many reconciles in flight per watched scope (`0`: unbounded).
    pub max_concurrent_reconciles: u16,
}

/// The default of `--max-concurrent-reconciles`.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 8;

/// The spec changes the controller reacts to, from the touched objects of a watch: status-
/// only (and label/annotation-only) changes are dropped ([`index::spec_change`]), so the
/// controller's own status writes neither re-reconcile the spec nor wake its dependents.
pub fn spec_changes<S>(touched: S) -> impl futures::Stream<Item = S::Item> + Send
where
    S: futures::Stream<Item = Result<AseConnectivity, watcher::Error>> + Send,
{
    touched.predicate_filter(index::spec_change, Default::default())
}

/// Runs the operator until SIGTERM/SIGINT, then finishes the reconciles in flight, releases
/// the Lease and stops serving.
pub async fn run(
    client: Client,
    engine: Arc<dyn Engine>,
    metrics: Arc<Metrics>,
    options: RunOptions,
) -> anyhow::Result<()> {
    let mut watcher_config = watcher::Config::default();
    if let Some(selector) = &options.label_selector {
        watcher_config = watcher_config.labels(selector);
    }
    let apis: Vec<Api<AseConnectivity>> = if options.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        options
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };

    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let mut dependents_tx = Vec::new();
    let mut dependents_rx = Vec::new();
    let mut leader_tx = Vec::new();
    let mut leader_rx = Vec::new();
    for _ in &apis {
        let (reader, writer) = reflector::store::<AseConnectivity>();
        readers.push(reader);
        writers.push(writer);
        let (tx, rx) = mpsc::unbounded::<ObjectRef<AseConnectivity>>();
        dependents_tx.push(tx);
        dependents_rx.push(rx);
        let (tx, rx) = mpsc::unbounded::<()>();
        leader_tx.push(tx);
        leader_rx.push(rx);
    }
    let stores = Stores::new(readers.clone());

    let leadership = if options.lease.is_some() {
        Leadership::follower()
    } else {
        metrics.leader.set(1);
        Leadership::always()
    };
    let ctx = Context::new(
        client.clone(),
        stores.clone(),
        engine,
        metrics.clone(),
        leadership.clone(),
        options.settings.clone(),
        options.instance.clone(),
    );

    // Probes and metrics, served by every replica.
    let ready = Arc::new(AtomicBool::new(false));
    let http_state = http::HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let probe_addr = options.probe_addr.filter(|a| *a != options.metrics_addr);
    let listeners = match probe_addr {
        None => vec![(options.metrics_addr, http::Endpoints::All)],
        Some(probes) => vec![
            (options.metrics_addr, http::Endpoints::Metrics),
            (probes, http::Endpoints::Probes),
        ],
    };
    let (http_stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|(addr, endpoints)| {
            let mut stop = http_stop_tx.subscribe();
            tokio::spawn(http::serve(
                addr,
                http_state.clone(),
                endpoints,
                async move {
                    let _ = stop.recv().await;
                },
            ))
        })
        .collect();
    {
        let stores = stores.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if stores.wait_until_ready().await {
                info!("spec stores synced");
                ready.store(true, Ordering::Release);
            }
        });
    }

    let election = match &options.lease {
        Some(lease) => Some(
            leader::start(
                client.clone(),
                lease.clone(),
                leadership.clone(),
                metrics.clone(),
                leader_tx.clone(),
            )
            .await?,
        ),
        None => None,
    };

    // Which controller owns a namespace (index into the per-namespace vectors).
    let namespaces = options.namespaces.clone();
    let route = move |ns: Option<&str>| -> Option<usize> {
        if namespaces.is_empty() {
            Some(0)
        } else {
            ns.and_then(|ns| namespaces.iter().position(|n| n == ns))
        }
    };

    let mut controllers = Vec::new();
    for (((api, writer), reader), (deps, leader)) in apis
        .into_iter()
        .zip(writers)
        .zip(readers)
        .zip(dependents_rx.into_iter().zip(leader_rx))
    {
        let stores = stores.clone();
        let senders = dependents_tx.clone();
        let route = route.clone();
        // A change of a spec (including its deletion) wakes the spec and the specs depending
        // on it; a change of its status alone wakes nobody.
        let touched = reflector(
            writer,
            watcher(api, watcher_config.clone())
                .default_backoff()
                .modify(store::for_store),
        )
        .touched_objects();
        let trigger = spec_changes(touched).inspect(move |event| {
            if let Ok(changed) = event {
                for dependent in index::dependent_refs(changed, &stores.all()) {
                    if let Some(i) = route(dependent.namespace.as_deref()) {
                        let _ = senders[i].unbounded_send(dependent);
                    }
                }
            }
        });
        let run = Controller::for_stream(trigger, reader)
            .with_config(Config::default().concurrency(options.max_concurrent_reconciles))
            .reconcile_on(deps)
            .reconcile_all_on(leader)
            .shutdown_on_signal()
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((obj, action)) => debug!(spec = %obj, ?action, "reconciled"),
                    Err(e) => warn!(error = %e, "reconcile failed"),
                }
            });
        controllers.push(run);
    }
    drop(dependents_tx);
    futures::future::join_all(controllers).await;
    info!("controllers stopped");

    if let Some(election) = election {
        election.stop().await;
    }
    let _ = http_stop_tx.send(());
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "metrics/probe server failed"),
            Err(e) => warn!(error = %e, "metrics/probe server task failed"),
        }
    }
    Ok(())
}
