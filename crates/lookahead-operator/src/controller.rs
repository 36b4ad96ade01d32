//! What both controllers share around their reconcile steps: the timing and backoff bookkeeping
//! of a reconcile, the server-side-apply status patch, the report of an invalid spec, and the
//! error policy (per-object exponential backoff, see [`crate::backoff`]).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::backoff;
use crate::conditions::{find, READY};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::labels::MANAGER;
use crate::validate::{self, Problem};

/// A custom resource one of the controllers reconciles.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Controller name in metrics and logs.
    const CONTROLLER: &'static str;
}

/// Runs the `steps` of one reconcile of `obj`: counts and times it, and forgets the object's
/// failure streak once it succeeds.
pub async fn instrumented<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    steps: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(K::CONTROLLER);
    let result = steps.await;
    if result.is_ok() {
        ctx.backoff.succeeded(&backoff::key(obj));
    }
    result
}

/// Writes `status` with server-side apply (forced: the operator owns the status).
pub async fn patch_status<K: Reconciled>(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<()> {
    let api: Api<K> = ctx.api(ns);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// An invalid spec as its status reports it: the first problem's reason, every problem's
/// message.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(problems: &[Problem]) -> Self {
        Invalid {
            reason: problems.first().map_or("InvalidSpec", |p| p.reason),
            message: validate::summary(problems),
        }
    }

    /// Whether `previous` conditions already report exactly this.
    fn reported_in(&self, previous: &[Condition]) -> bool {
        find(previous, READY).is_some_and(|c| c.reason == self.reason && c.message == self.message)
    }
}

/// Reports an invalid spec: writes `status` (built by the controller, `Ready=False` with the
/// invalid reason), publishes a Warning Event the first time this exact problem is seen (by the
/// `previous` conditions), and waits for a change. No children are touched: what already runs
/// is left running.
pub async fn report_invalid<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    ns: &str,
    invalid: Invalid,
    previous: &[Condition],
    status: &impl Serialize,
) -> Result<Action> {
    let first_report = !invalid.reported_in(previous);
    patch_status::<K>(ctx, ns, &obj.name_any(), status).await?;
    if first_report {
        ctx.publish(
            obj,
            EventType::Warning,
            invalid.reason,
            invalid.message,
            "Validate",
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Deletes `name` (in the background); already gone counts as done.
pub async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Counts and logs a failed reconcile of `obj` and returns how long it waits before the retry:
/// longer with each failure in a row (see [`crate::backoff`]).
pub fn retry_delay<K: Reconciled>(obj: &K, error: &Error, ctx: &Context) -> Duration {
    ctx.metrics.failure(K::CONTROLLER, error);
    let delay = ctx.backoff.failed(backoff::key(obj));
    tracing::warn!(
        controller = K::CONTROLLER,
        object = %obj.name_any(),
        ns = obj.namespace().unwrap_or_default(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    delay
}

/// The error policy of both controllers: requeue after [`retry_delay`].
pub fn error_policy<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(retry_delay(obj.as_ref(), error, &ctx))
}
