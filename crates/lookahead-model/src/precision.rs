//! Which weight precision an artifact serves at. `int8` scores 2–4× faster on CPUs with AVX-512
//! VNNI but may pick another model than the trained f32 weights on a few prompts, so `auto`
//! serves int8 only where both hold: the CPU has the kernels, and `lookahead train` measured on
//! the validation prompts that int8 decides as f32 does on at least
//! [`INT8_AGREEMENT_FLOOR`] of them ([`crate::agreement`]).

use candle_core::Device;

use crate::artifact::{BackboneKind, Method, RouterMeta};
use crate::kernels::quant::Precision;
use crate::kernels::simd;

/// The least share of validation decisions int8 must share with f32 for `auto` to serve it.
pub const INT8_AGREEMENT_FLOOR: f64 = 0.99;

/// Whether the artifact's scorer has an int8 form (lite, MLC and kNN on a BERT encoder).
pub fn has_int8(meta: &RouterMeta) -> bool {
    matches!(meta.method, Method::Lite | Method::Mlc | Method::Knn)
        && meta.backbone.kind == BackboneKind::Bert
}

/// The precision a scorer of `meta` runs at when `requested`: `f32` and `int8` as asked; `auto`
/// int8 on a CPU with the AVX-512 VNNI kernels for an artifact whose measured agreement reaches
/// the floor, f32 otherwise.
pub fn serving_precision(meta: &RouterMeta, requested: Precision, device: &Device) -> Precision {
    match requested {
        Precision::Auto
            if has_int8(meta)
                && device.is_cpu()
                && simd::available()
                && meta
                    .int8_agreement
                    .is_some_and(|a| a >= INT8_AGREEMENT_FLOOR) =>
        {
            Precision::Int8
        }
        Precision::Auto => Precision::F32,
        asked => asked,
    }
}
