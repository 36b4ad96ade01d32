//! A pool's status: per-member readiness, the pool fingerprint, and the `Ready` and `Degraded`
//! conditions.

use kube::Resource;
use lookahead_api::pool::{LLMPoolStatus, MemberStatus};
use lookahead_api::LLMPool;

use crate::conditions::{Conditions, DEGRADED, READY};
use crate::controller::Invalid;

/// Builds the status of a valid pool from its members' states.
pub fn pool_status(
    pool: &LLMPool,
    members: Vec<MemberStatus>,
    previous: &LLMPoolStatus,
    generation: Option<i64>,
) -> LLMPoolStatus {
    let total = members.len();
    let ready = members.iter().filter(|m| m.ready).count();
    let not_ready: Vec<&str> = members
        .iter()
        .filter(|m| !m.ready)
        .map(|m| m.name.as_str())
        .collect();
    let all_ready = not_ready.is_empty();
    let mut c = Conditions::new(&previous.conditions, generation);
    if all_ready {
        c.set(
            READY,
            true,
            "AllMembersReady",
            format!("{ready}/{total} members ready"),
        )
        .set(DEGRADED, false, "AllMembersReady", "every member is ready");
    } else {
        let waiting = not_ready.join(", ");
        let message = format!("{ready}/{total} members ready; waiting for: {waiting}");
        c.set(READY, false, "MembersNotReady", message);
        if ready == 0 {
            let message = format!("no member is ready: {waiting}");
            c.set(DEGRADED, true, "NoMemberReady", message);
        } else {
            let message = format!("routing around unready members: {waiting}");
            c.set(DEGRADED, true, "MembersUnavailable", message);
        }
    }
    LLMPoolStatus {
        observed_generation: generation,
        fingerprint: Some(pool.spec.fingerprint()),
        member_count: i32::try_from(total).unwrap_or(i32::MAX),
        ready_members: Some(format!("{ready}/{total}")),
        members,
        conditions: c.build(),
    }
}

/// The status of an invalid pool: `Ready=False` and `Degraded=True` with the problem, the
/// members as last seen.
pub fn invalid_status(
    pool: &LLMPool,
    previous: &LLMPoolStatus,
    invalid: &Invalid,
) -> LLMPoolStatus {
    let generation = pool.meta().generation;
    let mut c = Conditions::new(&previous.conditions, generation);
    c.set(READY, false, invalid.reason, invalid.message.clone())
        .set(DEGRADED, true, invalid.reason, invalid.message.clone());
    LLMPoolStatus {
        observed_generation: generation,
        fingerprint: previous.fingerprint.clone(),
        member_count: i32::try_from(pool.spec.members.len()).unwrap_or(i32::MAX),
        ready_members: previous.ready_members.clone(),
        members: previous.members.clone(),
        conditions: c.build(),
    }
}
