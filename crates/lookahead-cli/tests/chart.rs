//! The Helm chart with the real `helm` (4 and 3, paths in `LOOKAHEAD_HELM` / `LOOKAHEAD_HELM3`,
//! installed by `.ci/run` through `../shared/k8s/helm.sh`): `helm lint` is clean, and what
//! `helm template` renders is accepted by the real API server (`kubectl apply --dry-run=server`).
//! Skips with the reason when helm or the cluster is missing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/lookahead")
}

fn helms() -> Vec<(String, PathBuf)> {
    ["LOOKAHEAD_HELM", "LOOKAHEAD_HELM3"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(|p| (v.to_string(), PathBuf::from(p))))
        .filter(|(_, p)| p.is_file())
        .collect()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn chart_lints_clean_with_real_helm() {
    let helms = helms();
    if helms.is_empty() {
        eprintln!(
            "SKIP: set LOOKAHEAD_HELM / LOOKAHEAD_HELM3 (../shared/k8s/helm.sh installs helm)"
        );
        return;
    }
    for (which, helm) in helms {
        let (ok, text) = run(Command::new(&helm).args(["lint", "--strict"]).arg(chart()));
        assert!(ok, "{which}: helm lint: {text}");
        assert!(text.contains("0 chart(s) failed"), "{which}: {text}");
    }
}

/// Renders the chart (both RBAC modes) and lets the real API server validate every object.
#[test]
fn rendered_chart_is_accepted_by_real_apiserver() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    if std::env::var_os("KUBECONFIG").is_none() {
        assert!(
            std::env::var("LOOKAHEAD_REQUIRE_CLUSTER").as_deref() != Ok("1"),
            "no KUBECONFIG"
        );
        eprintln!("SKIP: KUBECONFIG is not set");
        return;
    }
    let ns = "lookahead-chart-it";
    let _ = run(Command::new("kubectl").args(["create", "namespace", ns]));
    for extra in [
        &[][..],
        &["--set", "operator.watchNamespace=lookahead-chart-it"][..],
    ] {
        let (ok, rendered) = run(Command::new(&helm)
            .args(["template", "la", "--namespace", ns])
            .arg(chart())
            .args(extra));
        assert!(ok, "helm template {extra:?}: {rendered}");
        let mut child = Command::new("kubectl")
            .args(["apply", "--dry-run=server", "-n", ns, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rendered.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("kubectl finishes");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dry-run apply {extra:?}: {text}");
        for kind in [
            "deployment.apps/la-lookahead",
            "serviceaccount/la-lookahead",
        ] {
            assert!(text.contains(kind), "{kind} not applied in {text}");
        }
    }
    let _ = run(Command::new("kubectl").args(["delete", "namespace", ns, "--wait=false"]));
}
