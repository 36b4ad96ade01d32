//! Prometheus metrics, written in the text exposition format (0.0.4) by hand: a few counter and
//! histogram families with small label sets, cheap enough for the request path (one short mutex
//! per labelled update, atomics for histograms).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A counter family keyed by label values.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, label_values: &[&str]) {
        self.add(label_values, 1);
    }

    pub fn add(&self, label_values: &[&str], n: u64) {
        if let Ok(mut v) = self.values.lock() {
            // Look up by borrowed values first: no allocation on the hot path.
            if let Some(c) = v.iter_mut().find(|(k, _)| {
                k.iter()
                    .map(String::as_str)
                    .eq(label_values.iter().copied())
            }) {
                *c.1 += n;
            } else {
                v.insert(label_values.iter().map(|s| s.to_string()).collect(), n);
            }
        }
    }

    /// The value for these labels (0 when never incremented).
    pub fn get(&self, label_values: &[&str]) -> u64 {
        self.values
            .lock()
            .ok()
            .and_then(|v| {
                v.iter()
                    .find(|(k, _)| {
                        k.iter()
                            .map(String::as_str)
                            .eq(label_values.iter().copied())
                    })
                    .map(|(_, c)| *c)
            })
            .unwrap_or(0)
    }

    /// Sum over all label values.
    pub fn total(&self) -> u64 {
        self.values.lock().map(|v| v.values().sum()).unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        if let Ok(v) = self.values.lock() {
            for (k, c) in v.iter() {
                let _ = writeln!(out, "{}{} {}", self.name, labels(self.labels, k, None), c);
            }
        }
    }
}

/// Latency buckets, seconds: 50 µs .. 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug)]
struct HistogramCells {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl HistogramCells {
    fn new(n: usize) -> Self {
        Self {
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, bounds: &[f64], d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// A histogram family keyed by label values (possibly none).
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    cells: Mutex<BTreeMap<Vec<String>, std::sync::Arc<HistogramCells>>>,
}

impl HistogramVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            bounds,
            cells: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, label_values: &[&str], d: Duration) {
        let cells = match self.cells.lock() {
            Ok(mut m) => {
                match m.iter().find(|(k, _)| {
                    k.iter()
                        .map(String::as_str)
                        .eq(label_values.iter().copied())
                }) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let c = std::sync::Arc::new(HistogramCells::new(self.bounds.len()));
                        m.insert(
                            label_values.iter().map(|s| s.to_string()).collect(),
                            c.clone(),
                        );
                        c
                    }
                }
            }
            Err(_) => return,
        };
        cells.observe(self.bounds, d);
    }

    /// Number of observations for these labels.
    pub fn count(&self, label_values: &[&str]) -> u64 {
        self.cells
            .lock()
            .ok()
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| {
                        k.iter()
                            .map(String::as_str)
                            .eq(label_values.iter().copied())
                    })
                    .map(|(_, c)| c.count.load(Ordering::Relaxed))
            })
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let Ok(m) = self.cells.lock() else { return };
        for (k, c) in m.iter() {
            let mut cumulative = 0u64;
            for (i, b) in self.bounds.iter().enumerate() {
                cumulative += c.buckets[i].load(Ordering::Relaxed);
                let le = format!("{b}");
                let _ = writeln!(
                    out,
                    "{}_bucket{} {}",
                    self.name,
                    labels(self.labels, k, Some(&le)),
                    cumulative
                );
            }
            let count = c.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                labels(self.labels, k, Some("+Inf")),
                count
            );
            let sum = c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "{}_sum{} {}",
                self.name,
                labels(self.labels, k, None),
                sum
            );
            let _ = writeln!(
                out,
                "{}_count{} {}",
                self.name,
                labels(self.labels, k, None),
                count
            );
        }
    }
}

pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn render_gauge(out: &mut String, name: &str, help: &str, samples: &[(Option<(&str, &str)>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (label, v) in samples {
        match label {
            Some((k, val)) => {
                let _ = writeln!(out, "{name}{{{k}=\"{}\"}} {v}", escape(val));
            }
            None => {
                let _ = writeln!(out, "{name} {v}");
            }
        }
    }
}

/// The router's metrics.
#[derive(Debug)]
pub struct RouterMetrics {
    /// Requests answered, by member (`none` when rejected before dispatch) and outcome.
    pub requests: CounterVec,
    /// Requests rejected before dispatch, by error code.
    pub rejected: CounterVec,
    /// Attempts that failed and moved on to the next member, by failed member and reason.
    pub fallbacks: CounterVec,
    /// Decisions that failed open to the default model, by reason.
    pub fail_opens: CounterVec,
    /// Routed requests sent to the fallback model because the artifact was not accepted.
    pub not_accepted: CounterVec,
    /// Member ejections.
    pub ejections: CounterVec,
    /// Relayed streams that broke after the first byte reached the client.
    pub stream_errors: CounterVec,
    /// Time to rank members for one request (scoring included).
    pub decision: HistogramVec,
    /// Upstream attempt latency (whole body for buffered responses; first chunk for streams).
    pub upstream: HistogramVec,
    pub in_flight: AtomicI64,
}

impl Default for RouterMetrics {
    fn default() -> Self {
        Self {
            requests: CounterVec::new(
                "lookahead_router_requests_total",
                "Requests answered, by member and outcome.",
                &["member", "outcome"],
            ),
            rejected: CounterVec::new(
                "lookahead_router_rejected_total",
                "Requests rejected before dispatch, by error code.",
                &["code"],
            ),
            fallbacks: CounterVec::new(
                "lookahead_router_fallbacks_total",
                "Failed upstream attempts retried on the next member, by member and reason.",
                &["member", "reason"],
            ),
            fail_opens: CounterVec::new(
                "lookahead_router_fail_open_total",
                "Routing decisions that failed open to the default model, by reason.",
                &["reason"],
            ),
            not_accepted: CounterVec::new(
                "lookahead_router_not_accepted_total",
                "Routed requests sent to the best single model because the artifact did not beat it, by member.",
                &["member"],
            ),
            ejections: CounterVec::new(
                "lookahead_router_ejections_total",
                "Outlier ejections, by member.",
                &["member"],
            ),
            stream_errors: CounterVec::new(
                "lookahead_router_stream_errors_total",
                "Relayed streams broken after the first byte, by member.",
                &["member"],
            ),
            decision: HistogramVec::new(
                "lookahead_router_decision_seconds",
                "Time to rank the members for one request, scoring included.",
                &[],
                LATENCY_BUCKETS,
            ),
            upstream: HistogramVec::new(
                "lookahead_router_upstream_seconds",
                "Upstream attempt latency (full body, or first chunk when streaming), by member.",
                &["member"],
                LATENCY_BUCKETS,
            ),
            in_flight: AtomicI64::new(0),
        }
    }
}

impl RouterMetrics {
    /// The exposition text; `ejected` lists each member with whether it is ejected now,
    /// `accepted` whether the served artifact passed the acceptance gate.
    pub fn render(&self, ejected: &[(&str, bool)], accepted: bool) -> String {
        let mut out = String::with_capacity(8192);
        self.requests.render(&mut out);
        self.rejected.render(&mut out);
        self.fallbacks.render(&mut out);
        self.fail_opens.render(&mut out);
        self.not_accepted.render(&mut out);
        render_gauge(
            &mut out,
            "lookahead_router_artifact_accepted",
            "0 while the served artifact is not accepted (it did not beat the best single model) and every routed request goes to that model.",
            &[(None, if accepted { 1.0 } else { 0.0 })],
        );
        self.ejections.render(&mut out);
        self.stream_errors.render(&mut out);
        self.decision.render(&mut out);
        self.upstream.render(&mut out);
        render_gauge(
            &mut out,
            "lookahead_router_in_flight_requests",
            "Requests being served now.",
            &[(None, self.in_flight.load(Ordering::Relaxed) as f64)],
        );
        let samples: Vec<_> = ejected
            .iter()
            .map(|(m, e)| (Some(("member", *m)), if *e { 1.0 } else { 0.0 }))
            .collect();
        render_gauge(
            &mut out,
            "lookahead_router_member_ejected",
            "1 while the member is ejected by outlier detection.",
            &samples,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = RouterMetrics::default();
        m.requests.inc(&["yi", "ok"]);
        m.requests.inc(&["yi", "ok"]);
        m.decision.observe(&[], Duration::from_micros(70));
        m.decision.observe(&[], Duration::from_millis(2));
        let text = m.render(&[("yi", false), ("p\"hi", true)], false);
        assert!(text.contains("lookahead_router_artifact_accepted 0"));
        assert!(text.contains("lookahead_router_requests_total{member=\"yi\",outcome=\"ok\"} 2"));
        assert!(text.contains("lookahead_router_decision_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("lookahead_router_decision_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("lookahead_router_member_ejected{member=\"p\\\"hi\"} 1"));
        assert_eq!(m.requests.get(&["yi", "ok"]), 2);
    }
}
