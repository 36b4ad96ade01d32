//! Grading a member's response, as a fraction in [0, 1]: [`math`] checks final answers
//! (`reference.answer`), [`code`] runs unit tests (`reference.tests`) in a sandbox, [`judge`] asks
//! an LLM judge for a 1-10 grade. [`GradersConfig`] picks the grader per source;
//! [`to_source_scale`] maps a grade onto the source's score range.

pub mod code;
pub mod judge;
pub mod math;

use std::collections::BTreeMap;

use lookahead_client::ChatClient;
use lookahead_data::{Record, ScoreRange};
use serde::{Deserialize, Serialize};

use judge::JudgeConfig;

/// A grading method; recorded with every score it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraderKind {
    /// Final answer equals `reference.answer` (math-style sources).
    ExactAnswer,
    /// `reference.tests` pass in the sandbox (code sources).
    UnitTests,
    /// An LLM judge's 1-10 grade.
    Judge,
}

impl GraderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GraderKind::ExactAnswer => "exact-answer",
            GraderKind::UnitTests => "unit-tests",
            GraderKind::Judge => "judge",
        }
    }
}

/// `--graders FILE`: per-source choice and the judge's endpoint. Sources not listed use
/// `exact-answer` when records carry `reference.answer`, `unit-tests` when they carry
/// `reference.tests`, else the judge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GradersConfig {
    #[serde(default)]
    pub sources: BTreeMap<String, GraderKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeConfig>,
}

/// Why a response could not be graded (recorded in the journal; retried by the next run).
#[derive(Debug, thiserror::Error)]
pub enum GradeError {
    #[error("record has no reference.{0} for the {1} grader")]
    NoReference(&'static str, &'static str),
    #[error("no judge configured for source {0:?} (add `judge:` to the graders file)")]
    NoJudge(String),
    #[error(transparent)]
    Judge(#[from] judge::JudgeError),
    #[error(transparent)]
    Sandbox(#[from] code::SandboxError),
    #[error("sandbox task: {0}")]
    Task(String),
}

impl GradersConfig {
    /// The grader for a record of `source`.
    pub fn kind_for(&self, record: &Record) -> GraderKind {
        if let Some(k) = self.sources.get(&record.source) {
            return *k;
        }
        match &record.reference {
            Some(r) if r.answer.is_some() => GraderKind::ExactAnswer,
            Some(r) if r.tests.is_some() => GraderKind::UnitTests,
            _ => GraderKind::Judge,
        }
    }

    /// Grades `response` to `record`, as a fraction in [0, 1].
    pub async fn grade(
        &self,
        client: &ChatClient,
        record: &Record,
        response: &str,
        limits: &code::SandboxLimits,
    ) -> Result<(GraderKind, f64), GradeError> {
        let kind = self.kind_for(record);
        let reference = record.reference.as_ref();
        let fraction = match kind {
            GraderKind::ExactAnswer => {
                let answer = reference
                    .and_then(|r| r.answer.as_deref())
                    .ok_or(GradeError::NoReference("answer", kind.as_str()))?;
                if math::is_correct(response, answer) {
                    1.0
                } else {
                    0.0
                }
            }
            GraderKind::UnitTests => {
                let tests = reference
                    .and_then(|r| r.tests.clone())
                    .ok_or(GradeError::NoReference("tests", kind.as_str()))?;
                let code = code::extract_code(response);
                let limits = limits.clone();
                // The sandbox blocks on a child process: keep it off the async workers.
                let outcome = tokio::task::spawn_blocking(move || {
                    code::run_python_tests(&code, &tests, &limits)
                })
                .await
                .map_err(|e| GradeError::Task(e.to_string()))??;
                if outcome == code::CodeOutcome::Passed {
                    1.0
                } else {
                    0.0
                }
            }
            GraderKind::Judge => {
                let judge_cfg = self
                    .judge
                    .as_ref()
                    .ok_or_else(|| GradeError::NoJudge(record.source.clone()))?;
                let grade = judge::grade(client, judge_cfg, &record.prompt, response).await?;
                (grade - 1.0) / 9.0
            }
        };
        Ok((kind, fraction))
    }
}

/// A [0, 1] grade on the source's own scale.
pub fn to_source_scale(fraction: f64, range: &ScoreRange) -> f64 {
    range.lo() + (range.hi() - range.lo()) * fraction.clamp(0.0, 1.0)
}
