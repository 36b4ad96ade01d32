//! Retraining: which artifact a policy should have, the training Job that produces it (one per
//! artifact version, named deterministically so requeues never duplicate it), and its outcome.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use lookahead_api::policy::{
    ArtifactStatus, LabellingSpec, RouterMethod, TrainingSpec, TrainingTrigger,
};
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::labels::{
    self, FINGERPRINT_ANNOTATION, MEMBERS_ANNOTATION, RETRAIN_ANNOTATION, VERSION_LABEL,
};
use crate::policy::router::{artifact_dir, router_name, ARTIFACTS_MOUNT, CONFIG_KEY};

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
    /// Members the Job labels before training (`lookahead label`); empty: no labelling step.
    pub label: Vec<String>,
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
        label: Vec::new(),
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

    let mut init_containers = Vec::new();
    let data_dir = match (&training.labelling, plan.label.is_empty()) {
        (Some(labelling), false) => {
            let (container, extra) = label_container(
                policy_name,
                labelling,
                plan,
                &data_dir,
                image_of(policy, image),
                &mounts,
            );
            volumes.extend(extra);
            init_containers.push(container);
            LABELLED_DIR.to_string()
        }
        _ => data_dir,
    };
    let mut args = vec![
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
        // The validation scores come back through the termination message (see
        // `validation_scores`).
        "--summary-file".into(),
        "/dev/termination-log".into(),
    ];
    if let Some(n) = training.max_examples {
        args.extend(["--max-train".into(), n.to_string()]);
    }
    if let Some(n) = training.epochs {
        args.extend(["--epochs".into(), n.to_string()]);
    }
    let mut containers = vec![Container {
        name: TRAIN_CONTAINER.into(),
        image: Some(image_of(policy, image)),
        args: Some(args),
        resources: training.resources.clone(),
        volume_mounts: Some(mounts),
        ..Default::default()
    }];
    crate::hardening::harden(&mut containers, &mut volumes);
    crate::hardening::harden(&mut init_containers, &mut volumes);
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
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers,
                    security_context: Some(crate::hardening::pod_security()),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Where the labelling step writes the merged dataset the train container reads.
const LABELLED_DIR: &str = "/cache/labelled";
/// Name of the labelling init container; its termination message is the run's JSON summary.
pub const LABEL_CONTAINER: &str = "label";
/// The training Job's main container.
pub const TRAIN_CONTAINER: &str = "train";

fn image_of(policy: &RoutingPolicy, image: &str) -> String {
    policy
        .spec
        .serving
        .image
        .clone()
        .unwrap_or_else(|| image.to_string())
}

/// The `lookahead label` init container: asks `plan.label` members (through the router's pool
/// config, mounted from its ConfigMap) the dataset's prompts, grades the answers and writes the
/// merged dataset to the cache volume; its summary goes to the termination message.
fn label_container(
    policy_name: &str,
    labelling: &LabellingSpec,
    plan: &Plan,
    data_dir: &str,
    image: String,
    mounts: &[VolumeMount],
) -> (Container, Vec<Volume>) {
    let mut volumes = vec![Volume {
        name: "router-config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: router_name(policy_name),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = mounts.to_vec();
    mounts.push(VolumeMount {
        name: "router-config".into(),
        mount_path: "/etc/lookahead".into(),
        read_only: Some(true),
        ..Default::default()
    });
    let mut args = vec![
        "label".to_string(),
        "--pool".into(),
        format!("/etc/lookahead/{CONFIG_KEY}"),
        "--data".into(),
        data_dir.to_string(),
        "--members".into(),
        plan.label.join(","),
        "--out".into(),
        LABELLED_DIR.into(),
        "--json".into(),
        "--summary-file".into(),
        "/dev/termination-log".into(),
    ];
    if let Some(limit) = labelling.limit {
        args.extend(["--limit".into(), limit.to_string()]);
    }
    if let Some(c) = labelling.concurrency {
        args.extend(["--concurrency".into(), c.to_string()]);
    }
    if let Some(graders) = &labelling.graders {
        volumes.push(Volume {
            name: "graders".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: graders.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "graders".into(),
            mount_path: "/etc/lookahead-graders".into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.extend([
            "--graders".into(),
            "/etc/lookahead-graders/graders.yaml".into(),
        ]);
    }
    let container = Container {
        name: LABEL_CONTAINER.into(),
        image: Some(image),
        args: Some(args),
        volume_mounts: Some(mounts),
        termination_message_path: Some("/dev/termination-log".into()),
        ..Default::default()
    };
    (container, volumes)
}

/// The JSON summary a finished Job's container `name` (an init container when `init`) left in
/// its termination message (`lookahead label|train --summary-file /dev/termination-log`), from
/// the first of the Job's pods that has one.
fn container_summary(pods: &[Pod], name: &str, init: bool) -> Option<serde_json::Value> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let statuses = if init {
            status.init_container_statuses.as_ref()?
        } else {
            status.container_statuses.as_ref()?
        };
        let container = statuses.iter().find(|c| c.name == name)?;
        let message = container
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .as_ref()?;
        serde_json::from_str(message).ok()
    })
}

/// Prompts labelled by a finished Job, from its `label` init container's summary.
pub fn labelled_prompts(pods: &[Pod]) -> Option<i64> {
    container_summary(pods, LABEL_CONTAINER, true)?
        .get("promptsLabelled")?
        .as_i64()
}

/// Validation scores from the training container's summary: router, best single model and
/// oracle on the validation split, and its size. Empty when the pods are gone or the message is
/// not that JSON.
pub fn validation_scores(pods: &[Pod]) -> BTreeMap<String, f64> {
    let Some(summary) = container_summary(pods, TRAIN_CONTAINER, false) else {
        return BTreeMap::new();
    };
    ["router", "bestSingle", "oracle", "examples"]
        .iter()
        .filter_map(|k| Some((k.to_string(), summary.get(*k)?.as_f64()?)))
        .collect()
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
pub fn artifact_of(
    job: &Job,
    plan_version: &str,
    finished: Option<String>,
    labelled_prompts: Option<i64>,
    validation: BTreeMap<String, f64>,
) -> ArtifactStatus {
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
        labelled_prompts,
        validation,
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
        assert!(!args.contains(&"--max-train".to_string()));
        let joined = args.join(" ");
        assert!(
            joined.contains("--summary-file /dev/termination-log"),
            "{joined}"
        );
    }

    #[test]
    fn a_training_budget_bounds_records_and_epochs() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let p = plan(&policy, &pool, None).expect("plan");
        let mut training = policy.spec.training.clone().expect("training");
        training.max_examples = Some(500);
        training.epochs = Some(1);
        let j = job(&policy, &training, &p, "ns", "img:1", &testdata::owner());
        let pod = j.spec.and_then(|s| s.template.spec).expect("pod");
        let args = pod.containers[0].args.clone().unwrap_or_default().join(" ");
        assert!(args.contains("--max-train 500"), "{args}");
        assert!(args.contains("--epochs 1"), "{args}");
    }

    #[test]
    fn labelling_runs_lookahead_label_before_training_on_its_output() {
        let mut policy = testdata::policy("p", Some("yi"));
        let training = policy.spec.training.as_mut().expect("training");
        training.labelling = Some(LabellingSpec {
            limit: Some(50),
            concurrency: Some(8),
            graders: Some(lookahead_api::policy::ConfigMapRef {
                name: "graders".into(),
            }),
        });
        let pool = testdata::pool("pool", &["yi", "gemma"]);
        let mut p = plan(&policy, &pool, None).expect("plan");
        p.label = vec!["gemma".into()];
        let training = policy.spec.training.clone().expect("training");
        let owner = testdata::owner();
        let job = job(&policy, &training, &p, "ns", "img", &owner);
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
        let init = pod
            .init_containers
            .clone()
            .expect("a labelling init container");
        assert_eq!(init.len(), 1);
        let args = init[0].args.clone().unwrap_or_default().join(" ");
        for expected in [
            "label --pool /etc/lookahead/config.yaml",
            "--members gemma",
            "--out /cache/labelled",
            "--summary-file /dev/termination-log",
            "--limit 50",
            "--concurrency 8",
            "--graders /etc/lookahead-graders/graders.yaml",
        ] {
            assert!(args.contains(expected), "{expected:?} missing in {args}");
        }
        let train = pod.containers[0].args.clone().unwrap_or_default().join(" ");
        assert!(
            train.contains("--data /cache/labelled"),
            "trains on the labelled data: {train}"
        );
        let volumes: Vec<String> = pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        for v in ["cache", "router-config", "graders"] {
            assert!(
                volumes.contains(&v.to_string()),
                "volume {v} in {volumes:?}"
            );
        }
        // Without members to label there is no init container.
        p.label.clear();
        let job = super::job(&policy, &training, &p, "ns", "img", &owner);
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
        assert!(pod.init_containers.is_none());
    }

    #[test]
    fn labelled_prompts_come_from_the_label_containers_termination_message() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
        };
        let pod = |message: &str| Pod {
            status: Some(PodStatus {
                init_container_statuses: Some(vec![ContainerStatus {
                    name: LABEL_CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let summary = r#"{"promptsLabelled":412,"asked":900,"graded":880,"failed":20}"#;
        assert_eq!(labelled_prompts(&[pod(summary)]), Some(412));
        assert_eq!(labelled_prompts(&[pod("garbage")]), None);
        assert_eq!(labelled_prompts(&[]), None);
    }

    #[test]
    fn validation_scores_come_from_the_train_containers_termination_message() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
        };
        let pod = |container: &str, message: &str| Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: container.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let summary = r#"{"examples":540,"router":61.5,"bestSingle":58.25,"oracle":70.0}"#;
        let scores = validation_scores(&[pod(TRAIN_CONTAINER, summary)]);
        assert_eq!(scores.get("router"), Some(&61.5));
        assert_eq!(scores.get("bestSingle"), Some(&58.25));
        assert_eq!(scores.get("oracle"), Some(&70.0));
        assert_eq!(scores.get("examples"), Some(&540.0));
        assert!(validation_scores(&[pod(TRAIN_CONTAINER, "not json")]).is_empty());
        assert!(validation_scores(&[pod("other", summary)]).is_empty());
        assert!(validation_scores(&[]).is_empty());
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
