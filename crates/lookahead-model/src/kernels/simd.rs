//! AVX-512 element-wise kernels for the inference path: `exp`, GELU and row softmax.
//!
//! Why: libm's scalar `expf`/`erff` were 15–20% of an encoder pass (softmax over every attention
//! row, GELU over every intermediate activation). These evaluate 16 lanes at a time with
//! polynomials accurate to a few ulp, which the tests check against the scalar functions.
//! Callers check [`available`] and fall back to the scalar code otherwise.

#![allow(unsafe_op_in_unsafe_fn)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether the CPU has the AVX-512 subsets these kernels use (F, BW, VL, VNNI).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `e^x` on 16 lanes: `2^n · p(r)` with `x = n ln2 + r`, `|r| ≤ ln2 / 2`, degree-6 polynomial
/// (relative error < 2e-7); inputs below −87.3 give 0, above 88.7 give +inf.
///
/// # Safety
/// AVX-512 F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn exp512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
    let x = _mm512_min_ps(x, _mm512_set1_ps(88.7));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    // Two-part ln 2 keeps r exact enough for the polynomial.
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// GELU with the exact normal CDF, `x Φ(x)`, through erf (Abramowitz & Stegun 7.1.26,
/// |error| < 1.5e-7).
///
/// # Safety
/// AVX-512 F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn gelu_erf512(v: __m512) -> __m512 {
    let x = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let ax = _mm512_abs_ps(x);
    let t = _mm512_div_ps(
        _mm512_set1_ps(1.0),
        _mm512_fmadd_ps(ax, _mm512_set1_ps(0.327_591_1), _mm512_set1_ps(1.0)),
    );
    let mut poly = _mm512_set1_ps(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
    }
    poly = _mm512_mul_ps(poly, t);
    let e = exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax));
    let erf_abs = _mm512_fnmadd_ps(poly, e, _mm512_set1_ps(1.0));
    // Restore the sign of x.
    let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
    let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), v),
        _mm512_add_ps(_mm512_set1_ps(1.0), erf),
    )
}

/// GELU, tanh approximation: `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`, with
/// `1 + tanh(y) = 2 − 2 / (e^{2y} + 1)`.
///
/// # Safety
/// AVX-512 F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn gelu_tanh512(v: __m512) -> __m512 {
    let c = (2.0f32 / std::f32::consts::PI).sqrt();
    let v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    let y = _mm512_mul_ps(
        _mm512_set1_ps(c),
        _mm512_fmadd_ps(v3, _mm512_set1_ps(0.044_715), v),
    );
    let e = exp512(_mm512_add_ps(y, y));
    let one_plus_tanh = _mm512_sub_ps(
        _mm512_set1_ps(2.0),
        _mm512_div_ps(_mm512_set1_ps(2.0), _mm512_add_ps(e, _mm512_set1_ps(1.0))),
    );
    _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), v), one_plus_tanh)
}

/// In-place softmax of one row.
///
/// # Safety
/// AVX-512 F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_row(row: &mut [f32]) {
    let n = row.len();
    let ptr = row.as_mut_ptr();
    let tail = n % 16;
    let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 16 <= n {
        m = _mm512_max_ps(m, _mm512_loadu_ps(ptr.add(i)));
        i += 16;
    }
    if tail > 0 {
        let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, ptr.add(i));
        m = _mm512_max_ps(m, v);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let mut s = _mm512_setzero_ps();
    i = 0;
    while i + 16 <= n {
        let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(i)), max));
        _mm512_storeu_ps(ptr.add(i), e);
        s = _mm512_add_ps(s, e);
        i += 16;
    }
    if tail > 0 {
        let v = _mm512_mask_loadu_ps(max, mask, ptr.add(i));
        let e = _mm512_maskz_mov_ps(mask, exp512(_mm512_sub_ps(v, max)));
        _mm512_mask_storeu_ps(ptr.add(i), mask, e);
        s = _mm512_add_ps(s, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(s));
    i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(ptr.add(i), _mm512_mul_ps(_mm512_loadu_ps(ptr.add(i)), inv));
        i += 16;
    }
    if tail > 0 {
        let v = _mm512_maskz_loadu_ps(mask, ptr.add(i));
        _mm512_mask_storeu_ps(ptr.add(i), mask, _mm512_mul_ps(v, inv));
    }
}

// Scalar forms: the fallback where AVX-512 is missing, and the reference the vector forms are
// tested against.

pub fn gelu_erf_scalar(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

pub fn gelu_tanh_scalar(v: f32) -> f32 {
    let c = (2.0 / std::f32::consts::PI).sqrt();
    0.5 * v * (1.0 + (c * (v + 0.044_715 * v * v * v)).tanh())
}

/// erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26): a few multiplies and one exp, far
/// cheaper than libm's `erff`, which showed up at 8% of an f32 encoder pass.
pub fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-x * x).exp();
    y.copysign(x)
}

#[cfg(test)]
#[cfg(target_arch = "x86_64")]
mod tests {
    use super::*;

    fn lanes(f: impl Fn(__m512) -> __m512, xs: &[f32]) -> Vec<f32> {
        xs.chunks(16)
            .flat_map(|c| {
                let mut buf = [0f32; 16];
                buf[..c.len()].copy_from_slice(c);
                let mut out = [0f32; 16];
                // SAFETY: the caller checked `available()`; buffers hold 16 floats.
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr(), f(_mm512_loadu_ps(buf.as_ptr())));
                }
                out[..c.len()].to_vec()
            })
            .collect()
    }

    #[test]
    fn vector_exp_and_gelu_match_the_scalar_functions() {
        if !available() {
            println!("skipped: this CPU has no AVX-512 (the scalar path is used)");
            return;
        }
        let xs: Vec<f32> = (-8700..=8800).map(|i| i as f32 / 100.0).collect();
        // SAFETY (closures below): available() checked above.
        let got = lanes(|v| unsafe { exp512(v) }, &xs);
        for (x, g) in xs.iter().zip(&got) {
            let want = x.exp();
            let rel = if want > 1e-30 {
                ((g - want) / want).abs()
            } else {
                g.abs()
            };
            assert!(rel < 1e-6, "exp({x}) = {g}, want {want}");
        }
        let small: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let got = lanes(|v| unsafe { gelu_erf512(v) }, &small);
        for (x, g) in small.iter().zip(&got) {
            let want = super::gelu_erf_scalar(*x);
            assert!((g - want).abs() < 2e-6, "gelu({x}) = {g}, want {want}");
        }
        let got = lanes(|v| unsafe { gelu_tanh512(v) }, &small);
        for (x, g) in small.iter().zip(&got) {
            let want = super::gelu_tanh_scalar(*x);
            assert!((g - want).abs() < 2e-6, "gelu_tanh({x}) = {g}, want {want}");
        }
    }

    #[test]
    fn vector_softmax_matches_the_scalar_softmax() {
        if !available() {
            println!("skipped: this CPU has no AVX-512 (the scalar path is used)");
            return;
        }
        for n in [1usize, 5, 16, 17, 40, 129] {
            let row: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
                .collect();
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            let mut got = row.clone();
            // SAFETY: available() checked above.
            unsafe { softmax_row(&mut got) };
            for (v, g) in row.iter().zip(&got) {
                let want = (v - max).exp() / sum;
                assert!((g - want).abs() < 1e-6, "n={n}: {g} vs {want}");
            }
        }
    }
}
