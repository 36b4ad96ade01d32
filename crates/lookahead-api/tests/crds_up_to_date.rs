//! `crds/` must be exactly what `lookahead crdgen` prints, so the committed manifests (and the
//! chart that ships them) never drift from the Rust types.

#[test]
fn committed_crds_match_crdgen() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/lookahead.dev.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/lookahead.dev.yaml exists");
    let generated = lookahead_api::crds_yaml().expect("CRDs render");
    assert!(
        committed == generated,
        "crds/lookahead.dev.yaml is stale: run `cargo run -p lookahead-cli -- crdgen > crds/lookahead.dev.yaml`"
    );
}
