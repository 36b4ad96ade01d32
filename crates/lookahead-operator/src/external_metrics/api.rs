//! The JSON bodies the aggregator and the HPA controller read: discovery (`APIGroupList`,
//! `APIGroup`, `APIResourceList`), `ExternalMetricValueList` and `Status` errors, and metric
//! values as Kubernetes quantities.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, Status,
};
use serde::Serialize;

use super::MetricValue;

/// The API group this server serves.
pub const GROUP: &str = "external.metrics.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1beta1";
/// `group/version`, as discovery and `apiVersion` write it.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// The kind of a metric's values (each metric is a "resource" of this kind).
pub const LIST_KIND: &str = "ExternalMetricValueList";

fn group() -> APIGroup {
    let version = GroupVersionForDiscovery {
        group_version: GROUP_VERSION.to_string(),
        version: VERSION.to_string(),
    };
    APIGroup {
        name: GROUP.to_string(),
        preferred_version: Some(version.clone()),
        versions: vec![version],
        server_address_by_client_cidrs: None,
    }
}

/// `GET /apis`.
pub fn group_list() -> APIGroupList {
    APIGroupList {
        groups: vec![group()],
    }
}

/// `GET /apis/external.metrics.k8s.io`.
pub fn api_group() -> APIGroup {
    group()
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`: one namespaced resource per metric name, so
/// `kubectl get --raw` and the aggregator's discovery list what can be asked for.
pub fn resource_list(metric_names: Vec<String>) -> APIResourceList {
    let resources = metric_names
        .into_iter()
        .map(|name| APIResource {
            name,
            singular_name: String::new(),
            namespaced: true,
            kind: LIST_KIND.to_string(),
            verbs: vec!["get".to_string()],
            ..APIResource::default()
        })
        .collect();
    APIResourceList {
        group_version: GROUP_VERSION.to_string(),
        resources,
    }
}

/// `external.metrics.k8s.io/v1beta1` `ExternalMetricValueList`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValueList {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: ListMeta,
    pub items: Vec<ExternalMetricValue>,
}

/// The list's (empty) metadata: `{}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListMeta {}

/// One value, as the HPA controller sums or averages them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    pub metric_name: String,
    pub metric_labels: BTreeMap<String, String>,
    /// RFC 3339, when the value was read.
    pub timestamp: String,
    /// A Kubernetes quantity ([`quantity`]).
    pub value: String,
}

/// The values of `metric`, stamped `timestamp`; values that are no number (NaN, infinite) are
/// left out, as no quantity can carry them and the HPA would reject the whole list.
pub fn value_list(
    metric: &str,
    values: Vec<MetricValue>,
    timestamp: &str,
) -> ExternalMetricValueList {
    let items = values
        .into_iter()
        .filter_map(|v| {
            let value = quantity(v.value);
            if value.is_none() {
                tracing::debug!(
                    metric,
                    value = v.value,
                    "left out a value that is no number"
                );
            }
            Some(ExternalMetricValue {
                metric_name: metric.to_string(),
                metric_labels: v.labels,
                timestamp: timestamp.to_string(),
                value: value?,
            })
        })
        .collect();
    ExternalMetricValueList {
        kind: LIST_KIND,
        api_version: GROUP_VERSION,
        metadata: ListMeta {},
        items,
    }
}

/// `value` as a Kubernetes quantity string: an integer when whole (`"3"`), else milli-units
/// rounded to the nearest (`1.5` → `"1500m"`), the form `resource.NewMilliQuantity` writes;
/// whole values beyond `i64` in exponent form (`"1e20"`). `None` for NaN and infinities.
pub fn quantity(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    // i64 bounds as f64; every non-whole f64 is below 2^53, so its milli-units fit an i64.
    const I64_BOUND: f64 = 9.223_372_036_854_775e18;
    if value.fract() == 0.0 {
        if value.abs() < I64_BOUND {
            return Some(format!("{}", value as i64));
        }
        return Some(format!("{value:e}"));
    }
    let milli = (value * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        return Some(format!("{}", milli / 1000));
    }
    Some(format!("{milli}m"))
}

/// A `Status` error body, as the API server writes one (`status: Failure`).
pub fn status(code: u16, reason: &str, message: impl Into<String>) -> Status {
    Status {
        code: Some(i32::from(code)),
        message: Some(message.into()),
        reason: Some(reason.to_string()),
        status: Some("Failure".to_string()),
        ..Status::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_are_integers_when_whole_else_milli_units() {
        assert_eq!(quantity(0.0).as_deref(), Some("0"));
        assert_eq!(quantity(3.0).as_deref(), Some("3"));
        assert_eq!(quantity(-2.0).as_deref(), Some("-2"));
        assert_eq!(quantity(1.5).as_deref(), Some("1500m"));
        assert_eq!(quantity(0.25).as_deref(), Some("250m"));
        assert_eq!(quantity(-0.5).as_deref(), Some("-500m"));
        // Rounded to the nearest milli-unit; a value that rounds to a whole is written whole.
        assert_eq!(quantity(0.1234).as_deref(), Some("123m"));
        assert_eq!(quantity(2.9999).as_deref(), Some("3"));
        assert_eq!(quantity(0.0004).as_deref(), Some("0"));
        assert_eq!(quantity(1e20).as_deref(), Some("1e20"));
        assert_eq!(quantity(f64::NAN), None);
        assert_eq!(quantity(f64::INFINITY), None);
    }

    #[test]
    fn value_list_has_the_shape_the_hpa_reads() {
        let values = vec![
            MetricValue {
                labels: BTreeMap::from([("model".to_string(), "llama".to_string())]),
                value: 1.5,
            },
            MetricValue {
                labels: BTreeMap::new(),
                value: f64::NAN,
            },
        ];
        let list = value_list("inflight", values, "2025-01-02T03:04:05Z");
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({
                "kind": "ExternalMetricValueList",
                "apiVersion": "external.metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": [{
                    "metricName": "inflight",
                    "metricLabels": {"model": "llama"},
                    "timestamp": "2025-01-02T03:04:05Z",
                    "value": "1500m"
                }]
            })
        );
    }

    #[test]
    fn discovery_documents_name_the_group_and_each_metric() {
        let list = serde_json::to_value(resource_list(vec!["inflight".into()])).unwrap();
        assert_eq!(
            list,
            json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "external.metrics.k8s.io/v1beta1",
                "resources": [{
                    "name": "inflight",
                    "singularName": "",
                    "namespaced": true,
                    "kind": "ExternalMetricValueList",
                    "verbs": ["get"]
                }]
            })
        );
        let groups = serde_json::to_value(group_list()).unwrap();
        assert_eq!(groups["kind"], "APIGroupList");
        assert_eq!(groups["groups"][0]["name"], GROUP);
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            GROUP_VERSION
        );
        let group = serde_json::to_value(api_group()).unwrap();
        assert_eq!(group["kind"], "APIGroup");
        assert_eq!(group["versions"][0]["version"], VERSION);
    }

    #[test]
    fn status_is_a_failure_object() {
        let s = serde_json::to_value(status(404, "NotFound", "no metric x")).unwrap();
        assert_eq!(
            s,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "message": "no metric x"
            })
        );
    }
}
