//! `lookahead train` and its acceptance gate on the shared routing dataset (skips, with the
//! reason, when the dataset or the MiniLM backbone is absent): a deliberately weak MLC router (24
//! records of the judged sources, one epoch) is not accepted against the best single model; the
//! verdict is printed, written into `router.json` and into the `--summary-file` JSON the
//! operator reads; `--min-gain` moves the bar.
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn inputs() -> Option<PathBuf> {
    let data = lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()?;
    let backbone = lookahead_model::default_backbone_dir();
    if !backbone.join("model.safetensors").is_file() {
        eprintln!(
            "SKIP: no backbone at {} (run scripts/setup.sh)",
            backbone.display()
        );
        return None;
    }
    Some(data)
}

/// Trains the weak router into `dir/<name>` with `--min-gain min_gain` and `extra` flags; its
/// stdout.
fn train(data: &Path, dir: &Path, name: &str, min_gain: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["train", "--method", "mlc", "--data"])
        .arg(data)
        .args([
            "--sources",
            "MT-Bench,ArenaHard,AlpacaEval",
            "--max-train",
            "24",
        ])
        .args(["--quiet", "--min-gain", min_gain])
        .args(if extra.is_empty() {
            &["--epochs", "1"]
        } else {
            extra
        })
        .arg("--out")
        .arg(dir.join(name))
        .arg("--states")
        .arg(dir.join("states"))
        .arg("--summary-file")
        .arg(dir.join(format!("{name}.json")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_weak_router_is_not_accepted_and_says_so_in_router_json_and_the_summary() {
    let Some(data) = inputs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stdout = train(&data, dir.path(), "weak", "0", &[]);
    assert!(stdout.contains("acceptance: not accepted"), "{stdout}");

    let summary = json(&dir.path().join("weak.json"))["acceptance"].clone();
    assert_eq!(summary["accepted"], false, "{summary}");
    assert!(summary["lowerBound"].as_f64().unwrap() < 0.0, "{summary}");
    assert_eq!(summary["minGain"], 0.0);
    let fallback = summary["fallbackModel"].as_str().unwrap().to_string();
    assert!(
        lookahead_data::PAPER_POOL.contains(&fallback.as_str()),
        "{fallback}"
    );
    let summary_bytes = std::fs::metadata(dir.path().join("weak.json"))
        .unwrap()
        .len();
    assert!(
        summary_bytes <= 4096,
        "a termination message holds 4 KiB: {summary_bytes}"
    );
    let meta = json(&dir.path().join("weak/router.json"));
    assert_eq!(
        meta["acceptance"], summary,
        "router.json and the summary agree"
    );

    // The same router against a bar far below it is accepted, with the same figures.
    let stdout = train(&data, dir.path(), "lenient", "-50", &[]);
    assert!(stdout.contains("acceptance: accepted"), "{stdout}");
    let lenient = json(&dir.path().join("lenient.json"))["acceptance"].clone();
    assert_eq!(lenient["accepted"], true);
    assert_eq!(lenient["minGain"], -50.0);
    assert_eq!(lenient["lowerBound"], summary["lowerBound"]);
}

/// What `lookahead demo` asks of its Lookahead line's training: a spent `--time-budget` stops
/// after the first of three epochs and `router.json` says so; `--skip-test` leaves the test split
/// unscored, `--no-int8-agreement` leaves the int8 agreement unmeasured, and `--select-on bce`
/// is recorded with the other hyper-parameters.
#[test]
fn a_time_budget_and_the_skips_shorten_training_and_are_recorded() {
    let Some(data) = inputs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--epochs",
        "3",
        "--patience",
        "3",
        "--time-budget",
        "0s",
        "--skip-test",
        "--no-int8-agreement",
        "--select-on",
        "bce",
    ];
    let stdout = train(&data, dir.path(), "budgeted", "-50", &flags);
    assert!(stdout.contains("best epoch 1 of 1 run"), "{stdout}");
    assert!(!stdout.contains("\ntest: "), "{stdout}");
    assert!(!stdout.contains("int8: "), "{stdout}");
    let meta = json(&dir.path().join("budgeted/router.json"));
    assert_eq!(meta["epochs_run"], 1, "{meta}");
    assert_eq!(meta["hyper"]["max_epochs"], 3, "{meta}");
    assert_eq!(meta["hyper"]["selection"], "bce", "{meta}");
    assert!(meta.get("test").is_none(), "{meta}");
    assert!(meta.get("int8_agreement").is_none(), "{meta}");
}

/// `lookahead train --method ensemble` on the real dataset: each member is trained and printed,
/// the ensemble's own validation line and verdict follow, the artifact holds every member's
/// artifact, and `lookahead eval` serves it as one router.
#[test]
fn an_ensemble_trains_its_members_and_eval_serves_the_whole() {
    let Some(data) = inputs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("ensemble");
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["train", "--method", "ensemble", "--members", "ngram,mlc"])
        .arg("--data")
        .arg(&data)
        .args([
            "--sources",
            "MT-Bench,ArenaHard,AlpacaEval",
            "--max-train",
            "60",
        ])
        .args([
            "--epochs",
            "1",
            "--quiet",
            "--no-int8-agreement",
            "--min-gain",
            "-50",
        ])
        .arg("--states")
        .arg(dir.path().join("states"))
        .arg("--out")
        .arg(&art)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "member ngram validation: n=",
        "member mlc validation: n=",
        "\nvalidation: n=",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    assert!(stdout.contains("acceptance: "), "{stdout}");
    let meta = json(&art.join("router.json"));
    assert_eq!(meta["method"], "ensemble", "{meta}");
    assert_eq!(
        meta["hyper"]["members"],
        serde_json::json!(["ngram", "mlc"])
    );
    let ngram = json(&art.join("members/ngram/router.json"));
    assert_eq!(ngram["method"], "ngram");
    // The strength its fit picked on validation, from scikit-learn's grid of `C`.
    let c = ngram["ngram_strength"].as_f64().unwrap_or_default();
    assert!([0.5, 1.0, 2.0, 4.0].contains(&c), "{ngram}");
    assert_eq!(ngram["hyper"]["ngram_tokens"], "multilingual-words");
    assert_eq!(json(&art.join("members/mlc/router.json"))["method"], "mlc");

    let eval = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["eval", "--data"])
        .arg(&data)
        .args([
            "--sources",
            "MT-Bench,ArenaHard,AlpacaEval",
            "--quiet",
            "--artifact",
        ])
        .arg(&art)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&eval.stdout);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(report.contains("router: ensemble"), "{report}");
    assert!(report.contains("| **average** |"), "{report}");
}
