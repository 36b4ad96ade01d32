//! Helpers shared by the operator's integration tests against a real Kubernetes API server (the
//! one from `../shared/k8s/cluster.sh`): a client or a printed reason to skip, CRDs installed by
//! the test itself, a namespace per test, the controllers in-process, and polling.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lookahead_api::{LLMPool, RoutingPolicy};
use lookahead_operator::{autoscaling, run_controllers, Context, Metrics, Settings};
use serde_json::json;
use tokio::task::JoinHandle;

pub const KUBECONFIG: &str = "/tmp/k8s-apiserver/kubeconfig";
pub const WAIT: Duration = Duration::from_secs(30);

/// A client for the test server, or `None` (with the reason printed) when there is none.
pub async fn client_or_skip(test: &str) -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() && std::path::Path::new(KUBECONFIG).exists() {
        // Tests in one binary share the environment; every writer sets the same value.
        unsafe { std::env::set_var("KUBECONFIG", KUBECONFIG) };
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping {test}: no Kubernetes client ({e})");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => {
            // The CRDs this build generates, so the tests do not depend on another test (or a
            // person) having installed them on this server.
            if let Err(e) = install_crds(&client).await {
                panic!("{test}: installing the CRDs on the API server failed: {e}");
            }
            Some(client)
        }
        Ok(Err(e)) => {
            eprintln!("skipping {test}: API server unreachable ({e})");
            None
        }
        Err(_) => {
            eprintln!("skipping {test}: API server did not answer in 5 s");
            None
        }
    }
}

/// Server-side applies both CRDs (idempotent, safe when tests race) and waits until established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};
    use kube::CustomResourceExt;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [LLMPool::crd(), RoutingPolicy::crd()] {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("lookahead-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await??;
    }
    Ok(())
}

/// A namespace of its own, deleted when the test ends (also on failure).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("op-{test}-{:x}", nanos ^ std::process::id());
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } }))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's client is driven by the test's (now blocked)
        // runtime: a fresh client on a short-lived runtime of its own deletes the namespace.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                rt.block_on(async {
                    if let Ok(client) = Client::try_default().await {
                        let api: Api<Namespace> = Api::all(client);
                        let _ = api.delete(&name, &DeleteParams::background()).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Starts both controllers in-process, watching only `ns`.
pub async fn start_operator(
    client: &Client,
    ns: &str,
) -> anyhow::Result<(JoinHandle<()>, Arc<Context>)> {
    let settings = Settings {
        image: "lookahead:test".into(),
        hpa: autoscaling::discover(client).await?,
        pdb: lookahead_operator::disruption::discover(client).await?,
        namespace: Some(ns.into()),
        telemetry: Default::default(),
        image_pull_secrets: Vec::new(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
    ));
    Ok((tokio::spawn(run_controllers(ctx.clone())), ctx))
}

/// Polls `check` until it yields `Some`, or fails after `WAIT` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > WAIT {
            anyhow::bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn pool_yaml(name: &str, members: &[&str]) -> anyhow::Result<LLMPool> {
    let members: Vec<serde_json::Value> = members
        .iter()
        .map(|m| match *m {
            // `ext-*` members point at an existing server: no children.
            m if m.starts_with("ext-") => json!({
                "name": m, "modelId": format!("{m}-model"), "endpoint": format!("http://{m}.example:8000/v1"),
            }),
            // `auto-*` members autoscale.
            m if m.starts_with("auto-") => json!({
                "name": m, "modelId": format!("{m}-model"),
                "template": { "image": "vllm/vllm-openai:v0.6.0", "args": ["--model", m] },
                "replicas": { "min": 1, "max": 3, "target": { "averageUtilization": 70 } },
            }),
            m => json!({
                "name": m, "modelId": format!("{m}-model"),
                "template": { "image": "vllm/vllm-openai:v0.6.0", "args": ["--model", m] },
            }),
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "lookahead.dev/v1alpha1", "kind": "LLMPool",
        "metadata": { "name": name },
        "spec": { "members": members },
    }))?)
}

pub fn policy_yaml(name: &str, pool: &str, default_model: &str) -> anyhow::Result<RoutingPolicy> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "lookahead.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": { "name": name },
        "spec": {
            "poolRef": { "name": pool },
            "router": { "method": "lookahead-lite" },
            "objective": { "defaultModel": default_model },
            "training": {
                "dataset": { "configMap": { "name": "routing-data" } },
                "artifacts": { "claimName": "artifacts", "path": format!("routers/{name}") },
            },
        },
    }))?)
}

/// A dataset ConfigMap whose manifest knows the models of `members`.
pub async fn dataset(client: &Client, ns: &str, members: &[&str]) -> anyhow::Result<()> {
    let models: Vec<String> = members.iter().map(|m| format!("{m}-model")).collect();
    let manifest = json!({ "GSM8K": { "models": models } }).to_string();
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("routing-data".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("manifest.json".to_string(), manifest)])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await?;
    Ok(())
}

pub async fn apply<K>(api: &Api<K>, obj: &K) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.name_any();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(obj),
        )
        .await?)
}

pub fn cond<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub async fn names<K>(api: &Api<K>, selector: &str) -> anyhow::Result<Vec<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut v: Vec<String> = api
        .list_metadata(&ListParams::default().labels(selector))
        .await?
        .into_iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .map(|o| o.name_any())
        .collect();
    v.sort();
    Ok(v)
}

/// Marks a training Job succeeded, as the Job controller would once its pod exits 0 (the test
/// server has no kubelet to run it).
pub async fn complete_job(jobs: &Api<Job>, name: &str) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({ "status": {
        "conditions": [{ "type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now }],
        "startTime": now, "completionTime": now, "succeeded": 1,
    }});
    set_job_status(jobs, name, "Complete", &status).await
}

/// Marks a Job failed for good, as the Job controller does once `backoffLimit` pod failures
/// happened (the test server has no kubelet to run it).
pub async fn fail_job(jobs: &Api<Job>, name: &str) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({ "status": {
        "conditions": [{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                         "message": "Job has reached the specified backoff limit",
                         "lastProbeTime": now, "lastTransitionTime": now }],
        "startTime": now, "failed": 3, "active": 0,
    }});
    set_job_status(jobs, name, "Failed", &status).await
}

/// Writes a finished Job status and makes sure it sticks: the real Job controller may be in the
/// middle of writing its own view of the (pod-less) Job and overwrite the first attempt.
pub async fn set_job_status(
    jobs: &Api<Job>,
    name: &str,
    finished: &str,
    status: &serde_json::Value,
) -> anyhow::Result<()> {
    let has = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == finished && c.status == "True"))
    };
    // Let the Job controller finish its own first status write (it creates the pod and counts
    // it active); it rewrites the status it computed over ours when the two race.
    wait_for("the Job controller's first status write", || async {
        Ok(jobs
            .get(name)
            .await?
            .status
            .and_then(|s| s.active)
            .filter(|a| *a > 0))
    })
    .await?;
    let mut stable = 0;
    for _ in 0..50 {
        if has(&jobs.get(name).await?) {
            stable += 1;
            if stable == 3 {
                return Ok(());
            }
        } else {
            stable = 0;
            jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("Job {name} status did not stay {finished}")
}
