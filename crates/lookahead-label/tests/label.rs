//! `lookahead label` against replay members serving the routing dataset's recorded answers, and
//! against judge stubs over real HTTP on loopback.
#![cfg(test)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use lookahead_data::{read_records, Dataset, Record};
use lookahead_label::{self as label, GradersConfig, JudgeConfig, LabelJob, SandboxLimits};
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};

const NEW_MEMBER: &str = "gemma-2-9b-it";

/// The routing dataset, when present (CI has it).
fn data_dir() -> Option<PathBuf> {
    lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()
}

/// Serves `app` on loopback for the rest of the test; returns its base URL (without `/v1`).
async fn serve_app(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A replay member answering from `book`.
async fn member(book: ReplayBook) -> String {
    serve_app(Arc::new(ReplayServer::new(book, ReplayOptions::default())).app()).await
}

/// A judge endpoint answering with `judge`'s verdict.
async fn judge(judge: Arc<StubJudge>) -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(judge_verdict))
        .with_state(judge);
    serve_app(app).await
}

/// A pool config with one member, `gemma` (the dataset's `gemma-2-9b-it`), at `url`.
fn pool(url: &str) -> lookahead_api::RouterConfig {
    let yaml = format!(
        "listen: 127.0.0.1:0\nmembers:\n  - {{ name: gemma, modelId: {NEW_MEMBER}, baseUrl: \"{url}/v1\" }}\npolicy:\n  method: random\n"
    );
    serde_yaml::from_str(&yaml).expect("test config")
}

fn write_source(dir: &Path, source: &str, records: &[Record]) {
    let mut f = std::fs::File::create(dir.join(format!("{source}.jsonl"))).expect("create");
    for r in records {
        serde_json::to_writer(&mut f, r).expect("write");
        f.write_all(b"\n").expect("newline");
    }
}

fn job(
    pool: lookahead_api::RouterConfig,
    data: &Path,
    out: &Path,
    limit: usize,
    graders: GradersConfig,
) -> LabelJob {
    LabelJob {
        pool,
        data: data.to_owned(),
        out: out.to_owned(),
        members: vec!["gemma".into()],
        sources: None,
        limit: Some(limit),
        concurrency: 8,
        rate_per_sec: None,
        timeout: Duration::from_secs(10),
        max_tokens: 512,
        attempts: 2,
        graders,
        sandbox: SandboxLimits::default(),
        progress: false,
    }
}

/// GSM8K and MATH prompts with the new member's responses removed are labelled by asking a
/// replay member that serves its recorded answers: the grades reproduce the recorded correctness,
/// nothing is lost or duplicated, and a second, larger run resumes instead of starting over.
#[tokio::test]
async fn labels_a_new_member_from_replay_and_reproduces_recorded_correctness() {
    let Some(shared) = data_dir() else {
        eprintln!("SKIP: routing dataset not found (set LOOKAHEAD_DATA or provide ../shared/data/routing)");
        return;
    };
    let dataset = Dataset::open(&shared).expect("dataset");
    let tmp = tempfile::tempdir().expect("tmp");
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    std::fs::create_dir_all(&data).expect("mkdir");
    let mut manifest = dataset.manifest().clone();
    manifest.sources.retain(|s, _| s == "GSM8K" || s == "MATH");
    std::fs::write(
        data.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("manifest");
    let mut recorded = std::collections::HashMap::new();
    let mut book = ReplayBook::new(NEW_MEMBER);
    for source in ["GSM8K", "MATH"] {
        let mut records: Vec<Record> = dataset
            .records(source)
            .expect("source")
            .take(120)
            .map(|r| r.expect("record"))
            .collect();
        for r in &mut records {
            let response = r
                .responses
                .remove(NEW_MEMBER)
                .expect("gemma has every GSM8K/MATH record");
            book.insert(&r.prompt, response.text.clone());
            recorded.insert(r.id.clone(), response.score);
        }
        write_source(&data, source, &records);
    }
    let member = member(book).await;
    let pool = pool(&member);

    // First run: 40 prompts per source.
    let first = label::run(job(pool.clone(), &data, &out, 40, GradersConfig::default()))
        .await
        .expect("first run");
    assert_eq!(
        (first.asked, first.graded, first.failed),
        (80, 80, 0),
        "{first:?}"
    );
    // Second run over 120 per source: the 80 already journaled are not asked again.
    let second = label::run(job(pool, &data, &out, 120, GradersConfig::default()))
        .await
        .expect("second run");
    assert_eq!(
        (second.asked, second.already_labelled, second.failed),
        (160, 80, 0),
        "{second:?}"
    );
    assert_eq!(second.merged.get(NEW_MEMBER), Some(&240));
    assert_eq!(second.prompts_labelled, 240);

    let (mut agree, mut n) = (0, 0);
    for source in ["GSM8K", "MATH"] {
        let records = read_records(&out.join(format!("{source}.jsonl.gz"))).expect("output");
        assert_eq!(records.len(), 120, "{source}: no record lost or duplicated");
        for r in records {
            let labelled = &r.responses[NEW_MEMBER];
            assert_eq!(labelled.grader.as_deref(), Some("exact-answer"));
            assert_eq!(r.responses.len(), 6, "the five recorded members are kept");
            n += 1;
            agree += usize::from(labelled.score == recorded[&r.id]);
        }
    }
    let rate = agree as f64 / n as f64;
    eprintln!("exact-answer labels agree with recorded correctness on {agree}/{n} = {rate:.3}");
    assert!(rate >= 0.95, "agreement {rate:.3} < 0.95");
    let manifest = Dataset::open(&out)
        .expect("output dataset")
        .manifest()
        .clone();
    assert!(manifest.sources["GSM8K"]
        .models
        .iter()
        .any(|m| m == NEW_MEMBER));
}

/// A judge that always answers `reply`, counting calls.
struct StubJudge {
    reply: String,
    calls: AtomicUsize,
}

async fn judge_verdict(State(judge): State<Arc<StubJudge>>) -> axum::response::Response {
    judge.calls.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({
        "id": "x", "object": "chat.completion", "model": "judge",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": judge.reply }, "finish_reason": "stop" }]
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

fn chat_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"Chat": {"score_range": [1, 10], "models": ["old"]}}"#,
    )
    .expect("manifest");
    let records: Vec<Record> = (0..3)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "id": format!("chat-{i}"), "source": "Chat", "prompt": format!("Tell me about topic {i}"),
                "responses": { "old": { "text": "an old answer", "score": 5.0 } }
            }))
            .expect("record")
        })
        .collect();
    write_source(dir, "Chat", &records);
}

/// A judge whose output never states a rating is retried, then each pair is recorded as a failure:
/// no crash, nothing merged, the existing records intact. A judge that rates 7/10 labels them all.
#[tokio::test]
async fn malformed_judge_output_is_retried_then_recorded_as_a_failure() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    chat_dataset(&data);
    let member = member(ReplayBook::new(NEW_MEMBER)).await;
    let pool = pool(&member);
    let bad_judge = Arc::new(StubJudge {
        reply: "What a lovely answer!".into(),
        calls: AtomicUsize::new(0),
    });
    let bad = judge(bad_judge.clone()).await;
    let graders = |url: String| GradersConfig {
        sources: Default::default(),
        judge: Some(JudgeConfig {
            base_url: format!("{url}/v1"),
            model: "judge".into(),
            api_key_env: None,
            rubric: None,
            attempts: 3,
        }),
    };

    let report = label::run(job(pool.clone(), &data, &out, 10, graders(bad)))
        .await
        .expect("run completes");
    assert_eq!(
        (report.asked, report.graded, report.failed),
        (3, 0, 3),
        "{report:?}"
    );
    assert_eq!(
        bad_judge.calls.load(Ordering::SeqCst),
        9,
        "3 attempts per pair"
    );
    let journal = std::fs::read_to_string(out.join(label::JOURNAL_FILE)).expect("journal");
    assert_eq!(
        journal
            .lines()
            .filter(|l| l.contains("no valid rating"))
            .count(),
        3,
        "{journal}"
    );
    let records = read_records(&out.join("Chat.jsonl.gz")).expect("output");
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r.responses.len() == 1),
        "failures are not merged"
    );

    let good = judge(Arc::new(StubJudge {
        reply: "Solid. Rating: [[7]]".into(),
        calls: AtomicUsize::new(0),
    }))
    .await;
    let report = label::run(job(pool, &data, &out, 10, graders(good)))
        .await
        .expect("run completes");
    assert_eq!(
        (report.asked, report.graded, report.failed),
        (3, 3, 0),
        "failed pairs are retried"
    );
    let records = read_records(&out.join("Chat.jsonl.gz")).expect("output");
    for r in records {
        let new = &r.responses[NEW_MEMBER];
        assert_eq!(new.grader.as_deref(), Some("judge"));
        assert!(
            (new.score - 7.0).abs() < 1e-9,
            "7/10 on the [1, 10] scale: {}",
            new.score
        );
    }
}

/// An unreachable member is a recorded failure per pair, never a crash, and the run still writes
/// the dataset.
#[tokio::test]
async fn unreachable_member_is_recorded_not_fatal() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    chat_dataset(&data);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let pool = pool(&url);
    let report = label::run(job(pool, &data, &out, 10, GradersConfig::default()))
        .await
        .expect("run completes");
    assert_eq!((report.asked, report.failed), (3, 3));
    assert_eq!(
        read_records(&out.join("Chat.jsonl.gz"))
            .expect("output")
            .len(),
        3
    );
}
