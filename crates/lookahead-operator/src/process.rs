//! The operator process: the health and metrics server, API discovery, the demand board (read
//! from the routers on every replica) and the external metrics API it feeds, leader election,
//! and while leading the two controllers and scale-to-zero, until a signal or lost leadership
//! (or a failed external metrics API) ends it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::context::{Context, Settings};
use crate::controller::error_policy;
use crate::demand::{Collector, DemandBoard};
use crate::error::Result;
use crate::external_metrics::{self, ServeOptions};
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::scale_to_zero::ScaleToZero;
use crate::{autoscaling, disruption, labels, policy, pool, server};

/// How often every replica reads the routers' demand.
const DEMAND_ROUND: Duration = Duration::from_secs(2);
/// How long one router may take to answer `/demand`.
const DEMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the leader checks `min: 0` members for scaling to zero and back.
const SCALE_TO_ZERO_ROUND: Duration = Duration::from_secs(2);

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
    /// Serve `external.metrics.k8s.io/v1beta1` (every replica, leader or not).
    pub external_metrics: Option<ServeOptions>,
    /// Span export and log format of the router pods.
    pub telemetry: crate::telemetry::Telemetry,
    /// Pull secrets of the router, scorer and training pods (see [`Settings::image_pull_secrets`]).
    pub image_pull_secrets: Vec<String>,
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
        .run(pool::reconcile, error_policy, ctx.clone())
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
    ctx.metrics.watch_policies(store.clone());
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
        .run(policy::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "routingpolicy controller event");
            }
        });
    futures::join!(pools, policies);
}

/// What runs while this replica leads: both controllers and scale-to-zero.
async fn lead(ctx: Arc<Context>, board: Arc<DemandBoard>) {
    let scaler = ScaleToZero::default().run(ctx.clone(), board, SCALE_TO_ZERO_ROUND);
    futures::join!(run_controllers(ctx), scaler);
}

/// The external metrics API on the board's demand: runs until it fails (never, when not asked
/// for), so that a broken API server ends the process and its pod restarts.
async fn serve_external_metrics(
    client: Client,
    board: Arc<DemandBoard>,
    opts: Option<ServeOptions>,
) -> Result<()> {
    let Some(opts) = opts else {
        return std::future::pending().await;
    };
    external_metrics::serve(client, board, opts, std::future::pending()).await?;
    Ok(())
}

/// Runs the operator: metrics/health server, API discovery, leader election, controllers.
/// Returns when `shutdown` resolves (the binary passes its SIGTERM/Ctrl-C future), or with an
/// error when leadership is lost (the process should exit and be restarted as a candidate, as
/// client-go controllers do).
pub async fn run(
    client: Client,
    config: OperatorConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    serve_health(config.listen, &metrics, &ready).await?;
    let hpa = autoscaling::discover_retrying(
        &client,
        Duration::from_millis(500),
        Duration::from_secs(120),
    )
    .await?;
    let pdb = disruption::discover(&client).await?;
    ready.store(true, Ordering::Relaxed);
    let settings = Settings {
        image: config.image.clone(),
        hpa,
        pdb,
        namespace: config.namespace.clone(),
        telemetry: config.telemetry.clone(),
        image_pull_secrets: config.image_pull_secrets.clone(),
    };
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics.clone()));
    let board = Arc::new(DemandBoard::default());
    let collector = Collector::new(client.clone(), config.namespace.clone(), DEMAND_TIMEOUT);
    let collecting = tokio::spawn(board.clone().collect_forever(collector, DEMAND_ROUND));
    let api = serve_external_metrics(client.clone(), board.clone(), config.external_metrics);
    let operate = async {
        let Some(le) = config.leader_election else {
            metrics.set_leader(true);
            tokio::select! {
                () = lead(ctx, board) => {}
                () = shutdown => tracing::info!("shutting down"),
            }
            return Ok(());
        };
        run_elected(client, ctx, board, le, shutdown).await
    };
    let outcome = tokio::select! {
        r = operate => r,
        r = api => r,
    };
    collecting.abort();
    outcome
}

/// Binds `/healthz`, `/readyz` and `/metrics` and serves them in the background.
async fn serve_health(
    listen: SocketAddr,
    metrics: &Arc<Metrics>,
    ready: &Arc<AtomicBool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listen, "serving /healthz /readyz /metrics");
    let health = server::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, health).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

/// Runs the controllers while this replica leads; releases the lease on shutdown.
async fn run_elected(
    client: Client,
    ctx: Arc<Context>,
    board: Arc<DemandBoard>,
    le: LeaderElection,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let metrics = ctx.metrics.clone();
    let lock = LeaseLock::new(
        client,
        &le.namespace,
        &le.lease_name,
        &le.identity,
        le.lease_duration,
    );
    tokio::pin!(shutdown);
    tracing::info!(identity = %le.identity, lease = %le.lease_name, "waiting for leadership");
    tokio::select! {
        () = lock.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(identity = %le.identity, "acquired leadership");
    metrics.set_leader(true);
    let outcome = tokio::select! {
        () = lead(ctx, board) => Ok(()),
        e = lock.hold() => Err(e),
        () = &mut shutdown => {
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
