//! The objects a template member runs as: a Deployment, a Service and (with a target) an
//! autoscaler. Pure functions of the pool, so they can be checked without a server.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Probe, Service, TCPSocketAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lookahead_api::pool::{MemberTemplate, PoolMember};

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
    // Volume names are ours (`claim-<i>`): the user names only the claim and the path.
    let (volumes, mounts): (Vec<Volume>, Vec<VolumeMount>) = t
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
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
                    tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The model server container: the template's image, args, env and resources, ready once its
/// port opens.
fn model_container(t: &MemberTemplate, mounts: Vec<VolumeMount>) -> Container {
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
        // Model servers take minutes to load weights; the port opening is the readiness signal
        // common to vLLM, TGI and llama.cpp.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
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
