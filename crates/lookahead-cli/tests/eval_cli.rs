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
