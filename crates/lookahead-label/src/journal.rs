//! The labelling journal: one JSON line per graded (record, member) pair, appended and flushed as
//! each completes. It is what makes a run resumable: pairs already in it are not asked again, and
//! the final merge reads responses from it, so an interruption loses at most the calls in flight.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One journaled outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub source: String,
    /// The dataset's model name (the member's `modelId`).
    pub model: String,
    pub text: String,
    /// On the source's scale; `None` when grading failed (the pair is retried by the next run).
    pub score: Option<f64>,
    /// Which grader produced `score` (`exact-answer`, `unit-tests`, `judge`).
    pub grader: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Graded entries by (record id, model).
pub type Graded = HashMap<(String, String), Entry>;

/// Reads a journal, keeping the last graded entry per (id, model). A torn last line (the process
/// died mid-write) is ignored; any other malformed line is an error naming its number.
pub fn load(path: &Path) -> std::io::Result<Graded> {
    let mut done = HashMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(e),
    };
    let lines: Vec<String> = BufReader::new(file).lines().collect::<Result<_, _>>()?;
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) if e.score.is_some() => {
                done.insert((e.id.clone(), e.model.clone()), e);
            }
            Ok(_) => {}
            Err(_) if i == last => tracing::warn!(line = i + 1, "ignoring torn last journal line"),
            Err(err) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {err}", path.display(), i + 1),
                ))
            }
        }
    }
    Ok(done)
}

/// Appends entries, one flushed line each.
pub struct Writer {
    file: File,
    path: PathBuf,
}

impl Writer {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        // A torn line from an earlier crash (no trailing newline) was never a complete entry:
        // cut it off, so it neither glues onto the next entry nor sits corrupt mid-journal.
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.last().is_some_and(|b| *b != b'\n') {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64)?;
            tracing::warn!(path = %path.display(), "dropped a torn journal line");
        }
        Ok(Writer {
            file,
            path: path.to_owned(),
        })
    }

    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, score: Option<f64>) -> Entry {
        Entry {
            id: id.into(),
            source: "GSM8K".into(),
            model: "m".into(),
            text: "t".into(),
            score,
            grader: "exact-answer".into(),
            error: None,
        }
    }

    #[test]
    fn resumes_from_graded_entries_and_tolerates_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let mut w = Writer::open(&path).expect("open");
        w.append(&entry("a", Some(1.0))).expect("append");
        w.append(&entry("b", None)).expect("append");
        drop(w);
        let mut f = OpenOptions::new().append(true).open(&path).expect("reopen");
        f.write_all(br#"{"id":"c","sour"#).expect("torn write");
        let done = load(&path).expect("load");
        assert_eq!(done.len(), 1, "failed and torn entries are not done");
        assert!(done.contains_key(&("a".to_string(), "m".to_string())));
        // Appending after the torn line keeps the journal readable.
        let mut w = Writer::open(&path).expect("reopen");
        w.append(&entry("d", Some(0.0))).expect("append");
        assert_eq!(load(&path).expect("load").len(), 2);
    }

    #[test]
    fn a_corrupt_middle_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, "not json\n{\"x\":1}\n").expect("write");
        let err = load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("journal.jsonl:1"), "{err}");
    }
}
