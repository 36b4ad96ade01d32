//! The `LLMPool` controller: a Deployment, Service and autoscaler per template member, pruning of
//! removed members' objects, and a status with per-member readiness and the pool fingerprint.

pub mod children;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use lookahead_api::pool::{LLMPoolStatus, MemberStatus};
use lookahead_api::LLMPool;
use serde_json::json;

use crate::autoscaling::{self, HpaSpec};
use crate::conditions::{condition, find};
use crate::context::{namespace_of, owner_ref, Context};
use crate::error::{Error, Result};
use crate::labels::{self, MANAGER, MEMBER_LABEL};
use crate::validate;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "llmpool";

/// Reconciles one pool.
#[tracing::instrument(skip_all, fields(pool = %pool.name_any(), ns = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<LLMPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = namespace_of(pool.as_ref(), "LLMPool")?;
    let name = pool.name_any();
    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.meta().generation;

    let problems = validate::pool(&pool.spec);
    if !problems.is_empty() {
        let message = validate::summary(&problems);
        let reason = problems[0].reason;
        let first_report = find(&previous.conditions, "Ready")
            .is_none_or(|c| c.reason != reason || c.message != message);
        let status = LLMPoolStatus {
            observed_generation: generation,
            fingerprint: previous.fingerprint.clone(),
            member_count: i32::try_from(pool.spec.members.len()).unwrap_or(i32::MAX),
            ready_members: previous.ready_members.clone(),
            members: previous.members.clone(),
            conditions: vec![
                condition(
                    &previous.conditions,
                    "Ready",
                    false,
                    reason,
                    &message,
                    generation,
                ),
                condition(
                    &previous.conditions,
                    "Degraded",
                    true,
                    reason,
                    &message,
                    generation,
                ),
            ],
        };
        patch_status(&ctx, &ns, &name, &status).await?;
        if first_report {
            ctx.publish(
                pool.as_ref(),
                EventType::Warning,
                reason,
                message,
                "Validate",
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    let owner = owner_ref(pool.as_ref())?;
    let deployments: Api<Deployment> = ctx.api(&ns);
    let services: Api<Service> = ctx.api(&ns);
    let hpas: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.settings.hpa);
    let apply = PatchParams::apply(MANAGER).force();

    let mut members = Vec::with_capacity(pool.spec.members.len());
    let mut want_children = BTreeSet::new();
    let mut want_hpas = BTreeSet::new();
    for m in &pool.spec.members {
        let Some(t) = &m.template else {
            members.push(MemberStatus {
                name: m.name.clone(),
                // Endpoint members are run by someone else; the router's outlier detection
                // takes unhealthy ones out of rotation.
                ready: true,
                ready_replicas: 0,
                desired_replicas: 0,
                endpoint: m.endpoint.clone(),
            });
            continue;
        };
        let child = children::member_object_name(&name, &m.name);
        want_children.insert(m.name.clone());
        let d = children::deployment(&name, &ns, m, t, &owner);
        let applied = deployments.patch(&child, &apply, &Patch::Apply(&d)).await?;
        let s = children::service(&name, &ns, m, t, &owner);
        services.patch(&child, &apply, &Patch::Apply(&s)).await?;
        if let Some(target) = &m.replicas.target {
            want_hpas.insert(m.name.clone());
            let labels = labels::member_labels(&name, &m.name, &child);
            let hpa = autoscaling::build(
                &ctx.settings.hpa,
                &HpaSpec {
                    name: &child,
                    namespace: &ns,
                    labels: &labels,
                    owner: &owner,
                    min: m.replicas.min,
                    max: m.replicas.max,
                    target,
                },
            )?;
            hpas.patch(&child, &apply, &Patch::Apply(&hpa)).await?;
        }
        let (ready_replicas, desired) = replica_counts(&applied);
        members.push(MemberStatus {
            name: m.name.clone(),
            // Serving needs one ready replica; the router balances over the Service.
            ready: ready_replicas > 0,
            ready_replicas,
            desired_replicas: desired,
            endpoint: Some(children::member_url(&name, &ns, &m.name, t)),
        });
    }

    let selector = ListParams::default().labels(&labels::pool_selector(&name));
    let mut pruned = Vec::new();
    pruned.extend(prune(&deployments, &selector, &want_children).await?);
    pruned.extend(prune(&services, &selector, &want_children).await?);
    pruned.extend(prune(&hpas, &selector, &want_hpas).await?);
    if !pruned.is_empty() {
        pruned.sort();
        pruned.dedup();
        ctx.publish(
            pool.as_ref(),
            EventType::Normal,
            "MembersRemoved",
            format!(
                "deleted the objects of removed members: {}",
                pruned.join(", ")
            ),
            "Prune",
        )
        .await;
    }

    let status = pool_status(&pool, members, &previous, generation);
    patch_status(&ctx, &ns, &name, &status).await?;
    // Deployment status changes re-trigger through `owns`; the timer is a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// `(ready, desired)` replicas of an applied Deployment.
fn replica_counts(d: &Deployment) -> (i32, i32) {
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    (ready, desired)
}

/// Deletes the operator's objects (selected by `lp`) whose member is not in `keep`; returns
/// the removed members.
async fn prune<K>(api: &Api<K>, lp: &ListParams, keep: &BTreeSet<String>) -> Result<Vec<String>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut removed = Vec::new();
    for obj in api.list_metadata(lp).await? {
        let member = obj.labels().get(MEMBER_LABEL).cloned().unwrap_or_default();
        if keep.contains(&member) || obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api
            .delete(&obj.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(object = %obj.name_any(), member, "pruned");
        removed.push(member);
    }
    Ok(removed)
}

/// Builds the status of a valid pool from its members' states.
pub fn pool_status(
    pool: &LLMPool,
    members: Vec<MemberStatus>,
    previous: &LLMPoolStatus,
    generation: Option<i64>,
) -> LLMPoolStatus {
    let total = members.len();
    let ready = members.iter().filter(|m| m.ready).count();
    let not_ready: Vec<&str> = members
        .iter()
        .filter(|m| !m.ready)
        .map(|m| m.name.as_str())
        .collect();
    let all_ready = not_ready.is_empty();
    let (ready_reason, ready_message) = if all_ready {
        ("AllMembersReady", format!("{ready}/{total} members ready"))
    } else {
        (
            "MembersNotReady",
            format!(
                "{ready}/{total} members ready; waiting for: {}",
                not_ready.join(", ")
            ),
        )
    };
    let (degraded_reason, degraded_message) = match (all_ready, ready) {
        (true, _) => ("AllMembersReady", "every member is ready".to_string()),
        (false, 0) => (
            "NoMemberReady",
            format!("no member is ready: {}", not_ready.join(", ")),
        ),
        (false, _) => (
            "MembersUnavailable",
            format!("routing around unready members: {}", not_ready.join(", ")),
        ),
    };
    LLMPoolStatus {
        observed_generation: generation,
        fingerprint: Some(pool.spec.fingerprint()),
        member_count: i32::try_from(total).unwrap_or(i32::MAX),
        ready_members: Some(format!("{ready}/{total}")),
        members,
        conditions: vec![
            condition(
                &previous.conditions,
                "Ready",
                all_ready,
                ready_reason,
                ready_message,
                generation,
            ),
            condition(
                &previous.conditions,
                "Degraded",
                !all_ready,
                degraded_reason,
                degraded_message,
                generation,
            ),
        ],
    }
}

async fn patch_status(ctx: &Context, ns: &str, name: &str, status: &LLMPoolStatus) -> Result<()> {
    let api: Api<LLMPool> = ctx.api(ns);
    let patch = json!({
        "apiVersion": LLMPool::api_version(&()),
        "kind": LLMPool::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Requeue policy for failed reconciles: count the failure, retry after a pause.
pub fn error_policy(pool: Arc<LLMPool>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(pool = %pool.name_any(), %error, "reconcile failed");
    ctx.metrics.failure(CONTROLLER, error);
    Action::requeue(Duration::from_secs(5))
}
