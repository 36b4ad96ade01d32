//! A training Job that asks for a GPU no node can give. Its pod stays Pending, unschedulable
//! (`PodScheduled=False`, reason `Unschedulable`); after `spec.training.noGpuNode.after` the
//! operator says so (a `NoGpuNode` Warning Event, the `Training` condition) and, with the
//! default action `TrainOnCpu`, replaces the Job with its CPU stand-in
//! ([`super::job::cpu_fallback`]). The stand-in's own name and annotation carry the decision over
//! to later reconciles, so it is made once.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use lookahead_api::policy::{NoGpuNodeAction, TrainingSpec};

use super::outcome::{self, JobState};
use super::plan::Plan;
use super::{job, Step};
use crate::conditions::TRAINING;
use crate::controller::delete_ignoring_absent;
use crate::error::Result;
use crate::labels::CPU_FALLBACK_ANNOTATION;
use crate::objects::wants_gpu;

/// Event and `Training` condition reason of a GPU pod no node can take.
pub const NO_GPU_NODE: &str = "NoGpuNode";
/// `Training` condition reason while the CPU stand-in of a GPU Job trains.
pub const CPU_FALLBACK: &str = "CpuFallback";

/// Where a training Job runs, as far as the status needs to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Where its spec asks (a GPU Job not yet waiting past the bound included).
    AsAsked,
    /// A GPU Job unschedulable past the bound, left waiting (`noGpuNode.action: Wait`): why.
    WaitingForGpu(String),
    /// The CPU stand-in of a GPU Job: why it replaced it.
    CpuFallback(String),
}

/// How long a pod of the Job has been unschedulable (the longest, if several), with the
/// scheduler's message. Measured from the `PodScheduled` condition's transition (else the pod's
/// creation); a transition in the future (clock skew) counts as none.
pub fn unschedulable(pods: &[Pod], now: Timestamp) -> Option<(Duration, String)> {
    pods.iter()
        .filter_map(|pod| {
            let condition = pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled")?;
            let stuck =
                condition.status == "False" && condition.reason.as_deref() == Some("Unschedulable");
            if !stuck {
                return None;
            }
            let since = condition
                .last_transition_time
                .as_ref()
                .or(pod.metadata.creation_timestamp.as_ref())?;
            let waited = Duration::try_from(now.duration_since(since.0)).unwrap_or_default();
            Some((waited, condition.message.clone().unwrap_or_default()))
        })
        .max_by_key(|(waited, _)| *waited)
}

/// Why a GPU Job is being reported, in words for the Event and the condition.
pub fn no_gpu_node_message(job: &str, after: &str, scheduler: &str) -> String {
    let scheduler = scheduler.trim();
    let scheduler = if scheduler.is_empty() {
        "no message".to_string()
    } else {
        format!("scheduler: {scheduler}")
    };
    format!(
        "the pod of training Job {job} asks for a GPU and no node could take it for {after} ({scheduler})"
    )
}

impl Step<'_> {
    /// Checks a GPU Job's pods against `noGpuNode` (see the module documentation); returns the
    /// Job to follow (the CPU stand-in once it replaced `job`) and where it runs.
    pub(super) async fn watch_gpu(
        &self,
        job: Job,
        spec: &TrainingSpec,
        plan: &Plan,
        owner: &OwnerReference,
    ) -> Result<(Job, Placement)> {
        if let Some(why) = job.annotations().get(CPU_FALLBACK_ANNOTATION) {
            let why = why.clone();
            return Ok((job, Placement::CpuFallback(why)));
        }
        if !wants_gpu(spec.resources.as_ref()) || outcome::job_state(&job) != JobState::Running {
            return Ok((job, Placement::AsAsked));
        }
        // Validated before any Job is made; the default bound keeps this total.
        let after = spec
            .no_gpu_node
            .after_duration()
            .unwrap_or(Duration::from_secs(120));
        let name = job.name_any();
        let pods = self.ctx.api::<Pod>(self.ns);
        let selector = format!("job-name={name}");
        let pods = pods.list(&ListParams::default().labels(&selector)).await?;
        let Some((waited, scheduler)) = unschedulable(&pods.items, Timestamp::now()) else {
            return Ok((job, Placement::AsAsked));
        };
        if waited < after {
            return Ok((job, Placement::AsAsked));
        }
        let why = no_gpu_node_message(&name, &spec.no_gpu_node.after, &scheduler);
        match spec.no_gpu_node.action {
            NoGpuNodeAction::Wait => {
                if !self.reported_no_gpu_node() {
                    let note = format!("{why}; waiting for a GPU node (noGpuNode.action: Wait)");
                    self.warn_no_gpu_node(note).await;
                }
                Ok((job, Placement::WaitingForGpu(why)))
            }
            NoGpuNodeAction::TrainOnCpu => {
                let cpu = self.train_on_cpu(&name, spec, plan, owner, &why).await?;
                Ok((cpu, Placement::CpuFallback(why)))
            }
        }
    }

    /// Replaces GPU Job `gpu_job` with its CPU stand-in (the stand-in is created first, so a
    /// failure in between leaves a Job training).
    async fn train_on_cpu(
        &self,
        gpu_job: &str,
        spec: &TrainingSpec,
        plan: &Plan,
        owner: &OwnerReference,
        why: &str,
    ) -> Result<Job> {
        let image = &self.ctx.settings.image;
        let rendered = job::job(self.policy, spec, plan, self.ns, image, owner);
        let mut cpu = job::cpu_fallback(rendered, image, why);
        let pod = cpu.spec.as_mut().and_then(|s| s.template.spec.as_mut());
        self.ctx.settings.add_pull_secrets(pod);
        let cpu_name = cpu.name_any();
        let created = match self.jobs.create(&PostParams::default(), &cpu).await {
            Ok(created) => created,
            // Created by a reconcile racing this one: use it.
            Err(kube::Error::Api(e)) if e.code == 409 => self.jobs.get(&cpu_name).await?,
            Err(e) => return Err(e.into()),
        };
        delete_ignoring_absent(&self.jobs, gpu_job).await?;
        self.warn_no_gpu_node(format!(
            "{why}; training on the CPU instead as Job {cpu_name} (--device cpu)"
        ))
        .await;
        Ok(created)
    }

    /// Whether the status already says a GPU Job waits for a node (the Event went out then).
    fn reported_no_gpu_node(&self) -> bool {
        let conditions = self.policy.status.as_ref().map(|s| &s.conditions);
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == TRAINING && c.reason == NO_GPU_NODE)
    }

    async fn warn_no_gpu_node(&self, note: String) {
        self.ctx
            .publish(self.policy, EventType::Warning, NO_GPU_NODE, note, "Train")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(status: &str, reason: &str, since: Timestamp) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
                    last_transition_time: Some(Time(since)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_unschedulable_pod_counts_from_its_scheduling_condition() {
        let now = Timestamp::now();
        let three_minutes_ago = now - std::time::Duration::from_secs(180);
        let (waited, message) =
            unschedulable(&[pod("False", "Unschedulable", three_minutes_ago)], now)
                .expect("unschedulable");
        assert_eq!(waited, Duration::from_secs(180));
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
        // Scheduled, or pending for another reason: nothing to report.
        assert_eq!(
            unschedulable(&[pod("True", "", three_minutes_ago)], now),
            None
        );
        assert_eq!(
            unschedulable(&[pod("False", "SchedulingGated", three_minutes_ago)], now),
            None
        );
        assert_eq!(unschedulable(&[], now), None);
        // A transition stamped in the future (clock skew) has waited no time.
        let later = now + std::time::Duration::from_secs(60);
        let (waited, _) =
            unschedulable(&[pod("False", "Unschedulable", later)], now).expect("unschedulable");
        assert_eq!(waited, Duration::ZERO);
    }

    #[test]
    fn the_report_names_the_job_the_bound_and_the_scheduler() {
        let m = no_gpu_node_message("rp-train-abc", "2m", "0/3 nodes are available");
        assert_eq!(
            m,
            "the pod of training Job rp-train-abc asks for a GPU and no node could take it for 2m (scheduler: 0/3 nodes are available)"
        );
        assert!(no_gpu_node_message("j", "2m", " ").ends_with("(no message)"));
    }
}
