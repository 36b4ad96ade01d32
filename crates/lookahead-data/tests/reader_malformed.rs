//! The record reader on real files (plain and gzip, written to a temp dir) with malformed input:
//! every error names the file and the line.
#![cfg(test)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use lookahead_data::{read_records, DataError, Dataset, Pool, ReaderOptions, RecordReader};

const GOOD: &str = r#"{"id": "a-1", "source": "A", "prompt": "p1", "responses": {"m1": {"text": "x", "score": 1.0}, "m2": {"text": "y", "score": 0.0}}}"#;
const GOOD2: &str = r#"{"id": "a-2", "source": "A", "prompt": "p2", "responses": {"m1": {"text": "x", "score": 0.0}, "m2": {"text": "y", "score": 1}}, "reference": {"answer": "42"}}"#;
const ONLY_M1: &str = r#"{"id": "a-3", "source": "A", "prompt": "p3", "responses": {"m1": {"text": "x", "score": 0.5}}}"#;

fn write_plain(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn write_gz(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    std::fs::write(&path, enc.finish().unwrap()).unwrap();
    path
}

fn first_error(path: &Path, opts: ReaderOptions) -> DataError {
    RecordReader::open(path, opts)
        .unwrap()
        .find_map(Result::err)
        .expect("an error")
}

#[test]
fn reads_plain_and_gzip_identically() {
    let dir = tempfile::tempdir().unwrap();
    let plain = read_records(&write_plain(dir.path(), "A.jsonl", &[GOOD, "", GOOD2])).unwrap();
    let gz = read_records(&write_gz(dir.path(), "A.jsonl.gz", &[GOOD, GOOD2])).unwrap();
    assert_eq!(plain, gz);
    let bom = format!("\u{feff}{GOOD}\r\n{GOOD2}\r\n");
    std::fs::write(dir.path().join("bom.jsonl"), bom).unwrap();
    assert_eq!(read_records(&dir.path().join("bom.jsonl")).unwrap(), plain);
    assert_eq!(plain.len(), 2);
    assert_eq!(plain[1].score("m2"), Some(1.0));
    assert_eq!(
        plain[1]
            .reference
            .as_ref()
            .and_then(|r| r.answer.as_deref()),
        Some("42")
    );
}

#[test]
fn malformed_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 6] = [
        (
            "bad_json.jsonl",
            r#"{"id": "a-9", "source": "#,
            "malformed record",
        ),
        (
            "missing_field.jsonl",
            r#"{"id": "a-9", "source": "A", "responses": {}}"#,
            "missing field `prompt`",
        ),
        (
            "wrong_type.jsonl",
            r#"{"id": "a-9", "source": "A", "prompt": "p", "responses": {"m1": {"text": "x", "score": "high"}}}"#,
            "invalid type",
        ),
        (
            "empty_responses.jsonl",
            r#"{"id": "a-9", "source": "A", "prompt": "p", "responses": {}}"#,
            "\"responses\" is empty",
        ),
        (
            "empty_id.jsonl",
            r#"{"id": " ", "source": "A", "prompt": "p", "responses": {"m1": {"text": "x", "score": 1}}}"#,
            "empty \"id\"",
        ),
        ("not_object.jsonl", "[1, 2]", "malformed record"),
    ];
    for (name, bad, expected) in cases {
        let path = write_plain(dir.path(), name, &[GOOD, GOOD2, bad, GOOD]);
        let err = first_error(&path, ReaderOptions::default()).to_string();
        let location = format!("{}:3:", path.display());
        assert!(err.starts_with(&location), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        // records before the bad line were delivered, nothing after it
        let results: Vec<_> = RecordReader::open(&path, ReaderOptions::default())
            .unwrap()
            .collect();
        assert_eq!(results.len(), 3, "{name}");
        assert!(results[..2].iter().all(Result::is_ok));
    }
}

#[test]
fn oversize_line_is_rejected_without_buffering_it() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!(
        r#"{{"id": "a-9", "source": "A", "prompt": "{}", "responses": {{"m1": {{"text": "x", "score": 1}}}}}}"#,
        "p".repeat(10_000)
    );
    let path = write_plain(dir.path(), "long.jsonl", &[GOOD, &long]);
    let err = first_error(
        &path,
        ReaderOptions {
            max_line_bytes: 4096,
        },
    );
    assert!(
        matches!(
            err,
            DataError::LineTooLong {
                line: 2,
                max_bytes: 4096,
                ..
            }
        ),
        "{err}"
    );
    // the default limit accepts it
    assert_eq!(read_records(&path).unwrap().len(), 2);
}

#[test]
fn truncated_gzip_is_an_error_not_a_short_read() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..200)
        .map(|i| GOOD.replace("a-1", &format!("a-{i}")))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let path = write_gz(dir.path(), "A.jsonl.gz", &refs);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let results: Vec<_> = RecordReader::open(&path, ReaderOptions::default())
        .unwrap()
        .collect();
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("truncation must surface as an error");
    assert!(
        matches!(err, DataError::Read { .. } | DataError::Json { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("A.jsonl.gz:"), "{err}");
    assert!(results.len() < 200);
}

fn dataset(dir: &Path) {
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"A": {"score_range": [0, 1], "models": ["m1", "m2"]},
            "B": {"score_range": [1, 10], "models": ["m1", "m2"]}}"#,
    )
    .unwrap();
    write_gz(dir, "A.jsonl.gz", &[GOOD, ONLY_M1, GOOD2]);
    write_plain(
        dir,
        "B.jsonl",
        &[
            r#"{"id": "b-1", "source": "B", "prompt": "q", "responses": {"m2": {"text": "x", "score": 5.5}, "m1": {"text": "y", "score": 10}}}"#,
        ],
    );
}

#[test]
fn dataset_selects_pool_in_order_and_counts_skipped() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let data = Dataset::open(dir.path()).unwrap();
    let all = data.resolve_sources::<&str>(None).unwrap();
    assert_eq!(all, vec!["A", "B"]);
    let sel = data
        .select_pool(&all, &Pool::new(["m2", "m1"]).unwrap())
        .unwrap();
    let ids: Vec<&str> = sel.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["a-1", "a-2", "b-1"]);
    assert_eq!(sel.records[2].scores(), vec![5.5, 10.0]);
    assert_eq!(
        data.scaled_scores(&sel.records[2]).unwrap(),
        vec![50.0, 100.0]
    );
    assert_eq!(sel.skipped.total(), 1);
    assert_eq!(sel.skipped.by_source.get("A"), Some(&1));
    assert_eq!(sel.skipped.by_missing_model.get("m2"), Some(&1));
    assert_eq!(sel.seen.get("A"), Some(&3));

    let only_b = data.resolve_sources(Some(&["B", "B"])).unwrap();
    assert_eq!(only_b, vec!["B"]);
    assert_eq!(data.read_all(&only_b).unwrap().len(), 1);
}

#[test]
fn dataset_rejects_traversal_unknown_and_mismatched_sources() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let data = Dataset::open(dir.path()).unwrap();
    for bad in ["../A", "A/../B", ".hidden", "", "a b"] {
        let err = data.resolve_sources(Some(&[bad])).unwrap_err();
        assert!(matches!(err, DataError::SourceName { .. }), "{bad}: {err}");
    }
    let err = data.resolve_sources(Some(&["C"])).unwrap_err().to_string();
    assert!(err.contains("known: A, B"), "{err}");
    assert!(Pool::new(["m1", "m1"]).is_err());
    assert!(Pool::new(Vec::<String>::new()).is_err());

    // the same id twice (across sources) is an error, not a silent double count
    write_plain(
        dir.path(),
        "B.jsonl",
        &[
            r#"{"id": "a-1", "source": "B", "prompt": "q", "responses": {"m1": {"text": "", "score": 1}}}"#,
        ],
    );
    let err = data
        .select_pool(&["A", "B"], &Pool::new(["m1"]).unwrap())
        .unwrap_err();
    assert!(matches!(err, DataError::DuplicateId { .. }), "{err}");

    // a record whose source differs from its file's
    write_plain(dir.path(), "B.jsonl", &[GOOD]);
    let err = data.records("B").unwrap().find_map(Result::err).unwrap();
    assert!(
        err.to_string().contains("differs from the file's source"),
        "{err}"
    );
}
