//! Pod security of what the operator runs from its own image (router pods, training Jobs): the
//! same settings as the operator's own pod in the chart. Member pods run the user's model image
//! and keep that image's settings.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};

/// The image's unprivileged user.
const USER: i64 = 65532;

/// Non-root, RuntimeDefault seccomp.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(USER),
        run_as_group: Some(USER),
        fs_group: Some(USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Read-only root filesystem, no privilege escalation, no capabilities; `/tmp` is an emptyDir
/// (the image's HOME) so the root filesystem can stay read-only.
pub fn harden(containers: &mut [Container], volumes: &mut Vec<Volume>) {
    if !volumes.iter().any(|v| v.name == "tmp") {
        volumes.push(Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    for c in containers {
        c.security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| m.mount_path == "/tmp") {
            mounts.push(VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_get_a_read_only_root_and_a_writable_tmp() {
        let mut containers = vec![Container {
            name: "a".into(),
            ..Default::default()
        }];
        let mut volumes = Vec::new();
        harden(&mut containers, &mut volumes);
        harden(&mut containers, &mut volumes);
        assert_eq!(volumes.len(), 1, "idempotent");
        let sc = containers[0]
            .security_context
            .clone()
            .expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(containers[0].volume_mounts.as_ref().map(Vec::len), Some(1));
        assert_eq!(pod_security().run_as_non_root, Some(true));
    }
}
