//! The router's PodDisruptionBudget: at most one router pod down at a time during voluntary
//! disruptions (node drains, cluster upgrades). `policy/v1` where the server serves it (1.21+),
//! `policy/v1beta1` otherwise (1.20); discovered once at start-up, like the autoscaling API.
//! Built as JSON and applied as a `DynamicObject`, since k8s-openapi has no v1beta1 types.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::Client;
use serde_json::json;

use crate::error::{Error, Result};

/// The best served PodDisruptionBudget version, if any.
pub fn choose_version<'a>(served: impl IntoIterator<Item = &'a str>) -> Option<ApiResource> {
    let served: Vec<&str> = served.into_iter().collect();
    let version = ["v1", "v1beta1"].into_iter().find(|v| served.contains(v))?;
    let gvk = GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
    Some(ApiResource::from_gvk_with_plural(
        &gvk,
        "poddisruptionbudgets",
    ))
}

/// Asks the API server which `policy` versions it serves; `None` (no budgets, logged) when it
/// serves none.
pub async fn discover(client: &Client) -> Result<Option<ApiResource>> {
    let group = match kube::discovery::oneshot::group(client, "policy").await {
        Ok(g) => g,
        Err(kube::Error::Discovery(e)) => {
            tracing::warn!(error = %e, "no policy API group: routers get no PodDisruptionBudget");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let versions: Vec<String> = group.versions().map(str::to_string).collect();
    let chosen = choose_version(versions.iter().map(String::as_str));
    match &chosen {
        Some(ar) => {
            tracing::info!(served = ?versions, using = %ar.api_version, "policy API discovered")
        }
        None => tracing::warn!(served = ?versions, "no PodDisruptionBudget version served"),
    }
    Ok(chosen)
}

/// The budget of the pods `selector` selects: one may be down at a time.
pub fn build(
    ar: &ApiResource,
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    selector: &BTreeMap<String, String>,
) -> Result<DynamicObject> {
    let value = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": selector },
        },
    });
    serde_json::from_value(value).map_err(|e| Error::Render {
        what: "PodDisruptionBudget",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_v1_and_falls_back_to_v1beta1() {
        let v = |served: &[&str]| choose_version(served.iter().copied()).map(|a| a.api_version);
        assert_eq!(v(&["v1beta1", "v1"]).as_deref(), Some("policy/v1"));
        assert_eq!(v(&["v1beta1"]).as_deref(), Some("policy/v1beta1"));
        assert_eq!(v(&[]), None);
    }

    #[test]
    fn one_router_pod_may_be_down_at_a_time() {
        let ar = choose_version(["v1beta1"]).expect("version");
        let selector = BTreeMap::from([("app".to_string(), "router".to_string())]);
        let pdb = build(
            &ar,
            "rp-router",
            "ns",
            &BTreeMap::new(),
            &OwnerReference::default(),
            &selector,
        )
        .expect("pdb");
        let v = serde_json::to_value(pdb).expect("json");
        assert_eq!(v["apiVersion"], "policy/v1beta1");
        assert_eq!(v["spec"]["maxUnavailable"], 1);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "router");
    }
}
