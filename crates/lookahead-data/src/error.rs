//! Errors of the data layer. Each names the file (and line) it is about, so a user can fix the input.

use std::path::PathBuf;

/// Why a dataset, manifest or record could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: read failed (truncated or corrupt gzip?): {source}")]
    Read {
        path: PathBuf,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: line longer than the limit of {max_bytes} bytes")]
    LineTooLong {
        path: PathBuf,
        line: u64,
        max_bytes: usize,
    },
    #[error("{path}:{line}: malformed record: {source}")]
    Json {
        path: PathBuf,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}:{line}: invalid record: {reason}")]
    InvalidRecord {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{path}: malformed manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("invalid source name {name:?}: {reason}")]
    SourceName { name: String, reason: &'static str },
    #[error("source {name:?} is not in the manifest {manifest} (known: {known})")]
    UnknownSource {
        name: String,
        manifest: PathBuf,
        known: String,
    },
    #[error(
        "no data file for source {name:?} in {dir} (expected {name}.jsonl.gz or {name}.jsonl)"
    )]
    MissingSourceFile { name: String, dir: PathBuf },
    #[error("record id {id:?} appears twice (sources {first} and {second}); ids must be unique")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("invalid pool: {0}")]
    Pool(String),
    #[error("invalid split: {0}")]
    Split(String),
    #[error("invalid evaluation input: {0}")]
    Eval(String),
    #[error("report: {0}")]
    Report(String),
}

impl DataError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DataError::Io { .. } => "io",
            DataError::Read { .. } => "read",
            DataError::LineTooLong { .. } => "line_too_long",
            DataError::Json { .. } => "json",
            DataError::InvalidRecord { .. } => "invalid_record",
            DataError::Manifest { .. } => "manifest",
            DataError::SourceName { .. } => "source_name",
            DataError::UnknownSource { .. } => "unknown_source",
            DataError::MissingSourceFile { .. } => "missing_source_file",
            DataError::DuplicateId { .. } => "duplicate_id",
            DataError::Pool(_) => "pool",
            DataError::Split(_) => "split",
            DataError::Eval(_) => "eval",
            DataError::Report(_) => "report",
        }
    }
}
