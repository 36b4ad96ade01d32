//! The replay member's other OpenAI APIs and limits: the Responses API (`/v1/responses`, the
//! book's answer as a `response` object or its SSE events), embeddings (`/v1/embeddings`, a
//! deterministic vector per input) and a context window that refuses long prompts as vLLM does.

use serde_json::{json, Map, Value};

use crate::openai::{body_object, ApiError};

/// What the replay server reads from a Responses API request.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    pub model: String,
    pub stream: bool,
    /// The last user item's text (or the `input` string).
    pub prompt: String,
}

fn model_of(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        _ => Err(ApiError::bad_request(
            "missing_required_parameter",
            "You must provide a model parameter.",
        )),
    }
}

/// Reads a Responses API body.
pub fn parse_responses(bytes: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let body = body_object(bytes)?;
    let text_of = |c: Option<&Value>| match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let prompt = match body.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => text_of(
            items
                .iter()
                .rev()
                .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))
                .and_then(|i| i.get("content")),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "missing_required_parameter",
                "You must provide an input parameter.",
            ))
        }
    };
    Ok(ResponsesRequest {
        model: model_of(&body)?,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        prompt,
    })
}

/// A whole `response` object answering with `text`.
pub fn response_json(model: &str, prompt: &str, text: &str) -> Value {
    let (input, output) = (words(prompt), words(text));
    json!({
        "id": "resp-replay", "object": "response", "created_at": 0, "model": model,
        "status": "completed",
        "output": [{"type": "message", "id": "msg-replay", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "output_text": text,
        "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output},
    })
}

/// The Responses API's SSE events for `text`: created, one delta per `size` chars, completed.
pub fn response_events(model: &str, prompt: &str, text: &str, size: usize) -> Vec<String> {
    let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let mut events = vec![event(
        "response.created",
        json!({"type": "response.created", "response": {"id": "resp-replay", "status": "in_progress", "model": model}}),
    )];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(size.max(1)) {
        let delta: String = piece.iter().collect();
        events.push(event(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": "msg-replay", "output_index": 0, "content_index": 0, "delta": delta}),
        ));
    }
    events.push(event(
        "response.completed",
        json!({"type": "response.completed", "response": response_json(model, prompt, text)}),
    ));
    events
}

/// An embeddings answer: one unit vector per input, a pure function of the input's text.
pub fn embeddings_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let body = body_object(bytes)?;
    let model = model_of(&body)?;
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(|i| i.to_string()).collect()
        }
        _ => {
            return Err(ApiError::bad_request(
                "missing_required_parameter",
                "You must provide an input parameter.",
            ))
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embed(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|i| words(i)).sum();
    Ok(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// An 8-dimensional unit vector from the text's bytes (FNV-1a per dimension).
fn embed(text: &str) -> Vec<f32> {
    let raw: Vec<f32> = (0u64..8)
        .map(|d| {
            let h = text.bytes().fold(0xcbf2_9ce4_8422_2325 ^ d, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

/// Whitespace words: the replay member's token count.
pub fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// vLLM's refusal of a request longer than the window, when `prompt` plus `max_tokens` does
/// not fit `window` (counted in [`words`]).
pub fn check_window(window: usize, prompt: &str, max_tokens: usize) -> Result<(), ApiError> {
    let prompt_tokens = words(prompt);
    let asked = prompt_tokens + max_tokens;
    if asked <= window {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "BadRequestError",
        format!(
            "This model's maximum context length is {window} tokens. However, you requested {asked} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion."
        ),
    ))
}
