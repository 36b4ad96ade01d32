//! Routing decisions: score the prompt (in-process, over gRPC, or a baseline method), rank the
//! members by `quality - costWeight x price`, and fail open to the default model whenever the
//! scorer is down, slow or confused. Also the hot-reloadable scorer slot the sidecar serves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use lookahead_model::Scorer;
use rand::Rng;

use crate::grpc::GrpcScorer;

/// Loads an artifact directory as a scorer (`lookahead_model::load_scorer` in production).
pub type ScorerLoader =
    Arc<dyn Fn(&Path) -> Result<Box<dyn Scorer>, String> + Send + Sync + 'static>;

/// The currently loaded scorer; replaced atomically on reload while in-flight calls finish on the
/// old one (they hold its `Arc`).
pub struct ScorerSlot {
    current: RwLock<(Arc<dyn Scorer>, String)>,
    reloads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ScorerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScorerSlot")
            .field("version", &self.version())
            .finish()
    }
}

impl ScorerSlot {
    pub fn new(scorer: Arc<dyn Scorer>, version: String) -> Self {
        Self {
            current: RwLock::new((scorer, version)),
            reloads: Default::default(),
        }
    }

    /// The scorer and its artifact version.
    pub fn get(&self) -> (Arc<dyn Scorer>, String) {
        match self.current.read() {
            Ok(g) => (g.0.clone(), g.1.clone()),
            Err(p) => {
                let g = p.into_inner();
                (g.0.clone(), g.1.clone())
            }
        }
    }

    pub fn version(&self) -> String {
        self.get().1
    }

    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn replace(&self, scorer: Arc<dyn Scorer>, version: String) {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = (scorer, version);
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A fingerprint of a directory's regular files (names, sizes, mtimes): it changes when an
/// artifact is rewritten. Also serves as the artifact version string.
pub fn dir_fingerprint(dir: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut entries: Vec<(String, u64, u128)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        if md.is_file() {
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            entries.push((
                e.file_name().to_string_lossy().into_owned(),
                md.len(),
                mtime,
            ));
        }
    }
    entries.sort();
    let mut h = Sha256::new();
    for (n, len, t) in &entries {
        h.update(format!("{n}\0{len}\0{t}\n").as_bytes());
    }
    Ok(hex_prefix(&h.finalize()))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Loads `dir` into a new slot.
pub fn load_slot(dir: &Path, loader: &ScorerLoader) -> Result<ScorerSlot, String> {
    let version = dir_fingerprint(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let scorer = loader(dir)?;
    Ok(ScorerSlot::new(Arc::from(scorer), version))
}

/// Watches `dir` and reloads the slot when its files change (polling every `every`; a change is
/// loaded once it has been stable for one more poll, so half-written artifacts are skipped).
/// A failed load keeps the previous scorer serving. Runs until the returned task is aborted.
pub fn spawn_reloader(
    slot: Arc<ScorerSlot>,
    dir: PathBuf,
    loader: ScorerLoader,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: Option<String> = None;
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let seen = match dir_fingerprint(&dir) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "artifact dir unreadable");
                    continue;
                }
            };
            if seen == slot.version() {
                pending = None;
                continue;
            }
            if pending.as_deref() != Some(seen.as_str()) {
                pending = Some(seen); // changed: wait one more poll for it to settle
                continue;
            }
            pending = None;
            let (d, l) = (dir.clone(), loader.clone());
            match tokio::task::spawn_blocking(move || l(&d)).await {
                Ok(Ok(scorer)) => {
                    tracing::info!(version = %seen, "artifact reloaded");
                    slot.replace(Arc::from(scorer), seen);
                }
                Ok(Err(e)) => {
                    tracing::warn!(version = %seen, error = %e, "artifact reload failed; keeping the loaded one")
                }
                Err(e) => tracing::warn!(error = %e, "artifact reload panicked"),
            }
        }
    })
}

/// Where scores come from.
#[derive(Clone)]
pub enum ScoreSource {
    /// A scorer in this process (blocking work on tokio's blocking pool).
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
    /// Set when the decision failed open: the reason (`scorer_timeout`, `scorer_error`, ...).
    pub fail_open: Option<&'static str>,
}

/// Ranks members for a prompt.
#[derive(Clone)]
pub struct Ranker {
    pub source: ScoreSource,
    pub members: Vec<RankedMember>,
    pub cost_weight: f64,
    pub default_member: usize,
    pub timeout: Duration,
}

impl Ranker {
    /// The fail-open order: the default member, then the rest in configuration order.
    pub fn default_order(&self) -> Vec<usize> {
        let mut order = vec![self.default_member];
        order.extend((0..self.members.len()).filter(|&i| i != self.default_member));
        order
    }

    fn fail_open(&self, reason: &'static str) -> Decision {
        Decision {
            order: self.default_order(),
            utility: vec![None; self.members.len()],
            fail_open: Some(reason),
        }
    }

    /// Maps a scorer's (models, scores) onto members: a member matches a scored model by its
    /// `modelId`, else by its name. Unscored members rank after all scored ones.
    pub fn decide_from_scores(&self, models: &[String], scores: &[f32]) -> Decision {
        if models.len() != scores.len() {
            return self.fail_open("scorer_error");
        }
        let utility: Vec<Option<f64>> = self
            .members
            .iter()
            .map(|m| {
                models
                    .iter()
                    .position(|s| *s == m.model_id)
                    .or_else(|| models.iter().position(|s| *s == m.name))
                    .map(|j| f64::from(scores[j]) - self.cost_weight * m.price)
                    .filter(|u| u.is_finite())
            })
            .collect();
        if utility.iter().all(Option::is_none) {
            return self.fail_open("scorer_pool_mismatch");
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
            fail_open: None,
        }
    }

    /// Ranks members for `prompt`. Never fails: any scorer problem fails open.
    pub async fn decide(&self, prompt: &str) -> Decision {
        match &self.source {
            ScoreSource::Fixed => Decision {
                order: self.default_order(),
                utility: vec![None; self.members.len()],
                fail_open: None,
            },
            ScoreSource::Random => {
                let first = rand::rng().random_range(0..self.members.len());
                let mut order = vec![first];
                order.extend((0..self.members.len()).filter(|&i| i != first));
                Decision {
                    order,
                    utility: vec![None; self.members.len()],
                    fail_open: None,
                }
            }
            ScoreSource::InProcess(slot) => {
                let (scorer, _) = slot.get();
                let p = prompt.to_string();
                let job = tokio::task::spawn_blocking(move || {
                    let out = scorer.score_batch(&[p.as_str()]);
                    (scorer, out)
                });
                match tokio::time::timeout(self.timeout, job).await {
                    Err(_) => self.fail_open("scorer_timeout"),
                    Ok(Err(_)) => self.fail_open("scorer_panic"),
                    Ok(Ok((_, Err(e)))) => {
                        tracing::warn!(error = %e, "scorer failed");
                        self.fail_open("scorer_error")
                    }
                    Ok(Ok((scorer, Ok(mut rows)))) => match rows.pop() {
                        Some(row) => self.decide_from_scores(scorer.models(), &row),
                        None => self.fail_open("scorer_error"),
                    },
                }
            }
            ScoreSource::Grpc(client) => {
                match tokio::time::timeout(self.timeout, client.score_one(prompt)).await {
                    Err(_) => self.fail_open("scorer_timeout"),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "scoring sidecar unavailable");
                        self.fail_open("scorer_unavailable")
                    }
                    Ok(Ok((models, row))) => self.decide_from_scores(&models, &row),
                }
            }
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
        assert!(d.fail_open.is_none());
    }

    #[test]
    fn fails_open_on_a_foreign_pool() {
        let d = ranker(0.0).decide_from_scores(&["other".to_string()], &[1.0]);
        assert_eq!(d.fail_open, Some("scorer_pool_mismatch"));
        assert_eq!(d.order[0], 1);
    }
}
