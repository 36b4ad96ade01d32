//! Least privilege and pod hardening, read from the files users install: the RBAC manifest
//! (`manifests/rbac/*.yaml`), the Helm chart's RBAC template (`charts/lookahead/templates/rbac.yaml`,
//! with its `{{ }}` expressions blanked so the rules parse as YAML), and the chart's pod security
//! settings (`values.yaml` + `templates/deployment.yaml`).
//!
//! The allow-list below is the operator's whole permission set, pinned: any rule that grants more
//! (a new verb, resource or API group), a wildcard, `escalate`/`bind`/`impersonate`, secrets
//! access or a binding to a built-in admin role fails the test. Widening it is a reviewed change
//! to this file.
#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// (apiGroup, resource) -> verbs the operator may have.
const ALLOWED: &[(&str, &str, &[&str])] = &[
    ("lookahead.dev", "llmpools", &["get", "list", "watch"]),
    (
        "lookahead.dev",
        "routingpolicies",
        &["get", "list", "watch"],
    ),
    ("lookahead.dev", "llmpools/status", &["get", "patch"]),
    ("lookahead.dev", "routingpolicies/status", &["get", "patch"]),
    (
        "apps",
        "deployments",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "",
        "services",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "",
        "configmaps",
        &["get", "list", "watch", "create", "patch"],
    ),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        &["get", "list", "create", "patch", "delete"],
    ),
    (
        "batch",
        "jobs",
        &["get", "list", "watch", "create", "delete"],
    ),
    ("", "pods", &["get", "list"]),
    // Scale to zero and back: replicas 0 <-> 1 of `min: 0` members.
    ("apps", "deployments/scale", &["patch"]),
    // The router's PodDisruptionBudget.
    (
        "policy",
        "poddisruptionbudgets",
        &["get", "create", "patch"],
    ),
    ("events.k8s.io", "events", &["create", "patch"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

const DANGEROUS_VERBS: &[&str] = &["escalate", "bind", "impersonate", "*"];
const ADMIN_ROLES: &[&str] = &["cluster-admin", "admin", "edit", "system:masters"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().unwrap_or("<not a string>").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Blanks Helm template expressions (`{{ ... }}`, also across lines) and drops lines left empty.
fn untemplate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push('X');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.lines()
        .filter(|l| !matches!(l.trim(), "X" | ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every violation of least privilege in `objects` (empty: fine).
fn violations(objects: &[Value]) -> Vec<String> {
    let allowed: BTreeMap<(&str, &str), BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(g, r, v)| ((*g, *r), v.iter().copied().collect()))
        .collect();
    let mut out = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap_or("?");
        if kind.ends_with("Binding") {
            let role = o["roleRef"]["name"].as_str().unwrap_or("");
            if ADMIN_ROLES.contains(&role) {
                out.push(format!("{kind} {name} binds the built-in role {role}"));
            }
            if o["subjects"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|s| s["kind"] == "Group"))
            {
                out.push(format!("{kind} {name} binds a Group"));
            }
            continue;
        }
        if !matches!(kind, "Role" | "ClusterRole" | "X") {
            continue;
        }
        if !o["aggregationRule"].is_null() {
            out.push(format!(
                "{name}: aggregationRule pulls in other roles' rules"
            ));
        }
        for rule in o["rules"].as_sequence().into_iter().flatten() {
            if !rule["nonResourceURLs"].is_null() {
                out.push(format!("{name}: nonResourceURLs"));
            }
            if !rule["resourceNames"].is_null() {
                // Narrowing is fine, but the allow-list is by resource; nothing to add.
            }
            let (groups, resources, verbs) = (
                strs(&rule["apiGroups"]),
                strs(&rule["resources"]),
                strs(&rule["verbs"]),
            );
            if groups.is_empty() || resources.is_empty() || verbs.is_empty() {
                out.push(format!("{name}: a rule without apiGroups/resources/verbs"));
            }
            for v in &verbs {
                if DANGEROUS_VERBS.contains(&v.as_str()) {
                    out.push(format!("{name}: verb {v:?}"));
                }
            }
            for g in &groups {
                if g.contains('*') {
                    out.push(format!("{name}: wildcard apiGroup {g:?}"));
                }
                for r in &resources {
                    if r.contains('*') {
                        out.push(format!("{name}: wildcard resource {r:?}"));
                    }
                    if r == "secrets" || r.starts_with("secrets/") {
                        out.push(format!("{name}: secrets access {verbs:?}"));
                    }
                    let ok = allowed.get(&(g.as_str(), r.as_str()));
                    for v in &verbs {
                        if !ok.is_some_and(|set| set.contains(v.as_str())) {
                            out.push(format!("{name}: {v} on {g:?}/{r} is not in the allow-list"));
                        }
                    }
                }
            }
        }
    }
    out
}

fn rbac_manifests() -> Vec<(PathBuf, Vec<Value>)> {
    let dir = repo().join("manifests/rbac");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("manifests/rbac exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read manifest");
            (p, docs(&text))
        })
        .collect()
}

fn chart_rbac() -> Option<Vec<Value>> {
    let path = repo().join("charts/lookahead/templates/rbac.yaml");
    let text = std::fs::read_to_string(path).ok()?;
    Some(docs(&untemplate(&text)))
}

fn rule_set(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for o in objects {
        for rule in o["rules"].as_sequence().into_iter().flatten() {
            for g in strs(&rule["apiGroups"]) {
                for r in strs(&rule["resources"]) {
                    for v in strs(&rule["verbs"]) {
                        set.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    set
}

#[test]
fn rbac_manifests_grant_only_the_pinned_allow_list() {
    let manifests = rbac_manifests();
    assert!(!manifests.is_empty(), "no RBAC manifests found");
    for (path, objects) in &manifests {
        let roles = objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
            .count();
        assert!(roles > 0, "{}: no roles parsed", path.display());
        let v = violations(objects);
        assert!(v.is_empty(), "{}:\n{}", path.display(), v.join("\n"));
    }
}

#[test]
fn chart_rbac_grants_only_the_pinned_allow_list_and_matches_the_manifest() {
    let Some(chart) = chart_rbac() else {
        eprintln!("skipping: the chart has no templates/rbac.yaml");
        return;
    };
    let roles = chart.iter().filter(|o| o["rules"].is_sequence()).count();
    assert!(roles >= 2, "chart RBAC roles parsed: {roles}");
    let v = violations(&chart);
    assert!(v.is_empty(), "chart RBAC:\n{}", v.join("\n"));
    let manifest: Vec<Value> = rbac_manifests().into_iter().flat_map(|(_, o)| o).collect();
    assert_eq!(
        rule_set(&chart),
        rule_set(&manifest),
        "the chart and manifests/rbac grant different rules"
    );
}

/// The checker itself catches each kind of widening (so a green run means something).
#[test]
fn the_checker_rejects_every_kind_of_widening() {
    let role = |rules: &str| {
        docs(&format!(
            "kind: ClusterRole\nmetadata: {{ name: t }}\nrules:\n{rules}"
        ))
    };
    let widened = [
        "  - { apiGroups: [\"*\"], resources: [\"deployments\"], verbs: [\"get\"] }",
        "  - { apiGroups: [\"apps\"], resources: [\"*\"], verbs: [\"get\"] }",
        "  - { apiGroups: [\"apps\"], resources: [\"deployments\"], verbs: [\"*\"] }",
        "  - { apiGroups: [\"rbac.authorization.k8s.io\"], resources: [\"clusterroles\"], verbs: [\"escalate\"] }",
        "  - { apiGroups: [\"rbac.authorization.k8s.io\"], resources: [\"clusterroles\"], verbs: [\"bind\"] }",
        "  - { apiGroups: [\"\"], resources: [\"users\"], verbs: [\"impersonate\"] }",
        "  - { apiGroups: [\"\"], resources: [\"secrets\"], verbs: [\"create\"] }",
        "  - { apiGroups: [\"\"], resources: [\"secrets\"], verbs: [\"get\"] }",
        "  - { apiGroups: [\"\"], resources: [\"pods/exec\"], verbs: [\"create\"] }",
        "  - { apiGroups: [\"apps\"], resources: [\"deployments\"], verbs: [\"update\"] }",
        "  - { nonResourceURLs: [\"/metrics\"], verbs: [\"get\"] }",
    ];
    for rule in widened {
        assert!(!violations(&role(rule)).is_empty(), "not caught: {rule}");
    }
    let admin = docs(
        "kind: ClusterRoleBinding\nmetadata: { name: t }\nroleRef: { kind: ClusterRole, name: cluster-admin }\n",
    );
    assert!(!violations(&admin).is_empty());
    let fine =
        role("  - { apiGroups: [\"batch\"], resources: [\"jobs\"], verbs: [\"get\", \"create\"] }");
    assert!(violations(&fine).is_empty());
}

/// The operator's pod: non-root, read-only root filesystem, no privilege escalation, all
/// capabilities dropped, seccomp RuntimeDefault; and every container in the chart's Deployment
/// takes the hardened container settings.
#[test]
fn chart_pods_run_non_root_read_only_without_privileges() {
    let chart = repo().join("charts/lookahead");
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let pod = &values["podSecurityContext"];
    assert_eq!(pod["runAsNonRoot"], Value::Bool(true), "runAsNonRoot");
    assert!(
        pod["runAsUser"].as_u64().is_some_and(|u| u > 0),
        "runAsUser is a non-zero uid"
    );
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
    let c = &values["securityContext"];
    assert_eq!(c["allowPrivilegeEscalation"], Value::Bool(false));
    assert_eq!(c["readOnlyRootFilesystem"], Value::Bool(true));
    assert!(
        strs(&c["capabilities"]["drop"]).iter().any(|d| d == "ALL"),
        "capabilities drop ALL"
    );
    assert!(
        strs(&c["capabilities"]["add"]).is_empty(),
        "no capabilities added"
    );
    assert_ne!(c["privileged"], Value::Bool(true));

    let deployment =
        std::fs::read_to_string(chart.join("templates/deployment.yaml")).expect("deployment.yaml");
    assert!(
        deployment.contains("securityContext: {{- toYaml .Values.podSecurityContext"),
        "the pod takes podSecurityContext"
    );
    // Containers are the list items under `containers:` (volumes, at the same depth, are not).
    let pod_containers = deployment
        .split_once("\n      containers:")
        .map(|(_, rest)| rest.split("\n      volumes:").next().unwrap_or(rest))
        .unwrap_or_default();
    let containers = pod_containers.matches("\n        - name: ").count();
    let hardened = deployment
        .matches("securityContext: {{- toYaml .Values.securityContext")
        .count();
    assert!(containers >= 1);
    assert_eq!(
        hardened, containers,
        "every container takes .Values.securityContext"
    );
    for forbidden in [
        "hostNetwork: true",
        "hostPID: true",
        "hostIPC: true",
        "privileged: true",
    ] {
        assert!(!deployment.contains(forbidden), "{forbidden}");
    }
}
