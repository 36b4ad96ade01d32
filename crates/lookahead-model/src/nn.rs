//! Layers the encoders and the routers' trained parts share: a linear layer (with an int8
//! inference path), layer norm, embedding lookup and mean pooling. Built on [`crate::kernels`].

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::kernels::ops::{self, Mode};
use crate::kernels::quant::{Activation, Int8Linear};

/// `y = x W^T + b` for inputs of any rank.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    /// Set by [`Linear::quantize`]: int8 weights for inference, used instead of `weight`.
    int8: Option<Arc<Int8Linear>>,
}

impl Linear {
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
            int8: None,
        })
    }

    /// Switches to int8 weights (see [`crate::kernels::quant`]), with `activation` fused into the output.
    /// Inference only: the int8 path has no backward pass.
    pub fn quantize(&mut self, activation: Activation) -> Result<()> {
        self.int8 = Some(Arc::new(Int8Linear::new(
            &self.weight,
            &self.bias,
            activation,
        )?));
        Ok(())
    }

    /// The activation fused into the int8 path, if this layer is quantised.
    pub fn fused_activation(&self) -> Option<Activation> {
        self.int8.as_ref().map(|q| q.activation())
    }

    /// A linear layer created (and registered) with a fresh initialisation.
    pub fn init(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let std = (1.0 / in_dim as f64).sqrt();
        Ok(Self {
            weight: vb.get_with_hints(
                (out_dim, in_dim),
                "weight",
                candle_nn::Init::Randn {
                    mean: 0.,
                    stdev: std,
                },
            )?,
            bias: vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.))?,
            int8: None,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = &self.int8 {
            return q.forward(x);
        }
        let w = self.weight.t()?;
        let y = match x.dims() {
            [b, t, h] => x.reshape((b * t, *h))?.matmul(&w)?.reshape((*b, *t, ()))?,
            _ => x.matmul(&w)?,
        };
        y.broadcast_add(&self.bias)
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub fn init(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps, mode)
    }
}

/// Rows of the embedding matrix `weight` (`[vocab, hidden]`) for `ids` (`[batch, seq]` u32):
/// `[batch, seq, hidden]`.
pub fn token_embeddings(weight: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    weight
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, ()))
}

/// Mean of token states over kept positions: `states` `[b, t, h]`, `keep` `[b, t]` 0/1.
pub fn mean_pool(states: &Tensor, keep: &Tensor) -> Result<Tensor> {
    let keep = keep.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = states.broadcast_mul(&keep)?.sum(1)?;
    sum.broadcast_div(&keep.sum(1)?.clamp(1e-9, f64::MAX)?)
}
