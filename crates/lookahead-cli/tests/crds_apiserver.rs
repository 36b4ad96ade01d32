//! The CRDs on a real Kubernetes API server (`../shared/k8s/cluster.sh`): applied with the real
//! `kubectl`, examples read back with kube-rs, invalid resources rejected by the server with a
//! message naming the field, and `kubectl get llmp,rp` showing the printer columns.
//!
//! Needs `KUBECONFIG` pointing at a reachable server; skipped with a printed reason otherwise,
//! unless `LOOKAHEAD_REQUIRE_CLUSTER=1` (set by `.ci/run`), which turns the skip into a failure.
#![cfg(test)]

use std::path::PathBuf;
use std::process::Command;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use lookahead_api::{LLMPool, RoutingPolicy};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A client for the cluster, or `None` (with the reason printed) when there is none to test.
async fn cluster() -> Option<Client> {
    let require = std::env::var("LOOKAHEAD_REQUIRE_CLUSTER").as_deref() == Ok("1");
    let reason = match std::env::var("KUBECONFIG") {
        Err(_) => "KUBECONFIG is not set".to_string(),
        Ok(_) => match Client::try_default().await {
            Err(e) => format!("no client: {e}"),
            Ok(client) => match client.apiserver_version().await {
                Ok(_) => return Some(client),
                Err(e) => format!("API server unreachable: {e}"),
            },
        },
    };
    assert!(!require, "LOOKAHEAD_REQUIRE_CLUSTER=1 but {reason}");
    eprintln!("skipping: {reason} (start one with ../shared/k8s/cluster.sh start)");
    None
}

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Namespace(String);

impl Namespace {
    fn create(name: &str) -> Namespace {
        let _ = kubectl(&[
            "delete",
            "namespace",
            name,
            "--wait=true",
            "--ignore-not-found",
        ]);
        let (ok, text) = kubectl(&["create", "namespace", name]);
        assert!(ok, "create namespace: {text}");
        Namespace(name.to_string())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

/// Applies `crds/` once per test process. `kubectl apply` is get-then-create, so two tests
/// applying at once on a fresh server race to AlreadyExists: serialise them, and retry once in case
/// another process raced us.
fn apply_crds() {
    static APPLIED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut applied = APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    if *applied {
        return;
    }
    let crds = repo_root().join("crds");
    let mut result = kubectl(&["apply", "-f", crds.to_str().expect("utf-8 path")]);
    if !result.0 && result.1.contains("AlreadyExists") {
        result = kubectl(&["apply", "-f", crds.to_str().expect("utf-8 path")]);
    }
    let (ok, text) = result;
    assert!(ok, "kubectl apply crds/: {text}");
    let (ok, text) = kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/llmpools.lookahead.dev",
        "crd/routingpolicies.lookahead.dev",
    ]);
    assert!(ok, "CRDs not established: {text}");
    *applied = true;
}

#[tokio::test]
async fn examples_apply_and_read_back_with_kube_rs_on_real_apiserver() {
    let Some(client) = cluster().await else {
        return;
    };
    apply_crds();
    let ns = Namespace::create("lookahead-it-examples");
    let examples = repo_root().join("manifests/examples");
    let (ok, text) = kubectl(&[
        "-n",
        &ns.0,
        "apply",
        "-f",
        examples.to_str().expect("utf-8"),
    ]);
    assert!(ok, "kubectl apply examples: {text}");

    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.0);
    let pool = pools.get("paper-pool").await.expect("pool reads back");
    let ids: Vec<&str> = pool
        .spec
        .members
        .iter()
        .map(|m| m.model_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "Yi-1.5-34B-Chat",
            "internlm2_5-20b-chat",
            "Phi-3-medium-4k-instruct",
            "Llama-3.1-8B-Instruct",
            "Qwen2.5-Coder-7B-Instruct"
        ]
    );
    let template = pool.spec.members[0]
        .template
        .as_ref()
        .expect("template member");
    let gpus = template
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("nvidia.com/gpu"))
        .map(|q| q.0.clone());
    assert_eq!(gpus.as_deref(), Some("2"));
    assert_eq!(template.port, 8000, "default port comes from the schema");

    let policies: Api<RoutingPolicy> = Api::namespaced(client, &ns.0);
    let policy = policies
        .get("paper-router")
        .await
        .expect("policy reads back");
    assert_eq!(policy.spec.pool_ref.name, "paper-pool");
    assert_eq!(
        policy.spec.objective.default_model.as_deref(),
        Some("yi-34b")
    );
    assert_eq!(policy.spec.serving.retries, 2);

    let (ok, table) = kubectl(&["-n", &ns.0, "get", "llmp,rp"]);
    assert!(ok, "kubectl get llmp,rp: {table}");
    for column in [
        "MEMBERS",
        "READY",
        "FINGERPRINT",
        "POOL",
        "METHOD",
        "PHASE",
        "ARTIFACT",
    ] {
        assert!(
            table.contains(column),
            "printer column {column} missing in:\n{table}"
        );
    }
    assert!(
        table.contains("lookahead-lite"),
        "method column shows the method:\n{table}"
    );
}

fn pool_with(member: Value) -> Value {
    json!({
        "apiVersion": "lookahead.dev/v1alpha1",
        "kind": "LLMPool",
        "metadata": { "name": "bad-pool" },
        "spec": { "members": [member] }
    })
}

fn policy_with(spec: Value) -> Value {
    json!({
        "apiVersion": "lookahead.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": { "name": "bad-policy" },
        "spec": spec
    })
}

/// Invalid resources posted straight to the API server (no client-side validation) are rejected
/// with a message that names the offending field.
#[tokio::test]
async fn invalid_resources_are_rejected_by_real_apiserver_naming_the_field() {
    let Some(client) = cluster().await else {
        return;
    };
    apply_crds();
    let ns = Namespace::create("lookahead-it-invalid");
    let ok_member = json!({ "name": "a", "modelId": "A", "endpoint": "http://a:8000/v1" });
    let mut cases: Vec<(&str, Value, &str)> = vec![];

    let mut m = ok_member.clone();
    m["replicas"] = json!({ "min": "two", "max": 2 });
    cases.push(("wrong type", pool_with(m), "spec.members.replicas.min"));

    cases.push((
        "missing required field",
        pool_with(json!({ "name": "a", "endpoint": "http://a:8000/v1" })),
        "spec.members.modelId",
    ));

    let mut m = ok_member.clone();
    m["replicas"] = json!({ "min": -1, "max": 2 });
    cases.push((
        "negative replicas",
        pool_with(m),
        "spec.members.replicas.min",
    ));

    cases.push((
        "unknown method",
        policy_with(json!({ "poolRef": { "name": "p" }, "router": { "method": "gpt-router" } })),
        "spec.router.method",
    ));

    let mut dup = pool_with(ok_member.clone());
    dup["spec"]["members"] = json!([ok_member.clone(), ok_member.clone()]);
    cases.push(("duplicate member name", dup, "spec.members[1]"));

    let mut m = ok_member.clone();
    m["template"] = json!({ "image": "vllm" });
    cases.push(("endpoint and template", pool_with(m), "spec.members"));

    let mut m = ok_member.clone();
    m["name"] = json!("Not_DNS");
    cases.push((
        "member name not DNS-1035",
        pool_with(m),
        "spec.members.name",
    ));

    cases.push((
        "negative cost weight",
        policy_with(json!({
            "poolRef": { "name": "p" },
            "router": { "method": "knn" },
            "objective": { "costWeight": -1 }
        })),
        "spec.objective.costWeight",
    ));

    cases.push((
        "artifact path escaping the volume",
        policy_with(json!({
            "poolRef": { "name": "p" },
            "router": { "method": "knn" },
            "training": {
                "dataset": { "pvc": { "claimName": "data", "path": "../etc" } }
            }
        })),
        "spec.training.dataset.pvc.path",
    ));

    for (what, body, field) in cases {
        let kind = body["kind"].as_str().expect("kind");
        let gvk = GroupVersionKind::gvk("lookahead.dev", "v1alpha1", kind);
        let plural = if kind == "LLMPool" {
            "llmpools"
        } else {
            "routingpolicies"
        };
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns.0,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        let obj: DynamicObject = serde_json::from_value(body).expect("dynamic object");
        match api.create(&PostParams::default(), &obj).await {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                let _ = api.delete(&name, &DeleteParams::default()).await;
                panic!("{what}: accepted by the API server");
            }
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {status:?}");
                assert!(
                    status.message.contains(field),
                    "{what}: message does not name {field}: {}",
                    status.message
                );
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
}
