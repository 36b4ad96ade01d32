//! `lookahead scorer --device`: the flag the operator passes on GPU nodes is understood, and a
//! device this build cannot use is a clear start-up error, not a crash loop without a reason.
#![cfg(test)]

use std::process::Command;

fn scorer(device: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args([
            "scorer",
            "--artifact",
            "/nonexistent",
            "--listen",
            "127.0.0.1:0",
            "--device",
            device,
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("lookahead runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_device_is_rejected_by_name() {
    let (ok, err) = scorer("tpu");
    assert!(!ok);
    assert!(err.contains("--device must be cpu or cuda"), "{err}");
}

/// Without CUDA in the build the error names the feature. A CUDA build on a machine without a
/// usable GPU (scripts/check-cuda-build.sh runs it with a stub driver) must say so and exit; with
/// a GPU it gets past the device to the missing artifact.
#[test]
fn cuda_device_that_cannot_be_used_is_an_error_not_a_panic() {
    let (ok, err) = scorer("cuda");
    assert!(!ok);
    assert!(!err.contains("panicked"), "{err}");
    if candle_core::utils::cuda_is_available() {
        assert!(
            err.contains("CUDA device 0 is not usable") || err.contains("loading /nonexistent"),
            "{err}"
        );
    } else {
        assert!(err.contains("--features cuda"), "{err}");
    }
}
