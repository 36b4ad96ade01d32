//! Numeric kernels under every model: AVX-512 element-wise code ([`simd`]), int8 linear layers
//! ([`quant`]), fused CPU attention ([`attention`]) and ops with a backward pass ([`ops`]).

pub mod attention;
pub mod ops;
pub mod quant;
pub mod simd;
