//! The `RoutingPolicy` controller. A reconcile is four named steps: validate the policy against
//! its pool, ensure training (the trained artifact in step with the pool's membership, see
//! [`training`]), apply the router's children ([`router`]), write the status ([`status`]).

pub mod router;
pub mod status;
pub mod training;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use lookahead_api::policy::RoutingPolicyStatus;
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::context::{namespace_of, owner_ref, Context};
use crate::controller::{self, Invalid, Reconciled};
use crate::error::{Error, Result};
use crate::labels::MANAGER;
use crate::validate::{self, Problem};
use router::Scoring;
use status::StatusInputs;
use training::Training;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "routingpolicy";

impl Reconciled for RoutingPolicy {
    const CONTROLLER: &'static str = CONTROLLER;
}

/// Reconciles one policy.
#[tracing::instrument(skip_all, fields(policy = %policy.name_any(), ns = policy.namespace().unwrap_or_default()))]
pub async fn reconcile(policy: Arc<RoutingPolicy>, ctx: Arc<Context>) -> Result<Action> {
    controller::instrumented(policy.as_ref(), &ctx, steps(&policy, &ctx)).await
}

async fn steps(policy: &RoutingPolicy, ctx: &Context) -> Result<Action> {
    let ns = namespace_of(policy, "RoutingPolicy")?;
    let previous = policy.status.clone().unwrap_or_default();
    let pool = match validate_against_pool(ctx, policy, &ns).await? {
        Ok(pool) => pool,
        Err(problems) => return invalid(ctx, policy, &ns, &previous, &problems).await,
    };
    let owner = owner_ref(policy)?;
    let served = previous.artifact.clone();
    let trained = training::ensure(ctx, policy, &pool, &ns, &owner, served).await?;
    let scoring = router::scoring(policy, trained.artifact.as_ref());
    let ready_replicas = match apply_router(ctx, policy, &pool, &ns, &owner, &scoring).await? {
        Ok(ready) => ready,
        Err(problem) => return invalid(ctx, policy, &ns, &previous, &[problem]).await,
    };
    let status = status::policy_status(&StatusInputs {
        policy,
        pool: &pool,
        ns: &ns,
        previous: &previous,
        artifact: trained.artifact,
        scoring: &scoring,
        training: &trained.training,
        data: &trained.data,
        ready_replicas,
    });
    controller::patch_status::<RoutingPolicy>(ctx, &ns, &policy.name_any(), &status).await?;
    Ok(match trained.training {
        // Job status changes re-trigger through `owns`; the short timer covers missed watches.
        Training::Running { .. } => Action::requeue(Duration::from_secs(30)),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// Step 1: the policy's pool, or what is wrong with the policy (its pool missing or invalid
/// included).
async fn validate_against_pool(
    ctx: &Context,
    policy: &RoutingPolicy,
    ns: &str,
) -> Result<Result<LLMPool, Vec<Problem>>> {
    let pools: Api<LLMPool> = ctx.api(ns);
    let pool_name = &policy.spec.pool_ref.name;
    let Some(pool) = pools.get_opt(pool_name).await? else {
        return Ok(Err(vec![Problem {
            reason: "PoolNotFound",
            message: format!("spec.poolRef: LLMPool {pool_name:?} not found in namespace {ns}"),
        }]));
    };
    let mut problems = validate::policy(&policy.spec, &pool.spec);
    let pool_problems = validate::pool(&pool.spec);
    if !pool_problems.is_empty() {
        problems.push(Problem {
            reason: "PoolInvalid",
            message: format!("pool {pool_name:?}: {}", validate::summary(&pool_problems)),
        });
    }
    Ok(if problems.is_empty() {
        Ok(pool)
    } else {
        Err(problems)
    })
}

/// Step 3: applies the router's ConfigMap, Deployment and Service; returns the ready router
/// replicas, or the problem when the policy renders no valid router config.
async fn apply_router(
    ctx: &Context,
    policy: &RoutingPolicy,
    pool: &LLMPool,
    ns: &str,
    owner: &OwnerReference,
    scoring: &Scoring,
) -> Result<Result<i32, Problem>> {
    let config = match router::router_config(policy, pool, ns, scoring) {
        Ok(c) => c,
        Err(Error::Render { message, .. }) => {
            return Ok(Err(Problem {
                reason: "InvalidRouterConfig",
                message,
            }))
        }
        Err(e) => return Err(e),
    };
    let name = policy.name_any();
    let apply = PatchParams::apply(MANAGER).force();
    let router_name = router::router_name(&name);
    let (cm, hash) = router::config_map(&name, ns, &config, owner)?;
    let config_maps: Api<ConfigMap> = ctx.api(ns);
    config_maps
        .patch(&router_name, &apply, &Patch::Apply(&cm))
        .await?;
    let mut deployment = router::deployment(
        policy,
        ns,
        &ctx.settings.image,
        &ctx.settings.telemetry,
        scoring,
        &hash,
        owner,
    );
    let pod = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut());
    ctx.settings.add_pull_secrets(pod);
    if let Some(pod) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        crate::credentials::mount(pod, pool, router::ROUTER_CONTAINER);
    }
    let deployments: Api<Deployment> = ctx.api(ns);
    let applied = deployments
        .patch(&router_name, &apply, &Patch::Apply(&deployment))
        .await?;
    let services: Api<Service> = ctx.api(ns);
    let service = router::service(&name, ns, owner);
    services
        .patch(&router_name, &apply, &Patch::Apply(&service))
        .await?;
    apply_router_scaling(ctx, policy, ns, owner).await?;
    Ok(Ok(applied
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)))
}

/// Step 3, continued: the router's PodDisruptionBudget (where the server serves one) and its
/// autoscaler, or no autoscaler when `serving.autoscaling` is absent (a stale one would fight the
/// fixed replica count).
async fn apply_router_scaling(
    ctx: &Context,
    policy: &RoutingPolicy,
    ns: &str,
    owner: &OwnerReference,
) -> Result<()> {
    let name = policy.name_any();
    let router_name = router::router_name(&name);
    let labels = crate::labels::policy_labels(&name, "router", &router_name);
    let apply = PatchParams::apply(MANAGER).force();
    if let Some(ar) = &ctx.settings.pdb {
        let selector = crate::labels::router_selector(&name);
        let pdb = crate::disruption::build(ar, &router_name, ns, &labels, owner, &selector)?;
        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, ar)
            .patch(&router_name, &apply, &Patch::Apply(&pdb))
            .await?;
    }
    let hpas: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ctx.settings.hpa);
    let serving = &policy.spec.serving;
    let Some(scaling) = &serving.autoscaling else {
        return match hpas.delete(&router_name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        };
    };
    let min = serving.replicas.max(1);
    let hpa = crate::autoscaling::build(
        &ctx.settings.hpa,
        &crate::autoscaling::HpaSpec {
            name: &router_name,
            namespace: ns,
            labels: &labels,
            owner,
            min,
            max: scaling.max_replicas.max(min),
            metrics: crate::autoscaling::router_metrics(&name, scaling.in_flight_per_replica),
        },
    )?;
    hpas.patch(&router_name, &apply, &Patch::Apply(&hpa))
        .await?;
    Ok(())
}

/// Reports an invalid policy (see [`controller::report_invalid`]).
async fn invalid(
    ctx: &Context,
    policy: &RoutingPolicy,
    ns: &str,
    previous: &RoutingPolicyStatus,
    problems: &[Problem],
) -> Result<Action> {
    let invalid = Invalid::new(problems);
    let status = status::invalid_status(policy, previous, &invalid);
    controller::report_invalid(ctx, policy, ns, invalid, &previous.conditions, &status).await
}
