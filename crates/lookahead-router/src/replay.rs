//! The replay backend (`lookahead replay`): an OpenAI-compatible server that answers a known prompt
//! with one model's recorded response from the routing dataset (streamed as SSE when asked), any
//! other prompt with a clear fallback text, and can inject latency and failures. It stands in for
//! model Deployments in tests and the demo.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use lookahead_data::{DataError, Dataset, Record};
use rand::Rng;
use serde_json::{json, Value};

use crate::body::{json_response, BoxError, RespBody};
use crate::openai::{self, Endpoint};
use crate::{ApiError, HttpHandler};

/// Text answered for prompts the dataset does not hold.
pub const FALLBACK_TEXT: &str =
    "[lookahead replay] This prompt is not in the recorded dataset, so there is no recorded response to replay.";

/// One model's recorded responses, keyed by prompt.
#[derive(Debug, Clone, Default)]
pub struct ReplayBook {
    pub model: String,
    answers: HashMap<String, String>,
}

fn key(prompt: &str) -> &str {
    prompt.trim()
}

impl ReplayBook {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            answers: HashMap::new(),
        }
    }

    pub fn insert(&mut self, prompt: &str, text: String) {
        self.answers.insert(key(prompt).to_string(), text);
    }

    /// Adds `record`'s response of this book's model, if it has one.
    pub fn add_record(&mut self, record: &Record) {
        if let Some(r) = record.responses.get(&self.model) {
            self.answers
                .insert(key(&record.prompt).to_string(), r.text.clone());
        }
    }

    /// Reads every source of the dataset in `dir` (one pass) into one book per model.
    pub fn load_many(dir: &Path, models: &[String]) -> Result<Vec<ReplayBook>, DataError> {
        let data = Dataset::open(dir)?;
        let mut books: Vec<ReplayBook> = models.iter().map(ReplayBook::new).collect();
        for source in data.source_names() {
            for record in data.records(&source)? {
                let record = record?;
                for b in &mut books {
                    b.add_record(&record);
                }
            }
        }
        Ok(books)
    }

    pub fn load(dir: &Path, model: &str) -> Result<ReplayBook, DataError> {
        let mut books = Self::load_many(dir, &[model.to_string()])?;
        Ok(books.pop().unwrap_or_else(|| ReplayBook::new(model)))
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    pub fn answer(&self, prompt: &str) -> Option<&str> {
        self.answers.get(key(prompt)).map(String::as_str)
    }
}

/// Fault and pacing injection.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Delay before the response head.
    pub latency: Duration,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
    /// Probability of answering 500 instead.
    pub failure_rate: f64,
    /// Characters per streamed chunk (0: 16).
    pub chunk_chars: usize,
}

/// The replay server.
#[derive(Debug)]
pub struct ReplayServer {
    book: ReplayBook,
    options: ReplayOptions,
    served: AtomicU64,
    hits: AtomicU64,
}

impl ReplayServer {
    pub fn new(book: ReplayBook, options: ReplayOptions) -> Self {
        Self {
            book,
            options,
            served: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Completions served (including injected failures).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Completions answered from the recording.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    async fn route(self: Arc<Self>, req: http::Request<Incoming>) -> http::Response<RespBody> {
        let endpoint = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz" | "/readyz") => {
                return json_response(StatusCode::OK, &json!({"status": "ok"}))
            }
            (&Method::GET, "/v1/models") => {
                return json_response(
                    StatusCode::OK,
                    &json!({"object": "list", "data": [{"id": self.book.model, "object": "model", "created": 0, "owned_by": "replay"}]}),
                )
            }
            (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
            (&Method::POST, "/v1/completions") => Endpoint::Completions,
            (_, p) => return ApiError::path_not_found(p).into_response(),
        };
        let bytes = match Limited::new(req.into_body(), 16 << 20).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return ApiError::bad_request("invalid_body", e.to_string()).into_response(),
        };
        // The router bounds the scored prompt; replay needs the whole last user turn.
        let request = match openai::parse(endpoint, &bytes) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        let prompt = full_prompt(endpoint, &request.body);
        self.served.fetch_add(1, Ordering::Relaxed);
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        if self.options.failure_rate > 0.0
            && rand::rng().random_bool(self.options.failure_rate.min(1.0))
        {
            return ApiError::unavailable("injected failure (lookahead replay --failure-rate)")
                .into_response();
        }
        let (text, hit) = match self.book.answer(&prompt) {
            Some(t) => (t.to_string(), true),
            None => (FALLBACK_TEXT.to_string(), false),
        };
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        let model = request.model.clone();
        let mut resp = if request.stream {
            self.stream(endpoint, model, text)
        } else {
            json_response(
                StatusCode::OK,
                &completion_json(endpoint, &model, &prompt, &text),
            )
        };
        resp.headers_mut().insert(
            "x-replay-hit",
            HeaderValue::from_static(if hit { "true" } else { "false" }),
        );
        resp
    }

    fn stream(&self, endpoint: Endpoint, model: String, text: String) -> http::Response<RespBody> {
        let size = if self.options.chunk_chars == 0 {
            16
        } else {
            self.options.chunk_chars
        };
        let pieces = split_chars(&text, size);
        let created = now_secs();
        let mut events: Vec<Bytes> = Vec::with_capacity(pieces.len() + 3);
        let chunk = |delta: Value, finish: Value| -> Bytes {
            let v = match endpoint {
                Endpoint::Chat => {
                    json!({"id": "chatcmpl-replay", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                }
                Endpoint::Completions => {
                    json!({"id": "cmpl-replay", "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(Value::String(String::new())), "finish_reason": finish}]})
                }
            };
            Bytes::from(format!("data: {v}\n\n"))
        };
        if endpoint == Endpoint::Chat {
            events.push(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
        }
        for p in pieces {
            events.push(chunk(json!({"content": p}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let delay = self.options.chunk_delay;
        let stream = futures::stream::unfold(events.into_iter(), move |mut it| async move {
            let next = it.next()?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, BoxError>(Frame::data(next)), it))
        });
        let mut resp = http::Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        resp
    }
}

/// The last user turn in full (or the completion prompt).
fn full_prompt(endpoint: Endpoint, body: &serde_json::Map<String, Value>) -> String {
    let text_of = |c: &Value| match c {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    match endpoint {
        Endpoint::Chat => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| {
                m.iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            })
            .and_then(|m| m.get("content"))
            .map(text_of)
            .unwrap_or_default(),
        Endpoint::Completions => match body.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("").to_string(),
            _ => String::new(),
        },
    }
}

fn split_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Rough token count (whitespace words) for the `usage` field.
fn approx_tokens(s: &str) -> usize {
    s.split_whitespace().count()
}

fn completion_json(endpoint: Endpoint, model: &str, prompt: &str, text: &str) -> Value {
    let usage = json!({
        "prompt_tokens": approx_tokens(prompt),
        "completion_tokens": approx_tokens(text),
        "total_tokens": approx_tokens(prompt) + approx_tokens(text),
    });
    match endpoint {
        Endpoint::Chat => json!({
            "id": "chatcmpl-replay", "object": "chat.completion", "created": now_secs(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }),
        Endpoint::Completions => json!({
            "id": "cmpl-replay", "object": "text_completion", "created": now_secs(), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
            "usage": usage,
        }),
    }
}

impl HttpHandler for ReplayServer {
    fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = http::Response<RespBody>> + Send>> {
        Box::pin(self.route(req))
    }
}
