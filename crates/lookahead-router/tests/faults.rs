//! Faults under bounded load, over real loopback HTTP and gRPC: a member killed mid-run, the
//! scoring sidecar killed mid-run, and the artifact hot-reloaded while requests flow.
#![cfg(test)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lookahead_model::Scorer;
use lookahead_replay::ReplayOptions;
use lookahead_router::grpc::{serve_scorer, GrpcScorer};
use lookahead_router::scoring::{load_slot, spawn_reloader, ScoreSource};
use lookahead_router::{Router, ScorerLoader, ScorerSlot};
use tokio::net::TcpListener;

const TRAINED: &str = "  method: lookahead-lite\n  artifact: /unused\n  defaultModel: general\n";

/// Runs `clients` concurrent loops of `per_client` requests; returns (statuses, models).
async fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    per_client: usize,
    stream: bool,
    sent: Arc<AtomicUsize>,
) -> Vec<(u16, Option<String>, Option<String>)> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            for _ in 0..per_client {
                let reply = send(&c, chat(addr, "auto", "an integral please", stream)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                out.push((
                    reply.status,
                    reply.header("x-lookahead-model"),
                    reply.header("x-lookahead-fallback"),
                ));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_under_load_loses_no_non_streaming_request() {
    let opts = ReplayOptions {
        latency: Duration::from_millis(5),
        ..Default::default()
    };
    let best = replay("Math-7B", &[], opts.clone()).await;
    let other = replay("General-7B", &[], opts).await;
    let cfg = config(
        &[
            ("math", "Math-7B", best.url()),
            ("general", "General-7B", other.url()),
        ],
        TRAINED,
    );
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    let source = ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "t".into())));
    let r = router(Router::new(&cfg, source).expect("router")).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn(load(r.addr, 8, 40, false, sent.clone()));
    // Kill the best member abruptly once a quarter of the requests went through.
    tokio::time::timeout(Duration::from_secs(30), async {
        while sent.load(Ordering::Relaxed) < 80 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("load progressed");
    best.kill();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("load finished")
        .expect("join");
    assert_eq!(results.len(), 320);
    let failed: Vec<_> = results.iter().filter(|(s, _, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let on_math = results
        .iter()
        .filter(|(_, m, _)| m.as_deref() == Some("math"))
        .count();
    let on_general = results
        .iter()
        .filter(|(_, m, _)| m.as_deref() == Some("general"))
        .count();
    assert!(
        on_math >= 70 && on_general >= 100,
        "math {on_math}, general {on_general}"
    );
    // Requests in flight at the kill fail over with `math:<reason>`; later ones find the port
    // refusing connections, the sign of no ready replica, and pass it over as `cold:math`.
    assert!(results.iter().any(|(_, _, f)| f
        .as_deref()
        .is_some_and(|f| f.starts_with("math:") || f.contains("cold:math"))));
    let demand = r.handler.demand_report();
    assert!(demand.members[0].cold, "{demand:?}");
}

async fn start_sidecar(
    slot: Arc<ScorerSlot>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = serve_scorer(listener, slot, std::future::pending()).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scorer_sidecar_killed_mid_run_causes_no_client_error() {
    let a = replay("Math-7B", &[], Default::default()).await;
    let b = replay("General-7B", &[], Default::default()).await;
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    let (addr, sidecar) =
        start_sidecar(Arc::new(ScorerSlot::new(Arc::new(scorer), "v1".into()))).await;
    let cfg = config(
        &[
            ("math", "Math-7B", a.url()),
            ("general", "General-7B", b.url()),
        ],
        &format!("{TRAINED}  scorer: http://{addr}\n  scoreTimeout: 500ms\n"),
    );
    let source = ScoreSource::Grpc(
        GrpcScorer::new(&format!("http://{addr}"), Duration::from_millis(200)).expect("client"),
    );
    let r = router(Router::new(&cfg, source).expect("router")).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn(load(r.addr, 4, 40, false, sent.clone()));
    tokio::time::timeout(Duration::from_secs(30), async {
        while sent.load(Ordering::Relaxed) < 40 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("load progressed");
    sidecar.abort();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("finished")
        .expect("join");
    assert_eq!(results.len(), 160);
    assert!(results.iter().all(|(s, _, _)| *s == 200), "no client error");
    let scored = results
        .iter()
        .filter(|(_, m, f)| m.as_deref() == Some("math") && f.is_none())
        .count();
    let failed_open = results
        .iter()
        .filter(|(_, m, f)| {
            m.as_deref() == Some("general")
                && f.as_deref().is_some_and(|f| f.starts_with("scorer_"))
        })
        .count();
    assert!(
        scored >= 40,
        "scored by the sidecar before the kill: {scored}"
    );
    assert!(failed_open > 0, "failed open after the kill");
    assert_eq!(scored + failed_open, 160);
    assert!(metric_sum(&r, "lookahead_router_fail_open_total") as usize >= failed_open);
}

/// An "artifact" for tests: a directory with `keywords.json` = [[model, keyword], ...].
fn keyword_loader() -> ScorerLoader {
    Arc::new(|dir: &Path| {
        let text = std::fs::read_to_string(dir.join("keywords.json")).map_err(|e| e.to_string())?;
        let pairs: Vec<(String, String)> =
            serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(m, k)| (m.as_str(), k.as_str()))
            .collect();
        Ok(Box::new(KeywordScorer::new(&refs)) as Box<dyn Scorer>)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sidecar_hot_reloads_its_artifact_without_dropping_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |pairs: &str| std::fs::write(dir.path().join("keywords.json"), pairs).expect("write");
    write(r#"[["Math-7B","integral"],["General-7B","zzz"]]"#);
    let loader = keyword_loader();
    let slot = Arc::new(load_slot(dir.path(), &loader).expect("load"));
    let v1 = slot.version();
    let _reloader = spawn_reloader(
        slot.clone(),
        dir.path().to_path_buf(),
        loader,
        Duration::from_millis(50),
    );
    let (addr, _sidecar) = start_sidecar(slot.clone()).await;
    let client =
        GrpcScorer::new(&format!("http://{addr}"), Duration::from_secs(1)).expect("client");
    let (models, scores) = client.score_one("an integral").await.expect("score");
    assert_eq!(models, ["Math-7B", "General-7B"]);
    assert!(scores[0] > scores[1]);

    // Requests keep flowing while the artifact changes underneath.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && n < 5000 {
                client
                    .score_one("an integral")
                    .await
                    .expect("no call fails during reload");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    write(r#"[["Math-7B","zzz"],["General-7B","integral"]]"#);
    let reloaded = tokio::time::timeout(Duration::from_secs(10), async {
        while slot.version() == v1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let calls = hammer.await.expect("hammer");
    assert!(reloaded.is_ok(), "artifact reloaded");
    assert!(calls > 0);
    let (_, scores) = client.score_one("an integral").await.expect("score");
    assert!(scores[1] > scores[0], "new artifact serves");
    let info = client.info().await.expect("info");
    assert_eq!(info.reloads, 1);

    // A broken rewrite keeps the last good artifact serving.
    write("not json");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.score_one("an integral").await.is_ok());
}
