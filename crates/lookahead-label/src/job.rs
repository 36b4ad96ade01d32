//! What a labelling run is asked to do ([`LabelJob`]), what it did ([`LabelReport`]) and why it
//! stopped ([`LabelError`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lookahead_api::RouterConfig;
use lookahead_data::DataError;

use crate::grade::code::SandboxLimits;
use crate::grade::GradersConfig;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("dataset: {0}")]
    Data(#[from] DataError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("member {0:?} is not in the pool config")]
    UnknownMember(String),
    #[error("--concurrency must be at least 1")]
    Concurrency,
    /// A member's `apiKeyFile` cannot be read or is empty (the key itself is never shown).
    #[error("member {member:?}: API key file {path}: {reason}")]
    MemberKey {
        member: String,
        path: PathBuf,
        reason: String,
    },
    #[error("member TLS: {0}")]
    Tls(#[from] lookahead_client::tls::TlsError),
}

/// What to label, and how.
#[derive(Debug, Clone)]
pub struct LabelJob {
    pub pool: RouterConfig,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Pool member names to collect responses from.
    pub members: Vec<String>,
    pub sources: Option<Vec<String>>,
    /// At most this many prompts per source.
    pub limit: Option<usize>,
    pub concurrency: usize,
    /// Requests per second across all members; `None` is unlimited.
    pub rate_per_sec: Option<f64>,
    pub timeout: Duration,
    pub max_tokens: u32,
    /// Attempts per member call (transient failures only).
    pub attempts: u32,
    pub graders: GradersConfig,
    pub sandbox: SandboxLimits,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct LabelReport {
    /// (record, member) pairs asked in this run.
    pub asked: usize,
    /// Of those, graded.
    pub graded: usize,
    /// Of those, failed (call or grading); retried by the next run.
    pub failed: usize,
    /// Pairs skipped: the record already had the member's response, or the journal had it.
    pub already_labelled: usize,
    /// Graded responses per member merged into the output (this and earlier runs).
    pub merged: BTreeMap<String, usize>,
    /// Prompts (records) with at least one newly merged response.
    pub prompts_labelled: usize,
    pub files: Vec<PathBuf>,
}
