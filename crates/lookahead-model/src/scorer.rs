//! The interface the router sidecar (in-process or behind gRPC) and `lookahead eval` call.

/// Why a batch could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Model(String),
    #[error("invalid input: {0}")]
    Input(String),
}

impl ScoreError {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ScoreError::Tokenizer(_) => "tokenizer",
            ScoreError::Model(_) => "model",
            ScoreError::Input(_) => "input",
        }
    }
}

/// Predicts, for each prompt, how well each model of a fixed, ordered pool would answer it.
pub trait Scorer: Send + Sync {
    /// The pool, in the order of every score vector this scorer returns.
    fn models(&self) -> &[String];

    /// One score vector per prompt, `models().len()` long: predicted quality, higher is better,
    /// comparable across models of one prompt (not necessarily across prompts).
    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError>;

    /// Whether a call costs next to nothing (no model to run: a constant or a lookup), so a
    /// caller may make it inline instead of moving it to a thread where it may block. Scorers
    /// that run a model keep the default.
    fn is_trivial(&self) -> bool {
        false
    }
}
