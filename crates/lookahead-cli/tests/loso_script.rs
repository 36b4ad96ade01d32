#![cfg(test)]
//! `scripts/leave-one-source-out.sh` with the real `lookahead` binary on a small dataset of four
//! sources: each source is held out once, routed by a router trained on the other three, and
//! compared with the model that router's artifact falls back to (`lookahead eval --split all`
//! adds that comparison for a single artifact by itself). Also shellcheck, when it is installed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/leave-one-source-out.sh")
}

/// One gzipped JSONL source of `n` records: prompt `i` and the members' scores for it.
fn write_source(dir: &Path, source: &str, n: usize, record: impl Fn(usize) -> (String, [f64; 3])) {
    let file = std::fs::File::create(dir.join(format!("{source}.jsonl.gz"))).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    for i in 0..n {
        let (prompt, scores) = record(i);
        let responses: serde_json::Map<String, serde_json::Value> = ["a", "b", "c"]
            .iter()
            .zip(scores)
            .map(|(m, s)| {
                (
                    m.to_string(),
                    serde_json::json!({"text": "...", "score": s}),
                )
            })
            .collect();
        let line = serde_json::json!({"id": format!("{source}-{i}"), "source": source,
            "prompt": prompt, "responses": responses});
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap();
}

/// `chat`: poems go best to `b`, essays to `a`. `code`: `c` passes. `maths`: `a` is best, `c`
/// next. `stories`: poems and essays worded apart from `chat`'s, best to the same members. The
/// best single model of the first three together is `c`, which writes neither poems nor essays.
fn write_dataset(dir: &Path) {
    let topics = [
        "rivers", "winter", "the sea", "trains", "music", "gardens", "bread", "storms",
    ];
    let topic = |i: usize| topics[i % topics.len()];
    write_source(dir, "chat", 160, |i| {
        if i % 2 == 0 {
            (
                format!("Write a short poem about {}, take {i}.", topic(i)),
                [0.4, 0.9, 0.1],
            )
        } else {
            (
                format!("Write a formal essay on {}, take {i}.", topic(i)),
                [0.9, 0.3, 0.2],
            )
        }
    });
    write_source(dir, "code", 160, |i| {
        let prompt = format!(
            "Write a Python function returning row {i} of the {} table.",
            topic(i)
        );
        (prompt, [0.0, 0.0, 1.0])
    });
    write_source(dir, "maths", 160, |i| {
        (
            format!("Compute {i} times {} plus seven.", i + 3),
            [0.7, 0.2, 0.5],
        )
    });
    write_source(dir, "stories", 80, |i| {
        if i % 2 == 0 {
            (
                format!("For my daughter: a poem about {}, number {i}", topic(i)),
                [0.4, 0.9, 0.1],
            )
        } else {
            (
                format!("Homework help: an essay about {}, number {i}", topic(i)),
                [0.9, 0.3, 0.2],
            )
        }
    });
    let models = serde_json::json!({"score_range": [0, 1], "models": ["a", "b", "c"]});
    let manifest = serde_json::json!({"chat": models, "code": models, "maths": models,
        "stories": models});
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

#[test]
fn each_source_is_routed_by_a_router_that_never_saw_it_against_its_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_dataset(&data);
    let out = dir.path().join("loso");
    let run = Command::new("bash")
        .arg(script())
        .env("BIN", env!("CARGO_BIN_EXE_lookahead"))
        .env("DATA", &data)
        .env("OUT", &out)
        .env("NICE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let summary = std::fs::read_to_string(out.join("base-summary.md")).unwrap();
    assert!(
        String::from_utf8_lossy(&run.stdout).contains(summary.trim_end()),
        "{summary}"
    );

    // Trained without `stories`, on the other three.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("base-stories/router.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["sources"],
        serde_json::json!(["chat", "code", "maths"]),
        "{meta}"
    );
    assert_eq!(meta["acceptance"]["fallbackModel"], "c", "{meta}");

    let row = |source: &str| -> Vec<String> {
        let line = summary
            .lines()
            .find(|l| l.starts_with(&format!("| {source} |")))
            .unwrap_or_else(|| panic!("no {source} row: {summary}"));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    // Every stories prompt goes to its best member, by what "poem" and "essay" meant in chat,
    // against the fallback `c`, which writes neither.
    let stories = row("stories");
    assert_eq!(&stories[2..4], ["80", "90.00"], "{summary}");
    assert!(stories[4].starts_with("c 15.00"), "{summary}");
    assert!(stories[5].starts_with("+75.00"), "{summary}");
    for source in ["chat", "code", "maths"] {
        assert_eq!(row(source)[2], "160", "{summary}");
    }
    assert!(summary.contains("| **mean of 4** | 560 |"), "{summary}");
}

#[test]
fn leave_one_source_out_script_passes_shellcheck_when_installed() {
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
