//! `input`, the prompt field of the Responses and Embeddings APIs: checked for shape, and (for
//! responses) the text the scorer reads, chosen as for chat: the last user turn's text.

use serde_json::{Map, Value};

use super::{bad, missing_prompt, Endpoint};
use crate::ApiError;

/// The text to score from a Responses or Embeddings body (embeddings are never scored: empty).
pub(super) fn scored_text(
    endpoint: Endpoint,
    body: &Map<String, Value>,
) -> Result<String, ApiError> {
    let input = match body.get("input") {
        None | Some(Value::Null) => return Err(missing_prompt(endpoint)),
        Some(v) => v,
    };
    match (endpoint, input) {
        (_, Value::String(s)) => Ok(if endpoint == Endpoint::Embeddings {
            String::new()
        } else {
            s.clone()
        }),
        (_, Value::Array(items)) if items.is_empty() => {
            Err(bad("invalid_value", "`input` must not be empty.").with_param("input"))
        }
        (Endpoint::Embeddings, Value::Array(_)) => Ok(String::new()),
        (_, Value::Array(items)) => Ok(last_user_text(items)),
        _ => Err(bad("invalid_type", "`input` must be a string or an array.").with_param("input")),
    }
}

/// The last user item's text (the last item's when no item is the user's); input parts'
/// `text` joined by newlines.
fn last_user_text(items: &[Value]) -> String {
    let is_user = |i: &&Value| i.get("role").and_then(Value::as_str) == Some("user");
    let item = items.iter().rev().find(is_user).or(items.last());
    match item.and_then(|i| i.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Endpoint};

    #[test]
    fn responses_score_the_last_user_items_text() {
        let r = parse(
            Endpoint::Responses,
            br#"{"model":"auto","instructions":"be brief","input":[
                {"role":"user","content":"first"},
                {"role":"assistant","content":"ok"},
                {"role":"user","content":[{"type":"input_text","text":"second"},{"type":"input_image","image_url":"x"}]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.prompt, "second");
        let r = parse(Endpoint::Responses, br#"{"model":"auto","input":"hello"}"#).expect("valid");
        assert_eq!(r.prompt, "hello");
    }

    #[test]
    fn input_must_be_present_and_a_string_or_array() {
        for (endpoint, body, code) in [
            (
                Endpoint::Responses,
                &br#"{"model":"m"}"#[..],
                "missing_required_parameter",
            ),
            (
                Endpoint::Embeddings,
                br#"{"model":"m","input":null}"#,
                "missing_required_parameter",
            ),
            (
                Endpoint::Embeddings,
                br#"{"model":"m","input":5}"#,
                "invalid_type",
            ),
            (
                Endpoint::Responses,
                br#"{"model":"m","input":[]}"#,
                "invalid_value",
            ),
        ] {
            let e = parse(endpoint, body).expect_err("must fail");
            assert_eq!((e.code, e.param), (code, Some("input")));
        }
        let ok = parse(Endpoint::Embeddings, br#"{"model":"e","input":["a","b"]}"#).expect("ok");
        assert_eq!(ok.prompt, "");
    }
}
