//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! Every replica watches specs, serves probes and metrics; only the replica holding the
//! Lease reconciles (and so writes to Azure or to status). Three timings, checked in this
//! order by [`LeaseSettings::check`] (client-go's `leaseDuration > renewDeadline >
//! retryPeriod`):
//!
//! - **lease duration** (15 s): how long another replica waits, from the moment *it* last saw
//!   the Lease change, before it may take the Lease over;
//! - **renew deadline** (10 s): the leader stops being leader when its last successful
//!   renewal was *sent* longer ago than this. Its [`Leadership`] carries that instant as a
//!   deadline: every ARM write is fenced on it ([`crate::azure::WriteFence`], checked right
//!   before each PUT/DELETE attempt is sent), in-flight reconciles are cancelled when it
//!   passes ([`Leadership::lost`]) and `asenet_leader` drops to 0;
//! - **retry period** (2 s): how often the leader renews and a follower tries to acquire.
//!
//! A replica cut off from the API server therefore stops writing at most `renew deadline`
//! after its last successful renewal, while another replica can take over no earlier than
//! `lease duration` after it: the 5 s between the two absorb a write already on the wire and
//! clock rate differences. It becomes leader again only through a fresh acquire (a
//! successful write of the Lease naming it), which reconciles every spec
//! (`Controller::reconcile_all_on`).
//!
//! Why not the `kube-lease-manager` crate (used before): it has no renew deadline. A failed
//! renewal is logged and retried while its leader flag stays `true`, so a partitioned
//! replica went on writing for as long as the partition lasted (issue 10, defect 1). The
//! election is a Lease get/create/replace with optimistic concurrency (`resourceVersion`),
//! small enough to own.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::metrics::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Follower,
    /// Leader until the deadline (`None`: without end, leader election off).
    Leader {
        until: Option<Instant>,
    },
    /// Shutting down: never leader again.
    Retired,
}

/// Whether this replica may write, and until when. Cheap to clone; shared by every
/// reconcile and by the ARM client's write fence.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<watch::Sender<State>>);

impl Leadership {
    /// A replica that is always the leader (leader election off, tests).
    pub fn always() -> Self {
        Leadership(Arc::new(watch::Sender::new(State::Leader { until: None })))
    }

    /// A replica that is not the leader until it acquires the Lease (or [`Leadership::set`]).
    pub fn follower() -> Self {
        Leadership(Arc::new(watch::Sender::new(State::Follower)))
    }

    /// True while this replica leads: it became leader and its deadline has not passed. Reads
    /// the clock, so a deadline passing needs nobody to call anything.
    pub fn is_leader(&self) -> bool {
        match *self.0.borrow() {
            State::Follower | State::Retired => false,
            State::Leader { until } => until.is_none_or(|d| Instant::now() < d),
        }
    }

    /// Moves to `state` unless retired.
    fn become_(&self, state: State) {
        self.0.send_if_modified(|current| {
            if *current == State::Retired || *current == state {
                return false;
            }
            *current = state;
            true
        });
    }

    /// Leader without end (`true`) or follower (`false`).
    pub fn set(&self, leader: bool) {
        self.become_(if leader {
            State::Leader { until: None }
        } else {
            State::Follower
        });
    }

    /// Leader until `deadline` (the election, after each successful acquire or renewal).
    pub fn lead_until(&self, deadline: Instant) {
        self.become_(State::Leader {
            until: Some(deadline),
        });
    }

    /// Stops leading now: writes are fenced and in-flight reconciles cancelled.
    pub fn step_down(&self) {
        self.set(false);
    }

    /// Stops leading for good (shutdown): nothing makes this replica leader again.
    pub fn retire(&self) {
        self.0.send_replace(State::Retired);
    }

    /// The instant leadership ends unless renewed (`None`: follower, or without end).
    pub fn deadline(&self) -> Option<Instant> {
        match *self.0.borrow() {
            State::Leader { until } => until,
            State::Follower | State::Retired => None,
        }
    }

    /// Resolves once this replica is not the leader: it stepped down, or its deadline passed
    /// without a renewal. Reconciles race their work against it.
    pub async fn lost(&self) {
        let mut rx = self.0.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                State::Follower | State::Retired => return,
                State::Leader { until: None } => {
                    // The sender lives in `self`: `changed` cannot fail while we wait.
                    let _ = rx.changed().await;
                }
                State::Leader {
                    until: Some(deadline),
                } => {
                    if Instant::now() >= deadline {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = rx.changed() => {}
                    }
                }
            }
        }
    }
}

impl crate::azure::WriteFence for Leadership {
    fn may_write(&self) -> bool {
        self.is_leader()
    }
}

/// Lease parameters (`asenet controller --lease-*`).
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a Lease is valid after its last renewal, for the other replicas.
    pub duration: Duration,
    /// The leader steps down when its last successful renewal is older than this.
    pub renew_deadline: Duration,
    /// Between two renewals, or two acquire attempts of a follower.
    pub retry_period: Duration,
}

/// Defaults of the timings (client-go's).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Lease timings that cannot keep one writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseSettingsError {
    #[error("--lease-retry-period-seconds `{0:?}` must be greater than zero")]
    ZeroRetryPeriod(Duration),
    #[error("--lease-renew-deadline-seconds `{renew_deadline:?}` must be longer than --lease-retry-period-seconds `{retry_period:?}` (the leader renews at least once before its deadline)")]
    DeadlineNotAfterRetry {
        renew_deadline: Duration,
        retry_period: Duration,
    },
    #[error("--lease-duration-seconds `{duration:?}` must be longer than --lease-renew-deadline-seconds `{renew_deadline:?}` (a leader cut off must stop writing before another replica can take the Lease)")]
    DurationNotAfterDeadline {
        duration: Duration,
        renew_deadline: Duration,
    },
    #[error("--lease-duration-seconds `{0:?}` is more than a Lease can hold (i32 seconds)")]
    DurationTooLong(Duration),
}

impl LeaseSettings {
    /// Checks `duration > renew_deadline > retry_period > 0`.
    pub fn check(&self) -> Result<(), LeaseSettingsError> {
        if self.retry_period.is_zero() {
            return Err(LeaseSettingsError::ZeroRetryPeriod(self.retry_period));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(LeaseSettingsError::DeadlineNotAfterRetry {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        if self.duration <= self.renew_deadline {
            return Err(LeaseSettingsError::DurationNotAfterDeadline {
                duration: self.duration,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.duration.as_secs() >= i32::MAX as u64 {
            return Err(LeaseSettingsError::DurationTooLong(self.duration));
        }
        Ok(())
    }

    /// `spec.leaseDurationSeconds`: whole seconds, rounded up.
    fn duration_seconds(&self) -> i32 {
        let secs = self.duration.as_secs() + u64::from(self.duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// A running election; it steps down and releases the Lease when its `stop` says so.
pub struct Election {
    task: JoinHandle<()>,
}

impl Election {
    /// Waits for the election to end (after `stop`: the Lease released, or the attempt
    /// failed). The caller bounds the wait.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            warn!(error = %e, "the election task failed");
        }
    }
}

/// Starts the election in the background, until `stop` turns `true`. `became_leader`
/// receives `()` each time this replica acquires the Lease (one sender per controller).
/// Never fails: while the API server is unreachable the replica stays a follower and keeps
/// trying every retry period, as its watches do (issue 10, defect 4).
pub fn start(
    api: Api<Lease>,
    settings: LeaseSettings,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    became_leader: Vec<UnboundedSender<()>>,
    stopped: watch::Receiver<bool>,
) -> Election {
    let task = tokio::spawn(elect(
        Elector {
            api,
            settings,
            observed: None,
        },
        leadership,
        metrics,
        became_leader,
        stopped,
    ));
    Election { task }
}

struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease's `resourceVersion` as last seen, and when this replica saw it change:
    /// expiry of another holder's Lease is measured on this replica's clock from there
    /// (client-go's `observedTime`), never from the `renewTime` another clock wrote.
    observed: Option<(String, Instant)>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// One attempt: takes or renews the Lease when it is free, ours, or expired. `Ok(false)`:
    /// another replica holds it (or won a race for it).
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let me = self.settings.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.settings.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(me.as_str());
        if let (Some(holder), false) = (&holder, ours) {
            let valid_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            );
            let seen = self.observed.as_ref().map(|(_, at)| *at);
            if seen.is_some_and(|at| at + valid_for > Instant::now()) {
                debug!(%holder, "the Lease is held by another replica");
                return Ok(false);
            }
            info!(%holder, "the Lease expired; taking it over");
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(
                spec.lease_transitions
                    .unwrap_or(0)
                    .saturating_add(i32::from(holder.is_some())),
            );
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(self.settings.duration_seconds());
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        // `resourceVersion` of the read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().map(|(v, _)| v) != Some(&version) {
            self.observed = Some((version, Instant::now()));
        }
    }

    /// Gives the Lease up if this replica still holds it: no holder, 1 s duration, so the
    /// next replica takes over at once (client-go's `ReleaseOnCancel`).
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        lease.spec = Some(spec);
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn elect(
    mut elector: Elector,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    became_leader: Vec<UnboundedSender<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = elector.settings.clone();
    let lost = |reason: &str| {
        leadership.step_down();
        metrics.leader.set(0);
        warn!(lease = %settings.name, identity = %settings.identity, reason, "leadership lost");
    };
    loop {
        // Follower: try to acquire every retry period.
        let acquired_at = loop {
            let sent = Instant::now();
            tokio::select! {
                _ = stopping(&mut stop) => return,
                attempt = tokio::time::timeout(settings.renew_deadline, elector.try_acquire_or_renew()) => {
                    match attempt {
                        Ok(Ok(true)) => break sent,
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => warn!(error = %e, lease = %settings.name, "cannot reach the leader Lease; retrying"),
                        Err(_) => warn!(lease = %settings.name, "acquiring the leader Lease timed out; retrying"),
                    }
                }
            }
            tokio::select! {
                _ = stopping(&mut stop) => return,
                _ = tokio::time::sleep(settings.retry_period) => {}
            }
        };
        let mut deadline = acquired_at + settings.renew_deadline;
        leadership.lead_until(deadline);
        metrics.leader.set(1);
        info!(lease = %settings.name, identity = %settings.identity, "became leader");
        for tx in &became_leader {
            let _ = tx.unbounded_send(());
        }
        // Leader: renew every retry period; step down when no renewal sent within the renew
        // deadline succeeded.
        loop {
            tokio::select! {
                _ = stopping(&mut stop) => {
                    // Stop writing before the Lease is released.
                    leadership.step_down();
                    metrics.leader.set(0);
                    match elector.release().await {
                        Ok(()) => info!(lease = %settings.name, "leader Lease released"),
                        Err(e) => warn!(error = %e, "releasing the leader Lease failed"),
                    }
                    return;
                }
                _ = tokio::time::sleep(settings.retry_period) => {}
            }
            let sent = Instant::now();
            let attempt = tokio::select! {
                _ = stopping(&mut stop) => continue,
                attempt = tokio::time::timeout_at(deadline, elector.try_acquire_or_renew()) => attempt,
            };
            match attempt {
                Ok(Ok(true)) => {
                    deadline = sent + settings.renew_deadline;
                    leadership.lead_until(deadline);
                }
                Ok(Ok(false)) => {
                    lost("another replica holds the Lease");
                    break;
                }
                Ok(Err(e)) if Instant::now() < deadline => {
                    warn!(error = %e, lease = %settings.name, "renewing the leader Lease failed; retrying before the renew deadline");
                }
                Ok(Err(_)) | Err(_) => {
                    lost("no renewal of the Lease succeeded within the renew deadline");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(duration: u64, deadline: u64, retry: u64) -> LeaseSettings {
        LeaseSettings {
            name: "l".into(),
            namespace: "ns".into(),
            identity: "me".into(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn lease_timings_must_be_duration_over_deadline_over_retry_period() {
        assert_eq!(settings(15, 10, 2).check(), Ok(()));
        assert!(matches!(
            settings(10, 10, 2).check(),
            Err(LeaseSettingsError::DurationNotAfterDeadline { .. })
        ));
        assert!(matches!(
            settings(15, 2, 2).check(),
            Err(LeaseSettingsError::DeadlineNotAfterRetry { .. })
        ));
        assert!(matches!(
            settings(15, 10, 0).check(),
            Err(LeaseSettingsError::ZeroRetryPeriod(_))
        ));
        let message = settings(10, 12, 2).check().unwrap_err().to_string();
        assert!(
            message.contains("--lease-duration-seconds `10s`"),
            "{message}"
        );
        assert!(
            message.contains("--lease-renew-deadline-seconds `12s`"),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_its_deadline_without_anyone_stepping_down() {
        let leadership = Leadership::follower();
        assert!(!leadership.is_leader());
        let deadline = Instant::now() + Duration::from_secs(10);
        leadership.lead_until(deadline);
        assert!(leadership.is_leader());
        let lost = leadership.clone();
        let waiter = tokio::spawn(async move {
            lost.lost().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(leadership.is_leader());
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !leadership.is_leader(),
            "the fence closes at the deadline by itself"
        );
        assert_eq!(
            waiter.await.unwrap(),
            deadline,
            "in-flight work is cancelled at the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_moves_the_deadline_and_stepping_down_cancels_at_once() {
        let leadership = Leadership::follower();
        leadership.lead_until(Instant::now() + Duration::from_secs(10));
        let lost = leadership.clone();
        let waiter = tokio::spawn(async move {
            lost.lost().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        leadership.lead_until(Instant::now() + Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            leadership.is_leader(),
            "renewed: still leader past the first deadline"
        );
        assert!(!waiter.is_finished());
        let stepped_down = Instant::now();
        leadership.step_down();
        assert_eq!(waiter.await.unwrap(), stepped_down);
        assert!(!leadership.is_leader());
    }
}
