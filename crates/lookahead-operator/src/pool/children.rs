//! The objects a template member runs as: a Deployment, a Service and (with a target) an
//! autoscaler. Pure functions of the pool, so they can be checked without a server.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    Service, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lookahead_api::pool::{MemberProbes, MemberTemplate, PoolMember, ProbeType};

use crate::labels;
use crate::objects::{claim_volume, http_service, owned_meta};

/// Name of a template member's Deployment, Service and autoscaler.
pub fn member_object_name(pool: &str, member: &str) -> String {
    labels::object_name(&format!("{pool}-{member}"))
}

/// In-cluster base URL of a template member.
pub fn member_url(pool: &str, ns: &str, member: &str, t: &MemberTemplate) -> String {
    format!(
        "http://{}.{ns}.svc:{}{}",
        member_object_name(pool, member),
        t.port,
        t.api_path
    )
}

/// Base URL the router uses for `m`.
pub fn base_url(pool: &str, ns: &str, m: &PoolMember) -> Option<String> {
    match (&m.endpoint, &m.template) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(t)) => Some(member_url(pool, ns, &m.name, t)),
        (None, None) => None,
    }
}

fn meta(name: &str, ns: &str, pool: &str, member: &str, owner: &OwnerReference) -> ObjectMeta {
    owned_meta(name, ns, labels::member_labels(pool, member, name), owner)
}

/// The member's Deployment. With an autoscaling target the replica count is left to the
/// autoscaler (not applied, so the operator never fights it), and with `min: 0` to the
/// operator's scale-to-zero loop (a new Deployment starts at one); else it is `replicas.min`.
pub fn deployment(
    pool: &str,
    ns: &str,
    m: &PoolMember,
    t: &MemberTemplate,
    owner: &OwnerReference,
) -> Deployment {
    let name = member_object_name(pool, &m.name);
    let selector = labels::member_selector(pool, &m.name);
    let (volumes, mounts) = volumes(t);
    let container = model_container(t, mounts);
    Deployment {
        metadata: meta(&name, ns, pool, &m.name, owner),
        spec: Some(DeploymentSpec {
            replicas: (m.replicas.target.is_none() && m.replicas.min > 0).then_some(m.replicas.min),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::member_labels(pool, &m.name, &name)),
                    ..Default::default()
                }),
                spec: Some(pod_spec(t, container, volumes)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The member pod: the model container and the template's scheduling and identity settings.
fn pod_spec(t: &MemberTemplate, container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
        tolerations: some_vec(&t.tolerations),
        affinity: t.affinity.clone(),
        topology_spread_constraints: some_vec(&t.topology_spread_constraints),
        service_account_name: t.service_account_name.clone(),
        image_pull_secrets: some_vec(&t.image_pull_secrets),
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..Default::default()
    }
}

/// `None` for an empty list: the pod spec leaves out what the template leaves out.
fn some_vec<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// Name of the in-memory `/dev/shm` volume (`shmSize`).
const SHM_VOLUME: &str = "dshm";

/// The template's claims (volumes `claim-<i>`: the user names only the claim and the path), and
/// with `shmSize` a memory-backed `/dev/shm` of that size.
fn volumes(t: &MemberTemplate) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (mut volumes, mut mounts): (Vec<Volume>, Vec<VolumeMount>) = t
        .mounts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            claim_volume(
                &format!("claim-{i}"),
                &c.claim_name,
                &c.mount_path,
                c.read_only,
            )
        })
        .unzip();
    if let Some(size) = &t.shm_size {
        volumes.push(Volume {
            name: SHM_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(size.clone())),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: SHM_VOLUME.into(),
            mount_path: "/dev/shm".into(),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

/// How often the startup probe runs; `startupTimeout` is a whole number of these.
pub const STARTUP_PERIOD_SECONDS: u64 = 5;

/// The startup and readiness probes: the same check (GET the models path, or the port opening),
/// at most `startupTimeout` to pass the first time (weights loading), then every
/// `readinessPeriod`. The values are validated before rendering (`validate::pool`); the
/// fallbacks only keep this total.
fn probes(t: &MemberTemplate) -> (Probe, Probe) {
    let p: &MemberProbes = &t.probes;
    let check = match p.type_ {
        ProbeType::Http => Probe {
            http_get: Some(HTTPGetAction {
                path: Some(p.http_path(&t.api_path)),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ProbeType::Tcp => Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    // An OpenAI server busy with a full batch can be slow to answer; one slow answer should not
    // count as a failure.
    let check = Probe {
        timeout_seconds: Some(5),
        ..check
    };
    let startup_secs = p.startup_timeout_seconds().unwrap_or(600);
    let startup = Probe {
        period_seconds: Some(STARTUP_PERIOD_SECONDS as i32),
        failure_threshold: Some(
            i32::try_from(startup_secs.div_ceil(STARTUP_PERIOD_SECONDS)).unwrap_or(i32::MAX),
        ),
        ..check.clone()
    };
    let readiness = Probe {
        period_seconds: Some(
            i32::try_from(p.readiness_period_seconds().unwrap_or(5)).unwrap_or(i32::MAX),
        ),
        ..check
    };
    (startup, readiness)
}

/// The model server container: the template's image, args, env and resources, started and
/// ready once it answers its probes.
fn model_container(t: &MemberTemplate, mounts: Vec<VolumeMount>) -> Container {
    let (startup, readiness) = probes(t);
    Container {
        name: "model".into(),
        image: Some(t.image.clone()),
        args: (!t.args.is_empty()).then(|| t.args.clone()),
        env: (!t.env.is_empty()).then(|| t.env.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: t.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: t.resources.clone(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        // Model servers take minutes to load weights: the startup probe bounds that, and only
        // then does readiness count (a port that opens before the model loads is not ready).
        startup_probe: Some(startup),
        readiness_probe: Some(readiness),
        ..Default::default()
    }
}

/// The member's Service, on the template's port.
pub fn service(
    pool: &str,
    ns: &str,
    m: &PoolMember,
    t: &MemberTemplate,
    owner: &OwnerReference,
) -> Service {
    let name = member_object_name(pool, &m.name);
    let metadata = meta(&name, ns, pool, &m.name, owner);
    http_service(metadata, labels::member_selector(pool, &m.name), t.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn deployment_carries_labels_owner_and_fixed_replicas() {
        let spec = testdata::pool_spec(&["yi"]);
        let m = &spec.members[0];
        let t = m.template.as_ref().expect("template");
        let d = deployment("pool", "ns", m, t, &testdata::owner());
        let labels = d.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["lookahead.dev/pool"], "pool");
        assert_eq!(labels["lookahead.dev/member"], "yi");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "lookahead-operator");
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(d.metadata.owner_references.map(|o| o.len()), Some(1));
        assert_eq!(
            member_url("pool", "ns", "yi", t),
            "http://pool-yi.ns.svc:8000/v1"
        );
    }

    #[test]
    fn claims_are_mounted_into_the_model_container() {
        let mut spec = testdata::pool_spec(&["yi"]);
        let t = spec.members[0].template.as_mut().expect("template");
        t.mounts = vec![
            lookahead_api::pool::ClaimMount {
                claim_name: "weights".into(),
                mount_path: "/models".into(),
                read_only: true,
            },
            lookahead_api::pool::ClaimMount {
                claim_name: "cache".into(),
                mount_path: "/cache".into(),
                read_only: false,
            },
        ];
        let m = &spec.members[0];
        let owner = testdata::owner();
        let d = deployment(
            "pool",
            "ns",
            m,
            m.template.as_ref().expect("template"),
            &owner,
        );
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod spec");
        let volumes = pod.volumes.expect("volumes");
        let mounts = pod.containers[0].volume_mounts.clone().expect("mounts");
        assert_eq!(volumes.len(), 2);
        for (v, (claim, path, ro)) in volumes
            .iter()
            .zip([("weights", "/models", true), ("cache", "/cache", false)])
        {
            let pvc = v.persistent_volume_claim.as_ref().expect("pvc");
            assert_eq!((pvc.claim_name.as_str(), pvc.read_only), (claim, Some(ro)));
            let mount = mounts
                .iter()
                .find(|m| m.name == v.name)
                .expect("mount of the volume");
            assert_eq!(
                (mount.mount_path.as_str(), mount.read_only),
                (path, Some(ro))
            );
        }
    }

    /// The pod spec of member `spec.members[0]`'s Deployment.
    fn pod_of(spec: &lookahead_api::LLMPoolSpec) -> PodSpec {
        let m = &spec.members[0];
        let t = m.template.as_ref().expect("template");
        let d = deployment("pool", "ns", m, t, &testdata::owner());
        d.spec.and_then(|s| s.template.spec).expect("pod spec")
    }

    #[test]
    fn the_model_is_ready_when_it_answers_its_models_path_within_the_startup_timeout() {
        let pod = pod_of(&testdata::pool_spec(&["yi"]));
        let c = &pod.containers[0];
        let (startup, readiness) = (
            c.startup_probe.clone().expect("startup probe"),
            c.readiness_probe.clone().expect("readiness probe"),
        );
        for p in [&startup, &readiness] {
            let get = p.http_get.as_ref().expect("an HTTP probe");
            assert_eq!(get.path.as_deref(), Some("/v1/models"));
            assert_eq!(get.port, IntOrString::String("http".into()));
            assert!(p.tcp_socket.is_none());
        }
        // 10 minutes to load the weights, probed every 5 s.
        assert_eq!(
            (startup.period_seconds, startup.failure_threshold),
            (Some(5), Some(120))
        );
        assert_eq!(readiness.period_seconds, Some(5));
        // Nothing else changes for a template that sets none of the new fields.
        assert!(pod.volumes.is_none() && c.volume_mounts.is_none());
        assert!(pod.affinity.is_none() && pod.topology_spread_constraints.is_none());
        assert!(pod.service_account_name.is_none() && pod.image_pull_secrets.is_none());
    }

    #[test]
    fn probes_follow_the_template_and_fall_back_to_tcp_only_when_asked() {
        let mut spec = testdata::pool_spec(&["yi"]);
        let t = spec.members[0].template.as_mut().expect("template");
        t.api_path = "/openai/v1".into();
        t.probes.startup_timeout = "1h".into();
        t.probes.readiness_period = "10s".into();
        let c = pod_of(&spec).containers.remove(0);
        let startup = c.startup_probe.expect("startup");
        let path = startup.http_get.and_then(|g| g.path);
        assert_eq!(path.as_deref(), Some("/openai/v1/models"));
        assert_eq!(startup.failure_threshold, Some(720));
        assert_eq!(c.readiness_probe.and_then(|p| p.period_seconds), Some(10));

        let t = spec.members[0].template.as_mut().expect("template");
        t.probes.path = Some("/health".into());
        let c = pod_of(&spec).containers.remove(0);
        let path = c
            .readiness_probe
            .and_then(|p| p.http_get)
            .and_then(|g| g.path);
        assert_eq!(path.as_deref(), Some("/health"));

        let t = spec.members[0].template.as_mut().expect("template");
        t.probes.type_ = lookahead_api::pool::ProbeType::Tcp;
        let c = pod_of(&spec).containers.remove(0);
        for p in [c.startup_probe, c.readiness_probe] {
            let p = p.expect("probe");
            assert!(p.http_get.is_none());
            let tcp = p.tcp_socket.expect("a TCP probe");
            assert_eq!(tcp.port, IntOrString::String("http".into()));
        }
    }

    #[test]
    fn shm_scheduling_and_identity_reach_the_member_pod() {
        use k8s_openapi::api::core::v1::{
            Affinity, LocalObjectReference, PodAffinityTerm, PodAntiAffinity,
            TopologySpreadConstraint,
        };
        let mut spec = testdata::pool_spec(&["yi"]);
        let selector = LabelSelector {
            match_labels: Some(labels::member_selector("pool", "yi")),
            ..Default::default()
        };
        let affinity = Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(selector.clone()),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spread = TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(selector),
            ..Default::default()
        };
        let t = spec.members[0].template.as_mut().expect("template");
        t.shm_size = Some("16Gi".into());
        t.affinity = Some(affinity.clone());
        t.topology_spread_constraints = vec![spread.clone()];
        t.service_account_name = Some("model-reader".into());
        t.image_pull_secrets = vec![LocalObjectReference {
            name: "registry".into(),
        }];
        t.mounts = vec![lookahead_api::pool::ClaimMount {
            claim_name: "weights".into(),
            mount_path: "/models".into(),
            read_only: true,
        }];
        let pod = pod_of(&spec);
        let volumes = pod.volumes.clone().expect("volumes");
        assert_eq!(volumes.len(), 2, "the claim and /dev/shm");
        let shm = volumes
            .iter()
            .find(|v| v.name == SHM_VOLUME)
            .and_then(|v| v.empty_dir.clone())
            .expect("an emptyDir for /dev/shm");
        assert_eq!(shm.medium.as_deref(), Some("Memory"));
        assert_eq!(shm.size_limit, Some(Quantity("16Gi".into())));
        let mounts = pod.containers[0].volume_mounts.clone().expect("mounts");
        assert!(mounts
            .iter()
            .any(|m| m.name == SHM_VOLUME && m.mount_path == "/dev/shm"));
        assert_eq!(pod.affinity, Some(affinity));
        assert_eq!(pod.topology_spread_constraints, Some(vec![spread]));
        assert_eq!(pod.service_account_name.as_deref(), Some("model-reader"));
        let secrets = pod.image_pull_secrets.expect("pull secrets");
        assert_eq!(secrets[0].name, "registry");
    }

    #[test]
    fn autoscaled_members_leave_replicas_to_the_autoscaler() {
        let mut spec = testdata::pool_spec(&["yi"]);
        spec.members[0].replicas = testdata::autoscaled(1, 4);
        let m = &spec.members[0];
        let t = m.template.as_ref().expect("template");
        let d = deployment("pool", "ns", m, t, &testdata::owner());
        assert_eq!(d.spec.and_then(|s| s.replicas), None);
    }
}
