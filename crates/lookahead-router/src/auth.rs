//! API keys: `Authorization: Bearer <key>` checked in constant time against every configured key.
//! Keys are kept only as SHA-256 digests, so lengths leak nothing and no key sits in memory.

use std::path::Path;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::RouterError;

/// The accepted keys (digests).
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Keys from a file: one per line; blank lines and `#` comments ignored.
    pub fn from_file(path: &Path) -> Result<Self, RouterError> {
        let text = std::fs::read_to_string(path).map_err(|source| RouterError::ApiKeys {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_keys(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        ))
    }

    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: keys.into_iter().map(|k| digest(k.as_bytes())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether the request's bearer token is one of the keys. Compares against every key without
    /// an early exit, so timing says nothing about which key (or how much of one) matched.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        let presented = digest(token);
        let mut ok = Choice::from(0);
        for d in &self.digests {
            ok |= d.ct_eq(&presented);
        }
        ok.into()
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
    fn accepts_only_configured_bearer_keys() {
        let keys = ApiKeys::from_keys(["sk-one", "sk-two"]);
        assert!(keys.accepts(&headers("Bearer sk-two")));
        assert!(!keys.accepts(&headers("Bearer sk-tw")));
        assert!(!keys.accepts(&headers("sk-two")));
        assert!(!keys.accepts(&HeaderMap::new()));
    }

    #[test]
    fn reads_keys_file_skipping_comments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, "# ops\nsk-a\n\n  sk-b  \n").expect("write");
        let keys = ApiKeys::from_file(&path).expect("keys");
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts(&headers("Bearer sk-b")));
    }
}
