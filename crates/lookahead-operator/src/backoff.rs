//! Per-object exponential backoff for failed reconciles, as controller-runtime's per-item rate
//! limiter does it: an object that keeps failing waits longer each time (1 s, doubling, up to
//! 2 min), with jitter of up to as much again so that objects failing together (an API server
//! outage) do not retry in lock step; one success forgets the streak. Delays come from backon's
//! [`ExponentialBuilder`].

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use kube::api::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use kube::Resource;

/// First retry delay after a failure.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest delay before jitter.
pub const CAP: Duration = Duration::from_secs(120);
/// A streak not extended for this long is dropped (its object was deleted, or stopped failing
/// without a reconcile succeeding yet); a later failure starts again from [`BASE`].
const STREAK_EXPIRY: Duration = Duration::from_secs(3600);

/// Which object a streak belongs to, across both controllers' kinds.
pub type Key = ObjectRef<DynamicObject>;

/// The key of `obj`.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> Key {
    ObjectRef::from_obj(obj).erase()
}

struct Streak {
    delays: ExponentialBackoff,
    last_failure: Instant,
}

/// Failure streaks of the objects whose last reconcile failed.
pub struct ErrorBackoff {
    builder: ExponentialBuilder,
    streaks: Mutex<HashMap<Key, Streak>>,
}

impl Default for ErrorBackoff {
    fn default() -> Self {
        ErrorBackoff::new(
            ExponentialBuilder::new()
                .with_min_delay(BASE)
                .with_max_delay(CAP)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        )
    }
}

impl ErrorBackoff {
    pub fn new(builder: ExponentialBuilder) -> Self {
        ErrorBackoff {
            builder,
            streaks: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: Key) -> Duration {
        let mut streaks = self.streaks.lock().unwrap_or_else(PoisonError::into_inner);
        streaks.retain(|_, s| s.last_failure.elapsed() < STREAK_EXPIRY);
        let streak = streaks.entry(key).or_insert_with(|| Streak {
            delays: self.builder.build(),
            last_failure: Instant::now(),
        });
        streak.last_failure = Instant::now();
        // Built without a limit on attempts, the sequence does not end; CAP is a safe answer.
        streak.delays.next().unwrap_or(CAP)
    }

    /// Forgets the streak of `key` (its reconcile succeeded).
    pub fn succeeded(&self, key: &Key) {
        self.streaks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// How many objects are failing now.
    pub fn failing(&self) -> usize {
        self.streaks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    /// The delay before jitter after `n` earlier failures: BASE·2ⁿ, capped.
    fn unjittered(n: u32) -> Duration {
        BASE.saturating_mul(2u32.saturating_pow(n)).min(CAP)
    }

    #[test]
    fn delays_double_from_the_base_up_to_the_cap_with_jitter() {
        let backoff = ErrorBackoff::default();
        let pool = key(&testdata::pool("pool", &["yi"]));
        for n in 0..12 {
            let delay = backoff.failed(pool.clone());
            let low = unjittered(n);
            assert!(
                delay >= low && delay < low * 2,
                "failure {n}: {delay:?} not in [{low:?}, {:?})",
                low * 2
            );
        }
        assert_eq!(unjittered(11), CAP, "the sequence reached the cap");
    }

    #[test]
    fn without_jitter_the_sequence_is_exact() {
        let backoff = ErrorBackoff::new(
            ExponentialBuilder::new()
                .with_min_delay(BASE)
                .with_max_delay(Duration::from_secs(8))
                .without_max_times(),
        );
        let pool = key(&testdata::pool("pool", &["yi"]));
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.failed(pool.clone()).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn streaks_are_per_object_and_a_success_resets_one() {
        let backoff = ErrorBackoff::default();
        let pool = key(&testdata::pool("pool", &["yi"]));
        let policy = key(&testdata::policy("pool", Some("yi")));
        assert_ne!(pool, policy, "same name, other kind: another object");
        for _ in 0..4 {
            backoff.failed(pool.clone());
        }
        assert!(backoff.failed(policy.clone()) < BASE * 2, "a fresh streak");
        assert!(backoff.failed(pool.clone()) >= unjittered(4));
        assert_eq!(backoff.failing(), 2);
        backoff.succeeded(&pool);
        assert_eq!(backoff.failing(), 1);
        assert!(backoff.failed(pool) < BASE * 2, "the streak starts over");
    }
}
