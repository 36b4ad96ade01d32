//! `lookahead bench proxy`: what the router adds on the request path. One stub OpenAI backend
//! (the replay server, no recorded prompts, no injected latency); the same load sent directly to
//! it, through the router (scoring stubbed by a constant in-process scorer, so the whole decision
//! path runs but costs nothing) and, when installed, through the LiteLLM proxy. Prints one
//! Markdown table: latency p50/p99 at a fixed open-loop rate (measured from each request's
//! scheduled send time, so queueing counts) and closed-loop throughput at fixed concurrency.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use lookahead_api::RouterConfig;
use lookahead_client::{user_turn, ChatClient, ChatEndpoint, ChatReply, ClientError};
use lookahead_data::metrics::percentile;
use lookahead_model::{ScoreError, Scorer};
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{serve, Router, ScorerSlot};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Open-loop request rate for the latency phase (requests per second).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency phase, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = lookahead_api::config::parse_duration)]
    duration: Duration,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the throughput phase, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = lookahead_api::config::parse_duration)]
    throughput_duration: Duration,
    /// Skip LiteLLM even when it is installed.
    #[arg(long)]
    no_litellm: bool,
    /// Port for the LiteLLM proxy.
    #[arg(long, default_value_t = 4011)]
    litellm_port: u16,
}

/// Constant scores: the decision path runs (ranking, headers) at no model cost; being trivial, it
/// is called inline, as the router calls any scorer that says so.
struct StubScorer(Vec<String>);

impl Scorer for StubScorer {
    fn models(&self) -> &[String] {
        &self.0
    }
    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        Ok(prompts.iter().map(|_| vec![0.9, 0.1]).collect())
    }
    fn is_trivial(&self) -> bool {
        true
    }
}

#[derive(Debug, Default)]
struct Row {
    name: String,
    sent: usize,
    ok: usize,
    p50: Duration,
    p99: Duration,
    throughput: f64,
    tp_errors: usize,
}

/// Both proxies authenticate the client (LiteLLM refuses to start without a master key).
const BENCH_KEY: &str = "sk-lookahead-bench-0123456789abcdef";

const PROMPT: &str = "Summarise the benefits of connection pooling in two sentences.";

/// One path under test: a client, the path's endpoint and the bench request for its model.
#[derive(Clone)]
struct Target {
    client: ChatClient,
    endpoint: Arc<ChatEndpoint>,
    request: Arc<serde_json::Value>,
}

impl Target {
    /// `base`: `http://host:port` (no `/v1`).
    fn new(base: &str, model: &str, timeout: Duration) -> Self {
        let endpoint = ChatEndpoint::new(&format!("{base}/v1")).with_api_key(Some(BENCH_KEY));
        Target {
            client: ChatClient::new(timeout),
            endpoint: Arc::new(endpoint),
            request: Arc::new(user_turn(model, PROMPT, false)),
        }
    }

    async fn send(&self) -> Result<ChatReply, ClientError> {
        self.client.send(&self.endpoint, &self.request).await
    }
}

/// Open loop: request `i` is due at `start + i / rate`; latency counts from that due time.
async fn latency_phase(
    target: &Target,
    rate: u64,
    duration: Duration,
) -> (usize, usize, Vec<Duration>) {
    let total = (rate as f64 * duration.as_secs_f64()).round() as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let r = target.send().await;
            let latency = due.elapsed();
            matches!(r, Ok(ref rep) if rep.status == 200).then_some(latency)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        if let Ok(Some(l)) = t.await {
            lat.push(l);
        }
    }
    lat.sort();
    (total, lat.len(), lat)
}

/// Closed loop: `concurrency` clients send back to back for `duration`.
async fn throughput_phase(target: &Target, concurrency: usize, duration: Duration) -> (f64, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, ok, errors) = (target.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match target.send().await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

async fn measure(name: &str, base: &str, model: &str, args: &ProxyArgs) -> Row {
    let target = Target::new(base, model, Duration::from_secs(30));
    // Warm the connection pool.
    for _ in 0..50 {
        let _ = target.send().await;
    }
    let (sent, ok, lat) = latency_phase(&target, args.rate, args.duration).await;
    // A proxy that fell behind may still be working off abandoned requests: let it drain (a
    // request answered within a second) before the throughput phase.
    let settle = Instant::now() + Duration::from_secs(60);
    while Instant::now() < settle {
        let t0 = Instant::now();
        if target.send().await.is_ok_and(|r| r.status == 200)
            && t0.elapsed() < Duration::from_secs(1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (throughput, tp_errors) =
        throughput_phase(&target, args.concurrency, args.throughput_duration).await;
    Row {
        name: name.to_string(),
        sent,
        ok,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        throughput,
        tp_errors,
    }
}

fn runtime(threads: usize, name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

struct LiteLlm(Child);

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_litellm(backend: SocketAddr, port: u16, dir: &std::path::Path) -> anyhow::Result<LiteLlm> {
    let which = Command::new("litellm")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !which.is_ok_and(|s| s.success()) {
        bail!("litellm is not installed (pip install 'litellm[proxy]')");
    }
    let cfg = dir.join("litellm.yaml");
    std::fs::write(
        &cfg,
        format!(
            "model_list:\n  - model_name: stub\n    litellm_params:\n      model: openai/stub\n      api_base: http://{backend}/v1\n      api_key: sk-none\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("litellm.log"))?;
    let child = Command::new("litellm")
        .args(["--config"])
        .arg(&cfg)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_MASTER_KEY", BENCH_KEY)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting litellm")?;
    Ok(LiteLlm(child))
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let backend_rt = runtime(2, "backend")?;
    let router_rt = runtime(2, "router")?;
    let client_rt = runtime(2, "client")?;
    let backend = start_backend(&backend_rt)?;
    // Removed when `run` returns (router and LiteLLM configs, LiteLLM's log).
    let tmp_dir = tempfile::Builder::new()
        .prefix("lookahead-bench-proxy-")
        .tempdir()?;
    let tmp = tmp_dir.path().to_path_buf();
    let router_addr = start_router(&router_rt, backend, &tmp)?;

    eprintln!(
        "[bench] backend {backend}, router {router_addr}; latency at {} rps for {:?}, throughput at concurrency {} for {:?}",
        args.rate, args.duration, args.concurrency, args.throughput_duration
    );
    let mut rows = Vec::new();
    client_rt.block_on(async {
        rows.push(
            measure(
                "direct (stub backend)",
                &format!("http://{backend}"),
                "stub",
                &args,
            )
            .await,
        );
        rows.push(
            measure(
                "lookahead router (auto, stub scorer)",
                &format!("http://{router_addr}"),
                "auto",
                &args,
            )
            .await,
        );
    });
    // LiteLLM starts only now, so its start-up does not compete with the runs above.
    if !args.no_litellm {
        match start_litellm(backend, args.litellm_port, &tmp) {
            Ok(litellm) => {
                rows.extend(client_rt.block_on(measure_litellm(&args, &tmp)));
                drop(litellm);
            }
            Err(e) => eprintln!("[bench] LiteLLM skipped: {e}"),
        }
    }
    print_rows(&args, &rows);
    Ok(())
}

/// The stub backend: a replay server with no recorded prompts.
fn start_backend(rt: &tokio::runtime::Runtime) -> anyhow::Result<SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let backend = listener.local_addr()?;
    let stub = Arc::new(ReplayServer::new(
        ReplayBook::new("stub"),
        ReplayOptions::default(),
    ));
    rt.spawn(lookahead_replay::serve(
        listener,
        stub,
        std::future::pending(),
        Duration::ZERO,
    ));
    Ok(backend)
}

/// The router in front of two members on `backend`, scoring with [`StubScorer`], behind an API key.
fn start_router(
    rt: &tokio::runtime::Runtime,
    backend: SocketAddr,
    tmp: &std::path::Path,
) -> anyhow::Result<SocketAddr> {
    let keys = tmp.join("api-keys");
    std::fs::write(&keys, format!("{BENCH_KEY}\n"))?;
    let config: RouterConfig = serde_json::from_value(serde_json::json!({
        "members": [
            {"name": "stub", "modelId": "stub", "baseUrl": format!("http://{backend}/v1")},
            {"name": "other", "modelId": "other", "baseUrl": format!("http://{backend}/v1")},
        ],
        "policy": {"method": "lookahead-lite", "artifact": "/stub", "defaultModel": "stub", "apiKeysFile": keys},
    }))?;
    let slot = ScorerSlot::new(
        Arc::new(StubScorer(vec!["stub".into(), "other".into()])),
        "stub".into(),
    );
    let router =
        rt.block_on(async { Router::new(&config, ScoreSource::InProcess(Arc::new(slot))) })?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(serve(
        listener,
        Arc::new(router),
        std::future::pending(),
        Duration::ZERO,
    ));
    Ok(addr)
}

/// LiteLLM's row, once it answers (within 120 s); `None` when it never does.
async fn measure_litellm(args: &ProxyArgs, tmp: &std::path::Path) -> Option<Row> {
    let base = format!("http://127.0.0.1:{}", args.litellm_port);
    let ready = Target::new(&base, "stub", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if ready.send().await.is_ok_and(|r| r.status == 200) {
            return Some(measure("LiteLLM proxy", &base, "stub", args).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "[bench] LiteLLM did not become ready in 120 s; see {}",
        tmp.join("litellm.log").display()
    );
    None
}

/// One Markdown table; "added" columns are over the first row (direct).
fn print_rows(args: &ProxyArgs, rows: &[Row]) {
    let direct = rows.first().map(|r| (r.p50, r.p99)).unwrap_or_default();
    println!("| path | sent | ok | p50 ms | p99 ms | added p50 ms | added p99 ms | throughput req/s (c={}) | errors |", args.concurrency);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {} |",
            r.name,
            r.sent,
            r.ok,
            ms(r.p50),
            ms(r.p99),
            ms(r.p50) - ms(direct.0),
            ms(r.p99) - ms(direct.1),
            r.throughput,
            r.tp_errors
        );
    }
}
