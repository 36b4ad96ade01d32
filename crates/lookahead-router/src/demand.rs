//! Demand per member, as autoscaling needs it (docs/autoscaling.md): requests in flight (a
//! stream counts until its last byte), requests sent, and *wanted* requests, those that ranked a
//! member first while it had no ready replica. A member is *cold* when connecting to it failed
//! (a Service without ready endpoints refuses at once): cold members are skipped for a probe
//! interval, then the next request tries them again, so routing returns to a member within one
//! interval of its first ready replica. Served as JSON at `/demand` ([`DemandReport`]) and as
//! `lookahead_router_member_*` metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookahead_api::demand::{DemandReport, MemberDemand};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;

use crate::metrics::{MemberLabels, MemberName};

/// How long a cold member is skipped before a request tries it again.
pub const COLD_PROBE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Cells {
    in_flight: AtomicU64,
    requests: AtomicU64,
    wanted: AtomicU64,
    cold: AtomicBool,
    /// While cold: when the next request may try the member again.
    probe_at: Mutex<Option<Instant>>,
}

/// The demand of every member of the pool, by member index.
#[derive(Debug)]
pub struct Demand {
    members: Vec<Cells>,
    probe_interval: Duration,
}

impl Demand {
    pub fn new(members: usize, probe_interval: Duration) -> Self {
        Self {
            members: (0..members).map(|_| Cells::default()).collect(),
            probe_interval,
        }
    }

    /// Counts a request sent to member `i`; it stays in flight until the guard drops.
    pub fn enter(self: &Arc<Self>, i: usize) -> MemberLoad {
        if let Some(c) = self.members.get(i) {
            c.in_flight.fetch_add(1, Ordering::Relaxed);
            c.requests.fetch_add(1, Ordering::Relaxed);
        }
        MemberLoad {
            demand: self.clone(),
            member: i,
        }
    }

    /// Counts a request that wanted member `i` while it was cold.
    pub fn want(&self, i: usize) {
        if let Some(c) = self.members.get(i) {
            c.wanted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Member `i` could not be reached: skip it until the next probe.
    pub fn mark_cold(&self, i: usize, now: Instant) {
        if let Some(c) = self.members.get(i) {
            if !c.cold.swap(true, Ordering::Relaxed) {
                tracing::info!(member = i, "member has no ready replica (cold)");
            }
            if let Ok(mut p) = c.probe_at.lock() {
                *p = Some(now + self.probe_interval);
            }
        }
    }

    /// Member `i` answered: it has a ready replica.
    pub fn mark_warm(&self, i: usize) {
        if let Some(c) = self.members.get(i) {
            if c.cold.swap(false, Ordering::Relaxed) {
                tracing::info!(member = i, "member is ready again (warm)");
            }
        }
    }

    /// Whether member `i` is cold (whatever its probe time).
    pub fn is_cold(&self, i: usize) -> bool {
        self.members
            .get(i)
            .is_some_and(|c| c.cold.load(Ordering::Relaxed))
    }

    /// Whether a request should skip member `i` now: cold, and its next probe not yet due.
    pub fn skips(&self, i: usize, now: Instant) -> bool {
        self.members.get(i).is_some_and(|c| {
            c.cold.load(Ordering::Relaxed)
                && c.probe_at
                    .lock()
                    .ok()
                    .and_then(|p| *p)
                    .is_some_and(|at| now < at)
        })
    }

    /// The earliest time a skipped member may be tried again (`now` when none is skipped).
    pub fn next_probe(&self, now: Instant) -> Instant {
        self.members
            .iter()
            .filter(|c| c.cold.load(Ordering::Relaxed))
            .filter_map(|c| c.probe_at.lock().ok().and_then(|p| *p))
            .filter(|&at| at > now)
            .min()
            .unwrap_or(now)
    }

    /// The report served at `/demand`.
    pub fn report(&self, names: &[&str], pool: Option<&str>, in_flight: u64) -> DemandReport {
        DemandReport {
            pool: pool.map(str::to_string),
            in_flight,
            members: names
                .iter()
                .zip(&self.members)
                .map(|(name, c)| MemberDemand {
                    member: (*name).to_string(),
                    in_flight: c.in_flight.load(Ordering::Relaxed),
                    requests: c.requests.load(Ordering::Relaxed),
                    wanted: c.wanted.load(Ordering::Relaxed),
                    cold: c.cold.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

/// The demand as `lookahead_router_member_*` metrics, read at each scrape.
#[derive(Debug)]
pub struct DemandCollector {
    names: Vec<Arc<str>>,
    demand: Arc<Demand>,
}

impl DemandCollector {
    pub fn new(names: Vec<Arc<str>>, demand: Arc<Demand>) -> Self {
        Self { names, demand }
    }

    /// One family: a sample per member, `metric` read from its cells.
    fn family<M: EncodeMetric + TypedMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        metric: impl Fn(&Cells) -> M,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, M::TYPE)?;
        for (member, cells) in self.names.iter().zip(&self.demand.members) {
            let labels = MemberLabels {
                member: MemberName(member.clone()),
            };
            metric(cells).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for DemandCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.family(
            &mut encoder,
            (
                "member_in_flight",
                "Requests being answered by the member now (streams until their last byte)",
            ),
            |c| ConstGauge::new(i64::try_from(load(&c.in_flight)).unwrap_or(i64::MAX)),
        )?;
        self.family(
            &mut encoder,
            ("member_requests", "Requests sent to the member"),
            |c| ConstCounter::new(load(&c.requests)),
        )?;
        self.family(
            &mut encoder,
            (
                "member_wanted",
                "Requests that ranked the member first while it had no ready replica",
            ),
            |c| ConstCounter::new(load(&c.wanted)),
        )?;
        self.family(
            &mut encoder,
            (
                "member_cold",
                "1 while the router sees no ready replica behind the member",
            ),
            |c| ConstGauge::new(i64::from(c.cold.load(Ordering::Relaxed))),
        )
    }
}

/// A request at a member: counted in flight until dropped (with the response body, for streams).
#[derive(Debug)]
pub struct MemberLoad {
    demand: Arc<Demand>,
    member: usize,
}

impl Drop for MemberLoad {
    fn drop(&mut self) {
        if let Some(c) = self.demand.members.get(self.member) {
            c.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_lasts_as_long_as_the_guard_and_requests_accumulate() {
        let d = Arc::new(Demand::new(2, COLD_PROBE_INTERVAL));
        let a = d.enter(1);
        let b = d.enter(1);
        drop(a);
        let r = d.report(&["x", "y"], Some("pool"), 1);
        assert_eq!(r.members[1].in_flight, 1);
        assert_eq!(r.members[1].requests, 2);
        drop(b);
        assert_eq!(d.report(&["x", "y"], None, 0).members[1].in_flight, 0);
    }

    #[test]
    fn a_cold_member_is_skipped_until_its_probe_is_due_and_warms_on_an_answer() {
        let d = Demand::new(1, Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(!d.skips(0, t0));
        d.mark_cold(0, t0);
        assert!(d.skips(0, t0 + Duration::from_millis(100)));
        assert!(!d.skips(0, t0 + Duration::from_millis(600)), "probe due");
        assert!(d.is_cold(0), "still cold until it answers");
        assert_eq!(d.next_probe(t0), t0 + Duration::from_millis(500));
        d.mark_warm(0);
        assert!(!d.is_cold(0) && !d.skips(0, t0));
    }

    #[test]
    fn renders_every_family_per_member() {
        let d = Arc::new(Demand::new(1, COLD_PROBE_INTERVAL));
        d.want(0);
        d.mark_cold(0, Instant::now());
        let mut registry = prometheus_client::registry::Registry::with_prefix("lookahead_router");
        registry.register_collector(Box::new(DemandCollector::new(vec![Arc::from("code")], d)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("lookahead_router_member_wanted_total{member=\"code\"} 1"),
            "{out}"
        );
        assert!(out.contains("lookahead_router_member_cold{member=\"code\"} 1"));
        assert!(out.contains("# TYPE lookahead_router_member_in_flight gauge"));
    }
}
