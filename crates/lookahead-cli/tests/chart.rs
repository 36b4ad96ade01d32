//! The Helm chart with the real `helm` (4 and 3, paths in `LOOKAHEAD_HELM` / `LOOKAHEAD_HELM3`,
//! installed by `.ci/run` through `../shared/k8s/helm.sh`): `helm lint` is clean, and what
//! `helm template` renders is accepted by the real API server (`kubectl apply --dry-run=server`),
//! `manifests/install.yaml` is that render, and the rendered RBAC is exactly the reviewed
//! `manifests/rbac/operator.yaml`. Skips with the reason when helm or the cluster is missing.
#![cfg(test)]

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
        let rendered = helm_template(&helm, "la", ns, extra);
        let mut child = Command::new("kubectl")
            // No -n: the render names every object's namespace (the external metrics API's
            // RoleBinding lives in kube-system).
            .args(["apply", "--dry-run=server", "-f", "-"])
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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// YAML documents of a multi-document stream (empty ones dropped).
fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The RBAC rules of every Role/ClusterRole in `docs`, keyed by kind and a name suffix
/// (`operator` or `leader-election`), each rule as sorted (apiGroups, resources, verbs).
fn rbac_rules(
    docs: &[serde_yaml::Value],
) -> std::collections::BTreeMap<String, Vec<[Vec<String>; 3]>> {
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        let mut s: Vec<String> = v
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        s.sort();
        s
    };
    let mut out = std::collections::BTreeMap::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        // Who may read the external metrics API (the HPA controller): not the operator's rights.
        if name.ends_with("-external-metrics-reader") {
            continue;
        }
        let role = if name.ends_with("leader-election") {
            "leader-election"
        } else {
            "operator"
        };
        let mut rules: Vec<[Vec<String>; 3]> = d["rules"]
            .as_sequence()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        [
                            strings(&r["apiGroups"]),
                            strings(&r["resources"]),
                            strings(&r["verbs"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        rules.sort();
        out.insert(format!("{kind}/{role}"), rules);
    }
    out
}

/// `helm template RELEASE --namespace NS <chart> EXTRA...` with the real helm.
fn helm_template(helm: &PathBuf, release: &str, namespace: &str, extra: &[&str]) -> String {
    let (ok, rendered) = run(Command::new(helm)
        .args(["template", release, "--namespace", namespace])
        .arg(chart())
        .args(extra));
    assert!(ok, "helm template {extra:?}: {rendered}");
    rendered
}

/// The chart as `scripts/render-manifests.sh` renders it (CRDs included).
fn render(helm: &PathBuf, extra: &[&str]) -> String {
    let mut args = vec!["--include-crds"];
    args.extend_from_slice(extra);
    helm_template(helm, "lookahead", "lookahead-system", &args)
}

/// `manifests/install.yaml` is what the real helm renders from the chart now (blank lines aside,
/// which helm 3 and 4 place differently), and the RBAC the chart renders, cluster-wide and for a
/// one-namespace install, grants exactly the rules of the commented `manifests/rbac/operator.yaml`
/// (which the API-server test shows is enough).
#[test]
fn manifests_are_the_rendered_chart_and_grant_what_the_rbac_manifest_grants() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let text_lines = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let committed =
        std::fs::read_to_string(repo().join("manifests/install.yaml")).expect("install.yaml");
    let fresh = render(&helm, &[]);
    assert!(
        text_lines(&committed) == text_lines(&fresh),
        "manifests/install.yaml is stale: run scripts/render-manifests.sh"
    );

    let manifest = std::fs::read_to_string(repo().join("manifests/rbac/operator.yaml"))
        .expect("rbac manifest");
    let wanted = rbac_rules(&documents(&manifest));
    assert_eq!(
        wanted.keys().collect::<Vec<_>>(),
        ["ClusterRole/operator", "Role/leader-election"]
    );
    assert_eq!(
        rbac_rules(&documents(&fresh)),
        wanted,
        "cluster-wide install"
    );
    // A one-namespace install grants the same rules through a Role in that namespace.
    let namespaced = rbac_rules(&documents(&render(
        &helm,
        &["--set", "operator.watchNamespace=team-a"],
    )));
    assert_eq!(
        namespaced.get("Role/operator"),
        wanted.get("ClusterRole/operator"),
        "one-namespace install"
    );
    assert!(!namespaced.contains_key("ClusterRole/operator"));
}

/// The operator container's environment as `name -> value` (values from the downward API as
/// `None`).
fn operator_env(rendered: &str) -> std::collections::BTreeMap<String, Option<String>> {
    let deployment = documents(rendered)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the operator Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            (name, e["value"].as_str().map(str::to_string))
        })
        .collect()
}

/// `observability.*` reaches the operator's environment, where both its own set-up and the
/// router pods' read it (`OTEL_EXPORTER_OTLP_ENDPOINT` is the operator's `--otlp-endpoint`,
/// `LOOKAHEAD_LOG_FORMAT` its `--log-format`); no endpoint, no export. A format the binary does
/// not know is refused by the values schema.
#[test]
fn observability_values_reach_the_operators_environment() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let plain = operator_env(&render(&helm, &[]));
    assert_eq!(plain["LOOKAHEAD_LOG_FORMAT"].as_deref(), Some("text"));
    assert!(!plain.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"));

    let traced = operator_env(&render(
        &helm,
        &[
            "--set",
            "observability.otlpEndpoint=http://otel-collector.observability:4317",
            "--set",
            "observability.logFormat=json",
        ],
    ));
    assert_eq!(traced["LOOKAHEAD_LOG_FORMAT"].as_deref(), Some("json"));
    assert_eq!(
        traced["OTEL_EXPORTER_OTLP_ENDPOINT"].as_deref(),
        Some("http://otel-collector.observability:4317")
    );

    let (ok, text) = run(Command::new(&helm)
        .args(["template", "la"])
        .arg(chart())
        .args(["--set", "observability.logFormat=xml"]));
    assert!(!ok, "logFormat=xml rendered: {text}");
}
