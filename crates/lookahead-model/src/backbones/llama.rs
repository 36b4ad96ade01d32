//! A Llama-family decoder (SmolLM2) whose every op on the training path has a backward pass:
//! RMS norm from [`crate::kernels::ops`], rotary embeddings and attention from primitive tensor ops, grouped
//! query attention, SiLU-gated MLP. A [`KvCache`] lets inference prefill a prompt once and step
//! from (cheap, shared-storage) clones of it.
//!
//! Tensor names are GGUF's (`token_embd.weight`, `blk.{i}.attn_q.weight`, ...). Rotary embeddings
//! are the interleaved (GPT-J) form: GGUF exporters permute the q/k rows of Hugging Face weights
//! for it.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::kernels::ops::{self, Mode};

/// Shape of a Llama decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub max_positions: usize,
}

impl LlamaConfig {
    /// A tiny configuration for tests (random weights).
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            intermediate_size: 48,
            layers: 3,
            heads: 4,
            kv_heads: 2,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_positions: 128,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.heads
    }
}

/// `x W^T` without bias, any input rank.
#[derive(Debug, Clone)]
struct Proj(Tensor);

impl Proj {
    fn load(vb: &VarBuilder, name: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        Ok(Self(vb.get((out_dim, in_dim), name)?))
    }
}

impl Module for Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.0.t()?;
        match x.dims() {
            [b, t, h] => x.reshape((b * t, *h))?.matmul(&w)?.reshape((*b, *t, ())),
            _ => x.matmul(&w),
        }
    }
}

/// Rotary tables `cos`, `sin`: `[positions, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub fn new(cfg: &LlamaConfig, device: &Device) -> Result<Self> {
        let d = cfg.head_dim();
        let inv: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, d / 2), device)?;
        let pos = Tensor::arange(0u32, cfg.max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((cfg.max_positions, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// Interleaved rotation of `x` `[b, h, t, d]` at positions `offset..offset + t`.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, offset, t)?.reshape((1, 1, t, d / 2))?;
        let sin = self.sin.narrow(0, offset, t)?.reshape((1, 1, t, d / 2))?;
        let pairs = x.reshape((b, h, t, d / 2, 2))?;
        let x0 = pairs.narrow(4, 0, 1)?.squeeze(4)?;
        let x1 = pairs.narrow(4, 1, 1)?.squeeze(4)?;
        let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        Tensor::stack(&[r0, r1], 4)?.reshape((b, h, t, d))
    }
}

/// Keys and values of every layer for the positions seen so far (`[b, kv_heads, t, d]`).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
        }
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Layer `i`'s slot.
    pub fn slot(&mut self, i: usize) -> Option<&mut Option<(Tensor, Tensor)>> {
        self.layers.get_mut(i)
    }

    /// The cache repeated `n` times along the batch (one copy per candidate).
    pub fn repeat(&self, n: usize) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|(k, v)| Ok((k.repeat((n, 1, 1, 1))?, v.repeat((n, 1, 1, 1))?)))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

/// One pre-norm decoder block.
#[derive(Debug, Clone)]
pub struct LlamaBlock {
    attn_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
    heads: usize,
    kv_heads: usize,
    eps: f64,
}

impl LlamaBlock {
    /// `vb` points at `blk.{i}`.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.kv_heads * d;
        let i = cfg.intermediate_size;
        Ok(Self {
            attn_norm: vb.get(h, "attn_norm.weight")?,
            q: Proj::load(&vb, "attn_q.weight", h, h)?,
            k: Proj::load(&vb, "attn_k.weight", kv, h)?,
            v: Proj::load(&vb, "attn_v.weight", kv, h)?,
            o: Proj::load(&vb, "attn_output.weight", h, h)?,
            ffn_norm: vb.get(h, "ffn_norm.weight")?,
            gate: Proj::load(&vb, "ffn_gate.weight", i, h)?,
            up: Proj::load(&vb, "ffn_up.weight", i, h)?,
            down: Proj::load(&vb, "ffn_down.weight", h, i)?,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            eps: cfg.rms_eps,
        })
    }

    /// `x` `[b, t, h]` at positions `offset..offset + t` (`offset` = cached positions); appends
    /// this step's keys/values to `cache` when given.
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        offset: usize,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let d = h / self.heads;
        let n = ops::rms_norm(x, &self.attn_norm, self.eps, mode)?;
        let heads = |y: Tensor, nh: usize| -> Result<Tensor> {
            y.reshape((b, t, nh, d))?.transpose(1, 2)?.contiguous()
        };
        let q = rotary.apply(&heads(self.q.forward(&n)?, self.heads)?, offset)?;
        let mut k = rotary.apply(&heads(self.k.forward(&n)?, self.kv_heads)?, offset)?;
        let mut v = heads(self.v.forward(&n)?, self.kv_heads)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let total = k.dim(2)?;
        let rep = self.heads / self.kv_heads;
        let expand = |y: &Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(y.clone());
            }
            y.unsqueeze(2)?
                .broadcast_as((b, self.kv_heads, rep, total, d))?
                .reshape((b, self.heads, total, d))
        };
        let (k, v) = (expand(&k)?, expand(&v)?);
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        let scores = scores.broadcast_add(&causal_mask(t, offset, x.device())?)?;
        let probs = ops::softmax_last_dim(&scores, mode)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        let x = (x + self.o.forward(&ctx)?)?;
        let n = ops::rms_norm(&x, &self.ffn_norm, self.eps, mode)?;
        let mlp = self
            .down
            .forward(&(candle_nn::ops::silu(&self.gate.forward(&n)?)? * self.up.forward(&n)?)?)?;
        x + mlp
    }
}

/// Additive `[1, 1, t, offset + t]` mask: query `i` sees keys `0..=offset + i`.
fn causal_mask(t: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + t;
    let v: Vec<f32> = (0..t)
        .flat_map(|i| (0..total).map(move |j| if j <= offset + i { 0.0 } else { -1e9 }))
        .collect();
    Tensor::from_vec(v, (1, 1, t, total), device)
}

/// Embeddings, blocks and final norm of a Llama decoder (the LM head is tied to the embeddings).
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub embeddings: Tensor,
    pub blocks: Vec<LlamaBlock>,
    pub norm: Tensor,
    pub rotary: Rotary,
}

impl Llama {
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        Ok(Self {
            config: cfg.clone(),
            embeddings: vb.get((cfg.vocab_size, cfg.hidden_size), "token_embd.weight")?,
            blocks: (0..cfg.layers)
                .map(|i| LlamaBlock::load(vb.pp(format!("blk.{i}")), cfg))
                .collect::<Result<Vec<_>>>()?,
            norm: vb.get(cfg.hidden_size, "output_norm.weight")?,
            rotary: Rotary::new(cfg, vb.device())?,
        })
    }

    /// Token embeddings of `ids` `[b, t]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, ()))
    }

    /// Blocks `range` over `x` `[b, t, h]` at `offset`, with their cache slots.
    pub fn run_blocks(
        &self,
        mut x: Tensor,
        range: std::ops::Range<usize>,
        offset: usize,
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        for i in range {
            let slot = match cache.as_deref_mut() {
                Some(c) => c.layers.get_mut(i),
                None => None,
            };
            x = self.blocks[i].forward(&x, &self.rotary, offset, slot, mode)?;
        }
        Ok(x)
    }

    /// Final RMS norm.
    pub fn final_norm(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::rms_norm(x, &self.norm, self.config.rms_eps, mode)
    }

    /// Next-token logits `[.., vocab]` of normalised states (tied LM head).
    pub fn lm_logits(&self, normed: &Tensor) -> Result<Tensor> {
        let h = normed.dim(D::Minus1)?;
        let flat = normed.reshape(((), h))?.matmul(&self.embeddings.t()?)?;
        let mut dims = normed.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.config.vocab_size;
        }
        flat.reshape(dims)
    }
}
