//! `crds/` must be exactly what `lookahead crdgen` prints, so the committed manifests (and the
//! chart that ships them) never drift from the Rust types.
#![cfg(test)]

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_crds_match_crdgen() {
    let generated = lookahead_api::crds_yaml().expect("CRDs render");
    assert!(
        read("crds/lookahead.dev.yaml") == generated,
        "crds/lookahead.dev.yaml is stale: run `cargo run -p lookahead-cli -- crdgen > crds/lookahead.dev.yaml`"
    );
}

/// Helm installs CRDs from the chart's own `crds/`; it must ship the same definitions.
#[test]
fn chart_ships_the_generated_crds() {
    assert!(
        read("charts/lookahead/crds/lookahead.dev.yaml") == read("crds/lookahead.dev.yaml"),
        "charts/lookahead/crds/ differs from crds/: copy crds/lookahead.dev.yaml into the chart"
    );
}

/// `docs/crds.md` documents every field; it is rendered from the schemas.
#[test]
fn field_reference_matches_the_schemas() {
    let generated = lookahead_api::crds_markdown().expect("docs render");
    assert!(
        read("docs/crds.md") == generated,
        "docs/crds.md is stale: run `cargo run -p lookahead-cli -- crdgen --docs > docs/crds.md`"
    );
}
