//! A conservative count of the tokens a request puts in a member's context window, without the
//! member's tokenizer (the router serves pools of different model families and must decide in
//! microseconds). The count is meant to be *at least* what a BPE or SentencePiece tokenizer
//! produces, so that "fits" is safe to believe; it overshoots ordinary English by about 1.5–2×.
//!
//! How text is counted (each rule an upper bound of what subword tokenizers do):
//! - a run of ASCII letters: one token per 3 letters, rounded up (common words are one token;
//!   rare words split into pieces of 3–4 letters);
//! - every digit is a token (Llama-family tokenizers split numbers into digits);
//! - every ASCII punctuation or symbol character is a token;
//! - a run of whitespace: one token, plus one per 4 further characters (indentation);
//! - a non-ASCII character: one token per UTF-8 byte beyond the first (2-byte letters one token,
//!   CJK two, emoji three: byte-fallback tokenizers spell rare characters byte by byte).
//!
//! Around the text: [`MESSAGE_OVERHEAD`] tokens per chat message (role and template markers),
//! [`REPLY_PRIMING`] for the assistant turn the template opens, and [`IMAGE_TOKENS`] per image.
//! `crates/lookahead-router/tests/token_estimate.rs` checks the count against SmolLM2's real
//! tokenizer on the routing dataset's prompts and responses: at least the real count on all but
//! 1 of 23,688 texts (that one 0.94×), 1.9× it at the median.
//!
//! The count's companion, [`count_words`], is a true *lower* bound: whitespace-separated words.
//! Every pre-tokenizer in use (GPT-2/tiktoken regexes, SentencePiece's whitespace split) makes
//! at least one token per word and none spanning two, so a prompt with more words than a window
//! certainly does not fit it.

use serde_json::{Map, Value};

/// Template tokens per chat message (`<|im_start|>role\n ... <|im_end|>\n`).
pub const MESSAGE_OVERHEAD: usize = 8;
/// Tokens of the assistant header the chat template appends.
pub const REPLY_PRIMING: usize = 4;
/// Tokens counted per image: OpenAI's high-detail 1024×1024 tile budget (1105) rounded up;
/// LLaVA-style encoders use 576, Qwen2-VL up to 1280 for a 1024×1024 image.
pub const IMAGE_TOKENS: usize = 1536;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Space,
    Other,
}

/// The conservative token count of `text`.
pub fn count_text(text: &str) -> usize {
    let mut tokens = 0;
    let mut run = (Class::Other, 0usize);
    for c in text.chars() {
        let class = if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_whitespace() {
            Class::Space
        } else {
            Class::Other
        };
        if class != run.0 || class == Class::Other {
            tokens += run_tokens(run);
            run = (class, 0);
        }
        run.1 += 1;
        if class == Class::Other {
            tokens += if c.is_ascii() { 1 } else { c.len_utf8() - 1 };
            run.1 = 0;
        }
    }
    tokens + run_tokens(run)
}

fn run_tokens((class, len): (Class, usize)) -> usize {
    match class {
        _ if len == 0 => 0,
        Class::Letter => len.div_ceil(3),
        Class::Space => 1 + (len - 1) / 4,
        Class::Other => 0,
    }
}

/// A lower bound of any subword tokenizer's count of `text`: its whitespace-separated words.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The lower bound of a JSON value's tokens: the words of its strings (keys, numbers and images
/// not counted).
pub fn words_of_value(value: &Value) -> usize {
    match value {
        Value::String(s) => count_words(s),
        Value::Array(items) => items.iter().map(words_of_value).sum(),
        Value::Object(map) if is_image(map) => 0,
        Value::Object(map) => map.values().map(words_of_value).sum(),
        Value::Number(_) | Value::Bool(_) | Value::Null => 0,
    }
}

/// The conservative token count of a JSON value's text: every string (object keys included:
/// tool schemas are read by the model key and all), images as [`IMAGE_TOKENS`] without their
/// (often base64) URL, numbers as their digits.
pub fn count_value(value: &Value) -> usize {
    match value {
        Value::String(s) => count_text(s),
        Value::Number(n) => count_text(&n.to_string()),
        Value::Bool(_) | Value::Null => 1,
        Value::Array(items) => items.iter().map(count_value).sum(),
        Value::Object(map) if is_image(map) => IMAGE_TOKENS,
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| count_text(k) + count_value(v))
            .sum(),
    }
}

/// Whether a content part is an image (`image_url` in chat, `input_image` in responses).
pub fn is_image(part: &Map<String, Value>) -> bool {
    matches!(
        part.get("type").and_then(Value::as_str),
        Some("image_url" | "input_image" | "image")
    )
}

/// The tokens of a chat `messages` array: each message's values plus its template overhead,
/// and the assistant turn the template opens.
pub fn count_messages(messages: &[Value]) -> usize {
    let text: usize = messages
        .iter()
        .map(|m| match m {
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| k.as_str() != "role")
                .map(|(_, v)| count_value(v))
                .sum::<usize>(),
            other => count_value(other),
        })
        .sum();
    text + messages.len() * MESSAGE_OVERHEAD + REPLY_PRIMING
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_each_class_by_its_rule() {
        assert_eq!(count_text(""), 0);
        assert_eq!(count_text("the"), 1);
        assert_eq!(count_text("internationalization"), 7);
        assert_eq!(count_text("2024"), 4);
        assert_eq!(count_text("a, b"), 4); // a , ␠ b
        assert_eq!(count_text("        x"), 1 + 1 + 1); // 8 spaces: 1 + 7/4, then x
        assert_eq!(count_text("héllo"), 1 + 1 + 1); // h, é (2 bytes), llo
        assert_eq!(count_text("日本"), 4);
        assert_eq!(count_text("🙂"), 3);
    }

    #[test]
    fn images_count_a_fixed_budget_not_their_base64() {
        let data = format!("data:image/png;base64,{}", "A".repeat(100_000));
        let part = json!({"type": "image_url", "image_url": {"url": data}});
        assert_eq!(count_value(&part), IMAGE_TOKENS);
    }

    #[test]
    fn messages_add_template_overhead() {
        let m = [json!({"role": "user", "content": "hi"})];
        assert_eq!(count_messages(&m), 1 + MESSAGE_OVERHEAD + REPLY_PRIMING);
    }
}
