//! `lookahead scorer --device`: the flag the operator passes on GPU nodes is understood, and a
//! device this build cannot use is a clear start-up error, not a crash loop without a reason.

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

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_cuda_build_says_so() {
    let (ok, err) = scorer("cuda");
    assert!(!ok);
    assert!(err.contains("--features cuda"), "{err}");
}
