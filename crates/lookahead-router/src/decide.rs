//! The decision stage: which member(s) a request goes to. A request naming a member goes there
//! unscored; the alias is ranked by the scorer (failing open to the default model), or, while
//! the artifact is not accepted, goes to its fallback model; then the attempt order skips
//! cold members (no ready replica: [`crate::demand`]) and ejected ones, and is cut to
//! `1 + retries`.

use tokio::time::Instant;

use crate::cost::{CostChoice, CostProfiles};
use crate::demand::Demand;
use crate::fit::{self, Misfit};
use crate::metrics::RouterMetrics;
use crate::openai::needs::Needs;
use crate::openai::{CompletionRequest, Endpoint};
use crate::outlier::OutlierDetector;
use crate::pool::{Pool, Target};
use crate::scoring::{Decision, Fallback, Ranker};
use crate::ApiError;

/// Where a request goes, and in which order members are tried.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub target: Target,
    pub decision: Decision,
    pub attempts: Attempts,
    /// The costWeight a routed request was ranked with (`None` for a named member).
    pub cost: Option<CostChoice<'a>>,
}

/// The members a request tries now, and those it passes over for having no ready replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    pub order: Vec<usize>,
    pub cold: Vec<usize>,
}

/// What the decision stage reads.
pub struct Decider<'a> {
    pub pool: &'a Pool,
    pub ranker: &'a Ranker,
    pub outlier: &'a OutlierDetector,
    pub demand: &'a Demand,
    pub metrics: &'a RouterMetrics,
    pub retries: u32,
    pub cost: &'a CostProfiles,
}

impl<'a> Decider<'a> {
    /// The plan for `request` (404 for an unknown model or cost profile, 400 for a bad
    /// `x-lookahead-cost-weight` header in `headers` or when no member can take the request).
    pub async fn plan(
        &self,
        request: &CompletionRequest,
        headers: &http::HeaderMap,
    ) -> Result<Plan<'a>, ApiError> {
        let (target, profile) = self.resolve(&request.model)?;
        // Embeddings go to members marked for them whatever else the pool declares.
        let embeddings = request.endpoint == Endpoint::Embeddings;
        let needs = (self.pool.constrained || embeddings).then(|| request.needs());
        let (decision, cost) = match (target, &needs) {
            (Target::Member(i), _) => {
                // The weight does not apply, but a bad header is still answered 400.
                self.cost.override_weight(headers)?;
                if let Some(needs) = &needs {
                    self.check_pinned(i, needs)?;
                }
                (self.unscored(vec![i]), None)
            }
            (Target::Routed, Some(needs)) if embeddings => {
                let all: Vec<usize> = (0..self.pool.len()).collect();
                (self.unscored(fit::fitting(self.pool, &all, needs)?), None)
            }
            (Target::Routed, needs) => {
                let cost = self.cost.choose(profile, headers)?;
                self.cost.count(&cost);
                let d = self
                    .rank(&request.prompt, cost.weight, needs.as_ref())
                    .await?;
                (d, Some(cost))
            }
        };
        let attempts = self.attempt_order(&decision, matches!(target, Target::Member(_)));
        Ok(Plan {
            target,
            decision,
            attempts,
            cost,
        })
    }

    /// A decision that is not the scorer's: `order` as given.
    fn unscored(&self, order: Vec<usize>) -> Decision {
        Decision {
            order,
            utility: vec![None; self.pool.len()],
            fallback: None,
        }
    }

    /// A request naming a member goes there unless the member certainly cannot take it (a
    /// prompt only possibly too long is the member's to refuse).
    fn check_pinned(&self, i: usize, needs: &Needs) -> Result<(), ApiError> {
        let member = &self.pool.members[i];
        match fit::check(member, needs) {
            Ok(()) | Err(Misfit::Window { certain: false, .. }) => Ok(()),
            Err(m) => Err(m.into_error(Some(&member.name))),
        }
    }

    /// A member, the alias, or the alias with a cost profile (`auto:economy`); anything else,
    /// an unknown profile included, is 404 `model_not_found` listing what is known.
    fn resolve(&self, model: &str) -> Result<(Target, Option<usize>), ApiError> {
        if let Some(target) = self.pool.resolve(model) {
            return Ok((target, None));
        }
        match self.cost.profile_of(&self.pool.alias, model) {
            Some(Some(profile)) => Ok((Target::Routed, Some(profile))),
            _ => {
                let mut known = self.pool.known_models();
                for name in self.cost.names() {
                    known.push_str(&format!(", {}:{name}", self.pool.alias));
                }
                Err(ApiError::model_not_found(model, &known))
            }
        }
    }

    /// The scorer's ranking at `cost_weight`, cut to the members that can take the request.
    async fn rank(
        &self,
        prompt: &str,
        cost_weight: f64,
        needs: Option<&Needs>,
    ) -> Result<Decision, ApiError> {
        let t0 = Instant::now();
        let mut d = self.ranker.decide_at(prompt, cost_weight).await;
        self.metrics.decided(t0.elapsed());
        if let Some(needs) = needs {
            d.order = fit::fitting(self.pool, &d.order, needs)?;
        }
        let first = d.order.first().copied();
        let basis = match d.fallback {
            Some(Fallback::FailOpen(reason)) => {
                self.metrics.failed_open(reason);
                tracing::warn!(reason, "routing failed open to the default model");
                "fail_open"
            }
            // Logged once, when the artifact loaded.
            Some(Fallback::NotAccepted) => {
                if let Some(i) = first {
                    self.metrics.not_accepted(&self.pool.members[i].name);
                }
                "not_accepted"
            }
            None => "scores",
        };
        if let Some(member) = first {
            self.metrics.routed(member, basis);
        }
        Ok(d)
    }

    /// Members to try, in order: the decision's ranking without cold members (they cannot
    /// answer: the request waits for one when all are cold) and without ejected members (unless
    /// every warm member is ejected: ejection is advice, not a reason to fail), at most
    /// `1 + retries` attempts. A named member is tried alone, `1 + retries` times.
    pub fn attempt_order(&self, decision: &Decision, pinned: bool) -> Attempts {
        let n = 1 + self.retries as usize;
        let now = std::time::Instant::now();
        let (warm, cold): (Vec<usize>, Vec<usize>) = decision
            .order
            .iter()
            .partition(|&&i| !self.demand.skips(i, now));
        if pinned {
            let order = warm.first().map_or_else(Vec::new, |&i| vec![i; n]);
            return Attempts { order, cold };
        }
        let mut order: Vec<usize> = warm
            .iter()
            .copied()
            .filter(|&i| self.outlier.is_available(i, now))
            .collect();
        if order.is_empty() {
            order = warm;
        }
        order.truncate(n);
        Attempts { order, cold }
    }
}
