//! A member's own API key (`apiKeyFile`, a mounted Secret): sent to that member only, as
//! `Authorization: Bearer <key>`, in place of the client's credentials. Kubernetes updates a
//! mounted Secret in place (a symlink swap), so the file is checked again at most every
//! [`CHECK_EVERY`] on use (one `stat`, the read only when its size or mtime changed): a rotated key
//! is sent without a restart. The key is held only as a sensitive header value and never appears
//! in `Debug`, logs or errors.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

/// How often the key file is looked at again (on use).
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("{path} does not hold a valid header value (one line of visible ASCII)")]
    Invalid { path: PathBuf },
}

/// What identifies one version of the file (after following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

struct Current {
    header: HeaderValue,
    stamp: Stamp,
    checked: Instant,
}

/// One member's key, re-read when its file changes.
pub struct MemberKey {
    path: PathBuf,
    current: Mutex<Current>,
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKey")
            .field("path", &self.path)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn stamp(path: &Path) -> Result<Stamp, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// `Bearer <key>` from the file's text (surrounding whitespace and a final newline trimmed).
fn read_header(path: &Path) -> Result<HeaderValue, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(KeyError::Empty {
            path: path.to_owned(),
        });
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyError::Invalid {
            path: path.to_owned(),
        });
    }
    let mut header =
        HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| KeyError::Invalid {
            path: path.to_owned(),
        })?;
    header.set_sensitive(true);
    Ok(header)
}

impl MemberKey {
    /// Reads the key now: a missing, empty or malformed file stops the router from starting.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let stamp = stamp(path)?;
        let header = read_header(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: Mutex::new(Current {
                header,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The `Authorization` value to send: the file's current key. A file that changed is read
    /// again; one that became unreadable or empty keeps the last good key (logged).
    pub fn authorization(&self) -> HeaderValue {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.checked.elapsed() >= CHECK_EVERY {
            cur.checked = Instant::now();
            self.refresh(&mut cur);
        }
        cur.header.clone()
    }

    fn refresh(&self, cur: &mut Current) {
        let fresh = stamp(&self.path).and_then(|s| {
            if s == cur.stamp {
                return Ok(None);
            }
            read_header(&self.path).map(|h| Some((h, s)))
        });
        match fresh {
            Ok(Some((header, stamp))) => {
                cur.header = header;
                cur.stamp = stamp;
                tracing::info!(file = %self.path.display(), "member API key reloaded");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "member API key not reloaded, the last one stays"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trims_and_redacts_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  sk-abc123\n").unwrap();
        let key = MemberKey::load(&path).unwrap();
        let header = key.authorization();
        assert_eq!(header.to_str().unwrap(), "Bearer sk-abc123");
        assert!(header.is_sensitive());
        assert!(!format!("{key:?}").contains("sk-abc123"));
    }

    #[test]
    fn empty_missing_or_multi_word_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let missing = MemberKey::load(&path).unwrap_err().to_string();
        assert!(
            missing.contains("cannot read") && missing.contains("key"),
            "{missing}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            MemberKey::load(&path),
            Err(KeyError::Empty { .. })
        ));
        std::fs::write(&path, "sk-a sk-b").unwrap();
        let invalid = MemberKey::load(&path).unwrap_err().to_string();
        assert!(
            invalid.contains("valid header") && !invalid.contains("sk-a"),
            "{invalid}"
        );
    }
}
