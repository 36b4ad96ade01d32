//! `lookahead bench scorer`: decision latency (p50/p99) at several prompt lengths and batched
//! throughput of a router artifact and of the bare MiniLM encoder; optionally runs
//! `bench/pytorch_minilm.py` with the same prompts and thread count and prints both side by side.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::{Args, Subcommand};
use lookahead_data::metrics::percentile;
use lookahead_model::{
    default_backbone_dir, load_scorer, Backbone, Method, Precision, RouterMeta, ScorerOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Scorer latency and throughput.
    Scorer(ScorerArgs),
    /// Latency the router adds over a direct call, and its throughput, beside LiteLLM's.
    Proxy(crate::bench_proxy::ProxyArgs),
}

#[derive(Args, Debug)]
pub struct ScorerArgs {
    /// Router artifact to time (its decision path: frozen layers, upper layers, heads).
    #[arg(long)]
    artifact: Option<PathBuf>,
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Compute threads (sets RAYON_NUM_THREADS for candle; passed to PyTorch).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    lengths: Vec<usize>,
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Batch size of the throughput row (128-token prompts).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Weight precisions to time (candle rows are repeated for each).
    #[arg(long, value_delimiter = ',', default_value = "f32,int8")]
    precision: Vec<Precision>,
    /// Time the artifact's decision path only, without the encoder's rows (an n-gram artifact
    /// reads no encoder).
    #[arg(long, requires = "artifact")]
    router_only: bool,
    /// Python with torch + sentence-transformers: also run bench/pytorch_minilm.py.
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long, default_value = "bench/pytorch_minilm.py")]
    script: PathBuf,
    #[arg(long)]
    json: bool,
}

/// Single-token words of the BERT uncased vocabulary (same list as bench/pytorch_minilm.py).
const WORDS: [&str; 32] = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their",
];

/// A prompt of exactly `tokens` tokens: `[CLS]` + `tokens - 2` words + `[SEP]`.
fn prompt(tokens: usize, salt: usize) -> String {
    (0..tokens.saturating_sub(2).max(1))
        .map(|i| WORDS[(i * 7 + salt) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    name: String,
    tokens: usize,
    batch: usize,
    p50_ms: f64,
    p99_ms: Option<f64>,
    per_s: f64,
}

#[derive(Deserialize)]
struct PythonOut {
    torch: String,
    threads: usize,
    rows: Vec<Row>,
}

fn time_single(
    name: &str,
    tokens: usize,
    iters: usize,
    mut f: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Row> {
    for _ in 0..3 {
        f(&prompt(tokens, 0))?;
    }
    let mut ms = Vec::with_capacity(iters);
    for i in 0..iters {
        let p = prompt(tokens, i % 3);
        let t = Instant::now();
        f(&p)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let p50 = percentile(&ms, 0.5);
    Ok(Row {
        name: name.to_string(),
        tokens,
        batch: 1,
        p50_ms: p50,
        p99_ms: Some(percentile(&ms, 0.99)),
        per_s: 1000.0 / p50,
    })
}

fn time_batch(
    name: &str,
    batch: usize,
    reps: usize,
    mut f: impl FnMut(&[&str]) -> anyhow::Result<()>,
) -> anyhow::Result<Row> {
    let prompts: Vec<String> = (0..batch).map(|i| prompt(128, i)).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    f(&refs)?;
    let t = Instant::now();
    for _ in 0..reps {
        f(&refs)?;
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    Ok(Row {
        name: name.to_string(),
        tokens: 128,
        batch,
        p50_ms: dt * 1000.0,
        p99_ms: None,
        per_s: batch as f64 / dt,
    })
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let args = match cmd {
        BenchCommand::Scorer(args) => args,
        BenchCommand::Proxy(args) => return crate::bench_proxy::run(args),
    };
    // candle's CPU kernels size their thread pools from this at first use.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let backbone_dir = args.backbone.clone().unwrap_or_else(default_backbone_dir);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let reference = if args.router_only {
        None
    } else {
        Some(Backbone::load(&backbone_dir, &Device::Cpu)?)
    };
    for &precision in &args.precision {
        if let Some(reference) = &reference {
            encoder_rows(
                &args,
                &backbone_dir,
                precision,
                reference,
                &mut rows,
                &mut notes,
            )?;
        }
        if let Some(art) = &args.artifact {
            router_rows(&args, art, &backbone_dir, precision, &mut rows)?;
        }
    }
    let mut torch = None;
    if let Some(py) = &args.python {
        let parsed = pytorch_rows(&args, py, &backbone_dir)?;
        torch = Some((parsed.torch, parsed.threads));
        rows.extend(parsed.rows);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"threads": args.threads, "torch": torch, "rows": rows})
        );
        return Ok(());
    }
    println!(
        "threads: {}{}",
        args.threads,
        torch
            .map(|(v, t)| format!(" (torch {v}, {t} threads)"))
            .unwrap_or_default()
    );
    print_table(&rows);
    for note in notes {
        println!("\n{note}");
    }
    Ok(())
}

/// Repetitions of a batch row: a tenth of the single-prompt iterations, at least 2.
fn batch_reps(args: &ScorerArgs) -> usize {
    (args.iters / 10).max(2)
}

/// The bare encoder's rows at `precision`; below f32, a note on how far its embeddings are from
/// `reference`'s (f32) on the timed prompts.
fn encoder_rows(
    args: &ScorerArgs,
    backbone_dir: &Path,
    precision: Precision,
    reference: &Backbone,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut backbone = Backbone::load(backbone_dir, &Device::Cpu)?;
    if precision == Precision::Int8 {
        backbone.encoder.quantize()?;
    }
    let name = format!("candle MiniLM encoder {precision} (6 layers, mean pool)");
    let embed = |b: &Backbone, ps: &[&str]| -> anyhow::Result<candle_core::Tensor> {
        let max = ps.iter().map(|p| p.len()).max().unwrap_or(0) + 2;
        let t = b.batch(ps, max.min(512)).map_err(anyhow::Error::msg)?;
        Ok(b.encoder.sentence_embedding(&t.ids, &t.keep)?)
    };
    for &n in &args.lengths {
        let got = backbone
            .token_ids(&prompt(n, 0), 1024)
            .map_err(anyhow::Error::msg)?
            .len();
        if got != n {
            bail!("bench prompt of {n} tokens tokenizes to {got}");
        }
        rows.push(time_single(&name, n, args.iters, |p| {
            embed(&backbone, &[p]).map(drop)
        })?);
    }
    rows.push(time_batch(&name, args.batch, batch_reps(args), |ps| {
        embed(&backbone, ps).map(drop)
    })?);
    if precision != Precision::F32 {
        let prompts: Vec<String> = (0..args.batch).map(|i| prompt(128, i)).collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let (a, b) = (embed(&backbone, &refs)?, embed(reference, &refs)?);
        let cos = (&a * &b)?.sum(1)? / ((a.sqr()?.sum(1)? * b.sqr()?.sum(1)?)?.sqrt()?);
        let cos = cos?.to_vec1::<f32>()?;
        let min = cos.iter().copied().fold(f32::MAX, f32::min);
        notes.push(format!(
            "{precision} vs f32 sentence embeddings (128 tokens, {} prompts): cosine min {min:.5}",
            cos.len()
        ));
    }
    Ok(())
}

/// The router artifact's decision path at `precision`.
fn router_rows(
    args: &ScorerArgs,
    art: &Path,
    backbone_dir: &Path,
    precision: Precision,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let options = ScorerOptions {
        backbone: Some(backbone_dir.to_path_buf()),
        precision,
        ..ScorerOptions::default()
    };
    let scorer = load_scorer(art, &options)?;
    let m = &RouterMeta::read(art)?;
    let models = m.models.len();
    let design = match m.method {
        Method::Ngram => format!(
            "{} tokens of the whole prompt, {} buckets, {models} models",
            m.hyper.ngram_tokens, m.hyper.ngram_buckets
        ),
        _ => format!(
            "L={}, +{} layers, {models} models, prompt cut at {} tokens",
            m.hyper.frozen_layers, m.hyper.trainable_layers, m.hyper.max_prompt_tokens
        ),
    };
    let name = format!("router {} decision {precision} ({design})", m.method);
    for &n in &args.lengths {
        rows.push(time_single(&name, n, args.iters, |p| {
            scorer.score_batch(&[p])?;
            Ok(())
        })?);
    }
    rows.push(time_batch(&name, args.batch, batch_reps(args), |ps| {
        scorer.score_batch(ps)?;
        Ok(())
    })?);
    Ok(())
}

/// bench/pytorch_minilm.py's rows, on the same prompts and thread count.
fn pytorch_rows(args: &ScorerArgs, py: &Path, backbone_dir: &Path) -> anyhow::Result<PythonOut> {
    let lengths: Vec<String> = args.lengths.iter().map(ToString::to_string).collect();
    let out = std::process::Command::new(py)
        .arg(&args.script)
        .args(["--model", &backbone_dir.to_string_lossy()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--lengths", &lengths.join(",")])
        .args(["--iters", &args.iters.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .output()
        .with_context(|| format!("running {} {}", py.display(), args.script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the PyTorch bench output")
}

fn print_table(rows: &[Row]) {
    println!("| scorer | tokens | batch | p50 ms | p99 ms | prompts/s | p50 / PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let torch_p50 = rows
            .iter()
            .find(|t| t.name.starts_with("pytorch") && t.tokens == r.tokens && t.batch == r.batch)
            .map(|t| t.p50_ms);
        println!(
            "| {} | {} | {} | {:.2} | {} | {:.1} | {} |",
            r.name,
            r.tokens,
            r.batch,
            r.p50_ms,
            r.p99_ms
                .map(|p| format!("{p:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.per_s,
            torch_p50
                .map(|t| format!("{:.2}", r.p50_ms / t))
                .unwrap_or_else(|| "-".into())
        );
    }
}
