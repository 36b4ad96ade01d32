//! Delegated authorization: may this user read this metric (or discovery path)? Asked of the API
//! server with a `SubjectAccessReview` (authorization.k8s.io/v1), so cluster RBAC decides.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;

use super::api::{GROUP, VERSION};
use super::authn::User;
use super::cache::TtlCache;

/// What a request does, as an authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// Reading a metric: `resource` is the metric's name in group `external.metrics.k8s.io`.
    Resource {
        namespace: String,
        resource: String,
        verb: &'static str,
    },
    /// A discovery (or unknown) path.
    NonResource { path: String, verb: &'static str },
}

impl Attributes {
    /// The API server's wording of a refusal, e.g. `User "x" cannot list resource "m" in API
    /// group "external.metrics.k8s.io" in the namespace "ns"`.
    pub fn forbidden_message(&self, user: &User, reason: &str) -> String {
        let what = match self {
            Attributes::Resource {
                namespace,
                resource,
                verb,
            } => format!(
                "User {:?} cannot {verb} resource {resource:?} in API group {GROUP:?} in the \
                 namespace {namespace:?}",
                user.name
            ),
            Attributes::NonResource { path, verb } => {
                format!("User {:?} cannot {verb} path {path:?}", user.name)
            }
        };
        if reason.is_empty() {
            what
        } else {
            format!("{what}: {reason}")
        }
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused (403), with the authorizer's reason (may be empty).
    Deny {
        reason: String,
    },
}

/// The authorizer could not answer (500).
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("SubjectAccessReview failed: {0}")]
    SubjectAccessReview(#[from] kube::Error),
}

/// Decides whether `user` may do what `attributes` say.
pub trait Authorizer: Send + Sync {
    fn authorize<'a>(
        &'a self,
        user: &'a User,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, AuthzError>>;
}

/// How long a SubjectAccessReview answer (either way) is reused, as k8s.io/apiserver does.
pub const DECISION_CACHE_TTL: Duration = Duration::from_secs(10);

/// Members of this group may do anything without a review, as k8s.io/apiserver's delegating
/// authorizer allows them: the aggregator's availability checks come as `system:masters`, and
/// reviewing them would only cost round trips.
pub const ALWAYS_ALLOW_GROUP: &str = "system:masters";

/// Asks the API server (`SubjectAccessReview`); answers cached [`DECISION_CACHE_TTL`].
pub struct SubjectAccessReviewAuthorizer {
    client: Client,
    cache: TtlCache<(User, Attributes), Decision>,
}

impl SubjectAccessReviewAuthorizer {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: TtlCache::new(DECISION_CACHE_TTL, 4096),
        }
    }

    async fn review(&self, user: &User, attributes: &Attributes) -> Result<Decision, AuthzError> {
        let key = (user.clone(), attributes.clone());
        if let Some(decision) = self.cache.get(&key) {
            return Ok(decision);
        }
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review_of(user, attributes))
            .await?;
        let status = answer.status.unwrap_or_default();
        let decision = if status.allowed {
            Decision::Allow
        } else {
            let reason = match (status.reason, status.evaluation_error) {
                (Some(r), _) if !r.is_empty() => r,
                (_, Some(e)) => e,
                _ => String::new(),
            };
            Decision::Deny { reason }
        };
        self.cache.insert(key, decision.clone());
        Ok(decision)
    }
}

/// The `SubjectAccessReview` that asks the question.
pub fn review_of(user: &User, attributes: &Attributes) -> SubjectAccessReview {
    let (resource_attributes, non_resource_attributes) = match attributes {
        Attributes::Resource {
            namespace,
            resource,
            verb,
        } => (
            Some(ResourceAttributes {
                group: Some(GROUP.to_string()),
                version: Some(VERSION.to_string()),
                resource: Some(resource.clone()),
                namespace: Some(namespace.clone()),
                verb: Some(verb.to_string()),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        Attributes::NonResource { path, verb } => (
            None,
            Some(NonResourceAttributes {
                path: Some(path.clone()),
                verb: Some(verb.to_string()),
            }),
        ),
    };
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
            resource_attributes,
            non_resource_attributes,
        },
        ..SubjectAccessReview::default()
    }
}

impl Authorizer for SubjectAccessReviewAuthorizer {
    fn authorize<'a>(
        &'a self,
        user: &'a User,
        attributes: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, AuthzError>> {
        Box::pin(async move {
            if user.groups.iter().any(|g| g == ALWAYS_ALLOW_GROUP) {
                return Ok(Decision::Allow);
            }
            self.review(user, attributes).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> User {
        User {
            name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into(),
            uid: "u-1".into(),
            groups: vec!["system:serviceaccounts".into()],
            ..User::default()
        }
    }

    #[test]
    fn a_metric_is_reviewed_as_a_resource_of_the_group() {
        let attrs = Attributes::Resource {
            namespace: "team-a".into(),
            resource: "lookahead_inflight".into(),
            verb: "list",
        };
        let sar = serde_json::to_value(review_of(&user(), &attrs)).unwrap();
        assert_eq!(sar["kind"], "SubjectAccessReview");
        assert_eq!(sar["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(
            sar["spec"],
            json!({
                "user": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                "uid": "u-1",
                "groups": ["system:serviceaccounts"],
                "resourceAttributes": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "resource": "lookahead_inflight",
                    "namespace": "team-a",
                    "verb": "list"
                }
            })
        );
    }

    #[test]
    fn discovery_is_reviewed_as_a_non_resource_url() {
        let attrs = Attributes::NonResource {
            path: "/apis/external.metrics.k8s.io/v1beta1".into(),
            verb: "get",
        };
        let sar = serde_json::to_value(review_of(&user(), &attrs)).unwrap();
        assert_eq!(
            sar["spec"]["nonResourceAttributes"],
            json!({"path": "/apis/external.metrics.k8s.io/v1beta1", "verb": "get"})
        );
        assert!(sar["spec"].get("resourceAttributes").is_none());
    }

    #[test]
    fn forbidden_message_reads_like_the_api_servers() {
        let attrs = Attributes::Resource {
            namespace: "ns".into(),
            resource: "m".into(),
            verb: "list",
        };
        assert_eq!(
            attrs.forbidden_message(&user(), "no RBAC policy matched"),
            "User \"system:serviceaccount:kube-system:horizontal-pod-autoscaler\" cannot list \
             resource \"m\" in API group \"external.metrics.k8s.io\" in the namespace \"ns\": no \
             RBAC policy matched"
        );
    }
}
