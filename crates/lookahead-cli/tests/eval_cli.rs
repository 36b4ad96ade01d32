//! The `lookahead eval` binary on the shared routing dataset (skips, with the reason, when absent):
//! `--json` prints exactly one JSON object with the documented schema; `--report` writes the files.
#![cfg(test)]

use std::path::PathBuf;
use std::process::Command;

fn data_dir() -> Option<PathBuf> {
    lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()
}

const POOL: &str = "Yi-1.5-34B-Chat,internlm2_5-20b-chat,Phi-3-medium-4k-instruct,\
                    Llama-3.1-8B-Instruct,Qwen2.5-Coder-7B-Instruct";

#[test]
fn eval_json_is_one_object_with_the_schema_and_report_is_written() {
    let Some(data) = data_dir() else { return };
    let report = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["eval", "--data"])
        .arg(&data)
        .args(["--sources", "GSM8K,MBPP", "--router", "random", "--split", "all", "--json"])
        .args(["--models", POOL])
        .args(["--prices", "Yi-1.5-34B-Chat=34,internlm2_5-20b-chat=20,Phi-3-medium-4k-instruct=14,Llama-3.1-8B-Instruct=8,Qwen2.5-Coder-7B-Instruct=7"])
        .arg("--report")
        .arg(report.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for key in ["average", "oracle", "random"] {
        assert!(v[key].as_f64().is_some(), "{key}");
    }
    assert!(v["best_single"]["model"].is_string());
    assert!(v["best_single"]["average"].is_f64());
    for source in ["GSM8K", "MBPP"] {
        let s = &v["sources"][source];
        assert!(s["n"].as_u64().unwrap() > 100, "{source}");
        for key in ["router", "oracle", "random", "best_single"] {
            assert!(s[key].as_f64().is_some(), "{source}.{key}");
        }
        let share: f64 = s["share"]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((share - 1.0).abs() < 1e-9);
    }
    assert!(v["oracle"].as_f64() > v["best_single"]["average"].as_f64());
    for file in ["report.md", "share.svg", "quality_cost.svg"] {
        assert!(report.path().join(file).is_file(), "{file}");
    }
}

/// `lookahead eval --calibrate` on the shared dataset (the oracle's predictions, the example
/// LLMPool's prices): the printed weight, applied with plain `lookahead eval --cost-weight`,
/// routes at most the target share to Yi, with the quality the snippet promised.
#[test]
fn calibrate_prints_a_weight_that_eval_confirms_meets_the_share_target() {
    let Some(data) = data_dir() else { return };
    let pool =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples/pool.yaml");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
            .args(["eval", "--data"])
            .arg(&data)
            .args([
                "--sources",
                "GSM8K,MBPP",
                "--router",
                "oracle",
                "--models",
                POOL,
            ])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let pool_arg = pool.to_str().unwrap();
    let (ok, stdout, stderr) = run(&[
        "--calibrate",
        "--pool",
        pool_arg,
        "--max-share",
        "yi-34b=0.05",
    ]);
    assert!(ok, "{stderr}");
    let weight = stdout
        .split("spec:\n  objective:\n    costWeight: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no snippet in {stdout}"));
    let w: f64 = weight.parse().unwrap();
    assert!(w > 0.0, "{stdout}");
    assert!(stdout.contains(&format!("| {weight} ◀ |")), "{stdout}");
    assert!(
        stdout.contains("share of Yi-1.5-34B-Chat <= 5.0%"),
        "{stdout}"
    );
    let promised = stdout
        .split("# expected equal-weight score ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no expectation in {stdout}"))
        .to_string();

    // The router's price is the mean of in/out per MTok: the example pool's 0.6, 0.4, 0.2, 0.1, 0.1.
    let prices = "Yi-1.5-34B-Chat=0.6,internlm2_5-20b-chat=0.4,Phi-3-medium-4k-instruct=0.2,\
                  Llama-3.1-8B-Instruct=0.1,Qwen2.5-Coder-7B-Instruct=0.1";
    let (ok, stdout, stderr) = run(&["--prices", prices, "--cost-weight", weight, "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let yi = v["share"]["Yi-1.5-34B-Chat"].as_f64().unwrap();
    assert!(yi <= 0.05 + 1e-12, "Yi share {yi} at costWeight {weight}");
    assert_eq!(format!("{:.2}", v["average"].as_f64().unwrap()), promised);

    // A target no weight reaches: the clear error with the best reachable.
    let (ok, _, stderr) = run(&["--calibrate", "--pool", pool_arg, "--max-mean-price", "0"]);
    assert!(!ok);
    assert!(
        stderr.contains("mean price per request <= 0: the best any costWeight reaches is"),
        "{stderr}"
    );
}
