//! The router sidecar: an OpenAI-compatible HTTP front (hyper) that scores `model: "auto"` requests,
//! dispatches them to the best pool member, retries the next-best on failure, ejects failing members
//! and exposes every decision in headers and Prometheus metrics. Also the gRPC scoring sidecar
//! (tonic). The data plane only: labelling is `lookahead-label`, the replay backend that stands in
//! for model Deployments is `lookahead-replay`.
//!
//! Entry points: [`Router::from_config`] + [`serve`] (the front), [`grpc::serve_scorer`] (the
//! scoring sidecar).

pub mod auth;
pub mod body;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod openai;
pub mod outlier;
pub mod router;
pub mod scoring;
pub mod server;
pub mod upstream;

pub use error::{ApiError, RouterError};
pub use router::Router;
pub use scoring::{ScorerLoader, ScorerSlot};
pub use server::{serve, HttpHandler};
