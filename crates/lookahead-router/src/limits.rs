//! Per-key rate limits: requests per minute and tokens per minute, each a token bucket that holds
//! a minute's allowance and refills continuously. A request takes one request token; the tokens
//! bucket only has to hold one token to admit, and the answer's actual usage is debited afterwards
//! (the router cannot know a completion's length in advance), so a large answer overdraws the
//! bucket and the key waits until it refills. Limits are per router replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookahead_api::config::AuthConfig;
use lookahead_api::policy::KeyLimits;

/// Which limit refused a request (OpenAI's error `type`, and the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Requests,
    Tokens,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Tokens => "tokens",
        }
    }
}

/// A refusal: which limit, its size per minute and how long until a retry can pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    pub limit: Limit,
    pub per_minute: u64,
    pub retry_after: Duration,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// A token bucket of `capacity` tokens refilled at `capacity` per minute.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    /// May go below zero (tokens debited after the answer).
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Self {
        let capacity = per_minute as f64;
        Self {
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
    }

    /// How long until the level reaches `need` (zero when it has).
    fn wait_for(&self, need: f64) -> Duration {
        if self.level >= need {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((need - self.level) / self.per_sec)
    }
}

/// One key's buckets (absent: that limit is off for the key).
#[derive(Debug)]
struct KeyBuckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// The limits of every key, and the buckets of the keys seen so far.
#[derive(Debug, Default)]
pub struct Limiter {
    auth: Option<AuthConfig>,
    buckets: Mutex<HashMap<Arc<str>, KeyBuckets>>,
}

impl Limiter {
    /// The limits in `auth` (none: nothing is limited).
    pub fn new(auth: Option<&AuthConfig>) -> Self {
        Self {
            auth: auth.cloned(),
            buckets: Mutex::default(),
        }
    }

    fn limits_of(&self, key: &str) -> KeyLimits {
        self.auth
            .as_ref()
            .map(|a| a.limits_of(key))
            .unwrap_or_default()
    }

    /// Runs `f` on `key`'s buckets, refilled to `now`; `None` when the key has no limits.
    fn with_buckets<T>(
        &self,
        key: &Arc<str>,
        now: Instant,
        f: impl FnOnce(&mut KeyBuckets) -> T,
    ) -> Option<T> {
        let limits = self.limits_of(key);
        if limits.is_unlimited() {
            return None;
        }
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = all.entry(key.clone()).or_insert_with(|| KeyBuckets {
            requests: limits
                .requests_per_minute
                .map(|n| Bucket::new(u64::from(n), now)),
            tokens: limits.tokens_per_minute.map(|n| Bucket::new(n, now)),
        });
        for bucket in [&mut b.requests, &mut b.tokens].into_iter().flatten() {
            bucket.refill(now);
        }
        Some(f(b))
    }

    /// Admits one request of `key` (taking a request token) or says which limit refuses it.
    /// An exhausted tokens bucket refuses without taking a request token.
    pub fn admit(&self, key: &Arc<str>, now: Instant) -> Result<(), Refusal> {
        self.with_buckets(key, now, |b| {
            if let Some(t) = &b.tokens {
                // Exhausted below one whole token (refill is continuous).
                if t.level < 1.0 {
                    return Err(Refusal {
                        limit: Limit::Tokens,
                        per_minute: t.capacity as u64,
                        retry_after: t.wait_for(1.0),
                    });
                }
            }
            if let Some(r) = &mut b.requests {
                if r.level < 1.0 {
                    return Err(Refusal {
                        limit: Limit::Requests,
                        per_minute: r.capacity as u64,
                        retry_after: r.wait_for(1.0),
                    });
                }
                r.level -= 1.0;
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    /// Debits the tokens an answer used from `key`'s tokens bucket.
    pub fn debit_tokens(&self, key: &Arc<str>, tokens: u64, now: Instant) {
        self.with_buckets(key, now, |b| {
            if let Some(t) = &mut b.tokens {
                t.level -= tokens as f64;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookahead_api::policy::KeyLimitsOverride;

    fn limiter(rpm: Option<u32>, tpm: Option<u64>) -> Limiter {
        Limiter::new(Some(&AuthConfig {
            keys_dir: None,
            limits: KeyLimits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
            },
            keys: vec![KeyLimitsOverride {
                id: "big".into(),
                requests_per_minute: Some(1000),
                tokens_per_minute: None,
            }],
        }))
    }

    #[test]
    fn requests_per_minute_refuse_then_refill() {
        let l = limiter(Some(2), None);
        let (a, t0) = (Arc::from("a"), Instant::now());
        assert!(l.admit(&a, t0).is_ok());
        assert!(l.admit(&a, t0).is_ok());
        let r = l.admit(&a, t0).expect_err("third");
        assert_eq!(r.limit, Limit::Requests);
        // 2/min: one token every 30 s.
        assert_eq!(r.retry_after_secs(), 30);
        assert!(l.admit(&a, t0 + Duration::from_secs(29)).is_err());
        assert!(l.admit(&a, t0 + Duration::from_secs(30)).is_ok());
        // Another key has its own bucket; an override raises the limit.
        assert!(l.admit(&Arc::from("b"), t0).is_ok());
        for _ in 0..10 {
            assert!(l.admit(&Arc::from("big"), t0).is_ok());
        }
    }

    #[test]
    fn tokens_per_minute_admit_until_overdrawn() {
        let l = limiter(None, Some(600));
        let (a, t0) = (Arc::from("a"), Instant::now());
        assert!(l.admit(&a, t0).is_ok());
        l.debit_tokens(&a, 599, t0);
        assert!(l.admit(&a, t0).is_ok(), "one token left");
        l.debit_tokens(&a, 301, t0);
        let r = l.admit(&a, t0).expect_err("overdrawn");
        assert_eq!((r.limit, r.per_minute), (Limit::Tokens, 600));
        // 300 tokens below zero at 10 tokens/s: 30 s to be back above zero (plus one token).
        assert_eq!(r.retry_after_secs(), 31);
        assert!(l.admit(&a, t0 + Duration::from_secs(31)).is_ok());
        // The override for `big` sets no tokens limit, so the default applies.
        l.debit_tokens(&Arc::from("big"), 10_000, t0);
        assert!(l.admit(&Arc::from("big"), t0).is_err());
    }

    #[test]
    fn without_limits_everything_passes() {
        let l = Limiter::new(None);
        let a = Arc::from("a");
        for _ in 0..1000 {
            assert!(l.admit(&a, Instant::now()).is_ok());
        }
    }
}
