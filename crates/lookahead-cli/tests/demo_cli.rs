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

/// Another team's data: its own sources and members, none of them the paper's. Writes
/// `manifest.json` and one gzipped JSONL per source: on `chat`, poems go best to `b` and essays
/// to `a`; on `code`, `c` passes the tests and the others do not.
fn write_other_dataset(dir: &std::path::Path) {
    use std::io::Write as _;
    let topics = [
        "rivers",
        "cities",
        "winter",
        "friendship",
        "the sea",
        "mountains",
        "trains",
        "music",
        "gardens",
        "the moon",
        "bread",
        "forests",
        "storms",
        "books",
        "bridges",
        "time",
    ];
    let record = |id: String, source: &str, prompt: String, scores: [f64; 3]| {
        let responses: serde_json::Map<String, serde_json::Value> = ["a", "b", "c"]
            .iter()
            .zip(scores)
            .map(|(m, score)| {
                (
                    m.to_string(),
                    serde_json::json!({"text": "...", "score": score}),
                )
            })
            .collect();
        serde_json::json!({"id": id, "source": source, "prompt": prompt, "responses": responses})
    };
    let mut chat = Vec::new();
    let mut code = Vec::new();
    for i in 0..240 {
        let topic = topics[i % topics.len()];
        chat.push(if i % 2 == 0 {
            record(
                format!("chat-{i}"),
                "chat",
                format!("Write a short poem about {topic}, variant {i}."),
                [0.4, 0.9, 0.1],
            )
        } else {
            record(
                format!("chat-{i}"),
                "chat",
                format!("Write a formal essay on {topic}, variant {i}."),
                [0.9, 0.3, 0.2],
            )
        });
        code.push(record(
            format!("code-{i}"),
            "code",
            format!("Write a Python function that returns the {i}th value of the {topic} table."),
            [0.0, (i % 3 == 0) as u8 as f64, 1.0],
        ));
    }
    for (source, records) in [("chat", chat), ("code", code)] {
        let file = std::fs::File::create(dir.join(format!("{source}.jsonl.gz"))).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        for r in records {
            writeln!(gz, "{r}").unwrap();
        }
        gz.finish().unwrap();
    }
    let manifest = serde_json::json!({
        "chat": {"score_range": [0, 1], "models": ["a", "b", "c"]},
        "code": {"score_range": [0, 1], "models": ["a", "b", "c"]},
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

/// `lookahead demo` on a dataset that shares nothing with the paper's (other source names, other
/// members, no encoder backbone installed): the pool is the members its manifest lists for every
/// source, the held-out prompts are all its sources', and the n-gram router routes them through
/// the real router and replay members, beating every single member.
#[test]
fn demo_on_another_teams_data_routes_its_own_members_without_a_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_other_dataset(&data);
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["demo", "--data"])
        .arg(&data)
        .arg("--artifact")
        .arg(tmp.path().join("ngram"))
        .arg("--no-lookahead-line")
        .env("HOME", tmp.path())
        .env("LOOKAHEAD_BACKBONE", tmp.path().join("no-backbone"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("3 models, trained on [\"chat\", \"code\"]"),
        "{stderr}"
    );
    for member in ["| a (always) |", "| b (always) |", "| c (always) |"] {
        assert!(stdout.contains(member), "{member} missing: {stdout}");
    }
    assert!(
        stdout.contains("the routed row beats every single model"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Lookahead demo: "))
        .unwrap_or_default();
    assert!(line.contains("(2 benchmarks)"), "{line}");
    assert!(line.contains(" ok, 0 failed, 0 failed open)"), "{line}");
}
