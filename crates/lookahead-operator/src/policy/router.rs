//! The router a policy runs: its config (a ConfigMap), a Deployment whose pod holds the `router`
//! container and the `scorer` sidecar, and a Service. Pure functions of the policy and pool.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    SecretVolumeSource, Service, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lookahead_api::config::{AuthConfig, MemberConfig, PolicyConfig, RouterConfig};
use lookahead_api::policy::{ArtifactStatus, RouterMethod, ScoringPrecision};
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::error::{Error, Result};
use crate::labels::{self, CONFIG_HASH_ANNOTATION};
use crate::objects::{
    claim_volume, config_map_volume, gpu_limited, gpu_tolerations, http_service, owned_meta,
    wants_gpu,
};
use crate::pool::children::base_url;
use crate::telemetry::{PodIdentity, Telemetry};

/// The router pod's termination grace: the router's drain delay (5 s: it keeps accepting, unready,
/// while the endpoint change spreads) plus its in-flight grace (30 s), with room to spare, so the
/// kubelet does not kill a draining router.
const TERMINATION_GRACE_SECONDS: i64 = 45;

pub const ROUTER_PORT: i32 = 8080;
/// The router's container (the one that reads member credentials).
pub const ROUTER_CONTAINER: &str = "router";
pub const SCORER_ADDR: &str = "127.0.0.1:50051";
pub const CONFIG_DIR: &str = "/etc/lookahead";
pub const CONFIG_KEY: &str = "config.yaml";
/// Where the artifacts PVC is mounted in router and training pods.
pub const ARTIFACTS_MOUNT: &str = "/artifacts";
/// Where `serving.auth.secretRef` (the API keys) is mounted in the router container (only).
pub const KEYS_MOUNT: &str = "/var/run/lookahead/keys";

/// Name of the router's ConfigMap, Deployment and Service.
pub fn router_name(policy: &str) -> String {
    labels::object_name(&format!("{policy}-router"))
}

/// In-cluster URL of the router's OpenAI-compatible API.
pub fn router_url(policy: &str, ns: &str) -> String {
    format!("http://{}.{ns}.svc:{ROUTER_PORT}/v1", router_name(policy))
}

/// Directory of artifact `version` inside router and training pods.
pub fn artifact_dir(policy: &RoutingPolicy, version: &str) -> Option<PathBuf> {
    let a = policy.spec.training.as_ref()?.artifacts.as_ref()?;
    Some(PathBuf::from(ARTIFACTS_MOUNT).join(&a.path).join(version))
}

/// How the router scores while no trained artifact exists yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Scoring {
    /// A trained artifact, scored by the sidecar (boxed: the status is far larger than the
    /// other variant).
    Artifact(Box<ArtifactStatus>),
    /// No artifact yet: fail open to `defaultModel` (`fixed`) or spread requests (`random`).
    Untrained(RouterMethod),
}

/// What a policy's router serves right now.
pub fn scoring(policy: &RoutingPolicy, artifact: Option<&ArtifactStatus>) -> Scoring {
    let method = policy.spec.router.method;
    if !method.needs_training() {
        return Scoring::Untrained(method);
    }
    match artifact {
        Some(a) => Scoring::Artifact(Box::new(a.clone())),
        None if policy.spec.objective.default_model.is_some() => {
            Scoring::Untrained(RouterMethod::Fixed)
        }
        None => Scoring::Untrained(RouterMethod::Random),
    }
}

/// Renders the router config for the pool's current members. Removed members drop out of it;
/// members the artifact does not know are unscored, so the router ranks them after scored ones
/// and sends them requests only when a client names them (or as a last fallback).
pub fn router_config(
    policy: &RoutingPolicy,
    pool: &LLMPool,
    ns: &str,
    scoring: &Scoring,
) -> Result<RouterConfig> {
    let invalid = |message: String| Error::Render {
        what: "router config",
        message,
    };
    let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
    let members = pool
        .spec
        .members
        .iter()
        .map(|m| {
            let base_url = base_url(pool_name, ns, m)
                .ok_or_else(|| invalid(format!("member {} has no endpoint", m.name)))?;
            Ok(MemberConfig {
                name: m.name.clone(),
                model_id: m.model_id.clone(),
                base_url,
                price: m.price.clone(),
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                supports: m.supports.clone(),
                api_key_file: m
                    .api_key_secret_ref
                    .as_ref()
                    .map(|_| crate::credentials::key_file(&m.name)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (method, artifact, scorer) = match scoring {
        Scoring::Artifact(a) => (
            policy.spec.router.method,
            artifact_dir(policy, &a.version),
            Some(SCORER_ADDR.to_string()),
        ),
        Scoring::Untrained(m) => (*m, None, None),
    };
    let serving = &policy.spec.serving;
    let config = RouterConfig {
        listen: format!("0.0.0.0:{ROUTER_PORT}"),
        members,
        policy: PolicyConfig {
            method,
            artifact,
            scorer,
            cost_weight: policy.spec.objective.cost_weight,
            default_model: policy.spec.objective.default_model.clone(),
            alias: "auto".into(),
            request_timeout: lookahead_api::config::parse_duration(&serving.timeouts.request)
                .map_err(invalid)?,
            first_token_timeout: lookahead_api::config::parse_duration(
                &serving.timeouts.first_token,
            )
            .map_err(invalid)?,
            retries: u32::try_from(serving.retries).unwrap_or(0),
            api_keys_file: None,
            score_timeout: std::time::Duration::from_millis(250),
            max_body_bytes: 4 << 20,
            cold_start_timeout: lookahead_api::config::parse_duration(&serving.timeouts.cold_start)
                .map_err(invalid)?,
            auth: auth_config(policy),
            profiles: policy.spec.objective.profiles.clone(),
            max_cost_weight: policy.spec.objective.max_cost_weight,
        },
        pool: Some(pool_name.to_string()),
        tls: lookahead_api::config::MemberTls {
            ca_bundle_file: crate::credentials::ca_bundle(pool)
                .map(|_| crate::credentials::ca_bundle_file()),
        },
    };
    config.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(config)
}

/// The router's tenants: the mounted keys Secret (when there is one) and the limits.
fn auth_config(policy: &RoutingPolicy) -> Option<AuthConfig> {
    let auth = policy.spec.serving.auth.as_ref()?;
    Some(AuthConfig {
        keys_dir: auth.secret_ref.as_ref().map(|_| PathBuf::from(KEYS_MOUNT)),
        limits: auth.limits.clone(),
        keys: auth.keys.clone(),
    })
}

/// The keys Secret as a read-only volume for the router container (the scorer never sees it).
/// Mounted whole (no `subPath`), so the kubelet updates it in place and the router's key reload
/// picks changes up without a rollout; readable by the pod's group only.
fn keys_volume(policy: &RoutingPolicy) -> Option<(Volume, VolumeMount)> {
    let secret = policy.spec.serving.auth.as_ref()?.secret_ref.as_ref()?;
    Some((
        Volume {
            name: "api-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "api-keys".into(),
            mount_path: KEYS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ))
}

/// The ConfigMap holding the rendered config, and the config's hash.
pub fn config_map(
    policy: &str,
    ns: &str,
    config: &RouterConfig,
    owner: &OwnerReference,
) -> Result<(ConfigMap, String)> {
    let yaml = serde_yaml::to_string(config).map_err(|e| Error::Render {
        what: "router config",
        message: e.to_string(),
    })?;
    let hash = labels::short_hash(yaml.as_bytes());
    let name = router_name(policy);
    let cm = ConfigMap {
        metadata: owned_meta(
            &name,
            ns,
            labels::policy_labels(policy, "router", &name),
            owner,
        ),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
        ..Default::default()
    };
    Ok((cm, hash))
}

/// The router Deployment: the `router` container, and the `scorer` sidecar while an artifact
/// is served; both with `telemetry`'s environment (span export is the router's alone).
pub fn deployment(
    policy: &RoutingPolicy,
    ns: &str,
    image: &str,
    telemetry: &Telemetry,
    scoring: &Scoring,
    config_hash: &str,
    owner: &OwnerReference,
) -> Deployment {
    let policy_name = policy.metadata.name.as_deref().unwrap_or_default();
    let name = router_name(policy_name);
    let serving = &policy.spec.serving;
    let image = serving.image.clone().unwrap_or_else(|| image.to_string());
    let labels = labels::policy_labels(policy_name, "router", &name);
    let mut pod_labels = labels.clone();
    pod_labels.extend(labels::router_selector(policy_name));

    let (mut volumes, mounts) = volumes(policy, &name);
    let router_env = telemetry.tracing_env(&PodIdentity {
        service: "lookahead-router",
        namespace: ns,
        deployment: &name,
    });
    let mut router_mounts = mounts.clone();
    if let Some((volume, mount)) = keys_volume(policy) {
        volumes.push(volume);
        router_mounts.push(mount);
    }
    let mut containers = vec![router_container(&image, &router_mounts, router_env)];
    if let Scoring::Artifact(a) = scoring {
        let mut scorer = scorer_container(policy, a, image, mounts);
        scorer.env = non_empty(telemetry.log_env());
        containers.push(scorer);
    }
    crate::hardening::harden(&mut containers, &mut volumes);
    let tolerations = tolerations(policy);

    Deployment {
        metadata: owned_meta(&name, ns, labels, owner),
        spec: Some(DeploymentSpec {
            // With an autoscaler the replica count is its to set (not applied: no fight).
            replicas: serving.autoscaling.is_none().then_some(serving.replicas),
            selector: LabelSelector {
                match_labels: Some(labels::router_selector(policy_name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations(config_hash)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    volumes: Some(volumes),
                    security_context: Some(crate::hardening::pod_security()),
                    // The router and scorer never call the Kubernetes API.
                    automount_service_account_token: Some(false),
                    node_selector: (!serving.node_selector.is_empty())
                        .then(|| serving.node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then_some(tolerations),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The router pod's volumes and mounts: the config, and the artifacts PVC read-only.
/// The router pod's annotations: the config hash (a changed config rolls the pods) and the
/// conventional `prometheus.io/*` scrape hints for Prometheus setups without a PodMonitor.
fn pod_annotations(config_hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), ROUTER_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ])
}

fn volumes(policy: &RoutingPolicy, name: &str) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (config, config_mount) = config_map_volume("config", name, CONFIG_DIR);
    let mut volumes = vec![config];
    let mut mounts = vec![config_mount];
    if let Some(a) = policy
        .spec
        .training
        .as_ref()
        .and_then(|t| t.artifacts.as_ref())
    {
        let (volume, mount) = claim_volume("artifacts", &a.claim_name, ARTIFACTS_MOUNT, true);
        volumes.push(volume);
        mounts.push(mount);
    }
    (volumes, mounts)
}

/// `None` for an empty environment (the object stays as it was without telemetry settings).
fn non_empty(env: Vec<EnvVar>) -> Option<Vec<EnvVar>> {
    (!env.is_empty()).then_some(env)
}

fn router_container(image: &str, mounts: &[VolumeMount], env: Vec<EnvVar>) -> Container {
    Container {
        name: ROUTER_CONTAINER.into(),
        env: non_empty(env),
        image: Some(image.to_string()),
        args: Some(vec![
            "router".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: ROUTER_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        volume_mounts: Some(mounts.to_vec()),
        ..Default::default()
    }
}

/// The scorer sidecar serving artifact `a` (on the GPU when the policy asks for one).
fn scorer_container(
    policy: &RoutingPolicy,
    a: &ArtifactStatus,
    image: String,
    mounts: Vec<VolumeMount>,
) -> Container {
    let serving = &policy.spec.serving;
    let dir = artifact_dir(policy, &a.version).unwrap_or_default();
    let mut args = vec![
        "scorer".into(),
        "--artifact".into(),
        dir.display().to_string(),
        "--listen".into(),
        SCORER_ADDR.into(),
    ];
    if wants_gpu(serving.resources.as_ref()) {
        args.extend(["--device".into(), "cuda".into()]);
    }
    if serving.precision != ScoringPrecision::Auto {
        args.extend(["--precision".into(), serving.precision.as_arg().into()]);
    }
    Container {
        name: "scorer".into(),
        image: Some(image),
        args: Some(args),
        // A GPU request mirrored into the limits (extended resources must be limited).
        resources: serving.resources.clone().map(gpu_limited),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The policy's tolerations, plus the GPU taint's when it asks for a GPU.
fn tolerations(policy: &RoutingPolicy) -> Vec<Toleration> {
    let serving = &policy.spec.serving;
    gpu_tolerations(&serving.tolerations, wants_gpu(serving.resources.as_ref()))
}

/// The router Service.
pub fn service(policy: &str, ns: &str, owner: &OwnerReference) -> Service {
    let name = router_name(policy);
    let metadata = owned_meta(
        &name,
        ns,
        labels::policy_labels(policy, "router", &name),
        owner,
    );
    http_service(metadata, labels::router_selector(policy), ROUTER_PORT)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::objects::GPU_RESOURCE;
    use crate::testdata;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container<'a>(d: &'a Deployment, name: &str) -> Option<&'a Container> {
        d.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == name)
    }

    /// The router Deployment of `policy` with a trained artifact and the default telemetry.
    fn trained_deployment(policy: &RoutingPolicy) -> Deployment {
        deployment(
            policy,
            "ns",
            "img",
            &Telemetry::default(),
            &trained(),
            "h",
            &testdata::owner(),
        )
    }

    fn trained() -> Scoring {
        Scoring::Artifact(Box::new(ArtifactStatus {
            fingerprint: "f".into(),
            version: "v1".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn router_pods_carry_the_prometheus_scrape_annotations() {
        let policy = testdata::policy("p", Some("yi"));
        let d = trained_deployment(&policy);
        let annotations = d
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "8080");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "h");
    }

    /// The kubelet must not kill a router while it drains: its grace covers the router's drain
    /// delay and in-flight grace (`lookahead router --drain-delay 5s --grace 30s`).
    #[test]
    fn router_pods_get_the_time_to_drain() {
        let policy = testdata::policy("p", Some("yi"));
        let d = trained_deployment(&policy);
        let grace = d
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.termination_grace_period_seconds);
        assert!(grace.is_some_and(|g| g >= 5 + 30), "{grace:?}");
    }

    #[test]
    fn an_autoscaled_router_leaves_its_replicas_to_the_autoscaler() {
        let mut policy = testdata::policy("p", Some("yi"));
        let replicas = |p: &RoutingPolicy| trained_deployment(p).spec.and_then(|s| s.replicas);
        assert_eq!(replicas(&policy), Some(policy.spec.serving.replicas));
        policy.spec.serving.autoscaling = Some(lookahead_api::policy::RouterAutoscaling {
            max_replicas: 5,
            in_flight_per_replica: 64,
        });
        assert_eq!(replicas(&policy), None);
    }

    /// `auto` (the default) is the scorer's own default, so the sidecar gets no flag; `int8`
    /// and `f32` asked for are passed on.
    #[test]
    fn the_asked_precision_reaches_the_scorer_sidecar() {
        let mut policy = testdata::policy("p", Some("yi"));
        let scorer_args = |policy: &RoutingPolicy| {
            let d = trained_deployment(policy);
            container(&d, "scorer")
                .and_then(|c| c.args.clone())
                .unwrap_or_default()
        };
        let args = scorer_args(&policy);
        assert!(
            !args.iter().any(|a| a == "--precision"),
            "auto is the default: {args:?}"
        );
        for (precision, arg) in [
            (ScoringPrecision::Int8, "int8"),
            (ScoringPrecision::F32, "f32"),
        ] {
            policy.spec.serving.precision = precision;
            let args = scorer_args(&policy);
            assert!(
                args.windows(2).any(|w| w == ["--precision", arg]),
                "{args:?}"
            );
        }
    }

    #[test]
    fn gpu_request_schedules_the_scorer_on_gpu_nodes() {
        let mut policy = testdata::policy("p", Some("yi"));
        policy.spec.serving.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                GPU_RESOURCE.into(),
                Quantity("1".into()),
            )])),
            ..Default::default()
        });
        let d = trained_deployment(&policy);
        let scorer = container(&d, "scorer").expect("scorer sidecar");
        let args = scorer.args.clone().unwrap_or_default();
        assert!(args.windows(2).any(|w| w == ["--device", "cuda"]));
        assert!(args.contains(&"/artifacts/routers/p/v1".to_string()));
        let pod = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let tol = pod.tolerations.as_ref().expect("tolerations");
        assert_eq!(tol[0].key.as_deref(), Some(GPU_RESOURCE));
        assert!(container(&d, "router")
            .and_then(|c| c.resources.as_ref())
            .is_none());
    }

    #[test]
    fn cpu_scorer_without_gpu_toleration() {
        let policy = testdata::policy("p", Some("yi"));
        let d = trained_deployment(&policy);
        let scorer = container(&d, "scorer").expect("scorer sidecar");
        assert!(!scorer
            .args
            .clone()
            .unwrap_or_default()
            .contains(&"cuda".to_string()));
        let pod = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        assert!(pod.tolerations.is_none());
    }

    #[test]
    fn router_pods_run_non_root_with_a_read_only_root() {
        let policy = testdata::policy("p", Some("yi"));
        let d = trained_deployment(&policy);
        let pod = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let psc = pod.security_context.clone().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        for name in ["router", "scorer"] {
            let c = container(&d, name).expect("container");
            let sc = c
                .security_context
                .clone()
                .expect("container security context");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        }
    }

    /// A member's window and capabilities reach the router; a window the answer bound does not
    /// fit in is refused as the router config's own check says.
    #[test]
    fn member_limits_and_capabilities_are_rendered_and_checked() {
        use lookahead_api::pool::Capability;
        let policy = testdata::policy("p", Some("yi"));
        let mut pool = testdata::pool("pool", &["yi", "phi"]);
        let phi = &mut pool.spec.members[1];
        phi.context_window = Some(4096);
        phi.max_output_tokens = Some(1024);
        phi.supports = Some(vec![Capability::Chat, Capability::JsonSchema]);
        let c = router_config(&policy, &pool, "ns", &trained()).expect("config");
        assert_eq!(c.members[1].context_window, Some(4096));
        assert_eq!(c.members[1].max_output_tokens, Some(1024));
        assert!(!c.members[1].supports(Capability::Tools));
        assert!(
            c.members[0].supports(Capability::Tools),
            "undeclared: every chat capability"
        );
        pool.spec.members[1].max_output_tokens = Some(8192);
        let e = router_config(&policy, &pool, "ns", &trained()).expect_err("answer > window");
        assert!(e.to_string().contains("members.phi.maxOutputTokens"), "{e}");
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let c1 = router_config(&policy, &pool, "ns", &trained()).expect("config");
        let pool2 = testdata::pool("pool", &["yi", "phi", "gemma"]);
        let c2 = router_config(&policy, &pool2, "ns", &trained()).expect("config");
        let (_, h1) = config_map("p", "ns", &c1, &testdata::owner()).expect("cm");
        let (_, h2) = config_map("p", "ns", &c2, &testdata::owner()).expect("cm");
        assert_ne!(h1, h2);
        assert_eq!(c2.members.len(), 3);
        assert_eq!(c1.policy.scorer.as_deref(), Some(SCORER_ADDR));
    }

    #[test]
    fn untrained_policy_fails_open_to_the_default_model() {
        let policy = testdata::policy("p", Some("yi"));
        let s = scoring(&policy, None);
        assert_eq!(s, Scoring::Untrained(RouterMethod::Fixed));
        let pool = testdata::pool("pool", &["yi"]);
        let c = router_config(&policy, &pool, "ns", &s).expect("config");
        assert_eq!(c.policy.method, RouterMethod::Fixed);
        assert!(c.policy.artifact.is_none());
        let d = deployment(
            &policy,
            "ns",
            "img",
            &Telemetry::default(),
            &s,
            "h",
            &testdata::owner(),
        );
        assert!(container(&d, "scorer").is_none());
    }

    /// `serving.auth`: the keys Secret is mounted read-only into the router container only (not
    /// the scorer), and the rendered config points the router at it with the limits.
    #[test]
    fn auth_mounts_the_keys_secret_into_the_router_and_renders_limits() {
        use lookahead_api::policy::{AuthSecretRef, AuthSpec, KeyLimits, KeyLimitsOverride};
        let mut policy = testdata::policy("p", Some("yi"));
        policy.spec.serving.auth = Some(AuthSpec {
            secret_ref: Some(AuthSecretRef {
                name: "router-keys".into(),
            }),
            limits: KeyLimits {
                requests_per_minute: Some(60),
                tokens_per_minute: Some(100_000),
            },
            keys: vec![KeyLimitsOverride {
                id: "batch".into(),
                requests_per_minute: Some(600),
                tokens_per_minute: None,
            }],
        });
        let pool = testdata::pool("pool", &["yi"]);
        let c = router_config(&policy, &pool, "ns", &trained()).expect("config");
        let auth = c.policy.auth.as_ref().expect("auth rendered");
        assert_eq!(
            auth.keys_dir.as_deref(),
            Some(std::path::Path::new(KEYS_MOUNT))
        );
        assert_eq!(auth.limits_of("batch").requests_per_minute, Some(600));
        assert_eq!(auth.limits_of("batch").tokens_per_minute, Some(100_000));
        assert!(c.policy.api_keys_file.is_none());
        let yaml = serde_yaml::to_string(&c).expect("yaml");
        assert!(yaml.contains("keysDir: /var/run/lookahead/keys"), "{yaml}");

        let d = trained_deployment(&policy);
        let pod = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "api-keys")
            .expect("keys volume");
        let secret = volume.secret.as_ref().expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("router-keys"));
        assert_eq!(secret.default_mode, Some(0o440));
        let mount_of = |c: &str| {
            container(&d, c)
                .and_then(|c| c.volume_mounts.clone())
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.name == "api-keys")
        };
        let mount = mount_of("router").expect("router mounts the keys");
        assert_eq!(mount.mount_path, KEYS_MOUNT);
        assert_eq!(mount.read_only, Some(true));
        assert!(
            mount.sub_path.is_none(),
            "a subPath mount is never updated in place"
        );
        assert!(
            mount_of("scorer").is_none(),
            "the scorer never sees the keys"
        );
    }

    /// Without `serving.auth` nothing is mounted and the router is open (as before).
    #[test]
    fn without_auth_no_keys_are_mounted() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi"]);
        let c = router_config(&policy, &pool, "ns", &trained()).expect("config");
        assert!(c.policy.auth.is_none());
        let d = trained_deployment(&policy);
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
        assert!(pod.volumes.iter().flatten().all(|v| v.name != "api-keys"));
    }

    #[test]
    fn cost_profiles_and_the_override_bound_reach_the_router_config() {
        let mut policy = testdata::policy("p", Some("yi"));
        policy.spec.objective.cost_weight = 0.1;
        policy.spec.objective.profiles = BTreeMap::from([("economy".to_string(), 2.5)]);
        policy.spec.objective.max_cost_weight = Some(4.0);
        let pool = testdata::pool("pool", &["yi"]);
        let c = router_config(&policy, &pool, "ns", &trained()).expect("config");
        assert_eq!(c.policy.cost_weight, 0.1);
        assert_eq!(c.policy.profiles.get("economy"), Some(&2.5));
        assert_eq!(c.policy.max_cost_weight, Some(4.0));
        policy.spec.objective.profiles = BTreeMap::from([("Economy".to_string(), 2.5)]);
        let e = router_config(&policy, &pool, "ns", &trained()).expect_err("bad name");
        assert!(format!("{e}").contains("policy.profiles"), "{e}");
    }

    fn env_of(d: &Deployment, name: &str) -> BTreeMap<String, String> {
        container(d, name)
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let v = e.value.or_else(|| {
                    let field = e.value_from?.field_ref?.field_path;
                    Some(format!("fieldRef:{field}"))
                });
                (e.name, v.unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn router_pods_export_spans_and_log_json_only_when_configured() {
        let policy = testdata::policy("p", Some("yi"));
        let render = |t: &Telemetry| {
            deployment(&policy, "ns", "img", t, &trained(), "h", &testdata::owner())
        };
        let plain = render(&Telemetry::default());
        for name in ["router", "scorer"] {
            assert!(
                container(&plain, name).is_some_and(|c| c.env.is_none()),
                "{name}"
            );
        }

        let traced = render(&Telemetry {
            otlp_endpoint: Some("http://otel-collector.observability:4317".into()),
            json_logs: true,
        });
        let env = env_of(&traced, "router");
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://otel-collector.observability:4317"
        );
        assert_eq!(env["OTEL_SERVICE_NAME"], "lookahead-router");
        assert_eq!(env["LOOKAHEAD_LOG_FORMAT"], "json");
        assert_eq!(env["POD_NAME"], "fieldRef:metadata.name");
        assert_eq!(
            env["OTEL_RESOURCE_ATTRIBUTES"],
            format!(
                "k8s.namespace.name=ns,k8s.deployment.name={},k8s.pod.name=$(POD_NAME)",
                router_name("p")
            )
        );
        // The scorer has no spans to export; its logs follow the router's format.
        let scorer = env_of(&traced, "scorer");
        assert_eq!(scorer.len(), 1);
        assert_eq!(scorer["LOOKAHEAD_LOG_FORMAT"], "json");

        let json_only = render(&Telemetry {
            otlp_endpoint: None,
            json_logs: true,
        });
        assert_eq!(
            env_of(&json_only, "router").into_keys().collect::<Vec<_>>(),
            ["LOOKAHEAD_LOG_FORMAT"]
        );
    }
}
