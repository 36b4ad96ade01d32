//! The parts of OpenAI's request format the router reads: `model`, `stream`, the prompt text to
//! score (the last user turn, bounded), and the sampling parameters it checks before dispatch
//! ([`params`]). Everything else passes through untouched: the body is forwarded as the client
//! sent it, with only `model`'s value replaced.

mod fields;
mod input;
pub mod needs;
mod params;
pub mod tokens;
mod value;

use std::ops::{Deref, Range};
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value};

use self::value::{Kind, Scalar};
use crate::ApiError;

/// Longest prompt text (in chars) sent to the scorer; routers read a bounded prefix anyway.
pub const MAX_SCORED_CHARS: usize = 4096;

/// Which completion API a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    /// OpenAI's Responses API (`/v1/responses`): routed like chat.
    Responses,
    /// `/v1/embeddings`: sent by name to members supporting embeddings, never scored.
    Embeddings,
}

impl Endpoint {
    /// Path below the member's base URL (which ends in `/v1`).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Responses => "/responses",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// Every endpoint, for per-endpoint tables.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Responses,
        Endpoint::Embeddings,
    ];
}

/// A request body as received, with its JSON tree built only when something reads it: the
/// router forwards the bytes and never does; the replay backend reads the tree (through `Deref`).
#[derive(Debug, Clone)]
pub struct RequestBody {
    bytes: Bytes,
    tree: OnceLock<Map<String, Value>>,
}

impl RequestBody {
    /// The bytes the client sent.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The top-level object. The body was validated as one, so the fallback (an empty map) is
    /// never taken.
    pub fn tree(&self) -> &Map<String, Value> {
        self.tree
            .get_or_init(|| serde_json::from_slice(&self.bytes).unwrap_or_default())
    }
}

impl Deref for RequestBody {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Self::Target {
        self.tree()
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub endpoint: Endpoint,
    /// The body as the client sent it.
    pub body: RequestBody,
    /// Where `model`'s string value (quotes included) sits in `body`, when it occurs once and
    /// has no escapes; otherwise the body is re-serialised to rewrite it.
    model_span: Option<Range<usize>>,
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

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_SCORED_CHARS) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

fn invalid_json(e: impl std::fmt::Display) -> ApiError {
    bad(
        "invalid_json",
        format!("We could not parse the JSON body of your request: {e}"),
    )
}

/// Parses and validates a request body (copied; see [`parse_body`]).
pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<CompletionRequest, ApiError> {
    parse_body(endpoint, Bytes::copy_from_slice(bytes))
}

/// Parses and validates a request body, keeping it for forwarding.
pub fn parse_body(endpoint: Endpoint, body: Bytes) -> Result<CompletionRequest, ApiError> {
    let Some(fields) = fields::read(endpoint, &body).map_err(invalid_json)? else {
        return Err(bad(
            "invalid_json",
            "The request body must be a JSON object.",
        ));
    };
    let model = match &fields.model {
        Some(Scalar::Str(m)) if !m.is_empty() => m,
        Some(Scalar::Str(_)) | None => {
            return Err(bad(
                "missing_required_parameter",
                "You must provide a model parameter.",
            )
            .with_param("model"))
        }
        Some(_) => return Err(bad("invalid_type", "`model` must be a string.").with_param("model")),
    };
    let stream = match fields.stream {
        None | Some(Scalar::Other(Kind::Null)) => false,
        Some(Scalar::Bool(b)) => b,
        Some(_) => {
            return Err(bad("invalid_type", "`stream` must be a boolean.").with_param("stream"))
        }
    };
    for (param, value) in &fields.params {
        param.check(value)?;
    }
    // Chat and completions read their text in the one pass; the other two APIs' `input` is
    // read from the tree (built once, kept for forwarding).
    let tree = OnceLock::new();
    let prompt = match (fields.prompt, endpoint) {
        (Some(p), _) => bounded(&p?),
        (None, Endpoint::Responses | Endpoint::Embeddings) => {
            let map = tree_of(&body)?;
            let text = input::scored_text(endpoint, &map).map(|t| bounded(&t))?;
            let _ = tree.set(map);
            text
        }
        (None, _) => return Err(missing_prompt(endpoint)),
    };
    let model_span = match model {
        std::borrow::Cow::Borrowed(m) if fields.model_count == 1 => quoted_span(&body, m),
        _ => None,
    };
    let model = model.to_string();
    Ok(CompletionRequest {
        endpoint,
        model,
        model_span,
        stream,
        prompt,
        body: RequestBody { bytes: body, tree },
    })
}

/// The body's top-level object (already validated as one by the first pass).
fn tree_of(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    serde_json::from_slice(body).map_err(invalid_json)
}

fn missing_prompt(endpoint: Endpoint) -> ApiError {
    let (message, param) = match endpoint {
        Endpoint::Chat => ("You must provide a messages parameter.", "messages"),
        Endpoint::Completions => ("You must provide a prompt parameter.", "prompt"),
        Endpoint::Responses | Endpoint::Embeddings => {
            ("You must provide an input parameter.", "input")
        }
    };
    bad("missing_required_parameter", message).with_param(param)
}

/// The range of `value` (a string borrowed from `body`) in `body`, widened to its quotes.
fn quoted_span(body: &[u8], value: &str) -> Option<Range<usize>> {
    let start = (value.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start + value.len();
    let quoted = start.checked_sub(1)?..end + 1;
    let bytes = body.get(quoted.clone())?;
    let unchanged = bytes.first() == Some(&b'"')
        && bytes.last() == Some(&b'"')
        && &bytes[1..bytes.len() - 1] == value.as_bytes();
    unchanged.then_some(quoted)
}

impl CompletionRequest {
    /// The body to send to a member: the client's, with `model` set to `model_id`.
    pub fn body_for(&self, model_id: &str) -> Result<Bytes, ApiError> {
        let Some(span) = &self.model_span else {
            return self.reserialised_for(model_id);
        };
        let sent = self.body.bytes();
        let mut out = Vec::with_capacity(sent.len() + model_id.len());
        out.extend_from_slice(&sent[..span.start]);
        serde_json::to_writer(&mut out, model_id).map_err(invalid_json)?;
        out.extend_from_slice(&sent[span.end..]);
        Ok(Bytes::from(out))
    }

    /// The slow path (duplicate or escaped `model`): parse the whole body and write it anew.
    fn reserialised_for(&self, model_id: &str) -> Result<Bytes, ApiError> {
        let mut body = self.body.tree().clone();
        body.insert("model".into(), Value::String(model_id.to_string()));
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(invalid_json)
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
    fn rewrites_model_in_place_and_keeps_the_rest_byte_for_byte() {
        let body =
            br#"{"model":"auto", "temperature":1.50,"messages":[{"role":"user","content":"hi"}]}"#;
        let r = parse(Endpoint::Chat, body).expect("valid");
        let sent = r.body_for("Yi-\"34B\"").expect("body");
        assert_eq!(
            &sent[..],
            &br#"{"model":"Yi-\"34B\"", "temperature":1.50,"messages":[{"role":"user","content":"hi"}]}"#[..]
        );
    }

    #[test]
    fn duplicate_or_escaped_models_are_rewritten_by_reserialising() {
        for body in [
            &br#"{"model":"x","model":"auto","prompt":"p"}"#[..],
            &br#"{"model":"a\u0075to","prompt":"p"}"#[..],
        ] {
            let r = parse(Endpoint::Completions, body).expect("valid");
            assert_eq!(r.model, "auto");
            let sent: serde_json::Value =
                serde_json::from_slice(&r.body_for("m").expect("body")).expect("json");
            assert_eq!(sent, serde_json::json!({"model": "m", "prompt": "p"}));
        }
    }

    #[test]
    fn no_user_turn_scores_the_last_message_and_parts_join_by_newline() {
        let r = parse(
            Endpoint::Chat,
            br#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"assistant","content":[{"type":"text","text":"b"},{"type":"text","text":"c"}]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.prompt, "b\nc");
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
