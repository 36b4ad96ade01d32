//! An MLM artifact as a [`Scorer`]: every candidate slot fully masked, so one encoder pass per
//! batch scores the whole pool from the prompts alone.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::model::{MlmModel, MlmShape, MlmSpecial};
use super::train::predict;
use crate::artifact::{load_backbone, load_tensors, ArtifactError, BackboneKind, RouterMeta};
use crate::backbones::encoder_dir::Backbone;
use crate::scorer::{ScoreError, Scorer};

/// A loaded MLM artifact: scores prompts (fully masked slots) in one pass per batch.
pub struct MlmScorer {
    pub meta: RouterMeta,
    backbone: Backbone,
    model: MlmModel,
    special: MlmSpecial,
}

impl MlmScorer {
    /// Loads the artifact in `dir` onto `device`, with the backbone in
    /// `backbone_dir` (hash- and family-checked).
    pub fn load(dir: &Path, backbone_dir: &Path, device: &Device) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let backbone = load_backbone(&meta, backbone_dir, device)?;
        let found = BackboneKind::from(backbone.encoder.kind());
        if found != meta.backbone.kind {
            return Err(ArtifactError::BackboneKind {
                expected: meta.backbone.kind,
                found,
            });
        }
        let tensors = load_tensors(dir, device)?;
        Self::from_parts(meta, backbone, tensors)
    }

    /// Builds a scorer from in-memory tensors (right after training).
    pub fn from_parts(
        meta: RouterMeta,
        backbone: Backbone,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self, ArtifactError> {
        let device = backbone.encoder.device().clone();
        let shape = MlmShape {
            models: meta.models.len(),
            slot_tokens: meta.hyper.slot_tokens,
            trainable_layers: meta.hyper.trainable_layers,
        };
        let special = MlmSpecial::from_tokenizer(&backbone.tokenizer, shape.models)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = MlmModel::new(&backbone.encoder, vb, shape)?;
        Ok(Self {
            meta,
            backbone,
            model,
            special,
        })
    }

    /// Encoder passes run so far.
    pub fn passes(&self) -> usize {
        self.model.passes()
    }
}

impl Scorer for MlmScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = prompts
            .iter()
            .map(|p| self.backbone.window_ids(p, self.meta.hyper.prompt_window()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ScoreError::Tokenizer)?;
        for p in &ids {
            self.special
                .check_prompt(p)
                .map_err(|e| ScoreError::Tokenizer(e.to_string()))?;
        }
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let device = self.backbone.encoder.device().clone();
        predict(&self.model, &refs, &self.special, &device)
            .map(|(p, _)| p)
            .map_err(|e| ScoreError::Model(e.to_string()))
    }
}
