//! The labelling run: ask, grade, journal, then merge into dataset files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lookahead_api::RouterConfig;
use lookahead_data::grade::code::SandboxLimits;
use lookahead_data::{DataError, Dataset, Manifest, Record, Response, MANIFEST_FILE};
use tokio::sync::Mutex;

use super::client::{ChatClient, ClientError};
use super::graders::{to_source_scale, GradersConfig};
use super::journal::{self, Entry};

/// The journal's file name inside the output directory.
pub const JOURNAL_FILE: &str = "label-journal.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("dataset: {0}")]
    Data(#[from] DataError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("member {0:?} is not in the pool config")]
    UnknownMember(String),
    #[error("--concurrency must be at least 1")]
    Concurrency,
}

/// What to label, and how.
#[derive(Debug, Clone)]
pub struct LabelJob {
    pub pool: RouterConfig,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Pool member names to collect responses from.
    pub members: Vec<String>,
    pub sources: Option<Vec<String>>,
    /// At most this many prompts per source.
    pub limit: Option<usize>,
    pub concurrency: usize,
    /// Requests per second across all members; `None` is unlimited.
    pub rate_per_sec: Option<f64>,
    pub timeout: Duration,
    pub max_tokens: u32,
    /// Attempts per member call (transient failures only).
    pub attempts: u32,
    pub graders: GradersConfig,
    pub sandbox: SandboxLimits,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct LabelReport {
    /// (record, member) pairs asked in this run.
    pub asked: usize,
    /// Of those, graded.
    pub graded: usize,
    /// Of those, failed (call or grading); retried by the next run.
    pub failed: usize,
    /// Pairs skipped: the record already had the member's response, or the journal had it.
    pub already_labelled: usize,
    /// Graded responses per member merged into the output (this and earlier runs).
    pub merged: BTreeMap<String, usize>,
    /// Prompts (records) with at least one newly merged response.
    pub prompts_labelled: usize,
    pub files: Vec<PathBuf>,
}

struct Target {
    model_id: String,
    base_url: String,
}

/// Runs a labelling job to completion (resuming from the journal in `out`).
pub async fn run(job: LabelJob) -> Result<LabelReport, LabelError> {
    if job.concurrency == 0 {
        return Err(LabelError::Concurrency);
    }
    let dataset = Dataset::open(&job.data)?;
    let sources = dataset.resolve_sources(job.sources.as_deref())?;
    let targets: Vec<Arc<Target>> = job
        .members
        .iter()
        .map(|name| {
            job.pool
                .members
                .iter()
                .find(|m| &m.name == name)
                .map(|m| {
                    Arc::new(Target {
                        model_id: m.model_id.clone(),
                        base_url: m.base_url.clone(),
                    })
                })
                .ok_or_else(|| LabelError::UnknownMember(name.clone()))
        })
        .collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&job.out).map_err(|e| LabelError::Io(job.out.clone(), e))?;
    let journal_path = job.out.join(JOURNAL_FILE);
    // Graded pairs: those of earlier runs (from the journal), then this run's as they complete.
    let mut graded =
        journal::load(&journal_path).map_err(|e| LabelError::Io(journal_path.clone(), e))?;

    let mut report = LabelReport::default();
    let mut work = Vec::new();
    for source in &sources {
        let range = dataset
            .manifest()
            .source(source, &dataset.manifest_path())?
            .score_range;
        for record in dataset
            .records(source)?
            .take(job.limit.unwrap_or(usize::MAX))
        {
            let record = Arc::new(record?);
            for t in &targets {
                if record.responses.contains_key(&t.model_id)
                    || graded.contains_key(&(record.id.clone(), t.model_id.clone()))
                {
                    report.already_labelled += 1;
                } else {
                    work.push((record.clone(), t.clone(), range));
                }
            }
        }
    }
    report.asked = work.len();
    tracing::info!(
        pairs = work.len(),
        already = report.already_labelled,
        "labelling"
    );

    let bar = progress_bar(job.progress, work.len() as u64);
    let client = ChatClient::new(job.timeout);
    let pacer = job.rate_per_sec.filter(|r| *r > 0.0).map(|r| {
        Arc::new(Mutex::new(tokio::time::interval(Duration::from_secs_f64(
            1.0 / r,
        ))))
    });
    let mut writer = journal::Writer::open(&journal_path)
        .map_err(|e| LabelError::Io(journal_path.clone(), e))?;
    let job = Arc::new(job);
    let mut results = futures::stream::iter(work)
        .map(|(record, target, range)| {
            let (client, job, pacer) = (client.clone(), job.clone(), pacer.clone());
            async move { label_one(&client, &job, pacer.as_deref(), &record, &target, range).await }
        })
        .buffer_unordered(job.concurrency);
    while let Some(entry) = results.next().await {
        if entry.score.is_some() {
            report.graded += 1;
        } else {
            report.failed += 1;
            tracing::warn!(id = %entry.id, model = %entry.model, error = entry.error.as_deref().unwrap_or(""), "not labelled");
        }
        writer
            .append(&entry)
            .map_err(|e| LabelError::Io(journal_path.clone(), e))?;
        if entry.score.is_some() {
            graded.insert((entry.id.clone(), entry.model.clone()), entry);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    merge(&dataset, &sources, &job.out, &graded, &mut report)?;
    Ok(report)
}

async fn label_one(
    client: &ChatClient,
    job: &LabelJob,
    pacer: Option<&Mutex<tokio::time::Interval>>,
    record: &Record,
    target: &Target,
    range: lookahead_data::ScoreRange,
) -> Entry {
    let mut entry = Entry {
        id: record.id.clone(),
        source: record.source.clone(),
        model: target.model_id.clone(),
        text: String::new(),
        score: None,
        grader: job.graders.kind_for(record).as_str().to_string(),
        error: None,
    };
    let mut last_error: Option<ClientError> = None;
    for attempt in 0..job.attempts.max(1) {
        if let Some(p) = pacer {
            p.lock().await.tick().await;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
        }
        match client
            .chat(
                &target.base_url,
                &target.model_id,
                None,
                None,
                &record.prompt,
                job.max_tokens,
            )
            .await
        {
            Ok(text) => {
                entry.text = text;
                last_error = None;
                break;
            }
            Err(e) => {
                let transient = e.is_transient();
                last_error = Some(e);
                if !transient {
                    break;
                }
            }
        }
    }
    if let Some(e) = last_error {
        entry.error = Some(format!("member call: {e}"));
        return entry;
    }
    match job
        .graders
        .grade(client, record, &entry.text, &job.sandbox)
        .await
    {
        Ok((kind, fraction)) => {
            entry.grader = kind.as_str().to_string();
            entry.score = Some(to_source_scale(fraction, &range));
        }
        Err(e) => entry.error = Some(format!("grading: {e}")),
    }
    entry
}

/// Writes every source's records with the graded responses (journal and this run) added, and a manifest that
/// lists the newly covered models. Files are replaced atomically (write, then rename).
fn merge(
    dataset: &Dataset,
    sources: &[String],
    out: &Path,
    graded: &HashMap<(String, String), Entry>,
    report: &mut LabelReport,
) -> Result<(), LabelError> {
    let mut by_id: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in graded.values() {
        by_id.entry(e.id.as_str()).or_default().push(e);
    }
    let mut manifest: Manifest = dataset.manifest().clone();
    for source in sources {
        let mut added_models = BTreeSet::new();
        let mut records = Vec::new();
        for record in dataset.records(source)? {
            let mut record = record?;
            let mut added = false;
            for e in by_id.get(record.id.as_str()).into_iter().flatten() {
                if e.source != record.source || record.responses.contains_key(&e.model) {
                    continue;
                }
                let Some(score) = e.score else { continue };
                record.responses.insert(
                    e.model.clone(),
                    Response {
                        text: e.text.clone(),
                        score,
                        grader: Some(e.grader.clone()),
                    },
                );
                *report.merged.entry(e.model.clone()).or_default() += 1;
                added_models.insert(e.model.clone());
                added = true;
            }
            report.prompts_labelled += usize::from(added);
            records.push(record);
        }
        let path = out.join(format!("{source}.jsonl.gz"));
        write_gz_jsonl(&path, &records)?;
        report.files.push(path);
        if let Some(info) = manifest.sources.get_mut(source) {
            for m in added_models {
                if !info.models.contains(&m) {
                    info.models.push(m);
                }
            }
            info.models.sort();
        }
    }
    let path = out.join(MANIFEST_FILE);
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| LabelError::Io(path.clone(), std::io::Error::other(e)))?;
    write_atomically(&path, &text)?;
    report.files.push(path);
    Ok(())
}

fn write_gz_jsonl(path: &Path, records: &[Record]) -> Result<(), LabelError> {
    let io = |e: std::io::Error| LabelError::Io(path.to_owned(), e);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for r in records {
        serde_json::to_writer(&mut gz, r).map_err(|e| io(std::io::Error::other(e)))?;
        gz.write_all(b"\n").map_err(io)?;
    }
    write_atomically(path, &gz.finish().map_err(io)?)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LabelError> {
    let io = |e: std::io::Error| LabelError::Io(path.to_owned(), e);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} labelling {pos}/{len} [{elapsed_precise}] eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
