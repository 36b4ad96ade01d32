//! Faults under load, as figures (benchmark-style, `#[ignore]`d: run with
//! `cargo test -p lookahead-router --test fault_figures -- --ignored --nocapture`). A real router on
//! loopback in front of replay members and, for the scorer case, the gRPC scoring sidecar; bounded
//! request loops (8 clients); one fault per scenario; prints requests sent / succeeded / failed and
//! latency p50/p99 per scenario as a Markdown table (docs/reliability.md holds a run).
//! The pass/fail bars live in tests/faults.rs and router_http.rs; this file only measures, but it
//! still asserts the bars so a regression cannot print a good-looking table.
#![cfg(test)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lookahead_replay::ReplayOptions;
use lookahead_router::grpc::{serve_scorer, GrpcScorer};
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};
use tokio::net::TcpListener;

const TRAINED: &str = "  method: lookahead-lite\n  artifact: /unused\n  defaultModel: general\n";
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 50;

struct Figures {
    scenario: &'static str,
    sent: usize,
    ok: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
}

fn keyword_slot() -> Arc<ScorerSlot> {
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    Arc::new(ScorerSlot::new(Arc::new(scorer), "t".into()))
}

/// Bounded load; `fault` runs once `trigger` requests were sent. Returns (status, latency) pairs.
async fn load_with_fault<F: std::future::Future<Output = ()> + Send + 'static>(
    addr: std::net::SocketAddr,
    stream: bool,
    trigger: usize,
    fault: F,
) -> Vec<(u16, Duration)> {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            for _ in 0..PER_CLIENT {
                let t0 = Instant::now();
                let req = chat(addr, "auto", "an integral please", stream);
                let status =
                    match tokio::time::timeout(Duration::from_secs(20), c.request(req)).await {
                        Ok(Ok(resp)) => {
                            let status = resp.status().as_u16();
                            // Read the whole body: a stream cut mid-way is a failure too.
                            match http_body_util::BodyExt::collect(resp.into_body()).await {
                                Ok(_) => status,
                                Err(_) => 0,
                            }
                        }
                        _ => 0,
                    };
                sent.fetch_add(1, Ordering::Relaxed);
                out.push((status, t0.elapsed()));
            }
            out
        }));
    }
    let watcher = tokio::spawn(async move {
        let t0 = Instant::now();
        while sent.load(Ordering::Relaxed) < trigger && t0.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        fault.await;
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    watcher.await.expect("fault");
    all
}

fn figures(scenario: &'static str, results: &[(u16, Duration)]) -> Figures {
    let mut lat: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    Figures {
        scenario,
        sent: results.len(),
        ok,
        failed: results.len() - ok,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

async fn member_killed() -> Figures {
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
    let r =
        router(Router::new(&cfg, ScoreSource::InProcess(keyword_slot())).expect("router")).await;
    let best = Arc::new(best);
    let kill = best.clone();
    let res = load_with_fault(r.addr, false, 100, async move { kill.kill() }).await;
    figures("member killed mid-load (non-streaming)", &res)
}

async fn member_slow() -> Figures {
    let slow = replay(
        "Math-7B",
        &[],
        ReplayOptions {
            latency: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    let other = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[
            ("math", "Math-7B", slow.url()),
            ("general", "General-7B", other.url()),
        ],
        &format!("{TRAINED}  firstTokenTimeout: 200ms\n  retries: 1\n"),
    );
    let r =
        router(Router::new(&cfg, ScoreSource::InProcess(keyword_slot())).expect("router")).await;
    let res = load_with_fault(r.addr, true, 0, async {}).await;
    figures(
        "best member slower than first-token timeout (streaming)",
        &res,
    )
}

async fn scorer_killed() -> Figures {
    let a = replay("Math-7B", &[], Default::default()).await;
    let b = replay("General-7B", &[], Default::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let slot = keyword_slot();
    let sidecar = tokio::spawn(async move {
        let _ = serve_scorer(listener, slot, std::future::pending()).await;
    });
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
    let res = load_with_fault(r.addr, false, 100, async move { sidecar.abort() }).await;
    figures("scoring sidecar killed mid-load", &res)
}

async fn graceful_restart() -> Figures {
    let opts = ReplayOptions {
        latency: Duration::from_millis(50),
        ..Default::default()
    };
    let a = replay("Math-7B", &[], opts.clone()).await;
    let b = replay("General-7B", &[], opts).await;
    let cfg = config(
        &[
            ("math", "Math-7B", a.url()),
            ("general", "General-7B", b.url()),
        ],
        TRAINED,
    );
    let old =
        router(Router::new(&cfg, ScoreSource::InProcess(keyword_slot())).expect("router")).await;
    // In-flight requests at the moment of shutdown: each client sends one request to the old
    // router; shutdown starts while all of them wait on the 50 ms members.
    let c = client();
    let mut in_flight = Vec::new();
    for _ in 0..CLIENTS * 4 {
        let c = c.clone();
        let req = chat(old.addr, "auto", "an integral please", false);
        in_flight.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let s = match c.request(req).await {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            };
            (s, t0.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let drained = old.shutdown();
    // The replacement takes the load from here on.
    let new =
        router(Router::new(&cfg, ScoreSource::InProcess(keyword_slot())).expect("router")).await;
    let mut res = Vec::new();
    for t in in_flight {
        res.push(t.await.expect("in-flight"));
    }
    tokio::time::timeout(Duration::from_secs(15), drained)
        .await
        .expect("drained in time")
        .expect("join");
    res.extend(load_with_fault(new.addr, false, 0, async {}).await);
    figures("router restarted with in-flight requests (drain)", &res)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark-style: prints figures; run with --ignored --nocapture"]
async fn faults_under_load_figures() {
    let rows = vec![
        member_killed().await,
        member_slow().await,
        scorer_killed().await,
        graceful_restart().await,
    ];
    println!(
        "\n| scenario | sent | succeeded | failed | p50 | p99 |\n|---|---:|---:|---:|---:|---:|"
    );
    for f in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} ms | {:.1} ms |",
            f.scenario,
            f.sent,
            f.ok,
            f.failed,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3
        );
    }
    for f in &rows {
        assert_eq!(f.failed, 0, "{}: {} failed", f.scenario, f.failed);
    }
}
