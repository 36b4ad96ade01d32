//! Multi-head attention for inference on the CPU, fused per head with AVX-512 kernels.
//!
//! Why: the composed version (split heads with a transpose + copy, `Q Kᵀ` through candle's
//! matmul, scale, mask add, softmax, `P V`, merge heads) spent most of a 512-token MiniLM pass in
//! the `gemm` crate's AVX2 kernels (stable Rust does not get its AVX-512 ones), copies and
//! element-wise passes over the `t × t` score matrix. Here each head reads its slice of Q, K, V in
//! place, scores 8 queries at a time against all keys with the scale folded into the query and
//! the mask added once, runs the softmax in the same buffer and accumulates `P V` in registers.
//! Same math in f32; only the summation order differs (tests compare to 1e-5).

#![allow(unsafe_op_in_unsafe_fn)]

use candle_core::{DType, Result, Tensor};

/// Query rows scored together (accumulators stay in registers).
const QROWS: usize = 8;

/// `softmax(Q Kᵀ / √d + mask) V` for `q` `[b, r, H]`, `k`/`v` `[b, t, H]`, `heads` heads of
/// `H / heads` dims, `mask` additive `[b, 1, 1, t]`. Returns `None` where the fused kernel does
/// not apply (not CPU f32, no AVX-512, head size not a multiple of 16); the caller then composes
/// the attention from tensor ops.
pub fn fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    #[cfg(target_arch = "x86_64")]
    return fused_x86(q, k, v, heads, mask);
    #[cfg(not(target_arch = "x86_64"))]
    return Ok(None);
}

#[cfg(target_arch = "x86_64")]
fn fused_x86(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let (b, r, h) = q.dims3()?;
    let t = k.dim(1)?;
    let hd = h / heads.max(1);
    if !crate::kernels::simd::available()
        || !q.device().is_cpu()
        || q.dtype() != DType::F32
        || !hd.is_multiple_of(16)
        || hd * heads != h
    {
        return Ok(None);
    }
    let q = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let k = k.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let v = v.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mask = match mask {
        Some(m) => Some(m.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    if mask.as_ref().is_some_and(|m| m.len() != b * t) {
        candle_core::bail!("attention mask must be [batch, 1, 1, keys]");
    }
    let shape = Shape3 { r, t, h, hd };
    let head_out = |job: usize| -> Vec<f32> {
        let (bi, hi) = (job / heads, job % heads);
        let m = mask.as_ref().map(|m| &m[bi * t..(bi + 1) * t]);
        let off_q = bi * r * h + hi * hd;
        let off_kv = bi * t * h + hi * hd;
        // SAFETY: AVX-512 present (checked above); offsets/strides stay inside q, k, v.
        unsafe { one_head(&shape, &q[off_q..], &k[off_kv..], &v[off_kv..], m) }
    };
    let jobs = b * heads;
    let outs: Vec<Vec<f32>> = if rayon::current_num_threads() > 1 && r * t * h >= 1 << 18 {
        use rayon::prelude::*;
        (0..jobs).into_par_iter().map(head_out).collect()
    } else {
        (0..jobs).map(head_out).collect()
    };
    let mut out = vec![0f32; b * r * h];
    for (job, o) in outs.iter().enumerate() {
        let (bi, hi) = (job / heads, job % heads);
        for (i, row) in o.chunks_exact(hd).enumerate() {
            let at = (bi * r + i) * h + hi * hd;
            out[at..at + hd].copy_from_slice(row);
        }
    }
    Ok(Some(Tensor::from_vec(
        out,
        (b, r, h),
        &candle_core::Device::Cpu,
    )?))
}

#[cfg(target_arch = "x86_64")]
struct Shape3 {
    /// Query rows.
    r: usize,
    /// Keys.
    t: usize,
    /// Row stride (all heads).
    h: usize,
    /// Head size.
    hd: usize,
}

/// One head: returns `[r, hd]`. `q`, `k`, `v` start at this head's first element (row stride `h`).
///
/// # Safety
/// AVX-512 F; `q` holds `(r - 1) * h + hd` floats, `k`/`v` `(t - 1) * h + hd`, `hd % 16 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn one_head(s: &Shape3, q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>) -> Vec<f32> {
    let Shape3 { r, t, h, hd } = *s;
    let scale = 1.0 / (hd as f32).sqrt();
    // Kᵀ of this head, `[hd][t_pad]`, so 16 keys load as one vector; padding keys get −inf.
    let t_pad = t.div_ceil(16) * 16;
    let mut kt = vec![0f32; hd * t_pad];
    for j in 0..t {
        for d in 0..hd {
            kt[d * t_pad + j] = k[j * h + d];
        }
    }
    let mut bias = vec![f32::NEG_INFINITY; t_pad];
    for (j, b) in bias.iter_mut().enumerate().take(t) {
        *b = mask.map_or(0.0, |m| m[j]);
    }
    let mut out = vec![0f32; r * hd];
    let mut scores = vec![0f32; QROWS * t_pad];
    let mut i0 = 0;
    while i0 < r {
        let rows = (r - i0).min(QROWS);
        let qi = q.as_ptr().add(i0 * h);
        // scores[i][j] = scale · q_i · k_j + bias_j, 32 keys per step (16 where t_pad is odd).
        let mut j = 0;
        while j < t_pad {
            let sc = scores.as_mut_ptr().add(j);
            let (k, affine) = (kt.as_ptr().add(j), Some((scale, bias.as_ptr().add(j))));
            if j + 32 <= t_pad {
                product_block::<2>(qi, h, rows, hd, k, t_pad, sc, t_pad, affine);
                j += 32;
            } else {
                product_block::<1>(qi, h, rows, hd, k, t_pad, sc, t_pad, affine);
                j += 16;
            }
        }
        for i in 0..rows {
            crate::kernels::simd::softmax_row(&mut scores[i * t_pad..i * t_pad + t]);
        }
        // out[i] = Σ_j p[i][j] v_j, 32 dims per step (16 for the rest).
        let mut d0 = 0;
        while d0 < hd {
            let o = out.as_mut_ptr().add(i0 * hd + d0);
            let (p, vd) = (scores.as_ptr(), v.as_ptr().add(d0));
            if d0 + 32 <= hd {
                product_block::<2>(p, t_pad, rows, t, vd, h, o, hd, None);
                d0 += 32;
            } else {
                product_block::<1>(p, t_pad, rows, t, vd, h, o, hd, None);
                d0 += 16;
            }
        }
        i0 += rows;
    }
    out
}

/// The kernel both products of a head share: for `rows` rows of `a` (element `(i, k)` at
/// `a[i * a_stride + k]`) and the `N × 16` columns of `b` (row `k` at `b[k * b_stride]`),
/// `out[i][..] = Σ_k a(i, k) · b[k][..]` over `depth` terms, accumulated in registers; with
/// `affine = Some((s, bias))` the stored value is `s · sum + bias[..]`.
///
/// # Safety
/// AVX-512 F; pointers valid for the strides and counts given (`bias` for `N × 16` floats).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn product_block<const N: usize>(
    a: *const f32,
    a_stride: usize,
    rows: usize,
    depth: usize,
    b: *const f32,
    b_stride: usize,
    out: *mut f32,
    out_stride: usize,
    affine: Option<(f32, *const f32)>,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); N]; QROWS];
    for k in 0..depth {
        let mut bv = [_mm512_setzero_ps(); N];
        for (n, bv) in bv.iter_mut().enumerate() {
            *bv = _mm512_loadu_ps(b.add(k * b_stride + n * 16));
        }
        for (i, acc) in acc.iter_mut().enumerate().take(rows) {
            let av = _mm512_set1_ps(*a.add(i * a_stride + k));
            for n in 0..N {
                acc[n] = _mm512_fmadd_ps(av, bv[n], acc[n]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate().take(rows) {
        for (n, acc) in acc.iter().enumerate() {
            let y = match affine {
                Some((scale, bias)) => _mm512_fmadd_ps(
                    *acc,
                    _mm512_set1_ps(scale),
                    _mm512_loadu_ps(bias.add(n * 16)),
                ),
                None => *acc,
            };
            _mm512_storeu_ps(out.add(i * out_stride + n * 16), y);
        }
    }
}

/// Additive attention mask `[batch, 1, 1, seq]` from a 0/1 `[batch, seq]` keep-mask.
pub fn additive_mask(keep: &Tensor) -> Result<Tensor> {
    let (b, t) = keep.dims2()?;
    ((keep.to_dtype(DType::F32)? - 1.0)? * 1e4)?.reshape((b, 1, 1, t))
}

#[cfg(test)]
#[cfg(target_arch = "x86_64")]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The composed attention of `BertLayer` (split heads, softmax, merge).
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: &Tensor) -> Tensor {
        let (b, r, h) = q.dims3().unwrap();
        let t = k.dim(1).unwrap();
        let hd = h / heads;
        let split = |x: &Tensor, n: usize| {
            x.reshape((b, n, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(q, r), split(k, t), split(v, t));
        let s = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
        let s = s.broadcast_add(mask).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, r, h))
            .unwrap()
    }

    #[test]
    fn fused_attention_equals_composed_attention() -> Result<()> {
        if !crate::kernels::simd::available() {
            println!("skipped: this CPU has no AVX-512 (the composed attention is used)");
            return Ok(());
        }
        let dev = Device::Cpu;
        // 2 prompts, key counts that are not multiples of 16 or 32, heads of 32 and 48 dims,
        // the second prompt padded.
        for (t, heads, hd) in [(21, 2, 32), (40, 3, 48)] {
            let b = 2;
            let q = Tensor::randn(0f32, 1.0, (b, t, heads * hd), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, t, heads * hd), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, t, heads * hd), &dev)?;
            let keep: Vec<f32> = (0..b * t)
                .map(|i| if i >= t && i % t >= 15 { 0.0 } else { 1.0 })
                .collect();
            let keep = Tensor::from_vec(keep, (b, t), &dev)?;
            let mask = additive_mask(&keep)?;
            let want = reference(&q, &k, &v, heads, &mask);
            let got = fused(&q, &k, &v, heads, Some(&mask))?.expect("fused kernel applies");
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "fused attention differs by {diff}");
            // Fewer query rows than keys (a last layer computing selected rows only).
            let rows = Tensor::new(&[0u32, 7, t as u32 - 1], &dev)?;
            let qr = q.index_select(&rows, 1)?;
            let got = fused(&qr, &k, &v, heads, Some(&mask))?.expect("fused kernel applies");
            let want = want.index_select(&rows, 1)?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "row-selected attention differs by {diff}");
        }
        Ok(())
    }
}
