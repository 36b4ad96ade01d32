//! The end of a run: every labelled source rewritten with the graded responses added, and the
//! manifest listing the newly covered models. Files are replaced atomically (write, then rename).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use lookahead_data::{Dataset, Manifest, Record, Response, MANIFEST_FILE};

use crate::job::{LabelError, LabelReport};
use crate::journal::{Entry, Graded};

/// Writes every source's records with the graded responses (journal and this run) added, and a manifest that
/// lists the newly covered models. Files are replaced atomically (write, then rename).
pub fn merge(
    dataset: &Dataset,
    sources: &[String],
    out: &Path,
    graded: &Graded,
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
