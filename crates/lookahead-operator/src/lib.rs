//! The Lookahead operator: controllers for `LLMPool` (model Deployments, Services, autoscalers)
//! and `RoutingPolicy` (router config, router Deployment with its scoring sidecar, retraining
//! Jobs), leader election, events and metrics. `lookahead operator` is a thin shell over [`run`].

pub mod autoscaling;
pub mod conditions;
pub mod context;
pub mod error;
pub mod hardening;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod server;
pub mod validate;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod testdata;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use lookahead_api::{LLMPool, RoutingPolicy};

pub use context::{Context, Settings};
pub use error::{Error, Result};
pub use metrics::Metrics;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// Settings of a whole operator process.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// Image of router, scorer and training containers.
    pub image: String,
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// `None`: run the controllers right away (one replica only).
    pub leader_election: Option<LeaderElection>,
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers until their watches end. Tests call this in a spawned task.
pub async fn run_controllers(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let ns = ns.as_deref();
    let managed = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        labels::MANAGED_BY
    ));

    let pools = Controller::new(scoped::<LLMPool>(&client, ns), watcher::Config::default())
        .owns(scoped::<Deployment>(&client, ns), managed.clone())
        .owns(scoped::<Service>(&client, ns), managed.clone())
        .run(pool::reconcile, pool::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "llmpool controller event");
            }
        });

    let policies = Controller::new(
        scoped::<RoutingPolicy>(&client, ns),
        watcher::Config::default(),
    );
    let store = policies.store();
    let policies = policies
        .owns(scoped::<ConfigMap>(&client, ns), managed.clone())
        .owns(scoped::<Deployment>(&client, ns), managed.clone())
        .owns(scoped::<Service>(&client, ns), managed.clone())
        .owns(scoped::<Job>(&client, ns), managed)
        // A pool change (membership, readiness) re-reconciles the policies routing over it.
        .watches(
            scoped::<LLMPool>(&client, ns),
            watcher::Config::default(),
            move |pool: LLMPool| {
                let (name, pool_ns) = (pool.name_any(), pool.namespace());
                store
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.pool_ref.name == name && p.namespace() == pool_ns)
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(policy::reconcile, policy::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "routingpolicy controller event");
            }
        });
    futures::join!(pools, policies);
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the operator: metrics/health server, API discovery, leader election, controllers.
/// Returns when shut down by a signal, or with an error when leadership is lost (the process
/// should exit and be restarted as a candidate, as client-go controllers do).
pub async fn run(client: Client, config: OperatorConfig) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %config.listen, "serving /healthz /readyz /metrics");
    let health = server::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, health).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    let hpa = autoscaling::discover_retrying(
        &client,
        Duration::from_millis(500),
        Duration::from_secs(120),
    )
    .await?;
    ready.store(true, Ordering::Relaxed);
    let settings = Settings {
        image: config.image.clone(),
        hpa,
        namespace: config.namespace.clone(),
    };
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics.clone()));

    let Some(le) = config.leader_election else {
        metrics.set_leader(true);
        tokio::select! {
            _ = run_controllers(ctx) => {}
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        return Ok(());
    };

    let lock = leader::LeaseLock::new(
        client,
        &le.namespace,
        &le.lease_name,
        &le.identity,
        le.lease_duration,
    );
    let retry = le.lease_duration / 5;
    tracing::info!(identity = %le.identity, lease = %le.lease_name, "waiting for leadership");
    loop {
        tokio::select! {
            r = lock.try_acquire_or_renew() => match r {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "lease acquisition failed"),
            },
            _ = shutdown_signal() => return Ok(()),
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!(identity = %le.identity, "acquired leadership");
    metrics.set_leader(true);

    // Renew at a third of the lease; give up (and stop reconciling) before the lease can
    // expire, so two leaders never act at once.
    let renew_deadline = le.lease_duration * 2 / 3;
    let renew = async {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(le.lease_duration / 3).await;
            match lock.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    return Error::LeadershipLost("another replica holds the lease".into())
                }
                Err(e) if last_renewed.elapsed() >= renew_deadline => {
                    return Error::LeadershipLost(format!("could not renew the lease: {e}"))
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    };
    let outcome = tokio::select! {
        _ = run_controllers(ctx) => Ok(()),
        e = renew => Err(e),
        _ = shutdown_signal() => {
            tracing::info!("shutting down; releasing the lease");
            Ok(())
        }
    };
    metrics.set_leader(false);
    if outcome.is_ok() {
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
    outcome
}
