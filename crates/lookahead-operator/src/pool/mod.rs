//! The `LLMPool` controller. A reconcile is four named steps: validate the pool, apply each
//! template member's Deployment, Service and autoscaler ([`children`]), prune removed members'
//! objects, write the status with per-member readiness and the pool fingerprint ([`status`]).

pub mod children;
pub mod status;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use lookahead_api::pool::{MemberStatus, MemberTemplate, PoolMember};
use lookahead_api::LLMPool;

use crate::autoscaling::{self, HpaSpec};
use crate::context::{namespace_of, owner_ref, Context};
use crate::controller::{self, delete_ignoring_absent, Invalid, Reconciled};
use crate::error::Result;
use crate::labels::{self, MANAGER, MEMBER_LABEL};
use crate::validate;

pub use status::pool_status;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "llmpool";

impl Reconciled for LLMPool {
    const CONTROLLER: &'static str = CONTROLLER;
}

/// Reconciles one pool.
#[tracing::instrument(skip_all, fields(pool = %pool.name_any(), ns = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<LLMPool>, ctx: Arc<Context>) -> Result<Action> {
    controller::instrumented(pool.as_ref(), &ctx, steps(&pool, &ctx)).await
}

async fn steps(pool: &LLMPool, ctx: &Context) -> Result<Action> {
    let ns = namespace_of(pool, "LLMPool")?;
    let previous = pool.status.clone().unwrap_or_default();
    let problems = validate::pool(&pool.spec);
    if !problems.is_empty() {
        let invalid = Invalid::new(&problems);
        let status = status::invalid_status(pool, &previous, &invalid);
        return controller::report_invalid(ctx, pool, &ns, invalid, &previous.conditions, &status)
            .await;
    }
    let children = Children::new(ctx, pool, &ns)?;
    let mut members = Vec::with_capacity(pool.spec.members.len());
    for m in &pool.spec.members {
        members.push(match &m.template {
            Some(t) => children.apply(m, t).await?,
            // Endpoint members are run by someone else; the router's outlier detection takes
            // unhealthy ones out of rotation.
            None => MemberStatus {
                name: m.name.clone(),
                ready: true,
                ready_replicas: 0,
                desired_replicas: 0,
                endpoint: m.endpoint.clone(),
            },
        });
    }
    children.prune_removed().await?;
    let status = pool_status(pool, members, &previous, pool.meta().generation);
    controller::patch_status::<LLMPool>(ctx, &ns, &children.pool, &status).await?;
    // Deployment status changes re-trigger through `owns`; the timer is a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The template members' objects of one pool, and the APIs they live in.
struct Children<'a> {
    ctx: &'a Context,
    object: &'a LLMPool,
    pool: String,
    ns: &'a str,
    owner: OwnerReference,
    deployments: Api<Deployment>,
    services: Api<Service>,
    hpas: Api<DynamicObject>,
    apply: PatchParams,
}

impl<'a> Children<'a> {
    fn new(ctx: &'a Context, pool: &'a LLMPool, ns: &'a str) -> Result<Self> {
        Ok(Children {
            ctx,
            object: pool,
            pool: pool.name_any(),
            ns,
            owner: owner_ref(pool)?,
            deployments: ctx.api(ns),
            services: ctx.api(ns),
            hpas: Api::namespaced_with(ctx.client.clone(), ns, &ctx.settings.hpa),
            apply: PatchParams::apply(MANAGER).force(),
        })
    }

    /// Step 2, for one template member: applies its Deployment, Service and (with a target)
    /// autoscaler; returns its state.
    async fn apply(&self, m: &PoolMember, t: &MemberTemplate) -> Result<MemberStatus> {
        let (pool, ns, owner) = (self.pool.as_str(), self.ns, &self.owner);
        let child = children::member_object_name(pool, &m.name);
        let d = children::deployment(pool, ns, m, t, owner);
        let applied = self
            .deployments
            .patch(&child, &self.apply, &Patch::Apply(&d))
            .await?;
        let s = children::service(pool, ns, m, t, owner);
        self.services
            .patch(&child, &self.apply, &Patch::Apply(&s))
            .await?;
        if let Some(target) = &m.replicas.target {
            let labels = labels::member_labels(pool, &m.name, &child);
            let hpa = autoscaling::build(
                &self.ctx.settings.hpa,
                &HpaSpec {
                    name: &child,
                    namespace: ns,
                    labels: &labels,
                    owner,
                    min: m.replicas.min,
                    max: m.replicas.max,
                    metrics: autoscaling::member_metrics(pool, &m.name, target)?,
                },
            )?;
            self.hpas
                .patch(&child, &self.apply, &Patch::Apply(&hpa))
                .await?;
        }
        let (ready_replicas, desired) = replica_counts(&applied);
        Ok(MemberStatus {
            name: m.name.clone(),
            // Serving needs one ready replica; the router balances over the Service.
            ready: ready_replicas > 0,
            ready_replicas,
            desired_replicas: desired,
            endpoint: Some(children::member_url(pool, ns, &m.name, t)),
        })
    }

    /// Step 3: deletes the objects of members no longer in the pool (an autoscaler also when
    /// its member lost its target), with an Event naming them.
    async fn prune_removed(&self) -> Result<()> {
        let members = &self.object.spec.members;
        let templated: BTreeSet<String> = members
            .iter()
            .filter(|m| m.template.is_some())
            .map(|m| m.name.clone())
            .collect();
        let autoscaled: BTreeSet<String> = members
            .iter()
            .filter(|m| m.template.is_some() && m.replicas.target.is_some())
            .map(|m| m.name.clone())
            .collect();
        let selector = ListParams::default().labels(&labels::pool_selector(&self.pool));
        let mut pruned = Vec::new();
        pruned.extend(prune(&self.deployments, &selector, &templated).await?);
        pruned.extend(prune(&self.services, &selector, &templated).await?);
        pruned.extend(prune(&self.hpas, &selector, &autoscaled).await?);
        if pruned.is_empty() {
            return Ok(());
        }
        pruned.sort();
        pruned.dedup();
        let note = format!(
            "deleted the objects of removed members: {}",
            pruned.join(", ")
        );
        self.ctx
            .publish(
                self.object,
                EventType::Normal,
                "MembersRemoved",
                note,
                "Prune",
            )
            .await;
        Ok(())
    }
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
        delete_ignoring_absent(api, &obj.name_any()).await?;
        tracing::info!(object = %obj.name_any(), member, "pruned");
        removed.push(member);
    }
    Ok(removed)
}
