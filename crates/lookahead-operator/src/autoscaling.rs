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

/// The autoscaler of one member's Deployment.
pub struct HpaSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub owner: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    pub min: i32,
    pub max: i32,
    pub target: &'a AutoscalingTarget,
}

/// Renders the autoscaler for `ar`'s version.
pub fn build(ar: &ApiResource, spec: &HpaSpec<'_>) -> Result<DynamicObject> {
    let resource = match spec.target.resource {
        ScalingResource::Cpu => "cpu",
        ScalingResource::Memory => "memory",
    };
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
            // Scale-to-zero needs the HPAScaleToZero feature gate; the autoscaler floor is 1.
            "minReplicas": spec.min.max(1),
            "maxReplicas": spec.max,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": resource,
                    "target": { "type": "Utilization", "averageUtilization": spec.target.average_utilization },
                },
            }],
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
}
