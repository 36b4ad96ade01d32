//! A tiny, randomly initialised BERT written as a real Hugging Face directory (config.json,
//! model.safetensors, tokenizer.json), so tests exercise the same loading path as production.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lookahead_model::artifact::Method;
use lookahead_model::backbones::bert::BertConfig;
use lookahead_model::{Example, HyperParams, ScorerOptions, TrainRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

pub const WORDS: [&str; 16] = [
    "alpha", "beta", "gamma", "delta", "code", "math", "story", "poem", "sum", "list", "tree",
    "graph", "write", "solve", "explain", "fast",
];

pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v
}

/// Writes a tiny BERT directory; `seed_shift` changes the weights (and so the hash).
pub fn tiny_backbone_dir(dir: &Path, seed_shift: f32) -> PathBuf {
    let vocab = vocab();
    let cfg = BertConfig::tiny(vocab.len());
    let config = serde_json::json!({
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "model_type": "bert"
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    let h = cfg.hidden_size;
    let i = cfg.intermediate_size;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    // Seeded, so every run trains the same toy model.
    let rng = std::cell::RefCell::new(StdRng::seed_from_u64(7));
    let rnd = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let mut r = rng.borrow_mut();
                let u1: f32 = r.random_range(f32::EPSILON..1.0);
                let u2: f32 = r.random();
                0.2 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos() + seed_shift
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let ones = |n: usize| Tensor::ones(n, DType::F32, &dev).unwrap();
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &dev).unwrap();
    t.insert(
        "embeddings.word_embeddings.weight".into(),
        rnd(&[cfg.vocab_size, h]),
    );
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        rnd(&[cfg.max_position_embeddings, h]),
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        rnd(&[2, h]),
    );
    t.insert("embeddings.LayerNorm.weight".into(), ones(h));
    t.insert("embeddings.LayerNorm.bias".into(), zeros(h));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}.");
        for name in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            t.insert(format!("{p}{name}.weight"), rnd(&[h, h]));
            t.insert(format!("{p}{name}.bias"), zeros(h));
        }
        t.insert(format!("{p}intermediate.dense.weight"), rnd(&[i, h]));
        t.insert(format!("{p}intermediate.dense.bias"), zeros(i));
        t.insert(format!("{p}output.dense.weight"), rnd(&[h, i]));
        t.insert(format!("{p}output.dense.bias"), zeros(h));
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.insert(format!("{p}{ln}.weight"), ones(h));
            t.insert(format!("{p}{ln}.bias"), zeros(h));
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, vocab.join("\n") + "\n").unwrap();
    let wp = WordPiece::from_file(vocab_path.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(wp);
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    dir.to_path_buf()
}

pub fn models() -> Vec<String> {
    vec!["m-alpha".to_string(), "m-beta".to_string()]
}

/// Toy task: model 0 answers prompts containing "alpha" well, model 1 those with "beta".
/// Responses differ per model so the reconstruction target is informative.
pub fn toy_examples(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let alpha = j.is_multiple_of(2);
            let filler: Vec<&str> = (0..(3 + j % 5))
                .map(|k| WORDS[4 + (j * 7 + k * 3) % 12])
                .collect();
            let key = if alpha { "alpha" } else { "beta" };
            let prompt = format!("{} {key} {}", filler[..2].join(" "), filler[2..].join(" "));
            let quality = if alpha {
                vec![100.0, 0.0]
            } else {
                vec![0.0, 100.0]
            };
            let labels = if alpha {
                vec![1.0, 0.0]
            } else {
                vec![0.0, 1.0]
            };
            Example {
                id: format!("toy-{j}"),
                source: if j.is_multiple_of(3) {
                    "A".into()
                } else {
                    "B".into()
                },
                prompt,
                responses: vec![
                    format!("gamma code {} sum", if alpha { "solve" } else { "poem" }),
                    format!(
                        "delta story {} list tree",
                        if alpha { "graph" } else { "write" }
                    ),
                ],
                labels,
                quality,
            }
        })
        .collect()
}

/// A training request on the toy task with the backbone in `backbone` on the CPU: [`models`],
/// sources A and B, the held-out `test` records if any; `LOOKAHEAD_TEST_PROGRESS` shows the
/// progress bar.
pub fn toy_request<'a>(
    backbone: &Path,
    method: Method,
    hyper: HyperParams,
    train: &'a [Example],
    valid: &'a [Example],
    test: Option<&'a [Example]>,
    states_root: PathBuf,
) -> TrainRequest<'a> {
    TrainRequest {
        method,
        hyper,
        models: models(),
        sources: vec!["A".into(), "B".into()],
        train,
        valid,
        test,
        holdout: "toy".into(),
        min_gain: 0.0,
        acceptance_folds: 0,
        backbone: Some(backbone.to_path_buf()),
        device: Device::Cpu,
        states_root,
        progress: std::env::var_os("LOOKAHEAD_TEST_PROGRESS").is_some(),
        deadline: None,
    }
}

/// Loading options for an artifact trained on the backbone in `dir` (CPU, f32, any pool).
pub fn on(dir: &Path) -> ScorerOptions {
    ScorerOptions {
        backbone: Some(dir.to_path_buf()),
        ..ScorerOptions::default()
    }
}

/// Special tokens of the tiny ModernBERT tokenizer, at the end of the vocabulary as in
/// ModernBERT's own (so `[PAD]` is not 0).
pub const MODERNBERT_SPECIALS: [&str; 5] = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"];

/// Vocabulary of the tiny ModernBERT: the words, `identity_tokens` `[unusedN]` tokens, then the
/// specials.
pub fn modernbert_vocab(identity_tokens: usize) -> Vec<String> {
    let mut v: Vec<String> = WORDS.iter().map(|s| s.to_string()).collect();
    v.extend((0..identity_tokens).map(|i| format!("[unused{i}]")));
    v.extend(MODERNBERT_SPECIALS.iter().map(|s| s.to_string()));
    v
}

/// Writes a tiny, randomly initialised ModernBERT as a real HF `ModernBertForMaskedLM`
/// directory: `config.json` (`model_type: modernbert`, both `norm_eps` and `layer_norm_eps` as
/// released configs have), `model.safetensors` with HF names under the `model.` prefix plus the
/// masked-token head (`head.*`, `decoder.bias`), and a word-level `tokenizer.json` whose
/// post-processor adds `[CLS] ... [SEP]` (ModernBERT's template).
pub fn tiny_modernbert_dir(dir: &Path, identity_tokens: usize) -> PathBuf {
    let vocab = modernbert_vocab(identity_tokens);
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap() as u32;
    let (h, inter, layers, max_pos) = (32usize, 48usize, 4usize, 128usize);
    let config = serde_json::json!({
        "architectures": ["ModernBertForMaskedLM"], "model_type": "modernbert",
        "vocab_size": vocab.len(), "hidden_size": h, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": 4,
        "max_position_embeddings": max_pos, "norm_eps": 1e-5, "layer_norm_eps": 1e-5,
        "norm_bias": false, "attention_bias": false, "mlp_bias": false,
        "classifier_bias": false, "decoder_bias": true,
        "hidden_activation": "gelu", "classifier_activation": "gelu",
        "global_attn_every_n_layers": 3, "local_attention": 8,
        "global_rope_theta": 160000.0, "local_rope_theta": 10000.0,
        "pad_token_id": id("[PAD]"), "cls_token_id": id("[CLS]"), "sep_token_id": id("[SEP]"),
        "tie_word_embeddings": true
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    let rng = std::cell::RefCell::new(StdRng::seed_from_u64(11));
    let rnd = |shape: &[usize], mean: f32, std: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let mut r = rng.borrow_mut();
                let u1: f32 = r.random_range(f32::EPSILON..1.0);
                let u2: f32 = r.random();
                mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let v = vocab.len();
    t.insert(
        "model.embeddings.tok_embeddings.weight".into(),
        rnd(&[v, h], 0.0, 0.5),
    );
    t.insert("model.embeddings.norm.weight".into(), rnd(&[h], 1.0, 0.1));
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        if l > 0 {
            // HF: layer 0's attn_norm is an Identity, so it has no weight.
            t.insert(format!("{p}attn_norm.weight"), rnd(&[h], 1.0, 0.1));
        }
        t.insert(format!("{p}attn.Wqkv.weight"), rnd(&[3 * h, h], 0.0, 0.3));
        t.insert(format!("{p}attn.Wo.weight"), rnd(&[h, h], 0.0, 0.2));
        t.insert(format!("{p}mlp_norm.weight"), rnd(&[h], 1.0, 0.1));
        t.insert(format!("{p}mlp.Wi.weight"), rnd(&[2 * inter, h], 0.0, 0.2));
        t.insert(format!("{p}mlp.Wo.weight"), rnd(&[h, inter], 0.0, 0.2));
    }
    t.insert("model.final_norm.weight".into(), rnd(&[h], 1.0, 0.1));
    t.insert("head.dense.weight".into(), rnd(&[h, h], 0.0, 0.2));
    t.insert("head.norm.weight".into(), rnd(&[h], 1.0, 0.1));
    t.insert("decoder.bias".into(), rnd(&[v], 0.0, 0.1));
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();

    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = MODERNBERT_SPECIALS
        .iter()
        .map(|s| {
            serde_json::json!({"id": id(s), "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special = |s: &str| serde_json::json!({"SpecialToken": {"id": s, "type_id": 0}});
    let seq = |s: &str| serde_json::json!({"Sequence": {"id": s, "type_id": 0}});
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), seq("A"), special("[SEP]")],
            "pair": [special("[CLS]"), seq("A"), special("[SEP]"), seq("B"), special("[SEP]")],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir.to_path_buf()
}
