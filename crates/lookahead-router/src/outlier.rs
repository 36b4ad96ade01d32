//! Passive outlier ejection: a member that fails `consecutive` times in a row is taken out of
//! rotation for a while (doubling per repeated ejection, capped), then let back in: its next request
//! is the probe. A failed probe ejects it again at once; a success restores it fully. The router
//! retries a failed attempt on the next member, so a failed probe costs the client nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ejection thresholds.
#[derive(Debug, Clone, Copy)]
pub struct OutlierPolicy {
    pub consecutive: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct MemberState {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    /// Ejections since the member last recovered; scales the next ejection.
    ejections: u32,
}

/// Per-member failure tracking.
#[derive(Debug)]
pub struct OutlierDetector {
    policy: OutlierPolicy,
    members: Vec<Mutex<MemberState>>,
}

/// What a recorded failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    Counted,
    Ejected(Duration),
}

impl OutlierDetector {
    pub fn new(members: usize, policy: OutlierPolicy) -> Self {
        Self {
            policy,
            members: (0..members).map(|_| Mutex::default()).collect(),
        }
    }

    fn state(&self, i: usize) -> MemberState {
        self.members
            .get(i)
            .and_then(|m| m.lock().ok().map(|s| *s))
            .unwrap_or_default()
    }

    /// Whether member `i` may take traffic now (not ejected, or its ejection has run out).
    pub fn is_available(&self, i: usize, now: Instant) -> bool {
        self.state(i).ejected_until.is_none_or(|until| now >= until)
    }

    /// Whether member `i` is inside an ejection window.
    pub fn is_ejected(&self, i: usize) -> bool {
        !self.is_available(i, Instant::now())
    }

    /// A success restores the member, unless it lands inside an ejection window: a request sent
    /// before the ejection (on a connection that outlived the member's listener) says nothing
    /// about new requests, so the window runs out and the next request probes as usual.
    pub fn record_success(&self, i: usize, now: Instant) {
        if let Some(Ok(mut s)) = self.members.get(i).map(Mutex::lock) {
            if s.ejected_until.is_some_and(|until| now < until) {
                return;
            }
            *s = MemberState::default();
        }
    }

    pub fn record_failure(&self, i: usize, now: Instant) -> FailureEffect {
        let Some(Ok(mut s)) = self.members.get(i).map(Mutex::lock) else {
            return FailureEffect::Counted;
        };
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let in_window = s.ejected_until.is_some_and(|until| now < until);
        if s.consecutive_failures >= self.policy.consecutive && !in_window {
            let factor = 1u32 << s.ejections.min(10);
            let d = (self.policy.base_ejection * factor).min(self.policy.max_ejection);
            s.ejected_until = Some(now + d);
            s.ejections = s.ejections.saturating_add(1);
            return FailureEffect::Ejected(d);
        }
        FailureEffect::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_probes_back() {
        let p = OutlierPolicy {
            consecutive: 2,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        };
        let d = OutlierDetector::new(2, p);
        let t = Instant::now();
        assert_eq!(d.record_failure(0, t), FailureEffect::Counted);
        assert_eq!(
            d.record_failure(0, t),
            FailureEffect::Ejected(Duration::from_secs(5))
        );
        assert!(!d.is_available(0, t + Duration::from_secs(1)));
        assert!(d.is_available(1, t));
        // After the window the member is probed; a failed probe ejects it for twice as long.
        let later = t + Duration::from_secs(6);
        assert!(d.is_available(0, later));
        assert_eq!(
            d.record_failure(0, later),
            FailureEffect::Ejected(Duration::from_secs(10))
        );
        // A success from a request sent before the ejection does not lift it.
        d.record_success(0, later + Duration::from_secs(1));
        assert!(!d.is_available(0, later + Duration::from_secs(1)));
        // A successful probe once the window ran out restores it.
        let after = later + Duration::from_secs(11);
        d.record_success(0, after);
        assert!(d.is_available(0, after));
        assert_eq!(d.record_failure(0, after), FailureEffect::Counted);
    }

    #[test]
    fn a_success_resets_the_count() {
        let d = OutlierDetector::new(1, OutlierPolicy::default());
        let t = Instant::now();
        d.record_failure(0, t);
        d.record_failure(0, t);
        d.record_success(0, t);
        assert_eq!(d.record_failure(0, t), FailureEffect::Counted);
        assert!(d.is_available(0, t));
    }
}
