//! The "ensure training" step of a policy's reconcile: decides which artifact the policy should
//! have ([`plan`]), checks the dataset covers the pool ([`data`]), deletes training Jobs the
//! pool has outgrown, creates the one Job for the planned version ([`job`]), replaces it with a
//! CPU Job when it waits for a GPU no node has ([`gpu`]) and reads back what it reports
//! ([`outcome`]).

pub mod data;
pub mod gpu;
pub mod job;
pub mod outcome;
pub mod plan;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use lookahead_api::policy::{ArtifactStatus, TrainingSpec};
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::context::Context;
use crate::controller::delete_ignoring_absent;
use crate::error::Result;
use crate::labels::{self, VERSION_LABEL};
use data::DataCheck;
use gpu::Placement;
use outcome::{acceptance_message, JobState, ACCEPTED, BELOW_BASELINE};
use plan::Plan;

/// Where training stands this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Training {
    /// The method needs no artifact.
    NotRequired,
    /// The served artifact matches the pool (or, with `Manual`, no retrain was asked for).
    UpToDate,
    Running {
        job: String,
        version: String,
        members: Vec<String>,
        /// Whether it runs where asked, waits for a GPU node, or stands in for a GPU Job.
        placement: Placement,
    },
    Failed {
        job: String,
        message: String,
    },
}

/// What the training step found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub training: Training,
    /// The artifact to serve: the one served so far, or the one a Job just finished.
    pub artifact: Option<ArtifactStatus>,
    pub data: DataCheck,
}

/// The objects the step works on.
struct Step<'a> {
    ctx: &'a Context,
    policy: &'a RoutingPolicy,
    /// The pool (its member credentials go to the labelling container).
    pool: &'a LLMPool,
    ns: &'a str,
    jobs: Api<Job>,
}

/// Brings the policy's training in step with its pool: see the module documentation. `served`
/// is the artifact the status reports now.
pub async fn ensure(
    ctx: &Context,
    policy: &RoutingPolicy,
    pool: &LLMPool,
    ns: &str,
    owner: &OwnerReference,
    served: Option<ArtifactStatus>,
) -> Result<Outcome> {
    let data = data::check(ctx, policy, pool, ns).await?;
    let mut plan = plan::plan(policy, pool, served.as_ref());
    let labelling = policy
        .spec
        .training
        .as_ref()
        .is_some_and(|t| t.labelling.is_some());
    if let Some(p) = plan.as_mut() {
        p.account_for(&data, labelling);
    }
    let step = Step {
        ctx,
        policy,
        pool,
        ns,
        jobs: ctx.api(ns),
    };
    let selector = labels::policy_selector(&policy.name_any());
    let existing = step
        .jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    step.supersede_stale(&existing, plan.as_ref(), served.as_ref())
        .await?;
    let (training, artifact) = match (&plan, &policy.spec.training) {
        (None, _) if !policy.spec.router.method.needs_training() => (Training::NotRequired, served),
        (None, _) | (Some(_), None) => (Training::UpToDate, served),
        (Some(plan), Some(spec)) => {
            let job = step.ensure_job(&existing, spec, plan, owner).await?;
            let (job, placement) = step.watch_gpu(job, spec, plan, owner).await?;
            step.follow(&job, plan, served, placement).await?
        }
    };
    Ok(Outcome {
        training,
        artifact,
        data,
    })
}

impl Step<'_> {
    /// Deletes running Jobs for versions neither planned nor served: the pool changed again
    /// while they trained, so their artifacts would be stale. The Job that trained the serving
    /// artifact is never stale, whatever its status says.
    async fn supersede_stale(
        &self,
        existing: &[Job],
        plan: Option<&Plan>,
        served: Option<&ArtifactStatus>,
    ) -> Result<()> {
        for j in existing {
            let version = j.labels().get(VERSION_LABEL).cloned().unwrap_or_default();
            let wanted = plan.is_some_and(|p| labels::label_value(&p.version) == version);
            let serving = served.is_some_and(|a| labels::label_value(&a.version) == version);
            if wanted || serving || outcome::job_state(j) != JobState::Running {
                continue;
            }
            delete_ignoring_absent(&self.jobs, &j.name_any()).await?;
            self.ctx
                .publish(
                    self.policy,
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
        Ok(())
    }

    /// The Job training `plan`: the existing one (its CPU stand-in first, see [`gpu`]), else a
    /// new one (with an Event).
    async fn ensure_job(
        &self,
        existing: &[Job],
        spec: &TrainingSpec,
        plan: &Plan,
        owner: &OwnerReference,
    ) -> Result<Job> {
        let name = plan::job_name(&self.policy.name_any(), &plan.version);
        let cpu_name = job::cpu_fallback_name(&name);
        if let Some(j) = existing.iter().find(|j| j.name_any() == cpu_name) {
            // The GPU Job it replaced, when a failed reconcile left it behind.
            let gpu_left = existing
                .iter()
                .any(|j| j.name_any() == name && j.metadata.deletion_timestamp.is_none());
            if gpu_left {
                delete_ignoring_absent(&self.jobs, &name).await?;
            }
            return Ok(j.clone());
        }
        if let Some(j) = existing.iter().find(|j| j.name_any() == name) {
            return Ok(j.clone());
        }
        let image = &self.ctx.settings.image;
        let mut job = job::job(self.policy, spec, plan, self.ns, image, owner);
        let pod = job.spec.as_mut().and_then(|s| s.template.spec.as_mut());
        self.ctx.settings.add_pull_secrets(pod);
        if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            // Labelling reads the router's config: the same key and CA files, mounted alike.
            crate::credentials::mount(pod, self.pool, job::LABEL_CONTAINER);
        }
        match self.jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let note = format!(
                    "Job {name} trains artifact {} for members {}",
                    plan.version,
                    plan.members.join(", ")
                );
                self.ctx
                    .publish(
                        self.policy,
                        EventType::Normal,
                        "TrainingStarted",
                        note,
                        "Train",
                    )
                    .await;
                Ok(created)
            }
            // Created by a reconcile racing this one (the list was stale): use it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.jobs.get(&name).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Where `job` stands, and the artifact to serve: a finished Job's artifact replaces
    /// `served`.
    async fn follow(
        &self,
        job: &Job,
        plan: &Plan,
        served: Option<ArtifactStatus>,
        placement: Placement,
    ) -> Result<(Training, Option<ArtifactStatus>)> {
        let name = job.name_any();
        Ok(match outcome::job_state(job) {
            JobState::Running => (
                Training::Running {
                    job: name,
                    version: plan.version.clone(),
                    members: plan.members.clone(),
                    placement,
                },
                served,
            ),
            JobState::Failed { message } => {
                let message = match self.failure_detail(&name).await? {
                    Some(detail) => format!("{message}; {detail}"),
                    None => message,
                };
                (Training::Failed { job: name, message }, served)
            }
            JobState::Succeeded { finished } => {
                let trained = self.trained_artifact(job, &name, plan, finished).await?;
                (Training::UpToDate, Some(trained))
            }
        })
    }

    /// What the failed Job `name`'s container said last (see [`outcome::failure_detail`]).
    async fn failure_detail(&self, name: &str) -> Result<Option<String>> {
        let pods: Api<Pod> = self.ctx.api(self.ns);
        let selector = format!("job-name={name}");
        let pods = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok(outcome::failure_detail(&pods.items))
    }

    /// The artifact a finished Job wrote, with what its pods report back in their termination
    /// messages: validation scores (and the labelling count).
    async fn trained_artifact(
        &self,
        job: &Job,
        name: &str,
        plan: &Plan,
        finished: Option<String>,
    ) -> Result<ArtifactStatus> {
        let pods: Api<Pod> = self.ctx.api(self.ns);
        let selector = format!("job-name={name}");
        let pods = pods.list(&ListParams::default().labels(&selector)).await?;
        let reported = outcome::Reported {
            labelled_prompts: if plan.label.is_empty() {
                None
            } else {
                outcome::labelled_prompts(&pods.items)
            },
            validation: outcome::validation_scores(&pods.items),
            acceptance: outcome::acceptance(&pods.items),
        };
        let trained = outcome::artifact_of(job, &plan.version, finished, reported);
        self.ctx
            .publish(
                self.policy,
                EventType::Normal,
                "TrainingSucceeded",
                format!(
                    "artifact {} trained; rolling the router to it",
                    trained.version
                ),
                "Train",
            )
            .await;
        self.publish_acceptance(&trained).await;
        Ok(trained)
    }

    /// The acceptance gate's verdict on a newly trained artifact, as an Event (a Warning when
    /// the router will serve the best single model instead).
    async fn publish_acceptance(&self, trained: &ArtifactStatus) {
        let Some(a) = &trained.acceptance else { return };
        let (kind, reason) = if a.accepted {
            (EventType::Normal, ACCEPTED)
        } else {
            (EventType::Warning, BELOW_BASELINE)
        };
        let note = format!("artifact {}: {}", trained.version, acceptance_message(a));
        self.ctx
            .publish(self.policy, kind, reason, note, "Train")
            .await;
    }
}
