//! The Lookahead operator: controllers for `LLMPool` (model Deployments, Services, autoscalers)
//! and `RoutingPolicy` (router config, router Deployment with its scoring sidecar, retraining
//! Jobs), leader election, events and metrics. `lookahead operator` is a thin shell over [`run`].
//!
//! Modules, from the process down:
//! - [`process`]: the operator process ([`run`]): health server, discovery, leader election,
//!   the controllers' watches ([`run_controllers`]), shutdown on a signal.
//! - [`pool`]: the `LLMPool` controller (steps: validate, apply members, prune, status);
//!   `pool::children` builds a member's objects, `pool::status` its status.
//! - [`policy`]: the `RoutingPolicy` controller (steps: validate, ensure training, apply the
//!   router, status); `policy::training` holds the training step (plan, dataset check, Job,
//!   outcome), `policy::router` builds the router's objects, `policy::status` its status.
//! - [`controller`]: what both controllers share: reconcile bookkeeping, the status patch, the
//!   invalid-spec report and the error policy, with [`backoff`] (per-object exponential
//!   backoff) and [`conditions`] (the status-condition builder).
//! - [`validate`]: what the CRD schema cannot check; [`objects`], [`hardening`], [`labels`],
//!   [`autoscaling`] and [`disruption`]: building blocks of the child objects.
//! - [`credentials`]: members' API-key Secrets and the pool's CA bundle as volumes of the router
//!   and labelling pods.
//! - [`telemetry`]: the span export and log format settings router pods get.
//! - [`context`] (client, settings, events), [`error`], [`metrics`], [`server`] (`/healthz`,
//!   `/readyz`, `/metrics`), [`leader`] (Lease-based election).
//! - [`external_metrics`]: the `external.metrics.k8s.io/v1beta1` API server the HPA controller
//!   reads through the API server's aggregator ([`external_metrics::serve`]).
//! - [`demand`]: the routers' per-member demand, read from every router pod and summed: what
//!   the external metrics API serves and what [`scale_to_zero`] (0 <-> 1, leader only) reads.

pub mod autoscaling;
pub mod backoff;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod credentials;
pub mod demand;
pub mod disruption;
pub mod error;
pub mod external_metrics;
pub mod hardening;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod policy;
pub mod pool;
pub mod process;
pub mod scale_to_zero;
pub mod server;
pub mod telemetry;
pub mod validate;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod testdata;

pub use context::{Context, Settings};
pub use error::{Error, Result};
pub use external_metrics::{MetricSource, MetricValue, ServeOptions};
pub use metrics::Metrics;
pub use process::{run, run_controllers, LeaderElection, OperatorConfig};
pub use telemetry::Telemetry;
