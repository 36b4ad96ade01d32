//! The one OpenAI-compatible chat-completions client of the project: labelling asks members and
//! judges with it, `lookahead demo` and `lookahead bench proxy` drive the router with it.
//!
//! - [`ChatEndpoint`]: where to send (`{base_url}/chat/completions`, base URL ending in `/v1`)
//!   and the optional API key.
//! - [`ChatClient`]: pooled keep-alive HTTP/1 connections, a per-call timeout.
//!   [`ChatClient::send`] posts any request body and returns the [`ChatReply`] whatever its status
//!   (benchmarks count statuses and read the router's decision headers); [`ChatClient::get`]
//!   reads a health endpoint (`lookahead check`);
//!   [`ChatClient::complete`] asks one temperature-0 question and returns the assistant's text.
//! - [`user_turn`]: the body of a one-turn chat request.
//! - [`ClientError`]: why a call got no usable answer, with [`ClientError::is_transient`] for
//!   retry decisions.
//! - [`tls`]: HTTPS (rustls: system roots plus an optional CA bundle), shared with the router's
//!   member connections; a failed handshake reads as a `tls_*` label.

pub mod tls;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use std::path::Path;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Largest answer body accepted from a server.
const MAX_BODY: usize = 8 << 20;

/// Why a call got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("bad url {0:?}")]
    Url(String),
    #[error("connect/transfer: {0}")]
    Transport(String),
    /// The TLS handshake failed (unknown CA, wrong host name, ...): `label` is `tls_*`.
    #[error("{detail}")]
    Tls { label: &'static str, detail: String },
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
            // A certificate the client does not trust stays untrusted on the next try.
            ClientError::Tls { .. } => false,
            ClientError::Status { status, .. } => *status == 429 || *status >= 500,
            ClientError::Url(_) | ClientError::Malformed(_) => false,
        }
    }
}

/// An OpenAI-compatible server's chat-completions URL and the key it wants (redacted in
/// `Debug`).
#[derive(Clone)]
pub struct ChatEndpoint {
    url: String,
    /// `Bearer <key>`, built once.
    authorization: Option<String>,
}

impl std::fmt::Debug for ChatEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEndpoint")
            .field("url", &self.url)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl ChatEndpoint {
    /// `base_url`: the OpenAI base URL, ending in `/v1` (a trailing `/` is fine).
    pub fn new(base_url: &str) -> Self {
        ChatEndpoint {
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            authorization: None,
        }
    }

    /// Sends `Authorization: Bearer <key>` with every request.
    pub fn with_api_key(mut self, key: Option<&str>) -> Self {
        self.authorization = key.map(|k| format!("Bearer {k}"));
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// One answered request, whatever its status.
#[derive(Debug, Clone)]
pub struct ChatReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The whole body (an SSE stream read to its end).
    pub body: Bytes,
    /// Request sent to body fully read.
    pub latency: Duration,
}

impl ChatReply {
    /// A response header as text.
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The body of a chat request with one user turn.
pub fn user_turn(model: &str, prompt: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    })
}

/// An error and its causes on one line (hyper's own text, "client error (Connect)", leaves out
/// whether the connection was refused or the name did not resolve).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A transport error as the caller should read it: a failed TLS handshake as [`ClientError::Tls`].
fn transport_error(e: &(dyn std::error::Error + 'static)) -> ClientError {
    match tls::tls_failure(e) {
        Some(f) => ClientError::Tls {
            label: f.label,
            detail: f.detail,
        },
        None => ClientError::Transport(with_causes(e)),
    }
}

/// Pooled HTTP and HTTPS client with a per-call timeout.
#[derive(Clone, Debug)]
pub struct ChatClient {
    /// `Err`: no TLS configuration could be built (rustls refused the provider), said per call.
    client: Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String>,
    timeout: Duration,
}

impl ChatClient {
    /// `http://` and `https://` (the system's root certificates).
    pub fn new(timeout: Duration) -> Self {
        match Self::with_ca_bundle(timeout, None) {
            Ok(c) => c,
            Err(e) => ChatClient {
                client: Err(e.to_string()),
                timeout,
            },
        }
    }

    /// Trusts the CAs of the PEM bundle `ca_bundle` besides the system's roots (a private CA of
    /// self-hosted members).
    pub fn with_ca_bundle(
        timeout: Duration,
        ca_bundle: Option<&Path>,
    ) -> Result<Self, tls::TlsError> {
        let config = tls::client_config(ca_bundle, &[])?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(ChatClient {
            client: Ok(Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(connector)),
            timeout,
        })
    }

    /// Posts `body` (a chat-completions request) to `endpoint` and reads the whole answer.
    pub async fn send(
        &self,
        endpoint: &ChatEndpoint,
        body: &Value,
    ) -> Result<ChatReply, ClientError> {
        let mut req = Request::post(&endpoint.url).header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &endpoint.authorization {
            let value = HeaderValue::from_str(auth)
                .map_err(|_| ClientError::Url("API key is not a valid header value".into()))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ClientError::Url(endpoint.url.clone()))?;
        self.call(req).await
    }

    /// GETs `url` (a health endpoint such as `/readyz`) and reads the whole answer, whatever its
    /// status.
    pub async fn get(&self, url: &str) -> Result<ChatReply, ClientError> {
        let req = Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|_| ClientError::Url(url.to_string()))?;
        self.call(req).await
    }

    /// Sends `req` and reads the whole answer within the timeout.
    async fn call(&self, req: Request<Full<Bytes>>) -> Result<ChatReply, ClientError> {
        let started = Instant::now();
        let call = async {
            let client = self
                .client
                .as_ref()
                .map_err(|e| ClientError::Transport(e.clone()))?;
            let resp = client.request(req).await.map_err(|e| transport_error(&e))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            Ok(ChatReply {
                status: parts.status,
                headers: parts.headers,
                body,
                latency: started.elapsed(),
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// One non-streaming completion at temperature 0; returns the assistant's text. A status
    /// other than 200 is [`ClientError::Status`].
    pub async fn complete(
        &self,
        endpoint: &ChatEndpoint,
        model: &str,
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
        let reply = self.send(endpoint, &body).await?;
        if reply.status != StatusCode::OK {
            let body = String::from_utf8_lossy(&reply.body)
                .chars()
                .take(300)
                .collect();
            return Err(ClientError::Status {
                status: reply.status.as_u16(),
                body,
            });
        }
        let v: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ClientError::Malformed("no choices[0].message.content".into()))
    }
}
