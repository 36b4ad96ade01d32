//! A kNN artifact as a [`Scorer`]: the backbone's pooled sentence embedding of each prompt, then
//! the mean scores of its nearest training prompts. Runs on the CPU.

use std::path::Path;

use candle_core::Device;

use super::model::KnnIndex;
use crate::artifact::{load_backbone, load_tensors, ArtifactError, RouterMeta};
use crate::backbones::encoder_dir::Backbone;
use crate::scorer::{ScoreError, Scorer};

/// A loaded kNN artifact.
pub struct KnnScorer {
    pub meta: RouterMeta,
    backbone: Backbone,
    index: KnnIndex,
}

impl KnnScorer {
    /// Loads the artifact in `dir` with the backbone in `backbone_dir` (hash-checked).
    pub fn load(dir: &Path, backbone_dir: &Path) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let device = Device::Cpu;
        let backbone = load_backbone(&meta, backbone_dir, &device)?;
        // The embeddings come from the BERT backbone the index was built on.
        backbone.bert("a lite/MLC/kNN artifact")?;
        let tensors = load_tensors(dir, &device)?;
        let get = |name: &str| {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("router.safetensors lacks {name}")))
        };
        let index = KnnIndex::new(
            &get("knn.embeddings")?,
            get("knn.scores")?,
            meta.hyper.knn_k,
        )?;
        Ok(Self {
            meta,
            backbone,
            index,
        })
    }

    /// Switches the encoder to int8 weights for inference.
    pub fn quantize(&mut self) -> Result<(), ArtifactError> {
        self.backbone.encoder.quantize()?;
        Ok(())
    }

    fn score(&self, prompts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = self
            .backbone
            .batch_window(prompts, self.meta.hyper.prompt_window())
            .map_err(candle_core::Error::Msg)?;
        let emb = self
            .backbone
            .encoder
            .sentence_embedding(&batch.ids, &batch.keep)?;
        self.index.predict(&emb)
    }
}

impl Scorer for KnnScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        self.score(prompts)
            .map_err(|e| ScoreError::Model(e.to_string()))
    }
}
