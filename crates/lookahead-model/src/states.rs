//! On-disk cache of the frozen lower layers' token states, by content hash.
//!
//! The lite router never re-runs the frozen layers during training: every prompt and every
//! candidate response is encoded once, and its states (f16) are stored in safetensors "packs"
//! under `$HOME/.cache/lookahead/states/<backbone-hash>-l<L>/`, one tensor per text, named by the
//! SHA-256 of what produced it. A pool change only encodes the new model's responses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use crate::backbones::encoder_dir::{pad_batch, Backbone, PromptWindow, Truncation};
use crate::kernels::ops::Mode;

/// What a cached entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// `[CLS] prompt [SEP]`, cut to the window (its `max_tokens` include the special tokens).
    Prompt(PromptWindow),
    /// The response's first `k` token states (encoded as `[CLS] response [SEP]`, specials dropped).
    Response { k: usize },
    /// At most `k` rows, one per window of the response ([`response_windows`]): each window is
    /// encoded on its own as `[CLS] window [SEP]` and its token states (specials dropped)
    /// mean-pooled.
    ResponseWindows { k: usize },
}

impl TextKind {
    /// The most rows a response entry holds (lite's K slots); 0 for a prompt.
    pub fn response_rows(self) -> usize {
        match self {
            TextKind::Prompt(_) => 0,
            TextKind::Response { k } | TextKind::ResponseWindows { k } => k,
        }
    }
}

/// Longest window of [`TextKind::ResponseWindows`], in tokens: `k` windows cover a response of
/// up to `k × WINDOW_TOKENS` tokens whole.
pub const WINDOW_TOKENS: usize = 64;

/// The token spans of at most `k` windows over a response of `n` tokens: `k` equal successive
/// parts when they fit in `cap` tokens each (a short response gives fewer, non-empty windows),
/// else `k` windows of `cap` tokens spread evenly from the response's start to its end, so the
/// closing part (a final answer, the end of a program) is always one of them.
pub fn response_windows(n: usize, k: usize, cap: usize) -> Vec<std::ops::Range<usize>> {
    if n == 0 || k == 0 || cap == 0 {
        return Vec::new();
    }
    let size = n.div_ceil(k).min(cap);
    if size * k >= n {
        return (0..n)
            .step_by(size)
            .map(|start| start..(start + size).min(n))
            .collect();
    }
    (0..k)
        .map(|j| {
            let start = j * (n - size) / (k - 1).max(1);
            start..start + size
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StateCacheError {
    #[error("state cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state cache: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("state cache: tokenizer: {0}")]
    Tokenizer(String),
}

/// `$HOME/.cache/lookahead/states`.
pub fn default_states_root() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/lookahead/states")
}

/// The content key of one text under one encoding.
pub fn state_key(kind: TextKind, text: &str) -> String {
    let mut h = Sha256::new();
    match kind {
        // Head-cut keys keep their original form, so existing caches stay valid.
        TextKind::Prompt(w) => match w.truncation {
            Truncation::Head => h.update(format!("prompt:{}:", w.max_tokens)),
            t => h.update(format!("prompt:{}:{t}:", w.max_tokens)),
        },
        TextKind::Response { k } => h.update(format!("response:{k}:")),
        TextKind::ResponseWindows { k } => {
            h.update(format!("response-windows:{k}:{WINDOW_TOKENS}:"))
        }
    }
    h.update(text.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Token states of the frozen layers, loaded from disk and extended on demand.
pub struct StateCache {
    dir: PathBuf,
    layers: usize,
    states: HashMap<String, Tensor>,
}

/// How many new entries go into one pack file (progress survives an interrupted run).
const PACK_SIZE: usize = 2048;
const ENCODE_BATCH: usize = 32;

impl StateCache {
    /// Opens (creating if needed) the cache for a backbone and a number of frozen layers.
    pub fn open(root: &Path, backbone_hash: &str, layers: usize) -> Result<Self, StateCacheError> {
        let short = &backbone_hash[..backbone_hash.len().min(16)];
        let dir = root.join(format!("{short}-l{layers}"));
        std::fs::create_dir_all(&dir).map_err(|source| StateCacheError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut states = HashMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|source| StateCacheError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                match candle_core::safetensors::load(&path, &candle_core::Device::Cpu) {
                    Ok(pack) => states.extend(pack),
                    // A torn pack (killed mid-write before the rename) is re-encoded.
                    Err(err) => {
                        tracing::warn!(path = %path.display(), %err, "skipping unreadable state pack")
                    }
                }
            }
        }
        tracing::debug!(dir = %dir.display(), entries = states.len(), "state cache opened");
        Ok(Self {
            dir,
            layers,
            states,
        })
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// `[tokens, hidden]` f16 states, or `None` when not encoded yet.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.states.get(key)
    }

    /// Encodes every text not in the cache yet and stores it; returns how many were encoded.
    pub fn ensure(
        &mut self,
        backbone: &Backbone,
        texts: &[(TextKind, &str)],
        progress: bool,
    ) -> Result<usize, StateCacheError> {
        let mut seen = std::collections::HashSet::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut jobs: Vec<Job> = Vec::new();
        for &(kind, text) in texts {
            let key = state_key(kind, text);
            if self.states.contains_key(&key) || !seen.insert(key.clone()) {
                continue;
            }
            let sequences = sequences(backbone, kind, text)?;
            let entry = entries.len();
            entries.push(Entry::new(key, kind, sequences.len()));
            jobs.extend(sequences.into_iter().enumerate().map(|(part, ids)| Job {
                entry,
                part,
                ids,
            }));
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let jobs_total = jobs.len();
        let bar =
            lookahead_data::progress::bar(jobs_total as u64, "encoding frozen layers", progress);
        // A pack's worth of entries at a time, so an interrupted run keeps what it finished.
        for group in jobs.chunk_by_mut(|a, b| a.entry / PACK_SIZE == b.entry / PACK_SIZE) {
            let mut pack = self.encode(backbone, &mut entries, group, &bar)?;
            let stored = pack.len();
            self.flush(&mut pack)?;
            tracing::info!(
                stored,
                sequences = bar.position(),
                of = jobs_total,
                "frozen-layer states stored"
            );
        }
        bar.finish_and_clear();
        Ok(entries.len())
    }

    /// Runs `jobs` through the frozen layers; returns the entries they complete.
    fn encode(
        &self,
        backbone: &Backbone,
        entries: &mut [Entry],
        jobs: &mut [Job],
        bar: &lookahead_data::progress::ProgressBar,
    ) -> Result<HashMap<String, Tensor>, StateCacheError> {
        // Similar lengths together: less padding.
        jobs.sort_by_key(|j| j.ids.len());
        let mut pack = HashMap::new();
        for chunk in jobs.chunks(ENCODE_BATCH) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|j| j.ids.clone()).collect();
            let batch = pad_batch(&ids, backbone.encoder.device())?;
            let out = backbone.encoder.forward_lower(
                &batch.ids,
                &batch.keep,
                self.layers,
                Mode::Inference,
            )?;
            for (i, job) in chunk.iter().enumerate() {
                let entry = &mut entries[job.entry];
                entry.parts[job.part] = Some(rows_of(&out.get(i)?, job.ids.len(), entry.kind)?);
                if let Some(states) = entry.complete()? {
                    let states = states.to_dtype(DType::F16)?.contiguous()?;
                    pack.insert(entry.key.clone(), states);
                }
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(pack)
    }

    fn flush(&mut self, pack: &mut HashMap<String, Tensor>) -> Result<(), StateCacheError> {
        if pack.is_empty() {
            return Ok(());
        }
        let name = {
            let mut keys: Vec<&String> = pack.keys().collect();
            keys.sort();
            let mut h = Sha256::new();
            for k in keys {
                h.update(k.as_bytes());
            }
            hex::encode(&h.finalize()[..8])
        };
        let path = self.dir.join(format!("pack-{name}.safetensors"));
        let tmp = self.dir.join(format!(".pack-{name}.tmp"));
        candle_core::safetensors::save(pack, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|source| StateCacheError::Io {
            path: path.clone(),
            source,
        })?;
        self.states.extend(pack.drain());
        Ok(())
    }
}

/// One text being encoded: its parts' rows, filled as their sequences come out of the encoder.
struct Entry {
    key: String,
    kind: TextKind,
    parts: Vec<Option<Tensor>>,
}

impl Entry {
    fn new(key: String, kind: TextKind, parts: usize) -> Self {
        Self {
            key,
            kind,
            parts: vec![None; parts],
        }
    }

    /// `[rows, hidden]` once every part is encoded (and only the first time).
    fn complete(&mut self) -> Result<Option<Tensor>, StateCacheError> {
        // Taking the parts empties them again, so a completed entry is never returned twice.
        if self.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let parts: Vec<Tensor> = self.parts.iter_mut().filter_map(Option::take).collect();
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}

/// One sequence for the frozen layers: part `part` of entry `entry`.
struct Job {
    entry: usize,
    part: usize,
    ids: Vec<u32>,
}

/// The `[CLS] ... [SEP]` sequences that make up `text`'s entry.
fn sequences(
    backbone: &Backbone,
    kind: TextKind,
    text: &str,
) -> Result<Vec<Vec<u32>>, StateCacheError> {
    let ids = |window| {
        backbone
            .window_ids(text, window)
            .map_err(StateCacheError::Tokenizer)
    };
    Ok(match kind {
        TextKind::Prompt(window) => vec![ids(window)?],
        TextKind::Response { k } => vec![ids(PromptWindow::head(k + 2))?],
        TextKind::ResponseWindows { k } => {
            let all = ids(PromptWindow::head(usize::MAX))?;
            let (Some(&cls), Some(&sep)) = (all.first(), all.last()) else {
                return Ok(vec![all]);
            };
            let body = &all[1..all.len().saturating_sub(1).max(1)];
            let spans = response_windows(body.len(), k, WINDOW_TOKENS);
            if spans.is_empty() {
                return Ok(vec![vec![cls, sep]]);
            }
            spans
                .into_iter()
                .map(|span| {
                    let mut seq = Vec::with_capacity(span.len() + 2);
                    seq.push(cls);
                    seq.extend_from_slice(&body[span]);
                    seq.push(sep);
                    seq
                })
                .collect()
        }
    })
}

/// The rows one encoded sequence (`states`: `[padded, hidden]`, `len` real tokens) adds to its
/// entry: a prompt's every token, a response's tokens without the specials, a window's mean.
fn rows_of(states: &Tensor, len: usize, kind: TextKind) -> Result<Tensor, StateCacheError> {
    let inner = len.saturating_sub(2);
    Ok(match kind {
        TextKind::Prompt(_) => states.narrow(0, 0, len)?,
        TextKind::Response { .. } => states.narrow(0, 1.min(len), inner)?,
        TextKind::ResponseWindows { .. } if inner == 0 => states.narrow(0, 0, 0)?,
        TextKind::ResponseWindows { .. } => states.narrow(0, 1, inner)?.mean_keepdim(0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::response_windows;

    #[test]
    fn short_responses_split_into_equal_successive_windows() {
        assert!(response_windows(0, 8, 64).is_empty());
        assert_eq!(response_windows(3, 8, 64), vec![0..1, 1..2, 2..3]);
        assert_eq!(
            response_windows(20, 4, 64),
            vec![0..5, 5..10, 10..15, 15..20]
        );
        // 10 tokens in 4 windows of 3: the last is shorter, nothing is left out.
        assert_eq!(response_windows(10, 4, 64), vec![0..3, 3..6, 6..9, 9..10]);
        assert_eq!(
            response_windows(256, 4, 64),
            vec![0..64, 64..128, 128..192, 192..256]
        );
    }

    #[test]
    fn long_responses_get_windows_from_start_to_end() {
        let w = response_windows(1000, 4, 64);
        assert_eq!(w.len(), 4);
        assert_eq!(w[0], 0..64);
        assert_eq!(w[3], 936..1000, "the last window closes the response");
        assert!(w.windows(2).all(|p| p[0].end <= p[1].start), "{w:?}");
        assert_eq!(response_windows(1000, 1, 64), vec![0..64]);
    }
}
