//! The pool fingerprint: a stable hash of the sorted `(name, modelId)` pairs of a pool. A trained
//! router records the fingerprint it was trained for; when the pool's differs, it must retrain.

use sha2::{Digest, Sha256};

/// What identifies a member for routing purposes: its name and the model it serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberIdentity<'a> {
    pub name: &'a str,
    pub model_id: &'a str,
}

/// Hex SHA-256 prefix (16 chars) of the sorted member identities. Order of the input does not
/// matter; prices, replicas and templates do not change it (they do not change what the router
/// learned).
pub fn pool_fingerprint<'a>(members: impl IntoIterator<Item = MemberIdentity<'a>>) -> String {
    let mut ids: Vec<MemberIdentity<'a>> = members.into_iter().collect();
    ids.sort();
    let mut hasher = Sha256::new();
    for id in &ids {
        // Length-prefixed so that ("ab","c") and ("a","bc") differ.
        for part in [id.name, id.model_id] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(name: &'a str, model_id: &'a str) -> MemberIdentity<'a> {
        MemberIdentity { name, model_id }
    }

    #[test]
    fn fingerprint_ignores_order() {
        let a = pool_fingerprint([m("a", "A"), m("b", "B")]);
        let b = pool_fingerprint([m("b", "B"), m("a", "A")]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn fingerprint_changes_with_membership_and_model() {
        let base = pool_fingerprint([m("a", "A"), m("b", "B")]);
        assert_ne!(base, pool_fingerprint([m("a", "A")]));
        assert_ne!(base, pool_fingerprint([m("a", "A"), m("b", "B2")]));
        assert_ne!(
            pool_fingerprint([m("ab", "c")]),
            pool_fingerprint([m("a", "bc")])
        );
    }

    #[test]
    fn fingerprint_is_stable_across_releases() {
        // Artifacts in the field record this value: changing the hash scheme breaks them.
        // (Independently: sha256(le64(1) "a" le64(1) "A")[..8] in hex.)
        assert_eq!(pool_fingerprint([m("a", "A")]), "a3ba39798ffd55ae");
    }
}
