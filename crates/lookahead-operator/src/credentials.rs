//! Member credentials in pods: each member's `apiKeySecretRef` and the pool's `tls.caBundle` as
//! read-only Secret/ConfigMap volumes, at the paths the rendered router config names
//! (`apiKeyFile`, `tls.caBundleFile`). The router pods and the training Job's labelling
//! container, which reads the same config, get the same mounts.
//!
//! Whole-volume mounts (no `subPath`), so the kubelet updates a rotated Secret in place and the
//! router picks the new key up without a restart. A Secret or ConfigMap that does not exist keeps
//! the pod in `ContainerCreating` (a `FailedMount` event names it) until it is created.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, KeyToPath, PodSpec, SecretVolumeSource, Volume, VolumeMount,
};
use lookahead_api::pool::{CaBundleSource, KeyRef};
use lookahead_api::LLMPool;

/// Where member keys are mounted: one directory per member, the key in file `key`.
pub const MEMBER_KEYS_DIR: &str = "/etc/lookahead-member-keys";
/// Where the CA bundle is mounted, as file `ca.pem`.
pub const MEMBER_CA_DIR: &str = "/etc/lookahead-member-ca";
const KEY_FILE: &str = "key";
const CA_FILE: &str = "ca.pem";
const CA_VOLUME: &str = "member-ca";

/// The file the router reads member `member`'s key from.
pub fn key_file(member: &str) -> PathBuf {
    PathBuf::from(MEMBER_KEYS_DIR).join(member).join(KEY_FILE)
}

/// The file the router reads the pool's CA bundle from.
pub fn ca_bundle_file() -> PathBuf {
    PathBuf::from(MEMBER_CA_DIR).join(CA_FILE)
}

/// The pool's CA bundle source, if any.
pub fn ca_bundle(pool: &LLMPool) -> Option<&CaBundleSource> {
    pool.spec.tls.as_ref().and_then(|t| t.ca_bundle.as_ref())
}

/// Member names are DNS-1035 labels of at most 52 characters, so this stays a valid volume name
/// (at most 63).
fn key_volume_name(member: &str) -> String {
    format!("member-key-{member}")
}

fn one_key(r: &KeyRef, path: &str) -> Option<Vec<KeyToPath>> {
    Some(vec![KeyToPath {
        key: r.key.clone(),
        path: path.into(),
        mode: None,
    }])
}

fn secret_volume(name: String, r: &KeyRef, path: &str) -> Volume {
    Volume {
        name,
        secret: Some(SecretVolumeSource {
            secret_name: Some(r.name.clone()),
            items: one_key(r, path),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ca_volume(source: &CaBundleSource) -> Option<Volume> {
    if let Some(r) = &source.secret_ref {
        return Some(secret_volume(CA_VOLUME.into(), r, CA_FILE));
    }
    let r = source.config_map_ref.as_ref()?;
    Some(Volume {
        name: CA_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: r.name.clone(),
            items: one_key(r, CA_FILE),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn read_only(volume: &str, path: String) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path,
        read_only: Some(true),
        ..Default::default()
    }
}

/// The volumes and mounts of the pool's member keys and CA bundle (none without either).
pub fn volumes(pool: &LLMPool) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    for m in &pool.spec.members {
        if let Some(r) = &m.api_key_secret_ref {
            let name = key_volume_name(&m.name);
            mounts.push(read_only(&name, format!("{MEMBER_KEYS_DIR}/{}", m.name)));
            volumes.push(secret_volume(name, r, KEY_FILE));
        }
    }
    if let Some(v) = ca_bundle(pool).and_then(ca_volume) {
        mounts.push(read_only(CA_VOLUME, MEMBER_CA_DIR.into()));
        volumes.push(v);
    }
    (volumes, mounts)
}

/// Mounts the pool's credentials into `pod`'s container (or init container) named `container`;
/// nothing when the pod has no such container.
pub fn mount(pod: &mut PodSpec, pool: &LLMPool, container: &str) {
    let (volumes, mounts) = volumes(pool);
    if volumes.is_empty() {
        return;
    }
    let target = pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
        .find(|c| c.name == container);
    let Some(target) = target else { return };
    target
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .extend(mounts);
    let pod_volumes = pod.volumes.get_or_insert_with(Vec::new);
    for v in volumes {
        if !pod_volumes.iter().any(|p| p.name == v.name) {
            pod_volumes.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Container;
    use lookahead_api::policy::{LabellingSpec, RouterMethod};
    use lookahead_api::pool::{CaBundleSource, KeyRef, PoolTls};

    use super::*;
    use crate::policy::router::{deployment, router_config, Scoring, ROUTER_CONTAINER};
    use crate::policy::training::{job, plan};
    use crate::telemetry::Telemetry;
    use crate::testdata;

    fn key(name: &str, key: &str) -> KeyRef {
        KeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    /// Pool `yi` (in-cluster) + `hosted` (an https endpoint with its key in Secret
    /// `hosted-api/token`), CAs from ConfigMap `private-ca/ca.crt`.
    fn pool_with_credentials() -> LLMPool {
        let mut pool = testdata::pool("pool", &["yi", "hosted"]);
        let hosted = &mut pool.spec.members[1];
        hosted.template = None;
        hosted.endpoint = Some("https://api.example.com/v1".into());
        hosted.api_key_secret_ref = Some(key("hosted-api", "token"));
        pool.spec.tls = Some(PoolTls {
            ca_bundle: Some(CaBundleSource {
                config_map_ref: Some(key("private-ca", "ca.crt")),
                secret_ref: None,
            }),
        });
        pool
    }

    fn router_pod(pool: &LLMPool) -> PodSpec {
        let policy = testdata::policy("p", Some("yi"));
        let d = deployment(
            &policy,
            "ns",
            "img",
            &Telemetry::default(),
            &Scoring::Untrained(RouterMethod::Fixed),
            "h",
            &testdata::owner(),
        );
        let mut pod = d.spec.and_then(|s| s.template.spec).unwrap();
        mount(&mut pod, pool, ROUTER_CONTAINER);
        pod
    }

    fn mounts(c: &Container) -> Vec<(&str, &str, bool)> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                assert!(m.sub_path.is_none(), "a subPath mount is never updated");
                (
                    m.name.as_str(),
                    m.mount_path.as_str(),
                    m.read_only == Some(true),
                )
            })
            .collect()
    }

    #[test]
    fn the_router_config_names_the_mounted_key_and_ca_files() {
        let pool = pool_with_credentials();
        let policy = testdata::policy("p", Some("yi"));
        let scoring = Scoring::Untrained(RouterMethod::Fixed);
        let config = router_config(&policy, &pool, "ns", &scoring).unwrap();
        assert_eq!(config.members[0].api_key_file, None);
        assert_eq!(
            config.members[1].api_key_file.as_deref(),
            Some(std::path::Path::new(
                "/etc/lookahead-member-keys/hosted/key"
            ))
        );
        assert_eq!(
            config.tls.ca_bundle_file.as_deref(),
            Some(std::path::Path::new("/etc/lookahead-member-ca/ca.pem"))
        );
        let plain =
            router_config(&policy, &testdata::pool("pool", &["yi"]), "ns", &scoring).unwrap();
        let yaml = serde_yaml::to_string(&plain).unwrap();
        assert!(
            !yaml.contains("apiKeyFile") && !yaml.contains("tls"),
            "{yaml}"
        );
    }

    #[test]
    fn the_router_container_mounts_the_member_secret_and_the_ca_read_only() {
        let pod = router_pod(&pool_with_credentials());
        let router = pod.containers.iter().find(|c| c.name == "router").unwrap();
        let m = mounts(router);
        assert!(m.contains(&(
            "member-key-hosted",
            "/etc/lookahead-member-keys/hosted",
            true
        )));
        assert!(m.contains(&("member-ca", "/etc/lookahead-member-ca", true)));
        let volumes = pod.volumes.unwrap();
        let secret = volumes
            .iter()
            .find(|v| v.name == "member-key-hosted")
            .and_then(|v| v.secret.clone())
            .unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("hosted-api"));
        let items = secret.items.unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("token", "key")
        );
        assert_eq!(secret.optional, Some(false));
        let ca = volumes
            .iter()
            .find(|v| v.name == "member-ca")
            .and_then(|v| v.config_map.clone())
            .unwrap();
        assert_eq!(ca.name, "private-ca");
        assert_eq!(ca.items.unwrap()[0].path, "ca.pem");
        assert!(!volumes.iter().any(|v| v.name == "member-key-yi"));
    }

    #[test]
    fn a_ca_bundle_from_a_secret_and_a_pool_without_credentials() {
        let mut pool = pool_with_credentials();
        pool.spec.tls = Some(PoolTls {
            ca_bundle: Some(CaBundleSource {
                config_map_ref: None,
                secret_ref: Some(key("ca-secret", "ca.crt")),
            }),
        });
        let pod = router_pod(&pool);
        let ca = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "member-ca")
            .and_then(|v| v.secret)
            .unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("ca-secret"));
        let plain = testdata::pool("pool", &["yi"]);
        let before = router_pod(&testdata::pool("pool", &["yi"]));
        let mut after = before.clone();
        mount(&mut after, &plain, ROUTER_CONTAINER);
        assert_eq!(before, after, "nothing added without credentials");
    }

    #[test]
    fn the_labelling_container_gets_the_same_mounts_and_training_does_not() {
        let pool = pool_with_credentials();
        let mut policy = testdata::policy("p", Some("yi"));
        let training = policy.spec.training.as_mut().unwrap();
        training.labelling = Some(LabellingSpec {
            limit: None,
            concurrency: None,
            graders: None,
        });
        let mut p = plan::plan(&policy, &pool, None).unwrap();
        p.label = vec!["hosted".into()];
        let training = policy.spec.training.clone().unwrap();
        let j = job::job(&policy, &training, &p, "ns", "img", &testdata::owner());
        let mut pod = j.spec.and_then(|s| s.template.spec).unwrap();
        mount(&mut pod, &pool, job::LABEL_CONTAINER);
        let label = &pod.init_containers.as_ref().unwrap()[0];
        assert!(mounts(label).contains(&(
            "member-key-hosted",
            "/etc/lookahead-member-keys/hosted",
            true
        )));
        assert!(!mounts(&pod.containers[0])
            .iter()
            .any(|m| m.0 == "member-ca"));
        // A Job without a labelling step gets no volumes it would not use.
        p.label.clear();
        let j = job::job(&policy, &training, &p, "ns", "img", &testdata::owner());
        let mut pod = j.spec.and_then(|s| s.template.spec).unwrap();
        mount(&mut pod, &pool, job::LABEL_CONTAINER);
        assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "member-ca"));
    }
}
