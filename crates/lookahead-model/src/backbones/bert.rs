//! A BERT encoder (all-MiniLM-L6-v2 and any Hugging Face BERT directory) whose every op on the
//! training path has a backward pass (see [`crate::kernels::ops`]). Layers can be run as a range, so the
//! lower ones encode once (frozen, cached) and the upper ones train.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::kernels::attention::{self, additive_mask};
use crate::kernels::ops::{self, Mode};
use crate::kernels::quant::Activation;
use crate::nn::{mean_pool, token_embeddings, LayerNorm, Linear};

/// The subset of a Hugging Face `config.json` a BERT encoder needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_string()
}

impl BertConfig {
    /// A tiny configuration for tests (random weights).
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 128,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".to_string(),
        }
    }
}

/// Word + position + token-type embeddings, then layer norm.
#[derive(Debug, Clone)]
pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            word: vb.get((cfg.vocab_size, cfg.hidden_size), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, cfg.hidden_size),
                "position_embeddings.weight",
            )?,
            token_type: vb.get(
                (cfg.type_vocab_size, cfg.hidden_size),
                "token_type_embeddings.weight",
            )?,
            norm: LayerNorm::load(vb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
        })
    }

    /// The word-embedding matrix `[vocab, hidden]` (masked-token heads tie their decoder to it).
    pub fn word_weight(&self) -> &Tensor {
        &self.word
    }

    /// `ids`: `[batch, seq]` u32 token ids (token type 0 everywhere).
    pub fn forward(&self, ids: &Tensor, mode: Mode) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let words = token_embeddings(&self.word, ids)?;
        let pos = self.position.narrow(0, 0, t)?.unsqueeze(0)?;
        let tt = self.token_type.narrow(0, 0, 1)?.unsqueeze(0)?;
        let x = words.broadcast_add(&pos)?.broadcast_add(&tt)?;
        self.norm.forward(&x, mode)
    }
}

/// One post-norm transformer block, BERT style.
#[derive(Debug, Clone)]
pub struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    exact_gelu: bool,
}

impl BertLayer {
    /// Loads `encoder.layer.N`-style weights (`vb` already points at the layer).
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let att = vb.pp("attention");
        Ok(Self {
            query: Linear::load(att.pp("self").pp("query"), h, h)?,
            key: Linear::load(att.pp("self").pp("key"), h, h)?,
            value: Linear::load(att.pp("self").pp("value"), h, h)?,
            attn_out: Linear::load(att.pp("output").pp("dense"), h, h)?,
            attn_norm: LayerNorm::load(att.pp("output").pp("LayerNorm"), h, eps)?,
            intermediate: Linear::load(
                vb.pp("intermediate").pp("dense"),
                h,
                cfg.intermediate_size,
            )?,
            output: Linear::load(vb.pp("output").pp("dense"), cfg.intermediate_size, h)?,
            out_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
            exact_gelu: cfg.hidden_act != "gelu_new" && cfg.hidden_act != "gelu_approximate",
        })
    }

    /// Switches every linear of the block to int8 weights (inference only; CPU).
    pub fn quantize(&mut self) -> Result<()> {
        for linear in [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attn_out,
            &mut self.output,
        ] {
            linear.quantize(Activation::None)?;
        }
        self.intermediate.quantize(if self.exact_gelu {
            Activation::GeluErf
        } else {
            Activation::GeluTanh
        })
    }

    /// `x`: `[batch, seq, hidden]`; `mask`: additive `[batch, 1, 1, seq]` (0 keep, large negative
    /// drop) or `None` when no position is padding.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        self.forward_rows(x, None, mask, mode)
    }

    /// Like [`Self::forward`], but only computes the output rows `rows` (`[r]` u32 positions):
    /// every position is still a key/value, so the selected rows are exactly those of the full
    /// pass. A last layer whose other outputs are unused does a fraction of the work.
    pub fn forward_rows(
        &self,
        x: &Tensor,
        rows: Option<&Tensor>,
        mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let xq = match rows {
            Some(r) => x.index_select(r, 1)?,
            None => x.clone(),
        };
        let r = xq.dim(1)?;
        let (q, k, v) = (
            self.query.forward(&xq)?,
            self.key.forward(x)?,
            self.value.forward(x)?,
        );
        let fused = match mode {
            Mode::Inference => attention::fused(&q, &k, &v, self.heads, mask)?,
            Mode::Train => None,
        };
        let ctx = match fused {
            Some(ctx) => ctx,
            None => {
                let (q, k, v) = (split(q, r)?, split(k, t)?, split(v, t)?);
                let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
                let scores = match mask {
                    Some(m) => scores.broadcast_add(m)?,
                    None => scores,
                };
                let probs = ops::softmax_last_dim(&scores, mode)?;
                probs.matmul(&v)?.transpose(1, 2)?.reshape((b, r, h))?
            }
        };
        let x = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx)? + xq)?, mode)?;
        let inter = self.intermediate.forward(&x)?;
        let inter = match self.intermediate.fused_activation() {
            Some(_) => inter,
            None if self.exact_gelu => inter.gelu_erf()?,
            None => inter.gelu()?,
        };
        self.out_norm
            .forward(&(self.output.forward(&inter)? + x)?, mode)
    }
}

/// The whole encoder: embeddings and every layer.
#[derive(Debug, Clone)]
pub struct BertEncoder {
    pub config: BertConfig,
    pub embeddings: Embeddings,
    pub layers: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        // Some exports prefix every name with `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp("encoder").pp("layer").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: cfg.clone(),
            embeddings,
            layers,
        })
    }

    /// Switches every layer to int8 weights for inference (see [`crate::kernels::quant`]); CPU only.
    pub fn quantize(&mut self) -> Result<()> {
        if !self.device().is_cpu() {
            candle_core::bail!("int8 weights run on the CPU only");
        }
        self.layers.iter_mut().try_for_each(BertLayer::quantize)
    }

    /// Embeddings then layers `0..upto`: `ids`, `keep` are `[batch, seq]`.
    pub fn forward_lower(
        &self,
        ids: &Tensor,
        keep: &Tensor,
        upto: usize,
        mode: Mode,
    ) -> Result<Tensor> {
        let mask = additive_mask(keep)?;
        let mut x = self.embeddings.forward(ids, mode)?;
        for layer in self.layers.iter().take(upto) {
            x = layer.forward(&x, Some(&mask), mode)?;
        }
        Ok(x)
    }

    /// Sentence embedding as sentence-transformers computes it for MiniLM: mean pooling of the
    /// last layer over real tokens (not L2-normalised).
    pub fn sentence_embedding(&self, ids: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let states = self.forward_lower(ids, keep, self.layers.len(), Mode::Inference)?;
        mean_pool(&states, keep)
    }

    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }
}
