//! The real all-MiniLM-L6-v2 backbone (from `scripts/setup.sh`'s cache or `$LOOKAHEAD_BACKBONE`):
//! our differentiable encoder must match candle-transformers' reference BERT. Skips with a printed
//! reason when the backbone is not installed.
#![cfg(test)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lookahead_model::kernels::ops::Mode;
use lookahead_model::nn::mean_pool;
use lookahead_model::{default_backbone_dir, Backbone};

fn real_backbone() -> Option<Backbone> {
    let dir = default_backbone_dir();
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "SKIP: no backbone at {} (run scripts/setup.sh)",
            dir.display()
        );
        return None;
    }
    Some(Backbone::load(&dir, &Device::Cpu).expect("backbone loads"))
}

const PROMPTS: [&str; 3] = [
    "What is the sum of the first 100 positive integers?",
    "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "hi",
];

/// Mean-pooled sentence embeddings of our encoder (training and inference kernels) vs
/// candle-transformers' `BertModel` on the same weights and tokens.
#[test]
fn minilm_embeddings_match_candle_transformers_bert() {
    let Some(bb) = real_backbone() else { return };
    let batch = bb.batch(&PROMPTS, 128).unwrap();
    let cfg_text = std::fs::read_to_string(bb.dir.join("config.json")).unwrap();
    let cfg: candle_transformers::models::bert::Config = serde_json::from_str(&cfg_text).unwrap();
    let vb = VarBuilder::from_tensors(bb.tensors.clone(), DType::F32, &Device::Cpu);
    let reference = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    let type_ids = batch.ids.zeros_like().unwrap();
    let ref_states = reference
        .forward(&batch.ids, &type_ids, Some(&batch.keep))
        .unwrap();
    let ref_emb = mean_pool(&ref_states, &batch.keep).unwrap();
    let n = bb.encoder.num_layers();
    for mode in [Mode::Inference, Mode::Train] {
        let ours = bb
            .encoder
            .forward_lower(&batch.ids, &batch.keep, n, mode)
            .unwrap();
        let emb = mean_pool(&ours, &batch.keep).unwrap();
        let diff: f32 = (emb - &ref_emb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-4, "{mode:?}: max abs difference {diff}");
    }
    // Sanity: related prompts are closer than unrelated ones (the weights are really MiniLM).
    let e = lookahead_model::methods::knn::model::l2_normalise(&ref_emb).unwrap();
    let sims: Vec<Vec<f32>> = e.matmul(&e.t().unwrap()).unwrap().to_vec2().unwrap();
    assert!(sims[0][1] < 0.9 && sims[0][0] > 0.999);
}

/// Batched encoding equals one-at-a-time encoding (padding is masked out).
#[test]
fn minilm_padding_does_not_change_states() {
    let Some(bb) = real_backbone() else { return };
    let batch = bb.batch(&PROMPTS, 128).unwrap();
    let all = bb
        .encoder
        .sentence_embedding(&batch.ids, &batch.keep)
        .unwrap();
    for (i, p) in PROMPTS.iter().enumerate() {
        let one = bb.batch(&[p], 128).unwrap();
        let e = bb.encoder.sentence_embedding(&one.ids, &one.keep).unwrap();
        let row: Tensor = all.get(i).unwrap().unsqueeze(0).unwrap();
        let diff: f32 = (e - row)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-4, "prompt {i}: {diff}");
    }
}

/// int8 weights (`Precision::Int8`) on the real MiniLM: sentence embeddings stay within cosine
/// 0.99 of the f32 ones, and the nearest prompt of each prompt is unchanged.
#[test]
fn minilm_int8_embeddings_stay_close_to_f32() {
    let Some(bb) = real_backbone() else { return };
    let Some(mut quant) = real_backbone() else {
        return;
    };
    quant.encoder.quantize().unwrap();
    let batch = bb.batch(&PROMPTS, 128).unwrap();
    let n = bb.encoder.num_layers();
    let embed = |b: &Backbone| {
        let states = b
            .encoder
            .forward_lower(&batch.ids, &batch.keep, n, Mode::Inference)
            .unwrap();
        lookahead_model::methods::knn::model::l2_normalise(
            &mean_pool(&states, &batch.keep).unwrap(),
        )
        .unwrap()
    };
    let (exact, approx) = (embed(&bb), embed(&quant));
    let cos: Vec<f32> = (&exact * &approx)
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(cos.iter().all(|c| *c > 0.99), "cosine int8 vs f32: {cos:?}");
    assert!(
        cos.iter().any(|c| *c < 0.99999),
        "int8 path not taken: {cos:?}"
    );
    let sims =
        |e: &Tensor| -> Vec<Vec<f32>> { e.matmul(&e.t().unwrap()).unwrap().to_vec2().unwrap() };
    let (se, sa) = (sims(&exact), sims(&approx));
    for i in 0..PROMPTS.len() {
        let nearest = |s: &[Vec<f32>]| {
            (0..PROMPTS.len())
                .filter(|&j| j != i)
                .max_by(|&a, &b| s[i][a].total_cmp(&s[i][b]))
        };
        assert_eq!(nearest(&se), nearest(&sa), "prompt {i}");
    }
}
