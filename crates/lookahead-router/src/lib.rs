//! The router sidecar: an OpenAI-compatible HTTP front (hyper) that scores `model: "auto"` requests,
//! dispatches them to the best pool member, retries the next-best on failure, ejects failing members
//! and exposes every decision in headers and Prometheus metrics. Also the gRPC scoring sidecar
//! (tonic). The data plane only: labelling is `lookahead-label`, the replay backend that stands in
//! for model Deployments is `lookahead-replay`.
//!
//! Entry points: [`Router::from_config`] + [`serve`] (the front), [`grpc::serve_scorer`] (the
//! scoring sidecar).
//!
//! Modules, in the order a request meets them:
//! - [`server`]: the serve loop (hyper, any `tower::Service`), graceful shutdown.
//! - [`router`]: the front's state, path table and the plumbing between the stages below.
//! - [`ingest`] (with [`auth`], [`openai`]): authenticate, limits, read and parse the body.
//! - [`limits`]: per-key requests and tokens per minute (429 before dispatch).
//! - [`decide`] (with [`pool`], [`fit`], [`scoring`], [`slot`], [`acceptance`], [`grpc`]'s
//!   client): which members, in which order; [`cost`]: the costWeight of a request (profiles,
//!   override).
//! - [`dispatch`] (with [`upstream`], [`member_conn`], [`member_stream`] (TLS), [`member_key`],
//!   [`outlier`]): attempts with retries and ejection.
//! - [`respond`] (with [`error`], [`body`]): decision headers, OpenAI-style errors.
//! - [`trace_context`]: W3C `traceparent` in from the client, out to the members.
//! - [`demand`]: per-member in-flight, sent and wanted requests, cold members (autoscaling).
//! - [`usage`]: per-key usage and spend from each answer's `usage` (streams included).
//! - [`metrics`]: Prometheus metrics (prometheus-client, OpenMetrics text).

pub mod acceptance;
pub mod auth;
pub mod body;
pub mod cost;
pub mod decide;
pub mod demand;
pub mod dispatch;
pub mod error;
pub mod fit;
pub mod grpc;
pub mod ingest;
pub mod limits;
pub mod member_conn;
pub mod member_key;
pub mod member_stream;
pub mod metrics;
pub mod openai;
pub mod outlier;
pub mod pool;
pub mod respond;
pub mod router;
pub mod scoring;
pub mod server;
pub mod slot;
pub mod trace_context;
pub mod upstream;
pub mod usage;

pub use error::{ApiError, RouterError};
pub use router::Router;
pub use scoring::{ScorerLoader, ScorerSlot};
pub use server::{serve, serve_service, Drain};
