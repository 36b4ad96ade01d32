//! The operator's error type. Each variant has a short, stable `metric_label` so failures can be
//! counted by cause without unbounded label values.

/// Why a reconcile (or the operator itself) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name} has no namespace")]
    MissingNamespace { kind: &'static str, name: String },
    #[error("cannot build owner reference for {0}")]
    OwnerReference(String),
    #[error("cannot render {what}: {message}")]
    Render { what: &'static str, message: String },
    #[error("the API server serves neither autoscaling/v2 nor autoscaling/v2beta2")]
    NoAutoscalingApi,
    #[error("leadership lost: {0}")]
    LeadershipLost(String),
    #[error("metrics server: {0}")]
    Server(#[from] std::io::Error),
    #[error("external metrics API: {0}")]
    ExternalMetrics(#[from] crate::external_metrics::Error),
}

impl Error {
    /// Low-cardinality label for the `failures` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "client_error",
            Error::MissingNamespace { .. } => "missing_namespace",
            Error::OwnerReference(_) => "owner_reference",
            Error::Render { .. } => "render",
            Error::NoAutoscalingApi => "no_autoscaling_api",
            Error::LeadershipLost(_) => "leadership_lost",
            Error::Server(_) => "server",
            Error::ExternalMetrics(_) => "external_metrics",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
