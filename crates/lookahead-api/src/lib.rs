//! Types shared by every Lookahead component: the two custom resources (`LLMPool`,
//! `RoutingPolicy`), the router sidecar's configuration, and the pool fingerprint that ties a
//! trained router artifact to the pool membership it was trained for.

pub mod config;
mod docs;
pub mod fingerprint;
pub mod policy;
pub mod pool;
mod schema;

pub use config::{ConfigError, RouterConfig};
pub use docs::crds_markdown;
pub use fingerprint::{pool_fingerprint, MemberIdentity};
pub use policy::{RoutingPolicy, RoutingPolicySpec, RoutingPolicyStatus};
pub use pool::{LLMPool, LLMPoolSpec, LLMPoolStatus};

/// API group of every Lookahead custom resource.
pub const GROUP: &str = "lookahead.dev";
/// API version of every Lookahead custom resource.
pub const VERSION: &str = "v1alpha1";

/// Renders the CustomResourceDefinitions as one multi-document YAML stream, in a stable order.
/// This is what `lookahead crdgen` prints and what `charts/lookahead/crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [LLMPool::crd(), RoutingPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
