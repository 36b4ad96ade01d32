//! How often an artifact's int8 scorer decides as its f32 one: what `lookahead train` records
//! and `auto` precision ([`crate::precision`]) reads.

use std::path::{Path, PathBuf};

use crate::artifact::{ArtifactError, RouterMeta};
use crate::kernels::quant::Precision;
use crate::load::{load_scorer, ScorerOptions};
use crate::precision::has_int8;
use crate::scorer::ScoreError;
use crate::select::select;

/// Prompts per scorer call while measuring.
const BATCH: usize = 64;

/// Why the agreement could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum AgreementError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("scoring the validation prompts: {0}")]
    Score(#[from] ScoreError),
}

/// The share of `prompts` on which the artifact in `dir` picks the same model at int8 as at f32
/// (the int8 kernels give the same integers on every CPU, so this holds wherever it serves);
/// `None` for artifacts without an int8 form or without prompts.
pub fn measure_int8_agreement(
    dir: &Path,
    backbone: Option<PathBuf>,
    prompts: &[&str],
) -> Result<Option<f64>, AgreementError> {
    let meta = RouterMeta::read(dir)?;
    if !has_int8(&meta) || prompts.is_empty() {
        return Ok(None);
    }
    let at = |precision| ScorerOptions {
        backbone: backbone.clone(),
        precision,
        ..ScorerOptions::default()
    };
    let f32 = load_scorer(dir, &at(Precision::F32))?;
    let int8 = load_scorer(dir, &at(Precision::Int8))?;
    let mut same = 0usize;
    for chunk in prompts.chunks(BATCH) {
        let a = f32.score_batch(chunk)?;
        let b = int8.score_batch(chunk)?;
        same += a
            .iter()
            .zip(&b)
            .filter(|(x, y)| select(x, None, 0.0) == select(y, None, 0.0))
            .count();
    }
    Ok(Some(same as f64 / prompts.len() as f64))
}
