//! What the chart ships for Prometheus. The alerting rules (`charts/lookahead/files/alerts.yaml`):
//! unit-tested with the real `promtool` (`tests/alerts/alerts_test.yaml`), and every metric they
//! name is one that the router (`lookahead_router::Router`) or the operator
//! (`lookahead_operator::Metrics`) exports, so a renamed metric cannot leave an alert silently
//! watching nothing. The dashboard (`files/dashboard.json`): valid PromQL (checked by `promtool`)
//! over exported metrics only. The PodMonitor: it selects the router pods the operator builds.
#![cfg(test)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use lookahead_router::scoring::ScoreSource;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn alerts_pass_promtool_unit_tests() {
    let out = Command::new("promtool")
        .args(["test", "rules", "tests/alerts/alerts_test.yaml"])
        .current_dir(repo())
        .output();
    let Ok(out) = out else {
        eprintln!(
            "SKIP: promtool not installed (apt-get install prometheus; scripts/setup.sh does)"
        );
        return;
    };
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lookahead_...` identifiers in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("lookahead_") {
        let preceded = text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// The family a sample name belongs to (`_total`, `_bucket`, `_sum`, `_count` removed).
fn family(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// The metric families the router and the operator export.
fn exported_families() -> BTreeSet<String> {
    let config: lookahead_api::RouterConfig = serde_yaml::from_str(
        "members:\n  - { name: yi, modelId: Yi, baseUrl: \"http://127.0.0.1:9/v1\" }\npolicy:\n  method: fixed\n  defaultModel: yi\n",
    )
    .expect("config");
    let router = lookahead_router::Router::new(&config, ScoreSource::Fixed).expect("router");
    // prometheus-client renders a labelled family once it has a sample.
    let operator = lookahead_operator::Metrics::default();
    drop(operator.reconcile("llmpool"));
    operator.failure("llmpool", &lookahead_operator::Error::NoAutoscalingApi);
    operator.scaled("Waking");
    metric_names(&router.render_metrics())
        .into_iter()
        .chain(metric_names(&operator.render()))
        .map(|n| family(&n).to_string())
        .collect()
}

#[test]
fn every_metric_the_alerts_name_is_exported() {
    let rules = std::fs::read_to_string(repo().join("charts/lookahead/files/alerts.yaml"))
        .expect("alerts.yaml");
    let exported = exported_families();
    let used = metric_names(&rules);
    assert!(used.len() >= 8, "names found in the rules: {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(family(n)))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts name metrics nobody exports: {missing:?}"
    );
}

/// `helm template` of one chart template with `sets`; `None` (skipped) without a helm.
fn render(template: &str, sets: &[&str]) -> Option<serde_yaml::Value> {
    let Ok(helm) = std::env::var("LOOKAHEAD_HELM") else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return None;
    };
    let mut cmd = Command::new(helm);
    cmd.args(["template", "la", "charts/lookahead", "-s", template]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.current_dir(repo()).output().expect("helm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_yaml::from_slice(&out.stdout).expect("rendered YAML"))
}

#[test]
fn the_pod_monitor_selects_the_router_pods_the_operator_builds() {
    let Some(monitor) = render(
        "templates/podmonitor.yaml",
        &["metrics.podMonitor.enabled=true"],
    ) else {
        return;
    };
    let mut pod_labels = lookahead_operator::labels::policy_labels("rp", "router", "rp-router");
    pod_labels.extend(lookahead_operator::labels::router_selector("rp"));
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        let (k, v) = (
            k.as_str().unwrap_or_default(),
            v.as_str().unwrap_or_default(),
        );
        assert_eq!(pod_labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http", "the router container's port name");
    assert_eq!(endpoint["path"], "/metrics");
}

#[test]
fn the_chart_ships_the_rules_file_as_a_prometheus_rule() {
    let Some(rule) = render(
        "templates/prometheusrule.yaml",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=kps",
        ],
    ) else {
        return;
    };
    let file: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/lookahead/files/alerts.yaml"))
            .expect("alerts.yaml"),
    )
    .expect("alerts YAML");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule's spec is the rules file"
    );
}

/// Every query of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("charts/lookahead/files/dashboard.json"))
        .expect("dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    dash["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn dashboard_queries_are_promql_over_exported_metrics() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let exported = exported_families();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "{q}");
        for n in names {
            assert!(exported.contains(family(&n)), "{n} in {q} is not exported");
        }
    }
    // promtool parses PromQL when checking recording rules: one rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(q).expect("quoted")
        ));
    }
    let path =
        std::env::temp_dir().join(format!("lookahead-dashboard-{}.yaml", std::process::id()));
    std::fs::write(&path, rules).expect("write rules");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let Ok(out) = out else {
        eprintln!("SKIP promtool check: promtool not installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_ships_the_dashboard_for_grafanas_sidecar() {
    let Some(cm) = render(
        "templates/dashboard.yaml",
        &["metrics.dashboard.enabled=true"],
    ) else {
        return;
    };
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: serde_json::Value = serde_json::from_str(
        cm["data"]["lookahead-routing.json"]
            .as_str()
            .expect("dashboard in the ConfigMap"),
    )
    .expect("JSON");
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/lookahead/files/dashboard.json"))
            .expect("dashboard.json"),
    )
    .expect("JSON");
    assert_eq!(shipped, file);
}
