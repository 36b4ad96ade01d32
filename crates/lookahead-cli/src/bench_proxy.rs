//! `lookahead bench proxy`: what the router adds on the request path. One stub OpenAI backend
//! (the replay server, no recorded prompts, no injected latency); the same load sent directly to
//! it, through the router (scoring stubbed by a constant in-process scorer, so the whole decision
//! path runs but costs nothing) and, when installed, through the LiteLLM proxy. Prints one
//! Markdown table: latency p50/p99 at a fixed open-loop rate (measured from each request's
//! scheduled send time, so queueing counts) and closed-loop throughput at fixed concurrency, in
//! rounds where the paths take turns, with each path's throughput against direct's in the same
//! round (the ratio a proxy is judged by; the median over rounds, so a shared machine's drift
//! falls on both sides of it), and the CPU each component spent per request (the router's
//! threads; the client's and backend's), which tells a cheaper router from a slower machine.

use std::collections::HashMap;
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
    /// Closed-loop phases per path: the paths take turns, and the table gives the medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Skip LiteLLM even when it is installed.
    #[arg(long)]
    no_litellm: bool,
    /// Port for the LiteLLM proxy.
    #[arg(long, default_value_t = 4011)]
    litellm_port: u16,
    /// Install the router's tracing subscriber (info level, `RUST_LOG` overrides; lines on
    /// stderr), as `lookahead router` runs in production: its per-request span is then
    /// recorded, which costs CPU the bench otherwise leaves out.
    #[arg(long)]
    pub log: bool,
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
    /// Requests per second in each closed-loop round.
    rounds: Vec<f64>,
    /// This path's throughput over direct's, per round (empty for direct itself).
    ratios: Vec<f64>,
    /// On-CPU time per answered request in each round: the router's threads, and the bench
    /// client's and stub backend's together (the peers every path shares).
    router_cpu: Vec<Duration>,
    peer_cpu: Vec<Duration>,
    tp_errors: usize,
}

impl Row {
    fn throughput(&self) -> f64 {
        median(&self.rounds)
    }

    fn ratio(&self) -> Option<f64> {
        (!self.ratios.is_empty()).then(|| median(&self.ratios))
    }

    /// Median µs of CPU per request over rounds; `None` when not measured (not Linux) or zero.
    fn cpu_us(samples: &[Duration]) -> Option<f64> {
        let us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        (!us.is_empty() && us.iter().any(|&x| x > 0.0)).then(|| median(&us))
    }
}

/// On-CPU time of this process's threads by thread name (the bench names each runtime's
/// threads), from Linux's `/proc/self/task/*/schedstat`; empty where that is not readable.
/// Unlike throughput, a component's CPU per request hardly moves with what else the machine runs.
fn cpu_by_thread_name() -> HashMap<String, Duration> {
    let mut out: HashMap<String, Duration> = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        if let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse().ok()) {
            *out.entry(comm.trim().to_string()).or_default() += Duration::from_nanos(ns);
        }
    }
    out
}

/// CPU a set of threads used between two [`cpu_by_thread_name`] samples, per request.
fn cpu_per_request(
    before: &HashMap<String, Duration>,
    after: &HashMap<String, Duration>,
    threads: &[&str],
    requests: usize,
) -> Duration {
    let used: Duration = threads
        .iter()
        .map(|t| {
            let b = before.get(*t).copied().unwrap_or_default();
            after.get(*t).copied().unwrap_or_default().saturating_sub(b)
        })
        .sum();
    used / requests.max(1) as u32
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

/// Both proxies authenticate the client (LiteLLM refuses to start without a master key).
const BENCH_KEY: &str = "sk-lookahead-bench-0123456789abcdef";

/// The bench client's per-request timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// One closed-loop phase's outcome.
struct Phase {
    throughput: f64,
    answered: usize,
    errors: usize,
}

/// Closed loop: `concurrency` clients send back to back for `duration`.
async fn throughput_phase(target: &Target, concurrency: usize, duration: Duration) -> Phase {
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
    let answered = ok.load(Ordering::Relaxed);
    Phase {
        throughput: answered as f64 / started.elapsed().as_secs_f64(),
        answered,
        errors: errors.load(Ordering::Relaxed),
    }
}

/// A path's open-loop latency (after warming its connections); throughput comes from
/// [`throughput_rounds`].
async fn measure_latency(name: &str, target: &Target, args: &ProxyArgs) -> Row {
    for _ in 0..50 {
        let _ = target.send().await;
    }
    let (sent, ok, lat) = latency_phase(target, args.rate, args.duration).await;
    // A proxy that fell behind may still be working off abandoned requests: let it drain (a
    // request answered within a second) before any throughput phase.
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
    Row {
        name: name.to_string(),
        sent,
        ok,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        ..Row::default()
    }
}

/// `args.rounds` closed-loop phases for every path, the paths taking turns within a round; each
/// path's ratio is taken against the first path's phase of the same round.
async fn throughput_rounds(paths: &mut [(&Target, &mut Row)], args: &ProxyArgs) {
    for round in 0..args.rounds as usize {
        for (target, row) in paths.iter_mut() {
            let before = cpu_by_thread_name();
            let phase = throughput_phase(target, args.concurrency, args.throughput_duration).await;
            let after = cpu_by_thread_name();
            let per_request =
                |threads: &[&str]| cpu_per_request(&before, &after, threads, phase.answered);
            row.router_cpu.push(per_request(&[ROUTER_THREADS]));
            row.peer_cpu
                .push(per_request(&[CLIENT_THREADS, BACKEND_THREADS]));
            row.rounds.push(phase.throughput);
            row.tp_errors += phase.errors;
        }
        let Some(((_, first), rest)) = paths.split_first_mut() else {
            return;
        };
        let reference = first.rounds[round];
        let mut line = format!(
            "[bench] round {}: {} {reference:.0} req/s",
            round + 1,
            first.name
        );
        for (_, row) in rest.iter_mut() {
            let throughput = row.rounds[round];
            row.ratios.push(throughput / reference);
            line.push_str(&format!(
                ", {} {throughput:.0} ({:.3}x)",
                row.name,
                throughput / reference
            ));
        }
        eprintln!("{line}");
    }
}

/// The names of each runtime's threads, by which their CPU time is told apart.
const BACKEND_THREADS: &str = "backend";
const ROUTER_THREADS: &str = "router";
const CLIENT_THREADS: &str = "client";

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
    let backend_rt = runtime(2, BACKEND_THREADS)?;
    let router_rt = runtime(2, ROUTER_THREADS)?;
    let client_rt = runtime(2, CLIENT_THREADS)?;
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
    let direct = Target::new(&format!("http://{backend}"), "stub", CLIENT_TIMEOUT);
    let routed = Target::new(&format!("http://{router_addr}"), "auto", CLIENT_TIMEOUT);
    let mut rows = client_rt.block_on(async {
        let mut d = measure_latency("direct (stub backend)", &direct, &args).await;
        let mut r = measure_latency("lookahead router (auto, stub scorer)", &routed, &args).await;
        throughput_rounds(&mut [(&direct, &mut d), (&routed, &mut r)], &args).await;
        vec![d, r]
    });
    // LiteLLM starts only now, so its start-up does not compete with the runs above.
    if !args.no_litellm {
        match start_litellm(backend, args.litellm_port, &tmp) {
            Ok(litellm) => {
                rows.extend(client_rt.block_on(measure_litellm(&args, &tmp, &direct)));
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

/// LiteLLM's row, once it answers (within 120 s), its rounds taking turns with fresh direct
/// ones; `None` when it never answers.
async fn measure_litellm(args: &ProxyArgs, tmp: &std::path::Path, direct: &Target) -> Option<Row> {
    let base = format!("http://127.0.0.1:{}", args.litellm_port);
    let ready = Target::new(&base, "stub", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if ready.send().await.is_ok_and(|r| r.status == 200) {
            let litellm = Target::new(&base, "stub", CLIENT_TIMEOUT);
            let mut row = measure_latency("LiteLLM proxy", &litellm, args).await;
            let mut paired = Row {
                name: "direct (stub backend)".into(),
                ..Row::default()
            };
            throughput_rounds(&mut [(direct, &mut paired), (&litellm, &mut row)], args).await;
            return Some(row);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "[bench] LiteLLM did not become ready in 120 s; see {}",
        tmp.join("litellm.log").display()
    );
    None
}

/// One Markdown table; "added" columns are over the first row (direct), and "x direct" is the
/// median over rounds of the path's throughput over direct's in the same round.
fn print_rows(args: &ProxyArgs, rows: &[Row]) {
    print!("{}", table(args.concurrency, args.rounds, rows));
}

fn table(concurrency: usize, rounds: u32, rows: &[Row]) -> String {
    let direct = rows.first().map(|r| (r.p50, r.p99)).unwrap_or_default();
    let mut out = format!(
        "| path | sent | ok | p50 ms | p99 ms | added p50 ms | added p99 ms | throughput req/s (c={concurrency}, median of {rounds}) | x direct | router CPU µs/req | client+backend CPU µs/req | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let ratio = r.ratio().map_or("1".to_string(), |x| format!("{x:.3}"));
        let cpu = |samples: &[Duration]| {
            Row::cpu_us(samples).map_or("–".into(), |us| format!("{us:.1}"))
        };
        let (router_cpu, peer_cpu) = (cpu(&r.router_cpu), cpu(&r.peer_cpu));
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {ratio} | {router_cpu} | {peer_cpu} | {} |\n",
            r.name,
            r.sent,
            r.ok,
            ms(r.p50),
            ms(r.p99),
            ms(r.p50) - ms(direct.0),
            ms(r.p99) - ms(direct.1),
            r.throughput(),
            r.tp_errors
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio column pairs each round with direct's round, so a round where the whole
    /// machine ran slow does not count against the proxy.
    #[test]
    fn the_ratio_is_the_median_of_same_round_ratios_not_a_ratio_of_medians() {
        let direct = Row {
            name: "direct".into(),
            rounds: vec![40_000.0, 20_000.0, 44_000.0],
            ..Row::default()
        };
        let proxy = Row {
            name: "proxy".into(),
            rounds: vec![16_000.0, 9_000.0, 17_600.0],
            ratios: vec![0.4, 0.45, 0.4],
            ..Row::default()
        };
        let text = table(64, 3, &[direct, proxy]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("median of 3") && lines[0].contains("x direct"));
        assert!(lines[2].starts_with("| direct |") && lines[2].contains("| 40000 | 1 |"));
        assert!(lines[3].starts_with("| proxy |") && lines[3].contains("| 16000 | 0.400 |"));
    }

    /// The CPU columns: the router's threads' CPU per request where the router served, the
    /// client's and backend's in every row (medians over rounds), a dash where nothing ran.
    #[test]
    fn the_cpu_columns_show_each_components_median_cpu_per_request() {
        let us = |v: &[u64]| v.iter().map(|&x| Duration::from_micros(x)).collect();
        let direct = Row {
            name: "direct".into(),
            rounds: vec![40_000.0; 3],
            router_cpu: us(&[0, 0, 0]),
            peer_cpu: us(&[40, 44, 42]),
            ..Row::default()
        };
        let proxy = Row {
            name: "proxy".into(),
            rounds: vec![16_000.0; 3],
            ratios: vec![0.4; 3],
            router_cpu: us(&[61, 58, 60]),
            peer_cpu: us(&[50, 52, 51]),
            ..Row::default()
        };
        let text = table(64, 3, &[direct, proxy]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("| router CPU µs/req | client+backend CPU µs/req |"));
        assert!(lines[2].contains("| 1 | – | 42.0 |"), "{}", lines[2]);
        assert!(lines[3].contains("| 0.400 | 60.0 | 51.0 |"), "{}", lines[3]);
    }

    /// The bench's own threads are named and readable: the CPU a busy thread of a given name
    /// burns shows under that name (Linux, where `/proc/self/task` exists).
    #[test]
    fn a_named_threads_cpu_time_is_read_from_proc() {
        if !std::path::Path::new("/proc/self/task").exists() {
            eprintln!("skipped: no /proc/self/task on this system");
            return;
        }
        let before = cpu_by_thread_name();
        std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(move || {
                // Spins until its own CPU time shows (a loaded test machine may give it little
                // of the wall time); fails if it never does. Sampled while the thread still
                // exists: exited threads leave /proc.
                let give_up = Instant::now() + Duration::from_secs(20);
                let mut spins = 0u64;
                while Instant::now() < give_up {
                    for _ in 0..1_000_000 {
                        spins = std::hint::black_box(spins + 1);
                    }
                    let used = cpu_per_request(&before, &cpu_by_thread_name(), &["cpu-probe"], 1);
                    if used >= Duration::from_millis(20) {
                        return;
                    }
                }
                panic!("20 ms of CPU never showed for the thread named cpu-probe");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
