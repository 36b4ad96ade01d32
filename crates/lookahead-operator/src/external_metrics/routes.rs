//! Which endpoint a request path names, and what it asks permission for.

use percent_encoding::percent_decode_str;

use super::api::{GROUP, VERSION};
use super::authz::Attributes;

/// The endpoints of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz`: answered without authentication (kubelet probes).
    Health,
    /// `/apis`.
    GroupList,
    /// `/apis/external.metrics.k8s.io`.
    Group,
    /// `/apis/external.metrics.k8s.io/v1beta1`.
    ResourceList,
    /// `/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}`.
    Metric { namespace: String, metric: String },
    /// Anything else, `/openapi/v2` included (the aggregator tolerates a 404 there).
    Unknown,
}

/// The verb the API server's request-info resolver gives a GET of a collection (a metric has no
/// object names), so RBAC written for other external-metrics servers (KEDA,
/// prometheus-adapter) means the same here.
pub const METRIC_VERB: &str = "list";

impl Route {
    /// The route of a request path (trailing slashes ignored, segments percent-decoded).
    pub fn parse(path: &str) -> Route {
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match s.as_slice() {
            ["healthz" | "livez" | "readyz"] => Route::Health,
            ["apis"] => Route::GroupList,
            ["apis", g] if *g == GROUP => Route::Group,
            ["apis", g, v] if *g == GROUP && *v == VERSION => Route::ResourceList,
            ["apis", g, v, "namespaces", ns, metric] if *g == GROUP && *v == VERSION => {
                Route::Metric {
                    namespace: ns.to_string(),
                    metric: metric.to_string(),
                }
            }
            _ => Route::Unknown,
        }
    }

    /// Whether the request must be authenticated and authorized first.
    pub fn needs_auth(&self) -> bool {
        *self != Route::Health
    }

    /// What to ask the authorizer: a metric is a resource of the group (its name the resource);
    /// every other path is a non-resource URL, as the API server treats discovery.
    pub fn attributes(&self, path: &str) -> Attributes {
        match self {
            Route::Metric { namespace, metric } => Attributes::Resource {
                namespace: namespace.clone(),
                resource: metric.clone(),
                verb: METRIC_VERB,
            },
            _ => Attributes::NonResource {
                path: path.to_string(),
                verb: "get",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_routes() {
        assert_eq!(Route::parse("/healthz"), Route::Health);
        assert_eq!(Route::parse("/readyz"), Route::Health);
        assert_eq!(Route::parse("/livez"), Route::Health);
        assert_eq!(Route::parse("/apis"), Route::GroupList);
        assert_eq!(Route::parse("/apis/external.metrics.k8s.io/"), Route::Group);
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1"),
            Route::ResourceList
        );
        assert_eq!(
            Route::parse(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/lookahead_inflight"
            ),
            Route::Metric {
                namespace: "team-a".into(),
                metric: "lookahead_inflight".into()
            }
        );
        for unknown in [
            "/",
            "/openapi/v2",
            "/apis/external.metrics.k8s.io/v1",
            "/apis/custom.metrics.k8s.io/v1beta1",
            "/apis/external.metrics.k8s.io/v1beta1/inflight",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/m/extra",
        ] {
            assert_eq!(Route::parse(unknown), Route::Unknown, "{unknown}");
        }
    }

    #[test]
    fn metrics_are_resources_and_the_rest_non_resource_urls() {
        let metric = Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/a/m");
        assert_eq!(
            metric.attributes("/ignored"),
            Attributes::Resource {
                namespace: "a".into(),
                resource: "m".into(),
                verb: "list"
            }
        );
        assert_eq!(
            Route::GroupList.attributes("/apis"),
            Attributes::NonResource {
                path: "/apis".into(),
                verb: "get"
            }
        );
        assert!(!Route::Health.needs_auth());
        assert!(Route::Unknown.needs_auth());
    }
}
