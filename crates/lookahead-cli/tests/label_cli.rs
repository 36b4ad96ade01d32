//! The `lookahead label` binary against a `lookahead replay` process serving gemma-2-9b-it's
//! recorded answers (real HTTP on loopback), on GSM8K records of the shared routing dataset with
//! that member's responses removed. Skips, with the reason, when the dataset is absent.
#![cfg(test)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn data_dir() -> Option<PathBuf> {
    lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn label_binary_asks_a_replay_member_and_writes_the_summary() {
    let Some(shared) = data_dir() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let gsm = serde_json::json!({ "GSM8K": manifest["GSM8K"] });
    std::fs::write(data.join("manifest.json"), gsm.to_string()).expect("write manifest");
    let mut lines = Vec::new();
    let gz = flate2::read::GzDecoder::new(
        std::fs::File::open(shared.join("GSM8K.jsonl.gz")).expect("GSM8K"),
    );
    for line in BufReader::new(gz).lines().take(5) {
        let mut record: serde_json::Value =
            serde_json::from_str(&line.expect("line")).expect("record");
        record["responses"]
            .as_object_mut()
            .expect("responses")
            .remove("gemma-2-9b-it");
        lines.push(record.to_string());
    }
    std::fs::File::create(data.join("GSM8K.jsonl"))
        .and_then(|mut f| f.write_all((lines.join("\n") + "\n").as_bytes()))
        .expect("write records");

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let replay = Child(
        Command::new(env!("CARGO_BIN_EXE_lookahead"))
            .args([
                "replay",
                "--model",
                "gemma-2-9b-it",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
            ])
            .arg(&shared)
            .stderr(Stdio::null())
            .spawn()
            .expect("replay starts"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replay did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pool = tmp.path().join("pool.yaml");
    std::fs::write(
        &pool,
        format!(
            "members:\n  - {{ name: gemma, modelId: gemma-2-9b-it, baseUrl: \"http://127.0.0.1:{port}/v1\" }}\npolicy:\n  method: random\n"
        ),
    )
    .expect("pool config");
    let summary = tmp.path().join("summary.json");
    let out = tmp.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .args(["label", "--members", "gemma", "--json", "--pool"])
        .arg(&pool)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--summary-file")
        .arg(&summary)
        .output()
        .expect("label runs");
    drop(replay);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("--json prints one object");
    assert_eq!(report["asked"], 5);
    assert_eq!(report["graded"], 5);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary written"))
            .expect("summary json");
    assert_eq!(summary["promptsLabelled"], 5);
    assert!(
        summary.to_string().len() < 4096,
        "fits a termination message"
    );
    assert!(out.join("GSM8K.jsonl.gz").is_file());
}
