//! Token-bucket throttling per subscription (domain.md 4.8).
//!
//! ARM's current model: one bucket per subscription and operation class (reads, writes,
//! deletes), refilled continuously; an empty bucket answers 429 with `Retry-After`. The
//! remaining tokens are reported in `x-ms-ratelimit-remaining-subscription-*` headers. The
//! caller passes the real instant in; refill runs on the ARM clock (`clock_scale`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::{Bucket, ThrottlingConfig};

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
}

impl Throttle {
    pub(crate) fn new(config: ThrottlingConfig, scale: f64) -> Self {
        Self {
            config,
            scale,
            buckets: HashMap::new(),
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
