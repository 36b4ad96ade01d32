//! A small OpenAI-compatible chat client for labelling: one non-streaming call with a timeout.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Largest answer body accepted from a member or judge.
const MAX_BODY: usize = 8 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("bad url {0:?}")]
    Url(String),
    #[error("connect/transfer: {0}")]
    Transport(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl ClientError {
    /// Whether another attempt may succeed (transport trouble, timeouts, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) | ClientError::Timeout(_) => true,
            ClientError::Status { status, .. } => *status == 429 || *status >= 500,
            ClientError::Url(_) | ClientError::Malformed(_) => false,
        }
    }
}

/// Pooled HTTP client with a per-call timeout.
#[derive(Clone, Debug)]
pub struct ChatClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl ChatClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        ChatClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// One chat completion (temperature 0); returns the assistant's text.
    pub async fn chat(
        &self,
        base_url: &str,
        model: &str,
        api_key: Option<&str>,
        system: Option<&str>,
        user: &str,
        max_tokens: u32,
    ) -> Result<String, ClientError> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(json!({ "role": "system", "content": s }));
        }
        messages.push(json!({ "role": "user", "content": user }));
        let body = json!({
            "model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens, "stream": false
        });
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let mut req = Request::post(&url).header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = api_key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ClientError::Url(url.clone()))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        if status != StatusCode::OK {
            let body = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            return Err(ClientError::Status {
                status: status.as_u16(),
                body,
            });
        }
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed(e.to_string()))?;
        v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ClientError::Malformed("no choices[0].message.content".into()))
    }
}
