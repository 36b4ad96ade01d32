//! The training Job: `lookahead train` in the operator's image (after a `lookahead label` init
//! container when members need labelling), one per artifact version, named deterministically so
//! requeues never duplicate it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use lookahead_api::policy::{LabellingSpec, TrainingSpec};
use lookahead_api::RoutingPolicy;

use super::plan::{job_name, Plan};
use crate::labels::{
    self, CPU_FALLBACK_ANNOTATION, FINGERPRINT_ANNOTATION, MEMBERS_ANNOTATION, VERSION_LABEL,
};
use crate::objects::{
    claim_volume, config_map_volume, gpu_limited, gpu_tolerations, owned_meta, wants_gpu,
    without_gpu,
};
use crate::policy::router::{artifact_dir, router_name, ARTIFACTS_MOUNT, CONFIG_KEY};

/// The training Job: `lookahead train` in the operator's image, reading the dataset and writing
/// the artifact to `<artifacts>/<version>` on the policy's PVC; on the GPU (`--device cuda`)
/// when `resources` asks for one, stopped by Kubernetes after `activeDeadline`.
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

    let (mut volumes, mounts, data_dir) = volumes(training);
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
    let gpu = wants_gpu(training.resources.as_ref());
    let mut containers = vec![Container {
        name: TRAIN_CONTAINER.into(),
        image: Some(image_of(policy, image)),
        args: Some(train_args(policy, training, plan, data_dir, gpu)),
        resources: training.resources.clone().map(gpu_limited),
        volume_mounts: Some(mounts),
        // A failed run writes no summary: its last log lines (the error) become the
        // termination message, which `outcome::failure_detail` puts in `TrainingFailed`.
        termination_message_policy: Some(LOGS_ON_ERROR.into()),
        ..Default::default()
    }];
    crate::hardening::harden(&mut containers, &mut volumes);
    crate::hardening::harden(&mut init_containers, &mut volumes);
    let mut pod = PodSpec {
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        containers,
        volumes: Some(volumes),
        ..Default::default()
    };
    place(&mut pod, training, gpu);
    let mut metadata = owned_meta(&name, ns, labels.clone(), owner);
    metadata.annotations = Some(BTreeMap::from([
        (FINGERPRINT_ANNOTATION.to_string(), plan.fingerprint.clone()),
        (MEMBERS_ANNOTATION.to_string(), plan.members.join(",")),
    ]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(training.backoff_limit),
            // Validated before any Job is made (`validate::policy`).
            active_deadline_seconds: training.active_deadline_seconds().ok(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The training pod's run settings: where it may be scheduled (the GPU taint tolerated when it
/// asks for a GPU), no restarts (the Job retries), non-root, and no API token.
fn place(pod: &mut PodSpec, training: &TrainingSpec, gpu: bool) {
    pod.restart_policy = Some("Never".into());
    pod.security_context = Some(crate::hardening::pod_security());
    // Neither `lookahead label` nor `lookahead train` calls the Kubernetes API.
    pod.automount_service_account_token = Some(false);
    pod.node_selector =
        (!training.node_selector.is_empty()).then(|| training.node_selector.clone());
    let tolerations = gpu_tolerations(&training.tolerations, gpu);
    pod.tolerations = (!tolerations.is_empty()).then_some(tolerations);
}

/// The training pod's volumes and mounts (a cache, the dataset, the artifacts PVC) and where
/// the dataset is mounted.
fn volumes(training: &TrainingSpec) -> (Vec<Volume>, Vec<VolumeMount>, String) {
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
    let dataset = &training.dataset;
    let (dataset, data_dir) = match (&dataset.config_map, &dataset.pvc) {
        (Some(cm), _) => (
            Some(config_map_volume("dataset", &cm.name, "/dataset")),
            "/dataset".to_string(),
        ),
        (None, Some(pvc)) => (
            Some(claim_volume("dataset", &pvc.claim_name, "/dataset", true)),
            format!("/dataset/{}", pvc.path),
        ),
        (None, None) => (None, "/dataset".to_string()),
    };
    let artifacts = training
        .artifacts
        .as_ref()
        .map(|a| claim_volume("artifacts", &a.claim_name, ARTIFACTS_MOUNT, false));
    for (volume, mount) in dataset.into_iter().chain(artifacts) {
        volumes.push(volume);
        mounts.push(mount);
    }
    (volumes, mounts, data_dir)
}

/// Name of a Job's CPU stand-in (see [`cpu_fallback`]).
pub fn cpu_fallback_name(job: &str) -> String {
    labels::object_name(&format!("{job}-cpu"))
}

/// The CPU stand-in for a GPU training Job no node could take: the same Job (from [`job`]) under
/// its own name, without the GPU request and the `nodeSelector` (which points at GPU nodes when
/// a GPU is asked for), training with `--device cpu` in `cpu_image` (the operator's own, static
/// build: a CUDA build of `lookahead` does not start where the CUDA libraries are missing, even
/// for `--device cpu`); `why` goes in an annotation.
pub fn cpu_fallback(mut job: Job, cpu_image: &str, why: &str) -> Job {
    let name = cpu_fallback_name(job.metadata.name.as_deref().unwrap_or_default());
    let rename = |labels: &mut Option<BTreeMap<String, String>>| {
        if let Some(instance) = labels
            .as_mut()
            .and_then(|l| l.get_mut(labels::INSTANCE_LABEL))
        {
            instance.clone_from(&name);
        }
    };
    rename(&mut job.metadata.labels);
    job.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CPU_FALLBACK_ANNOTATION.into(), why.into());
    let template = job.spec.as_mut().map(|s| &mut s.template);
    if let Some(t) = template {
        if let Some(m) = t.metadata.as_mut() {
            rename(&mut m.labels);
        }
        if let Some(pod) = t.spec.as_mut() {
            on_cpu(pod, cpu_image);
        }
    }
    job.metadata.name = Some(name);
    job
}

/// A training pod moved to the CPU: see [`cpu_fallback`].
fn on_cpu(pod: &mut PodSpec, cpu_image: &str) {
    pod.node_selector = None;
    let init = pod.init_containers.iter_mut().flatten();
    for c in init.chain(pod.containers.iter_mut()) {
        c.image = Some(cpu_image.to_string());
        if c.name == TRAIN_CONTAINER {
            c.resources = c.resources.take().map(without_gpu);
            set_device(c.args.get_or_insert_with(Vec::new), "cpu");
        }
    }
}

/// Sets `--device <device>` in `lookahead train` arguments.
fn set_device(args: &mut Vec<String>, device: &str) {
    match args.iter().position(|a| a == "--device") {
        Some(i) if i + 1 < args.len() => args[i + 1] = device.into(),
        _ => args.extend(["--device".into(), device.into()]),
    }
}

/// `lookahead train` arguments: method, data, the pool's models, where the artifact goes, the
/// device (`cuda` when the pod has a GPU).
fn train_args(
    policy: &RoutingPolicy,
    training: &TrainingSpec,
    plan: &Plan,
    data_dir: String,
    gpu: bool,
) -> Vec<String> {
    let out = artifact_dir(policy, &plan.version).unwrap_or_default();
    let mut args = vec![
        "train".to_string(),
        "--method".into(),
        policy.spec.router.method.train_method().into(),
        "--device".into(),
        if gpu { "cuda" } else { "cpu" }.into(),
        "--data".into(),
        data_dir,
        "--models".into(),
        plan.models.join(","),
        "--out".into(),
        out.display().to_string(),
        "--states".into(),
        "/cache/states".into(),
        "--quiet".into(),
        // The acceptance gate's threshold (see `outcome::acceptance`).
        "--min-gain".into(),
        training.acceptance.min_gain.to_string(),
        // The validation scores and acceptance verdict come back through the termination
        // message (see `outcome::validation_scores`, `outcome::acceptance`).
        "--summary-file".into(),
        "/dev/termination-log".into(),
    ];
    if let Some(k) = training.acceptance.folds {
        args.extend(["--acceptance-folds".into(), k.to_string()]);
    }
    if let Some(n) = training.max_examples {
        args.extend(["--max-train".into(), n.to_string()]);
    }
    if let Some(n) = training.epochs {
        args.extend(["--epochs".into(), n.to_string()]);
    }
    if let Ok(deadline) = training.active_deadline_seconds() {
        args.extend([
            "--time-budget".into(),
            format!("{}s", time_budget(deadline)),
        ]);
    }
    args
}

/// The training's time budget in seconds: three quarters of the Job's `activeDeadlineSeconds`
/// (at which Kubernetes kills the pod), so a run that would overrun stops before an epoch that
/// would not fit and ends with its best epoch's artifact instead of `TrainingFailed`; the last
/// quarter is for what follows the epochs (held-out scoring, the gate, writing the artifact)
/// and for a labelling init container, which the Job's deadline counts too.
fn time_budget(active_deadline_seconds: i64) -> i64 {
    (active_deadline_seconds * 3 / 4).max(1)
}

/// Where the labelling step writes the merged dataset the train container reads.
const LABELLED_DIR: &str = "/cache/labelled";
/// Name of the labelling init container; its termination message is the run's JSON summary.
pub const LABEL_CONTAINER: &str = "label";
/// The training Job's main container.
pub const TRAIN_CONTAINER: &str = "train";
/// Termination message policy: the file, else (after a failure) the log's tail.
const LOGS_ON_ERROR: &str = "FallbackToLogsOnError";

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
    let (config, config_mount) =
        config_map_volume("router-config", &router_name(policy_name), "/etc/lookahead");
    let mut volumes = vec![config];
    let mut mounts = mounts.to_vec();
    mounts.push(config_mount);
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
        let (volume, mount) = config_map_volume("graders", &graders.name, "/etc/lookahead-graders");
        volumes.push(volume);
        mounts.push(mount);
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
        termination_message_policy: Some(LOGS_ON_ERROR.into()),
        ..Default::default()
    };
    (container, volumes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::training::plan::plan;
    use crate::testdata;
    use lookahead_api::policy::RouterMethod;

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

    /// `method: ensemble` trains `lookahead train --method ensemble` (n-gram + lite members, the
    /// CLI's default) on the CPU, like lookahead-lite.
    #[test]
    fn an_ensemble_policy_trains_the_ensemble_on_the_cpu() {
        let mut policy = testdata::policy("p", Some("yi"));
        policy.spec.router.method = RouterMethod::Ensemble;
        let training = policy.spec.training.clone().expect("training");
        let (_, pod, args) = rendered(&policy, &training);
        assert!(args.contains("--method ensemble"), "{args}");
        assert!(!args.contains("--device cuda"), "{args}");
        assert!(pod.tolerations.is_none(), "{:?}", pod.tolerations);
    }

    /// The training pod of `training` for a two-member pool, and the train container's args.
    fn rendered(policy: &RoutingPolicy, training: &TrainingSpec) -> (Job, PodSpec, String) {
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let p = plan(policy, &pool, None).expect("plan");
        let j = job(policy, training, &p, "ns", "img:1", &testdata::owner());
        let pod = j.spec.clone().and_then(|s| s.template.spec).expect("pod");
        let args = pod.containers[0].args.clone().unwrap_or_default().join(" ");
        (j, pod, args)
    }

    fn gpu_training() -> (RoutingPolicy, TrainingSpec) {
        let mut policy = testdata::policy("p", Some("yi"));
        policy.spec.router.method = RouterMethod::LookaheadMlm;
        let mut training = policy.spec.training.clone().expect("training");
        training.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([
                (GPU.to_string(), Quantity("1".into())),
                ("memory".to_string(), Quantity("16Gi".into())),
            ])),
            ..Default::default()
        });
        training.node_selector = BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())]);
        training.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("training".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }];
        training.active_deadline = "90m".into();
        (policy, training)
    }

    use crate::objects::GPU_RESOURCE as GPU;
    use k8s_openapi::api::core::v1::Toleration;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn a_gpu_request_trains_with_device_cuda_on_gpu_nodes_within_the_deadline() {
        let (policy, training) = gpu_training();
        let (j, pod, args) = rendered(&policy, &training);
        assert!(args.contains("--method mlm --device cuda"), "{args}");
        let limits = pod.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        assert_eq!(
            limits.get(GPU),
            Some(&Quantity("1".into())),
            "the GPU request is limited too"
        );
        assert_eq!(
            pod.node_selector
                .as_ref()
                .and_then(|n| n.get("nvidia.com/gpu.present")),
            Some(&"true".to_string())
        );
        let tolerated: Vec<_> = pod
            .tolerations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.key)
            .collect();
        assert_eq!(
            tolerated,
            ["dedicated", GPU],
            "the user's, plus the GPU taint"
        );
        let spec = j.spec.expect("spec");
        assert_eq!(spec.active_deadline_seconds, Some(5400));
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn without_a_gpu_training_runs_on_the_cpu_with_the_default_deadline() {
        let policy = testdata::policy("p", Some("yi"));
        let training = policy.spec.training.clone().expect("training");
        let (j, pod, args) = rendered(&policy, &training);
        assert!(args.contains("--device cpu"), "{args}");
        assert_eq!(j.spec.and_then(|s| s.active_deadline_seconds), Some(7200));
        assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn the_cpu_fallback_drops_the_gpu_and_its_node_selector_under_its_own_name() {
        let (policy, training) = gpu_training();
        let (gpu_job, _, _) = rendered(&policy, &training);
        let gpu_name = gpu_job.metadata.name.clone().unwrap_or_default();
        let cpu = cpu_fallback(gpu_job, "lookahead:static", "no GPU node");
        let name = cpu.metadata.name.clone().unwrap_or_default();
        assert_eq!(name, format!("{gpu_name}-cpu"));
        assert_eq!(
            cpu.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CPU_FALLBACK_ANNOTATION)),
            Some(&"no GPU node".to_string())
        );
        let spec = cpu.spec.expect("spec");
        let pod_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(pod_labels.get(labels::INSTANCE_LABEL), Some(&name));
        assert_eq!(
            pod_labels.get(VERSION_LABEL).map(String::len),
            Some(16),
            "same version"
        );
        assert_eq!(spec.active_deadline_seconds, Some(5400));
        let pod = spec.template.spec.expect("pod");
        assert!(pod.node_selector.is_none());
        let resources = pod.containers[0].resources.clone().expect("resources");
        for m in [
            resources.requests.unwrap_or_default(),
            resources.limits.unwrap_or_default(),
        ] {
            assert!(!m.contains_key(GPU), "{m:?}");
        }
        let args = pod.containers[0].args.clone().unwrap_or_default();
        assert_eq!(pod.containers[0].image.as_deref(), Some("lookahead:static"));
        assert_eq!(args.iter().filter(|a| *a == "--device").count(), 1);
        assert!(args.join(" ").contains("--device cpu"), "{args:?}");
        assert!(labels::object_name(&"x".repeat(70)).len() <= 63);
        assert!(cpu_fallback_name(&"x".repeat(63)).len() <= 63);
    }

    #[test]
    fn a_training_budget_bounds_records_and_epochs() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let p = plan(&policy, &pool, None).expect("plan");
        let mut training = policy.spec.training.clone().expect("training");
        training.max_examples = Some(500);
        training.epochs = Some(1);
        training.acceptance.min_gain = 1.5;
        let args_of = |training: &lookahead_api::policy::TrainingSpec| {
            let j = job(&policy, training, &p, "ns", "img:1", &testdata::owner());
            let pod = j.spec.and_then(|s| s.template.spec).expect("pod");
            pod.containers[0].args.clone().unwrap_or_default().join(" ")
        };
        let args = args_of(&training);
        assert!(args.contains("--max-train 500"), "{args}");
        assert!(args.contains("--epochs 1"), "{args}");
        // Three quarters of the default activeDeadline (2h): the run keeps its best epoch
        // rather than being killed.
        assert!(args.contains("--time-budget 5400s"), "{args}");
        assert!(args.contains("--min-gain 1.5"), "{args}");
        assert!(
            !args.contains("--acceptance-folds"),
            "the method's default: {args}"
        );
        training.acceptance.folds = Some(3);
        let args = args_of(&training);
        assert!(args.contains("--acceptance-folds 3"), "{args}");
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
}
