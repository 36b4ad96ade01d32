//! Demand, as the routers see it: the operator reads every router pod's `/demand` each round
//! ([`collect`]), sums it per member and turns counters into rates ([`aggregate`]), and keeps the
//! latest round on a [`DemandBoard`]. The board is what the external metrics API serves to the
//! HorizontalPodAutoscalers ([`crate::external_metrics`]) and what scale-to-zero reads
//! ([`crate::scale_to_zero`]). docs/autoscaling.md.

pub mod aggregate;
pub mod collect;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use aggregate::{Activity, Aggregator, MemberKey, MemberTotals, PodReport, Snapshot};
pub use collect::Collector;

use crate::external_metrics::{MetricSource, MetricValue, Selector};

/// Requests in flight at a member, summed over its pool's routers (labels `pool`, `member`).
pub const MEMBER_IN_FLIGHT: &str = crate::autoscaling::IN_FLIGHT_METRIC;
/// Requests per second sent to a member (labels `pool`, `member`).
pub const MEMBER_REQUEST_RATE: &str = "lookahead_member_request_rate";
/// Requests per second that ranked a member first while it had no ready replica.
pub const MEMBER_WANTED_RATE: &str = "lookahead_member_wanted_rate";
/// Requests in flight at a policy's routers (label `policy`): what the router HPA follows.
pub const ROUTER_IN_FLIGHT: &str = crate::autoscaling::ROUTER_IN_FLIGHT_METRIC;

/// The latest round of demand.
#[derive(Debug)]
pub struct DemandBoard {
    snapshot: RwLock<Snapshot>,
}

impl Default for DemandBoard {
    fn default() -> Self {
        Self {
            snapshot: RwLock::new(Snapshot::empty(Instant::now())),
        }
    }
}

impl DemandBoard {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| Snapshot::empty(Instant::now()))
    }

    pub fn publish(&self, snap: Snapshot) {
        if let Ok(mut s) = self.snapshot.write() {
            *s = snap;
        }
    }

    /// Collects a round every `every`, forever.
    pub async fn collect_forever(self: Arc<Self>, collector: Collector, every: Duration) {
        let mut aggregator = Aggregator::default();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (reports, complete) = collector.round().await;
            self.publish(aggregator.update(Instant::now(), reports, complete));
        }
    }
}

fn member_value(key: &MemberKey, value: f64) -> MetricValue {
    MetricValue {
        labels: BTreeMap::from([
            ("pool".to_string(), key.pool.clone()),
            ("member".to_string(), key.member.clone()),
        ]),
        value,
    }
}

impl MetricSource for DemandBoard {
    fn metric_names(&self) -> Vec<String> {
        [
            MEMBER_IN_FLIGHT,
            MEMBER_REQUEST_RATE,
            MEMBER_WANTED_RATE,
            ROUTER_IN_FLIGHT,
        ]
        .map(String::from)
        .to_vec()
    }

    fn values(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Option<Vec<MetricValue>> {
        let snap = self.snapshot();
        let read: fn(&MemberTotals) -> f64 = match metric {
            MEMBER_IN_FLIGHT => |t| t.in_flight as f64,
            MEMBER_REQUEST_RATE => |t| t.request_rate,
            MEMBER_WANTED_RATE => |t| t.wanted_rate,
            ROUTER_IN_FLIGHT => {
                let values = snap
                    .routers
                    .iter()
                    .filter(|((ns, _), _)| ns == namespace)
                    .map(|((_, policy), v)| MetricValue {
                        labels: BTreeMap::from([("policy".to_string(), policy.clone())]),
                        value: *v as f64,
                    })
                    .filter(|v| selector.matches(&v.labels))
                    .collect();
                return Some(values);
            }
            _ => return None,
        };
        let values = snap
            .members
            .iter()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(k, (t, _))| member_value(k, read(t)))
            .filter(|v| selector.matches(&v.labels))
            .collect();
        Some(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookahead_api::demand::{DemandReport, MemberDemand};

    fn board() -> DemandBoard {
        let mut a = Aggregator::default();
        let report = |member: &str, in_flight| MemberDemand {
            member: member.into(),
            in_flight,
            requests: 5,
            wanted: 0,
            cold: false,
        };
        let pod = PodReport {
            namespace: "ns".into(),
            pod: "r1".into(),
            policy: Some("pol".into()),
            report: DemandReport {
                pool: Some("p".into()),
                in_flight: 7,
                members: vec![report("code", 3), report("math", 4)],
            },
        };
        let b = DemandBoard::default();
        b.publish(a.update(Instant::now(), vec![pod], true));
        b
    }

    #[test]
    fn serves_a_members_in_flight_by_selector_and_namespace() {
        let b = board();
        let sel = Selector::parse("pool=p,member=code").expect("selector");
        let v = b
            .values("ns", MEMBER_IN_FLIGHT, &sel)
            .expect("known metric");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].value, 3.0);
        assert_eq!(v[0].labels["member"], "code");
        let all = Selector::parse("").expect("empty selector");
        assert_eq!(
            b.values("ns", MEMBER_IN_FLIGHT, &all).map(|v| v.len()),
            Some(2)
        );
        assert_eq!(
            b.values("other", MEMBER_IN_FLIGHT, &all).map(|v| v.len()),
            Some(0)
        );
        assert_eq!(b.values("ns", "nope", &all), None);
        let routers = b
            .values("ns", ROUTER_IN_FLIGHT, &all)
            .expect("router metric");
        assert_eq!(routers[0].value, 7.0);
    }
}
