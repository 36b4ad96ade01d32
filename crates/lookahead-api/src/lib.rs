//! Types shared by every Lookahead component: the two custom resources (`LLMPool`,
//! `RoutingPolicy`), the router sidecar's configuration, and the pool fingerprint that ties a
//! trained router artifact to the pool membership it was trained for.
//!
//! # Modules
//! - [`fingerprint`]: the pool fingerprint (always built; all that `lookahead-model` uses).
//! - [`demand`]: the per-member demand a router reports at `/demand` (always built).
//! - [`duration`]: the durations the resources and the router configuration write (always built).
//! - `pool`, `policy`: the `LLMPool` and `RoutingPolicy` custom resources (feature `kube`).
//! - `config`: the router sidecar's configuration, rendered by the operator (feature `kube`).
//! - `docs`, `schema`: the CRDs' Markdown reference and schema tweaks (feature `kube`).
//!
//! The default feature `kube` brings kube and k8s-openapi; `default-features = false` leaves only
//! the fingerprint, so a crate that needs just that does not link them.

#[cfg(feature = "kube")]
pub mod config;
pub mod demand;
#[cfg(feature = "kube")]
mod docs;
pub mod duration;
pub mod fingerprint;
#[cfg(feature = "kube")]
pub mod policy;
#[cfg(feature = "kube")]
pub mod pool;
#[cfg(feature = "kube")]
mod schema;

#[cfg(feature = "kube")]
pub use config::{ConfigError, RouterConfig};
#[cfg(feature = "kube")]
pub use docs::crds_markdown;
pub use fingerprint::{pool_fingerprint, MemberIdentity};
#[cfg(feature = "kube")]
pub use policy::{RoutingPolicy, RoutingPolicySpec, RoutingPolicyStatus};
#[cfg(feature = "kube")]
pub use pool::{LLMPool, LLMPoolSpec, LLMPoolStatus};

/// API group of every Lookahead custom resource.
pub const GROUP: &str = "lookahead.dev";
/// API version of every Lookahead custom resource.
pub const VERSION: &str = "v1alpha1";

/// Renders the CustomResourceDefinitions as one multi-document YAML stream, in a stable order.
/// This is what `lookahead crdgen` prints and what `charts/lookahead/crds/` holds.
#[cfg(feature = "kube")]
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [LLMPool::crd(), RoutingPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
