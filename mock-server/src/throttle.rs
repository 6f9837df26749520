//! Token-bucket throttling per subscription (domain.md 4.8).
//!
//! ARM's current model: one bucket per subscription and operation class (reads, writes,
//! deletes), refilled continuously; an empty bucket answers 429 with `Retry-After`. The
//! remaining tokens are reported in `x-ms-ratelimit-remaining-subscription-*` headers. The
//! caller passes the real instant in; refill runs on the ARM clock (`clock_scale`).
//!
//! On top, when configured, Microsoft.Network's own per-subscription limits (domain.md 4.8:
//! 1,000 writes/deletes and 10,000 reads per 5 minutes) as a sliding window ([`NrpLimits`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{Bucket, NrpLimits, ThrottlingConfig};

/// The operation class a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    Read,
    Write,
    Delete,
}

impl OpClass {
    pub fn from_method(method: &http::Method) -> Self {
        match *method {
            http::Method::PUT | http::Method::PATCH | http::Method::POST => Self::Write,
            http::Method::DELETE => Self::Delete,
            _ => Self::Read,
        }
    }

    /// The `x-ms-ratelimit-remaining-subscription-*` header for this class.
    pub fn header(self) -> &'static str {
        match self {
            Self::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Write => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// Result of asking a bucket for a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Admitted; `remaining` whole tokens are left.
    Allowed { remaining: u32 },
    /// Throttled; retry after this long (real time).
    Throttled { retry_after: Duration },
}

#[derive(Debug)]
struct State {
    tokens: f64,
    updated: Instant,
}

/// All buckets of the mock.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottlingConfig,
    scale: f64,
    buckets: HashMap<(String, OpClass), State>,
    /// NRP windows per (subscription, is a write or delete): the admission instants inside
    /// the window, oldest first.
    windows: HashMap<(String, bool), VecDeque<Instant>>,
}

impl Throttle {
    pub(crate) fn new(config: ThrottlingConfig, scale: f64) -> Self {
        Self {
            config,
            scale,
            buckets: HashMap::new(),
            windows: HashMap::new(),
        }
    }

    /// Count one Microsoft.Network request of `class` for `subscription` at `now` against
    /// NRP's sliding window ([`NrpLimits`]). Call it only for requests ARM's bucket admitted:
    /// ARM counts those before the provider sees them.
    pub(crate) fn admit_nrp(
        &mut self,
        subscription: &str,
        class: OpClass,
        now: Instant,
    ) -> Admission {
        let NrpLimits {
            enabled,
            window,
            writes,
            reads,
        } = self.config.nrp;
        let is_write = class != OpClass::Read;
        let limit = if is_write { writes } else { reads };
        if !(self.config.enabled && enabled) {
            return Admission::Allowed { remaining: limit };
        }
        let window_real =
            Duration::try_from_secs_f64(window.as_secs_f64() / self.scale).unwrap_or(window);
        let admitted = self
            .windows
            .entry((subscription.to_ascii_lowercase(), is_write))
            .or_default();
        while admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window_real)
        {
            admitted.pop_front();
        }
        // `len() < limit` as u32: the deque never grows past `limit` entries.
        if (admitted.len() as u64) < u64::from(limit) {
            admitted.push_back(now);
            return Admission::Allowed {
                remaining: limit.saturating_sub(admitted.len() as u32),
            };
        }
        // Full: the next slot frees when the oldest admission leaves the window. Whole ARM
        // seconds (at least 1, rounded up), then scaled, as for the buckets.
        let frees_in = admitted
            .front()
            .map(|oldest| window_real.saturating_sub(now.saturating_duration_since(*oldest)))
            .unwrap_or(window_real);
        let wait_arm = (frees_in.as_secs_f64() * self.scale).ceil().max(1.0);
        Admission::Throttled {
            retry_after: Duration::try_from_secs_f64(wait_arm / self.scale)
                .unwrap_or(Duration::MAX),
        }
    }

    fn bucket(&self, class: OpClass) -> Bucket {
        match class {
            OpClass::Read => self.config.reads,
            OpClass::Write => self.config.writes,
            OpClass::Delete => self.config.deletes,
        }
    }

    /// Take one token for `subscription` and `class` at `now`.
    pub(crate) fn admit(&mut self, subscription: &str, class: OpClass, now: Instant) -> Admission {
        let bucket = self.bucket(class);
        if !self.config.enabled {
            return Admission::Allowed {
                remaining: bucket.size,
            };
        }
        // Refill rate in tokens per real second.
        let rate = (bucket.refill_per_sec * self.scale).max(0.0);
        let capacity = f64::from(bucket.size);
        let state = self
            .buckets
            .entry((subscription.to_ascii_lowercase(), class))
            .or_insert(State {
                tokens: capacity,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(capacity);
        state.updated = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Admission::Allowed {
                // Truncation intended: report whole tokens left.
                remaining: state.tokens.floor() as u32,
            }
        } else if rate > 0.0 {
            // ARM sends whole seconds (at least 1, rounded up) on the ARM clock, then the
            // clock scale shrinks them: waiting requests do not all retry at the instant the
            // next token arrives.
            let wait_arm = ((1.0 - state.tokens) / bucket.refill_per_sec)
                .ceil()
                .max(1.0);
            let wait = wait_arm / self.scale;
            Admission::Throttled {
                retry_after: Duration::try_from_secs_f64(wait.max(0.001)).unwrap_or(Duration::MAX),
            }
        } else {
            Admission::Throttled {
                retry_after: Duration::from_secs(3600),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: u32, refill: f64) -> ThrottlingConfig {
        let bucket = Bucket {
            size,
            refill_per_sec: refill,
        };
        ThrottlingConfig {
            enabled: true,
            reads: bucket,
            writes: bucket,
            deletes: bucket,
            nrp: NrpLimits::default(),
        }
    }

    fn nrp(writes: u32, reads: u32, window_secs: u64) -> ThrottlingConfig {
        ThrottlingConfig {
            nrp: NrpLimits {
                enabled: true,
                window: Duration::from_secs(window_secs),
                writes,
                reads,
            },
            ..config(1_000_000, 1_000_000.0)
        }
    }

    #[test]
    fn nrp_limits_throttle_the_write_after_the_limit_until_the_first_leaves_the_window() {
        // 3 writes per 300 ARM s at clock scale 100: the window is 3 real seconds.
        let mut throttle = Throttle::new(nrp(3, 10, 300), 100.0);
        let t0 = Instant::now();
        for i in 0..3u64 {
            let at = t0 + Duration::from_millis(500 * i);
            assert!(
                matches!(
                    throttle.admit_nrp("s", OpClass::Write, at),
                    Admission::Allowed { .. }
                ),
                "write {i} is within the limit"
            );
        }
        // A delete shares the writes' window.
        let at = t0 + Duration::from_millis(1_000);
        let Admission::Throttled { retry_after } = throttle.admit_nrp("s", OpClass::Delete, at)
        else {
            panic!("the 4th write/delete inside the window must be throttled");
        };
        // The first admission (t0) leaves the window at t0 + 3 s, 2 s after `at`.
        assert!(
            retry_after >= Duration::from_millis(1_990)
                && retry_after <= Duration::from_millis(2_010),
            "retry_after {retry_after:?}"
        );
        // Reads and other subscriptions are counted apart.
        assert!(matches!(
            throttle.admit_nrp("s", OpClass::Read, at),
            Admission::Allowed { .. }
        ));
        assert!(matches!(
            throttle.admit_nrp("other", OpClass::Write, at),
            Admission::Allowed { .. }
        ));
        // Once the first admission has left the window, one more write is admitted.
        let later = t0 + Duration::from_millis(3_000);
        assert!(matches!(
            throttle.admit_nrp("s", OpClass::Write, later),
            Admission::Allowed { remaining: 0 }
        ));
        assert!(matches!(
            throttle.admit_nrp("s", OpClass::Write, later),
            Admission::Throttled { .. }
        ));
    }

    #[test]
    fn nrp_limits_are_off_by_default() {
        let mut throttle = Throttle::new(ThrottlingConfig::default(), 1.0);
        let t0 = Instant::now();
        for _ in 0..2_000 {
            assert!(matches!(
                throttle.admit_nrp("s", OpClass::Write, t0),
                Admission::Allowed { .. }
            ));
        }
    }

    #[test]
    fn an_empty_bucket_throttles_until_it_refills() {
        let mut throttle = Throttle::new(config(2, 1.0), 1.0);
        let t0 = Instant::now();
        assert_eq!(
            throttle.admit("s", OpClass::Read, t0),
            Admission::Allowed { remaining: 1 }
        );
        assert_eq!(
            throttle.admit("s", OpClass::Read, t0),
            Admission::Allowed { remaining: 0 }
        );
        let Admission::Throttled { retry_after } = throttle.admit("s", OpClass::Read, t0) else {
            panic!("expected throttling");
        };
        assert!(retry_after > Duration::from_millis(900));
        // Other classes and subscriptions have their own buckets.
        assert!(matches!(
            throttle.admit("s", OpClass::Write, t0),
            Admission::Allowed { .. }
        ));
        assert!(matches!(
            throttle.admit("other", OpClass::Read, t0),
            Admission::Allowed { .. }
        ));
        let later = t0 + Duration::from_millis(1100);
        assert!(matches!(
            throttle.admit("s", OpClass::Read, later),
            Admission::Allowed { .. }
        ));
    }

    #[test]
    fn retry_after_is_whole_arm_seconds_before_scaling() {
        let mut throttle = Throttle::new(config(1, 10.0), 20.0);
        let t0 = Instant::now();
        throttle.admit("s", OpClass::Read, t0);
        let Admission::Throttled { retry_after } = throttle.admit("s", OpClass::Read, t0) else {
            panic!("expected throttling");
        };
        // 0.1 ARM s to the next token, rounded up to 1 ARM s, i.e. 50 ms at scale 20.
        assert!(retry_after > Duration::from_millis(49) && retry_after < Duration::from_millis(51));
    }

    #[test]
    fn clock_scale_speeds_up_refill_and_shrinks_retry_after() {
        let mut throttle = Throttle::new(config(1, 1.0), 10.0);
        let t0 = Instant::now();
        throttle.admit("s", OpClass::Write, t0);
        let Admission::Throttled { retry_after } = throttle.admit("s", OpClass::Write, t0) else {
            panic!("expected throttling");
        };
        assert!(retry_after <= Duration::from_millis(100));
        assert!(matches!(
            throttle.admit("s", OpClass::Write, t0 + Duration::from_millis(101)),
            Admission::Allowed { .. }
        ));
    }
}
