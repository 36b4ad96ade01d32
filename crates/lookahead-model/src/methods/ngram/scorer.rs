//! An n-gram artifact as a [`Scorer`]: hashing and a sparse dot product per prompt, microseconds.

use std::path::Path;

use candle_core::Device;

use super::train::PREFIX;
use crate::artifact::{load_tensors, ArtifactError, RouterMeta};
use crate::scorer::{ScoreError, Scorer};
use crate::wide::{sigmoid, WideModel};

/// A loaded n-gram artifact.
pub struct NgramScorer {
    pub meta: RouterMeta,
    model: WideModel,
}

impl NgramScorer {
    pub fn load(dir: &Path) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let tensors = load_tensors(dir, &Device::Cpu)?;
        let model = WideModel::from_tensors(&tensors, PREFIX, meta.models.len())
            .map_err(|e| ArtifactError::Unsupported(e.to_string()))?;
        Ok(Self { meta, model })
    }
}

impl Scorer for NgramScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        Ok(prompts
            .iter()
            .map(|p| {
                let z = self.model.logits(p);
                z.iter().map(|&v| sigmoid(v)).collect()
            })
            .collect())
    }

    fn is_trivial(&self) -> bool {
        // Hashing a prompt and summing a few hundred weight rows: cheaper than a thread hop.
        true
    }
}
