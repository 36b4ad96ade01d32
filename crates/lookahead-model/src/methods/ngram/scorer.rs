//! An n-gram artifact as a [`Scorer`]: hashing and a sparse dot product per prompt, microseconds.

use std::path::Path;

use candle_core::Device;

use super::model::NgramRouter;
use crate::artifact::{load_tensors, ArtifactError, RouterMeta};
use crate::scorer::{ScoreError, Scorer};
use crate::wide::sigmoid;

/// A loaded n-gram artifact.
pub struct NgramScorer {
    pub meta: RouterMeta,
    router: NgramRouter,
}

impl NgramScorer {
    pub fn load(dir: &Path) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let tensors = load_tensors(dir, &Device::Cpu)?;
        let sources = meta.hyper.source_features.then_some(meta.sources.len());
        let tokens = meta.hyper.ngram_tokens;
        let router = NgramRouter::from_tensors(&tensors, meta.models.len(), sources, tokens)
            .map_err(|e| ArtifactError::Unsupported(e.to_string()))?;
        Ok(Self { meta, router })
    }
}

impl Scorer for NgramScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        Ok(prompts
            .iter()
            .map(|p| self.router.logits(p).into_iter().map(sigmoid).collect())
            .collect())
    }

    fn is_trivial(&self) -> bool {
        // Hashing a prompt and summing a few hundred weight rows: cheaper than a thread hop.
        true
    }
}
