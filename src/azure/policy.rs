//! Three `azure_core` pipeline policies: ARM-aware retries, the write fence and the
//! request observer.
//!
//! All sit in the per-retry slot of the one pipeline every ARM call goes through (the
//! generated `azure_mgmt_network` builders and asenet's own raw calls), right before the
//! transport, so they see every attempt and its raw response with headers.
//!
//! Why not `azure_core`'s own retry policy: it reads `Retry-After` only on 429 and 503 (not
//! on 500/502/504, docs/domain.md 4.7 "retry on any response that carries Retry-After"),
//! never retries 409 `AnotherOperationInProgress` (domain.md 4.4), has no jitter, and it
//! runs before the per-retry policies, so a policy placed there could not see the retried
//! attempts. The pipeline is therefore built with `RetryOptions::none()` and this policy.
//!
//! `azure_core::Policy` is declared with `async_trait`; asenet does not depend on that
//! macro crate, so the impls below spell out the boxed-future signature it expands to.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::{Context, Policy, PolicyResult, Request, Response};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Counts ARM requests (the operator exports them as metrics, docs/style.md rule 10).
pub trait ArmObserver: Send + Sync {
    /// Called once per HTTP attempt. `status` is 0 when no response arrived.
    fn on_response(&self, method: &str, resource_type: &str, status: u16);
}

/// How ARM calls are retried (attempts include the first one).
#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub max_attempts: u32,
    /// First backoff delay when ARM gives no `Retry-After`.
    pub base_delay: Duration,
    /// Cap of the exponential backoff.
    pub max_delay: Duration,
    /// Upper bound for a server-given `Retry-After` (ARM sends up to 10 min, domain.md 4.5).
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 8,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryConfig {
    /// How long 429s (throttling) are waited out, whatever `max_attempts` says: a full
    /// bucket needs up to minutes to serve everything queued behind it, and giving up
    /// after a few `Retry-After`s would fail a whole plan for one read (domain.md 4.8).
    /// 2.5 × `max_retry_after` (5 minutes with the defaults).
    pub fn throttle_budget(&self) -> Duration {
        self.max_retry_after.saturating_mul(5) / 2
    }

    /// A server-given `Retry-After`, capped, plus up to 10 % of jitter so the requests
    /// that waited for the same token do not all come back at the same instant. Not more:
    /// NRP's per-5-minute window answers waits of minutes (domain.md 4.8), and every second
    /// of jitter is a second the freed slots stay unused (50 % cost a 5,000-ASE fleet ~20 %
    /// of its convergence time, issue 14).
    pub fn server_delay(&self, retry_after: Duration) -> Duration {
        let d = retry_after.min(self.max_retry_after);
        d + d.mul_f64(0.1 * jitter())
    }

    /// Capped exponential backoff with full jitter: uniform in `[d/2, d]`, `d = base * 2^n`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(jitter())
    }
}

/// A random number in `[0, 1)` from the std hasher's random keys (no `rand` dependency).
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay ARM asks for: `retry-after-ms`, `x-ms-retry-after-ms` (milliseconds), then
/// `Retry-After` (seconds or an HTTP date), the order azure-core SDKs use (domain.md 4.8).
pub fn retry_after(headers: &azure_core::headers::Headers) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&azure_core::headers::HeaderName::from_static(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = headers.get_optional_str(&azure_core::headers::RETRY_AFTER)?;
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = azure_core::date::parse_rfc1123(value.trim()).ok()?;
    let now = time::OffsetDateTime::now_utc();
    Some(if at > now {
        Duration::try_from(at - now).unwrap_or_default()
    } else {
        Duration::ZERO
    })
}

/// Retries 408, 429, 5xx, connection errors and 409 `AnotherOperationInProgress`,
/// honouring `Retry-After` when present, else capped exponential backoff with jitter.
#[derive(Debug)]
pub struct ArmRetryPolicy {
    pub config: RetryConfig,
}

fn is_retriable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl ArmRetryPolicy {
    async fn run(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let mut attempt: u32 = 0;
        let started = tokio::time::Instant::now();
        loop {
            attempt += 1;
            let last = attempt >= self.config.max_attempts.max(1);
            let result = next[0].send(ctx, request, &next[1..]).await;
            let response = match result {
                Ok(r) => r,
                Err(e) if *e.kind() == ErrorKind::Io && !last => {
                    let delay = self.config.backoff(attempt - 1);
                    tracing::debug!(url = %request.url(), error = %e, ?delay, "ARM connection error, retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = u16::from(response.status());
            if response.status().is_success() {
                return Ok(response);
            }
            let delay = retry_after(response.headers())
                .map(|d| self.config.server_delay(d))
                .unwrap_or_else(|| self.config.backoff(attempt - 1));
            // Throttling is retried for a time budget rather than a number of attempts.
            let throttled_within_budget =
                status == 429 && started.elapsed() + delay <= self.config.throttle_budget();
            if last && !throttled_within_budget {
                return Ok(response);
            }
            if is_retriable_status(status) {
                tracing::debug!(url = %request.url(), status, ?delay, "ARM asked to retry");
                // Drain the body so the connection can be reused.
                let _ = response.into_body().collect().await;
                tokio::time::sleep(delay).await;
                continue;
            }
            if status == 409 {
                // Only `AnotherOperationInProgress` is worth waiting for; read the body to
                // know, then hand an equivalent response on if it is another conflict.
                let (st, headers, body) = response.deconstruct();
                let bytes = body.collect().await.unwrap_or_default();
                if error_code(&bytes).as_deref() == Some("AnotherOperationInProgress") {
                    tracing::debug!(url = %request.url(), ?delay, "another operation in progress, waiting");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                let stream =
                    futures::stream::once(async move { Ok::<_, azure_core::Error>(bytes) });
                return Ok(Response::new(st, headers, Box::pin(stream)));
            }
            return Ok(response);
        }
    }
}

/// `error.code` of an ARM error body (domain.md 4.7).
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("code")?.as_str().map(str::to_owned)
}

/// `azure_core::Policy` for a type with an inherent `async fn run(&self, ctx, request, next)`:
/// the trait's `async_trait` signature, spelled out once (azure_core 0.21 exports no macro
/// for it).
macro_rules! policy_from_run {
    ($($t:ty),+ $(,)?) => {$(
        impl Policy for $t {
            fn send<'life0, 'life1, 'life2, 'life3, 'async_trait>(
                &'life0 self,
                ctx: &'life1 Context,
                request: &'life2 mut Request,
                next: &'life3 [Arc<dyn Policy>],
            ) -> BoxFuture<'async_trait, PolicyResult>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                'life2: 'async_trait,
                'life3: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(self.run(ctx, request, next))
            }
        }
    )+};
}

policy_from_run!(ArmRetryPolicy, ObserverPolicy, FencePolicy);

/// Shared list of observers; the policy holds one end, `ArmClient::with_observer` the other.
#[derive(Default)]
pub struct Observers(RwLock<Vec<Arc<dyn ArmObserver>>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observers")
    }
}

impl Observers {
    pub fn add(&self, o: Arc<dyn ArmObserver>) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(o);
    }
    fn notify(&self, method: &str, resource_type: &str, status: u16) {
        let list = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in list.iter() {
            o.on_response(method, resource_type, status);
        }
    }
}

/// Tells every observer about every attempt (after the retry policy, so retries count).
#[derive(Debug)]
pub struct ObserverPolicy {
    pub observers: Arc<Observers>,
}

impl ObserverPolicy {
    async fn run(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let result = next[0].send(ctx, request, &next[1..]).await;
        let status = match &result {
            Ok(r) => u16::from(r.status()),
            Err(_) => 0,
        };
        let method = request.method().to_string().to_ascii_uppercase();
        self.observers
            .notify(&method, &resource_type(request.url().path()), status);
        result
    }
}

/// The last collection segment of an ARM path (`networkSecurityGroups`, `subnets`,
/// `operations`, `capacities`): a low-cardinality metric label.
pub fn resource_type(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(p) = parts
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
    else {
        return "other".into();
    };
    // After `providers/{namespace}`: type, name, type, name...
    let rest = &parts[(p + 2).min(parts.len())..];
    let last_type = if rest.len().is_multiple_of(2) {
        rest.len().checked_sub(2)
    } else {
        Some(rest.len() - 1)
    };
    last_type
        .and_then(|i| rest.get(i))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether writes may be sent now. The operator's leadership implements it: a replica whose
/// Lease renewal deadline passed must not write (issue 10, defect 1).
pub trait WriteFence: Send + Sync {
    fn may_write(&self) -> bool;
}

/// The fence of one client; empty (every write allowed) until `ArmClient::with_write_fence`.
#[derive(Default)]
pub struct FenceSlot(RwLock<Option<Arc<dyn WriteFence>>>);

impl std::fmt::Debug for FenceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FenceSlot")
    }
}

impl FenceSlot {
    pub fn set(&self, fence: Arc<dyn WriteFence>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fence);
    }

    fn may_write(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_none_or(|f| f.may_write())
    }
}

/// The error a fenced attempt fails with (mapped to `ArmError::Fenced`).
#[derive(Debug, thiserror::Error)]
#[error("write fenced: this replica no longer holds the leader Lease")]
pub struct Fenced;

/// Refuses to send a write (any method but GET and HEAD) while the fence is closed. Sits
/// after the retry policy, so it decides right before each attempt reaches the transport.
#[derive(Debug)]
pub struct FencePolicy {
    pub fence: Arc<FenceSlot>,
}

impl FencePolicy {
    async fn run(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let read = matches!(
            *request.method(),
            azure_core::Method::Get | azure_core::Method::Head
        );
        if !read && !self.fence.may_write() {
            tracing::warn!(method = %request.method(), url = %request.url(), "not the leader: write not sent");
            return Err(azure_core::Error::new(ErrorKind::Other, Fenced));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_given_delay_is_honoured_capped_and_jittered_by_at_most_a_tenth() {
        let config = RetryConfig::default();
        for secs in [1, 10, 100, 119] {
            let d = Duration::from_secs(secs);
            for _ in 0..50 {
                let wait = config.server_delay(d);
                assert!(wait >= d && wait <= d.mul_f64(1.1), "{wait:?} for {d:?}");
            }
        }
        let capped = config.server_delay(Duration::from_secs(600));
        assert!(capped >= config.max_retry_after && capped <= config.max_retry_after.mul_f64(1.1));
    }
}
