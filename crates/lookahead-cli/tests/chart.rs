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

/// The CRDs as a chart of their own (`helm upgrade` upgrades them).
fn crds_chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/lookahead-crds")
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
        for chart in [chart(), crds_chart()] {
            let (ok, text) = run(Command::new(&helm).args(["lint", "--strict"]).arg(&chart));
            assert!(ok, "{which}: helm lint {}: {text}", chart.display());
            assert!(text.contains("0 chart(s) failed"), "{which}: {text}");
        }
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
    // Rendered as the server's version: policy/v1beta1 PodDisruptionBudget on 1.20.
    let kube_version = server_version();
    for extra in [
        &[][..],
        &["--set", "operator.watchNamespace=lookahead-chart-it"][..],
        &[
            "--set",
            "tests.policy.namespace=team-a,tests.policy.name=rp",
        ][..],
    ] {
        let mut args = vec!["--kube-version", kube_version.as_str()];
        args.extend_from_slice(extra);
        let rendered = helm_template(&helm, "la", ns, &args);
        // No -n: the render names every object's namespace (the external metrics API's
        // RoleBinding lives in kube-system).
        let (ok, text) = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered);
        assert!(ok, "dry-run apply {extra:?}: {text}");
        for kind in [
            "deployment.apps/la-lookahead",
            "serviceaccount/la-lookahead",
            "poddisruptionbudget.policy/la-lookahead",
            "pod/la-lookahead-test",
        ] {
            assert!(text.contains(kind), "{kind} not applied in {text}");
        }
    }
    // The CRDs chart: the CRDs with Helm's labels and the keep annotation.
    let (ok, crds) = run(Command::new(&helm)
        .args(["template", "la-crds"])
        .arg(crds_chart()));
    assert!(ok, "helm template lookahead-crds: {crds}");
    let (ok, text) = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &crds);
    assert!(ok, "dry-run apply of the CRDs chart: {text}");
    assert!(
        text.contains(
            "customresourcedefinition.apiextensions.k8s.io/routingpolicies.lookahead.dev"
        ),
        "{text}"
    );
    let _ = run(Command::new("kubectl").args(["delete", "namespace", ns, "--wait=false"]));
}

/// `kubectl ARGS` with `input` on stdin: success and output.
fn kubectl_stdin(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("kubectl finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The API server's version (`v1.20.2`), for `helm template --kube-version`.
fn server_version() -> String {
    let out = Command::new("kubectl")
        .args(["version", "-o", "json"])
        .output()
        .expect("kubectl runs");
    // stdout only: a client/server skew warning goes to stderr.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kubectl version -o json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no serverVersion in {v}"))
        .to_string()
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

/// The chart as `scripts/render-manifests.sh` renders it (CRDs included, the test pod not).
fn render(helm: &PathBuf, extra: &[&str]) -> String {
    let mut args = vec!["--include-crds", "--skip-tests"];
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

/// The first rendered object of `kind` (and, when given, `name`).
fn object(docs: &[serde_yaml::Value], kind: &str, name: Option<&str>) -> Option<serde_yaml::Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
        .cloned()
}

/// `helm template la --namespace sys <chart> EXTRA...` as YAML documents.
fn rendered(helm: &PathBuf, extra: &[&str]) -> Vec<serde_yaml::Value> {
    documents(&helm_template(helm, "la", "sys", extra))
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).expect("YAML")
}

/// The operator Deployment's pod spec.
fn pod_spec(docs: &[serde_yaml::Value]) -> serde_yaml::Value {
    object(docs, "Deployment", None).expect("Deployment")["spec"]["template"]["spec"].clone()
}

/// `nameOverride` renames the chart's part of object names and the name label (selector
/// included); `fullnameOverride` replaces the whole prefix, and everything naming an object
/// (ServiceAccount, Lease, metrics Service, APIService, test pod) follows.
#[test]
fn name_overrides_rename_every_object() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let docs = rendered(&helm, &["--set", "nameOverride=router-op"]);
    let deploy = object(&docs, "Deployment", None).expect("Deployment");
    assert_eq!(deploy["metadata"]["name"], "la-router-op");
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "router-op"
    );

    let docs = rendered(&helm, &["--set", "fullnameOverride=lk"]);
    for (kind, name) in [
        ("Deployment", "lk"),
        ("ServiceAccount", "lk"),
        ("Lease", "lk"),
        ("Service", "lk-metrics"),
        ("PodDisruptionBudget", "lk"),
        ("Pod", "lk-test"),
    ] {
        assert!(
            object(&docs, kind, Some(name)).is_some(),
            "no {kind} {name} with fullnameOverride"
        );
    }
    let args = pod_spec(&docs)["containers"][0]["args"].clone();
    assert!(args
        .as_sequence()
        .expect("args")
        .contains(&yaml("--lease-name=lk")));
    let api = object(&docs, "APIService", None).expect("APIService");
    assert_eq!(api["spec"]["service"]["name"], "lk-metrics");
    let test = object(&docs, "Pod", None).expect("test pod");
    assert_eq!(
        test["spec"]["containers"][0]["args"][1],
        "--url=http://lk-metrics.sys.svc:8080/readyz"
    );
}

/// `imagePullSecrets` reach the operator and the test pod; none by default.
#[test]
fn image_pull_secrets_reach_operator_test_and_operator_run_pods() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let plain = rendered(&helm, &[]);
    assert!(pod_spec(&plain).get("imagePullSecrets").is_none());
    let docs = rendered(&helm, &["--set", "imagePullSecrets[0].name=regcred"]);
    let want = yaml("[{name: regcred}]");
    assert_eq!(pod_spec(&docs)["imagePullSecrets"], want);
    assert_eq!(
        object(&docs, "Pod", None).expect("test pod")["spec"]["imagePullSecrets"],
        want
    );
    // The operator gives them to the router, scorer and training pods it runs.
    let args = pod_spec(&docs)["containers"][0]["args"].clone();
    let args: Vec<&str> = args
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--image-pull-secret=regcred"), "{args:?}");
    // A secret is named, nothing else.
    let (ok, text) = run(Command::new(&helm)
        .args(["template", "la"])
        .arg(chart())
        .args(["--set", "imagePullSecrets[0]=regcred"]));
    assert!(!ok, "a bare string was accepted: {text}");
}

/// `operator.podLabels` and `.podAnnotations` land on the pod template; the selector labels
/// cannot be overridden (the Deployment would lose its pods), the prometheus.io annotations can.
#[test]
fn pod_labels_and_annotations_reach_the_operator_pods() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let docs = rendered(
        &helm,
        &[
            "--set",
            "operator.podLabels.team=ml",
            "--set",
            "operator.podLabels.app\\.kubernetes\\.io/component=other",
            "--set",
            "operator.podAnnotations.example\\.com/owner=platform",
            "--set-string",
            "operator.podAnnotations.prometheus\\.io/scrape=false",
        ],
    );
    let deploy = object(&docs, "Deployment", None).expect("Deployment");
    let meta = &deploy["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"]["team"], "ml");
    assert_eq!(meta["labels"]["app.kubernetes.io/component"], "operator");
    for (k, v) in deploy["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("selector")
    {
        assert_eq!(&meta["labels"][k.as_str().expect("key")], v, "{k:?}");
    }
    assert_eq!(meta["annotations"]["example.com/owner"], "platform");
    assert_eq!(meta["annotations"]["prometheus.io/scrape"], "false");
    assert_eq!(meta["annotations"]["prometheus.io/port"], "8080");

    let plain = rendered(&helm, &[]);
    let meta =
        &object(&plain, "Deployment", None).expect("Deployment")["spec"]["template"]["metadata"];
    assert_eq!(meta["annotations"]["prometheus.io/scrape"], "true");
    assert!(meta["labels"].get("team").is_none());
}

/// `operator.priorityClassName`, `.affinity` and `.topologySpreadConstraints` reach the pod
/// spec; a constraint without a labelSelector gets the operator pods' own.
#[test]
fn scheduling_values_reach_the_operator_pods() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let plain = pod_spec(&rendered(&helm, &[]));
    for key in ["priorityClassName", "affinity", "topologySpreadConstraints"] {
        assert!(plain.get(key).is_none(), "{key} rendered by default");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let values = tmp.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
operator:
  priorityClassName: system-cluster-critical
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector: { matchLabels: { app.kubernetes.io/component: operator } }
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: DoNotSchedule
      labelSelector: { matchLabels: { tier: control } }
"#,
    )
    .expect("write values");
    let values = values.to_str().expect("path");
    let docs = rendered(&helm, &["-f", values]);
    let spec = pod_spec(&docs);
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
            ["weight"],
        100
    );
    let selector = object(&docs, "Deployment", None).expect("Deployment")["spec"]["selector"]
        ["matchLabels"]
        .clone();
    let tsc = &spec["topologySpreadConstraints"];
    assert_eq!(tsc[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(tsc[0]["labelSelector"]["matchLabels"], selector);
    assert_eq!(
        tsc[1]["labelSelector"],
        yaml("{matchLabels: {tier: control}}")
    );
    // The schema wants the three required fields.
    let (ok, text) = run(Command::new(&helm)
        .args(["template", "la"])
        .arg(chart())
        .args(["--set", "operator.topologySpreadConstraints[0].maxSkew=1"]));
    assert!(!ok, "an incomplete constraint rendered: {text}");
}

/// The operator's PodDisruptionBudget: on by default for its two replicas (minAvailable 1,
/// selecting exactly the operator pods), policy/v1beta1 when rendered for 1.20, absent with one
/// replica (it would block every drain) or when disabled; maxUnavailable replaces minAvailable.
#[test]
fn operator_pod_disruption_budget() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let docs = rendered(&helm, &[]);
    let pdb = object(&docs, "PodDisruptionBudget", None).expect("a PDB by default");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"].get("maxUnavailable").is_none());
    assert_eq!(
        pdb["spec"]["selector"],
        object(&docs, "Deployment", None).expect("Deployment")["spec"]["selector"]
    );

    let old = rendered(&helm, &["--kube-version", "1.20.2"]);
    let pdb = object(&old, "PodDisruptionBudget", None).expect("a PDB on 1.20");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");

    for extra in [
        &["--set", "operator.replicas=1"][..],
        &["--set", "operator.podDisruptionBudget.enabled=false"][..],
    ] {
        assert!(
            object(&rendered(&helm, extra), "PodDisruptionBudget", None).is_none(),
            "PDB rendered with {extra:?}"
        );
    }
    let docs = rendered(
        &helm,
        &[
            "--set",
            "operator.replicas=3",
            "--set-string",
            "operator.podDisruptionBudget.maxUnavailable=50%",
        ],
    );
    let pdb = object(&docs, "PodDisruptionBudget", None).expect("PDB");
    assert_eq!(pdb["spec"]["maxUnavailable"], "50%");
    assert!(pdb["spec"].get("minAvailable").is_none());
}

/// `image.digest` pins the operator's image and, through `--image`, the router pods' default;
/// without it the tag (appVersion by default) is used. The schema wants a sha256 digest.
#[test]
fn image_digest_pins_operator_and_router_images() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let container = |docs: &[serde_yaml::Value]| pod_spec(docs)["containers"][0].clone();
    let plain = container(&rendered(&helm, &[]));
    assert_eq!(plain["image"], "localhost/lookahead:0.1.0");

    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let docs = rendered(
        &helm,
        &[
            "--set",
            "image.repository=127.0.0.1:5000/lookahead",
            "--set",
            &format!("image.digest={digest}"),
        ],
    );
    let want = format!("127.0.0.1:5000/lookahead@{digest}");
    assert_eq!(container(&docs)["image"], want.as_str());
    assert!(container(&docs)["args"]
        .as_sequence()
        .expect("args")
        .contains(&serde_yaml::Value::String(format!("--image={want}"))));
    assert_eq!(
        object(&docs, "Pod", None).expect("test pod")["spec"]["containers"][0]["image"],
        want.as_str()
    );
    let (ok, text) = run(Command::new(&helm)
        .args(["template", "la"])
        .arg(chart())
        .args(["--set", "image.digest=latest"]));
    assert!(!ok, "a digest that is no digest rendered: {text}");
}

/// The `helm test` pod: the chart's image running `lookahead check`, no service account token,
/// the chart's security contexts, deleted when it passes; by default it checks the operator's
/// /readyz through the metrics Service, with `tests.policy` one chat completion through that
/// policy's router Service (`<policy>-router.<ns>.svc:8080`, what the operator creates).
#[test]
fn helm_test_pod_checks_readyz_or_a_policys_router() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let docs = rendered(&helm, &[]);
    let pod = object(&docs, "Pod", None).expect("test pod");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(
        pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"],
        "before-hook-creation,hook-succeeded"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["restartPolicy"], "Never");
    let operator = pod_spec(&docs);
    assert_eq!(spec["securityContext"], operator["securityContext"]);
    let c = &spec["containers"][0];
    assert_eq!(c["image"], operator["containers"][0]["image"]);
    assert_eq!(
        c["securityContext"],
        operator["containers"][0]["securityContext"]
    );
    assert_eq!(
        c["args"],
        yaml("[check, '--url=http://la-lookahead-metrics.sys.svc:8080/readyz', --attempts=5]")
    );

    let docs = rendered(
        &helm,
        &[
            "--set",
            "tests.policy.namespace=team-a,tests.policy.name=chat",
            "--set",
            "tests.attempts=10",
        ],
    );
    let pod = object(&docs, "Pod", None).expect("test pod");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        yaml("[check, '--url=http://chat-router.team-a.svc:8080/v1', --chat, --attempts=10]")
    );
    // `helm template --skip-tests` (manifests/install.yaml) leaves it out.
    assert!(object(&rendered(&helm, &["--skip-tests"]), "Pod", None).is_none());
}

/// NOTES.txt prints commands that work as written: no `<...>` placeholders, the Deployment's
/// real name, the policy's endpoint by jsonpath and a port-forwarded curl of its router.
#[test]
fn notes_print_real_commands() {
    // helm 4: `install --dry-run=client` renders NOTES without a cluster (helm 3 asks one).
    let Some((_, helm)) = helms().into_iter().find(|(v, _)| v == "LOOKAHEAD_HELM") else {
        eprintln!("SKIP: set LOOKAHEAD_HELM to helm 4 (../shared/k8s/helm.sh installs it)");
        return;
    };
    let notes = |extra: &[&str]| -> String {
        let (ok, text) = run(Command::new(&helm)
            .args(["install", "la", "--namespace", "sys", "--dry-run=client"])
            .arg(chart())
            .args(extra));
        assert!(ok, "helm install --dry-run: {text}");
        text.split_once("NOTES:")
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| panic!("no NOTES in {text}"))
    };
    let plain = notes(&[]);
    assert!(!plain.contains('<') && !plain.contains('>'), "{plain}");
    for want in [
        "kubectl -n sys rollout status deploy/la-lookahead",
        "get routingpolicy \"$POLICY\" -o jsonpath='{.status.endpoint}",
        "port-forward \"svc/$POLICY-router\" 8080:8080",
        "curl -sS -i http://127.0.0.1:8080/v1/chat/completions",
        "\"model\": \"auto\"",
        "manifests/examples/pool.yaml",
        "helm test la -n sys",
    ] {
        assert!(plain.contains(want), "NOTES lack {want:?}:\n{plain}");
    }
    let policy = notes(&[
        "--set",
        "tests.policy.namespace=team-a,tests.policy.name=chat",
    ]);
    assert!(policy.contains("NS=team-a POLICY=chat"), "{policy}");
}

/// Chart metadata: a kubeVersion floor, home and sources (the workspace's repository, so they
/// move together), maintainers; the CRDs chart has the same version and appVersion.
#[test]
fn chart_metadata_is_complete_and_the_charts_move_together() {
    let read = |p: PathBuf| -> serde_yaml::Value {
        yaml(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    };
    let main = read(chart().join("Chart.yaml"));
    let crds = read(crds_chart().join("Chart.yaml"));
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let repository = cargo
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .expect("workspace repository")
        .trim_matches('"');
    for c in [&main, &crds] {
        assert_eq!(c["kubeVersion"], ">=1.20.0-0");
        assert_eq!(c["home"], repository);
        assert_eq!(c["sources"][0], repository);
        assert!(c["maintainers"][0]["name"].as_str().is_some());
    }
    assert_eq!(main["version"], crds["version"]);
    assert_eq!(main["appVersion"], crds["appVersion"]);
}

/// The rows of a schema's values table: what scripts/chart-values-doc.py prints.
fn values_table(chart: &std::path::Path) -> String {
    let out = Command::new("python3")
        .arg(repo().join("scripts/chart-values-doc.py"))
        .arg(chart)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "chart-values-doc.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The defaults a schema documents, as one values tree.
fn schema_defaults(schema: &serde_json::Value) -> serde_json::Value {
    match schema.get("properties").and_then(|p| p.as_object()) {
        Some(props) if !props.is_empty() => serde_json::Value::Object(
            props
                .iter()
                .map(|(k, v)| (k.clone(), schema_defaults(v)))
                .collect(),
        ),
        _ => schema
            .get("default")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
    }
}

/// The chart README's values table is what scripts/chart-values-doc.py renders from
/// values.schema.json (every value described, with its default), and those defaults are
/// values.yaml: docs, schema and values cannot drift apart.
#[test]
fn readme_values_table_matches_the_schema_and_values() {
    let readme = std::fs::read_to_string(chart().join("README.md")).expect("chart README.md");
    let section = readme
        .split_once("<!-- values:begin -->\n")
        .and_then(|(_, rest)| rest.split_once("<!-- values:end -->"))
        .map(|(table, _)| table)
        .expect("a values:begin/end section in charts/lookahead/README.md");
    assert!(
        section == values_table(&chart()),
        "charts/lookahead/README.md's values table is stale: run \
         scripts/chart-values-doc.py --write charts/lookahead"
    );

    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("values.schema.json")).expect("schema"),
    )
    .expect("schema JSON");
    let values: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values YAML");
    assert_eq!(
        schema_defaults(&schema),
        values,
        "values.schema.json's defaults differ from values.yaml"
    );
}

/// The CRDs chart renders exactly the CRDs of charts/lookahead/crds/ (which the lookahead-api
/// tests hold to `lookahead crdgen`), each with `helm.sh/resource-policy: keep` and the chart's
/// labels; scripts/crdgen.sh writes both.
#[test]
fn crds_chart_renders_the_charts_crds() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let (ok, text) = run(Command::new(&helm)
        .args(["template", "lookahead-crds"])
        .arg(crds_chart()));
    assert!(ok, "helm template lookahead-crds: {text}");
    let mut rendered = documents(&text);
    let shipped = documents(
        &std::fs::read_to_string(chart().join("crds/lookahead.dev.yaml")).expect("chart CRDs"),
    );
    assert_eq!(rendered.len(), shipped.len());
    for crd in &mut rendered {
        let meta = crd["metadata"].as_mapping_mut().expect("metadata");
        let annotations = meta.remove("annotations").expect("annotations");
        assert_eq!(annotations, yaml("{helm.sh/resource-policy: keep}"));
        let labels = meta.remove("labels").expect("labels");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
        assert_eq!(labels["app.kubernetes.io/part-of"], "lookahead");
    }
    assert!(
        rendered == shipped,
        "charts/lookahead-crds is stale: run scripts/crdgen.sh --copy"
    );
}

/// Removes the throwaway upgrade-test release, its namespace and CRDs, also when a check fails.
struct UpgradeCleanup {
    helm: PathBuf,
    release: String,
    namespace: String,
}

impl Drop for UpgradeCleanup {
    fn drop(&mut self) {
        let _ =
            run(Command::new(&self.helm).args(["uninstall", &self.release, "-n", &self.namespace]));
        let _ = run(Command::new("kubectl").args([
            "delete",
            "crd",
            "llmpools.upgradetest.lookahead.dev",
            "routingpolicies.upgradetest.lookahead.dev",
            "--ignore-not-found",
        ]));
        let _ = run(Command::new("kubectl").args([
            "delete",
            "namespace",
            &self.namespace,
            "--wait=false",
        ]));
    }
}

/// The CRDs chart's rendered CRDs, renamed into group `upgradetest.lookahead.dev` (so the test
/// never touches the real CRDs), as a chart in `dir`; `extra_field` adds an optional string
/// `spec.upgradeTestNote` to LLMPool.
fn write_upgrade_test_chart(
    helm: &PathBuf,
    release: &str,
    dir: &std::path::Path,
    extra_field: bool,
) {
    let (ok, text) = run(Command::new(helm)
        .args(["template", release])
        .arg(crds_chart()));
    assert!(ok, "helm template lookahead-crds: {text}");
    let mut out = String::new();
    for mut crd in documents(&text) {
        let name = crd["metadata"]["name"].as_str().expect("name").to_string();
        let plural = name
            .strip_suffix(".lookahead.dev")
            .expect("lookahead.dev CRD");
        crd["metadata"]["name"] = format!("{plural}.upgradetest.lookahead.dev").into();
        crd["spec"]["group"] = "upgradetest.lookahead.dev".into();
        if extra_field && crd["spec"]["names"]["kind"] == "LLMPool" {
            for version in crd["spec"]["versions"].as_sequence_mut().expect("versions") {
                version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    .as_mapping_mut()
                    .expect("spec properties")
                    .insert(
                        "upgradeTestNote".into(),
                        yaml("{type: string, description: A field the upgrade adds.}"),
                    );
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("YAML"));
    }
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::copy(crds_chart().join("Chart.yaml"), dir.join("Chart.yaml")).expect("Chart.yaml");
    std::fs::write(dir.join("templates/crds.yaml"), out).expect("write CRDs");
}

/// The LLMPool upgrade-test CRD's `spec.upgradeTestNote` type ("" when absent).
fn upgrade_test_field() -> String {
    let (ok, text) = run(Command::new("kubectl").args([
        "get",
        "crd",
        "llmpools.upgradetest.lookahead.dev",
        "-o",
        "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.upgradeTestNote.type}",
    ]));
    assert!(ok, "kubectl get crd: {text}");
    text.trim().to_string()
}

/// The CRD upgrade path (docs/install.md): CRDs installed from the CRDs chart are upgraded by
/// `helm upgrade` (unlike a chart's crds/), here a release adding an optional field, and
/// `helm uninstall` keeps them (helm.sh/resource-policy: keep). On a copy of the CRDs in group
/// upgradetest.lookahead.dev, with each real helm, cleaned up after.
#[test]
fn crds_chart_upgrade_adds_a_field() {
    let helms = helms();
    if helms.is_empty() {
        eprintln!(
            "SKIP: set LOOKAHEAD_HELM / LOOKAHEAD_HELM3 (../shared/k8s/helm.sh installs helm)"
        );
        return;
    }
    if std::env::var_os("KUBECONFIG").is_none() {
        assert!(
            std::env::var("LOOKAHEAD_REQUIRE_CLUSTER").as_deref() != Ok("1"),
            "no KUBECONFIG"
        );
        eprintln!("SKIP: KUBECONFIG is not set");
        return;
    }
    for (which, helm) in helms {
        let release = format!("crds-upgrade-{}", which.to_lowercase().replace('_', "-"));
        // A namespace per helm: the previous one may still be terminating.
        let namespace = format!("{release}-it");
        let _cleanup = UpgradeCleanup {
            helm: helm.clone(),
            release: release.clone(),
            namespace: namespace.clone(),
        };
        let tmp = tempfile::tempdir().expect("tmp");
        let chart_dir = tmp.path().join("lookahead-crds");

        write_upgrade_test_chart(&helm, &release, &chart_dir, false);
        let (ok, text) = run(Command::new(&helm)
            .args(["install", &release])
            .arg(&chart_dir)
            .args(["-n", &namespace, "--create-namespace"]));
        assert!(ok, "{which}: helm install: {text}");
        assert_eq!(
            upgrade_test_field(),
            "",
            "{which}: field before the upgrade"
        );

        write_upgrade_test_chart(&helm, &release, &chart_dir, true);
        let (ok, text) = run(Command::new(&helm)
            .args(["upgrade", &release])
            .arg(&chart_dir)
            .args(["-n", &namespace]));
        assert!(ok, "{which}: helm upgrade: {text}");
        assert_eq!(
            upgrade_test_field(),
            "string",
            "{which}: helm upgrade did not add the field"
        );

        let (ok, text) = run(Command::new(&helm).args(["uninstall", &release, "-n", &namespace]));
        assert!(ok, "{which}: helm uninstall: {text}");
        let (kept, text) = run(Command::new("kubectl").args([
            "get",
            "crd",
            "llmpools.upgradetest.lookahead.dev",
            "-o",
            "name",
        ]));
        assert!(kept, "{which}: helm uninstall deleted the CRD: {text}");
    }
}

/// A `docker-registry serve` child on loopback, killed on drop.
struct Registry(std::process::Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// scripts/publish-chart.sh against a real OCI registry (Debian's `docker-registry`, on a free
/// loopback port over plain HTTP): both charts are pushed, and `helm template` straight from
/// `oci://` renders the registry's image pinned by the given digest (stamped into the packaged
/// defaults, the checkout untouched). Skips when docker-registry or helm is missing.
#[test]
fn published_chart_installs_from_the_registry_with_the_pinned_image() {
    let Some((_, helm)) = helms().into_iter().next() else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let Some(registry_bin) = which("docker-registry") else {
        eprintln!("SKIP: no docker-registry (apt-get install docker-registry)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = tmp.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            tmp.path().join("storage").display()
        ),
    )
    .expect("config");
    let _registry = Registry(
        Command::new(registry_bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts"),
    );
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "registry did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let registry = format!("127.0.0.1:{port}");
    let digest = format!("sha256:{}", "fedcba9876543210".repeat(4));
    let out = Command::new(repo().join("scripts/publish-chart.sh"))
        .args([&registry, "--plain-http"])
        .env("LOOKAHEAD_HELM", &helm)
        .env("IMAGE_DIGEST", &digest)
        .env("CHART_DIST", tmp.path().join("dist"))
        .output()
        .expect("publish-chart.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "publish-chart.sh: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: std::collections::BTreeMap<&str, &str> =
        stdout.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        vars["CHART_REF"],
        format!("oci://{registry}/charts/lookahead")
    );
    for key in ["CHART_DIGEST", "CRDS_CHART_DIGEST"] {
        assert!(vars[key].starts_with("sha256:"), "{key} in {stdout}");
    }

    let (ok, text) = run(Command::new(&helm)
        .args(["template", "lookahead", vars["CHART_REF"], "--version"])
        .arg(vars["CHART_VERSION"])
        .args(["--plain-http", "--namespace", "lookahead-system"]));
    assert!(ok, "helm template from the registry: {text}");
    let docs = documents(&text);
    assert_eq!(
        pod_spec(&docs)["containers"][0]["image"],
        format!("{registry}/lookahead@{digest}").as_str()
    );
    let (ok, text) = run(Command::new(&helm)
        .args(["template", "crds", vars["CRDS_CHART_REF"], "--version"])
        .arg(vars["CHART_VERSION"])
        .arg("--plain-http"));
    assert!(
        ok,
        "helm template of the CRDs chart from the registry: {text}"
    );
    assert_eq!(
        documents(&text)
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .count(),
        2
    );
    // The checkout's defaults are untouched.
    let values = std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    assert!(values.contains("  repository: localhost/lookahead\n"));
}

/// `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
