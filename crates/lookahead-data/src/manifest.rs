//! `manifest.json`: per source, the score's range (for scaling to 0–100) and the models present.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// The file name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Largest accepted manifest (the shared one is ~3 kB): a bigger file is refused before it is
/// read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The whole manifest: source name -> its description. Serialized as a plain JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Manifest {
    pub sources: BTreeMap<String, SourceInfo>,
}

/// What the manifest says about one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `[lo, hi]` of this source's score scale.
    pub score_range: ScoreRange,
    /// Human description of the score (free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    /// Models with a response in (most) records of this source.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_records: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_records: Option<u64>,
}

/// The closed range `[lo, hi]` a source's scores live in; serialized as a two-element array.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "[f64; 2]", into = "[f64; 2]")]
pub struct ScoreRange {
    lo: f64,
    hi: f64,
}

impl ScoreRange {
    /// A range with `lo < hi`, both finite.
    pub fn new(lo: f64, hi: f64) -> Result<Self, String> {
        if !(lo.is_finite() && hi.is_finite()) || lo >= hi {
            return Err(format!(
                "score_range [{lo}, {hi}] must be two finite numbers with lo < hi"
            ));
        }
        Ok(Self { lo, hi })
    }

    pub fn lo(&self) -> f64 {
        self.lo
    }

    pub fn hi(&self) -> f64 {
        self.hi
    }

    /// Maps a raw score linearly onto 0–100 (`lo` -> 0, `hi` -> 100). Not clamped: a score outside
    /// the range stays visible as < 0 or > 100 instead of being hidden.
    pub fn scale(&self, score: f64) -> f64 {
        100.0 * (score - self.lo) / (self.hi - self.lo)
    }
}

impl TryFrom<[f64; 2]> for ScoreRange {
    type Error = String;
    fn try_from([lo, hi]: [f64; 2]) -> Result<Self, String> {
        ScoreRange::new(lo, hi)
    }
}

impl From<ScoreRange> for [f64; 2] {
    fn from(r: ScoreRange) -> Self {
        [r.lo, r.hi]
    }
}

impl Manifest {
    /// Reads and validates `path` (a `manifest.json`).
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::io::Read::take(
            std::fs::File::open(path).map_err(io)?,
            MAX_MANIFEST_BYTES + 1,
        )
        .read_to_string(&mut text)
        .map_err(io)?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("manifest is larger than the {MAX_MANIFEST_BYTES}-byte limit"),
            )));
        }
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| DataError::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        for name in manifest.sources.keys() {
            check_source_name(name).map_err(|e| DataError::Manifest {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        Ok(manifest)
    }

    /// The description of `name`, or an error listing the known sources.
    pub fn source(&self, name: &str, manifest_path: &Path) -> Result<&SourceInfo, DataError> {
        self.sources
            .get(name)
            .ok_or_else(|| DataError::UnknownSource {
                name: name.to_string(),
                manifest: PathBuf::from(manifest_path),
                known: self.sources.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Models listed for every one of `sources`, in the order of the first source's list.
    /// This is the natural default pool for an evaluation over those sources.
    pub fn common_models<S: AsRef<str>>(&self, sources: &[S]) -> Vec<String> {
        let mut lists = sources
            .iter()
            .filter_map(|s| self.sources.get(s.as_ref()).map(|i| &i.models));
        let Some(first) = lists.next() else {
            return Vec::new();
        };
        let rest: Vec<&Vec<String>> = lists.collect();
        first
            .iter()
            .filter(|m| rest.iter().all(|l| l.contains(m)))
            .cloned()
            .collect()
    }
}

/// Rejects source names that could not be a plain file name in the dataset directory.
pub fn check_source_name(name: &str) -> Result<(), DataError> {
    let err = |reason| {
        Err(DataError::SourceName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 128 {
        return err("must be 1 to 128 characters");
    }
    if name.starts_with('.') {
        return err("must not start with '.'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return err("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_range_and_scales_to_percent() {
        let m = Manifest::parse(
            r#"{"ArenaHard": {"score_range": [-6, 6], "models": ["a", "b"]},
                "GSM8K": {"score_range": [0, 1], "models": ["b", "a", "c"]}}"#,
            Path::new("m.json"),
        )
        .unwrap();
        let r = m.sources["ArenaHard"].score_range;
        assert_eq!(r.scale(-6.0), 0.0);
        assert_eq!(r.scale(0.0), 50.0);
        assert_eq!(r.scale(6.0), 100.0);
        assert_eq!(m.common_models(&["GSM8K", "ArenaHard"]), vec!["b", "a"]);
    }

    #[test]
    fn rejects_inverted_or_missing_range() {
        for bad in [
            r#"{"X": {"score_range": [1, 0]}}"#,
            r#"{"X": {"score_range": [1]}}"#,
            r#"{"X": {"models": []}}"#,
            r#"{"../etc": {"score_range": [0, 1]}}"#,
        ] {
            let err = Manifest::parse(bad, Path::new("m.json")).unwrap_err();
            assert!(
                err.to_string().starts_with("m.json: malformed manifest"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_source_lists_known_ones() {
        let m = Manifest::parse(r#"{"A": {"score_range": [0, 1]}}"#, Path::new("m.json")).unwrap();
        let err = m.source("B", Path::new("m.json")).unwrap_err().to_string();
        assert!(err.contains("\"B\"") && err.contains("known: A"), "{err}");
    }
}
