//! Retraining: which artifact a policy should have, the training Job that produces it (one per
//! artifact version, named deterministically so requeues never duplicate it), and its outcome.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use lookahead_api::policy::{ArtifactStatus, RouterMethod, TrainingSpec, TrainingTrigger};
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::labels::{
    self, FINGERPRINT_ANNOTATION, MEMBERS_ANNOTATION, RETRAIN_ANNOTATION, VERSION_LABEL,
};
use crate::policy::router::{artifact_dir, ARTIFACTS_MOUNT};

/// An artifact the policy should have but does not.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pool fingerprint to train for.
    pub fingerprint: String,
    /// Artifact version = directory name = what names the Job.
    pub version: String,
    /// Member names (the pool now).
    pub members: Vec<String>,
    /// Model ids passed to `lookahead train --models`.
    pub models: Vec<String>,
}

/// Decides whether the policy needs a new artifact. `OnMembershipChange`: whenever the pool's
/// fingerprint differs from the served artifact's. `Manual`: when the `lookahead.dev/retrain`
/// annotation holds a value no artifact was trained for yet.
pub fn plan(
    policy: &RoutingPolicy,
    pool: &LLMPool,
    current: Option<&ArtifactStatus>,
) -> Option<Plan> {
    if !policy.spec.router.method.needs_training() {
        return None;
    }
    let training = policy.spec.training.as_ref()?;
    let fingerprint = pool.spec.fingerprint();
    let version = match training.trigger {
        TrainingTrigger::OnMembershipChange => {
            if current.is_some_and(|a| a.fingerprint == fingerprint) {
                return None;
            }
            fingerprint.clone()
        }
        TrainingTrigger::Manual => {
            let token = policy
                .metadata
                .annotations
                .as_ref()?
                .get(RETRAIN_ANNOTATION)?;
            let version = format!(
                "{fingerprint}-{}",
                &labels::short_hash(token.as_bytes())[..8]
            );
            if current.is_some_and(|a| a.version == version) {
                return None;
            }
            version
        }
    };
    Some(Plan {
        fingerprint,
        version,
        members: pool.spec.members.iter().map(|m| m.name.clone()).collect(),
        models: pool
            .spec
            .members
            .iter()
            .map(|m| m.model_id.clone())
            .collect(),
    })
}

/// Name of the Job that trains `version` for `policy`.
pub fn job_name(policy: &str, version: &str) -> String {
    labels::object_name(&format!("{policy}-train-{version}"))
}

/// `lookahead train --method` for a router method.
fn train_method(m: RouterMethod) -> &'static str {
    match m {
        RouterMethod::LookaheadLite => "lite",
        RouterMethod::LookaheadMlm => "mlm",
        RouterMethod::LookaheadClm => "clm",
        RouterMethod::Mlc => "mlc",
        RouterMethod::Knn => "knn",
        RouterMethod::Random => "random",
        RouterMethod::Fixed => "fixed",
    }
}

/// The training Job: `lookahead train` in the operator's image, reading the dataset and writing
/// the artifact to `<artifacts>/<version>` on the policy's PVC.
pub fn job(
    policy: &RoutingPolicy,
    training: &TrainingSpec,
    plan: &Plan,
    ns: &str,
    image: &str,
    owner: &OwnerReference,
) -> Job {
    let policy_name = policy.metadata.name.as_deref().unwrap_or_default();
    let name = job_name(policy_name, &plan.version);
    let mut labels = labels::policy_labels(policy_name, "training", &name);
    labels.insert(VERSION_LABEL.into(), labels::label_value(&plan.version));
    let out = artifact_dir(policy, &plan.version).unwrap_or_default();

    let mut volumes = vec![Volume {
        name: "cache".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "cache".into(),
        mount_path: "/cache".into(),
        ..Default::default()
    }];
    let data_dir = if let Some(cm) = &training.dataset.config_map {
        volumes.push(Volume {
            name: "dataset".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "dataset".into(),
            mount_path: "/dataset".into(),
            read_only: Some(true),
            ..Default::default()
        });
        "/dataset".to_string()
    } else if let Some(pvc) = &training.dataset.pvc {
        volumes.push(Volume {
            name: "dataset".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "dataset".into(),
            mount_path: "/dataset".into(),
            read_only: Some(true),
            ..Default::default()
        });
        format!("/dataset/{}", pvc.path)
    } else {
        "/dataset".to_string()
    };
    if let Some(a) = &training.artifacts {
        volumes.push(Volume {
            name: "artifacts".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: a.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "artifacts".into(),
            mount_path: ARTIFACTS_MOUNT.into(),
            ..Default::default()
        });
    }

    let args = vec![
        "train".to_string(),
        "--method".into(),
        train_method(policy.spec.router.method).into(),
        "--data".into(),
        data_dir,
        "--models".into(),
        plan.models.join(","),
        "--out".into(),
        out.display().to_string(),
        "--states".into(),
        "/cache/states".into(),
        "--quiet".into(),
    ];
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([
                (FINGERPRINT_ANNOTATION.to_string(), plan.fingerprint.clone()),
                (MEMBERS_ANNOTATION.to_string(), plan.members.join(",")),
            ])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(training.backoff_limit),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "train".into(),
                        image: Some(
                            policy
                                .spec
                                .serving
                                .image
                                .clone()
                                .unwrap_or_else(|| image.to_string()),
                        ),
                        args: Some(args),
                        resources: training.resources.clone(),
                        volume_mounts: Some(mounts),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Where a training Job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded { finished: Option<String> },
    Failed { message: String },
}

/// Reads a Job's outcome from its conditions (`Complete` / `Failed`).
pub fn job_state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref());
    let find =
        |t: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"));
    if find("Complete").is_some() {
        let finished = status
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0.to_string());
        return JobState::Succeeded { finished };
    }
    if let Some(c) = find("Failed") {
        return JobState::Failed {
            message: format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ),
        };
    }
    JobState::Running
}

/// The artifact a finished Job wrote.
pub fn artifact_of(job: &Job, plan_version: &str, finished: Option<String>) -> ArtifactStatus {
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    ArtifactStatus {
        fingerprint: annotations
            .get(FINGERPRINT_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        version: plan_version.to_string(),
        members: annotations
            .get(MEMBERS_ANNOTATION)
            .map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        trained_at: finished,
        validation: BTreeMap::new(),
    }
}

/// Members whose model has no records in a ConfigMap dataset (by its `manifest.json`, which
/// lists each source's models). `None` when the dataset cannot be inspected.
pub fn members_without_data(pool: &LLMPool, dataset: &ConfigMap) -> Option<Vec<String>> {
    let manifest = dataset.data.as_ref()?.get("manifest.json")?;
    let manifest: serde_json::Value = serde_json::from_str(manifest).ok()?;
    let known: BTreeSet<&str> = manifest
        .as_object()?
        .values()
        .filter_map(|source| source.get("models")?.as_array())
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    Some(
        pool.spec
            .members
            .iter()
            .filter(|m| !known.contains(m.model_id.as_str()))
            .map(|m| m.name.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn membership_change_plans_one_version_per_fingerprint() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let p = plan(&policy, &pool, None).expect("untrained policy needs an artifact");
        assert_eq!(p.version, pool.spec.fingerprint());
        assert_eq!(p, plan(&policy, &pool, None).expect("same plan again"));
        let done = ArtifactStatus {
            fingerprint: p.fingerprint.clone(),
            version: p.version.clone(),
            ..Default::default()
        };
        assert_eq!(plan(&policy, &pool, Some(&done)), None);
        let grown = testdata::pool("pool", &["yi", "phi", "gemma"]);
        let p2 = plan(&policy, &grown, Some(&done)).expect("membership changed");
        assert_ne!(job_name("p", &p2.version), job_name("p", &p.version));
    }

    #[test]
    fn manual_trigger_waits_for_the_annotation() {
        let mut policy = testdata::policy("p", Some("yi"));
        if let Some(t) = policy.spec.training.as_mut() {
            t.trigger = TrainingTrigger::Manual;
        }
        let pool = testdata::pool("pool", &["yi"]);
        assert_eq!(plan(&policy, &pool, None), None);
        policy.metadata.annotations = Some(BTreeMap::from([(
            RETRAIN_ANNOTATION.to_string(),
            "1".to_string(),
        )]));
        assert!(plan(&policy, &pool, None).is_some());
    }

    #[test]
    fn job_writes_a_versioned_artifact_with_the_pool_models() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let p = plan(&policy, &pool, None).expect("plan");
        let training = policy.spec.training.clone().expect("training");
        let j = job(&policy, &training, &p, "ns", "img:1", &testdata::owner());
        let spec = j.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(2));
        let pod = spec.template.spec.expect("pod");
        let args = pod.containers[0].args.clone().unwrap_or_default();
        assert_eq!(args[0], "train");
        assert!(args.contains(&format!("/artifacts/routers/p/{}", p.version)));
        assert!(args.contains(&"Yi-model,Phi-model".to_string()));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn finds_members_lacking_dataset_records() {
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let cm = ConfigMap {
            data: Some(BTreeMap::from([(
                "manifest.json".to_string(),
                r#"{"GSM8K": {"models": ["Yi-model"]}}"#.to_string(),
            )])),
            ..Default::default()
        };
        assert_eq!(
            members_without_data(&pool, &cm),
            Some(vec!["phi".to_string()])
        );
    }
}
