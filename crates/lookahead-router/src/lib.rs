//! The router sidecar: an OpenAI-compatible HTTP front (hyper) that scores `model: "auto"` requests,
//! dispatches them to the best pool member, retries the next-best on failure, ejects failing members
//! and exposes every decision in headers and Prometheus metrics. Also the gRPC scoring sidecar
//! (tonic) and the replay backend that stands in for model Deployments in tests and the demo.
//!
//! Entry points: [`Router::from_config`] + [`serve`] (the front), [`grpc::serve_scorer`] (the
//! scoring sidecar), [`replay::ReplayServer`] (the replay backend).

pub mod auth;
pub mod body;
pub mod client;
pub mod error;
pub mod grpc;
pub mod label;
pub mod metrics;
pub mod openai;
pub mod outlier;
pub mod replay;
pub mod router;
pub mod scoring;
pub mod server;
pub mod upstream;

pub use error::{ApiError, RouterError};
pub use router::Router;
pub use scoring::{ScorerLoader, ScorerSlot};
pub use server::{serve, HttpHandler};
