//! int8 linear layers for inference (scoring only; they have no backward pass).
//!
//! Why: candle 0.11's CPU matmul runs the `gemm` crate's AVX2 kernels on stable Rust (its
//! AVX-512 kernels need nightly), which caps an f32 MiniLM pass at roughly half of what PyTorch
//! (oneDNN, AVX-512) reaches on the same core. With AVX-512 VNNI, one `vpdpbusd` does 64 u8×i8
//! multiply-adds, four times an f32 FMA's 16: that is the headroom the scorer needs.
//!
//! Scheme (dynamic quantisation, as PyTorch's `quantize_dynamic` and ONNX Runtime do it):
//! - weights: symmetric int8 per output channel, `w ≈ sw[n] · qw[n, k]`, quantised once;
//! - activations: asymmetric u8 per row, `x ≈ sx[m] · (qx[m, k] − zx[m])`, quantised per call;
//! - `y[m, n] = sx[m] · sw[n] · (Σ_k qx·qw − zx[m] · Σ_k qw[n, k]) + b[n]`: the correction term
//!   uses the weights' column sums, precomputed, so the inner loop is a pure u8×i8 dot product
//!   with exact i32 accumulation.
//!
//! The VNNI kernel runs where the CPU has `avx512vnni` (checked at run time); elsewhere a portable
//! kernel computes the same integers, so results are identical on every machine.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::kernels::simd::{gelu_erf_scalar, gelu_tanh_scalar};
use crate::names::setting_names;

/// Output columns per packed panel (one 512-bit register of i32 accumulators).
const PANEL: usize = 16;
/// Rows computed together by the kernel (accumulators live in registers).
const ROWS: usize = 8;
/// Panels computed together by the kernel.
const PANELS: usize = 2;

/// Weight precision of a loaded scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The trained f32 weights (bit-for-bit the training-time model).
    #[default]
    F32,
    /// int8 weights with dynamic u8 activations (CPU; fastest with AVX-512 VNNI).
    Int8,
    /// int8 where it pays and does not change decisions, else f32: see
    /// [`crate::precision::serving_precision`].
    Auto,
}

setting_names!(Precision, "precision", {
    Auto => "auto",
    F32 => "f32",
    Int8 => "int8",
});

/// Element-wise activation fused into the output of an [`Int8Linear`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `x · Φ(x)` with the exact (erf) normal CDF, BERT's default `gelu`.
    GeluErf,
    /// The tanh approximation (`gelu_new`).
    GeluTanh,
}

/// A linear layer `y = x Wᵀ + b` with int8 weights, packed for the kernel.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    out_dim: usize,
    in_dim: usize,
    /// `in_dim` rounded up to a multiple of 4 (one `vpdpbusd` lane takes 4 bytes).
    k_pad: usize,
    /// `out_dim` rounded up to a multiple of `PANEL * PANELS`.
    n_pad: usize,
    /// `[n_pad / PANEL][k_pad / 4][PANEL][4]`: for each panel, 4 consecutive k of its 16 columns.
    packed: Vec<i8>,
    /// Per output channel (padded with 0).
    scale: Vec<f32>,
    /// Σ_k qw[n, k] (padded with 0).
    col_sum: Vec<i32>,
    bias: Vec<f32>,
    activation: Activation,
}

impl Int8Linear {
    /// Quantises `weight` (`[out, in]`, f32) and `bias` (`[out]`).
    pub fn new(weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let w = weight.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let bias = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        if bias.len() != out_dim {
            candle_core::bail!("bias has {} entries for {out_dim} outputs", bias.len());
        }
        let k_pad = in_dim.div_ceil(4) * 4;
        let n_pad = out_dim.div_ceil(PANEL * PANELS) * PANEL * PANELS;
        let mut scale = vec![0f32; n_pad];
        let mut col_sum = vec![0i32; n_pad];
        let mut packed = vec![0i8; n_pad * k_pad];
        for (n, row) in w.iter().enumerate() {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[n] = s;
            let (panel, lane) = (n / PANEL, n % PANEL);
            for (k, v) in row.iter().enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                col_sum[n] += i32::from(q);
                let at = panel * k_pad * PANEL + (k / 4) * PANEL * 4 + lane * 4 + k % 4;
                packed[at] = q;
            }
        }
        Ok(Self {
            out_dim,
            in_dim,
            k_pad,
            n_pad,
            packed,
            scale,
            col_sum,
            bias,
            activation,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// `x`: `[..., in]` f32 → `[..., out]` f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&last, lead)) = dims.split_last() else {
            candle_core::bail!("int8 linear needs at least one dimension");
        };
        if last != self.in_dim {
            candle_core::bail!("int8 linear expects {} inputs, got {last}", self.in_dim);
        }
        let rows = lead.iter().product::<usize>();
        let y = x
            .contiguous()?
            .reshape((rows, last))?
            .apply_op1_no_bwd(self)?;
        let mut out = lead.to_vec();
        out.push(self.out_dim);
        y.reshape(out)
    }

    /// The product on plain slices: `x` is `[rows, in_dim]` row-major, returns `[rows, out_dim]`.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let rows_pad = rows.div_ceil(ROWS) * ROWS;
        let mut qx = vec![0u8; rows_pad * self.k_pad];
        let mut sx = vec![0f32; rows_pad];
        let mut zx = vec![0i32; rows_pad];
        for (r, row) in x.chunks_exact(self.in_dim).take(rows).enumerate() {
            let (s, z) = quantize_row(row, &mut qx[r * self.k_pad..r * self.k_pad + self.in_dim]);
            sx[r] = s;
            zx[r] = z;
        }
        let mut out = vec![0f32; rows * self.out_dim];
        let block = |(b, out): (usize, &mut [f32])| {
            let r0 = b * ROWS;
            let n_rows = out.len() / self.out_dim;
            let a = &qx[r0 * self.k_pad..(r0 + ROWS) * self.k_pad];
            let mut acc = [[0i32; PANEL * PANELS]; ROWS];
            for p in (0..self.n_pad / PANEL).step_by(PANELS) {
                dot_block(a, self.k_pad, &self.packed, p, &mut acc);
                self.store(&acc, p * PANEL, r0, n_rows, &sx, &zx, out);
            }
        };
        let work = rows * self.out_dim * self.in_dim;
        if work >= 1 << 20 && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            out.par_chunks_mut(ROWS * self.out_dim)
                .enumerate()
                .for_each(block);
        } else {
            out.chunks_mut(ROWS * self.out_dim)
                .enumerate()
                .for_each(block);
        }
        out
    }

    /// Dequantises one block of accumulators into `out` (rows `r0..r0 + n_rows` of the output,
    /// columns `n0..n0 + PANEL * PANELS`), adds the bias and applies the activation.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        acc: &[[i32; PANEL * PANELS]; ROWS],
        n0: usize,
        r0: usize,
        n_rows: usize,
        sx: &[f32],
        zx: &[i32],
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::simd::available() {
            // SAFETY: AVX-512 F present (checked); `out` holds n_rows rows of out_dim, and
            // col_sum/scale are padded to n_pad ≥ n0 + PANEL * PANELS.
            unsafe { vnni::store(self, acc, n0, r0, n_rows, sx, zx, out) };
            return;
        }
        let cols = (self.out_dim.saturating_sub(n0)).min(PANEL * PANELS);
        for (i, acc) in acc.iter().enumerate().take(n_rows) {
            let (s, z) = (sx[r0 + i], zx[r0 + i]);
            let row = &mut out[i * self.out_dim + n0..i * self.out_dim + n0 + cols];
            for (j, y) in row.iter_mut().enumerate() {
                let n = n0 + j;
                let v = (acc[j] - z * self.col_sum[n]) as f32 * (s * self.scale[n]) + self.bias[n];
                *y = activate(v, self.activation);
            }
        }
    }
}

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, cols) = layout.shape().dims2()?;
        let x = match storage {
            CpuStorage::F32(x) => x,
            other => candle_core::bail!("int8 linear takes f32 input, got {:?}", other.dtype()),
        };
        let x = match layout.contiguous_offsets() {
            Some((start, end)) => &x[start..end],
            None => candle_core::bail!("int8 linear needs a contiguous input"),
        };
        debug_assert_eq!(cols, self.in_dim);
        let y = self.matmul(x, rows);
        Ok((CpuStorage::F32(y), Shape::from((rows, self.out_dim))))
    }
}

/// Asymmetric u8 quantisation of one row: returns (scale, zero point); `q` gets the codes.
fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::available() {
        // SAFETY: AVX-512 F/BW/VL present (checked); `q` and `row` have the same length.
        return unsafe { vnni::quantize_row(row, q) };
    }
    let (lo, hi) = row
        .iter()
        .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    // The range includes 0 so that 0 (e.g. ReLU zeros, padding) is represented exactly.
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero = (-lo / scale).round().clamp(0.0, 255.0);
    let inv = 1.0 / scale;
    for (q, &v) in q.iter_mut().zip(row) {
        *q = (v * inv + zero).round().clamp(0.0, 255.0) as u8;
    }
    (scale, zero as i32)
}

/// `acc[r][j] = Σ_k a[r, k] · w[k, column p·PANEL + j]` for `ROWS` rows and `PANELS` panels.
fn dot_block(
    a: &[u8],
    k_pad: usize,
    packed: &[i8],
    p: usize,
    acc: &mut [[i32; PANEL * PANELS]; ROWS],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::available() {
        // SAFETY: the CPU has AVX-512 F + VNNI (checked above); `a` holds ROWS rows of k_pad
        // bytes and `packed` holds the PANELS panels from p on (n_pad is a multiple of
        // PANEL * PANELS), which `vnni::dot_block` reads and nothing beyond.
        unsafe { vnni::dot_block(a, k_pad, packed, p, acc) };
        return;
    }
    portable_dot_block(a, k_pad, packed, p, acc);
}

/// The same integer product as the VNNI kernel, in plain Rust.
fn portable_dot_block(
    a: &[u8],
    k_pad: usize,
    packed: &[i8],
    p: usize,
    acc: &mut [[i32; PANEL * PANELS]; ROWS],
) {
    for (r, acc) in acc.iter_mut().enumerate() {
        let a = &a[r * k_pad..(r + 1) * k_pad];
        for (pp, acc) in acc.chunks_exact_mut(PANEL).enumerate() {
            let panel = &packed[(p + pp) * k_pad * PANEL..(p + pp + 1) * k_pad * PANEL];
            acc.fill(0);
            for (g, group) in panel.chunks_exact(PANEL * 4).enumerate() {
                let a4 = &a[g * 4..g * 4 + 4];
                for (lane, w4) in group.chunks_exact(4).enumerate() {
                    acc[lane] += a4
                        .iter()
                        .zip(w4)
                        .map(|(&x, &w)| i32::from(x) * i32::from(w))
                        .sum::<i32>();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    #![allow(unsafe_op_in_unsafe_fn)]
    use std::arch::x86_64::*;

    use super::{Activation, Int8Linear, PANEL, PANELS, ROWS};
    use crate::kernels::simd::{gelu_erf512, gelu_tanh512};

    /// See `super::quantize_row`. Safety: AVX-512 F/BW/VL; `q.len() == row.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
        debug_assert_eq!(row.len(), q.len());
        let n = row.len();
        let (x, out) = (row.as_ptr(), q.as_mut_ptr());
        let tail = n % 16;
        let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_loadu_ps(x.add(i));
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
            i += 16;
        }
        if tail > 0 {
            let v = _mm512_maskz_loadu_ps(mask, x.add(i));
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
        }
        let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero = (-lo / scale).round().clamp(0.0, 255.0);
        let (inv, z) = (_mm512_set1_ps(1.0 / scale), _mm512_set1_ps(zero));
        let (min, max) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
        let code = |v: __m512| {
            // Round to nearest (even) then clamp to 0..=255.
            let q = _mm512_cvtps_epi32(_mm512_fmadd_ps(v, inv, z));
            _mm512_cvtepi32_epi8(_mm512_min_epi32(_mm512_max_epi32(q, min), max))
        };
        i = 0;
        while i + 16 <= n {
            _mm_storeu_si128(out.add(i).cast(), code(_mm512_loadu_ps(x.add(i))));
            i += 16;
        }
        if tail > 0 {
            let c = code(_mm512_maskz_loadu_ps(mask, x.add(i)));
            _mm_mask_storeu_epi8(out.add(i).cast(), mask, c);
        }
        (scale, zero as i32)
    }

    /// See `Int8Linear::store`. Safety: AVX-512 F; the same bounds as the scalar version.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn store(
        lin: &Int8Linear,
        acc: &[[i32; PANEL * PANELS]; ROWS],
        n0: usize,
        r0: usize,
        n_rows: usize,
        sx: &[f32],
        zx: &[i32],
        out: &mut [f32],
    ) {
        for (i, acc) in acc.iter().enumerate().take(n_rows) {
            let s = _mm512_set1_ps(sx[r0 + i]);
            let z = _mm512_set1_epi32(zx[r0 + i]);
            for pp in 0..PANELS {
                let n = n0 + pp * PANEL;
                if n >= lin.out_dim {
                    break;
                }
                let cols = (lin.out_dim - n).min(PANEL);
                let mask: __mmask16 = if cols == PANEL {
                    0xffff
                } else {
                    ((1u32 << cols) - 1) as __mmask16
                };
                // col_sum and scale are padded to n_pad; bias is not.
                let a = _mm512_loadu_si512(acc.as_ptr().add(pp * PANEL).cast());
                let cs = _mm512_loadu_si512(lin.col_sum.as_ptr().add(n).cast());
                let sw = _mm512_loadu_ps(lin.scale.as_ptr().add(n));
                let b = _mm512_maskz_loadu_ps(mask, lin.bias.as_ptr().add(n));
                let int = _mm512_sub_epi32(a, _mm512_mullo_epi32(z, cs));
                let y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(int), _mm512_mul_ps(s, sw), b);
                let y = match lin.activation {
                    Activation::None => y,
                    Activation::GeluErf => gelu_erf512(y),
                    Activation::GeluTanh => gelu_tanh512(y),
                };
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i * lin.out_dim + n), mask, y);
            }
        }
    }

    /// See `super::dot_block`. Safety: AVX-512 F and VNNI present; `a.len() >= ROWS * k_pad`,
    /// `packed.len() >= (p + PANELS) * k_pad * PANEL`, `k_pad % 4 == 0`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn dot_block(
        a: &[u8],
        k_pad: usize,
        packed: &[i8],
        p: usize,
        acc: &mut [[i32; PANEL * PANELS]; ROWS],
    ) {
        debug_assert!(a.len() >= ROWS * k_pad);
        debug_assert!(packed.len() >= (p + PANELS) * k_pad * PANEL);
        let mut c = [[_mm512_setzero_si512(); PANELS]; ROWS];
        let b0 = packed.as_ptr().add(p * k_pad * PANEL);
        let b1 = b0.add(k_pad * PANEL);
        let a = a.as_ptr();
        for g in 0..k_pad / 4 {
            let w0 = _mm512_loadu_si512(b0.add(g * PANEL * 4).cast());
            let w1 = _mm512_loadu_si512(b1.add(g * PANEL * 4).cast());
            for (r, c) in c.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(a.add(r * k_pad + g * 4).cast::<i32>().read_unaligned());
                c[0] = _mm512_dpbusd_epi32(c[0], x, w0);
                c[1] = _mm512_dpbusd_epi32(c[1], x, w1);
            }
        }
        for (r, c) in c.iter().enumerate() {
            _mm512_storeu_si512(acc[r].as_mut_ptr().cast(), c[0]);
            _mm512_storeu_si512(acc[r].as_mut_ptr().add(PANEL).cast(), c[1]);
        }
    }
}

fn activate(v: f32, activation: Activation) -> f32 {
    match activation {
        Activation::None => v,
        Activation::GeluErf => gelu_erf_scalar(v),
        Activation::GeluTanh => gelu_tanh_scalar(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        // xorshift: deterministic test data without a dependency.
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn vnni_kernel_equals_portable_kernel_exactly() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::simd::available() {
                println!("skipped: this CPU has no AVX-512 VNNI (the portable kernel is used)");
                return;
            }
            let k_pad = 40;
            let a: Vec<u8> = (0..ROWS * k_pad).map(|i| (i * 37 % 256) as u8).collect();
            let packed: Vec<i8> = (0..3 * PANEL * k_pad)
                .map(|i| (i as i64 * 53 % 255 - 127) as i8)
                .collect();
            for p in [0, 1] {
                let mut fast = [[0; PANEL * PANELS]; ROWS];
                let mut slow = [[1; PANEL * PANELS]; ROWS];
                // SAFETY: availability checked; sizes as documented (3 panels ≥ p + 2).
                unsafe { vnni::dot_block(&a, k_pad, &packed, p, &mut fast) };
                portable_dot_block(&a, k_pad, &packed, p, &mut slow);
                assert_eq!(fast, slow, "panel {p}");
            }
        }
    }

    #[test]
    fn int8_linear_is_close_to_f32_linear() -> Result<()> {
        let dev = Device::Cpu;
        // Sizes that are not multiples of the blocking (rows 13, in 38, out 45).
        let (rows, inp, out) = (13, 38, 45);
        let x = Tensor::from_vec(rand_vec(rows * inp, 3), (rows, inp), &dev)?;
        let w = Tensor::from_vec(rand_vec(out * inp, 5), (out, inp), &dev)?;
        let b = Tensor::from_vec(rand_vec(out, 7), out, &dev)?;
        let exact = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        let q = Int8Linear::new(&w, &b, Activation::None)?;
        let got = q.forward(&x)?;
        assert_eq!(got.dims(), &[rows, out]);
        let err = (&got - &exact)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let mag = exact.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 0.02 * mag, "max error {err} for outputs up to {mag}");
        // 3-d input, fused GELU.
        let x3 = x.reshape((1, rows, inp))?;
        let q = Int8Linear::new(&w, &b, Activation::GeluErf)?;
        let got = q.forward(&x3)?;
        let want = exact.gelu_erf()?.reshape((1, rows, out))?;
        let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 0.02 * mag, "gelu: max error {err}");
        Ok(())
    }

    #[test]
    fn fast_erf_matches_reference() -> Result<()> {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 / 100.0).collect();
        let t = Tensor::new(xs.as_slice(), &Device::Cpu)?;
        let want = t.gelu_erf()?.to_vec1::<f32>()?;
        for (x, w) in xs.iter().zip(want) {
            let got = activate(*x, Activation::GeluErf);
            assert!((got - w).abs() < 1e-6, "gelu({x}) = {got}, want {w}");
        }
        let gelu = candle_nn::Activation::NewGelu;
        let want = gelu.forward(&t)?.to_vec1::<f32>()?;
        for (x, w) in xs.iter().zip(want) {
            let got = activate(*x, Activation::GeluTanh);
            assert!((got - w).abs() < 1e-5, "gelu_new({x}) = {got}, want {w}");
        }
        Ok(())
    }

    #[test]
    fn zero_rows_and_constant_rows_are_exact() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(rand_vec(6 * 8, 11), (6, 8), &dev)?;
        let b = Tensor::from_vec(rand_vec(6, 13), 6, &dev)?;
        let q = Int8Linear::new(&w, &b, Activation::None)?;
        let x = Tensor::zeros((2, 8), candle_core::DType::F32, &dev)?;
        let got = q.forward(&x)?.to_vec2::<f32>()?;
        let bias = b.to_vec1::<f32>()?;
        for row in got {
            assert_eq!(row, bias, "a zero input gives exactly the bias");
        }
        Ok(())
    }
}
