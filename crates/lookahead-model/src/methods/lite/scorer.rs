//! A lite or MLC artifact as a [`Scorer`]: the backbone's frozen lower layers, then the trained
//! upper layers with every candidate slot fully masked, so prompts alone are scored.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::model::{UpperKind, UpperModel, UpperShape};
use crate::artifact::{load_backbone, load_tensors, ArtifactError, Method, RouterMeta};
use crate::backbones::encoder_dir::Backbone;
use crate::kernels::ops::Mode;
use crate::methods::ngram::model::PREFIX as WIDE_PREFIX;
use crate::nn::mean_pool;
use crate::scorer::{ScoreError, Scorer};
use crate::wide::WideModel;

/// A loaded lite or MLC artifact: backbone + trained upper layers.
pub struct LiteScorer {
    pub meta: RouterMeta,
    backbone: Backbone,
    upper: UpperModel,
    /// The wide n-gram head, when the artifact has one (`hyper.wide`).
    wide: Option<WideModel>,
}

impl LiteScorer {
    /// Loads the artifact in `dir` onto `device`, with the backbone in
    /// `backbone_dir` (hash-checked).
    pub fn load(dir: &Path, backbone_dir: &Path, device: &Device) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let backbone = load_backbone(&meta, backbone_dir, device)?;
        let tensors = load_tensors(dir, device)?;
        Self::from_parts(meta, backbone, tensors)
    }

    /// Builds a scorer from in-memory tensors (right after training).
    pub fn from_parts(
        meta: RouterMeta,
        backbone: Backbone,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self, ArtifactError> {
        let hp = &meta.hyper;
        // Lite and MLC run on BERT states (the state cache, `UpperModel`'s BERT layers).
        let bert = backbone.bert("a lite/MLC/kNN artifact")?;
        let shape = UpperShape {
            kind: match meta.method {
                Method::Lite => UpperKind::Lite,
                Method::Mlc => UpperKind::Mlc,
                other => {
                    return Err(ArtifactError::Unsupported(format!(
                        "a {other} artifact does not load as a lite/MLC scorer"
                    )))
                }
            },
            design: hp.slot_design,
            frozen_layers: hp.frozen_layers,
            trainable_layers: hp.trainable_layers,
            slot_tokens: hp.slot_tokens,
            models: meta.models.len(),
        };
        let device = backbone.encoder.device().clone();
        let wide = hp
            .wide
            .then(|| {
                WideModel::from_tensors(&tensors, WIDE_PREFIX, meta.models.len(), hp.ngram_tokens)
            })
            .transpose()
            .map_err(|e| ArtifactError::Unsupported(e.to_string()))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let upper = UpperModel::new(vb, &bert.config, shape)?;
        Ok(Self {
            meta,
            backbone,
            upper,
            wide,
        })
    }

    fn score(&self, prompts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = self
            .backbone
            .batch_window(prompts, self.meta.hyper.prompt_window())
            .map_err(candle_core::Error::Msg)?;
        let states = self.backbone.encoder.forward_lower(
            &batch.ids,
            &batch.keep,
            self.meta.hyper.frozen_layers,
            Mode::Inference,
        )?;
        let out = self
            .upper
            .forward(&states, &batch.keep, None, Mode::Inference)?;
        let logits = match &self.wide {
            Some(wide) => {
                let rows: Vec<f32> = prompts.iter().flat_map(|p| wide.logits(p)).collect();
                let rows = Tensor::from_vec(rows, out.logits.shape(), out.logits.device())?;
                (out.logits + rows)?
            }
            None => out.logits,
        };
        candle_nn::ops::sigmoid(&logits)?.to_vec2()
    }

    /// Switches the encoder and the trained upper layers to int8 weights for inference.
    pub fn quantize(&mut self) -> Result<(), ArtifactError> {
        if !self.backbone.encoder.device().is_cpu() {
            return Err(ArtifactError::Unsupported(
                "int8 precision runs on the CPU only".into(),
            ));
        }
        self.backbone.encoder.quantize()?;
        self.upper.quantize()?;
        Ok(())
    }

    /// Pooled sentence embedding (all backbone layers), for diagnostics.
    pub fn embed(&self, prompts: &[&str]) -> candle_core::Result<Tensor> {
        let batch = self
            .backbone
            .batch_window(prompts, self.meta.hyper.prompt_window())
            .map_err(candle_core::Error::Msg)?;
        let states = self.backbone.encoder.forward_lower(
            &batch.ids,
            &batch.keep,
            self.backbone.encoder.num_layers(),
            Mode::Inference,
        )?;
        mean_pool(&states, &batch.keep)
    }
}

impl Scorer for LiteScorer {
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
