//! The acceptance gate end to end on the shared routing dataset (skips, with the reason, when the
//! dataset or the MiniLM backbone is absent): an MLC router trained on a few dozen records of the
//! judged sources (where the best single model is hard to beat) for one epoch (`lookahead_model::train`) is not accepted against the best single model, and a
//! real router loaded with its artifact (`Router::from_config`, `lookahead_model::load_scorer`)
//! answers every `auto` request from that model through `lookahead-replay` members, saying so in
//! `x-lookahead-fallback: not_accepted` and its metrics.
#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use lookahead_data::{unit_hash, Dataset, Holdout, Pool, Split};
use lookahead_model::artifact::{save_artifact, Method};
use lookahead_model::{default_backbone_dir, Example, HyperParams, RouterMeta, TrainRequest};
use lookahead_replay::{ReplayBook, ReplayServer};
use lookahead_router::Router;

const SOURCES: [&str; 3] = ["MT-Bench", "ArenaHard", "AlpacaEval"];
/// Member names differ from the model ids: the fallback model is found by its id.
const NAMES: [&str; 5] = ["yi", "internlm", "phi", "llama", "qwen"];

fn inputs() -> Option<(PathBuf, PathBuf)> {
    let data = lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()?;
    let backbone = default_backbone_dir();
    if !backbone.join("model.safetensors").is_file() {
        eprintln!(
            "SKIP: no backbone at {} (run scripts/setup.sh)",
            backbone.display()
        );
        return None;
    }
    Some((data, backbone))
}

/// Train (the first `train` by id hash) and validation examples of [`SOURCES`] on the paper's
/// pool, as `lookahead train` splits them.
fn examples(data: &Path, train: usize) -> (Vec<Example>, Vec<Example>) {
    let data = Dataset::open(data).expect("dataset");
    let selection = data.select_pool(&SOURCES, &Pool::paper()).expect("records");
    let threshold = HyperParams::default().label_threshold;
    let (mut t, mut v) = (Vec::new(), Vec::new());
    for r in &selection.records {
        let e = Example::from_record(&data, r, threshold).expect("example");
        match Holdout::default().assign(&r.id) {
            Split::Train => t.push(e),
            Split::Validation => v.push(e),
            Split::Test => {}
        }
    }
    t.sort_by(|a, b| unit_hash(&a.id, "weak").total_cmp(&unit_hash(&b.id, "weak")));
    t.truncate(train);
    (t, v)
}

/// A deliberately weak MLC artifact in `out`: 36 records, one epoch.
fn weak_artifact(
    data: &Path,
    backbone: &Path,
    out: &Path,
    states: &Path,
) -> (RouterMeta, Vec<Example>) {
    let (train, valid) = examples(data, 36);
    let req = TrainRequest {
        method: Method::Mlc,
        hyper: HyperParams {
            max_epochs: 1,
            ..HyperParams::default()
        },
        models: Pool::paper().models().to_vec(),
        sources: SOURCES.map(String::from).to_vec(),
        train: &train,
        valid: &valid,
        test: None,
        holdout: "split 80/10/10 (id hash)".into(),
        min_gain: 0.0,
        acceptance_folds: 0,
        backbone: Some(backbone.to_path_buf()),
        device: candle_core::Device::Cpu,
        states_root: states.to_path_buf(),
        progress: false,
        deadline: None,
    };
    let trained = lookahead_model::train(&req).expect("training");
    save_artifact(out, &trained.meta, &trained.tensors).expect("save");
    (trained.meta, valid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_artifact_is_not_accepted_and_its_router_answers_from_the_best_single_model() {
    let Some((data, backbone)) = inputs() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let artifact = tmp.path().join("artifact");
    let (meta, valid) = {
        let (data, backbone, artifact, states) = (
            data.clone(),
            backbone.clone(),
            artifact.clone(),
            tmp.path().join("states"),
        );
        tokio::task::spawn_blocking(move || weak_artifact(&data, &backbone, &artifact, &states))
            .await
            .expect("training task")
    };
    let verdict = meta.acceptance.clone().expect("an acceptance verdict");
    eprintln!("weak artifact: {verdict}");
    assert!(!verdict.accepted, "{verdict}");
    assert!(verdict.lower_bound < 0.0, "{verdict}");
    assert_eq!(
        (verdict.level, verdict.min_gain, verdict.examples),
        (0.95, 0.0, valid.len())
    );
    let reread = RouterMeta::read(&artifact).expect("router.json");
    assert_eq!(
        reread.acceptance.as_ref(),
        Some(&verdict),
        "written to router.json"
    );
    let fallback = Pool::paper()
        .index_of(&verdict.fallback_model)
        .expect("the fallback is a pool model");

    // One replay member per pool model, answering the validation prompts as recorded.
    let mut members = Vec::new();
    for model in Pool::paper().models() {
        let mut book = ReplayBook::new(model);
        for e in valid.iter().take(8) {
            book.insert(&e.prompt, format!("{model} answers"));
        }
        members.push(start_replay(ReplayServer::new(book, Default::default())).await);
    }
    let pool = Pool::paper();
    let entries: Vec<(&str, &str, String)> = NAMES
        .iter()
        .zip(pool.models())
        .zip(&members)
        .map(|((n, id), m)| (*n, id.as_str(), m.url()))
        .collect();
    // The default model is another member: what serves is the gate's choice, not fail-open.
    let default = NAMES[(fallback + 1) % NAMES.len()];
    let policy = format!(
        "  method: mlc\n  artifact: {}\n  defaultModel: {default}\n  scoreTimeout: 30s\n",
        artifact.display()
    );
    let loader = {
        let options = lookahead_model::ScorerOptions {
            backbone: Some(backbone.clone()),
            ..Default::default()
        };
        Arc::new(move |dir: &Path| {
            lookahead_model::load_scorer(dir, &options).map_err(|e| e.to_string())
        })
    };
    let r = router(Router::from_config(&config(&entries, &policy), Some(loader)).expect("router"))
        .await;
    let c = client();
    for e in valid.iter().take(8) {
        let reply = send(&c, chat(r.addr, "auto", &e.prompt, false)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            reply.header("x-lookahead-model").as_deref(),
            Some(NAMES[fallback])
        );
        assert_eq!(
            reply.header("x-lookahead-fallback").as_deref(),
            Some("not_accepted")
        );
        assert!(reply.header("x-lookahead-scores").is_none(), "unscored");
        let answer = format!("{} answers", verdict.fallback_model);
        assert_eq!(
            reply.json()["choices"][0]["message"]["content"],
            answer.as_str()
        );
    }
    for (i, m) in members.iter().enumerate() {
        let want = if i == fallback { 8 } else { 0 };
        assert_eq!(m.handler.served(), want, "member {}", NAMES[i]);
    }
    // A client naming a member still gets that member.
    let named = send(
        &c,
        chat(r.addr, NAMES[(fallback + 2) % 5], &valid[0].prompt, false),
    )
    .await;
    assert_eq!(
        named.header("x-lookahead-model").as_deref(),
        Some(NAMES[(fallback + 2) % 5])
    );
    assert!(named.header("x-lookahead-fallback").is_none());

    let metrics = send(&c, get(r.addr, "/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("lookahead_router_artifact_accepted 0"),
        "{text}"
    );
    let counted = format!(
        "lookahead_router_not_accepted_total{{member=\"{}\"}} 8",
        NAMES[fallback]
    );
    assert!(text.contains(&counted), "{text}");
}
