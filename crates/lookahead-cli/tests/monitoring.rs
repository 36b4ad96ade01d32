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

/// The metric families the router and the operator export, once the events that create their
/// labelled series happened (prometheus-client renders a labelled family once it has a sample):
/// a real router (`lookahead_router::serve`) whose member refuses connections answers a request
/// to that member (an attempt, a fallback) and one for an unknown model (a rejection); the
/// operator's metrics count a reconcile, a failure, a scale step, and see a policy with a
/// condition in the controller's cache.
async fn exported_families() -> BTreeSet<String> {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = refused.local_addr().expect("addr").port();
    drop(refused);
    let config: lookahead_api::RouterConfig = serde_yaml::from_str(&format!(
        "members:\n  - {{ name: yi, modelId: Yi, baseUrl: \"http://127.0.0.1:{port}/v1\" }}\npolicy:\n  method: fixed\n  defaultModel: yi\n  coldStartTimeout: 0s\n"
    ))
    .expect("config");
    let router = std::sync::Arc::new(
        lookahead_router::Router::new(&config, ScoreSource::Fixed).expect("router"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(lookahead_router::serve(
        listener,
        router.clone(),
        async {
            let _ = stopped.await;
        },
        std::time::Duration::ZERO,
    ));
    for model in ["yi", "no-such-model"] {
        let status = chat(addr, model).await;
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
    }
    let _ = stop.send(());
    let _ = serving.await;
    let operator = lookahead_operator::Metrics::default();
    drop(operator.reconcile("llmpool"));
    operator.failure("llmpool", &lookahead_operator::Error::NoAutoscalingApi);
    operator.scaled("Waking");
    let (store, mut writer) = kube::runtime::reflector::store();
    operator.watch_policies(store);
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
        policy_with_condition(),
    ));
    metric_names(&router.render_metrics())
        .into_iter()
        .chain(metric_names(&operator.render()))
        .map(|n| family(&n).to_string())
        .collect()
}

/// A RoutingPolicy whose status has one condition.
fn policy_with_condition() -> lookahead_api::RoutingPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "lookahead.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": "auto", "namespace": "ml"},
        "spec": {"poolRef": {"name": "pool"}, "router": {"method": "fixed"}},
        "status": {"conditions": [{"type": "TrainingFailed", "status": "True", "reason": "JobFailed",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }))
    .expect("policy")
}

/// POSTs a chat completion for `model` to the router at `addr`; the response's status line.
async fn chat(addr: std::net::SocketAddr, model: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.expect("read");
    reply.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn every_metric_the_alerts_name_is_exported() {
    let rules = std::fs::read_to_string(repo().join("charts/lookahead/files/alerts.yaml"))
        .expect("alerts.yaml");
    let exported = exported_families().await;
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

#[tokio::test]
async fn dashboard_queries_are_promql_over_exported_metrics() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let exported = exported_families().await;
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
