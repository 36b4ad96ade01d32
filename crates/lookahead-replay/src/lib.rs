//! The replay backend (`lookahead replay`): an OpenAI-compatible server that stands in for model
//! Deployments in tests, the demo and the proxy benchmark. It answers a known prompt with one
//! model's recorded response from the routing dataset (streamed as SSE when asked), any other
//! prompt with [`FALLBACK_TEXT`], and can inject latency and failures.
//!
//! - [`book`]: [`ReplayBook`], one model's recorded responses keyed by prompt, loaded from the
//!   dataset.
//! - [`server`]: [`ReplayServer`] (counters, [`ReplayServer::app`]: the axum routes),
//!   [`ReplayOptions`] (latency, chunk pacing, failure rate) and [`serve`].
//! - [`tls`]: [`serve_tls`], the same routes behind TLS (a member behind https, for tests of
//!   clients that verify certificates).
//! - [`openai`]: the slice of OpenAI's wire format a stand-in member reads and writes.
//! - [`apis`]: the Responses and Embeddings APIs, and a context window refused as vLLM does.

pub mod apis;
pub mod book;
pub mod openai;
pub mod server;
pub mod tls;

pub use book::ReplayBook;
pub use server::{serve, ReplayOptions, ReplayServer, FALLBACK_TEXT};
pub use tls::serve_tls;
