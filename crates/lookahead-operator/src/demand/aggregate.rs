//! Sums the routers' demand reports per member and turns their counters into rates and
//! activity times. Pure: the collector feeds it one round of reports at a time.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use lookahead_api::demand::DemandReport;

/// One router pod's report.
#[derive(Debug, Clone)]
pub struct PodReport {
    pub namespace: String,
    pub pod: String,
    /// The `RoutingPolicy` the router serves (its pod label).
    pub policy: Option<String>,
    pub report: DemandReport,
}

/// A member of a pool in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey {
    pub namespace: String,
    pub pool: String,
    pub member: String,
}

/// A member's demand summed over every router replica, this round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberTotals {
    pub in_flight: u64,
    /// Requests per second sent to the member.
    pub request_rate: f64,
    /// Requests per second that wanted the member while it was cold.
    pub wanted_rate: f64,
    /// Whether some router sees the member without a ready replica.
    pub cold: bool,
}

/// When a member last had demand (kept across rounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// First round that reported the member (idleness counts from here at the latest).
    pub first_seen: Instant,
    /// Last round with requests in flight or new requests.
    pub last_active: Option<Instant>,
    /// Last round with new wanted requests (the member was ranked first while cold).
    pub last_wanted: Option<Instant>,
}

impl Activity {
    /// The last time anything asked for the member (or when it was first seen).
    pub fn last_demand(&self) -> Instant {
        [self.last_active, self.last_wanted]
            .into_iter()
            .flatten()
            .fold(self.first_seen, Instant::max)
    }
}

/// One round's view.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    /// Every router pod answered this round.
    pub complete: bool,
    pub members: BTreeMap<MemberKey, (MemberTotals, Activity)>,
    /// Requests in flight at the routers of each (namespace, policy).
    pub routers: BTreeMap<(String, String), u64>,
}

impl Snapshot {
    pub fn empty(at: Instant) -> Self {
        Self {
            at,
            complete: false,
            members: BTreeMap::new(),
            routers: BTreeMap::new(),
        }
    }
}

/// Counter state between rounds.
#[derive(Debug, Default)]
pub struct Aggregator {
    previous: HashMap<(String, String), (Instant, DemandReport)>,
    activity: HashMap<MemberKey, Activity>,
}

impl Aggregator {
    /// Folds one round of reports into a snapshot. A pod seen for the first time contributes
    /// its whole counters as this round's increase (its counters started with the pod, at most a
    /// round ago unless the operator itself restarted), but no rate.
    pub fn update(&mut self, now: Instant, reports: Vec<PodReport>, complete: bool) -> Snapshot {
        let mut snap = Snapshot::empty(now);
        snap.complete = complete;
        let mut seen = Vec::with_capacity(reports.len());
        for r in reports {
            let id = (r.namespace.clone(), r.pod.clone());
            let previous = self.previous.remove(&id);
            self.fold_pod(now, &r, previous.as_ref(), &mut snap);
            if let Some(policy) = &r.policy {
                *snap
                    .routers
                    .entry((r.namespace.clone(), policy.clone()))
                    .or_default() += r.report.in_flight;
            }
            self.previous.insert(id.clone(), (now, r.report));
            seen.push(id);
        }
        if complete {
            self.previous.retain(|id, _| seen.contains(id));
        }
        snap
    }

    fn fold_pod(
        &mut self,
        now: Instant,
        r: &PodReport,
        previous: Option<&(Instant, DemandReport)>,
        snap: &mut Snapshot,
    ) {
        let Some(pool) = &r.report.pool else { return };
        for m in &r.report.members {
            let before = previous.and_then(|(at, p)| {
                let pm = p.members.iter().find(|x| x.member == m.member)?;
                Some((*at, pm.requests, pm.wanted))
            });
            // A counter below its last value means the router restarted: count from zero.
            let delta = |now_v: u64, was: Option<u64>| match was {
                Some(w) if now_v >= w => now_v - w,
                _ => now_v,
            };
            let requests = delta(m.requests, before.map(|b| b.1));
            let wanted = delta(m.wanted, before.map(|b| b.2));
            let secs = before.map_or(0.0, |b| now.duration_since(b.0).as_secs_f64());
            let rate = |d: u64| if secs > 0.0 { d as f64 / secs } else { 0.0 };
            let key = MemberKey {
                namespace: r.namespace.clone(),
                pool: pool.clone(),
                member: m.member.clone(),
            };
            let act = self.activity.entry(key.clone()).or_insert(Activity {
                first_seen: now,
                last_active: None,
                last_wanted: None,
            });
            if m.in_flight > 0 || requests > 0 {
                act.last_active = Some(now);
            }
            if wanted > 0 {
                act.last_wanted = Some(now);
            }
            let (totals, activity) = snap
                .members
                .entry(key)
                .or_insert_with(|| (MemberTotals::default(), *act));
            *activity = *act;
            totals.in_flight += m.in_flight;
            totals.request_rate += rate(requests);
            totals.wanted_rate += rate(wanted);
            totals.cold |= m.cold;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookahead_api::demand::MemberDemand;
    use std::time::Duration;

    fn pod(name: &str, in_flight: u64, requests: u64, wanted: u64) -> PodReport {
        PodReport {
            namespace: "ns".into(),
            pod: name.into(),
            policy: Some("pol".into()),
            report: DemandReport {
                pool: Some("p".into()),
                in_flight: in_flight + 1,
                members: vec![MemberDemand {
                    member: "code".into(),
                    in_flight,
                    requests,
                    wanted,
                    cold: wanted > 0,
                }],
            },
        }
    }

    fn key() -> MemberKey {
        MemberKey {
            namespace: "ns".into(),
            pool: "p".into(),
            member: "code".into(),
        }
    }

    #[test]
    fn sums_replicas_and_takes_rates_from_counter_increases() {
        let mut a = Aggregator::default();
        let t0 = Instant::now();
        a.update(t0, vec![pod("r1", 1, 10, 0), pod("r2", 2, 20, 0)], true);
        let t1 = t0 + Duration::from_secs(2);
        let s = a.update(t1, vec![pod("r1", 3, 14, 0), pod("r2", 0, 24, 2)], true);
        let (totals, act) = &s.members[&key()];
        assert_eq!(totals.in_flight, 3);
        assert!((totals.request_rate - 4.0).abs() < 1e-9, "{totals:?}");
        assert!((totals.wanted_rate - 1.0).abs() < 1e-9);
        assert!(totals.cold);
        assert_eq!(act.last_wanted, Some(t1));
        assert_eq!(s.routers[&("ns".to_string(), "pol".to_string())], 5);
    }

    #[test]
    fn an_idle_member_keeps_its_last_activity_and_a_restarted_router_counts_from_zero() {
        let mut a = Aggregator::default();
        let t0 = Instant::now();
        a.update(t0, vec![pod("r1", 0, 10, 0)], true);
        let t1 = t0 + Duration::from_secs(2);
        a.update(t1, vec![pod("r1", 0, 10, 0)], true);
        let t2 = t1 + Duration::from_secs(2);
        let s = a.update(t2, vec![pod("r1", 0, 10, 0)], true);
        let act = s.members[&key()].1;
        assert_eq!(
            act.last_active,
            Some(t0),
            "first sighting counts its requests"
        );
        assert_eq!(act.last_demand(), t0);
        let t3 = t2 + Duration::from_secs(2);
        let s = a.update(t3, vec![pod("r1", 0, 3, 0)], true);
        assert_eq!(
            s.members[&key()].1.last_active,
            Some(t3),
            "reset: 3 new requests"
        );
    }
}
