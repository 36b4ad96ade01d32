//! Reads `/demand` from every router pod the operator manages (plain HTTP on the router port,
//! inside the cluster network), all pods at once, each bounded by a timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use lookahead_api::demand::DemandReport;

use super::aggregate::PodReport;
use crate::labels::{MANAGED_BY, POLICY_LABEL};
use crate::policy::router::ROUTER_PORT;

/// Fetches router pods' demand reports.
#[derive(Clone)]
pub struct Collector {
    client: Client,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    namespace: Option<String>,
    timeout: Duration,
}

impl Collector {
    pub fn new(client: Client, namespace: Option<String>, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client,
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            namespace,
            timeout,
        }
    }

    /// One round: the reports of every running router pod, and whether all of them answered.
    pub async fn round(&self) -> (Vec<PodReport>, bool) {
        let pods: Api<Pod> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let selector =
            format!("app.kubernetes.io/component=router,app.kubernetes.io/managed-by={MANAGED_BY}");
        let list = match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing router pods failed");
                return (Vec::new(), false);
            }
        };
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        let answers = futures::future::join_all(running.iter().map(|p| self.fetch(p))).await;
        let complete = answers.iter().all(Option::is_some);
        (answers.into_iter().flatten().collect(), complete)
    }

    async fn fetch(&self, pod: &Pod) -> Option<PodReport> {
        let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
        let uri: http::Uri = format!("http://{ip}:{ROUTER_PORT}/demand").parse().ok()?;
        let get = async {
            let resp = self.http.get(uri).await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<DemandReport>(&body.to_bytes()).map_err(|e| e.to_string())
        };
        let report = match tokio::time::timeout(self.timeout, get).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(pod = %pod.name_any(), error = %e, "router demand unavailable");
                return None;
            }
            Err(_) => {
                tracing::debug!(pod = %pod.name_any(), "router demand timed out");
                return None;
            }
        };
        Some(PodReport {
            namespace: pod.namespace().unwrap_or_default(),
            pod: pod.name_any(),
            policy: pod.labels().get(POLICY_LABEL).cloned(),
            report,
        })
    }
}
