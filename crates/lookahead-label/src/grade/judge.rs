//! LLM-as-judge grading for records without a reference: an OpenAI-compatible endpoint grades a
//! response 1-10 with a rubric prompt. Malformed verdicts are retried, then recorded as failures.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use lookahead_client::{ChatClient, ChatEndpoint, ClientError};

/// The judge's rubric (MT-Bench single-answer grading, condensed).
pub const DEFAULT_RUBRIC: &str =
    "Please act as an impartial judge and evaluate the quality of the \
response provided by an AI assistant to the user question displayed below. Consider helpfulness, \
relevance, accuracy, depth, creativity and level of detail. Be as objective as possible. After a \
short explanation, rate the response on a scale of 1 to 10 by strictly following this format: \
\"Rating: [[5]]\".";

/// Where and how to ask the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeConfig {
    /// OpenAI-compatible base URL (with `/v1`).
    pub base_url: String,
    /// The judge's `model` string.
    pub model: String,
    /// Environment variable holding the judge's API key, if it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rubric: Option<String>,
    /// Attempts per verdict (malformed output or a failed call).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_attempts() -> u32 {
    3
}

static RATING: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\[\[\s*(10|[1-9](?:\.\d+)?)\s*\]\]|[Rr]ating:\s*(10|[1-9](?:\.\d+)?)\b").ok()
});

/// The 1-10 grade in a judge's verdict, if it states one validly.
pub fn parse_rating(verdict: &str) -> Option<f64> {
    let caps = RATING.as_ref()?.captures_iter(verdict).last()?;
    let text = caps.get(1).or_else(|| caps.get(2))?.as_str();
    let grade: f64 = text.parse().ok()?;
    (1.0..=10.0).contains(&grade).then_some(grade)
}

/// A verdict that could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("judge call failed after {attempts} attempts: {last}")]
    Call { attempts: u32, last: ClientError },
    #[error("judge gave no valid rating in {attempts} attempts (last: {last:?})")]
    Malformed { attempts: u32, last: String },
}

/// Grades `response` to `prompt` 1-10.
pub async fn grade(
    client: &ChatClient,
    judge: &JudgeConfig,
    prompt: &str,
    response: &str,
) -> Result<f64, JudgeError> {
    let rubric = judge.rubric.as_deref().unwrap_or(DEFAULT_RUBRIC);
    let user = format!(
        "[Question]\n{prompt}\n\n[The Start of Assistant's Answer]\n{response}\n[The End of Assistant's Answer]"
    );
    let api_key = judge
        .api_key_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok());
    let endpoint = ChatEndpoint::new(&judge.base_url).with_api_key(api_key.as_deref());
    let attempts = judge.attempts.max(1);
    let mut last_call_error = None;
    let mut last_verdict = String::new();
    for _ in 0..attempts {
        match client
            .complete(&endpoint, &judge.model, Some(rubric), &user, 512)
            .await
        {
            Ok(verdict) => {
                if let Some(g) = parse_rating(&verdict) {
                    return Ok(g);
                }
                tracing::debug!(
                    len = verdict.len(),
                    "judge verdict without a rating; retrying"
                );
                last_verdict = verdict.chars().take(200).collect();
                last_call_error = None;
            }
            Err(e) => last_call_error = Some(e),
        }
    }
    match last_call_error {
        Some(last) => Err(JudgeError::Call { attempts, last }),
        None => Err(JudgeError::Malformed {
            attempts,
            last: last_verdict,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ratings_in_the_usual_shapes() {
        assert_eq!(parse_rating("Good answer. Rating: [[7]]"), Some(7.0));
        assert_eq!(parse_rating("Rating: [[10]]"), Some(10.0));
        assert_eq!(parse_rating("[[ 8.5 ]]"), Some(8.5));
        assert_eq!(parse_rating("Rating: 6"), Some(6.0));
        assert_eq!(parse_rating("first [[3]] then corrected: [[4]]"), Some(4.0));
    }

    #[test]
    fn rejects_missing_or_out_of_range_ratings() {
        assert_eq!(parse_rating("I liked it"), None);
        assert_eq!(parse_rating("Rating: [[0]]"), None);
        assert_eq!(parse_rating("Rating: [[11]]"), None);
        assert_eq!(parse_rating(""), None);
    }
}
