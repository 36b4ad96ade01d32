//! Routing decisions: score the prompt (in-process, over gRPC, or a baseline method), rank the
//! members by `quality - costWeight x price`, and fail open to the default model whenever the
//! scorer is down, slow or confused. An artifact that was not accepted is not asked at all: its
//! fallback model (the best single model) comes first ([`crate::acceptance`]).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::acceptance::AcceptanceGate;
use crate::grpc::GrpcScorer;
pub use crate::slot::{dir_fingerprint, load_slot, spawn_reloader, ScorerLoader, ScorerSlot};

/// Where scores come from.
#[derive(Clone)]
pub enum ScoreSource {
    /// A scorer in this process (on tokio's blocking pool, unless it says it is trivial).
    InProcess(Arc<ScorerSlot>),
    /// The scoring sidecar.
    Grpc(GrpcScorer),
    /// Uniformly random member (a baseline).
    Random,
    /// Always the default model (a baseline).
    Fixed,
}

/// One member as the ranker sees it.
#[derive(Debug, Clone)]
pub struct RankedMember {
    pub name: String,
    pub model_id: String,
    /// Blended price per million tokens (mean of input and output price).
    pub price: f64,
}

/// The outcome of ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Member indices, best first; every member appears once.
    pub order: Vec<usize>,
    /// Utility per member index (`None` when unscored).
    pub utility: Vec<Option<f64>>,
    /// Set when the order is not the scorer's ranking, and why.
    pub fallback: Option<Fallback>,
}

/// Why scoring failed open: the scorer answered an error, panicked, named none of the pool's
/// models, did not answer in time, or could not be reached. The `x-lookahead-fallback` value and the
/// `lookahead_router_fail_open_total` label.
pub const FAIL_OPEN_REASONS: [&str; 5] = [
    SCORER_ERROR,
    SCORER_PANIC,
    SCORER_POOL_MISMATCH,
    SCORER_TIMEOUT,
    SCORER_UNAVAILABLE,
];
const SCORER_ERROR: &str = "scorer_error";
const SCORER_PANIC: &str = "scorer_panic";
const SCORER_POOL_MISMATCH: &str = "scorer_pool_mismatch";
const SCORER_TIMEOUT: &str = "scorer_timeout";
const SCORER_UNAVAILABLE: &str = "scorer_unavailable";

/// Why a routed request was not ranked by the scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Scoring failed (`scorer_timeout`, `scorer_error`, ...): the default model first.
    FailOpen(&'static str),
    /// The artifact did not beat the best single model on validation: that model first.
    NotAccepted,
}

impl Fallback {
    /// The `x-lookahead-fallback` value.
    pub fn reason(self) -> &'static str {
        match self {
            Fallback::FailOpen(reason) => reason,
            Fallback::NotAccepted => "not_accepted",
        }
    }
}

/// Ranks members for a prompt.
#[derive(Clone)]
pub struct Ranker {
    pub source: ScoreSource,
    pub members: Vec<RankedMember>,
    pub cost_weight: f64,
    pub default_member: usize,
    pub timeout: Duration,
    /// The acceptance gate of the served artifact.
    pub gate: Arc<AcceptanceGate>,
}

impl Ranker {
    /// The fail-open order: the default member, then the rest in configuration order.
    pub fn default_order(&self) -> Vec<usize> {
        self.order_from(self.default_member)
    }

    /// `first`, then the other members in configuration order.
    fn order_from(&self, first: usize) -> Vec<usize> {
        let mut order = vec![first];
        order.extend((0..self.members.len()).filter(|&i| i != first));
        order
    }

    fn fail_open(&self, reason: &'static str) -> Decision {
        Decision {
            order: self.default_order(),
            utility: vec![None; self.members.len()],
            fallback: Some(Fallback::FailOpen(reason)),
        }
    }

    /// The decision while the artifact is not accepted: its fallback member, unscored.
    fn not_accepted(&self, member: usize) -> Decision {
        Decision {
            order: self.order_from(member),
            utility: vec![None; self.members.len()],
            fallback: Some(Fallback::NotAccepted),
        }
    }

    /// Maps a scorer's (models, scores) onto members: a member matches a scored model by its
    /// `modelId`, else by its name. Unscored members rank after all scored ones.
    pub fn decide_from_scores(&self, models: &[String], scores: &[f32]) -> Decision {
        self.decide_from_scores_at(models, scores, self.cost_weight)
    }

    /// [`Ranker::decide_from_scores`] with `cost_weight` instead of the policy's (a profile's or
    /// the request's, [`crate::cost`]).
    pub fn decide_from_scores_at(
        &self,
        models: &[String],
        scores: &[f32],
        cost_weight: f64,
    ) -> Decision {
        if models.len() != scores.len() {
            return self.fail_open(SCORER_ERROR);
        }
        let utility: Vec<Option<f64>> = self
            .members
            .iter()
            .map(|m| {
                models
                    .iter()
                    .position(|s| *s == m.model_id)
                    .or_else(|| models.iter().position(|s| *s == m.name))
                    .map(|j| f64::from(scores[j]) - cost_weight * m.price)
                    .filter(|u| u.is_finite())
            })
            .collect();
        if utility.iter().all(Option::is_none) {
            return self.fail_open(SCORER_POOL_MISMATCH);
        }
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        // Scored before unscored, then by utility (desc); ties keep configuration order.
        order.sort_by(|&a, &b| match (utility[a], utility[b]) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        Decision {
            order,
            utility,
            fallback: None,
        }
    }

    /// Ranks members for `prompt`. Never fails: any scorer problem fails open, and an artifact
    /// that was not accepted is not asked.
    pub async fn decide(&self, prompt: &str) -> Decision {
        self.decide_at(prompt, self.cost_weight).await
    }

    /// [`Ranker::decide`] ranking by `quality - cost_weight x price` (the weight only matters
    /// when the scorer gives scores).
    pub async fn decide_at(&self, prompt: &str, cost_weight: f64) -> Decision {
        if let Some(member) = self.gate.fallback() {
            return self.not_accepted(member);
        }
        match &self.source {
            ScoreSource::Fixed => Decision {
                order: self.default_order(),
                utility: vec![None; self.members.len()],
                fallback: None,
            },
            ScoreSource::Random => {
                let first = rand::rng().random_range(0..self.members.len());
                Decision {
                    order: self.order_from(first),
                    utility: vec![None; self.members.len()],
                    fallback: None,
                }
            }
            ScoreSource::InProcess(slot) => self.score_in_process(slot, prompt, cost_weight).await,
            ScoreSource::Grpc(client) => {
                match tokio::time::timeout(self.timeout, client.score_one(prompt)).await {
                    Err(_) => self.fail_open(SCORER_TIMEOUT),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "scoring sidecar unavailable");
                        self.fail_open(SCORER_UNAVAILABLE)
                    }
                    Ok(Ok((models, row))) => self.decide_from_scores_at(&models, &row, cost_weight),
                }
            }
        }
    }
}

impl Ranker {
    /// Scores with the slot's current scorer: on tokio's blocking pool under the score timeout,
    /// or right here when the scorer says a call is trivially cheap (no model to run), where the
    /// hop to another thread would cost more than the call.
    async fn score_in_process(&self, slot: &ScorerSlot, prompt: &str, weight: f64) -> Decision {
        let scorer = slot.scorer();
        if scorer.is_trivial() {
            return match scorer.score_batch(&[prompt]) {
                Ok(rows) => self.decide_from_rows(scorer.models(), rows, weight),
                Err(e) => {
                    tracing::warn!(error = %e, "scorer failed");
                    self.fail_open(SCORER_ERROR)
                }
            };
        }
        let p = prompt.to_string();
        let job = tokio::task::spawn_blocking(move || {
            let out = scorer.score_batch(&[p.as_str()]);
            (scorer, out)
        });
        match tokio::time::timeout(self.timeout, job).await {
            Err(_) => self.fail_open(SCORER_TIMEOUT),
            Ok(Err(_)) => self.fail_open(SCORER_PANIC),
            Ok(Ok((_, Err(e)))) => {
                tracing::warn!(error = %e, "scorer failed");
                self.fail_open(SCORER_ERROR)
            }
            Ok(Ok((scorer, Ok(rows)))) => self.decide_from_rows(scorer.models(), rows, weight),
        }
    }

    /// The decision from a one-prompt batch of scores.
    fn decide_from_rows(
        &self,
        models: &[String],
        mut rows: Vec<Vec<f32>>,
        weight: f64,
    ) -> Decision {
        match rows.pop() {
            Some(row) => self.decide_from_scores_at(models, &row, weight),
            None => self.fail_open(SCORER_ERROR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranker(cost_weight: f64) -> Ranker {
        let m = |name: &str, id: &str, price: f64| RankedMember {
            name: name.into(),
            model_id: id.into(),
            price,
        };
        let config: lookahead_api::RouterConfig = serde_yaml::from_str(
            "members:\n  - { name: yi, modelId: Yi-34B, baseUrl: 'http://a/v1' }\n  - { name: phi, modelId: Phi-3, baseUrl: 'http://b/v1' }\n  - { name: new, modelId: New-1, baseUrl: 'http://c/v1' }\npolicy:\n  method: fixed\n",
        )
        .unwrap();
        Ranker {
            source: ScoreSource::Fixed,
            members: vec![
                m("yi", "Yi-34B", 2.0),
                m("phi", "Phi-3", 0.5),
                m("new", "New-1", 0.1),
            ],
            cost_weight,
            default_member: 1,
            timeout: Duration::from_millis(100),
            gate: Arc::new(AcceptanceGate::new(&config, 1)),
        }
    }

    #[test]
    fn ranks_by_quality_minus_weighted_price() {
        let models = vec!["Phi-3".to_string(), "Yi-34B".to_string()];
        let d = ranker(0.0).decide_from_scores(&models, &[0.5, 0.9]);
        assert_eq!(d.order, vec![0, 1, 2]);
        let d = ranker(0.5).decide_from_scores(&models, &[0.5, 0.9]);
        assert_eq!(
            d.order,
            vec![1, 0, 2],
            "yi costs 0.75 more utility than phi"
        );
        assert!(d.fallback.is_none());
    }

    #[tokio::test]
    async fn a_not_accepted_artifact_puts_its_fallback_member_first_unscored() {
        let r = ranker(0.0);
        let mut verdict = lookahead_model::Acceptance {
            gain: -2.0,
            lower_bound: -4.0,
            accepted: false,
            fallback_model: "New-1".into(),
            min_gain: 0.0,
            level: 0.95,
            resamples: 2000,
            examples: 100,
            folds: 0,
        };
        r.gate.apply(Some(&verdict));
        let d = r.decide("anything").await;
        assert_eq!(d.order, vec![2, 0, 1]);
        assert_eq!(d.fallback, Some(Fallback::NotAccepted));
        assert!(d.utility.iter().all(Option::is_none));
        verdict.accepted = true;
        r.gate.apply(Some(&verdict));
        assert_eq!(r.decide("anything").await.fallback, None);
    }

    #[test]
    fn fails_open_on_a_foreign_pool() {
        let d = ranker(0.0).decide_from_scores(&["other".to_string()], &[1.0]);
        assert_eq!(d.fallback, Some(Fallback::FailOpen("scorer_pool_mismatch")));
        assert_eq!(d.order[0], 1);
    }
}
