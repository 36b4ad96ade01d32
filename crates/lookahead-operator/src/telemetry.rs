//! Tracing and log settings the operator passes on to the router pods it runs (chart values
//! `observability.*`, docs/operations.md "Tracing and logs"): the pods read them from their
//! environment as the operator does (`lookahead` sets tracing up from `OTEL_*` and
//! `LOOKAHEAD_LOG_FORMAT`).

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};

/// Span export and log format of the pods. The default sets nothing: no export, text logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// OTLP/gRPC endpoint the router pods export spans to (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// The pods log JSON lines (`LOOKAHEAD_LOG_FORMAT=json`).
    pub json_logs: bool,
}

/// What identifies a pod's spans: `service.name` and the Kubernetes objects it runs in.
pub struct PodIdentity<'a> {
    pub service: &'a str,
    pub namespace: &'a str,
    pub deployment: &'a str,
}

impl Telemetry {
    /// The environment of a container exporting spans as `pod` (empty when nothing is set).
    pub fn tracing_env(&self, pod: &PodIdentity<'_>) -> Vec<EnvVar> {
        let mut env = self.log_env();
        let Some(endpoint) = &self.otlp_endpoint else {
            return env;
        };
        env.extend([
            value("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            value("OTEL_SERVICE_NAME", pod.service.to_string()),
            // Declared before the attributes that expand it: `$(POD_NAME)` only expands
            // variables defined earlier in the list.
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            value(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!(
                    "k8s.namespace.name={},k8s.deployment.name={},k8s.pod.name=$(POD_NAME)",
                    pod.namespace, pod.deployment
                ),
            ),
        ]);
        env
    }

    /// The environment of a container that only logs (empty when text logs are asked for).
    pub fn log_env(&self) -> Vec<EnvVar> {
        if self.json_logs {
            vec![value("LOOKAHEAD_LOG_FORMAT", "json".into())]
        } else {
            Vec::new()
        }
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}
