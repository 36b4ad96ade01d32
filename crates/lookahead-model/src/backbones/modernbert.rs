//! A ModernBERT encoder (Hugging Face `model_type: "modernbert"`) whose every op on the training
//! path has a backward pass (see [`crate::kernels::ops`]), layers runnable as a range like [`crate::backbones::bert`].
//!
//! Architecture (HF `modeling_modernbert.py`): token embeddings + LayerNorm; pre-norm layers
//! (layer 0 has no `attn_norm`: the embedding norm already normalised its input) with a fused
//! `Wqkv`, rotary position embeddings and a GeGLU MLP; every `global_attn_every_n_layers`-th
//! layer attends globally (`global_rope_theta`), the others within a sliding window of
//! `local_attention` tokens (`local_rope_theta`); a final LayerNorm. Biases exist only where
//! `attention_bias` / `mlp_bias` / `norm_bias` say so (all false in released checkpoints).

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::kernels::attention::additive_mask;
use crate::kernels::ops::{self, Mode};

/// The subset of a Hugging Face ModernBERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModernBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// HF reads `norm_eps`; older exports (and candle-transformers) name it `layer_norm_eps`.
    /// Two fields, not a serde alias: real configs carry both keys, which an alias rejects.
    #[serde(default)]
    pub norm_eps: Option<f64>,
    #[serde(default)]
    pub layer_norm_eps: Option<f64>,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub classifier_bias: bool,
    #[serde(default = "default_true")]
    pub decoder_bias: bool,
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    #[serde(default = "default_act")]
    pub classifier_activation: String,
    #[serde(default = "default_global_every")]
    pub global_attn_every_n_layers: usize,
    #[serde(default = "default_local")]
    pub local_attention: usize,
    #[serde(default = "default_global_theta")]
    pub global_rope_theta: f64,
    #[serde(default = "default_local_theta")]
    pub local_rope_theta: f64,
}

fn default_max_pos() -> usize {
    8192
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_global_every() -> usize {
    3
}
fn default_local() -> usize {
    128
}
fn default_global_theta() -> f64 {
    160_000.0
}
fn default_local_theta() -> f64 {
    10_000.0
}

impl ModernBertConfig {
    pub fn eps(&self) -> f64 {
        self.norm_eps.or(self.layer_norm_eps).unwrap_or(1e-5)
    }

    /// Whether layer `index` uses the sliding window (HF: `index % every != 0`).
    pub fn is_local(&self, index: usize) -> bool {
        self.global_attn_every_n_layers > 0
            && !index.is_multiple_of(self.global_attn_every_n_layers)
    }

    /// A tiny configuration for tests (random weights): 4 layers, global at 0 and 3, a window
    /// of 8 tokens so short test sequences already need it.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            intermediate_size: 48,
            max_position_embeddings: 128,
            norm_eps: Some(1e-5),
            layer_norm_eps: None,
            norm_bias: false,
            attention_bias: false,
            mlp_bias: false,
            classifier_bias: false,
            decoder_bias: true,
            hidden_activation: "gelu".into(),
            classifier_activation: "gelu".into(),
            global_attn_every_n_layers: 3,
            local_attention: 8,
            global_rope_theta: 160_000.0,
            local_rope_theta: 10_000.0,
        }
    }
}

/// The activations HF names in `hidden_activation` / `classifier_activation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact (erf) form.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Silu,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_approximate" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            other => candle_core::bail!("unsupported activation {other:?}"),
        })
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluErf => x.gelu_erf(),
            Self::GeluTanh => x.gelu(),
            Self::Silu => x.silu(),
            Self::Relu => x.relu(),
        }
    }
}

/// `y = x W^T (+ b)` for inputs of any rank; the bias is optional (ModernBERT has none).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: if bias {
                Some(vb.get(out_dim, "bias")?)
            } else {
                None
            },
        })
    }

    /// Created (and registered) with a fresh initialisation when `vb` lacks it.
    pub fn init(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let stdev = (1.0 / in_dim as f64).sqrt();
        Ok(Self {
            weight: vb.get_with_hints(
                (out_dim, in_dim),
                "weight",
                candle_nn::Init::Randn { mean: 0., stdev },
            )?,
            bias: if bias {
                Some(vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.))?)
            } else {
                None
            },
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.t()?;
        let y = match x.dims() {
            [b, t, h] => x.reshape((b * t, *h))?.matmul(&w)?.reshape((*b, *t, ()))?,
            _ => x.matmul(&w)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// LayerNorm whose bias is optional (`norm_bias: false`).
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Zeros for the fused kernel, which always adds a bias; a constant, so no gradient.
    zero: Tensor,
    eps: f64,
}

impl Norm {
    fn build(weight: Tensor, bias: Option<Tensor>, eps: f64) -> Result<Self> {
        Ok(Self {
            zero: weight.detach().zeros_like()?,
            weight,
            bias,
            eps,
        })
    }

    pub fn load(vb: VarBuilder, dim: usize, eps: f64, bias: bool) -> Result<Self> {
        let b = if bias {
            Some(vb.get(dim, "bias")?)
        } else {
            None
        };
        Self::build(vb.get(dim, "weight")?, b, eps)
    }

    pub fn init(vb: VarBuilder, dim: usize, eps: f64, bias: bool) -> Result<Self> {
        let b = if bias {
            Some(vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.))?)
        } else {
            None
        };
        let w = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.))?;
        Self::build(w, b, eps)
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let b = self.bias.as_ref().unwrap_or(&self.zero);
        ops::layer_norm(x, &self.weight, b, self.eps, mode)
    }
}

/// `cos` / `sin` tables `[max_positions, head_dim / 2]` for one rope theta.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub fn new(theta: f64, head_dim: usize, positions: usize, device: &Device) -> Result<Self> {
        let inv: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| (1.0 / theta.powf(i as f64 / head_dim as f64)) as f32)
            .collect();
        let n = inv.len();
        let inv = Tensor::from_vec(inv, (1, n), device)?;
        let t = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }
}

/// The global and local rope tables, shared by every layer.
#[derive(Debug, Clone)]
pub struct RotaryPair {
    global: Rotary,
    local: Rotary,
}

impl RotaryPair {
    pub fn new(cfg: &ModernBertConfig, device: &Device) -> Result<Self> {
        let hd = cfg.hidden_size / cfg.num_attention_heads;
        let n = cfg.max_position_embeddings;
        Ok(Self {
            global: Rotary::new(cfg.global_rope_theta, hd, n, device)?,
            local: Rotary::new(cfg.local_rope_theta, hd, n, device)?,
        })
    }
}

/// Additive attention masks of one batch: padding `[b, 1, 1, t]`, and padding plus the sliding
/// window `[b, 1, t, t]` for local layers.
#[derive(Debug, Clone)]
pub struct Masks {
    global: Tensor,
    local: Tensor,
}

impl Masks {
    /// `keep`: `[batch, seq]` 0/1. `window`: HF's `local_attention` (keys at distance
    /// `<= window / 2` are visible). Finite (-1e4) rather than -inf, so a padding row whose
    /// window holds only padding stays finite; real rows see exact zeros either way.
    pub fn new(keep: &Tensor, window: usize) -> Result<Self> {
        let t = keep.dim(1)?;
        let half = window / 2;
        let band: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if i.abs_diff(j) > half { -1e4 } else { 0. }))
            .collect();
        let band = Tensor::from_vec(band, (1, 1, t, t), keep.device())?;
        let global = additive_mask(keep)?;
        Ok(Self {
            local: global.broadcast_add(&band)?,
            global,
        })
    }
}

/// Token embeddings, then LayerNorm.
#[derive(Debug, Clone)]
pub struct ModernBertEmbeddings {
    tok: Tensor,
    norm: Norm,
}

impl ModernBertEmbeddings {
    /// `vb` points at `embeddings` (`tok_embeddings.weight`, `norm.weight`).
    pub fn load(vb: VarBuilder, cfg: &ModernBertConfig) -> Result<Self> {
        Ok(Self {
            tok: vb.get((cfg.vocab_size, cfg.hidden_size), "tok_embeddings.weight")?,
            norm: Norm::load(vb.pp("norm"), cfg.hidden_size, cfg.eps(), cfg.norm_bias)?,
        })
    }

    /// The token-embedding matrix `[vocab, hidden]` (the MLM decoder is tied to it).
    pub fn word_weight(&self) -> &Tensor {
        &self.tok
    }

    pub fn forward(&self, ids: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = crate::nn::token_embeddings(&self.tok, ids)?;
        self.norm.forward(&x, mode)
    }
}

/// One pre-norm ModernBERT layer.
#[derive(Debug, Clone)]
pub struct ModernBertLayer {
    /// `None` in layer 0 (HF: `nn.Identity`).
    attn_norm: Option<Norm>,
    wqkv: Linear,
    wo: Linear,
    mlp_norm: Norm,
    wi: Linear,
    mlp_wo: Linear,
    rotary: Rotary,
    local: bool,
    heads: usize,
    act: Activation,
}

impl ModernBertLayer {
    /// Loads the weights of layer `index` (`vb` already points at it: `layers.N`); `index`
    /// decides global/local attention and whether `attn_norm` exists.
    pub fn load(
        vb: VarBuilder,
        cfg: &ModernBertConfig,
        index: usize,
        rotary: &RotaryPair,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.eps();
        let local = cfg.is_local(index);
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            attn_norm: if index == 0 {
                None
            } else {
                Some(Norm::load(vb.pp("attn_norm"), h, eps, cfg.norm_bias)?)
            },
            wqkv: Linear::load(attn.pp("Wqkv"), h, 3 * h, cfg.attention_bias)?,
            wo: Linear::load(attn.pp("Wo"), h, h, cfg.attention_bias)?,
            mlp_norm: Norm::load(vb.pp("mlp_norm"), h, eps, cfg.norm_bias)?,
            wi: Linear::load(mlp.pp("Wi"), h, 2 * cfg.intermediate_size, cfg.mlp_bias)?,
            mlp_wo: Linear::load(mlp.pp("Wo"), cfg.intermediate_size, h, cfg.mlp_bias)?,
            rotary: if local {
                rotary.local.clone()
            } else {
                rotary.global.clone()
            },
            local,
            heads: cfg.num_attention_heads,
            act: Activation::parse(&cfg.hidden_activation)?,
        })
    }

    /// `x`: `[batch, seq, hidden]`.
    pub fn forward(&self, x: &Tensor, masks: &Masks, mode: Mode) -> Result<Tensor> {
        let normed = match &self.attn_norm {
            Some(n) => n.forward(x, mode)?,
            None => x.clone(),
        };
        let x = (x + self.attention(&normed, masks, mode)?)?;
        let m = self.mlp_norm.forward(&x, mode)?;
        let gated = self.wi.forward(&m)?.chunk(2, D::Minus1)?;
        let (input, gate) = match gated.as_slice() {
            [i, g] => (i, g),
            _ => candle_core::bail!("GeGLU: Wi output did not split in two"),
        };
        let y = (self.act.apply(input)? * gate)?;
        x + self.mlp_wo.forward(&y)?
    }

    fn attention(&self, x: &Tensor, masks: &Masks, mode: Mode) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.heads;
        // [b, t, 3, heads, hd] -> [3, b, heads, t, hd]
        let qkv = self
            .wqkv
            .forward(x)?
            .reshape((b, t, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = ops::rope(&qkv.get(0)?, &self.rotary.cos, &self.rotary.sin, mode)?;
        let k = ops::rope(&qkv.get(1)?, &self.rotary.cos, &self.rotary.sin, mode)?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = ((q * (hd as f64).powf(-0.5))?.matmul(&k.t()?.contiguous()?))?;
        let mask = if self.local {
            &masks.local
        } else {
            &masks.global
        };
        let probs = ops::softmax_last_dim(&scores.broadcast_add(mask)?, mode)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        self.wo.forward(&ctx)
    }
}

/// The whole encoder: embeddings, every layer, the final norm.
#[derive(Debug, Clone)]
pub struct ModernBertEncoder {
    pub config: ModernBertConfig,
    pub embeddings: ModernBertEmbeddings,
    pub layers: Vec<ModernBertLayer>,
    pub final_norm: Norm,
    pub rotary: RotaryPair,
}

impl ModernBertEncoder {
    /// Name of the token embeddings, with the `model.` prefix of HF `ModernBertForMaskedLM`
    /// checkpoints; a bare `ModernBertModel` export has no prefix.
    pub const PREFIXED_PROBE: &'static str = "model.embeddings.tok_embeddings.weight";

    /// `vb` points at the checkpoint root; a `model.` prefix is detected.
    pub fn load(vb: VarBuilder, cfg: &ModernBertConfig) -> Result<Self> {
        let vb = if vb.contains_tensor(Self::PREFIXED_PROBE) {
            vb.pp("model")
        } else {
            vb
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let rotary = RotaryPair::new(cfg, vb.device())?;
        let embeddings = ModernBertEmbeddings::load(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ModernBertLayer::load(vb.pp("layers").pp(i), cfg, i, &rotary))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = Norm::load(
            vb.pp("final_norm"),
            cfg.hidden_size,
            cfg.eps(),
            cfg.norm_bias,
        )?;
        Ok(Self {
            config: cfg.clone(),
            embeddings,
            layers,
            final_norm,
            rotary,
        })
    }

    pub fn masks(&self, keep: &Tensor) -> Result<Masks> {
        Masks::new(keep, self.config.local_attention)
    }

    /// Embeddings then layers `0..upto` (no final norm): `ids`, `keep` are `[batch, seq]`.
    pub fn forward_lower(
        &self,
        ids: &Tensor,
        keep: &Tensor,
        upto: usize,
        mode: Mode,
    ) -> Result<Tensor> {
        let masks = self.masks(keep)?;
        let mut x = self.embeddings.forward(ids, mode)?;
        for layer in self.layers.iter().take(upto) {
            x = layer.forward(&x, &masks, mode)?;
        }
        Ok(x)
    }

    /// Every layer and the final norm: HF's `last_hidden_state`.
    pub fn forward(&self, ids: &Tensor, keep: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = self.forward_lower(ids, keep, self.layers.len(), mode)?;
        self.final_norm.forward(&x, mode)
    }

    pub fn device(&self) -> &Device {
        self.embeddings.tok.device()
    }
}
