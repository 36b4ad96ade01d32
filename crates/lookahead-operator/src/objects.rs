//! Building blocks the child-object builders share (member objects in `pool::children`, router
//! objects in `policy::router`, training Jobs in `policy::training::job`): owned metadata,
//! volume/mount pairs, the ClusterIP Service in front of an `http` port, GPU requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, PersistentVolumeClaimVolumeSource, ResourceRequirements, Service,
    ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The extended resource of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Metadata of a child object: name, namespace, labels, and `owner` as its controller.
pub fn owned_meta(
    name: &str,
    ns: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// A Service sending `port` to the selected pods' port named `http`.
pub fn http_service(
    metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    port: i32,
) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A ConfigMap as volume `volume`, mounted read-only at `path`.
pub fn config_map_volume(volume: &str, config_map: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: volume.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: volume.into(),
            mount_path: path.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// A PersistentVolumeClaim as volume `volume`, mounted at `path`.
pub fn claim_volume(
    volume: &str,
    claim: &str,
    path: &str,
    read_only: bool,
) -> (Volume, VolumeMount) {
    (
        Volume {
            name: volume.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: Some(read_only),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: volume.into(),
            mount_path: path.into(),
            read_only: Some(read_only),
            ..Default::default()
        },
    )
}

/// Whether `resources` asks for a GPU.
pub fn wants_gpu(resources: Option<&ResourceRequirements>) -> bool {
    let asks = |m: Option<&BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get(GPU_RESOURCE))
            .is_some_and(|q| q.0.trim() != "0")
    };
    resources.is_some_and(|r| asks(r.limits.as_ref()) || asks(r.requests.as_ref()))
}

/// `resources` with a GPU request mirrored into the limits (Kubernetes wants extended resources
/// limited, and a request equal to its limit).
pub fn gpu_limited(mut r: ResourceRequirements) -> ResourceRequirements {
    if let Some(q) = r
        .requests
        .as_ref()
        .and_then(|m| m.get(GPU_RESOURCE))
        .cloned()
    {
        r.limits
            .get_or_insert_with(BTreeMap::new)
            .entry(GPU_RESOURCE.into())
            .or_insert(q);
    }
    r
}

/// `resources` without any GPU request or limit.
pub fn without_gpu(mut r: ResourceRequirements) -> ResourceRequirements {
    for m in [r.requests.as_mut(), r.limits.as_mut()]
        .into_iter()
        .flatten()
    {
        m.remove(GPU_RESOURCE);
    }
    r
}

/// `tolerations`, plus one for the `nvidia.com/gpu` taint GPU nodes commonly carry when `gpu`
/// (unless the list already tolerates it).
pub fn gpu_tolerations(tolerations: &[Toleration], gpu: bool) -> Vec<Toleration> {
    let mut out = tolerations.to_vec();
    if gpu && !out.iter().any(|t| t.key.as_deref() == Some(GPU_RESOURCE)) {
        out.push(Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    out
}
