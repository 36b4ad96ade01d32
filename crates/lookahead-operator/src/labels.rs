//! Names, labels and annotations the operator puts on what it creates.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "lookahead-operator";
/// `app.kubernetes.io/managed-by` value; pruning only ever touches objects carrying it.
pub const MANAGED_BY: &str = "lookahead-operator";
pub const POOL_LABEL: &str = "lookahead.dev/pool";
pub const MEMBER_LABEL: &str = "lookahead.dev/member";
pub const POLICY_LABEL: &str = "lookahead.dev/policy";
/// The name of the object a child is (on a pod template: of its Deployment or Job).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// On training Jobs: the artifact version the Job writes.
pub const VERSION_LABEL: &str = "lookahead.dev/artifact-version";
/// On training Jobs: the pool fingerprint the Job trains for.
pub const FINGERPRINT_ANNOTATION: &str = "lookahead.dev/fingerprint";
/// On training Jobs: the member names the Job trains for, comma-separated.
pub const MEMBERS_ANNOTATION: &str = "lookahead.dev/members";
/// On a CPU fallback training Job: why it replaced the GPU Job (no node could take its pod).
pub const CPU_FALLBACK_ANNOTATION: &str = "lookahead.dev/cpu-fallback";
/// On the router pod template: hash of the rendered config, so a new config rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "lookahead.dev/config-hash";
/// On a `RoutingPolicy` with `trigger: Manual`: any new value asks for a retrain.
pub const RETRAIN_ANNOTATION: &str = "lookahead.dev/retrain";

/// Short hex SHA-256 of `data` (16 characters).
pub fn short_hash(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..8])
}

/// A DNS-1035 name of at most 63 characters: `name` itself when it fits, else a prefix plus a
/// hash of the whole, so distinct long names stay distinct and the result is deterministic.
pub fn object_name(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = &short_hash(name.as_bytes())[..8];
    let prefix = name[..54].trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// Label values are at most 63 characters; longer values are shortened like names.
pub fn label_value(value: &str) -> String {
    object_name(value)
}

/// Labels every object created for a pool member carries.
pub fn member_labels(pool: &str, member: &str, instance: &str) -> BTreeMap<String, String> {
    let mut l = common_labels("model-server", instance);
    l.extend(member_selector(pool, member));
    l
}

/// The immutable selector of a member's Deployment and Service.
pub fn member_selector(pool: &str, member: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POOL_LABEL.to_string(), label_value(pool)),
        (MEMBER_LABEL.to_string(), member.to_string()),
    ])
}

/// Labels every object created for a routing policy carries.
pub fn policy_labels(policy: &str, component: &str, instance: &str) -> BTreeMap<String, String> {
    let mut l = common_labels(component, instance);
    l.insert(POLICY_LABEL.to_string(), label_value(policy));
    l
}

/// The immutable selector of a router Deployment and Service.
pub fn router_selector(policy: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POLICY_LABEL.to_string(), label_value(policy)),
        (
            "app.kubernetes.io/component".to_string(),
            "router".to_string(),
        ),
    ])
}

fn common_labels(component: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "lookahead".to_string(),
        ),
        (INSTANCE_LABEL.to_string(), label_value(instance)),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "lookahead".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ])
}

/// Label selector (string form) for everything the operator made for a pool.
pub fn pool_selector(pool: &str) -> String {
    format!(
        "{POOL_LABEL}={},app.kubernetes.io/managed-by={MANAGED_BY}",
        label_value(pool)
    )
}

/// Label selector (string form) for everything the operator made for a policy.
pub fn policy_selector(policy: &str) -> String {
    format!(
        "{POLICY_LABEL}={},app.kubernetes.io/managed-by={MANAGED_BY}",
        label_value(policy)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_dns_1035_and_stay_distinct() {
        assert_eq!(object_name("pool-yi"), "pool-yi");
        let long_a = format!("{}-a", "p".repeat(70));
        let long_b = format!("{}-b", "p".repeat(70));
        let (a, b) = (object_name(&long_a), object_name(&long_b));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_eq!(a, object_name(&long_a), "deterministic");
        assert!(!a.contains("--"));
    }
}
