//! The replay server: answers a known prompt with its book's recorded response (streamed as SSE
//! when asked), any other prompt with [`FALLBACK_TEXT`], and injects latency and failures on
//! request. [`ReplayServer::app`] is its axum router (a tower `Service`); [`serve`] runs it on a
//! listener with graceful shutdown.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use http::{header, HeaderValue, StatusCode, Uri};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::apis;
use crate::book::ReplayBook;
use crate::openai::{self, ApiError, CompletionRequest, Endpoint};

/// Text answered for prompts the dataset does not hold.
pub const FALLBACK_TEXT: &str =
    "[lookahead replay] This prompt is not in the recorded dataset, so there is no recorded response to replay.";

/// Largest request body read.
const MAX_REQUEST_BODY: usize = 16 << 20;

/// Fault and pacing injection.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Delay before the response head.
    pub latency: Duration,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
    /// Probability of answering 503 instead.
    pub failure_rate: f64,
    /// Characters per streamed chunk (0: 16).
    pub chunk_chars: usize,
    /// Context window in whitespace words: longer prompts (plus `max_tokens`) are refused with
    /// vLLM's 400.
    pub context_window: Option<usize>,
    /// The key a client must send (`Authorization: Bearer <key>`), as a hosted API wants one;
    /// other requests get 401 `invalid_api_key`. Absent: no authentication.
    pub api_key: Option<String>,
}

/// The replay server.
#[derive(Debug)]
pub struct ReplayServer {
    book: ReplayBook,
    options: ReplayOptions,
    served: AtomicU64,
    hits: AtomicU64,
    /// The `Authorization` of the last completion request (tests check what a member was sent).
    last_authorization: std::sync::Mutex<Option<String>>,
}

impl ReplayServer {
    pub fn new(book: ReplayBook, options: ReplayOptions) -> Self {
        Self {
            book,
            options,
            served: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            last_authorization: std::sync::Mutex::new(None),
        }
    }

    /// Completions served (including injected failures).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The `Authorization` header of the last completion request (`None`: it had none).
    pub fn last_authorization(&self) -> Option<String> {
        self.last_authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the request's `Authorization`; whether it carries the required key, if any.
    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        *self
            .last_authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = presented.map(str::to_string);
        match &self.options.api_key {
            None => true,
            Some(key) => presented.and_then(|p| p.strip_prefix("Bearer ")) == Some(key.as_str()),
        }
    }

    /// Completions answered from the recording.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The HTTP routes: health, `/v1/models`, both completion APIs; anything else (wrong method
    /// included) is an OpenAI-style 404.
    pub fn app(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(health))
            .route("/readyz", get(health))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .fallback(not_found)
            .method_not_allowed_fallback(not_found)
            .with_state(self)
    }

    async fn complete(&self, endpoint: Endpoint, headers: http::HeaderMap, body: Body) -> Response {
        if !self.authorized(&headers) {
            return ApiError::invalid_api_key().into_response();
        }
        let bytes = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
            Ok(b) => b,
            Err(e) => return ApiError::bad_request("invalid_body", e.to_string()).into_response(),
        };
        let request = match openai::parse(endpoint, &bytes) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.check_window(&bytes, &request.prompt) {
            return e.into_response();
        }
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        if self.options.failure_rate > 0.0
            && rand::rng().random_bool(self.options.failure_rate.min(1.0))
        {
            return ApiError::unavailable("injected failure (lookahead replay --failure-rate)")
                .into_response();
        }
        let (text, hit) = match self.book.answer(&request.prompt) {
            Some(t) => (t, true),
            None => (FALLBACK_TEXT, false),
        };
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        let mut resp = if request.stream {
            self.stream(endpoint, &request, text)
        } else {
            let completion =
                openai::completion_json(endpoint, &request.model, &request.prompt, text);
            json_response(StatusCode::OK, &completion)
        };
        resp.headers_mut().insert(
            "x-replay-hit",
            HeaderValue::from_static(if hit { "true" } else { "false" }),
        );
        resp
    }

    /// The window check, when the member has one (`max_tokens` counts against it too).
    fn check_window(&self, bytes: &[u8], prompt: &str) -> Result<(), ApiError> {
        let Some(window) = self.options.context_window else {
            return Ok(());
        };
        let max_tokens = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|b| b.get("max_tokens").and_then(Value::as_u64))
            .unwrap_or(0);
        apis::check_window(window, prompt, max_tokens as usize)
    }

    /// `/v1/responses`: the book's answer as a Responses API object or its events.
    async fn respond(&self, body: Body) -> Response {
        let bytes = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
            Ok(b) => b,
            Err(e) => return ApiError::bad_request("invalid_body", e.to_string()).into_response(),
        };
        let request = match apis::parse_responses(&bytes) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.check_window(&bytes, &request.prompt) {
            return e.into_response();
        }
        let text = self.book.answer(&request.prompt).unwrap_or(FALLBACK_TEXT);
        if !request.stream {
            let value = apis::response_json(&request.model, &request.prompt, text);
            return json_response(StatusCode::OK, &value);
        }
        let size = match self.options.chunk_chars {
            0 => 16,
            n => n,
        };
        let events = apis::response_events(&request.model, &request.prompt, text, size);
        let stream = futures::stream::iter(
            events
                .into_iter()
                .map(|e| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(e))),
        );
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response()
    }

    /// `/v1/embeddings`: a deterministic vector per input.
    async fn embed(&self, body: Body) -> Response {
        let bytes = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
            Ok(b) => b,
            Err(e) => return ApiError::bad_request("invalid_body", e.to_string()).into_response(),
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        match apis::embeddings_json(&bytes) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => e.into_response(),
        }
    }

    fn stream(&self, endpoint: Endpoint, request: &CompletionRequest, text: &str) -> Response {
        let size = match self.options.chunk_chars {
            0 => 16,
            n => n,
        };
        let model = &request.model;
        let mut events = openai::stream_events(endpoint, model, text, size);
        if request.include_usage {
            // Last before `[DONE]`, as OpenAI sends it.
            let usage = openai::usage_event(endpoint, model, &request.prompt, text);
            events.insert(events.len().saturating_sub(1), usage);
        }
        let delay = self.options.chunk_delay;
        let stream = futures::stream::unfold(events.into_iter(), move |mut it| async move {
            let next = it.next()?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::convert::Infallible>(next), it))
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response()
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn models(State(server): State<Arc<ReplayServer>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": server.book.model, "object": "model", "created": 0, "owned_by": "replay"}]}),
    )
}

async fn chat(
    State(server): State<Arc<ReplayServer>>,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    server.complete(Endpoint::Chat, headers, body).await
}

async fn completions(
    State(server): State<Arc<ReplayServer>>,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    server.complete(Endpoint::Completions, headers, body).await
}

async fn responses(State(server): State<Arc<ReplayServer>>, body: Body) -> Response {
    server.respond(body).await
}

async fn embeddings(State(server): State<Arc<ReplayServer>>, body: Body) -> Response {
    server.embed(body).await
}

async fn not_found(uri: Uri) -> Response {
    ApiError::path_not_found(uri.path()).into_response()
}

/// Serves `server` on `listener` (TCP_NODELAY on every connection) until `shutdown` resolves,
/// then lets in-flight answers finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    server: Arc<ReplayServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        // Small SSE chunks and answers must not wait on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = axum::serve(listener, server.app()).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping.send(());
    });
    let grace_over = async move {
        match stopped.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serving.into_future() => served,
        () = grace_over => {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
            Ok(())
        }
    }
}
