//! The alerting rules the chart ships (`charts/lookahead/files/alerts.yaml`): unit-tested with the
//! real `promtool` (`tests/alerts/alerts_test.yaml`), and every metric they name is one that the
//! router (`lookahead_router::Router`) or the operator (`lookahead_operator::Metrics`) exports, so
//! a renamed metric cannot leave an alert silently watching nothing.
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

#[test]
fn every_metric_the_alerts_name_is_exported() {
    let rules = std::fs::read_to_string(repo().join("charts/lookahead/files/alerts.yaml"))
        .expect("alerts.yaml");
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
    let exported: BTreeSet<String> = metric_names(&router.render_metrics())
        .into_iter()
        .chain(metric_names(&operator.render()))
        .map(|n| family(&n).to_string())
        .collect();
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

#[test]
fn the_chart_ships_the_rules_file_as_a_prometheus_rule() {
    let Ok(helm) = std::env::var("LOOKAHEAD_HELM") else {
        eprintln!("SKIP: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs helm)");
        return;
    };
    let out = Command::new(helm)
        .args([
            "template",
            "la",
            "charts/lookahead",
            "-s",
            "templates/prometheusrule.yaml",
        ])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args(["--set", "metrics.prometheusRule.labels.release=kps"])
        .current_dir(repo())
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rule: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("rendered YAML");
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
