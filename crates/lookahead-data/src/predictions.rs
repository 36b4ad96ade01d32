//! Per-record predictions of one evaluation run (`lookahead eval --predictions-out FILE`): JSON
//! Lines, one object per judged record,
//! `{"id", "source", "fold"?, "predicted"?: {MODEL: score}, "decision": MODEL, "scaled": {MODEL: 0–100}}`
//! (`fold` under cross-validation, `predicted` when the router has predictions). Another run reads
//! it back to compare routers record by record ([`matched_scores`], `lookahead eval --versus`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::metrics::EvalSet;
use crate::DataError;

/// One line of a predictions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionLine {
    pub id: String,
    pub source: String,
    /// The fold that held the record out (cross-validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<usize>,
    /// The router's predicted score of each model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<BTreeMap<String, f64>>,
    /// The model the router chose.
    pub decision: String,
    /// Each model's scaled (0–100) score on the record.
    pub scaled: BTreeMap<String, f64>,
}

impl PredictionLine {
    /// The scaled score of the chosen model.
    pub fn score(&self) -> Option<f64> {
        self.scaled.get(&self.decision).copied()
    }
}

/// The lines of `set`'s records: `decisions` (and `predictions` rows, `folds`) in set order.
pub fn prediction_lines(
    set: &EvalSet,
    decisions: &[usize],
    predictions: Option<&[Vec<f64>]>,
    folds: Option<&[usize]>,
) -> Result<Vec<PredictionLine>, DataError> {
    let n = set.len();
    if decisions.len() != n
        || predictions.is_some_and(|p| p.len() != n)
        || folds.is_some_and(|f| f.len() != n)
    {
        return Err(DataError::Eval(format!(
            "predictions file: decisions, prediction rows and folds must each cover the {n} records"
        )));
    }
    let models = set.models();
    let by_model = |row: &[f64]| -> BTreeMap<String, f64> {
        models.iter().cloned().zip(row.iter().copied()).collect()
    };
    set.items()
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let decision = models.get(decisions[i]).ok_or_else(|| {
                DataError::Eval(format!("decision {} out of range", decisions[i]))
            })?;
            Ok(PredictionLine {
                id: it.id.clone(),
                source: set.sources()[it.source].clone(),
                fold: folds.map(|f| f[i]),
                predicted: predictions.map(|p| by_model(&p[i])),
                decision: decision.clone(),
                scaled: by_model(&it.scaled),
            })
        })
        .collect()
}

/// Writes `lines` as JSON Lines to `path`.
pub fn write_predictions(path: &Path, lines: &[PredictionLine]) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for line in lines {
        let json = serde_json::to_string(line).map_err(|e| io(e.into()))?;
        writeln!(out, "{json}").map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Reads a predictions file written by [`write_predictions`].
pub fn read_predictions(path: &Path) -> Result<Vec<PredictionLine>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = n as u64 + 1;
        let line = line.map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            line: line_no,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(&line).map_err(|source| DataError::Json {
            path: path.to_path_buf(),
            line: line_no,
            source,
        })?;
        lines.push(parsed);
    }
    Ok(lines)
}

/// The other run's score on each record of `set` (its chosen model's scaled score), matched by
/// record id. Both runs must cover exactly the same records.
pub fn matched_scores(
    set: &EvalSet,
    lines: &[PredictionLine],
    path: &Path,
) -> Result<Vec<f64>, DataError> {
    let mismatch = |reason: String| DataError::Eval(format!("{}: {reason}", path.display()));
    let mut by_id: HashMap<&str, &PredictionLine> = HashMap::with_capacity(lines.len());
    for line in lines {
        if by_id.insert(line.id.as_str(), line).is_some() {
            return Err(mismatch(format!("record id {:?} appears twice", line.id)));
        }
    }
    let missing: Vec<&str> = set
        .items()
        .iter()
        .map(|it| it.id.as_str())
        .filter(|id| !by_id.contains_key(id))
        .collect();
    let extra = lines.len() + missing.len() - set.len();
    if !missing.is_empty() || extra > 0 {
        let first = match missing.as_slice() {
            [] => String::new(),
            some => format!(" (first: {})", some[..some.len().min(3)].join(", ")),
        };
        return Err(mismatch(format!(
            "record ids do not match: {} of the {} records evaluated here are not in the file{first}, \
             and {extra} of the file's {} records are not evaluated here. Compare runs over the \
             same records (same --sources, --split / --folds and --split-salt)",
            missing.len(),
            set.len(),
            lines.len()
        )));
    }
    set.items()
        .iter()
        .map(|it| {
            let line = by_id.get(it.id.as_str());
            line.and_then(|l| l.score()).ok_or_else(|| {
                mismatch(format!(
                    "record {}: its decision has no scaled score",
                    it.id
                ))
            })
        })
        .collect()
}
