//! Tracing set-up, once for the whole binary (`main` calls [`init`] for the subcommands that log
//! and keeps the returned [`Guard`] until it returns).
//!
//! - Logs go to stderr at `RUST_LOG`'s filter (`info` when unset or invalid), as text or, with
//!   `--log-format json` / `LOOKAHEAD_LOG_FORMAT=json`, as one JSON object per line whose `span`
//!   and `spans` carry the request span's fields (`trace_id`, `member`, ...).
//! - Spans are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`), batched,
//!   with the SDK's other `OTEL_*` settings (headers, timeout, sampler, batch sizes). Spans at
//!   `info` and above are exported whatever `RUST_LOG` says: quieter logs do not cost traces.
//!   The W3C trace-context propagator is installed globally then, which is what
//!   `lookahead_router::trace_context` reads `traceparent` through.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// When log lines carry ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Only when stderr is a terminal (the servers: their logs usually go to files or collectors).
    IfTerminal,
    /// tracing-subscriber's default: on unless `NO_COLOR` is set (operator, train).
    Default,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (log collectors; carries the request's `trace_id`).
    Json,
}

/// How a subcommand logs.
#[derive(Debug, Clone, Copy)]
pub struct Logging {
    pub colour: Colour,
    pub format: LogFormat,
    /// `service.name` of exported spans unless `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) names one.
    pub service: &'static str,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("starting the OTLP exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("building the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Flushes the spans not yet exported and shuts the exporter down when dropped: `main` holds it
/// until the subcommand returns.
#[must_use = "dropping the guard shuts span export down"]
pub struct Guard {
    export: Option<Export>,
}

/// The span export pipeline: the provider with its batch processor, and the runtime the gRPC
/// channel lives on. The channel needs a Tokio runtime of its own because the subcommands start
/// theirs only after set-up (and end it before `main` returns, when the last spans are flushed).
struct Export {
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
}

/// Longest the exit waits for the exporter's runtime once the spans are flushed.
const EXPORT_SHUTDOWN: Duration = Duration::from_secs(2);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(Export { provider, runtime }) = self.export.take() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing spans at exit failed");
            }
            runtime.shutdown_timeout(EXPORT_SHUTDOWN);
        }
    }
}

/// Installs the subscriber: logs, and span export when configured. A second call (tests, a
/// library that set one up first) keeps the subscriber already installed.
pub fn init(logging: Logging) -> Result<Guard, LoggingError> {
    let export = export_configured()
        .then(|| Export::start(logging.service))
        .transpose()?;
    let otel = export.as_ref().map(|e| {
        tracing_opentelemetry::layer()
            .with_tracer(e.provider.tracer("lookahead"))
            .with_filter(LevelFilter::INFO)
    });
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(log_layer(logging).with_filter(env_filter))
        .with(otel)
        .try_init();
    if export.is_some() {
        warn_on_unsupported_protocol();
    }
    Ok(Guard { export })
}

/// The stderr log layer in the asked format.
fn log_layer(logging: Logging) -> Box<dyn Layer<Registry> + Send + Sync> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match (logging.format, logging.colour) {
        (LogFormat::Json, _) => Box::new(layer.json()),
        (LogFormat::Text, Colour::IfTerminal) => {
            Box::new(layer.with_ansi(std::io::stderr().is_terminal()))
        }
        (LogFormat::Text, Colour::Default) => Box::new(layer),
    }
}

/// Whether spans go out over OTLP: an endpoint is set, and the SDK is not disabled.
fn export_configured() -> bool {
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Only gRPC is built in (over the tonic the binary already has): an `http/*` protocol asked
/// for in the environment would be ignored, so say so.
fn warn_on_unsupported_protocol() {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(p) = std::env::var(var) {
            if !p.trim().eq_ignore_ascii_case("grpc") {
                tracing::warn!(
                    var,
                    protocol = %p,
                    "only OTLP over gRPC is supported; exporting over gRPC"
                );
            }
        }
    }
}

impl Export {
    fn start(service: &'static str) -> Result<Self, LoggingError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(LoggingError::Runtime)?;
        // The channel spawns its connection task on the runtime current when it is built.
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service))
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Self { provider, runtime })
    }
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named `service` when
/// neither names the service.
fn resource(service: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name(service).build()
    }
}
