//! `lookahead operator`: runs the LLMPool and RoutingPolicy controllers, and the external
//! metrics API the autoscalers read (docs/operator.md, docs/autoscaling.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lookahead_operator::{LeaderElection, OperatorConfig, ServeOptions, Telemetry};

use crate::logging::LogFormat;

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Image of the router, scorer and training containers (a policy's serving.image wins).
    #[arg(long, env = "LOOKAHEAD_IMAGE", default_value = concat!("lookahead:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Elect a leader through a Lease, so several replicas can run safely.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "lookahead-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a lease holds without renewal, e.g. `15s`.
    #[arg(long, default_value = "15s", value_parser = lookahead_api::config::parse_duration)]
    lease_duration: Duration,
    /// Serve the external metrics API (external.metrics.k8s.io/v1beta1) here, e.g.
    /// `0.0.0.0:6443`, for APIService v1beta1.external.metrics.k8s.io; not served when absent.
    #[arg(long)]
    external_metrics_addr: Option<SocketAddr>,
    /// PEM serving certificate (chain) of the external metrics API (default: self-signed).
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// The Service the APIService names (the self-signed certificate's DNS names).
    #[arg(long, default_value = "lookahead-operator")]
    metrics_service_name: String,
    /// That Service's namespace (default: this pod's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    metrics_service_namespace: String,
    /// OTLP/gRPC endpoint the router pods export spans to. Read from the environment variable
    /// the operator's own export reads (the chart's `observability.otlpEndpoint` sets it), so
    /// one setting traces both; router pods export nothing when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// A Secret the router, scorer and training pods pull the image with (repeatable; it must
    /// exist in each policy's namespace).
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    image_pull_secrets: Vec<String>,
}

/// Runs the operator; router pods log in `log_format`, the operator's own.
pub fn run(args: OperatorArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let external_metrics = args.external_metrics_addr.map(|addr| ServeOptions {
        addr,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        service_name: args.metrics_service_name,
        service_namespace: args.metrics_service_namespace,
    });
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("lookahead-operator-{}", std::process::id()));
    let config = OperatorConfig {
        listen: args.listen,
        image: args.image,
        namespace: args.namespace,
        leader_election: args.leader_elect.then_some(LeaderElection {
            namespace: args.lease_namespace,
            lease_name: args.lease_name,
            identity,
            lease_duration: args.lease_duration,
        }),
        external_metrics,
        telemetry: Telemetry {
            otlp_endpoint: args.otlp_endpoint.filter(|e| !e.trim().is_empty()),
            json_logs: log_format == LogFormat::Json,
        },
        image_pull_secrets: args.image_pull_secrets,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
        lookahead_operator::run(client, config, crate::signal::shutdown()).await?;
        Ok(())
    })
}
