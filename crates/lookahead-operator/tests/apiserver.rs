//! Integration tests of the controllers against a real Kubernetes API server (the one from
//! `../shared/k8s/cluster.sh`, 1.20 with controller-manager so garbage collection works). The
//! controllers run in-process as spawned tasks, scoped to a namespace per test. Without a
//! reachable server every test prints why and passes.
#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lookahead_api::{LLMPool, RoutingPolicy};
use lookahead_operator::autoscaling;
use serde::Deserialize;
use serde_json::json;

/// Apply a pool + policy: every child exists with labels and owners, and both statuses are
/// written (against the real API server, controllers in-process).
#[tokio::test]
async fn apiserver_apply_pool_and_policy_creates_children_and_status() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("apply_pool_and_policy").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "apply").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "auto-b", "ext-c"]).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a", "auto-b", "ext-c"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let sel = "lookahead.dev/pool=pool";
    let want = vec!["pool-a".to_string(), "pool-auto-b".to_string()];
    wait_for("member Deployments and Services", || async {
        Ok(
            (names(&deployments, sel).await? == want && names(&services, sel).await? == want)
                .then_some(()),
        )
    })
    .await?;
    let d = deployments.get("pool-a").await?;
    assert_eq!(d.labels()["lookahead.dev/member"], "a");
    assert_eq!(
        d.labels()["app.kubernetes.io/managed-by"],
        "lookahead-operator"
    );
    assert_eq!(d.owner_references()[0].kind, "LLMPool");

    // The autoscaler, in the version this server serves (1.20: autoscaling/v2beta2).
    let hpa_api = autoscaling::discover(&client).await?;
    let hpas: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &hpa_api);
    let hpa = wait_for("the autoscaler of auto-b", || async {
        Ok(hpas.get_opt("pool-auto-b").await?)
    })
    .await?;
    assert_eq!(hpa.data["spec"]["minReplicas"], 1);
    assert_eq!(hpa.data["spec"]["maxReplicas"], 3);
    assert!(
        hpas.get_opt("pool-a").await?.is_none(),
        "no target, no autoscaler"
    );

    let status = wait_for("pool status", || async {
        Ok(pools
            .get_status("pool")
            .await?
            .status
            .filter(|s| s.fingerprint.is_some()))
    })
    .await?;
    assert_eq!(status.member_count, 3);
    assert_eq!(
        status.ready_members.as_deref(),
        Some("1/3"),
        "only the endpoint member is ready without kubelets"
    );
    assert_eq!(status.observed_generation, Some(1));
    let ready = cond(&status.conditions, "Ready").expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "MembersNotReady")
    );
    assert_eq!(
        cond(&status.conditions, "Degraded").map(|c| c.status.as_str()),
        Some("True")
    );
    let ext = status
        .members
        .iter()
        .find(|m| m.name == "ext-c")
        .expect("ext-c status");
    assert_eq!(
        ext.endpoint.as_deref(),
        Some("http://ext-c.example:8000/v1")
    );

    // The router: config, Deployment (no artifact yet: fails open to defaultModel), Service.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = wait_for("router ConfigMap", || async {
        Ok(cms.get_opt("rp-router").await?)
    })
    .await?;
    let config: lookahead_api::RouterConfig =
        serde_yaml::from_str(&cm.data.unwrap_or_default()["config.yaml"])?;
    config.validate()?;
    assert_eq!(config.members.len(), 3);
    assert_eq!(
        config.members[0].base_url,
        format!("http://pool-a.{}.svc:8000/v1", ns.name)
    );
    let router = wait_for("router Deployment", || async {
        Ok(deployments.get_opt("rp-router").await?)
    })
    .await?;
    let pod = router.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(pod.containers[0].name, "router");
    wait_for("router Service", || async {
        Ok(services.get_opt("rp-router").await?)
    })
    .await?;
    // At most one router pod down at a time, in the version this server serves (1.20: v1beta1).
    let pdb_api = lookahead_operator::disruption::discover(&client)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no PodDisruptionBudget API"))?;
    let pdbs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &pdb_api);
    let pdb = wait_for("router PodDisruptionBudget", || async {
        Ok(pdbs.get_opt("rp-router").await?)
    })
    .await?;
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "router"
    );

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let job_names = wait_for("the first training Job", || async {
        let n = names(&jobs, "lookahead.dev/policy=rp").await?;
        Ok((!n.is_empty()).then_some(n))
    })
    .await?;
    assert_eq!(job_names.len(), 1);
    let pstatus = wait_for("policy status in Training", || async {
        Ok(policies
            .get_status("rp")
            .await?
            .status
            .filter(|s| cond(&s.conditions, "Training").is_some_and(|c| c.status == "True")))
    })
    .await?;
    assert_eq!(
        pstatus.endpoint,
        Some(format!("http://rp-router.{}.svc:8080/v1", ns.name))
    );
    let training = cond(&pstatus.conditions, "Training").expect("Training");
    assert!(
        training.message.contains("defaultModel \"a\""),
        "{}",
        training.message
    );
    op.abort();
    Ok(())
}

/// A membership change creates exactly one training Job, whose success is recorded as the
/// artifact and rolls the router (real API server).
#[tokio::test]
async fn apiserver_membership_change_creates_exactly_one_job() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("membership_change").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "retrain").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "b"]).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a", "b"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;

    let first = wait_for("first Job", || async {
        Ok(names(&jobs, "lookahead.dev/policy=rp").await?.pop())
    })
    .await?;
    complete_job(&jobs, &first).await?;
    let artifact = wait_for("artifact recorded", || async {
        Ok(policies
            .get_status("rp")
            .await?
            .status
            .and_then(|s| s.artifact))
    })
    .await?;
    assert_eq!(artifact.members, ["a", "b"]);
    let scorer = wait_for("router rolled to the artifact (scorer sidecar)", || async {
        let d = deployments.get("rp-router").await?;
        let pod = d.spec.and_then(|s| s.template.spec).unwrap_or_default();
        Ok(pod.containers.into_iter().find(|c| c.name == "scorer"))
    })
    .await?;
    let args = scorer.args.unwrap_or_default();
    assert!(
        args.contains(&format!("/artifacts/routers/rp/{}", artifact.version)),
        "{args:?}"
    );

    // Add a member the dataset lacks and drop one: one new Job, for the new fingerprint.
    apply(&pools, &pool_yaml("pool", &["a", "c"])?).await?;
    let second = wait_for("a second Job", || async {
        let n = names(&jobs, "lookahead.dev/policy=rp").await?;
        Ok((n.len() == 2).then_some(n))
    })
    .await?;
    // Requeues (annotation touches, Job updates) must not create more.
    for i in 0..3 {
        let touch = json!({ "metadata": { "annotations": { "test/touch": i.to_string() } } });
        policies
            .patch("rp", &PatchParams::default(), &Patch::Merge(&touch))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(names(&jobs, "lookahead.dev/policy=rp").await?, second);
    let status = policies.get_status("rp").await?.status.unwrap_or_default();
    let training = cond(&status.conditions, "Training").expect("Training");
    assert_eq!(training.status, "True");
    assert!(
        training
            .message
            .contains("restricted to current members [a]"),
        "{}",
        training.message
    );
    assert!(
        training
            .message
            .contains("[c] get requests only when a client names them"),
        "{}",
        training.message
    );
    let missing = cond(&status.conditions, "MissingData").expect("MissingData");
    assert_eq!(missing.status, "True");
    assert!(missing.message.contains("[c]"), "{}", missing.message);
    // The new Job trains only on the member with data.
    let new_job = second.iter().find(|n| **n != first).expect("new job");
    let job = jobs.get(new_job).await?;
    let train_args = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        train_args.windows(2).any(|w| w == ["--models", "a-model"]),
        "{train_args:?}"
    );
    op.abort();
    Ok(())
}

/// Removing a member deletes its objects; deleting the pool and policy leaves nothing behind
/// (garbage collection by the real controller-manager).
#[tokio::test]
async fn apiserver_member_removal_and_delete_clean_up() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("cleanup").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "cleanup").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let hpa_api = autoscaling::discover(&client).await?;
    let hpas: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &hpa_api);
    apply(&pools, &pool_yaml("pool", &["a", "auto-b"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;
    wait_for("two member Deployments + HPA", || async {
        Ok(
            (names(&deployments, "lookahead.dev/pool=pool").await?.len() == 2
                && hpas.get_opt("pool-auto-b").await?.is_some())
            .then_some(()),
        )
    })
    .await?;

    apply(&pools, &pool_yaml("pool", &["a"])?).await?;
    wait_for(
        "auto-b's Deployment, Service and autoscaler pruned",
        || async {
            Ok(
                (names(&deployments, "lookahead.dev/pool=pool").await? == ["pool-a"]
                    && names(&services, "lookahead.dev/pool=pool").await? == ["pool-a"]
                    && hpas.get_opt("pool-auto-b").await?.is_none())
                .then_some(()),
            )
        },
    )
    .await?;

    policies.delete("rp", &DeleteParams::default()).await?;
    pools.delete("pool", &DeleteParams::default()).await?;
    wait_for("every child garbage-collected", || async {
        let sel = "app.kubernetes.io/managed-by=lookahead-operator";
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
        Ok((names(&deployments, sel).await?.is_empty()
            && names(&services, sel).await?.is_empty()
            && names(&jobs, sel).await?.is_empty()
            && names(&cms, sel).await?.is_empty())
        .then_some(()))
    })
    .await?;
    op.abort();
    Ok(())
}

/// Specs the schema admits but the operator cannot run get `Ready=False` with a reason and a
/// Warning Event, and no children (real API server; 1.20 does not enforce CEL).
#[tokio::test]
async fn apiserver_invalid_specs_get_conditions_and_no_children() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("invalid_specs").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "invalid").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    let mut bad = pool_yaml("bad", &["a"])?;
    bad.spec.members[0].replicas.min = 3;
    bad.spec.members[0].replicas.max = 2;
    apply(&pools, &bad).await?;
    let ready = wait_for("bad pool's Ready condition", || async {
        Ok(pools
            .get_status("bad")
            .await?
            .status
            .and_then(|s| cond(&s.conditions, "Ready").cloned()))
    })
    .await?;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidReplicas")
    );
    assert!(ready.message.contains("min 3 > max 2"), "{}", ready.message);

    apply(&policies, &policy_yaml("orphan", "missing", "a")?).await?;
    let ready = wait_for("orphan policy's Ready condition", || async {
        Ok(policies
            .get_status("orphan")
            .await?
            .status
            .and_then(|s| cond(&s.conditions, "Ready").cloned()))
    })
    .await?;
    assert_eq!(ready.reason, "PoolNotFound");

    apply(&pools, &pool_yaml("good", &["a"])?).await?;
    apply(&policies, &policy_yaml("nodefault", "good", "zzz")?).await?;
    let ready = wait_for("unknown defaultModel condition", || async {
        Ok(policies
            .get_status("nodefault")
            .await?
            .status
            .and_then(|s| cond(&s.conditions, "Ready").cloned()))
    })
    .await?;
    assert_eq!(ready.reason, "UnknownDefaultModel");

    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    wait_for("Warning events for the invalid objects", || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason)
            .collect();
        Ok(["InvalidReplicas", "PoolNotFound", "UnknownDefaultModel"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(()))
    })
    .await?;
    // No children from invalid specs: the good pool has its Deployment, the rest nothing.
    wait_for("good pool's Deployment", || async {
        Ok(deployments.get_opt("good-a").await?)
    })
    .await?;
    assert!(deployments.get_opt("bad-a").await?.is_none());
    assert!(deployments.get_opt("orphan-router").await?.is_none());
    assert!(deployments.get_opt("nodefault-router").await?.is_none());

    // Fixing the reference heals the policy without touching it (the pool watch re-queues it).
    apply(&pools, &pool_yaml("missing", &["a"])?).await?;
    wait_for("orphan policy's router once its pool exists", || async {
        Ok(deployments.get_opt("orphan-router").await?)
    })
    .await?;
    op.abort();
    Ok(())
}

/// An operator stopped mid-way, with the spec changed while it was down, converges when a new
/// one starts: removed members pruned, new ones created, one Job for the new membership.
#[tokio::test]
async fn apiserver_operator_restart_mid_way_converges() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("restart").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "restart").await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let (op, _) = start_operator(&client, &ns.name).await?;
    apply(&pools, &pool_yaml("pool", &["a", "b"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;
    wait_for("first member Deployment", || async {
        Ok(deployments.get_opt("pool-a").await?)
    })
    .await?;
    op.abort();
    let _ = op.await;

    apply(&pools, &pool_yaml("pool", &["a", "c", "d"])?).await?;
    let started = std::time::Instant::now();
    let (op, _) = start_operator(&client, &ns.name).await?;
    let fingerprint = pools.get("pool").await?.spec.fingerprint();
    wait_for(
        "convergence to a, c, d with one Job for the new fingerprint",
        || async {
            let d = names(&deployments, "lookahead.dev/pool=pool").await?;
            let current: Vec<Job> = jobs
                .list(&ListParams::default().labels("lookahead.dev/policy=rp"))
                .await?
                .into_iter()
                .filter(|j| j.labels().get("lookahead.dev/artifact-version") == Some(&fingerprint))
                .collect();
            let status = pools.get_status("pool").await?.status.unwrap_or_default();
            Ok((d == ["pool-a", "pool-c", "pool-d"]
                && current.len() == 1
                && status.fingerprint.as_deref() == Some(fingerprint.as_str()))
            .then_some(()))
        },
    )
    .await?;
    eprintln!(
        "FIGURE operator killed mid-reconcile: the new one converged {:.1?} after it started",
        started.elapsed()
    );
    op.abort();
    Ok(())
}

/// Two candidates for one Lease: only one leads; the other takes over after a release or once
/// the lease expires unrenewed (real API server, coordination.k8s.io/v1).
#[tokio::test]
async fn apiserver_lease_has_one_leader() -> anyhow::Result<()> {
    use lookahead_operator::leader::LeaseLock;
    let Some(client) = client_or_skip("lease").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "lease").await?;
    let d = Duration::from_secs(2);
    let a = LeaseLock::new(client.clone(), &ns.name, "op", "a", d);
    let b = LeaseLock::new(client.clone(), &ns.name, "op", "b", d);
    assert!(a.try_acquire_or_renew().await?);
    assert!(!b.try_acquire_or_renew().await?);
    assert!(a.try_acquire_or_renew().await?, "the holder renews");
    assert!(!b.try_acquire_or_renew().await?);
    // a stops renewing: b takes over only after a full lease duration of no change.
    tokio::time::sleep(d + Duration::from_millis(300)).await;
    assert!(b.try_acquire_or_renew().await?);
    assert!(
        !a.try_acquire_or_renew().await?,
        "the old holder must not win it back"
    );
    b.release().await?;
    let c = LeaseLock::new(client.clone(), &ns.name, "op", "c", d);
    assert!(
        c.try_acquire_or_renew().await?,
        "a released lease is free at once"
    );
    Ok(())
}

/// The RBAC manifest (manifests/rbac/operator.yaml) grants everything a full reconcile needs:
/// the controllers run as the operator's ServiceAccount (impersonated) against the real API
/// server, create every child and status, and record no failed reconcile (no 403s).
#[tokio::test]
async fn apiserver_rbac_manifest_is_enough() -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
    let Some(client) = client_or_skip("rbac").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "rbac").await?;
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/rbac/operator.yaml"
    ))?;
    let mut cluster_role = None;
    let mut lease_role = None;
    for doc in serde_yaml::Deserializer::from_str(&manifest) {
        let v = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
        match v["kind"].as_str() {
            Some("ClusterRole") => cluster_role = Some(serde_json::from_value::<ClusterRole>(v)?),
            Some("Role") => lease_role = Some(serde_json::from_value::<Role>(v)?),
            _ => {}
        }
    }
    let (Some(mut cluster_role), Some(mut lease_role)) = (cluster_role, lease_role) else {
        anyhow::bail!("manifest lacks the ClusterRole or the leader-election Role");
    };
    for rule in cluster_role
        .rules
        .iter()
        .flatten()
        .chain(lease_role.rules.iter().flatten())
    {
        assert!(
            !rule.verbs.iter().any(|v| v == "*"),
            "wildcard verb in {rule:?}"
        );
        assert!(
            !rule.resources.iter().flatten().any(|r| r == "*"),
            "wildcard resource in {rule:?}"
        );
    }
    // A per-test ClusterRole (cluster-scoped names are shared), bound in the test namespace only.
    let role_name = format!("lookahead-operator-{}", ns.name);
    cluster_role.metadata = kube::api::ObjectMeta {
        name: Some(role_name.clone()),
        ..Default::default()
    };
    lease_role.metadata = kube::api::ObjectMeta {
        name: Some("leader".into()),
        ..Default::default()
    };
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    cluster_roles
        .create(&PostParams::default(), &cluster_role)
        .await?;
    struct DeleteRole(String);
    impl Drop for DeleteRole {
        fn drop(&mut self) {
            let name = self.0.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Runtime::new() {
                    rt.block_on(async {
                        if let Ok(c) = Client::try_default().await {
                            let _ = Api::<ClusterRole>::all(c)
                                .delete(&name, &DeleteParams::default())
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
    let _cleanup = DeleteRole(role_name.clone());
    Api::<Role>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &lease_role)
        .await?;
    let sa =
        json!({ "kind": "ServiceAccount", "name": "lookahead-operator", "namespace": ns.name });
    for (name, kind, role) in [
        ("operator", "ClusterRole", role_name.as_str()),
        ("leader", "Role", "leader"),
    ] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role },
            "subjects": [sa],
        }))?;
        Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &binding)
            .await?;
    }

    let mut config = kube::Config::infer().await?;
    config.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{}:lookahead-operator",
        ns.name
    ));
    let operator_client = Client::try_from(config)?;
    let (op, ctx) = start_operator(&operator_client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "auto-b"]).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a", "auto-b", "c"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "statuses and the training Job, written as the ServiceAccount",
        || async {
            let pool_done = pools
                .get_status("pool")
                .await?
                .status
                .is_some_and(|s| s.fingerprint.is_some());
            let policy_done = policies
                .get_status("rp")
                .await?
                .status
                .is_some_and(|s| s.phase.is_some());
            Ok((pool_done
                && policy_done
                && !names(&jobs, "lookahead.dev/policy=rp").await?.is_empty())
            .then_some(()))
        },
    )
    .await?;
    // Prune (delete) and Events are covered too: drop a member.
    apply(&pools, &pool_yaml("pool", &["a", "auto-b"])?).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for("pool-c pruned by the ServiceAccount", || async {
        Ok(deployments.get_opt("pool-c").await?.is_none().then_some(()))
    })
    .await?;
    let lease = lookahead_operator::leader::LeaseLock::new(
        operator_client.clone(),
        &ns.name,
        "op",
        "sa",
        Duration::from_secs(5),
    );
    assert!(
        lease.try_acquire_or_renew().await?,
        "the leader Role allows the Lease"
    );
    assert!(lease.try_acquire_or_renew().await?, "and its renewal");
    // The impersonation is real: what the manifest does not grant is refused.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(operator_client.clone(), &ns.name);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("listing Secrets must be forbidden, got {other:?}"),
    }
    let metrics = ctx.metrics.render();
    assert!(
        !metrics.contains("reconcile_failures_total{"),
        "failed reconciles under RBAC:\n{metrics}"
    );
    op.abort();
    Ok(())
}

/// Two operator replicas with leader election (`lookahead_operator::run`, in-process): exactly
/// one holds the Lease and reconciles; when it dies without releasing, the other takes over once
/// the lease expires and reconciles the next change (real API server).
#[tokio::test]
async fn apiserver_two_replicas_fail_over() -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use lookahead_operator::{LeaderElection, OperatorConfig};
    let Some(client) = client_or_skip("failover").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "failover").await?;
    let replica = |identity: &str| {
        let config = OperatorConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            image: "lookahead:test".into(),
            namespace: Some(ns.name.clone()),
            leader_election: Some(LeaderElection {
                namespace: ns.name.clone(),
                lease_name: "lookahead-operator".into(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(3),
            }),
            external_metrics: None,
            telemetry: Default::default(),
            image_pull_secrets: Vec::new(),
        };
        tokio::spawn(lookahead_operator::run(
            client.clone(),
            config,
            std::future::pending(),
        ))
    };
    let mut replicas = BTreeMap::from([
        ("a".to_string(), replica("a")),
        ("b".to_string(), replica("b")),
    ]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let holder = || async {
        Ok(leases
            .get_opt("lookahead-operator")
            .await?
            .and_then(|l| l.spec?.holder_identity))
    };
    let first = wait_for("a leader", holder).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a"])?).await?;
    wait_for("the leader reconciles", || async {
        Ok(deployments.get_opt("pool-a").await?)
    })
    .await?;

    // The leader dies without releasing the Lease (a crash, not a SIGTERM).
    if let Some(task) = replicas.remove(&first) {
        task.abort();
    }
    let second = wait_for("the standby takes over", || async {
        Ok(holder().await?.filter(|h| *h != first))
    })
    .await?;
    assert!(replicas.contains_key(&second));
    apply(&pools, &pool_yaml("pool", &["a", "b"])?).await?;
    wait_for("the new leader reconciles", || async {
        Ok(deployments.get_opt("pool-b").await?)
    })
    .await?;
    for task in replicas.into_values() {
        assert!(!task.is_finished(), "the new leader keeps running");
        task.abort();
    }
    Ok(())
}

/// A training Job that fails for good is reported (`TrainingFailed=True` with the Job's reason),
/// is not recreated on requeues, and leaves the router serving; deleting the failed Job (what the
/// condition tells the user to do) retries exactly once (real API server).
#[tokio::test]
async fn apiserver_failed_training_job_is_reported_not_repeated_and_retried_on_delete(
) -> anyhow::Result<()> {
    let Some(client) = client_or_skip("failed_job").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "failed-job").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "b"]).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a", "b"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;
    let job = wait_for("the training Job", || async {
        Ok(names(&jobs, "lookahead.dev/policy=rp").await?.pop())
    })
    .await?;
    fail_job(&jobs, &job).await?;
    let failed_at = std::time::Instant::now();
    let failed = wait_for("TrainingFailed condition", || async {
        Ok(policies.get_status("rp").await?.status.and_then(|s| {
            cond(&s.conditions, "TrainingFailed")
                .filter(|c| c.status == "True")
                .cloned()
        }))
    })
    .await?;
    let reported = failed_at.elapsed();
    assert!(
        failed.message.contains("BackoffLimitExceeded") && failed.message.contains("delete it"),
        "{}",
        failed.message
    );
    // Requeues do not bring a second Job; the router keeps serving (fail-open to defaultModel).
    for i in 0..3 {
        let touch = json!({ "metadata": { "annotations": { "test/touch": i.to_string() } } });
        policies
            .patch("rp", &PatchParams::default(), &Patch::Merge(&touch))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        names(&jobs, "lookahead.dev/policy=rp").await?,
        std::slice::from_ref(&job)
    );
    assert!(deployments.get_opt("rp-router").await?.is_some());

    // Deleting the failed Job retries: one new Job under the same name, still only one.
    let uid = jobs.get(&job).await?.metadata.uid;
    jobs.delete(&job, &DeleteParams::background()).await?;
    let deleted_at = std::time::Instant::now();
    let retried = wait_for("the retried Job", || async {
        Ok(jobs
            .get_opt(&job)
            .await?
            .filter(|j| j.metadata.uid != uid && j.metadata.deletion_timestamp.is_none()))
    })
    .await?;
    let retried_after = deleted_at.elapsed();
    assert!(retried.status.and_then(|s| s.failed).unwrap_or(0) == 0);
    eprintln!(
        "FIGURE failed training Job: TrainingFailed {reported:.1?} after the failure was confirmed (3 reads, 0.6 s); \
         new Job {retried_after:.1?} after the failed one was deleted"
    );
    wait_for("TrainingFailed cleared by the retry", || async {
        Ok(policies.get_status("rp").await?.status.and_then(|s| {
            cond(&s.conditions, "Training")
                .filter(|c| c.status == "True")
                .cloned()
        }))
    })
    .await?;
    assert_eq!(names(&jobs, "lookahead.dev/policy=rp").await?, [job]);
    op.abort();
    Ok(())
}

/// A training Job whose router did not beat the best single model: `spec.training.acceptance.
/// minGain` reaches the Job, the verdict the train container leaves in its termination message
/// lands in `status.artifact.acceptance`, `RouterAccepted=False` (`BelowBaseline`) carries the
/// figures, and a `BelowBaseline` Warning Event is recorded (real API server; no kubelet, so the
/// test writes the pod's termination message and the Job's completion as they would be).
#[tokio::test]
async fn apiserver_a_router_below_the_baseline_is_reported_not_accepted() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("below_baseline").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "below-baseline").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "b"]).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a", "b"])?).await?;
    let mut policy = policy_yaml("rp", "pool", "b")?;
    if let Some(t) = policy.spec.training.as_mut() {
        t.acceptance.min_gain = 0.5;
    }
    apply(&policies, &policy).await?;
    let job = wait_for("the training Job", || async {
        Ok(names(&jobs, "lookahead.dev/policy=rp").await?.pop())
    })
    .await?;
    let args = jobs
        .get(&job)
        .await?
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default().join(" "))
        .unwrap_or_default();
    assert!(args.contains("--min-gain 0.5"), "{args}");

    // What `lookahead train --summary-file /dev/termination-log` leaves behind.
    let pod = wait_for("the Job's pod", || async {
        Ok(names(&pods, &format!("job-name={job}")).await?.pop())
    })
    .await?;
    let summary = json!({ "examples": 84, "router": 51.0, "bestSingle": 52.0, "oracle": 70.0,
        "acceptance": { "gain": -0.56, "lowerBound": -5.99, "accepted": false,
                        "fallbackModel": "a-model", "minGain": 0.5, "level": 0.95,
                        "resamples": 2000, "examples": 84 } });
    let terminated = json!({ "status": { "containerStatuses": [{
        "name": "train", "image": "lookahead", "imageID": "", "ready": false, "restartCount": 0,
        "state": { "terminated": { "exitCode": 0, "message": summary.to_string() } } }] } });
    pods.patch_status(&pod, &PatchParams::default(), &Patch::Merge(&terminated))
        .await?;
    complete_job(&jobs, &job).await?;

    let accepted = wait_for("RouterAccepted=False", || async {
        Ok(policies.get_status("rp").await?.status.and_then(|s| {
            cond(&s.conditions, "RouterAccepted")
                .filter(|c| c.status == "False")
                .cloned()
        }))
    })
    .await?;
    assert_eq!(accepted.reason, "BelowBaseline");
    for figure in ["-0.56", "-5.99", "+0.50", "every request goes to a-model"] {
        assert!(
            accepted.message.contains(figure),
            "{figure}: {}",
            accepted.message
        );
    }
    let status = policies.get_status("rp").await?.status.unwrap_or_default();
    let verdict = status.artifact.and_then(|a| a.acceptance).expect("verdict");
    assert!(!verdict.accepted && verdict.fallback_model == "a-model");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the BelowBaseline Warning Event", || async {
        Ok(events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("BelowBaseline")
            }))
    })
    .await?;
    op.abort();
    Ok(())
}
