//! The router's Prometheus metrics, on `prometheus-client` (the operator's style), served at
//! `/metrics` in the OpenMetrics text format. Events on the request path update counters and
//! histograms as they happen; state (acceptance verdict, ejections, demand) is read at scrape
//! time, so a scrape always shows the router as it is, with nothing to keep in sync.

mod tenants;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::scoring::FAIL_OPEN_REASONS;

use self::tenants::TenantMetrics;
pub use self::tenants::{KeyMemberLabels, KeySeries, LimitLabels, TokenLabels};

/// The `/metrics` content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, seconds: 50 µs .. 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A member's name as a label value, escaped as the text format requires (prometheus-client
/// writes label values verbatim; member names come from users).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MemberName(pub Arc<str>);

impl EncodeLabelValue for MemberName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `None` for requests no member answered.
pub const NO_MEMBER: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: MemberName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub member: MemberName,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub member: MemberName,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutedLabels {
    pub member: MemberName,
    /// What chose the member: `scores`, `fail_open` or `not_accepted`.
    pub basis: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// What became of a request a member was tried for (`requests{outcome}`).
pub const OUTCOMES: [&str; 3] = ["ok", "upstream_client_error", "failed"];

/// One member's request-path series, taken from their families once, so that counting is an
/// atomic add rather than a label hash and a lock per event.
#[derive(Debug)]
struct MemberSeries {
    name: Arc<str>,
    /// `requests{outcome}`, one per [`OUTCOMES`] (present from the start, at 0).
    requests: [Counter; 3],
    /// `routed{basis="scores"}` (present from the start, at 0).
    routed_by_scores: Counter,
    /// `upstream_seconds`: appears with the member's first attempt.
    upstream: OnceLock<Histogram>,
}

/// The router's metrics and the registry `/metrics` renders.
#[derive(Debug)]
pub struct RouterMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    rejected: Family<CodeLabels, Counter>,
    routed: Family<RoutedLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    fail_opens: Family<ReasonLabels, Counter>,
    not_accepted: Family<MemberLabels, Counter>,
    ejections: Family<MemberLabels, Counter>,
    stream_errors: Family<MemberLabels, Counter>,
    decision: Histogram,
    upstream: HistogramFamily<MemberLabels>,
    in_flight: Gauge,
    member_ejected: Family<MemberLabels, Gauge>,
    tenants: TenantMetrics,
    /// By pool index.
    members: Vec<MemberSeries>,
}

impl RouterMetrics {
    /// The metrics of a router over `members`, each member's series present from the start (at
    /// zero), so shares and rates are defined before its first request.
    pub fn new(members: &[Arc<str>]) -> Self {
        let mut m = Self::families(members);
        // Creating a series is what makes it appear (at 0).
        for name in members {
            let member = MemberName(name.clone());
            let labels = MemberLabels {
                member: member.clone(),
            };
            let requests = OUTCOMES.map(|outcome| {
                m.requests
                    .get_or_create(&RequestLabels {
                        member: member.clone(),
                        outcome,
                    })
                    .clone()
            });
            let routed_by_scores = m
                .routed
                .get_or_create(&RoutedLabels {
                    member: member.clone(),
                    basis: "scores",
                })
                .clone();
            drop(m.ejections.get_or_create(&labels));
            drop(m.member_ejected.get_or_create(&labels));
            m.members.push(MemberSeries {
                name: name.clone(),
                requests,
                routed_by_scores,
                upstream: OnceLock::new(),
            });
        }
        for reason in FAIL_OPEN_REASONS {
            drop(m.fail_opens.get_or_create(&ReasonLabels { reason }));
        }
        m
    }

    /// Adds state read at each scrape (the demand, the acceptance gate), under the router's
    /// prefix.
    pub fn register_collector(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// Registers a family another module owns and counts (e.g. the cost profiles), under the
    /// router's prefix.
    pub fn register_family(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    fn families(members: &[Arc<str>]) -> Self {
        let mut registry = Registry::with_prefix("lookahead_router");
        let m = Self {
            requests: Family::default(),
            rejected: Family::default(),
            routed: Family::default(),
            fallbacks: Family::default(),
            fail_opens: Family::default(),
            not_accepted: Family::default(),
            ejections: Family::default(),
            stream_errors: Family::default(),
            decision: latency_histogram(),
            upstream: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            member_ejected: Family::default(),
            tenants: TenantMetrics::new(members),
            registry: Registry::default(),
            members: Vec::with_capacity(members.len()),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by member (none: no member answered) and outcome",
            m.requests.clone(),
        );
        r.register(
            "rejected",
            "Requests rejected before dispatch, by error code",
            m.rejected.clone(),
        );
        r.register("routed", "Routed (alias) requests by the member the decision ranked first and what ranked it (scores, fail_open, not_accepted): the routed share", m.routed.clone());
        r.register(
            "fallbacks",
            "Failed upstream attempts retried on the next member, by member and reason",
            m.fallbacks.clone(),
        );
        r.register(
            "fail_open",
            "Routing decisions that failed open to the default model, by reason",
            m.fail_opens.clone(),
        );
        r.register("not_accepted", "Routed requests sent to the best single model because the artifact did not beat it, by member", m.not_accepted.clone());
        r.register(
            "ejections",
            "Outlier ejections, by member",
            m.ejections.clone(),
        );
        r.register(
            "stream_errors",
            "Relayed streams broken after the first byte, by member",
            m.stream_errors.clone(),
        );
        r.register(
            "decision_seconds",
            "Time to rank the members for one request, scoring included",
            m.decision.clone(),
        );
        r.register(
            "upstream_seconds",
            "Upstream attempt latency (full body, or first chunk when streaming), by member",
            m.upstream.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests being served now",
            m.in_flight.clone(),
        );
        r.register(
            "member_ejected",
            "1 while the member is ejected by outlier detection",
            m.member_ejected.clone(),
        );
        m.tenants.register(r);
        Self { registry, ..m }
    }

    /// A request answered by member `member` (pool index) with `outcome`, one of [`OUTCOMES`].
    pub fn answered(&self, member: usize, outcome: &'static str) {
        let Some(m) = self.members.get(member) else {
            return;
        };
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(k) => {
                m.requests[k].inc();
            }
            None => self.count_request(&m.name, outcome),
        }
    }

    fn count_request(&self, member: &Arc<str>, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                member: MemberName(member.clone()),
                outcome,
            })
            .inc();
    }

    /// A request no member answered.
    pub fn unanswered(&self, outcome: &'static str) {
        self.count_request(&Arc::from(NO_MEMBER), outcome);
    }

    /// A request rejected before dispatch with error `code`.
    pub fn rejected(&self, code: &'static str) {
        self.rejected.get_or_create(&CodeLabels { code }).inc();
        self.unanswered("rejected");
    }

    /// A routed request whose decision ranked member `member` (pool index) first, on `basis`.
    pub fn routed(&self, member: usize, basis: &'static str) {
        let Some(m) = self.members.get(member) else {
            return;
        };
        if basis == "scores" {
            m.routed_by_scores.inc();
            return;
        }
        self.routed
            .get_or_create(&RoutedLabels {
                member: MemberName(m.name.clone()),
                basis,
            })
            .inc();
    }

    /// A failed attempt at `member`, retried on the next one.
    pub fn fell_back(&self, member: &Arc<str>, reason: String) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                member: MemberName(member.clone()),
                reason,
            })
            .inc();
    }

    pub fn failed_open(&self, reason: &'static str) {
        self.fail_opens
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn not_accepted(&self, member: &Arc<str>) {
        self.not_accepted
            .get_or_create(&member_labels(member))
            .inc();
    }

    pub fn ejected(&self, member: &Arc<str>) {
        self.ejections.get_or_create(&member_labels(member)).inc();
    }

    pub fn stream_broke(&self, member: &Arc<str>) {
        self.stream_errors
            .get_or_create(&member_labels(member))
            .inc();
    }

    /// Time taken to rank the members for one request.
    pub fn decided(&self, took: Duration) {
        self.decision.observe(took.as_secs_f64());
    }

    /// One upstream attempt at member `member` (pool index).
    pub fn attempted(&self, member: usize, took: Duration) {
        let Some(m) = self.members.get(member) else {
            return;
        };
        m.upstream
            .get_or_init(|| self.upstream.get_or_create(&member_labels(&m.name)).clone())
            .observe(took.as_secs_f64());
    }

    /// The series of API key `key` (resolved once per request: [`KeySeries`]).
    pub fn key_series(&self, key: &Arc<str>) -> Arc<KeySeries> {
        self.tenants.key(key)
    }

    /// A request of `key` refused by `limit`.
    pub fn rate_limited(&self, key: &Arc<str>, limit: &'static str) {
        self.tenants.rate_limited(key, limit);
    }

    /// Counts a request in flight until the guard drops (also when the client goes away).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.in_flight.get()).unwrap_or(0)
    }

    /// The exposition text; `ejected` gives each member with whether outlier detection ejects
    /// it now.
    pub fn render(&self, ejected: &[(&Arc<str>, bool)]) -> String {
        for (member, ejected) in ejected {
            self.member_ejected
                .get_or_create(&member_labels(member))
                .set(i64::from(*ejected));
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn member_labels(member: &Arc<str>) -> MemberLabels {
    MemberLabels {
        member: MemberName(member.clone()),
    }
}

/// A request in flight: counted until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<RouterMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The value of the sample `series` (name with labels, as exposed) in exposition `text`; 0 when
/// absent. For tests and tools reading `/metrics` as a scraper would.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acceptance::AcceptanceGate;
    use crate::demand::{Demand, DemandCollector, COLD_PROBE_INTERVAL};
    use lookahead_api::RouterConfig;
    use lookahead_model::artifact::Acceptance;

    fn metrics(names: &[&str]) -> (RouterMetrics, Vec<Arc<str>>, Arc<AcceptanceGate>) {
        let yaml = names
            .iter()
            .map(|n| format!("  - {{ name: '{n}', modelId: m, baseUrl: 'http://a/v1' }}\n"))
            .collect::<String>();
        let config: RouterConfig =
            serde_yaml::from_str(&format!("members:\n{yaml}policy:\n  method: fixed\n")).unwrap();
        let gate = Arc::new(AcceptanceGate::new(&config, 0));
        let names: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
        let demand = Arc::new(Demand::new(names.len(), COLD_PROBE_INTERVAL));
        let mut m = RouterMetrics::new(&names);
        m.register_collector(DemandCollector::new(names.clone(), demand));
        m.register_collector(gate.clone());
        (m, names, gate)
    }

    #[test]
    fn renders_counters_cumulative_histograms_state_and_escaped_members() {
        let (m, names, gate) = metrics(&["yi", "p\"hi"]);
        m.answered(0, "ok");
        m.answered(0, "ok");
        m.routed(1, "scores");
        m.decided(Duration::from_micros(70));
        m.decided(Duration::from_millis(2));
        gate.apply(Some(&Acceptance {
            gain: -1.5,
            lower_bound: -3.0,
            accepted: false,
            fallback_model: "yi".into(),
            min_gain: 0.0,
            level: 0.95,
            resamples: 100,
            examples: 10,
            folds: 0,
        }));
        let text = m.render(&[(&names[0], false), (&names[1], true)]);
        assert_eq!(sample(&text, "lookahead_router_artifact_accepted"), 0.0);
        assert_eq!(
            sample(&text, "lookahead_router_artifact_validation_gain"),
            -1.5
        );
        assert_eq!(
            sample(
                &text,
                "lookahead_router_requests_total{member=\"yi\",outcome=\"ok\"}"
            ),
            2.0
        );
        assert!(
            text.contains("lookahead_router_requests_total{member=\"yi\",outcome=\"failed\"} 0"),
            "every member's series from the start: {text}"
        );
        assert_eq!(
            sample(
                &text,
                "lookahead_router_routed_total{member=\"p\\\"hi\",basis=\"scores\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(&text, "lookahead_router_decision_seconds_count"),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                "lookahead_router_decision_seconds_bucket{le=\"0.0001\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(&text, "lookahead_router_member_ejected{member=\"p\\\"hi\"}"),
            1.0
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics: {text}");
    }

    #[test]
    fn resolved_series_count_where_their_labels_say_and_appear_when_first_used() {
        let (m, names, _) = metrics(&["yi", "phi"]);
        let render = |m: &RouterMetrics| m.render(&[]);
        assert!(
            !render(&m).contains("upstream_seconds_count{"),
            "no attempt yet"
        );
        m.attempted(1, Duration::from_millis(3));
        m.answered(1, "upstream_client_error");
        m.answered(1, "no_such_outcome");
        m.routed(0, "fail_open");
        let key = m.key_series(&Arc::from("team-a"));
        key.answered(Some(1));
        key.answered(None);
        key.used(1, [7, 5], 0.25);
        // The same key's series again: counts add up in the same series.
        m.key_series(&Arc::from("team-a")).answered(Some(1));
        let text = render(&m);
        let at = |series: &str| sample(&text, &format!("lookahead_router_{series}"));
        assert_eq!(at("upstream_seconds_count{member=\"phi\"}"), 1.0);
        assert!(
            !text.contains("upstream_seconds_count{member=\"yi\"}"),
            "{text}"
        );
        assert_eq!(
            at("requests_total{member=\"phi\",outcome=\"upstream_client_error\"}"),
            1.0
        );
        assert_eq!(
            at("requests_total{member=\"phi\",outcome=\"no_such_outcome\"}"),
            1.0
        );
        assert_eq!(at("routed_total{member=\"yi\",basis=\"fail_open\"}"), 1.0);
        assert_eq!(
            at("requests_by_key_total{key=\"team-a\",member=\"phi\"}"),
            2.0
        );
        assert_eq!(
            at("requests_by_key_total{key=\"team-a\",member=\"none\"}"),
            1.0
        );
        assert_eq!(
            at("tokens_total{key=\"team-a\",member=\"phi\",kind=\"completion\"}"),
            5.0
        );
        assert_eq!(at("spend_total{key=\"team-a\",member=\"phi\"}"), 0.25);
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn without_a_verdict_the_gain_is_not_a_number() {
        let (m, _, _) = metrics(&["yi"]);
        let text = m.render(&[]);
        assert!(
            text.contains("lookahead_router_artifact_validation_gain NaN"),
            "{text}"
        );
        assert_eq!(sample(&text, "lookahead_router_artifact_accepted"), 1.0);
    }

    #[test]
    fn in_flight_lasts_as_long_as_the_guard() {
        let (m, _, _) = metrics(&["yi"]);
        let m = Arc::new(m);
        let a = m.enter();
        assert_eq!(m.in_flight(), 1);
        drop(a);
        assert_eq!(m.in_flight(), 0);
    }
}
