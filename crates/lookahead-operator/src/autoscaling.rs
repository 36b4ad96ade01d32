//! Which HorizontalPodAutoscaler API to use: `autoscaling/v2` where the server serves it (1.23+),
//! `autoscaling/v2beta2` otherwise (1.12..1.25). Discovered once at start-up, never assumed.
//! k8s-openapi has no v2beta2 types, and v2beta2's resource-metric shape is the same as v2's, so
//! the autoscaler is built as JSON and applied as a `DynamicObject`.

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::Client;
use serde_json::json;

use crate::error::{Error, Result};
use lookahead_api::pool::{AutoscalingTarget, ScalingResource};

/// Picks the best served autoscaling version from the group's versions.
pub fn choose_version<'a>(served: impl IntoIterator<Item = &'a str>) -> Result<ApiResource> {
    let served: Vec<&str> = served.into_iter().collect();
    let version = ["v2", "v2beta2"]
        .into_iter()
        .find(|v| served.contains(v))
        .ok_or(Error::NoAutoscalingApi)?;
    let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
    Ok(ApiResource::from_gvk_with_plural(
        &gvk,
        "horizontalpodautoscalers",
    ))
}

/// Asks the API server which autoscaling versions it serves.
pub async fn discover(client: &Client) -> Result<ApiResource> {
    let group = kube::discovery::oneshot::group(client, "autoscaling").await?;
    let versions: Vec<String> = group.versions().map(str::to_string).collect();
    let chosen = choose_version(versions.iter().map(String::as_str))?;
    tracing::info!(served = ?versions, using = %chosen.api_version, "autoscaling API discovered");
    Ok(chosen)
}

/// `discover`, retried on client and API errors until `give_up_after`: at a pod's start the API
/// server (or the pod's own network) may not be reachable yet, and exiting would only put the
/// pod into crash-loop back-off. A server without any autoscaling version fails at once.
pub async fn discover_retrying(
    client: &Client,
    first_delay: std::time::Duration,
    give_up_after: std::time::Duration,
) -> Result<ApiResource> {
    let start = std::time::Instant::now();
    let mut delay = first_delay;
    loop {
        match discover(client).await {
            Err(Error::Kube(e)) if start.elapsed() + delay < give_up_after => {
                tracing::warn!(error = %e, retry_in = ?delay, "API discovery failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(8));
            }
            other => return other,
        }
    }
}

/// The external metric the operator serves for a member's in-flight requests (summed over
/// every router replica of the pool), selected by `pool` and `member` labels.
pub const IN_FLIGHT_METRIC: &str = "lookahead_member_in_flight";

/// The external metric of a policy's router pods' in-flight requests (label `policy`).
pub const ROUTER_IN_FLIGHT_METRIC: &str = "lookahead_router_in_flight";

/// The autoscaler of one Deployment (a member's or a router's) of the same name.
pub struct HpaSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub owner: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    pub min: i32,
    pub max: i32,
    /// What it follows ([`member_metrics`], [`router_metrics`]).
    pub metrics: Vec<serde_json::Value>,
}

/// A router Deployment's metric: its policy's in-flight requests per pod.
pub fn router_metrics(policy: &str, per_replica: u32) -> Vec<serde_json::Value> {
    vec![json!({
        "type": "External",
        "external": {
            "metric": {
                "name": ROUTER_IN_FLIGHT_METRIC,
                "selector": { "matchLabels": { "policy": policy } },
            },
            "target": { "type": "AverageValue", "averageValue": per_replica.to_string() },
        },
    })]
}

/// A member's metrics (v2 and v2beta2 share these shapes); the autoscaler takes whichever asks
/// for the most replicas. A target that tracks nothing is a render error.
pub fn member_metrics(
    pool: &str,
    member: &str,
    t: &AutoscalingTarget,
) -> Result<Vec<serde_json::Value>> {
    if let Some(problem) = t.problem() {
        return Err(Error::Render {
            what: "HorizontalPodAutoscaler",
            message: problem.to_string(),
        });
    }
    let mut out = Vec::new();
    if let Some(per_replica) = t.in_flight_per_replica {
        out.push(json!({
            "type": "External",
            "external": {
                "metric": {
                    "name": IN_FLIGHT_METRIC,
                    "selector": { "matchLabels": { "pool": pool, "member": member } },
                },
                "target": { "type": "AverageValue", "averageValue": per_replica.to_string() },
            },
        }));
    }
    if let Some(e) = &t.external {
        out.push(json!({
            "type": "External",
            "external": {
                "metric": { "name": e.metric, "selector": { "matchLabels": e.match_labels } },
                "target": { "type": "AverageValue", "averageValue": e.average_value },
            },
        }));
    }
    if let Some(utilization) = t.average_utilization {
        let resource = match t.resource {
            ScalingResource::Cpu => "cpu",
            ScalingResource::Memory => "memory",
        };
        out.push(json!({
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": { "type": "Utilization", "averageUtilization": utilization },
            },
        }));
    }
    Ok(out)
}

/// Renders the autoscaler for `ar`'s version.
pub fn build(ar: &ApiResource, spec: &HpaSpec<'_>) -> Result<DynamicObject> {
    let value = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": spec.labels,
            "ownerReferences": [spec.owner],
        },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name },
            // The autoscaler works from 1 up (KEDA's split): the operator takes a `min: 0`
            // member to zero when idle and back to one on demand (crate::scale_to_zero); an
            // autoscaler sees zero replicas as "scaling disabled" and leaves them alone.
            "minReplicas": spec.min.max(1),
            "maxReplicas": spec.max,
            "metrics": spec.metrics,
        },
    });
    serde_json::from_value(value).map_err(|e| Error::Render {
        what: "HorizontalPodAutoscaler",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_v2_and_falls_back_to_v2beta2() {
        assert_eq!(
            choose_version(["v1", "v2beta1", "v2beta2", "v2"])
                .map(|a| a.api_version)
                .ok(),
            Some("autoscaling/v2".to_string())
        );
        assert_eq!(
            choose_version(["v1", "v2beta1", "v2beta2"])
                .map(|a| a.api_version)
                .ok(),
            Some("autoscaling/v2beta2".to_string())
        );
        assert!(matches!(
            choose_version(["v1"]),
            Err(Error::NoAutoscalingApi)
        ));
    }

    fn render(target: &AutoscalingTarget, min: i32) -> serde_json::Value {
        let ar = choose_version(["v2beta2"]).expect("version");
        let owner = Default::default();
        let labels = Default::default();
        let spec = HpaSpec {
            name: "p-code",
            namespace: "ns",
            labels: &labels,
            owner: &owner,
            min,
            max: 5,
            metrics: member_metrics("p", "code", target).expect("metrics"),
        };
        serde_json::to_value(build(&ar, &spec).expect("hpa")).expect("json")
    }

    #[test]
    fn in_flight_target_scales_on_the_operators_external_metric_per_replica() {
        let t = AutoscalingTarget {
            in_flight_per_replica: Some(8),
            external: None,
            resource: ScalingResource::Cpu,
            average_utilization: None,
        };
        let hpa = render(&t, 0);
        assert_eq!(hpa["spec"]["minReplicas"], 1, "0<->1 is the operator's");
        let m = &hpa["spec"]["metrics"][0]["external"];
        assert_eq!(m["metric"]["name"], IN_FLIGHT_METRIC);
        assert_eq!(m["metric"]["selector"]["matchLabels"]["member"], "code");
        assert_eq!(m["metric"]["selector"]["matchLabels"]["pool"], "p");
        assert_eq!(m["target"]["type"], "AverageValue");
        assert_eq!(m["target"]["averageValue"], "8");
    }

    #[test]
    fn several_targets_become_several_metrics_and_none_is_an_error() {
        let t = AutoscalingTarget {
            in_flight_per_replica: None,
            external: Some(lookahead_api::pool::ExternalTarget {
                metric: "vllm_num_requests_waiting".into(),
                match_labels: [("model".to_string(), "code".to_string())].into(),
                average_value: "4".into(),
            }),
            resource: ScalingResource::Memory,
            average_utilization: Some(80),
        };
        let hpa = render(&t, 2);
        let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
        assert_eq!(metrics.len(), 2);
        assert_eq!(
            metrics[0]["external"]["metric"]["name"],
            "vllm_num_requests_waiting"
        );
        assert_eq!(metrics[1]["resource"]["name"], "memory");
        let empty = AutoscalingTarget {
            in_flight_per_replica: None,
            external: None,
            resource: ScalingResource::Cpu,
            average_utilization: None,
        };
        assert!(matches!(
            member_metrics("p", "code", &empty),
            Err(Error::Render { .. })
        ));
    }

    #[test]
    fn a_router_scales_on_its_policys_in_flight_requests() {
        let m = &router_metrics("rp", 64)[0]["external"];
        assert_eq!(m["metric"]["name"], ROUTER_IN_FLIGHT_METRIC);
        assert_eq!(m["metric"]["selector"]["matchLabels"]["policy"], "rp");
        assert_eq!(m["target"]["averageValue"], "64");
    }
}
