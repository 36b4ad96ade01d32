//! The dataset loader against hostile input, on real files in a temp dir: source names that would
//! escape the dataset directory (`--sources ../etc`), a manifest naming such a source, and
//! oversize manifests and lines are refused with an error, before anything large is buffered.
#![cfg(test)]

use std::path::Path;

use lookahead_data::manifest::MAX_MANIFEST_BYTES;
use lookahead_data::{check_source_name, DataError, Dataset, Manifest, ReaderOptions};

const MANIFEST: &str = r#"{"A": {"score_range": [0, 1]}}"#;
const GOOD: &str = r#"{"id": "a-1", "source": "A", "prompt": "p1", "responses": {"m1": {"text": "x", "score": 1.0}}}"#;

fn dataset(dir: &Path, manifest: &str) -> Result<Dataset, DataError> {
    std::fs::write(dir.join("manifest.json"), manifest).expect("write manifest");
    std::fs::write(dir.join("A.jsonl"), format!("{GOOD}\n")).expect("write data");
    Dataset::open(dir)
}

#[test]
fn source_names_cannot_escape_the_dataset_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    // A file outside the dataset that a traversal would reach.
    std::fs::write(dir.path().join("secret.jsonl"), format!("{GOOD}\n")).expect("write");
    let ds = dataset(&data, MANIFEST).expect("minimal dataset");
    for name in [
        "../secret",
        "../../etc/passwd",
        "..",
        ".",
        "/etc/passwd",
        "A/../../secret",
        "a\\..\\secret",
        "A\0",
        "",
        ".hidden",
        "%2e%2e%2fsecret",
        "A B",
    ] {
        assert!(check_source_name(name).is_err(), "{name:?} accepted");
        assert!(
            ds.resolve_sources(Some(&[name])).is_err(),
            "{name:?} resolved"
        );
        assert!(ds.source_path(name).is_err(), "{name:?} has a path");
        assert!(ds.records(name).is_err(), "{name:?} opened");
    }
    assert_eq!(ds.read_all(&["A"]).expect("the real source reads").len(), 1);
}

#[test]
fn a_manifest_naming_a_traversing_source_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["../secret", "/etc/passwd", "..", "x/y"] {
        let manifest = MANIFEST.replace("\"A\"", &format!("{bad:?}"));
        let err = Manifest::parse(&manifest, &dir.path().join("manifest.json"));
        assert!(err.is_err(), "manifest with source {bad:?} accepted");
    }
}

#[test]
fn an_oversize_manifest_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut big = String::from(r#"{"A": {"score_range": [0, 1], "score": ""#);
    big.push_str(&" ".repeat(MAX_MANIFEST_BYTES as usize));
    big.push_str("\"}}");
    let err = dataset(dir.path(), &big).expect_err("oversize manifest");
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn an_oversize_line_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ds = dataset(dir.path(), MANIFEST).expect("minimal dataset");
    std::fs::write(dir.path().join("A.jsonl"), "x".repeat(10_000)).expect("write");
    let ds = ds.with_options(ReaderOptions {
        max_line_bytes: 1024,
    });
    let err = ds.read_all(&["A"]).expect_err("oversize line");
    assert!(matches!(err, DataError::LineTooLong { .. }), "{err}");
    assert!(err.to_string().contains("A.jsonl"), "{err}");
}
