//! Tenants' API keys: `Authorization: Bearer <key>` checked in constant time against every
//! configured key, answering with the key's id (what metrics and logs name; never the key).
//! Keys are kept only as SHA-256 digests, so lengths leak nothing and no key sits in memory.
//!
//! Two sources: a directory (a mounted Secret: file name = key id, content = key) or the older
//! keys file (one key per line, ids `key-1`, `key-2`, … in line order). Either is re-read every
//! few seconds ([`ApiKeys::spawn_reloader`]): Kubernetes updates a mounted Secret in place, and a
//! removed key must stop working (and a new one start) without a restart. Requests in flight
//! keep the key set they were admitted with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::{ApiError, RouterError};

/// The key id of requests to a router without keys (limits and metrics still apply).
pub const ANONYMOUS: &str = "anonymous";

/// How often the key source is re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One key per line; blank lines and `#` comments ignored; ids `key-<line number among keys>`.
    File(PathBuf),
    /// One file per key: its name the id, its content (trailing whitespace trimmed) the key.
    Dir(PathBuf),
}

/// One snapshot of the accepted keys: ids and digests, in the same order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    ids: Vec<Arc<str>>,
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({:?})", self.ids)
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> RouterError + '_ {
    move |source| RouterError::ApiKeys {
        path: path.to_owned(),
        source,
    }
}

impl KeySet {
    /// Keys with their ids (`(id, key)`).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut set = Self::default();
        for (id, key) in pairs {
            set.ids.push(Arc::from(id));
            set.digests.push(digest(key.as_bytes()));
        }
        set
    }

    /// The keys file: one key per line.
    pub fn from_file(path: &Path) -> Result<Self, RouterError> {
        let text = std::fs::read_to_string(path).map_err(read_error(path))?;
        let pairs: Vec<(String, &str)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, key)| (format!("key-{}", i + 1), key))
            .collect();
        Ok(Self::from_pairs(
            pairs.iter().map(|(i, k)| (i.as_str(), *k)),
        ))
    }

    /// A directory of keys (a mounted Secret). Hidden entries (`..data` and the timestamped
    /// directories Kubernetes swaps atomically) and empty files are skipped.
    pub fn from_dir(dir: &Path) -> Result<Self, RouterError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
            let entry = entry.map_err(read_error(dir))?;
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            // Follows the Secret's symlinks; directories are not keys.
            if id.starts_with('.') || !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let key = std::fs::read_to_string(&path).map_err(read_error(&path))?;
            let key = key.trim_end();
            if key.is_empty() {
                tracing::warn!(key_id = %id, "API key file is empty; key ignored");
                continue;
            }
            pairs.push((id, key.to_string()));
        }
        pairs.sort();
        Ok(Self::from_pairs(
            pairs.iter().map(|(i, k)| (i.as_str(), k.as_str())),
        ))
    }

    pub fn load(source: &KeySource) -> Result<Self, RouterError> {
        match source {
            KeySource::File(p) => Self::from_file(p),
            KeySource::Dir(d) => Self::from_dir(d),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The ids, in order.
    pub fn ids(&self) -> &[Arc<str>] {
        &self.ids
    }

    /// The id of the request's bearer token, if it is one of the keys. Compares against every
    /// key without an early exit or a data-dependent branch, so timing says nothing about which
    /// key (or how much of one) matched.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))?;
        let presented = digest(token);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, d) in self.digests.iter().enumerate() {
            let eq = d.ct_eq(&presented);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), eq);
            found |= eq;
        }
        if bool::from(found) {
            self.ids.get(index as usize).cloned()
        } else {
            None
        }
    }
}

/// The router's keys: none (open router, every request is [`ANONYMOUS`]), or the latest
/// snapshot of a source.
#[derive(Debug, Default)]
pub struct ApiKeys {
    source: Option<KeySource>,
    current: RwLock<Arc<KeySet>>,
}

impl ApiKeys {
    /// An open router: no authentication.
    pub fn open() -> Self {
        Self::default()
    }

    /// Keys from `source`, read now (a source that cannot be read stops the router).
    pub fn load(source: KeySource) -> Result<Self, RouterError> {
        let set = KeySet::load(&source)?;
        tracing::info!(keys = set.len(), ids = ?set.ids(), "API keys loaded");
        Ok(Self {
            source: Some(source),
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Whether clients must present a key. With a source configured even an empty key set
    /// authenticates (and so refuses everyone): removing the last key locks the router.
    pub fn authenticates(&self) -> bool {
        self.source.is_some()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Who is calling: the key's id, [`ANONYMOUS`] on an open router, or 401.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Arc<str>, ApiError> {
        if !self.authenticates() {
            return Ok(Arc::from(ANONYMOUS));
        }
        self.snapshot()
            .identify(headers)
            .ok_or_else(ApiError::unauthorized)
    }

    /// Re-reads the source; whether the key set changed. A source that cannot be read keeps the
    /// previous keys (a Secret being swapped is briefly absent).
    pub fn reload(&self) -> Result<bool, RouterError> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let set = KeySet::load(source)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if **current == set {
            return Ok(false);
        }
        tracing::info!(keys = set.len(), ids = ?set.ids(), "API keys reloaded");
        *current = Arc::new(set);
        Ok(true)
    }

    /// Re-reads the keys every `interval` while the task runs (abort it to stop).
    pub fn spawn_reloader(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.reload() {
                    tracing::warn!(error = %e, "API keys not reloaded; keeping the previous keys");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn identifies_only_configured_bearer_keys() {
        let keys = KeySet::from_pairs([("one", "sk-one"), ("two", "sk-two")]);
        assert_eq!(
            keys.identify(&headers("Bearer sk-two")).as_deref(),
            Some("two")
        );
        assert_eq!(
            keys.identify(&headers("Bearer sk-one")).as_deref(),
            Some("one")
        );
        assert!(keys.identify(&headers("Bearer sk-tw")).is_none());
        assert!(keys.identify(&headers("sk-two")).is_none());
        assert!(keys.identify(&HeaderMap::new()).is_none());
    }

    #[test]
    fn reads_keys_file_skipping_comments_with_line_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, "# ops\nsk-a\n\n  sk-b  \n").expect("write");
        let keys = KeySet::from_file(&path).expect("keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys.identify(&headers("Bearer sk-b")).as_deref(),
            Some("key-2")
        );
    }

    #[test]
    fn reads_a_mounted_secret_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // What the kubelet writes: a timestamped directory, `..data` pointing at it, and one
        // symlink per entry through `..data`.
        let stamp = dir.path().join("..2026_12_06_05_00_00.1");
        std::fs::create_dir(&stamp).expect("stamp");
        std::fs::write(stamp.join("team-a"), "sk-a\n").expect("write");
        std::fs::write(stamp.join("empty"), "").expect("write");
        std::os::unix::fs::symlink(&stamp, dir.path().join("..data")).expect("link");
        for id in ["team-a", "empty"] {
            std::os::unix::fs::symlink(dir.path().join("..data").join(id), dir.path().join(id))
                .expect("link");
        }
        let keys = KeySet::from_dir(dir.path()).expect("keys");
        assert_eq!(keys.ids(), &[Arc::<str>::from("team-a")]);
        assert_eq!(
            keys.identify(&headers("Bearer sk-a")).as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn reload_adds_and_removes_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), "sk-a").expect("write");
        let keys = ApiKeys::load(KeySource::Dir(dir.path().into())).expect("keys");
        assert!(keys.identify(&headers("Bearer sk-b")).is_err());
        std::fs::write(dir.path().join("b"), "sk-b").expect("write");
        std::fs::remove_file(dir.path().join("a")).expect("rm");
        assert!(keys.reload().expect("reload"));
        assert!(!keys.reload().expect("reload"));
        assert_eq!(&*keys.identify(&headers("Bearer sk-b")).expect("b"), "b");
        assert!(keys.identify(&headers("Bearer sk-a")).is_err());
    }

    #[test]
    fn an_open_router_calls_everyone_anonymous() {
        let keys = ApiKeys::open();
        assert!(!keys.authenticates());
        assert_eq!(&*keys.identify(&HeaderMap::new()).expect("open"), ANONYMOUS);
    }
}
