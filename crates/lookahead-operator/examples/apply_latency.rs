//! Measures, on a real API server, how long the in-process controllers take from
//! (a) applying a 5-member pool + policy to every child existing and both statuses written, and
//! (b) a membership change to the training Job existing. Prints a Markdown table.
//!
//! `KUBECONFIG=/tmp/k8s-apiserver/kubeconfig cargo run -p lookahead-operator --example apply_latency -- [RUNS]`

// A measuring program: printing its table is its job.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use lookahead_api::{LLMPool, RoutingPolicy};
use lookahead_operator::{autoscaling, run_controllers, Context, Metrics, Settings};
use serde_json::json;

fn pool(members: &[&str]) -> anyhow::Result<LLMPool> {
    let members: Vec<serde_json::Value> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut v = json!({
                "name": m, "modelId": format!("{m}-model"),
                "template": { "image": "vllm/vllm-openai:v0.6.0", "args": ["--model", m] },
            });
            if i % 2 == 0 {
                v["replicas"] =
                    json!({ "min": 1, "max": 4, "target": { "averageUtilization": 70 } });
            }
            v
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "lookahead.dev/v1alpha1", "kind": "LLMPool",
        "metadata": { "name": "pool" }, "spec": { "members": members },
    }))?)
}

fn policy() -> anyhow::Result<RoutingPolicy> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "lookahead.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": { "name": "rp" },
        "spec": {
            "poolRef": { "name": "pool" },
            "router": { "method": "lookahead-lite" },
            "objective": { "defaultModel": "m0" },
            "training": {
                "dataset": { "pvc": { "claimName": "data", "path": "routing" } },
                "artifacts": { "claimName": "artifacts", "path": "routers/rp" },
            },
        },
    }))?)
}

async fn count<K>(api: &Api<K>, selector: &str) -> anyhow::Result<usize>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list_metadata(&ListParams::default().labels(selector))
        .await?
        .items
        .len())
}

async fn until(mut check: impl AsyncFnMut() -> anyhow::Result<bool>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !check().await? {
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed())
}

struct Run {
    children: Duration,
    status: Duration,
    job: Duration,
}

async fn one_run(client: &Client, hpa: &kube::api::ApiResource, i: usize) -> anyhow::Result<Run> {
    let ns = format!("op-bench-{}-{i}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": ns } }))?,
        )
        .await?;
    let settings = Settings {
        image: "lookahead:bench".into(),
        hpa: hpa.clone(),
        pdb: lookahead_operator::disruption::discover(client).await?,
        namespace: Some(ns.clone()),
        telemetry: Default::default(),
        image_pull_secrets: Vec::new(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
    ));
    let op = tokio::spawn(run_controllers(ctx));
    // Let the watches start, so the measurement is reconcile latency, not operator start-up.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let hpas: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, hpa);
    let ssa = PatchParams::apply("bench").force();
    let members = ["m0", "m1", "m2", "m3", "m4"];

    let start = Instant::now();
    pools
        .patch("pool", &ssa, &Patch::Apply(&pool(&members)?))
        .await?;
    policies
        .patch("rp", &ssa, &Patch::Apply(&policy()?))
        .await?;
    let managed = "app.kubernetes.io/managed-by=lookahead-operator";
    let mut children = None;
    let mut status = None;
    until(async || {
        if children.is_none()
            && count(&deployments, managed).await? == 6
            && count(&services, managed).await? == 6
            && count(&hpas, managed).await? == 3
            && count(&cms, managed).await? == 1
            && count(&jobs, managed).await? == 1
        {
            children = Some(start.elapsed());
        }
        if status.is_none() {
            let p = pools.get_status("pool").await?.status;
            let r = policies.get_status("rp").await?.status;
            if p.is_some_and(|s| s.observed_generation == Some(1) && s.member_count == 5)
                && r.is_some_and(|s| s.observed_generation == Some(1) && s.phase.is_some())
            {
                status = Some(start.elapsed());
            }
        }
        Ok(children.is_some() && status.is_some())
    })
    .await?;

    // Membership change: a sixth member -> a Job for the new fingerprint.
    // (The first membership's Job, still running, is superseded and deleted by the operator.)
    let grown = pool(&["m0", "m1", "m2", "m3", "m4", "m5"])?;
    let version = format!(
        "lookahead.dev/artifact-version={}",
        grown.spec.fingerprint()
    );
    let start = Instant::now();
    pools.patch("pool", &ssa, &Patch::Apply(&grown)).await?;
    until(async || Ok(count(&jobs, &version).await? == 1)).await?;
    let job = start.elapsed();

    op.abort();
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    Ok(Run {
        children: children.unwrap_or_default(),
        status: status.unwrap_or_default(),
        job,
    })
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(7);
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    let hpa = autoscaling::discover(&client).await?;
    let mut results = Vec::new();
    for i in 0..runs {
        let r = one_run(&client, &hpa, i).await?;
        eprintln!(
            "run {i}: children {:.0} ms, status {:.0} ms, job {:.0} ms",
            r.children.as_secs_f64() * 1e3,
            r.status.as_secs_f64() * 1e3,
            r.job.as_secs_f64() * 1e3
        );
        results.push(r);
    }
    let mut children: Vec<Duration> = results.iter().map(|r| r.children).collect();
    let mut status: Vec<Duration> = results.iter().map(|r| r.status).collect();
    let mut all: Vec<Duration> = results.iter().map(|r| r.children.max(r.status)).collect();
    let mut job: Vec<Duration> = results.iter().map(|r| r.job).collect();
    println!(
        "API server {}.{} ({}), {runs} runs, HPA {}",
        version.major, version.minor, version.git_version, hpa.api_version
    );
    println!();
    println!("| step | p50 (ms) | max (ms) | goal |");
    println!("|---|---|---|---|");
    println!("| 5-member pool + policy applied -> all 17 children created (6 Deployments, 6 Services, 3 HPAs, ConfigMap, Job) | {:.0} | {:.0} | |", pct(&mut children, 0.5), pct(&mut children, 1.0));
    println!(
        "| 5-member pool + policy applied -> both statuses written | {:.0} | {:.0} | |",
        pct(&mut status, 0.5),
        pct(&mut status, 1.0)
    );
    println!("| 5-member pool + policy applied -> children + status (both) | {:.0} | {:.0} | p50 <= 1000 |", pct(&mut all, 0.5), pct(&mut all, 1.0));
    println!(
        "| membership change -> training Job created | {:.0} | {:.0} | <= 2000 |",
        pct(&mut job, 0.5),
        pct(&mut job, 1.0)
    );
    Ok(())
}
