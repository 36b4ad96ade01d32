//! Differentiable building blocks. candle 0.11's fused `layer_norm`, `rms_norm`,
//! `softmax_last_dim` and `rope` have no backward pass: gradients silently stop at them. Every op here is
//! composed from primitive tensor ops that all have one. `Mode::Inference` switches to the fused
//! kernels where no gradient is needed (they are faster).

use candle_core::{DType, Result, Tensor, D};

/// Which kernels to use: composable (training, has backward) or fused (inference only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Inference,
}

/// Layer norm over the last dimension: `(x - mean) / sqrt(var + eps) * w + b`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Inference {
        return candle_nn::ops::layer_norm(x, w, b, eps as f32);
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(w)?.broadcast_add(b)
}

/// RMS norm over the last dimension: `x / sqrt(mean(x^2) + eps) * w` (Llama family).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Inference {
        return candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32);
    }
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// Softmax over the last dimension via `exp / sum(exp)`, shifted by the (detached) max for
/// numerical stability; the shift cancels in the gradient.
pub fn softmax_last_dim(x: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Inference {
        if x.device().is_cpu() && x.dtype() == DType::F32 && crate::kernels::simd::available() {
            return x.contiguous()?.apply_op1_no_bwd(&VectorSoftmax);
        }
        return candle_nn::ops::softmax_last_dim(x);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Softmax over the last dimension with the AVX-512 kernel ([`crate::kernels::simd::softmax_row`]);
/// inference only (no backward).
struct VectorSoftmax;

impl candle_core::CustomOp1 for VectorSoftmax {
    fn name(&self) -> &'static str {
        "vector-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(x) = storage else {
            candle_core::bail!("vector softmax takes f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("vector softmax needs a contiguous input");
        };
        let mut out = x[start..end].to_vec();
        let cols = layout.dims().last().copied().unwrap_or(1).max(1);
        #[cfg(target_arch = "x86_64")]
        for row in out.chunks_exact_mut(cols) {
            // SAFETY: the caller checked `simd::available()` before applying this op.
            unsafe { crate::kernels::simd::softmax_row(row) };
        }
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Rotary position embedding, "rotate half" layout (GPT-NeoX, ModernBERT): `x * cos +
/// rotate_half(x) * sin`. `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[>= seq,
/// head_dim / 2]`. candle's fused `rope` has no backward pass either.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    let t = x.dim(2)?;
    let (cos, sin) = (cos.narrow(0, 0, t)?, sin.narrow(0, 0, t)?);
    if mode == Mode::Inference {
        return candle_nn::rotary_emb::rope(
            &x.contiguous()?,
            &cos.contiguous()?,
            &sin.contiguous()?,
        );
    }
    let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
    let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// Numerically stable binary cross-entropy with logits, mean over all elements:
/// `max(x, 0) - x * y + log(1 + exp(-|x|))`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let relu = logits.relu()?;
    let xy = (logits * targets)?;
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((relu - xy)? + softplus)?.mean_all()
}

/// Mean of `1 - cos(pred, target)` over rows where `weights` is 1 (`weights`: `[rows]`, 0/1).
/// Returns zero when no row is selected.
pub fn masked_cosine_loss(pred: &Tensor, target: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let dot = (pred * target)?.sum(D::Minus1)?;
    let pn = pred.sqr()?.sum(D::Minus1)?;
    let tn = target.sqr()?.sum(D::Minus1)?;
    let cos = dot.broadcast_div(&((pn * tn)? + 1e-12)?.sqrt()?)?;
    let loss = (cos.neg()? + 1.0)?;
    let total = weights
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    if total <= 0.0 {
        return Tensor::zeros((), DType::F32, pred.device());
    }
    (loss * weights)?.sum_all()? / total as f64
}

/// Mean cross-entropy of `logits` `[N, V]` against `targets` `[N]` u32, from differentiable ops
/// (log-sum-exp shifted by the detached row max).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - picked)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn differentiable_ops_match_fused_kernels() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 8, &dev)?;
        let a = layer_norm(&x, &w, &b, 1e-12, Mode::Train)?;
        let f = layer_norm(&x, &w, &b, 1e-12, Mode::Inference)?;
        let diff = (a - f)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "layer norm differs by {diff}");
        let a = softmax_last_dim(&x, Mode::Train)?;
        let f = softmax_last_dim(&x, Mode::Inference)?;
        let diff = (a - f)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "softmax differs by {diff}");
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 8), &dev)?;
        let cos = Tensor::randn(0f32, 1.0, (10, 4), &dev)?;
        let sin = Tensor::randn(0f32, 1.0, (10, 4), &dev)?;
        let a = rope(&x, &cos, &sin, Mode::Train)?;
        let f = rope(&x, &cos, &sin, Mode::Inference)?;
        let diff = (a - f)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "rope differs by {diff}");
        Ok(())
    }

    #[test]
    fn training_ops_propagate_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4), &dev)?)?;
        let w = Var::from_tensor(&Tensor::ones(4, DType::F32, &dev)?)?;
        let b = Var::from_tensor(&Tensor::zeros(4, DType::F32, &dev)?)?;
        let y = layer_norm(
            x.as_tensor(),
            w.as_tensor(),
            b.as_tensor(),
            1e-5,
            Mode::Train,
        )?;
        let y = softmax_last_dim(&(y * 3.0)?, Mode::Train)?;
        // Through rope too: [2, 4] -> [1, 1, 2, 4].
        let cs = Tensor::new(&[[0.3f32, -0.5], [1.1, 0.2]], &dev)?;
        let y = rope(
            &y.unsqueeze(0)?.unsqueeze(0)?,
            &cs.cos()?,
            &cs.sin()?,
            Mode::Train,
        )?
        .squeeze(0)?
        .squeeze(0)?;
        let t = Tensor::new(&[[1f32, 0., 0., 0.], [0., 1., 0., 0.]], &dev)?;
        let loss = bce_with_logits(&y, &t)?;
        let grads = loss.backward()?;
        for v in [&x, &w, &b] {
            let g = grads.get(v).expect("gradient");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }

    #[test]
    fn bce_matches_closed_form() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[0f32, 2.0, -3.0], &dev)?;
        let y = Tensor::new(&[1f32, 0.0, 0.0], &dev)?;
        let got = bce_with_logits(&x, &y)?.to_scalar::<f32>()?;
        let want = ((2f32.ln()) + (1.0 + 2f32.exp()).ln() + (1.0 + (-3f32).exp()).ln()) / 3.0;
        assert!((got - want).abs() < 1e-5);
        Ok(())
    }
}
