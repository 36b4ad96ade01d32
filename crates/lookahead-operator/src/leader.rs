//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does
//! it: a holder renews the lease; a candidate takes it over only after it has seen the same
//! record unchanged for a whole lease duration (measured on its own clock, so clock skew between
//! replicas does not matter). Writes carry the read `resourceVersion`, so two candidates cannot
//! both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// One candidate for a named lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    observed: Mutex<Option<Observed>>,
}

struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

impl LeaseLock {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// Tries to acquire the lease, or renew it if held. `Ok(true)`: this candidate leads until
    /// one lease duration from now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() {
            let mut observed = self.observed.lock().await;
            let rv = lease.metadata.resource_version.clone();
            let held_for = match observed.as_ref() {
                Some(o) if o.resource_version == rv => o.at.elapsed(),
                _ => {
                    *observed = Some(Observed {
                        resource_version: rv,
                        at: Instant::now(),
                    });
                    Duration::ZERO
                }
            };
            let their_duration = spec
                .lease_duration_seconds
                .map_or(self.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            if held_for < their_duration {
                return Ok(false);
            }
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(secs);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this candidate holds the lease, trying every fifth of a lease duration.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "lease acquisition failed"),
            }
            tokio::time::sleep(self.lease_duration / 5).await;
        }
    }

    /// Holds the lease: renews it every third of a lease duration, and gives up (returning
    /// why) when another replica took it or when renewals kept failing for two thirds of a
    /// lease duration, before the lease can expire, so two leaders never act at once.
    pub async fn hold(&self) -> Error {
        let renew_deadline = self.lease_duration * 2 / 3;
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire_or_renew().await {
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
    }

    /// Gives the lease up (on shutdown) so another replica takes over without waiting.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
