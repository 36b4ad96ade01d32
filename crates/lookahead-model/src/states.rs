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
        let mut todo: Vec<(String, Vec<u32>, TextKind)> = Vec::new();
        for &(kind, text) in texts {
            let key = state_key(kind, text);
            if self.states.contains_key(&key) || !seen.insert(key.clone()) {
                continue;
            }
            let window = match kind {
                TextKind::Prompt(window) => window,
                TextKind::Response { k } => PromptWindow::head(k + 2),
            };
            let ids = backbone
                .window_ids(text, window)
                .map_err(StateCacheError::Tokenizer)?;
            todo.push((key, ids, kind));
        }
        if todo.is_empty() {
            return Ok(0);
        }
        // Similar lengths together: less padding.
        todo.sort_by_key(|(_, ids, _)| ids.len());
        let bar =
            lookahead_data::progress::bar(todo.len() as u64, "encoding frozen layers", progress);
        let mut pack: HashMap<String, Tensor> = HashMap::new();
        for chunk in todo.chunks(ENCODE_BATCH) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|(_, ids, _)| ids.clone()).collect();
            let batch = pad_batch(&ids, backbone.encoder.device())?;
            let out = backbone.encoder.forward_lower(
                &batch.ids,
                &batch.keep,
                self.layers,
                Mode::Inference,
            )?;
            for (i, (key, ids, kind)) in chunk.iter().enumerate() {
                let row = out.get(i)?;
                let row = match kind {
                    TextKind::Prompt(_) => row.narrow(0, 0, ids.len())?,
                    // Drop [CLS] and the final [SEP].
                    TextKind::Response { .. } => row.narrow(0, 1, ids.len().saturating_sub(2))?,
                };
                pack.insert(key.clone(), row.to_dtype(DType::F16)?.contiguous()?);
            }
            bar.inc(chunk.len() as u64);
            if pack.len() >= PACK_SIZE {
                self.flush(&mut pack)?;
            }
        }
        self.flush(&mut pack)?;
        bar.finish_and_clear();
        Ok(todo.len())
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
