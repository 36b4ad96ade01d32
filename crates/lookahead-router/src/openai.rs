//! The parts of OpenAI's request format the router reads: `model`, `stream`, and the prompt text
//! to score (the last user turn, bounded). Everything else passes through untouched.

use serde_json::{Map, Value};

use crate::ApiError;

/// Longest prompt text (in chars) sent to the scorer; routers read a bounded prefix anyway.
pub const MAX_SCORED_CHARS: usize = 4096;

/// Which completion API a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    /// Path below the member's base URL (which ends in `/v1`).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub endpoint: Endpoint,
    /// The whole body, forwarded with `model` rewritten.
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// What the scorer sees.
    pub prompt: String,
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, msg)
}

/// Text of a message's `content`: a string, or the `text` of its text parts.
fn content_text(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                let Some(obj) = part.as_object() else {
                    return Err(
                        bad("invalid_type", "content parts must be objects").with_param("messages")
                    );
                };
                if let Some(t) = obj.get("text") {
                    let t = t.as_str().ok_or_else(|| {
                        bad("invalid_type", "content part `text` must be a string")
                            .with_param("messages")
                    })?;
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(t);
                }
            }
            Ok(text)
        }
        _ => Err(bad(
            "invalid_type",
            "message `content` must be a string, an array of parts or null",
        )
        .with_param("messages")),
    }
}

fn bounded(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(MAX_SCORED_CHARS) {
        s.truncate(i);
    }
    s
}

/// Parses and validates a request body.
pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<CompletionRequest, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        bad(
            "invalid_json",
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(bad(
            "invalid_json",
            "The request body must be a JSON object.",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(bad(
                "missing_required_parameter",
                "You must provide a model parameter.",
            )
            .with_param("model"))
        }
        Some(_) => return Err(bad("invalid_type", "`model` must be a string.").with_param("model")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad("invalid_type", "`stream` must be a boolean.").with_param("stream"))
        }
    };
    let prompt = match endpoint {
        Endpoint::Chat => chat_prompt(&body)?,
        Endpoint::Completions => completion_prompt(&body)?,
    };
    Ok(CompletionRequest {
        endpoint,
        body,
        model,
        stream,
        prompt: bounded(prompt),
    })
}

fn chat_prompt(body: &Map<String, Value>) -> Result<String, ApiError> {
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(bad("invalid_value", "`messages` must not be empty.").with_param("messages"))
        }
        None => {
            return Err(bad(
                "missing_required_parameter",
                "You must provide a messages parameter.",
            )
            .with_param("messages"))
        }
        Some(_) => {
            return Err(bad("invalid_type", "`messages` must be an array.").with_param("messages"))
        }
    };
    let mut last_user = None;
    for (i, m) in messages.iter().enumerate() {
        let obj = m.as_object().ok_or_else(|| {
            bad("invalid_type", format!("messages[{i}] must be an object.")).with_param("messages")
        })?;
        let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| {
            bad(
                "invalid_value",
                format!("messages[{i}].role must be a string."),
            )
            .with_param("messages")
        })?;
        if !ROLES.contains(&role) {
            return Err(bad(
                "invalid_value",
                format!("messages[{i}].role must be one of {ROLES:?}."),
            )
            .with_param("messages"));
        }
        let text = content_text(obj.get("content").unwrap_or(&Value::Null))?;
        if role == "user" {
            last_user = Some(text);
        }
    }
    match last_user {
        Some(t) => Ok(t),
        // No user turn (e.g. only a system prompt): score the last message.
        None => content_text(
            messages
                .last()
                .and_then(|m| m.get("content"))
                .unwrap_or(&Value::Null),
        ),
    }
}

fn completion_prompt(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) if !items.is_empty() => {
            // A batch of prompts or token ids: score the first text prompt (token ids score as "").
            match &items[0] {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Ok(String::new()),
                _ => Err(bad(
                    "invalid_type",
                    "`prompt` must be a string, an array of strings or token arrays.",
                )
                .with_param("prompt")),
            }
        }
        Some(Value::Array(_)) => {
            Err(bad("invalid_value", "`prompt` must not be empty.").with_param("prompt"))
        }
        None => Err(bad(
            "missing_required_parameter",
            "You must provide a prompt parameter.",
        )
        .with_param("prompt")),
        Some(_) => Err(bad("invalid_type", "`prompt` must be a string.").with_param("prompt")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_last_user_turn_and_stream_flag() {
        let r = parse(
            Endpoint::Chat,
            br#"{"model":"auto","stream":true,"messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":"first"},
                {"role":"assistant","content":"ok"},
                {"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.model, "auto");
        assert!(r.stream);
        assert_eq!(r.prompt, "second");
    }

    #[test]
    fn bounds_the_scored_prompt() {
        let long = "é".repeat(MAX_SCORED_CHARS + 10);
        let body = serde_json::json!({"model": "m", "prompt": long}).to_string();
        let r = parse(Endpoint::Completions, body.as_bytes()).expect("valid");
        assert_eq!(r.prompt.chars().count(), MAX_SCORED_CHARS);
    }

    #[test]
    fn rejects_malformed_requests_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "invalid_json"),
            (b"[1]", "invalid_json"),
            (b"\xff\xfe", "invalid_json"),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                "missing_required_parameter",
            ),
            (br#"{"model":7,"messages":[]}"#, "invalid_type"),
            (br#"{"model":"m","messages":[]}"#, "invalid_value"),
            (br#"{"model":"m","messages":"hi"}"#, "invalid_type"),
            (
                br#"{"model":"m","messages":[{"role":"king","content":"x"}]}"#,
                "invalid_value",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "invalid_type",
            ),
            (
                br#"{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
                "invalid_type",
            ),
        ];
        for (body, code) in cases {
            let e = parse(Endpoint::Chat, body).expect_err("must fail");
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
            assert_eq!(e.code, *code, "{}", String::from_utf8_lossy(body));
        }
        let e = parse(Endpoint::Completions, br#"{"model":"m"}"#).expect_err("no prompt");
        assert_eq!(e.param, Some("prompt"));
    }
}
