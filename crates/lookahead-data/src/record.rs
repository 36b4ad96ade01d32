//! One line of a routing dataset: a prompt with each candidate model's response and its score.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One prompt with the recorded response of each candidate model.
///
/// Wire format (one JSON object per line):
/// `{"id": "gsm8k-12", "source": "GSM8K", "prompt": "...",
///   "responses": {"MODEL": {"text": "...", "score": 1.0}, ...}, "reference": {"answer": "..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique within the dataset; splits hash it, so it must be stable.
    pub id: String,
    /// The benchmark / source this prompt belongs to (a key of the manifest).
    pub source: String,
    pub prompt: String,
    /// Model name -> that model's response. Sorted by name (deterministic iteration).
    pub responses: BTreeMap<String, Response>,
    /// Optional ground truth for scoring new responses (GSM8K/MATH answers, MBPP tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// One model's response to a prompt and its score on the source's own scale (see `ScoreRange`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub text: String,
    pub score: f64,
    /// Which grader produced `score` when it was labelled by `lookahead label`
    /// (`exact-answer`, `unit-tests`, `judge`); absent for the benchmark's own scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grader: Option<String>,
}

/// Ground truth attached to a record, when the source has one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Gold final answer (GSM8K, MATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The benchmark's unit tests (MBPP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
    /// Any other reference fields a user's dataset carries, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Record {
    /// Checks what serde cannot: non-empty id/source/responses and finite scores.
    /// Returns the reason for the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("empty \"id\"".into());
        }
        if self.source.trim().is_empty() {
            return Err("empty \"source\"".into());
        }
        if self.responses.is_empty() {
            return Err("\"responses\" is empty".into());
        }
        for (model, response) in &self.responses {
            if model.is_empty() {
                return Err("a response has an empty model name".into());
            }
            if !response.score.is_finite() {
                return Err(format!("score of {model:?} is not a finite number"));
            }
        }
        Ok(())
    }

    /// The score of `model`, if this record has its response.
    pub fn score(&self, model: &str) -> Option<f64> {
        self.responses.get(model).map(|r| r.score)
    }
}
