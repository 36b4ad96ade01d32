//! A small OpenAI-compatible HTTP client for the demo and the proxy benchmark (pooled keep-alive
//! connections; reads the router's decision headers).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::router::{HEADER_FALLBACK, HEADER_MODEL};

/// One answered request.
#[derive(Debug, Clone)]
pub struct ChatReply {
    pub status: u16,
    /// `x-lookahead-model`.
    pub member: Option<String>,
    /// `x-lookahead-fallback`.
    pub fallback: Option<String>,
    pub body: Bytes,
    /// Request sent to body fully read.
    pub latency: Duration,
}

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid request: {0}")]
    Request(String),
    #[error("request failed: {0}")]
    Send(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Client for `{base}/v1/chat/completions`.
#[derive(Clone, Debug)]
pub struct ChatClient {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    timeout: Duration,
    /// Sent as `Authorization: Bearer <key>`.
    api_key: Option<String>,
}

impl ChatClient {
    /// `base`: `http://host:port` (no `/v1`).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(connector),
            url: format!("{}/v1/chat/completions", base.trim_end_matches('/')),
            timeout,
            api_key: None,
        }
    }

    /// Sends `Authorization: Bearer <key>` with every request.
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        stream: bool,
    ) -> Result<ChatReply, ClientError> {
        let body = serde_json::json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        });
        let mut req =
            http::Request::post(&self.url).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.api_key {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let t0 = Instant::now();
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ClientError::Send(e.to_string()))?;
            let header = |name: &http::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (member, fallback) = (header(&HEADER_MODEL), header(&HEADER_FALLBACK));
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Send(e.to_string()))?
                .to_bytes();
            Ok(ChatReply {
                status,
                member,
                fallback,
                body,
                latency: t0.elapsed(),
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// The `q`-quantile (0..=1) of `sorted` latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
