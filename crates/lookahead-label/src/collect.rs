//! The labelling run: find the pairs still to ask, ask and grade them, journal each outcome, then
//! merge into dataset files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lookahead_client::{ChatClient, ChatEndpoint, ClientError};
use lookahead_data::{Dataset, Record, ScoreRange};
use tokio::sync::Mutex;

use crate::grade::to_source_scale;
use crate::job::{LabelError, LabelJob, LabelReport};
use crate::journal::{self, Entry, Graded};
use crate::merge::merge;

/// The journal's file name inside the output directory.
pub const JOURNAL_FILE: &str = "label-journal.jsonl";

struct Target {
    model_id: String,
    endpoint: ChatEndpoint,
}

/// One (record, member) pair to ask, with the source's score range.
struct Pair {
    record: Arc<Record>,
    target: Arc<Target>,
    range: ScoreRange,
}

/// Runs a labelling job to completion (resuming from the journal in `out`).
pub async fn run(job: LabelJob) -> Result<LabelReport, LabelError> {
    if job.concurrency == 0 {
        return Err(LabelError::Concurrency);
    }
    let dataset = Dataset::open(&job.data)?;
    let sources = dataset.resolve_sources(job.sources.as_deref())?;
    let targets = resolve_targets(&job)?;
    std::fs::create_dir_all(&job.out).map_err(|e| LabelError::Io(job.out.clone(), e))?;
    let journal_path = job.out.join(JOURNAL_FILE);
    // Graded pairs: those of earlier runs (from the journal), then this run's as they complete.
    let mut graded =
        journal::load(&journal_path).map_err(|e| LabelError::Io(journal_path.clone(), e))?;

    let mut report = LabelReport::default();
    let work = pending_pairs(
        &dataset,
        &sources,
        &targets,
        &graded,
        job.limit,
        &mut report,
    )?;
    report.asked = work.len();
    tracing::info!(
        pairs = work.len(),
        already = report.already_labelled,
        "labelling"
    );
    let job = Arc::new(job);
    ask_all(&job, work, &journal_path, &mut graded, &mut report).await?;
    merge(&dataset, &sources, &job.out, &graded, &mut report)?;
    Ok(report)
}

/// The named members' model ids and endpoints, from the pool config; a member with an
/// `apiKeyFile` is asked with that key (read once: a labelling run is short).
fn resolve_targets(job: &LabelJob) -> Result<Vec<Arc<Target>>, LabelError> {
    job.members
        .iter()
        .map(|name| {
            let m = job
                .pool
                .members
                .iter()
                .find(|m| &m.name == name)
                .ok_or_else(|| LabelError::UnknownMember(name.clone()))?;
            let key = match &m.api_key_file {
                Some(path) => Some(read_member_key(&m.name, path)?),
                None => None,
            };
            Ok(Arc::new(Target {
                model_id: m.model_id.clone(),
                endpoint: ChatEndpoint::new(&m.base_url).with_api_key(key.as_deref()),
            }))
        })
        .collect()
}

/// A member's key: the file's text, trimmed (as the router reads it).
fn read_member_key(member: &str, path: &Path) -> Result<String, LabelError> {
    let err = |reason: String| LabelError::MemberKey {
        member: member.to_string(),
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    match text.trim() {
        "" => Err(err("empty".into())),
        key => Ok(key.to_string()),
    }
}

/// The pairs still to ask: neither in the record already nor graded in the journal (those are
/// counted in `report.already_labelled`).
fn pending_pairs(
    dataset: &Dataset,
    sources: &[String],
    targets: &[Arc<Target>],
    graded: &Graded,
    limit: Option<usize>,
    report: &mut LabelReport,
) -> Result<Vec<Pair>, LabelError> {
    let mut work = Vec::new();
    for source in sources {
        let range = dataset
            .manifest()
            .source(source, &dataset.manifest_path())?
            .score_range;
        for record in dataset.records(source)?.take(limit.unwrap_or(usize::MAX)) {
            let record = Arc::new(record?);
            for t in targets {
                if record.responses.contains_key(&t.model_id)
                    || graded.contains_key(&(record.id.clone(), t.model_id.clone()))
                {
                    report.already_labelled += 1;
                } else {
                    work.push(Pair {
                        record: record.clone(),
                        target: t.clone(),
                        range,
                    });
                }
            }
        }
    }
    Ok(work)
}

/// Asks and grades every pair (`job.concurrency` at a time, paced by `job.rate_per_sec`),
/// journaling each outcome as it completes and adding the graded ones to `graded`.
async fn ask_all(
    job: &Arc<LabelJob>,
    work: Vec<Pair>,
    journal_path: &Path,
    graded: &mut Graded,
    report: &mut LabelReport,
) -> Result<(), LabelError> {
    let io = |e: std::io::Error| LabelError::Io(journal_path.to_owned(), e);
    let bar = lookahead_data::progress::bar(work.len() as u64, "labelling", job.progress);
    // https members: the system roots plus the pool config's CA bundle, as the router.
    let client = ChatClient::with_ca_bundle(job.timeout, job.pool.tls.ca_bundle_file.as_deref())?;
    let pacer = job.rate_per_sec.filter(|r| *r > 0.0).map(|r| {
        Arc::new(Mutex::new(tokio::time::interval(Duration::from_secs_f64(
            1.0 / r,
        ))))
    });
    let mut writer = journal::Writer::open(journal_path).map_err(io)?;
    let mut results = futures::stream::iter(work)
        .map(|pair| {
            let (client, job, pacer) = (client.clone(), job.clone(), pacer.clone());
            async move { label_one(&client, &job, pacer.as_deref(), &pair).await }
        })
        .buffer_unordered(job.concurrency);
    while let Some(entry) = results.next().await {
        if entry.score.is_some() {
            report.graded += 1;
        } else {
            report.failed += 1;
            tracing::warn!(id = %entry.id, model = %entry.model, error = entry.error.as_deref().unwrap_or(""), "not labelled");
        }
        writer.append(&entry).map_err(io)?;
        if entry.score.is_some() {
            graded.insert((entry.id.clone(), entry.model.clone()), entry);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

async fn label_one(
    client: &ChatClient,
    job: &LabelJob,
    pacer: Option<&Mutex<tokio::time::Interval>>,
    pair: &Pair,
) -> Entry {
    let (record, target) = (&*pair.record, &*pair.target);
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
            .complete(
                &target.endpoint,
                &target.model_id,
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
            entry.score = Some(to_source_scale(fraction, &pair.range));
        }
        Err(e) => entry.error = Some(format!("grading: {e}")),
    }
    entry
}
