//! What a request needs from a member: the capabilities it uses (tools, images, structured
//! output, embeddings), how many tokens its prompt takes (counted conservatively:
//! [`super::tokens`]) and how long an answer it asks for. Read from the body's tree, so only
//! for pools that declare limits or capabilities (the common unconstrained pool pays nothing).

use lookahead_api::pool::Capability;
use serde_json::{Map, Value};

use super::tokens::{count_messages, count_value, is_image, words_of_value, REPLY_PRIMING};
use super::{CompletionRequest, Endpoint};

/// What a request needs from the member that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Capabilities used, the endpoint's own first (`chat` or `embeddings`).
    pub uses: Vec<Uses>,
    /// Conservative count of the prompt's tokens (tool schemas and images included): at least
    /// what a member's tokenizer counts.
    pub prompt_tokens: usize,
    /// A lower bound of the prompt's tokens (its words: [`super::tokens::count_words`]).
    pub prompt_words: usize,
    /// The answer length asked for (`max_completion_tokens`, `max_tokens`,
    /// `max_output_tokens`), if any.
    pub max_output: Option<u64>,
}

/// A capability a request uses, and the request field that uses it (named in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uses {
    pub capability: Capability,
    pub param: &'static str,
}

impl Needs {
    /// Tokens the member's window must hold by the conservative count: the prompt and the
    /// answer asked for.
    pub fn window_tokens(&self) -> u64 {
        self.prompt_tokens as u64 + self.max_output.unwrap_or(0)
    }

    /// Tokens the member's window must hold at the very least.
    pub fn window_tokens_at_least(&self) -> u64 {
        self.prompt_words as u64 + self.max_output.unwrap_or(0)
    }
}

impl CompletionRequest {
    /// What this request needs from a member.
    pub fn needs(&self) -> Needs {
        let body = self.body.tree();
        let mut uses = Vec::with_capacity(2);
        let base = match self.endpoint {
            Endpoint::Embeddings => Capability::Embeddings,
            _ => Capability::Chat,
        };
        uses.push(Uses {
            capability: base,
            param: "model",
        });
        let prompt_tokens = match self.endpoint {
            Endpoint::Chat => chat_tokens(body, &mut uses),
            Endpoint::Completions => count_value(field(body, "prompt")) + REPLY_PRIMING,
            Endpoint::Responses => responses_tokens(body, &mut uses),
            Endpoint::Embeddings => count_value(field(body, "input")),
        };
        let prompt_words = [
            "messages",
            "prompt",
            "input",
            "instructions",
            "tools",
            "functions",
        ]
        .iter()
        .map(|k| words_of_value(field(body, k)))
        .sum();
        let max_output = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64));
        Needs {
            uses,
            prompt_tokens,
            prompt_words,
            max_output,
        }
    }
}

fn field<'a>(body: &'a Map<String, Value>, key: &str) -> &'a Value {
    body.get(key).unwrap_or(&Value::Null)
}

fn non_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Null => false,
        _ => true,
    }
}

fn use_if(uses: &mut Vec<Uses>, used: bool, capability: Capability, param: &'static str) {
    if used && !uses.iter().any(|u| u.capability == capability) {
        uses.push(Uses { capability, param });
    }
}

/// Chat: messages (tool turns and images noted), tool schemas, a structured-output schema.
fn chat_tokens(body: &Map<String, Value>, uses: &mut Vec<Uses>) -> usize {
    let messages = field(body, "messages")
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let tool_turns = messages.iter().any(|m| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("tool" | "function")
        ) || m.get("tool_calls").is_some_and(non_empty)
    });
    let tools = non_empty(field(body, "tools")) || non_empty(field(body, "functions"));
    use_if(uses, tools, Capability::Tools, "tools");
    use_if(uses, tool_turns, Capability::Tools, "messages");
    use_if(uses, any_image(messages), Capability::Vision, "messages");
    let format = field(body, "response_format");
    use_if(
        uses,
        structured(format),
        Capability::JsonSchema,
        "response_format",
    );
    count_messages(messages)
        + count_value(field(body, "tools"))
        + count_value(field(body, "functions"))
        + count_value(format)
}

/// Responses: input items, instructions, tools, and `text.format`.
fn responses_tokens(body: &Map<String, Value>, uses: &mut Vec<Uses>) -> usize {
    let input = field(body, "input");
    let items = input.as_array().map_or(&[][..], Vec::as_slice);
    use_if(
        uses,
        non_empty(field(body, "tools")),
        Capability::Tools,
        "tools",
    );
    use_if(uses, any_image(items), Capability::Vision, "input");
    let format = body.get("text").and_then(|t| t.get("format"));
    use_if(
        uses,
        format.is_some_and(structured),
        Capability::JsonSchema,
        "text",
    );
    let items_tokens = match input {
        Value::Array(items) => count_messages(items),
        other => count_value(other) + REPLY_PRIMING,
    };
    items_tokens
        + count_value(field(body, "instructions"))
        + count_value(field(body, "tools"))
        + format.map_or(0, count_value)
}

/// `{"type": "json_schema" | "json_object", ...}`.
fn structured(format: &Value) -> bool {
    matches!(
        format.get("type").and_then(Value::as_str),
        Some("json_schema" | "json_object")
    )
}

/// Whether any message or item has an image content part.
fn any_image(messages: &[Value]) -> bool {
    messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|parts| parts.iter().filter_map(Value::as_object).any(is_image))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::parse;

    fn needs(endpoint: Endpoint, body: &str) -> Needs {
        parse(endpoint, body.as_bytes()).expect("valid").needs()
    }

    fn capabilities(n: &Needs) -> Vec<Capability> {
        n.uses.iter().map(|u| u.capability).collect()
    }

    #[test]
    fn plain_chat_needs_chat_and_its_answer_length() {
        let n = needs(
            Endpoint::Chat,
            r#"{"model":"auto","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(capabilities(&n), [Capability::Chat]);
        assert_eq!(n.max_output, Some(100));
        assert!(n.prompt_tokens >= 1);
    }

    #[test]
    fn tools_images_and_schemas_are_noticed_with_their_field() {
        let n = needs(
            Endpoint::Chat,
            r#"{"model":"auto","tools":[{"type":"function","function":{"name":"f","parameters":{}}}],
               "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}},
               "messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x"}}]}]}"#,
        );
        assert_eq!(
            capabilities(&n),
            [
                Capability::Chat,
                Capability::Tools,
                Capability::Vision,
                Capability::JsonSchema
            ]
        );
        assert_eq!(n.uses[1].param, "tools");
        let tool_turn = needs(
            Endpoint::Chat,
            r#"{"model":"auto","messages":[{"role":"tool","tool_call_id":"1","content":"42"}]}"#,
        );
        assert_eq!(tool_turn.uses[1].param, "messages");
    }

    #[test]
    fn responses_and_embeddings_read_their_own_fields() {
        let n = needs(
            Endpoint::Responses,
            r#"{"model":"auto","max_output_tokens":50,"input":"hi","text":{"format":{"type":"json_object"}}}"#,
        );
        assert_eq!(capabilities(&n), [Capability::Chat, Capability::JsonSchema]);
        assert_eq!(n.max_output, Some(50));
        let e = needs(Endpoint::Embeddings, r#"{"model":"e","input":"some text"}"#);
        assert_eq!(capabilities(&e), [Capability::Embeddings]);
        assert!(e.prompt_tokens >= 2);
    }
}
