//! `--device cuda`: GPU 0, or an error that says why this binary cannot use it.

use anyhow::Context;
use candle_core::Device;

/// GPU 0. A candle built without CUDA refuses every CUDA device, so the error names the feature
/// (however it was enabled: `lookahead-cli/cuda` or `lookahead-model/cuda`); a CUDA build fails
/// when the machine has no GPU or no NVIDIA driver (candle's error is the cause).
pub fn cuda() -> anyhow::Result<Device> {
    Device::new_cuda(0).context(if candle_core::utils::cuda_is_available() {
        "--device cuda: CUDA device 0 is not usable (no NVIDIA GPU or driver on this machine?)"
    } else {
        "--device cuda: this binary was built without CUDA support (cargo build --features cuda)"
    })
}
