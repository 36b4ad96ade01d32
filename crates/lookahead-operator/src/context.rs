//! What every reconcile shares: the client, settings, metrics, the event reporter and the
//! per-object error backoff.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec};
use kube::api::{Api, ApiResource};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::backoff::ErrorBackoff;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Operator settings that do not come from the custom resources.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of the router, scorer and training containers (the operator's own by default).
    pub image: String,
    /// The HorizontalPodAutoscaler API the server serves (see [`crate::autoscaling`]).
    pub hpa: ApiResource,
    /// The PodDisruptionBudget API the server serves (see [`crate::disruption`]); `None`: none.
    pub pdb: Option<ApiResource>,
    /// Only watch this namespace (tests, namespaced installs); `None` watches all.
    pub namespace: Option<String>,
    /// Span export and log format of the router pods.
    pub telemetry: crate::telemetry::Telemetry,
    /// Secrets (in each policy's namespace) the kubelet pulls the operator's image with, for the
    /// router, scorer and training pods it runs from that image (`--image-pull-secret`, the
    /// chart's `imagePullSecrets`): a private registry serves them as it serves the operator.
    pub image_pull_secrets: Vec<String>,
}

impl Settings {
    /// Adds the image pull secrets to `pod` (a pod the operator runs from its image), after any
    /// the pod already names.
    pub fn add_pull_secrets(&self, pod: Option<&mut PodSpec>) {
        let Some(pod) = pod.filter(|_| !self.image_pull_secrets.is_empty()) else {
            return;
        };
        let secrets = pod.image_pull_secrets.get_or_insert_with(Vec::new);
        for name in &self.image_pull_secrets {
            if !secrets.iter().any(|s| s.name == *name) {
                secrets.push(LocalObjectReference { name: name.clone() });
            }
        }
    }
}

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    /// Failure streaks, for the requeue delay of failed reconciles.
    pub backoff: ErrorBackoff,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        Context {
            client,
            settings,
            metrics,
            reporter: Reporter {
                controller: crate::labels::MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            backoff: ErrorBackoff::default(),
        }
    }

    /// Publishes an Event about `obj`. Events are best effort: a failure is logged, not raised,
    /// so that an events outage cannot block reconciliation.
    pub async fn publish<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// A namespaced API for objects living next to `owner`.
    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// The namespace of a namespaced custom resource.
pub fn namespace_of<K: Resource>(obj: &K, kind: &'static str) -> Result<String> {
    obj.namespace().ok_or_else(|| Error::MissingNamespace {
        kind,
        name: obj.name_any(),
    })
}

/// Controller owner reference to `obj`, for children garbage-collected with it.
pub fn owner_ref<K: Resource<DynamicType = ()>>(
    obj: &K,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    obj.controller_owner_ref(&())
        .ok_or_else(|| Error::OwnerReference(obj.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::GroupVersionKind;

    fn settings(secrets: &[&str]) -> Settings {
        let gvk = GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler");
        Settings {
            image: "img".into(),
            hpa: ApiResource::from_gvk(&gvk),
            pdb: None,
            namespace: None,
            telemetry: Default::default(),
            image_pull_secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn pull_secrets_are_added_once_after_the_pods_own() {
        let mut pod = PodSpec {
            image_pull_secrets: Some(vec![LocalObjectReference { name: "own".into() }]),
            ..Default::default()
        };
        let s = settings(&["regcred", "own"]);
        s.add_pull_secrets(Some(&mut pod));
        s.add_pull_secrets(Some(&mut pod));
        let names: Vec<&str> = pod
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["own", "regcred"]);
        let mut bare = PodSpec::default();
        settings(&[]).add_pull_secrets(Some(&mut bare));
        assert!(
            bare.image_pull_secrets.is_none(),
            "none asked: no empty list"
        );
    }
}
