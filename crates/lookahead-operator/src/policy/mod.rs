//! The `RoutingPolicy` controller: validates the policy against its pool, keeps the trained
//! artifact in step with the pool's membership (training Jobs), and runs the router.

pub mod router;
pub mod training;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use lookahead_api::policy::{ArtifactStatus, PolicyPhase, RoutingPolicyStatus};
use lookahead_api::{LLMPool, RoutingPolicy};
use serde_json::json;

use crate::conditions::{condition, condition_with, find};
use crate::context::{namespace_of, owner_ref, Context};
use crate::error::{Error, Result};
use crate::labels::{self, MANAGER, VERSION_LABEL};
use crate::validate::{self, Problem};
use router::Scoring;
use training::JobState;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "routingpolicy";

/// Where training stands this reconcile.
#[derive(Debug, Clone, PartialEq)]
enum Training {
    /// The method needs no artifact.
    NotRequired,
    /// The served artifact matches the pool (or, with `Manual`, no retrain was asked for).
    UpToDate,
    Running {
        job: String,
        version: String,
        members: Vec<String>,
    },
    Failed {
        job: String,
        message: String,
    },
}

/// Reconciles one policy.
#[tracing::instrument(skip_all, fields(policy = %policy.name_any(), ns = policy.namespace().unwrap_or_default()))]
pub async fn reconcile(policy: Arc<RoutingPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let ns = namespace_of(policy.as_ref(), "RoutingPolicy")?;
    let name = policy.name_any();
    let previous = policy.status.clone().unwrap_or_default();

    let pools: Api<LLMPool> = ctx.api(&ns);
    let pool_name = &policy.spec.pool_ref.name;
    let Some(pool) = pools.get_opt(pool_name).await? else {
        let problem = Problem {
            reason: "PoolNotFound",
            message: format!("spec.poolRef: LLMPool {pool_name:?} not found in namespace {ns}"),
        };
        return invalid(&ctx, &policy, &ns, &previous, &[problem]).await;
    };
    let mut problems = validate::policy(&policy.spec, &pool.spec);
    let pool_problems = validate::pool(&pool.spec);
    if !pool_problems.is_empty() {
        problems.push(Problem {
            reason: "PoolInvalid",
            message: format!("pool {pool_name:?}: {}", validate::summary(&pool_problems)),
        });
    }
    if !problems.is_empty() {
        return invalid(&ctx, &policy, &ns, &previous, &problems).await;
    }

    let owner = owner_ref(policy.as_ref())?;
    let lacking = members_without_data(&ctx, &policy, &pool, &ns).await?;
    let mut artifact = previous.artifact.clone();
    let mut plan = training::plan(&policy, &pool, artifact.as_ref());
    let labelling = policy
        .spec
        .training
        .as_ref()
        .and_then(|t| t.labelling.as_ref());
    match (plan.as_mut(), &lacking, labelling) {
        // Label the members without records first, then train on the whole pool.
        (Some(p), DataCheck::Lacking(names), Some(_)) => p.label = names.clone(),
        // The operator cannot see the dataset: let `lookahead label` find the missing pairs
        // (it asks only what the dataset lacks).
        (Some(p), DataCheck::Unknown(_), Some(_)) => p.label = p.members.clone(),
        // No labelling step: a member without records would make every record incomplete;
        // train on the others.
        (Some(p), DataCheck::Lacking(names), None) => {
            let keep: Vec<(String, String)> = p
                .members
                .iter()
                .cloned()
                .zip(p.models.iter().cloned())
                .filter(|(n, _)| !names.contains(n))
                .collect();
            p.members = keep.iter().map(|(n, _)| n.clone()).collect();
            p.models = keep.into_iter().map(|(_, m)| m).collect();
        }
        _ => {}
    }

    let jobs: Api<Job> = ctx.api(&ns);
    let existing = jobs
        .list(&ListParams::default().labels(&labels::policy_selector(&name)))
        .await?;
    for j in &existing {
        let version = j.labels().get(VERSION_LABEL).cloned().unwrap_or_default();
        let wanted = plan
            .as_ref()
            .is_some_and(|p| labels::label_value(&p.version) == version);
        // The Job that trained the serving artifact is never stale, whatever its status says.
        let serving = artifact
            .as_ref()
            .is_some_and(|a| labels::label_value(&a.version) == version);
        if !wanted && !serving && training::job_state(j) == JobState::Running {
            // The pool changed again while this Job trained: its artifact would be stale.
            delete_ignoring_absent(&jobs, &j.name_any()).await?;
            ctx.publish(
                policy.as_ref(),
                EventType::Normal,
                "TrainingSuperseded",
                format!(
                    "deleted training Job {}: the pool changed while it ran",
                    j.name_any()
                ),
                "Train",
            )
            .await;
        }
    }

    let training_state = match (&plan, &policy.spec.training) {
        (None, _) if !policy.spec.router.method.needs_training() => Training::NotRequired,
        (None, _) | (Some(_), None) => Training::UpToDate,
        (Some(plan), Some(spec)) => {
            let job_name = training::job_name(&name, &plan.version);
            let job = match existing.items.iter().find(|j| j.name_any() == job_name) {
                Some(j) => j.clone(),
                None => {
                    let job = training::job(&policy, spec, plan, &ns, &ctx.settings.image, &owner);
                    match jobs.create(&PostParams::default(), &job).await {
                        Ok(created) => {
                            ctx.publish(
                                policy.as_ref(),
                                EventType::Normal,
                                "TrainingStarted",
                                format!(
                                    "Job {job_name} trains artifact {} for members {}",
                                    plan.version,
                                    plan.members.join(", ")
                                ),
                                "Train",
                            )
                            .await;
                            created
                        }
                        // Created by a reconcile racing this one (the list was stale): use it.
                        Err(kube::Error::Api(e)) if e.code == 409 => jobs.get(&job_name).await?,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            match training::job_state(&job) {
                JobState::Running => Training::Running {
                    job: job_name,
                    version: plan.version.clone(),
                    members: plan.members.clone(),
                },
                JobState::Failed { message } => Training::Failed {
                    job: job_name,
                    message,
                },
                JobState::Succeeded { finished } => {
                    // The Job's pods hold what training reports back: validation scores (and
                    // the labelling count) in their termination messages.
                    let pods: Api<Pod> = ctx.api(&ns);
                    let selector = format!("job-name={job_name}");
                    let pods = pods.list(&ListParams::default().labels(&selector)).await?;
                    let labelled = if plan.label.is_empty() {
                        None
                    } else {
                        training::labelled_prompts(&pods.items)
                    };
                    let validation = training::validation_scores(&pods.items);
                    let trained =
                        training::artifact_of(&job, &plan.version, finished, labelled, validation);
                    ctx.publish(
                        policy.as_ref(),
                        EventType::Normal,
                        "TrainingSucceeded",
                        format!(
                            "artifact {} trained; rolling the router to it",
                            trained.version
                        ),
                        "Train",
                    )
                    .await;
                    artifact = Some(trained);
                    Training::UpToDate
                }
            }
        }
    };

    let scoring = router::scoring(&policy, artifact.as_ref());
    let config = match router::router_config(&policy, &pool, &ns, &scoring) {
        Ok(c) => c,
        Err(Error::Render { message, .. }) => {
            let problem = Problem {
                reason: "InvalidRouterConfig",
                message,
            };
            return invalid(&ctx, &policy, &ns, &previous, &[problem]).await;
        }
        Err(e) => return Err(e),
    };
    let apply = PatchParams::apply(MANAGER).force();
    let router_name = router::router_name(&name);
    let (cm, hash) = router::config_map(&name, &ns, &config, &owner)?;
    let config_maps: Api<ConfigMap> = ctx.api(&ns);
    config_maps
        .patch(&router_name, &apply, &Patch::Apply(&cm))
        .await?;
    let deployment = router::deployment(&policy, &ns, &ctx.settings.image, &scoring, &hash, &owner);
    let deployments: Api<Deployment> = ctx.api(&ns);
    let applied = deployments
        .patch(&router_name, &apply, &Patch::Apply(&deployment))
        .await?;
    let services: Api<Service> = ctx.api(&ns);
    services
        .patch(
            &router_name,
            &apply,
            &Patch::Apply(&router::service(&name, &ns, &owner)),
        )
        .await?;

    let ready_replicas = applied
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let status = policy_status(&StatusInputs {
        policy: &policy,
        pool: &pool,
        ns: &ns,
        previous: &previous,
        artifact,
        scoring: &scoring,
        training: &training_state,
        lacking: &lacking,
        ready_replicas,
    });
    patch_status(&ctx, &ns, &name, &status).await?;
    Ok(match training_state {
        // Job status changes re-trigger through `owns`; the short timer covers missed watches.
        Training::Running { .. } => Action::requeue(Duration::from_secs(30)),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// Whether every member has records in the training dataset.
#[derive(Debug, Clone, PartialEq)]
enum DataCheck {
    NotRequired,
    Complete,
    Lacking(Vec<String>),
    /// The dataset cannot be inspected by the operator (a PVC, or a malformed manifest).
    Unknown(String),
}

async fn members_without_data(
    ctx: &Context,
    policy: &RoutingPolicy,
    pool: &LLMPool,
    ns: &str,
) -> Result<DataCheck> {
    let Some(training) = policy.spec.training.as_ref() else {
        return Ok(DataCheck::NotRequired);
    };
    if !policy.spec.router.method.needs_training() {
        return Ok(DataCheck::NotRequired);
    }
    let Some(cm_ref) = &training.dataset.config_map else {
        return Ok(DataCheck::Unknown(
            "the dataset is on a PersistentVolumeClaim, which the operator does not read".into(),
        ));
    };
    let api: Api<ConfigMap> = ctx.api(ns);
    let Some(cm) = api.get_opt(&cm_ref.name).await? else {
        return Ok(DataCheck::Unknown(format!(
            "dataset ConfigMap {:?} not found",
            cm_ref.name
        )));
    };
    Ok(match training::members_without_data(pool, &cm) {
        Some(names) if names.is_empty() => DataCheck::Complete,
        Some(names) => DataCheck::Lacking(names),
        None => DataCheck::Unknown(format!(
            "dataset ConfigMap {:?} has no readable manifest.json",
            cm_ref.name
        )),
    })
}

struct StatusInputs<'a> {
    policy: &'a RoutingPolicy,
    pool: &'a LLMPool,
    ns: &'a str,
    previous: &'a RoutingPolicyStatus,
    artifact: Option<ArtifactStatus>,
    scoring: &'a Scoring,
    training: &'a Training,
    lacking: &'a DataCheck,
    ready_replicas: i32,
}

/// What the router serves, in words, for condition messages.
fn serving_summary(i: &StatusInputs<'_>) -> String {
    match i.scoring {
        Scoring::Artifact(a) => {
            let current: Vec<&str> = i
                .pool
                .spec
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            let scored: Vec<&str> = current
                .iter()
                .copied()
                .filter(|m| a.members.is_empty() || a.members.iter().any(|x| x == m))
                .collect();
            let unscored: Vec<&str> = current
                .iter()
                .copied()
                .filter(|m| !scored.contains(m))
                .collect();
            let mut s = format!(
                "the router serves artifact {} restricted to current members [{}]",
                a.version,
                scored.join(", ")
            );
            if !unscored.is_empty() {
                s.push_str(&format!(
                    "; members it was not trained on [{}] get requests only when a client names them",
                    unscored.join(", ")
                ));
            }
            s
        }
        Scoring::Untrained(m) => match &i.policy.spec.objective.default_model {
            Some(d) if i.policy.spec.router.method.needs_training() => {
                format!("no artifact yet: the router sends every request to defaultModel {d:?}")
            }
            _ if i.policy.spec.router.method.needs_training() => {
                "no artifact yet: the router picks members at random".into()
            }
            _ => format!("method {} needs no artifact", validate::method_name(*m)),
        },
    }
}

fn policy_status(i: &StatusInputs<'_>) -> RoutingPolicyStatus {
    let generation = i.policy.meta().generation;
    let prev = &i.previous.conditions;
    let serving = serving_summary(i);
    let replicas = i.policy.spec.serving.replicas;
    let router_ready = i.ready_replicas > 0 || replicas == 0;
    let mut conditions: Vec<Condition> = vec![if router_ready {
        condition(
            prev,
            "Ready",
            true,
            "RouterAvailable",
            format!(
                "{}/{replicas} router replicas ready; {serving}",
                i.ready_replicas
            ),
            generation,
        )
    } else {
        condition(
            prev,
            "Ready",
            false,
            "RouterUnavailable",
            format!("0/{replicas} router replicas ready"),
            generation,
        )
    }];
    let (training, failed) = match i.training {
        Training::NotRequired => (
            condition(
                prev,
                "Training",
                false,
                "NotRequired",
                serving.clone(),
                generation,
            ),
            condition(
                prev,
                "TrainingFailed",
                false,
                "NotRequired",
                "the method needs no training",
                generation,
            ),
        ),
        Training::UpToDate => {
            let message = match (
                &i.artifact,
                i.policy.spec.training.as_ref().map(|t| t.trigger),
            ) {
                (None, Some(lookahead_api::policy::TrainingTrigger::Manual)) => format!(
                    "trigger is Manual: annotate {} to train; {serving}",
                    labels::RETRAIN_ANNOTATION
                ),
                _ => serving.clone(),
            };
            (
                condition(
                    prev,
                    "Training",
                    false,
                    "ArtifactUpToDate",
                    message,
                    generation,
                ),
                condition(
                    prev,
                    "TrainingFailed",
                    false,
                    "NoFailure",
                    "no training Job failed",
                    generation,
                ),
            )
        }
        Training::Running {
            job,
            version,
            members,
        } => (
            condition(
                prev,
                "Training",
                true,
                "MembershipChanged",
                format!(
                    "Job {job} trains artifact {version} for members [{}]; meanwhile {serving}",
                    members.join(", ")
                ),
                generation,
            ),
            condition(
                prev,
                "TrainingFailed",
                false,
                "NoFailure",
                "no training Job failed",
                generation,
            ),
        ),
        Training::Failed { job, message } => (
            condition(
                prev,
                "Training",
                false,
                "JobFailed",
                serving.clone(),
                generation,
            ),
            condition(
                prev,
                "TrainingFailed",
                true,
                "JobFailed",
                format!("Job {job} failed ({message}); delete it to retry; {serving}"),
                generation,
            ),
        ),
    };
    conditions.push(training);
    conditions.push(failed);
    conditions.push(match i.lacking {
        DataCheck::NotRequired => condition(prev, "MissingData", false, "NotRequired", "the method needs no training data", generation),
        DataCheck::Complete => condition(prev, "MissingData", false, "AllMembersHaveData", "every member has records in the dataset", generation),
        DataCheck::Lacking(names) => condition(
            prev,
            "MissingData",
            true,
            "MembersWithoutRecords",
            if i.policy.spec.training.as_ref().is_some_and(|t| t.labelling.is_some()) {
                format!(
                    "members without records in the dataset: [{}]; the training Job labels them first (lookahead label), then trains on the whole pool",
                    names.join(", ")
                )
            } else {
                format!(
                    "members without records in the dataset: [{}]; training leaves them out (no labelling step is configured) and the router sends them requests only when a client names them",
                    names.join(", ")
                )
            },
            generation,
        ),
        DataCheck::Unknown(why) => condition_with(prev, "MissingData", "Unknown", "NotInspected", why.clone(), generation),
    });
    let phase = match (i.training, &i.artifact) {
        (Training::Failed { .. }, Some(_)) => PolicyPhase::Degraded,
        (Training::Failed { .. }, None) => PolicyPhase::Failed,
        (Training::Running { .. }, _) => PolicyPhase::Training,
        _ if router_ready => PolicyPhase::Serving,
        _ => PolicyPhase::Pending,
    };
    RoutingPolicyStatus {
        observed_generation: generation,
        phase: Some(phase),
        artifact: i.artifact.clone(),
        endpoint: Some(router::router_url(&i.policy.name_any(), i.ns)),
        conditions,
    }
}

/// Reports an invalid spec: `Ready=False` with the first problem's reason, an Event the first
/// time this exact problem is seen, and no children. What already runs is left running.
async fn invalid(
    ctx: &Context,
    policy: &RoutingPolicy,
    ns: &str,
    previous: &RoutingPolicyStatus,
    problems: &[Problem],
) -> Result<Action> {
    let generation = policy.meta().generation;
    let message = validate::summary(problems);
    let reason = problems.first().map_or("InvalidSpec", |p| p.reason);
    let first_report = find(&previous.conditions, "Ready")
        .is_none_or(|c| c.reason != reason || c.message != message);
    let mut conditions = vec![condition(
        &previous.conditions,
        "Ready",
        false,
        reason,
        &message,
        generation,
    )];
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ != "Ready")
            .cloned(),
    );
    let status = RoutingPolicyStatus {
        observed_generation: generation,
        phase: Some(PolicyPhase::Failed),
        artifact: previous.artifact.clone(),
        endpoint: previous.endpoint.clone(),
        conditions,
    };
    patch_status(ctx, ns, &policy.name_any(), &status).await?;
    if first_report {
        ctx.publish(policy, EventType::Warning, reason, message, "Validate")
            .await;
    }
    Ok(Action::await_change())
}

async fn delete_ignoring_absent(jobs: &Api<Job>, name: &str) -> Result<()> {
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn patch_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &RoutingPolicyStatus,
) -> Result<()> {
    let api: Api<RoutingPolicy> = ctx.api(ns);
    let patch = json!({
        "apiVersion": RoutingPolicy::api_version(&()),
        "kind": RoutingPolicy::kind(&()),
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
pub fn error_policy(policy: Arc<RoutingPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed");
    ctx.metrics.failure(CONTROLLER, error);
    Action::requeue(Duration::from_secs(5))
}
