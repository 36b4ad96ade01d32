//! A policy's status: phase, served artifact, endpoint and the `Ready`, `Training`,
//! `TrainingFailed`, `MissingData` and `RouterAccepted` conditions, each message saying what the
//! router serves.

use kube::{Resource, ResourceExt};
use lookahead_api::policy::{ArtifactStatus, PolicyPhase, RoutingPolicyStatus, TrainingTrigger};
use lookahead_api::{LLMPool, RoutingPolicy};

use super::router::{self, Scoring};
use super::training::data::DataCheck;
use super::training::gpu::{Placement, CPU_FALLBACK, NO_GPU_NODE};
use super::training::outcome::{acceptance_message, ACCEPTED, BELOW_BASELINE};
use super::training::Training;
use crate::conditions::{
    Conditions, MISSING_DATA, READY, ROUTER_ACCEPTED, TRAINING, TRAINING_FAILED,
};
use crate::controller::Invalid;
use crate::labels;

/// What the status is built from.
pub struct StatusInputs<'a> {
    pub policy: &'a RoutingPolicy,
    pub pool: &'a LLMPool,
    pub ns: &'a str,
    pub previous: &'a RoutingPolicyStatus,
    pub artifact: Option<ArtifactStatus>,
    pub scoring: &'a Scoring,
    pub training: &'a Training,
    pub data: &'a DataCheck,
    pub ready_replicas: i32,
}

/// A condition's status, reason and message.
type Said = (bool, &'static str, String);

/// The status of a valid policy.
pub fn policy_status(i: &StatusInputs<'_>) -> RoutingPolicyStatus {
    let generation = i.policy.meta().generation;
    let serving = serving_summary(i);
    let replicas = i.policy.spec.serving.replicas;
    let router_ready = i.ready_replicas > 0 || replicas == 0;
    let mut c = Conditions::new(&i.previous.conditions, generation);
    if router_ready {
        let message = format!(
            "{}/{replicas} router replicas ready; {serving}",
            i.ready_replicas
        );
        c.set(READY, true, "RouterAvailable", message);
    } else {
        let message = format!("0/{replicas} router replicas ready");
        c.set(READY, false, "RouterUnavailable", message);
    }
    let (training, failed) = training_conditions(i, &serving);
    c.set(TRAINING, training.0, training.1, training.2);
    c.set(TRAINING_FAILED, failed.0, failed.1, failed.2);
    missing_data(&mut c, i);
    router_accepted(&mut c, i);
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
        conditions: c.build(),
    }
}

/// The status of an invalid policy: `Ready=False` with the problem, phase `Failed`, the rest
/// of the previous status kept.
pub fn invalid_status(
    policy: &RoutingPolicy,
    previous: &RoutingPolicyStatus,
    invalid: &Invalid,
) -> RoutingPolicyStatus {
    let generation = policy.meta().generation;
    let mut c = Conditions::new(&previous.conditions, generation);
    c.set(READY, false, invalid.reason, invalid.message.clone())
        .keep_the_rest();
    RoutingPolicyStatus {
        observed_generation: generation,
        phase: Some(PolicyPhase::Failed),
        artifact: previous.artifact.clone(),
        endpoint: previous.endpoint.clone(),
        conditions: c.build(),
    }
}

/// The `Training` and `TrainingFailed` conditions.
fn training_conditions(i: &StatusInputs<'_>, serving: &str) -> (Said, Said) {
    let no_failure = || (false, "NoFailure", "no training Job failed".to_string());
    match i.training {
        Training::NotRequired => (
            (false, "NotRequired", serving.to_string()),
            (false, "NotRequired", "the method needs no training".into()),
        ),
        Training::UpToDate => {
            let trigger = i.policy.spec.training.as_ref().map(|t| t.trigger);
            let message = match (&i.artifact, trigger) {
                (None, Some(TrainingTrigger::Manual)) => format!(
                    "trigger is Manual: annotate {} to train; {serving}",
                    labels::RETRAIN_ANNOTATION
                ),
                _ => serving.to_string(),
            };
            ((false, "ArtifactUpToDate", message), no_failure())
        }
        Training::Running {
            job,
            version,
            members,
            placement,
        } => {
            let trains = format!(
                "Job {job} trains artifact {version} for members [{}]",
                members.join(", ")
            );
            let (reason, message) = match placement {
                Placement::AsAsked => ("MembershipChanged", format!("{trains}; meanwhile {serving}")),
                Placement::WaitingForGpu(why) => (
                    NO_GPU_NODE,
                    format!("{trains} once a GPU node takes it: {why}; noGpuNode.action is Wait; meanwhile {serving}"),
                ),
                Placement::CpuFallback(why) => (
                    CPU_FALLBACK,
                    format!("{trains} on the CPU (--device cpu), in place of the GPU Job: {why}; meanwhile {serving}"),
                ),
            };
            ((true, reason, message), no_failure())
        }
        Training::Failed { job, message } => (
            (false, "JobFailed", serving.to_string()),
            (
                true,
                "JobFailed",
                format!("Job {job} failed ({message}); delete it to retry; {serving}"),
            ),
        ),
    }
}

/// The `MissingData` condition.
fn missing_data(c: &mut Conditions<'_>, i: &StatusInputs<'_>) {
    match i.data {
        DataCheck::NotRequired => c.set(
            MISSING_DATA,
            false,
            "NotRequired",
            "the method needs no training data",
        ),
        DataCheck::Complete => c.set(
            MISSING_DATA,
            false,
            "AllMembersHaveData",
            "every member has records in the dataset",
        ),
        DataCheck::Lacking(names) => {
            let labelling = i
                .policy
                .spec
                .training
                .as_ref()
                .is_some_and(|t| t.labelling.is_some());
            let message = if labelling {
                format!(
                    "members without records in the dataset: [{}]; the training Job labels them first (lookahead label), then trains on the whole pool",
                    names.join(", ")
                )
            } else {
                format!(
                    "members without records in the dataset: [{}]; training leaves them out (no labelling step is configured) and the router sends them requests only when a client names them",
                    names.join(", ")
                )
            };
            c.set(MISSING_DATA, true, "MembersWithoutRecords", message)
        }
        DataCheck::Unknown(why) => c.unknown(MISSING_DATA, "NotInspected", why.clone()),
    };
}

/// The `RouterAccepted` condition: the served artifact's acceptance verdict.
fn router_accepted(c: &mut Conditions<'_>, i: &StatusInputs<'_>) {
    match i.scoring {
        Scoring::Artifact(a) => match &a.acceptance {
            Some(v) => c.set(
                ROUTER_ACCEPTED,
                v.accepted,
                if v.accepted { ACCEPTED } else { BELOW_BASELINE },
                format!("artifact {}: {}", a.version, acceptance_message(v)),
            ),
            None => c.set(
                ROUTER_ACCEPTED,
                true,
                "NotMeasured",
                format!(
                    "artifact {} has no acceptance verdict (trained before the gate, or without validation records): the router routes",
                    a.version
                ),
            ),
        },
        Scoring::Untrained(_) if i.policy.spec.router.method.needs_training() => {
            c.unknown(ROUTER_ACCEPTED, "NoArtifact", "no artifact trained yet")
        }
        Scoring::Untrained(_) => c.unknown(
            ROUTER_ACCEPTED,
            "NotRequired",
            "the method needs no artifact",
        ),
    };
}

/// What the router serves, in words, for condition messages.
fn serving_summary(i: &StatusInputs<'_>) -> String {
    match i.scoring {
        Scoring::Artifact(a) => artifact_summary(i.pool, a),
        Scoring::Untrained(m) => match &i.policy.spec.objective.default_model {
            Some(d) if i.policy.spec.router.method.needs_training() => {
                format!("no artifact yet: the router sends every request to defaultModel {d:?}")
            }
            _ if i.policy.spec.router.method.needs_training() => {
                "no artifact yet: the router picks members at random".into()
            }
            _ => format!("method {} needs no artifact", m.name()),
        },
    }
}

/// The served artifact and the current members it scores (and those it does not know).
fn artifact_summary(pool: &LLMPool, a: &ArtifactStatus) -> String {
    let current: Vec<&str> = pool.spec.members.iter().map(|m| m.name.as_str()).collect();
    let (scored, unscored): (Vec<&str>, Vec<&str>) = current
        .into_iter()
        .partition(|m| a.members.is_empty() || a.members.iter().any(|x| x == *m));
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
    if let Some(v) = a.acceptance.as_ref().filter(|v| !v.accepted) {
        s.push_str(&format!(
            "; the artifact is not accepted: every routed request goes to {}",
            v.fallback_model
        ));
    }
    s
}
