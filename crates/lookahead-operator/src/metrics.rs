//! Prometheus metrics: reconciles, failures by error label, reconcile duration, leadership,
//! scale-to-zero steps, and the conditions of the policies the controller sees.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::reflector::Store;
use kube::ResourceExt;
use lookahead_api::RoutingPolicy;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub policy: String,
    pub condition: String,
}

/// The conditions of the RoutingPolicies in the controller's cache, read at each scrape, so a
/// deleted policy's series go with it: `lookahead_operator_policy_condition{namespace, policy,
/// condition}` is 1 while the condition is True (`TrainingFailed`, `RouterAccepted`, ...). Empty
/// until a controller runs (on the leader).
#[derive(Clone, Debug, Default)]
pub struct PolicyConditions(Arc<Mutex<Option<Store<RoutingPolicy>>>>);

impl PolicyConditions {
    fn watch(&self, store: Store<RoutingPolicy>) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(store);
        }
    }
}

impl Collector for PolicyConditions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let policies = match self.0.lock() {
            Ok(s) => s.as_ref().map(Store::state).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut family = encoder.encode_descriptor(
            "policy_condition",
            "1 while the RoutingPolicy's condition is True, by namespace, policy and condition",
            None,
            ConstGauge::<i64>::TYPE,
        )?;
        for p in &policies {
            let Some(status) = &p.status else { continue };
            for c in &status.conditions {
                let labels = ConditionLabels {
                    namespace: p.namespace().unwrap_or_default(),
                    policy: p.name_any(),
                    condition: c.type_.clone(),
                };
                ConstGauge::new(i64::from(c.status == "True"))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// The operator's metrics and the registry `/metrics` renders.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: HistogramFamily,
    leader: Gauge,
    scaled: Family<ScaleLabels, Counter>,
    policies: PolicyConditions,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lookahead_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconciliation took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let scaled = Family::<ScaleLabels, Counter>::default();
        registry.register(
            "member_scaled",
            "Members the operator scaled, by reason (Waking: 0 -> 1, ScaledToZero: N -> 0)",
            scaled.clone(),
        );
        let policies = PolicyConditions::default();
        registry.register_collector(Box::new(policies.clone()));
        Metrics {
            registry,
            policies,
            reconciles,
            failures,
            duration,
            leader,
            scaled,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn failure(&self, controller: &'static str, error: &Error) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Counts a scale-to-zero step (`reason` is the Event's reason).
    pub fn scaled(&self, reason: &'static str) {
        self.scaled.get_or_create(&ScaleLabels { reason }).inc();
    }

    /// Reports the conditions of the policies in `store` (the policy controller's cache).
    pub fn watch_policies(&self, store: Store<RoutingPolicy>) {
        self.policies.watch(store);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_failures_and_histogram() {
        let m = Metrics::default();
        drop(m.reconcile("llmpool"));
        m.failure("llmpool", &Error::NoAutoscalingApi);
        m.set_leader(true);
        let text = m.render();
        assert!(text.contains("lookahead_operator_reconciles_total{controller=\"llmpool\"} 1"));
        assert!(text.contains(
            "lookahead_operator_reconcile_failures_total{controller=\"llmpool\",error=\"no_autoscaling_api\"} 1"
        ));
        assert!(text.contains(
            "lookahead_operator_reconcile_duration_seconds_count{controller=\"llmpool\"} 1"
        ));
        assert!(text.contains("lookahead_operator_leader 1"));
    }

    #[test]
    fn reports_each_cached_policy_condition_until_the_policy_is_gone() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        use kube::runtime::watcher::Event;
        let m = Metrics::default();
        let (store, mut writer) = kube::runtime::reflector::store::<RoutingPolicy>();
        m.watch_policies(store);
        let mut policy = crate::testdata::policy("auto", None);
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        };
        policy.status = Some(lookahead_api::policy::RoutingPolicyStatus {
            conditions: vec![
                condition("TrainingFailed", "True"),
                condition("Ready", "False"),
            ],
            ..Default::default()
        });
        writer.apply_watcher_event(&Event::Apply(policy.clone()));
        let text = m.render();
        assert!(text.contains(
            "lookahead_operator_policy_condition{namespace=\"ns\",policy=\"auto\",condition=\"TrainingFailed\"} 1"
        ), "{text}");
        assert!(text.contains(
            "lookahead_operator_policy_condition{namespace=\"ns\",policy=\"auto\",condition=\"Ready\"} 0"
        ));
        writer.apply_watcher_event(&Event::Delete(policy));
        assert!(
            !m.render().contains("policy=\"auto\""),
            "gone with the policy"
        );
    }
}
