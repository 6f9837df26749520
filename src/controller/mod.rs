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
//! [`engine::Engine`] (the pipeline) → status by server-side apply, events by
//! [`events::EventRecorder`] (the note is part of what makes an event distinct). [`http`] serves `/metrics`, `/healthz`, `/readyz`; [`leader`] holds the
//! Lease.

pub mod context;
pub mod decide;
pub mod engine;
pub mod events;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod parts;
pub mod reconcile;
pub mod status;
pub mod store;
pub mod tenancy;

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
pub use engine::{Engine, Planned};
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
    /// This replica's leadership: the same handle must fence the engine's ARM client
    /// (`ArmClient::with_write_fence`), so that no write leaves once it is lost. `run` makes it
    /// a follower until the Lease is acquired (or a leader without end when `lease` is
    /// `None`).
    pub leadership: Leadership,
    /// After SIGTERM: at most this long to cancel in-flight work, release the Lease and stop
    /// serving (`--shutdown-timeout`; keep it well inside the pod's grace period).
    pub shutdown_timeout: std::time::Duration,
    /// Reported in events (`reportingInstance`): the pod name.
    pub instance: Option<String>,
    /// At most this many reconciles in flight per watched scope (`0`: unbounded).
    pub max_concurrent_reconciles: u16,
}

/// The default of `--shutdown-timeout` (the chart's grace period is 30 s).
pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

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

/// Which watch streams have delivered their initial list; sets `ready` (and logs "spec
/// stores synced") once all have.
struct Synced {
    stores: Vec<AtomicBool>,
    ready: Arc<AtomicBool>,
}

impl Synced {
    fn new(n: usize, ready: Arc<AtomicBool>) -> Self {
        Synced {
            stores: (0..n).map(|_| AtomicBool::new(false)).collect(),
            ready,
        }
    }

    fn all(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn mark(&self, store: usize) {
        if let Some(flag) = self.stores.get(store) {
            flag.store(true, Ordering::Release);
        }
        if self.stores.iter().all(|f| f.load(Ordering::Acquire))
            && !self.ready.swap(true, Ordering::AcqRel)
        {
            info!("spec stores synced");
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl+C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // No SIGTERM handler could be installed: Ctrl+C still works.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Runs the operator until SIGTERM/SIGINT, then stops writing at once (in-flight reconciles
/// and their ARM retries are cancelled, writes fenced), releases the Lease and stops
/// serving, within `options.shutdown_timeout`.
pub async fn run(
    client: Client,
    engine: Arc<dyn Engine>,
    metrics: Arc<Metrics>,
    options: RunOptions,
) -> anyhow::Result<()> {
    run_until(client, engine, metrics, options, shutdown_signal()).await
}

/// [`run`] until `shutdown` resolves (tests pass their own trigger; `run` passes the
/// signals). Named steps: leadership and the shutdown trigger → one watch (and store) per
/// namespace → tenancy → the probes and metrics → the election → one controller per watch →
/// run until shutdown → drain within the budget.
pub async fn run_until(
    client: Client,
    engine: Arc<dyn Engine>,
    metrics: Arc<Metrics>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let leadership = options.leadership.clone();
    let mut shutdown_rx = start_leadership(&leadership, &metrics, &options, shutdown);
    let apis = watched_apis(&client, &options);
    let mut watches = Watches::new(apis.len());
    // Held until the end: the controllers' "became leader" streams stay open.
    let leader_tx = std::mem::take(&mut watches.leader_tx);
    let (stores, tenancy_changes) = stores(&client, &options, &watches);
    let ctx = Context::new(
        client.clone(),
        stores.clone(),
        engine,
        metrics.clone(),
        leadership.clone(),
        options.settings.clone(),
        options.instance.clone(),
    );
    let http = Http::serve(&metrics, &options);
    // Ready once every watch delivered its initial list, seen on the watch streams
    // themselves. Not `Store::wait_until_ready`: its one-shot wakes a single waiter, and
    // kube-runtime's `Controller` already waits on it, so a second waiter here was never
    // woken and `/readyz` stayed 503 (issue 10, defect 2).
    let synced = Arc::new(Synced::new(apis.len(), http.ready.clone()));
    let election = options.lease.as_ref().map(|lease| {
        leader::start(
            Api::namespaced(client.clone(), &lease.namespace),
            lease.clone(),
            leadership.clone(),
            metrics.clone(),
            leader_tx.clone(),
            shutdown_rx.clone(),
        )
    });
    let route = Route {
        namespaces: options.namespaces.clone(),
    };
    let tenancy_task = tenancy_changes.and_then(|changes| {
        let (senders, route) = (watches.dependents_tx.clone(), route.clone());
        wake_on_tenancy_changes(changes, &stores, move |spec| route.send(&senders, spec))
    });
    let wiring = Wiring {
        ctx,
        stores,
        senders: watches.dependents_tx.clone(),
        route,
        synced: synced.clone(),
        watcher_config: watcher_config(&options),
        concurrency: options.max_concurrent_reconciles,
        shutdown: shutdown_rx.clone(),
    };
    let controllers = futures::future::join_all(watches.controllers(apis, &wiring));
    drop(wiring);
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => {}
        // An error: the sender is gone, which happens only after it sent.
        _ = shutdown_rx.wait_for(|stop| *stop) => {}
    }
    // The budget starts at the signal: the reconciles are cancelled (they return at once),
    // the election releases the Lease, the probes stop; whatever is still waiting when the
    // budget is spent is abandoned, so the process exits before the kubelet's SIGKILL.
    let deadline = drain(options.shutdown_timeout, &synced, controllers, election).await;
    if let Some(task) = tenancy_task {
        task.abort();
    }
    http.stop(deadline).await;
    drop(leader_tx);
    Ok(())
}

/// Waits at most `budget` for the controllers (when they ever ran) and the election to
/// stop; returns the deadline, which bounds the rest of the shutdown too.
async fn drain(
    budget: std::time::Duration,
    synced: &Synced,
    controllers: impl std::future::Future<Output = Vec<()>>,
    election: Option<leader::Election>,
) -> tokio::time::Instant {
    let deadline = tokio::time::Instant::now() + budget;
    let drained = tokio::time::timeout_at(deadline, async {
        // kube-runtime holds a controller's runner until its store has the initial list, and
        // a graceful shutdown waits for the runner: with a store never synced (API server
        // unreachable since start) it would wait out the whole budget. There is nothing to
        // finish then (no reconcile ever ran), so the controllers are dropped.
        if synced.all() {
            controllers.await;
            info!("controllers stopped");
        }
        if let Some(election) = election {
            election.wait().await;
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            ?budget,
            "shutdown budget spent; exiting without waiting for the rest"
        );
    }
    deadline
}

/// Tenancy enforced: a change of a policy or grant wakes the specs it decides differently.
fn wake_on_tenancy_changes(
    changes: impl futures::Stream<Item = ()> + Send + 'static,
    stores: &Stores,
    wake: impl Fn(ObjectRef<AseConnectivity>) + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let tenancy_stores = stores.tenancy()?.clone();
    Some(tokio::spawn(tenancy::wake_changed(
        changes,
        tenancy_stores,
        stores.clone(),
        wake,
    )))
}

/// Makes this replica a follower until it holds the Lease (or a leader for good without
/// election), and retires it when `shutdown` resolves. The receiver turns `true` then.
fn start_leadership(
    leadership: &Leadership,
    metrics: &Arc<Metrics>,
    options: &RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    if options.lease.is_some() {
        leadership.step_down();
    } else {
        leadership.set(true);
        metrics.leader.set(1);
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let leadership = leadership.clone();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: cancelling in-flight work, releasing the Lease");
        // Retired for good (a renewal finishing now cannot make it leader again): writes
        // are fenced and every reconcile in flight is cancelled at once.
        leadership.retire();
        metrics.leader.set(0);
        let _ = shutdown_tx.send(true);
    });
    shutdown_rx
}

fn watcher_config(options: &RunOptions) -> watcher::Config {
    let config = watcher::Config::default();
    match &options.label_selector {
        Some(selector) => config.labels(selector),
        None => config,
    }
}

/// One API per watched namespace, or one for the whole cluster.
fn watched_apis(client: &Client, options: &RunOptions) -> Vec<Api<AseConnectivity>> {
    if options.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        options
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// The spec stores of every watch, with the tenancy stores when tenancy is enforced (the
/// policies and grants are watched; a change wakes the specs it decides differently).
fn stores(
    client: &Client,
    options: &RunOptions,
    watches: &Watches,
) -> (
    Stores,
    Option<impl futures::Stream<Item = ()> + Send + 'static>,
) {
    // Versioned: `Wiring::controller` bumps the version after each event its reflector
    // applied.
    let stores = Stores::new(watches.readers.clone()).versioned();
    if options.settings.tenancy != crate::tenancy::TenancyMode::Enforce {
        return (stores, None);
    }
    let (tenancy_stores, changes) = tenancy::watch(client.clone());
    (stores.with_tenancy(tenancy_stores), Some(changes))
}

/// The probes and metrics listeners, served by every replica.
struct Http {
    ready: Arc<AtomicBool>,
    stop: tokio::sync::broadcast::Sender<()>,
    servers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Http {
    fn serve(metrics: &Arc<Metrics>, options: &RunOptions) -> Self {
        let ready = Arc::new(AtomicBool::new(false));
        let state = http::HttpState {
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
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let servers = listeners
            .into_iter()
            .map(|(addr, endpoints)| {
                let mut stopped = stop.subscribe();
                tokio::spawn(http::serve(addr, state.clone(), endpoints, async move {
                    let _ = stopped.recv().await;
                }))
            })
            .collect();
        Http {
            ready,
            stop,
            servers,
        }
    }

    /// Stops serving, waiting for the servers until `deadline`.
    async fn stop(self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(());
        for server in self.servers {
            match tokio::time::timeout_at(deadline, server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "metrics/probe server failed"),
                Ok(Err(e)) => warn!(error = %e, "metrics/probe server task failed"),
                Err(_) => {
                    warn!("metrics/probe server still serving at the end of the shutdown budget")
                }
            }
        }
    }
}

/// Which controller owns a namespace (index into the per-namespace vectors).
#[derive(Clone)]
struct Route {
    namespaces: Vec<String>,
}

impl Route {
    fn index(&self, ns: Option<&str>) -> Option<usize> {
        if self.namespaces.is_empty() {
            Some(0)
        } else {
            ns.and_then(|ns| self.namespaces.iter().position(|n| n == ns))
        }
    }

    /// Wakes `spec` in the controller that owns its namespace.
    fn send(
        &self,
        senders: &[mpsc::UnboundedSender<ObjectRef<AseConnectivity>>],
        spec: ObjectRef<AseConnectivity>,
    ) {
        if let Some(i) = self.index(spec.namespace.as_deref()) {
            let _ = senders[i].unbounded_send(spec);
        }
    }
}

/// Per watch: its store, and the channels that wake its controller (a dependent spec
/// changed; this replica became leader).
struct Watches {
    readers: Vec<reflector::Store<AseConnectivity>>,
    writers: Vec<reflector::store::Writer<AseConnectivity>>,
    dependents_tx: Vec<mpsc::UnboundedSender<ObjectRef<AseConnectivity>>>,
    dependents_rx: Vec<mpsc::UnboundedReceiver<ObjectRef<AseConnectivity>>>,
    leader_tx: Vec<mpsc::UnboundedSender<()>>,
    leader_rx: Vec<mpsc::UnboundedReceiver<()>>,
}

impl Watches {
    fn new(n: usize) -> Self {
        let mut w = Watches {
            readers: Vec::new(),
            writers: Vec::new(),
            dependents_tx: Vec::new(),
            dependents_rx: Vec::new(),
            leader_tx: Vec::new(),
            leader_rx: Vec::new(),
        };
        for _ in 0..n {
            let (reader, writer) = reflector::store::<AseConnectivity>();
            w.readers.push(reader);
            w.writers.push(writer);
            let (tx, rx) = mpsc::unbounded::<ObjectRef<AseConnectivity>>();
            w.dependents_tx.push(tx);
            w.dependents_rx.push(rx);
            let (tx, rx) = mpsc::unbounded::<()>();
            w.leader_tx.push(tx);
            w.leader_rx.push(rx);
        }
        w
    }

    /// One controller per watch (consumes the watches' stores and receivers).
    fn controllers(
        self,
        apis: Vec<Api<AseConnectivity>>,
        wiring: &Wiring,
    ) -> Vec<impl std::future::Future<Output = ()>> {
        apis.into_iter()
            .zip(self.writers)
            .zip(self.readers)
            .zip(self.dependents_rx.into_iter().zip(self.leader_rx))
            .enumerate()
            .map(|(i, (((api, writer), reader), (deps, leader)))| {
                wiring.controller(i, api, writer, reader, deps, leader)
            })
            .collect()
    }
}

/// What every controller shares.
struct Wiring {
    ctx: Arc<Context>,
    stores: Stores,
    senders: Vec<mpsc::UnboundedSender<ObjectRef<AseConnectivity>>>,
    route: Route,
    synced: Arc<Synced>,
    watcher_config: watcher::Config,
    concurrency: u16,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Wiring {
    /// The controller of watch `i`: the reflector feeds its store, a change of a spec
    /// (including its deletion) wakes the spec and the specs depending on it; a change of
    /// its status alone wakes nobody.
    fn controller(
        &self,
        i: usize,
        api: Api<AseConnectivity>,
        writer: reflector::store::Writer<AseConnectivity>,
        reader: reflector::Store<AseConnectivity>,
        deps: mpsc::UnboundedReceiver<ObjectRef<AseConnectivity>>,
        leader: mpsc::UnboundedReceiver<()>,
    ) -> impl std::future::Future<Output = ()> {
        let stores = self.stores.clone();
        let senders = self.senders.clone();
        let route = self.route.clone();
        let synced = self.synced.clone();
        let versioned = self.stores.clone();
        let touched = reflector(
            writer,
            watcher(api, self.watcher_config.clone())
                .default_backoff()
                .modify(store::for_store),
        )
        .inspect(move |event| {
            // The reflector applied the event to the store before passing it on.
            if let Ok(event) = event {
                versioned.applied_event(event);
            }
            if matches!(event, Ok(watcher::Event::InitDone)) {
                synced.mark(i);
            }
        })
        .touched_objects();
        let trigger = spec_changes(touched).inspect(move |event| {
            if let Ok(changed) = event {
                for dependent in index::dependent_refs(changed, &stores.all()) {
                    route.send(&senders, dependent);
                }
            }
        });
        let mut shutdown = self.shutdown.clone();
        Controller::for_stream(trigger, reader)
            .with_config(Config::default().concurrency(self.concurrency))
            .reconcile_on(deps)
            .reconcile_all_on(leader)
            .graceful_shutdown_on(async move {
                // An error: the sender is gone, which happens only after it sent.
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .run(
                reconcile::reconcile,
                reconcile::error_policy,
                self.ctx.clone(),
            )
            .for_each(|result| async move {
                match result {
                    Ok((obj, action)) => debug!(spec = %obj, ?action, "reconciled"),
                    Err(e) => warn!(error = %e, "reconcile failed"),
                }
            })
    }
}
