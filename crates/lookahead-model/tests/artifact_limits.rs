//! The artifact loader against hostile files in a temp dir: a `router.json` over the size limit
//! is refused before it is read into memory (the router and the scorer sidecar load artifacts
//! from a shared volume, so a bad file must not exhaust them); small malformed files still get
//! the schema error they always got.
#![cfg(test)]

use lookahead_model::artifact::{RouterMeta, MAX_META_BYTES, META_FILE};

#[test]
fn an_oversize_router_json_is_refused_with_a_limit_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("{\"format_version\": 1, ");
    text.push_str(&" ".repeat(MAX_META_BYTES as usize));
    text.push('}');
    std::fs::write(dir.path().join(META_FILE), text).expect("write");
    let err = RouterMeta::read(dir.path()).expect_err("oversize router.json");
    assert_eq!(err.metric_label(), "io", "{err}");
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn small_malformed_router_json_gets_the_schema_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, label) in [
        ("{\"format_version\": 1}", "meta"),
        ("not json", "meta"),
        ("{\"format_version\": 999}", "version"),
    ] {
        std::fs::write(dir.path().join(META_FILE), text).expect("write");
        let err = RouterMeta::read(dir.path()).expect_err("malformed");
        assert_eq!(err.metric_label(), label, "{text}: {err}");
    }
    std::fs::remove_file(dir.path().join(META_FILE)).expect("rm");
    assert_eq!(
        RouterMeta::read(dir.path())
            .expect_err("missing")
            .metric_label(),
        "io"
    );
}
