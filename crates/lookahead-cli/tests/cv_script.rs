#![cfg(test)]
//! `scripts/cv.sh` with a stub `lookahead` binary (records its calls, writes what train and eval
//! would): per seed, every fold is trained with `--seed`, each seed is evaluated with its
//! predictions written, `VERSUS` is evaluated first and compared per seed, the summary has a row
//! per seed and the mean over seeds, and a re-run keeps the existing artifacts; with `SALTS`, each
//! fold assignment is trained and evaluated with its salt and summarised with the others. Also
//! shellcheck, when it is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = r#"#!/usr/bin/env bash
set -euo pipefail
echo "$*" >>"$STUB_LOG"
cmd=$1; shift
out=; pred=; json=; versus=
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift ;;
    --predictions-out) pred=$2; shift ;;
    --json-out) json=$2; shift ;;
    --versus) versus=$2; shift ;;
  esac
  shift
done
gain() { echo "{\"kind\": \"$1\", \"name\": \"$2\", \"score\": $3, \"gain\": {\"gain\": $4, \"lower\": -0.5, \"upper\": 2.5}}"; }
case $cmd in
  train) mkdir -p "$out"; echo '{}' >"$out/router.json" ;;
  eval)
    [[ -z $versus || -f $versus ]] || { echo "no $versus" >&2; exit 1; }
    echo '{"id": "r1"}' >"$pred"
    comps="$(gain honest_bar bar 68.8 1.0), $(gain best_single single 64.5 5.0)"
    [[ -z $versus ]] || comps="$comps, $(gain versus "$versus" 69.0 0.25)"
    echo "{\"average\": 69.8, \"comparisons\": [$comps]}" >"$json"
    echo "tables" ;;
esac
"#;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cv.sh")
}

/// The stub `lookahead` binary, executable, in `dir`.
fn write_stub(dir: &Path) -> PathBuf {
    let stub = dir.join("stub");
    std::fs::write(&stub, STUB).unwrap();
    Command::new("chmod").arg("+x").arg(&stub).status().unwrap();
    stub
}

fn run_cv(dir: &Path) -> String {
    run_cv_with(
        dir,
        &[("METHODS", "lite"), ("VERSUS", "mlc"), ("SEEDS", "1 2")],
    )
}

/// `scripts/cv.sh` over the stub in `dir`, 2 folds, with `env` set.
fn run_cv_with(dir: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .env("BIN", dir.join("stub"))
        .env("STUB_LOG", dir.join("calls.log"))
        .env("OUT", dir.join("cv"))
        .env("FOLDS", "2")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cv_trains_per_seed_compares_with_versus_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    write_stub(dir.path());

    let stdout = run_cv(dir.path());
    let log = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    let trains: Vec<&&str> = calls.iter().filter(|c| c.starts_with("train")).collect();
    assert_eq!(trains.len(), 8, "2 methods x 2 seeds x 2 folds: {log}");
    for seed in ["1", "2"] {
        for method in ["lite", "mlc"] {
            let n = trains
                .iter()
                .filter(|c| c.contains(&format!("--method {method} ")))
                .filter(|c| c.contains(&format!("--seed {seed} ")))
                .count();
            assert_eq!(n, 2, "{method} seed {seed}: {log}");
        }
    }
    let evals: Vec<&&str> = calls.iter().filter(|c| c.starts_with("eval")).collect();
    assert_eq!(evals.len(), 4, "{log}");
    let cv = dir.path().join("cv");
    // mlc first, then lite compared with the same seed's mlc predictions.
    assert!(evals[0].contains("base-mlc-s1-f0,") && !evals[0].contains("--versus"));
    let lite_s2 = evals
        .iter()
        .find(|c| c.contains("base-lite-s2-f0"))
        .unwrap();
    let versus = format!("--versus {}", cv.join("base-mlc-s2-cv.jsonl").display());
    assert!(lite_s2.contains(&versus), "{lite_s2}");
    assert!(lite_s2.contains("--predictions-out") && lite_s2.contains("--folds 2"));
    assert!(cv.join("base-lite-s1-cv.jsonl").is_file());
    assert!(cv.join("base-lite-s1-cv.md").is_file());

    let summary = std::fs::read_to_string(cv.join("base-summary.md")).unwrap();
    assert!(stdout.trim_end().ends_with(summary.trim_end()), "{stdout}");
    assert!(
        summary.contains("versus: mlc (its predictions of the same seed"),
        "{summary}"
    );
    assert!(
        summary.contains("| lite | 1 | 69.80 | 68.80 | +1.00 [-0.50, +2.50] | 64.50 |"),
        "{summary}"
    );
    assert!(
        summary.contains("| **lite** | mean of 2 | **69.80** |"),
        "{summary}"
    );
    assert!(summary.contains("+0.25 (runs +0.25 … +0.25)"), "{summary}");
    assert!(summary.contains("| **mlc** | mean of 2 |"), "{summary}");

    // A re-run trains nothing: the artifacts are kept.
    run_cv(dir.path());
    let log = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert_eq!(log.lines().filter(|c| c.starts_with("train")).count(), 8);
}

/// `SALTS="- b"`: the folds of each assignment are trained and evaluated with its salt (`-` is
/// none), its runs are named after it, and the summary has a row per assignment and their mean.
#[test]
fn cv_runs_each_fold_assignment_and_summarises_over_them() {
    let dir = tempfile::tempdir().unwrap();
    write_stub(dir.path());

    run_cv_with(dir.path(), &[("METHODS", "ngram"), ("SALTS", "- b")]);
    let log = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    let salted = |kind: &str, salt: &str| {
        calls
            .iter()
            .filter(|c| c.starts_with(kind))
            .filter(|c| c.contains(&format!("--split-salt {salt}--")))
            .count()
    };
    // The stub logs "--split-salt  --…" for the empty salt (two spaces: an empty argument).
    assert_eq!(salted("train", " "), 2, "{log}");
    assert_eq!(salted("train", "b "), 2, "{log}");
    assert_eq!(salted("eval", " "), 1, "{log}");
    assert_eq!(salted("eval", "b "), 1, "{log}");
    let cv = dir.path().join("cv");
    assert!(cv.join("base-ngram-s17-f1").is_dir());
    assert!(cv.join("base-saltb-ngram-s17-f1").is_dir());
    assert!(cv.join("base-saltb-ngram-s17-cv.jsonl").is_file());
    let summary = std::fs::read_to_string(cv.join("base-summary.md")).unwrap();
    assert!(summary.contains("| ngram | 17 | 69.80 |"), "{summary}");
    assert!(
        summary.contains("| ngram | 17, salt b | 69.80 |"),
        "{summary}"
    );
    assert!(
        summary.contains("| **ngram** | mean of 2 | **69.80** |"),
        "{summary}"
    );
}

/// Without `SOURCES`, the script folds the benchmark sources `DATA` has, or all of a dataset's
/// sources when it has none of them (another team's data).
#[test]
fn cv_folds_the_datas_own_sources_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let stub = write_stub(dir.path());
    let sources_of = |manifest: &str| {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("manifest.json"), manifest).unwrap();
        let _ = std::fs::remove_file(dir.path().join("calls.log"));
        let _ = std::fs::remove_dir_all(dir.path().join("cv"));
        let out = Command::new("bash")
            .arg(script())
            .env("BIN", &stub)
            .env("STUB_LOG", dir.path().join("calls.log"))
            .env("OUT", dir.path().join("cv"))
            .env("DATA", &data)
            .env("FOLDS", "2")
            .env("METHODS", "ngram")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
        let train = log
            .lines()
            .find(|c| c.starts_with("train"))
            .unwrap()
            .to_string();
        train
            .split("--sources ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let other = r#"{"chat": {"score_range": [0, 1], "models": ["a"]}, "code": {"score_range": [0, 1], "models": ["a"]}}"#;
    assert_eq!(sources_of(other), "chat,code");
    let shared = r#"{"MBPP": {"score_range": [0, 1], "models": ["a"]}, "GSM8K": {"score_range": [0, 1], "models": ["a"]}, "SelfOSSInstruct": {"score_range": [0, 1], "models": ["a"]}}"#;
    assert_eq!(sources_of(shared), "GSM8K,MBPP");
}

#[test]
fn cv_script_passes_shellcheck_when_installed() {
    let Ok(out) = Command::new("shellcheck").arg(script()).output() else {
        eprintln!("SKIP: shellcheck is not installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
