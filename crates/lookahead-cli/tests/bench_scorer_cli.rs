//! `lookahead bench scorer --router-only`: an n-gram artifact trained by the real binary on the
//! shared routing dataset (skips, with the reason, when it is absent) is timed without the
//! encoder's rows and without a backbone on disk.
#![cfg(test)]

use std::process::Command;

#[test]
fn bench_scorer_times_an_ngram_router_alone_without_a_backbone() {
    let data = match lookahead_data::locate::shared_dataset() {
        Ok(data) => data,
        Err(why) => return eprintln!("SKIP: {why}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("ngram");
    let train = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["train", "--method", "ngram", "--quiet", "--data"])
        .arg(&data)
        .args(["--sources", "MT-Bench,HumanEval", "--max-train", "120"])
        .arg("--out")
        .arg(&art)
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );

    let bench = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["bench", "scorer", "--router-only", "--artifact"])
        .arg(&art)
        .arg("--backbone")
        .arg(tmp.path().join("no-backbone-here"))
        .args(["--precision", "f32", "--lengths", "32,128", "--iters", "5"])
        .args(["--batch", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| router"))
        .collect();
    assert_eq!(rows.len(), 3, "two lengths and the batch row:\n{stdout}");
    for row in rows {
        assert!(
            row.contains(
                "router ngram decision f32 (multilingual-words tokens of the whole prompt"
            ),
            "{row}"
        );
    }
    assert!(!stdout.contains("encoder"), "{stdout}");
}
