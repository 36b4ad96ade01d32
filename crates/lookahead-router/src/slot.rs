//! The hot-reloadable scorer slot: the scorer in use and its artifact version, swapped
//! atomically when the artifact directory changes. The in-process ranker and the scoring sidecar
//! both read it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use lookahead_model::Scorer;

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

    /// The current scorer.
    pub fn scorer(&self) -> Arc<dyn Scorer> {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
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
