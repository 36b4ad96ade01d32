//! A CLM artifact as a [`Scorer`]: per prompt, one prefill and one batched `<Model_t>` step.
//! Runs on the CPU.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::model::{ClmModel, ClmShape};
use super::train::{encode, special};
use crate::artifact::{load_tensors, ArtifactError, RouterMeta};
use crate::backbones::gguf::{default_decoder_dir, gguf_path, Decoder};
use crate::scorer::{ScoreError, Scorer};

/// A loaded CLM artifact: per prompt, one prefill and one batched `<Model_t>` step.
pub struct ClmScorer {
    pub meta: RouterMeta,
    decoder: Decoder,
    model: ClmModel,
}

impl ClmScorer {
    /// `decoder_dir`: a directory (or file) with the GGUF decoder; when it holds none (e.g. the
    /// BERT backbone directory every other router uses), [`default_decoder_dir`] is used.
    pub fn load(dir: &Path, decoder_dir: &Path) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let device = Device::Cpu;
        let ddir = if gguf_path(decoder_dir).is_ok() {
            decoder_dir.to_path_buf()
        } else {
            default_decoder_dir()
        };
        let decoder = Decoder::load(&ddir, &device)?;
        if decoder.hash != meta.backbone.sha256 {
            return Err(ArtifactError::BackboneMismatch {
                expected: meta.backbone.sha256.clone(),
                found: decoder.hash.clone(),
                dir: ddir,
            });
        }
        let tensors = load_tensors(dir, &device)?;
        let shape = ClmShape {
            models: meta.models.len(),
            response_tokens: meta.hyper.slot_tokens,
            trainable_layers: meta.hyper.trainable_layers,
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = ClmModel::new(&decoder.llama, vb, shape, special(&decoder))?;
        Ok(Self {
            meta,
            decoder,
            model,
        })
    }
}

impl Scorer for ClmScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        prompts
            .iter()
            .map(|p| {
                let ids = encode(&self.decoder, p, self.meta.hyper.max_prompt_tokens)
                    .map_err(ScoreError::Tokenizer)?;
                if ids.is_empty() {
                    return Err(ScoreError::Input("empty prompt".into()));
                }
                self.model
                    .score_cached(&ids)
                    .and_then(|l| candle_nn::ops::sigmoid(&l)?.to_vec1::<f32>())
                    .map_err(|e| ScoreError::Model(e.to_string()))
            })
            .collect()
    }
}
