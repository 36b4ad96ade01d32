//! Scale to zero and back (KEDA's split: the operator does 0 <-> 1, the HorizontalPodAutoscaler
//! 1 <-> N). For every template member with `replicas.min: 0`, each round: a member at zero
//! that a request ranked first since it went to zero (wanted demand, from the routers) is woken
//! to one replica; a running member with no requests for `idleAfter` goes to zero. Runs on the
//! leader only, and takes nothing to zero while some router could not be read (an unknown
//! demand is not an idle one). docs/autoscaling.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use lookahead_api::pool::PoolMember;
use lookahead_api::LLMPool;
use serde_json::json;

use crate::context::Context;
use crate::demand::{Activity, DemandBoard, MemberKey};
use crate::error::Result;
use crate::pool::children::member_object_name;

/// What one round does to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keep,
    /// 0 -> 1: it was wanted since it went to zero.
    Wake,
    /// N -> 0: idle for `idleAfter`.
    Sleep,
}

/// Decides one member's step from its replicas, its demand and when it last went to zero.
pub fn decide(
    replicas: i32,
    activity: Option<&Activity>,
    slept_at: Option<Instant>,
    idle_after: Duration,
    complete: bool,
    now: Instant,
) -> Step {
    let Some(act) = activity else {
        // No router reports the member: nothing routes to it, and nothing could wake it.
        return Step::Keep;
    };
    if replicas == 0 {
        let wanted_since_sleep = act
            .last_wanted
            .is_some_and(|w| slept_at.is_none_or(|s| w > s));
        return if wanted_since_sleep {
            Step::Wake
        } else {
            Step::Keep
        };
    }
    let idle = now.saturating_duration_since(act.last_demand()) >= idle_after;
    if complete && idle {
        Step::Sleep
    } else {
        Step::Keep
    }
}

/// The loop's memory: when the operator last took each member to zero.
#[derive(Debug, Default)]
pub struct ScaleToZero {
    slept_at: HashMap<MemberKey, Instant>,
}

impl ScaleToZero {
    /// Runs a round every `every` until the task is dropped.
    pub async fn run(mut self, ctx: Arc<Context>, board: Arc<DemandBoard>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.round(&ctx, &board).await {
                tracing::warn!(error = %e, "scale-to-zero round failed");
            }
        }
    }

    /// One round over every pool's `min: 0` template members.
    pub async fn round(&mut self, ctx: &Context, board: &DemandBoard) -> Result<()> {
        let pools: Api<LLMPool> = match &ctx.settings.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        let snap = board.snapshot();
        for pool in pools.list(&Default::default()).await? {
            let ns = pool.namespace().unwrap_or_default();
            let scalable = pool
                .spec
                .members
                .iter()
                .filter(|m| m.template.is_some() && m.replicas.min == 0);
            for m in scalable {
                let key = MemberKey {
                    namespace: ns.clone(),
                    pool: pool.name_any(),
                    member: m.name.clone(),
                };
                let activity = snap.members.get(&key).map(|(_, a)| a);
                self.member(ctx, &pool, m, &key, activity, snap.complete)
                    .await?;
            }
        }
        Ok(())
    }

    async fn member(
        &mut self,
        ctx: &Context,
        pool: &LLMPool,
        m: &PoolMember,
        key: &MemberKey,
        activity: Option<&Activity>,
        complete: bool,
    ) -> Result<()> {
        let deployments: Api<Deployment> = ctx.api(&key.namespace);
        let name = member_object_name(&key.pool, &key.member);
        let Some(d) = deployments.get_opt(&name).await? else {
            return Ok(());
        };
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        // A malformed idleAfter is rejected by the schema; fall back to the default if not.
        let idle_after = lookahead_api::config::parse_duration(&m.replicas.idle_after)
            .unwrap_or(Duration::from_secs(300));
        let now = Instant::now();
        let slept_at = self.slept_at.get(key).copied();
        let (to, reason, note) =
            match decide(replicas, activity, slept_at, idle_after, complete, now) {
                Step::Keep => return Ok(()),
                Step::Wake => (
                    1,
                    "Waking",
                    format!("member {} was asked for: 0 -> 1 replica", m.name),
                ),
                Step::Sleep => {
                    self.slept_at.insert(key.clone(), now);
                    let note = format!(
                        "member {} had no requests for {}: {replicas} -> 0 replicas",
                        m.name, m.replicas.idle_after
                    );
                    (0, "ScaledToZero", note)
                }
            };
        let patch = json!({ "spec": { "replicas": to } });
        deployments
            .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(pool = %key.pool, member = %key.member, replicas = to, reason, "scaled");
        ctx.metrics.scaled(reason);
        ctx.publish(pool, EventType::Normal, reason, note, "Scale")
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(first: Instant, active: Option<Instant>, wanted: Option<Instant>) -> Activity {
        Activity {
            first_seen: first,
            last_active: active,
            last_wanted: wanted,
        }
    }

    #[test]
    fn an_idle_member_sleeps_only_after_idle_after_and_only_on_a_complete_round() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let a = act(t0, Some(t0), None);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(decide(2, Some(&a), None, idle, true, at(10)), Step::Keep);
        assert_eq!(decide(2, Some(&a), None, idle, true, at(31)), Step::Sleep);
        assert_eq!(
            decide(2, Some(&a), None, idle, false, at(31)),
            Step::Keep,
            "a router that did not answer might have demand"
        );
        assert_eq!(decide(2, None, None, idle, true, at(31)), Step::Keep);
    }

    #[test]
    fn a_member_at_zero_wakes_on_demand_wanted_after_it_slept() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let at = |s| t0 + Duration::from_secs(s);
        let slept = Some(at(40));
        let stale = act(t0, Some(t0), Some(at(5)));
        assert_eq!(
            decide(0, Some(&stale), slept, idle, true, at(41)),
            Step::Keep
        );
        let fresh = act(t0, Some(t0), Some(at(45)));
        assert_eq!(
            decide(0, Some(&fresh), slept, idle, true, at(46)),
            Step::Wake
        );
        assert_eq!(
            decide(0, Some(&fresh), None, idle, false, at(46)),
            Step::Wake
        );
        let never = act(t0, None, None);
        assert_eq!(
            decide(0, Some(&never), None, idle, true, at(46)),
            Step::Keep
        );
    }
}
