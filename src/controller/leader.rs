//! Leader election on a `coordination.k8s.io/v1` Lease, with `kube-lease-manager`.
//!
//! Every replica watches specs, serves probes and metrics; only the replica holding the
//! Lease reconciles (and so writes to Azure or to status). The reconcile checks
//! [`Leadership::is_leader`] before its first write and again before applying, so a replica
//! that lost the Lease mid-reconcile stops before writing. When a replica becomes leader it
//! reconciles every spec at once (`Controller::reconcile_all_on`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::metrics::Metrics;

/// Whether this replica may write. Cheap to clone; shared by every reconcile.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// A replica that is always the leader (leader election off, tests).
    pub fn always() -> Self {
        Leadership(Arc::new(AtomicBool::new(true)))
    }

    /// A replica that is not the leader until [`Leadership::set`] says so.
    pub fn follower() -> Self {
        Leadership(Arc::new(AtomicBool::new(false)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn set(&self, leader: bool) {
        self.0.store(leader, Ordering::Release);
    }
}

/// Lease parameters (`asenet controller --lease-*`).
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// Seconds a lease is valid after its last renewal.
    pub duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

/// A running election: dropping [`Election::stop`]'s receiver releases the Lease.
pub struct Election {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Releases the Lease (so another replica takes over at once) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            warn!("timed out releasing the leader Lease");
        }
    }
}

/// Starts the election. `became_leader` receives `()` each time this replica acquires the
/// Lease (one sender per controller).
///
/// Never fails: the Lease is looked up in a background task that retries with backoff
/// (1 s doubling, at most 30 s) while the API server is unreachable, as the watches do, so a
/// replica started during an API-server outage serves `/healthz`, stays not ready and a
/// follower, and joins the election once the API server answers (issue 10, defect 4).
pub async fn start(
    client: kube::Client,
    settings: LeaseSettings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    became_leader: Vec<UnboundedSender<()>>,
) -> anyhow::Result<Election> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        let manager = loop {
            let built = LeaseManagerBuilder::new(client.clone(), settings.name.clone())
                .with_namespace(settings.namespace.clone())
                .with_identity(settings.identity.clone())
                .with_duration(settings.duration)
                .with_grace(settings.grace)
                .with_field_manager(format!("asenet-lease-{}", settings.identity))
                .build();
            tokio::select! {
                _ = &mut stopped => return,
                built = built => match built {
                    Ok(manager) => break manager,
                    Err(e) => {
                        warn!(error = %e, lease = %settings.name, retry_in = ?delay, "cannot reach the leader Lease; retrying");
                    }
                },
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        };
        let (mut state, handle) = manager.watch().await;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                changed = state.changed() => {
                    if changed.is_err() {
                        warn!("leader election stopped");
                        leadership.set(false);
                        metrics.leader.set(0);
                        break;
                    }
                    let leader = *state.borrow_and_update();
                    leadership.set(leader);
                    metrics.leader.set(i64::from(leader));
                    info!(leader, lease = %settings.name, identity = %settings.identity, "leadership changed");
                    if leader {
                        for tx in &became_leader {
                            let _ = tx.unbounded_send(());
                        }
                    }
                }
            }
        }
        // Stop writing before the Lease is released.
        leadership.set(false);
        metrics.leader.set(0);
        drop(state);
        match handle.await {
            Ok(Ok(_)) => info!("leader Lease released"),
            Ok(Err(e)) => warn!(error = %e, "releasing the leader Lease failed"),
            Err(e) => warn!(error = %e, "lease task failed"),
        }
    });
    Ok(Election { stop, task })
}
