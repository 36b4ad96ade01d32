//! The official `openai` Python package against the router in front of replay members.
//! Skips (with the reason printed) when python3 or the package is missing: `pip install openai`.
#![cfg(test)]

mod common;

use std::sync::Arc;

use common::*;
use lookahead_replay::ReplayOptions;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};

fn openai_available() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("the openai package is not installed (pip install openai)".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_chat_stream_completions_models_and_errors() {
    if let Err(reason) = openai_available() {
        eprintln!("SKIP openai client test: {reason}");
        return;
    }
    let answer = "The integral of x is x squared over two, plus a constant.";
    let opts = ReplayOptions {
        chunk_chars: 8,
        ..Default::default()
    };
    let math = replay("Math-7B", &[("an integral please", answer)], opts.clone()).await;
    let general = replay(
        "General-7B",
        &[("an integral please", "general answer")],
        opts,
    )
    .await;
    let keys = tempfile::NamedTempFile::new().expect("keys");
    std::fs::write(keys.path(), "sk-test\n").expect("write");
    let cfg = config(
        &[("math", "Math-7B", math.url()), ("general", "General-7B", general.url())],
        &format!(
            "  method: lookahead-lite\n  artifact: /unused\n  defaultModel: general\n  apiKeysFile: {}\n",
            keys.path().display()
        ),
    );
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    let source = ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "t".into())));
    let r = router(Router::new(&cfg, source).expect("router")).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let base = format!("http://{}/v1", r.addr);
    let out = tokio::process::Command::new("python3")
        .args([script, &base, answer])
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("client finished in time")
        .expect("python3 ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json line");
    assert_eq!(seen["completion_text"], "general answer");
    assert_eq!(
        seen["models"],
        serde_json::json!(["auto", "math", "general"])
    );
    assert_eq!(seen["unknown_model"], 404);
    assert!(seen["chat_scores_header"]
        .as_str()
        .is_some_and(|s| s.starts_with("math=")));
}
