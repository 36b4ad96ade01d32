//! The slice of OpenAI's wire format a stand-in member needs: read `model`, `stream` and the whole
//! last user turn (or the completion prompt) from a request; write completions, SSE chunks and
//! `{"error": {...}}` bodies in the shapes OpenAI clients parse.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};

/// Which completion API a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// What the replay server reads from a request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a stream ends with a usage chunk, as OpenAI's does.
    pub include_usage: bool,
    /// The last user turn in full (or the completion prompt).
    pub prompt: String,
}

/// An error answered as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
        }
    }

    fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn path_not_found(path: &str) -> Self {
        let shown: String = path.chars().take(128).collect();
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_url",
            ..Self::bad_request("", format!("Unknown request URL: {shown}."))
        }
    }

    pub fn invalid_api_key() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_api_key",
            ..Self::bad_request("", "Incorrect API key provided.")
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "api_error",
            code: "unavailable",
            message: message.into(),
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        (
            self.status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// Reads a request body: a JSON object with a non-empty string `model` and an optional boolean
/// `stream`. The prompt is whatever the last user turn holds; a request without one gets the
/// fallback answer rather than an error, as a lenient member would.
pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<CompletionRequest, ApiError> {
    let body = body_object(bytes)?;
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::bad_request(
                "missing_required_parameter",
                "You must provide a model parameter.",
            )
            .with_param("model"))
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_type", "`model` must be a string.")
                    .with_param("model"),
            )
        }
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_type", "`stream` must be a boolean.")
                    .with_param("stream"),
            )
        }
    };
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(CompletionRequest {
        prompt: full_prompt(endpoint, &body),
        model,
        stream,
        include_usage,
    })
}

/// A request body's top-level object (400 `invalid_json` for anything else).
pub fn body_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "invalid_json",
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            format!("We could not parse the JSON body of your request: {e}"),
        )),
    }
}

/// The last user turn in full (or the completion prompt).
fn full_prompt(endpoint: Endpoint, body: &Map<String, Value>) -> String {
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

/// The `usage` of answering `prompt` with `text` (whitespace words as tokens).
pub fn usage_json(prompt: &str, text: &str) -> Value {
    json!({
        "prompt_tokens": approx_tokens(prompt),
        "completion_tokens": approx_tokens(text),
        "total_tokens": approx_tokens(prompt) + approx_tokens(text),
    })
}

/// The usage chunk OpenAI sends last (before `[DONE]`) when a stream asked for
/// `stream_options.include_usage`: no choices, the whole answer's usage.
pub fn usage_event(endpoint: Endpoint, model: &str, prompt: &str, text: &str) -> Bytes {
    let (id, object) = match endpoint {
        Endpoint::Chat => ("chatcmpl-replay", "chat.completion.chunk"),
        Endpoint::Completions => ("cmpl-replay", "text_completion"),
    };
    let v = json!({"id": id, "object": object, "created": now_secs(), "model": model,
        "choices": [], "usage": usage_json(prompt, text)});
    Bytes::from(format!("data: {v}\n\n"))
}

/// A whole (non-streamed) completion.
pub fn completion_json(endpoint: Endpoint, model: &str, prompt: &str, text: &str) -> Value {
    let usage = usage_json(prompt, text);
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

/// The SSE events of `text` streamed in pieces of `size` chars: (chat only) the role, one event
/// per piece, the stop event and `[DONE]`.
pub fn stream_events(endpoint: Endpoint, model: &str, text: &str, size: usize) -> Vec<Bytes> {
    let chars: Vec<char> = text.chars().collect();
    let pieces = chars.chunks(size.max(1));
    let created = now_secs();
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
    let mut events: Vec<Bytes> = Vec::with_capacity(pieces.len() + 3);
    if endpoint == Endpoint::Chat {
        events.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
    }
    for p in pieces {
        let piece: String = p.iter().collect();
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}
