//! `lookahead demo` end to end on the shared routing dataset (skips, with the reason, when the
//! dataset or the MiniLM backbone is absent): the n-gram router is trained with its gate on
//! cross-fitted evidence, replay members and the real router serve on loopback, and the table,
//! the verdict and the gate's line are printed for the prompts sent over HTTP.
#![cfg(test)]

use std::process::Command;

#[test]
fn demo_routes_held_out_prompts_through_the_ngram_router_and_reports_its_gate() {
    let data = match lookahead_data::locate::shared_dataset() {
        Ok(d) => d,
        Err(why) => return eprintln!("SKIP: {why}"),
    };
    let backbone = lookahead_model::default_backbone_dir();
    if !backbone.join("model.safetensors").is_file() {
        return eprintln!(
            "SKIP: no backbone at {} (scripts/setup.sh)",
            backbone.display()
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["demo", "--data"])
        .arg(&data)
        .arg("--artifact")
        .arg(tmp.path().join("ngram"))
        .args(["--sources", "HumanEval,MBPP", "--max-train", "200"])
        .arg("--no-lookahead-line")
        .env("HOME", tmp.path())
        .env("LOOKAHEAD_BACKBONE", &backbone)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| **n-gram (routed, no encoder)** |"),
        "{stdout}"
    );
    assert!(stdout.contains("| oracle (best per prompt) |"), "{stdout}");
    assert!(stdout.contains("every single model (best: "), "{stdout}");
    assert!(stdout.contains("cross-fitted over 5 folds"), "{stdout}");
    assert!(
        !stdout.contains("Lookahead-lite"),
        "the line was skipped: {stdout}"
    );
    // Every held-out prompt of the two sources came back through the router.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Lookahead demo: "))
        .unwrap_or_default();
    assert!(line.contains(" ok, 0 failed, 0 failed open)"), "{line}");
    // The demo's wall time against its budget (6 minutes by default), with its training.
    assert!(
        stdout.contains("s budget (training: served router "),
        "{stdout}"
    );
    assert!(stdout.contains("Lookahead line none"), "{stdout}");
}
