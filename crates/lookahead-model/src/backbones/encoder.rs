//! The encoder families a backbone directory may hold, chosen from `config.json`'s
//! `model_type`: BERT ([`crate::backbones::bert`]: all-MiniLM-L6-v2 and other HF BERT directories) or
//! ModernBERT ([`crate::backbones::modernbert`]). Lookahead-MLM runs on either; the lite, MLC and kNN
//! routers train on cached BERT states and accept BERT only.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbones::bert::{BertConfig, BertEncoder, BertLayer, Embeddings};
use crate::backbones::modernbert::{
    Masks, ModernBertConfig, ModernBertEmbeddings, ModernBertEncoder, ModernBertLayer, Norm,
};
use crate::kernels::attention::additive_mask;
use crate::kernels::ops::Mode;
use crate::nn::mean_pool;

/// Which encoder family; recorded in `router.json` (absent in older artifacts = BERT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    #[default]
    Bert,
    ModernBert,
}

impl std::fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncoderKind::Bert => "bert",
            EncoderKind::ModernBert => "modernbert",
        })
    }
}

impl EncoderKind {
    /// The family of a HF `model_type`; `None` (absent) is BERT, as before this field was read.
    pub fn from_model_type(model_type: Option<&str>) -> Option<Self> {
        match model_type {
            None | Some("bert") => Some(Self::Bert),
            Some("modernbert") => Some(Self::ModernBert),
            Some(_) => None,
        }
    }
}

/// A parsed `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    Bert(BertConfig),
    ModernBert(ModernBertConfig),
}

/// Why `config.json` does not describe a supported encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderConfigError {
    #[error("model_type {0:?} is not supported (bert or modernbert)")]
    UnsupportedModelType(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl EncoderConfig {
    pub fn parse(text: &str) -> std::result::Result<Self, EncoderConfigError> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            model_type: Option<String>,
        }
        let probe: Probe = serde_json::from_str(text)?;
        match EncoderKind::from_model_type(probe.model_type.as_deref()) {
            Some(EncoderKind::Bert) => Ok(Self::Bert(serde_json::from_str(text)?)),
            Some(EncoderKind::ModernBert) => Ok(Self::ModernBert(serde_json::from_str(text)?)),
            None => Err(EncoderConfigError::UnsupportedModelType(
                probe.model_type.unwrap_or_default(),
            )),
        }
    }
}

/// A loaded encoder of either family.
#[derive(Debug, Clone)]
pub enum Encoder {
    Bert(BertEncoder),
    ModernBert(ModernBertEncoder),
}

/// One transformer layer of either family (the trainable upper layers of the MLM router).
#[derive(Debug, Clone)]
pub enum EncoderLayer {
    Bert(BertLayer),
    ModernBert(ModernBertLayer),
}

/// The embeddings of either family (trainable when every layer trains).
#[derive(Debug, Clone)]
pub enum EncoderEmbeddings {
    Bert(Embeddings),
    ModernBert(ModernBertEmbeddings),
}

/// Attention masks of one batch, in the layers' family.
pub enum EncoderMasks {
    Bert(Tensor),
    ModernBert(Masks),
}

impl Encoder {
    pub fn load(vb: VarBuilder, config: &EncoderConfig) -> Result<Self> {
        Ok(match config {
            EncoderConfig::Bert(c) => Self::Bert(BertEncoder::load(vb, c)?),
            EncoderConfig::ModernBert(c) => Self::ModernBert(ModernBertEncoder::load(vb, c)?),
        })
    }

    /// Switches to int8 weights for inference (see [`crate::kernels::quant`]); BERT encoders on the CPU.
    pub fn quantize(&mut self) -> Result<()> {
        match self {
            Encoder::Bert(e) => e.quantize(),
            Encoder::ModernBert(_) => {
                candle_core::bail!("int8 precision supports BERT backbones, not ModernBERT")
            }
        }
    }

    pub fn kind(&self) -> EncoderKind {
        match self {
            Self::Bert(_) => EncoderKind::Bert,
            Self::ModernBert(_) => EncoderKind::ModernBert,
        }
    }

    /// The BERT encoder, if this is one.
    pub fn as_bert(&self) -> Option<&BertEncoder> {
        match self {
            Self::Bert(e) => Some(e),
            Self::ModernBert(_) => None,
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Self::Bert(e) => e.layers.len(),
            Self::ModernBert(e) => e.layers.len(),
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Bert(e) => e.config.hidden_size,
            Self::ModernBert(e) => e.config.hidden_size,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(e) => e.config.vocab_size,
            Self::ModernBert(e) => e.config.vocab_size,
        }
    }

    /// Longest sequence the position embeddings (BERT) or rope tables (ModernBERT) cover.
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Bert(e) => e.config.max_position_embeddings,
            Self::ModernBert(e) => e.config.max_position_embeddings,
        }
    }

    /// Norm epsilon, for heads built on top.
    pub fn eps(&self) -> f64 {
        match self {
            Self::Bert(e) => e.config.layer_norm_eps,
            Self::ModernBert(e) => e.config.eps(),
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Self::Bert(e) => e.device(),
            Self::ModernBert(e) => e.device(),
        }
    }

    /// Word-embedding matrix `[vocab, hidden]`.
    pub fn word_weight(&self) -> &Tensor {
        match self {
            Self::Bert(e) => e.embeddings.word_weight(),
            Self::ModernBert(e) => e.embeddings.word_weight(),
        }
    }

    pub fn masks(&self, keep: &Tensor) -> Result<EncoderMasks> {
        Ok(match self {
            Self::Bert(_) => EncoderMasks::Bert(additive_mask(keep)?),
            Self::ModernBert(e) => EncoderMasks::ModernBert(e.masks(keep)?),
        })
    }

    /// Embeddings then layers `0..upto` (no ModernBERT final norm).
    pub fn forward_lower(
        &self,
        ids: &Tensor,
        keep: &Tensor,
        upto: usize,
        mode: Mode,
    ) -> Result<Tensor> {
        match self {
            Self::Bert(e) => e.forward_lower(ids, keep, upto, mode),
            Self::ModernBert(e) => e.forward_lower(ids, keep, upto, mode),
        }
    }

    /// Mean-pooled last-layer states (after ModernBERT's final norm) over real tokens.
    pub fn sentence_embedding(&self, ids: &Tensor, keep: &Tensor) -> Result<Tensor> {
        match self {
            Self::Bert(e) => e.sentence_embedding(ids, keep),
            Self::ModernBert(e) => mean_pool(&e.forward(ids, keep, Mode::Inference)?, keep),
        }
    }

    /// Layer `index` of this family's architecture, with weights from `vb` (a trainable copy).
    pub fn load_layer(&self, vb: VarBuilder, index: usize) -> Result<EncoderLayer> {
        Ok(match self {
            Self::Bert(e) => EncoderLayer::Bert(BertLayer::load(vb, &e.config)?),
            Self::ModernBert(e) => {
                EncoderLayer::ModernBert(ModernBertLayer::load(vb, &e.config, index, &e.rotary)?)
            }
        })
    }

    /// This family's embeddings, with weights from `vb`.
    pub fn load_embeddings(&self, vb: VarBuilder) -> Result<EncoderEmbeddings> {
        Ok(match self {
            Self::Bert(e) => EncoderEmbeddings::Bert(Embeddings::load(vb, &e.config)?),
            Self::ModernBert(e) => {
                EncoderEmbeddings::ModernBert(ModernBertEmbeddings::load(vb, &e.config)?)
            }
        })
    }

    /// ModernBERT's final norm, with weights from `vb` (`None` for BERT, which has none).
    pub fn load_final_norm(&self, vb: VarBuilder) -> Result<Option<Norm>> {
        match self {
            Self::Bert(_) => Ok(None),
            Self::ModernBert(e) => {
                Norm::load(vb, e.config.hidden_size, e.config.eps(), e.config.norm_bias).map(Some)
            }
        }
    }

    /// Checkpoint name prefixes of layer `index` and of the embeddings (the part after them is
    /// kept when copying into a trainable `VarMap`); each is tried with and without the
    /// checkpoint's optional prefix (`bert.` / `model.`).
    pub fn layer_prefix(&self, index: usize) -> String {
        match self {
            Self::Bert(_) => format!("encoder.layer.{index}."),
            Self::ModernBert(_) => format!("layers.{index}."),
        }
    }

    pub fn checkpoint_prefix(&self) -> &'static str {
        match self {
            Self::Bert(_) => "bert.",
            Self::ModernBert(_) => "model.",
        }
    }

    /// Copies of the checkpoint tensors whose name (prefix stripped) starts with `src`, renamed
    /// to `dst` + the rest. Empty when there is none.
    pub fn copy_prefixed(
        &self,
        tensors: &HashMap<String, Tensor>,
        src: &str,
        dst: &str,
    ) -> Vec<(String, Tensor)> {
        let opt = format!("{}{src}", self.checkpoint_prefix());
        tensors
            .iter()
            .filter_map(|(name, t)| {
                let rest = name.strip_prefix(src).or_else(|| name.strip_prefix(&opt))?;
                Some((format!("{dst}{rest}"), t.clone()))
            })
            .collect()
    }
}

impl EncoderLayer {
    pub fn forward(&self, x: &Tensor, masks: &EncoderMasks, mode: Mode) -> Result<Tensor> {
        match (self, masks) {
            (Self::Bert(l), EncoderMasks::Bert(m)) => l.forward(x, Some(m), mode),
            (Self::ModernBert(l), EncoderMasks::ModernBert(m)) => l.forward(x, m, mode),
            _ => candle_core::bail!("encoder layer and attention masks of different families"),
        }
    }
}

impl EncoderEmbeddings {
    pub fn forward(&self, ids: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            Self::Bert(e) => e.forward(ids, mode),
            Self::ModernBert(e) => e.forward(ids, mode),
        }
    }

    pub fn word_weight(&self) -> &Tensor {
        match self {
            Self::Bert(e) => e.word_weight(),
            Self::ModernBert(e) => e.word_weight(),
        }
    }
}
