//! The acceptance gate as the router applies it. Training records in `router.json` whether the
//! router beat the best single model on validation (`acceptance`, see
//! `lookahead_model::fit::acceptance`); a router given an artifact that was not accepted sends
//! every alias request to that model (`fallbackModel`) unscored, says so in
//! `x-lookahead-fallback: not_accepted`, and reports it at load (a warning with the figures) and
//! in `lookahead_router_artifact_accepted`. Artifacts without a verdict (written before the
//! gate) are served as accepted.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use lookahead_api::RouterConfig;
use lookahead_model::artifact::{Acceptance, ArtifactError, RouterMeta};

use crate::ScorerLoader;

/// No fallback member: the artifact is accepted.
const ACCEPTED: usize = usize::MAX;

/// What the decision stage asks before scoring: is the artifact accepted, and if not, which member
/// serves instead. Updated whenever an artifact is (re)loaded.
#[derive(Debug)]
pub struct AcceptanceGate {
    /// Each member's (name, modelId), to find the fallback model among them.
    members: Vec<(String, String)>,
    default_member: usize,
    /// The member a not-accepted artifact falls back to, or [`ACCEPTED`].
    fallback: AtomicUsize,
    /// The served artifact's verdict figures (gain, lower bound), when it has a verdict.
    figures: Mutex<Option<(f64, f64)>>,
}

impl AcceptanceGate {
    /// An open gate over `config`'s members (every artifact accepted until one says otherwise).
    pub fn new(config: &RouterConfig, default_member: usize) -> Self {
        Self {
            members: config
                .members
                .iter()
                .map(|m| (m.name.clone(), m.model_id.clone()))
                .collect(),
            default_member,
            fallback: AtomicUsize::new(ACCEPTED),
            figures: Mutex::new(None),
        }
    }

    /// The member every alias request goes to while the artifact is not accepted; `None` while
    /// it is.
    pub fn fallback(&self) -> Option<usize> {
        Some(self.fallback.load(Ordering::Relaxed)).filter(|&m| m != ACCEPTED)
    }

    pub fn is_accepted(&self) -> bool {
        self.fallback().is_none()
    }

    /// Applies an artifact's verdict (`None`: no verdict, accepted). The fallback model is found
    /// among the members by `modelId`, else by name; a pool without it falls back to the
    /// default member.
    pub fn apply(&self, acceptance: Option<&Acceptance>) {
        if let Ok(mut f) = self.figures.lock() {
            *f = acceptance.map(|a| (a.gain, a.lower_bound));
        }
        let Some(a) = acceptance.filter(|a| !a.accepted) else {
            if let Some(a) = acceptance {
                tracing::info!(gain = a.gain, lower_bound = a.lower_bound, fallback_model = %a.fallback_model, "artifact accepted (its gain over the best single model reaches minGain): routing on its scores");
            }
            self.fallback.store(ACCEPTED, Ordering::Relaxed);
            return;
        };
        let found = self
            .members
            .iter()
            .position(|(_, id)| *id == a.fallback_model)
            .or_else(|| {
                self.members
                    .iter()
                    .position(|(n, _)| *n == a.fallback_model)
            });
        let member = found.unwrap_or(self.default_member);
        tracing::warn!(
            gain = a.gain,
            lower_bound = a.lower_bound,
            min_gain = a.min_gain,
            fallback_model = %a.fallback_model,
            serving = %self.members.get(member).map_or("", |m| m.0.as_str()),
            fallback_in_pool = found.is_some(),
            "artifact not accepted (it does not beat the best single model on held-out evidence): every routed request goes to the fallback model"
        );
        self.fallback.store(member, Ordering::Relaxed);
    }

    /// Reads `dir`'s verdict and applies it (see [`read`]).
    pub fn apply_dir(&self, dir: &Path) -> Result<(), ArtifactError> {
        self.apply(read(dir)?.as_ref());
        Ok(())
    }

    /// `loader`, applying each artifact's verdict once its scorer has loaded (a failed load, or
    /// an unreadable verdict, keeps the previous artifact and verdict).
    pub fn guard(self: Arc<Self>, loader: ScorerLoader) -> ScorerLoader {
        Arc::new(move |dir: &Path| {
            let scorer = loader(dir)?;
            self.apply_dir(dir).map_err(|e| e.to_string())?;
            Ok(scorer)
        })
    }
}

/// The gate as metrics, read at each scrape: `lookahead_router_artifact_accepted`, and the
/// verdict's `..._validation_gain` and `..._validation_gain_lower_bound` (NaN without a
/// verdict).
impl Collector for AcceptanceGate {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let accepted = ConstGauge::new(i64::from(self.is_accepted()));
        accepted.encode(encoder.encode_descriptor(
            "artifact_accepted",
            "0 while the served artifact is not accepted (it did not beat the best single model on validation) and every routed request goes to that model",
            None,
            accepted.metric_type(),
        )?)?;
        // NaN without a verdict: "no figure", where 0 would read as "no gain".
        let (gain, lower_bound) = self
            .figures
            .lock()
            .ok()
            .and_then(|f| *f)
            .unwrap_or((f64::NAN, f64::NAN));
        let gain = ConstGauge::new(gain);
        gain.encode(encoder.encode_descriptor(
            "artifact_validation_gain",
            "The served artifact's validation score minus the best single model's, in score points",
            None,
            gain.metric_type(),
        )?)?;
        let lower_bound = ConstGauge::new(lower_bound);
        lower_bound.encode(encoder.encode_descriptor(
            "artifact_validation_gain_lower_bound",
            "One-sided lower confidence bound of artifact_validation_gain (the acceptance gate's figure)",
            None,
            lower_bound.metric_type(),
        )?)
    }
}

/// The verdict in `dir`'s `router.json`: `None` when it has none, or when the directory has no
/// `router.json` at all (not a trained artifact: nothing to gate).
pub fn read(dir: &Path) -> Result<Option<Acceptance>, ArtifactError> {
    match RouterMeta::read(dir) {
        Ok(meta) => Ok(meta.acceptance),
        Err(ArtifactError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> AcceptanceGate {
        let config: RouterConfig = serde_yaml::from_str(
            "members:\n  - { name: yi, modelId: Yi-34B, baseUrl: 'http://a/v1' }\n  - { name: phi, modelId: Phi-3, baseUrl: 'http://b/v1' }\npolicy:\n  method: lookahead-lite\n  artifact: /a\n",
        )
        .unwrap();
        AcceptanceGate::new(&config, 0)
    }

    fn verdict(accepted: bool, fallback_model: &str) -> Acceptance {
        Acceptance {
            gain: -1.5,
            lower_bound: -3.0,
            accepted,
            fallback_model: fallback_model.into(),
            min_gain: 0.0,
            level: 0.95,
            resamples: 2000,
            examples: 300,
            folds: 0,
        }
    }

    #[test]
    fn a_verdict_that_is_not_accepted_names_the_fallback_member_by_model_id_or_name() {
        let g = gate();
        assert!(g.is_accepted(), "open until an artifact says otherwise");
        g.apply(Some(&verdict(false, "Phi-3")));
        assert_eq!(g.fallback(), Some(1));
        g.apply(Some(&verdict(false, "yi")));
        assert_eq!(g.fallback(), Some(0));
        g.apply(Some(&verdict(false, "gone")));
        assert_eq!(g.fallback(), Some(0), "the default member");
        g.apply(Some(&verdict(true, "Phi-3")));
        assert!(g.is_accepted());
        g.apply(Some(&verdict(false, "Phi-3")));
        g.apply(None);
        assert!(g.is_accepted(), "no verdict: accepted");
    }

    #[test]
    fn a_directory_without_router_json_has_no_verdict() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join("router.json"), "{").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
