//! The demand one router replica saw, per member: what the router serves at `/demand` and what
//! the operator sums over every replica of a policy to autoscale members (docs/autoscaling.md).
//! Counters are cumulative since the router started; readers take rates from two reports.

use serde::{Deserialize, Serialize};

/// One router replica's view of its pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DemandReport {
    /// The `LLMPool` the router routes across (absent for a hand-written configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Requests this replica is answering now (streams count until their last byte).
    pub in_flight: u64,
    pub members: Vec<MemberDemand>,
}

/// What one member is asked for through one router replica.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberDemand {
    pub member: String,
    /// Requests being answered by this member now.
    pub in_flight: u64,
    /// Requests sent to this member (cumulative).
    pub requests: u64,
    /// Requests that ranked this member first while it had no ready replica (cumulative):
    /// demand it would serve if it were up, the signal that wakes a member scaled to zero.
    pub wanted: u64,
    /// Whether the router currently sees no ready replica behind the member.
    pub cold: bool,
}
