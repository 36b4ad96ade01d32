//! ModernBERT backbones on a tiny, randomly initialised ModernBERT written as a real Hugging Face
//! directory: our encoder against candle-transformers' reference, training kernels against
//! inference kernels, and Lookahead-MLM end to end (train -> artifact -> load -> score).
#![cfg(test)]

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lookahead_model::artifact::{save_artifact, BackboneKind, Method, META_FILE};
use lookahead_model::backbones::encoder::{Encoder, EncoderKind};
use lookahead_model::backbones::modernbert::{ModernBertConfig, ModernBertEncoder};
use lookahead_model::kernels::ops::Mode;
use lookahead_model::methods::mlm::scorer::MlmScorer;
use lookahead_model::{
    load_scorer, train, ArtifactError, Backbone, BackboneError, HyperParams, MlmTokenError,
    TrainError, TrainRequest,
};

/// Two prompts, one of 16 tokens (twice the window of 8) and one padded.
const PROMPTS: [&str; 2] = [
    "alpha beta gamma delta code math story poem sum list tree graph write solve",
    "explain fast tree",
];

fn modern(bb: &Backbone) -> &ModernBertEncoder {
    match &bb.encoder {
        Encoder::ModernBert(e) => e,
        Encoder::Bert(_) => panic!("the tiny ModernBERT directory loaded as BERT"),
    }
}

/// Max |a - b| over real (non-padding) positions of `[b, t, h]` states.
fn max_diff(a: &Tensor, b: &Tensor, keep: &Tensor) -> f32 {
    let keep = keep.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .broadcast_mul(&keep)
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn modernbert_matches_candle_transformers_and_training_kernels_match_inference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_modernbert_dir(&tmp.path().join("mb"), 2);
    let bb = Backbone::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(bb.encoder.kind(), EncoderKind::ModernBert);
    assert_eq!(bb.encoder.num_layers(), 4);
    let batch = bb.batch(&PROMPTS, 64).unwrap();
    assert_eq!(batch.lengths, vec![16, 5]);
    // The tokenizer's template adds [CLS] first (ModernBERT's is not id 2 as in BERT).
    let cls = bb.tokenizer.token_to_id("[CLS]").unwrap();
    assert_eq!(batch.ids.to_vec2::<u32>().unwrap()[1][0], cls);
    assert_eq!(batch.ids.to_vec2::<u32>().unwrap()[0][0], cls);

    let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let ref_cfg: candle_transformers::models::modernbert::Config =
        serde_json::from_str(&cfg_text).unwrap();
    let vb = VarBuilder::from_tensors(bb.tensors.clone(), DType::F32, &Device::Cpu);
    let reference =
        candle_transformers::models::modernbert::ModernBert::load(vb, &ref_cfg).unwrap();
    let want = reference.forward(&batch.ids, &batch.keep).unwrap();

    let ours = modern(&bb);
    let inference = ours
        .forward(&batch.ids, &batch.keep, Mode::Inference)
        .unwrap();
    let train = ours.forward(&batch.ids, &batch.keep, Mode::Train).unwrap();
    let d_ref = max_diff(&inference, &want, &batch.keep);
    let d_train = max_diff(&train, &inference, &batch.keep);
    eprintln!(
        "max abs diff: ours vs candle-transformers {d_ref:e}, train vs inference {d_train:e}"
    );
    assert!(d_ref < 1e-4, "inference vs candle-transformers: {d_ref}");
    assert!(d_train < 1e-4, "training vs inference kernels: {d_train}");
    // States are O(1) (final norm), so the bound above is tight, not vacuous.
    let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(scale > 0.5, "{scale}");

    // The window matters at this length: all-global attention gives other states.
    let mut global_cfg: ModernBertConfig = serde_json::from_str(&cfg_text).unwrap();
    global_cfg.local_attention = 1024;
    let vb = VarBuilder::from_tensors(bb.tensors.clone(), DType::F32, &Device::Cpu);
    let all_global = ModernBertEncoder::load(vb, &global_cfg).unwrap();
    let g = all_global
        .forward(&batch.ids, &batch.keep, Mode::Inference)
        .unwrap();
    let d_window = max_diff(&g, &want, &batch.keep);
    assert!(d_window > 1e-2, "sliding window had no effect: {d_window}");
}

fn request<'a>(
    backbone: &std::path::Path,
    method: Method,
    train: &'a [lookahead_model::Example],
    valid: &'a [lookahead_model::Example],
    states: std::path::PathBuf,
) -> TrainRequest<'a> {
    common::toy_request(
        backbone,
        method,
        HyperParams {
            frozen_layers: 1,
            trainable_layers: 2,
            slot_tokens: 4,
            max_prompt_tokens: 16,
            learning_rate: 3e-3,
            batch_size: 8,
            max_epochs: 16,
            patience: 16,
            ..HyperParams::default()
        },
        train,
        valid,
        None,
        states,
    )
}

#[test]
fn mlm_trains_on_a_modernbert_directory_saves_loads_and_scores_in_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_modernbert_dir(&tmp.path().join("mb"), 2);
    let train_set = common::toy_examples(64, 0);
    let valid = common::toy_examples(16, 1000);
    let req = request(
        &dir,
        Method::Mlm,
        &train_set,
        &valid,
        tmp.path().join("states"),
    );
    let trained = train(&req).unwrap();
    assert_eq!(trained.meta.backbone.kind, BackboneKind::ModernBert);
    // 4 layers, 2 trainable (local layer 2, global layer 3): the embeddings stay frozen.
    assert_eq!(trained.meta.hyper.frozen_layers, 2);
    let keys = &trained.tensors;
    assert!(keys.keys().all(|k| !k.starts_with("embeddings.")));
    for k in [
        "upper.0.attn.Wqkv.weight",
        "upper.1.mlp.Wi.weight",
        "final_norm.weight",
        "mlm.dense.weight",
        "mlm_bias",
    ] {
        assert!(keys.contains_key(k), "artifact lacks {k}");
    }
    let v = &trained.meta.validation;
    assert!(v.router > v.best_single, "{v:?}");
    // Routing loss fell well below the prior's (ln 2 for balanced labels).
    assert!(v.bce.unwrap() < 0.5, "{v:?}");

    let out = tmp.path().join("artifact");
    save_artifact(&out, &trained.meta, &trained.tensors).unwrap();
    let json = std::fs::read_to_string(out.join(META_FILE)).unwrap();
    assert!(json.contains(r#""kind": "modernbert""#), "{json}");

    let scorer = load_scorer(&out, &common::on(&dir)).unwrap();
    assert_eq!(scorer.models(), common::models().as_slice());
    // Unseen prompts of the toy task, scored from the prompt alone: each goes to its model.
    let held_out = common::toy_examples(8, 5000);
    let prompts: Vec<&str> = held_out.iter().map(|e| e.prompt.as_str()).collect();
    let scores = scorer.score_batch(&prompts).unwrap();
    for (e, s) in held_out.iter().zip(&scores) {
        let best = usize::from(e.labels[1] > e.labels[0]);
        assert!(s[best] > s[1 - best], "{}: {s:?}", e.prompt);
    }
    // One encoder pass scores all eight prompts and the whole pool.
    let mlm = MlmScorer::load(&out, &dir, &Device::Cpu).unwrap();
    use lookahead_model::Scorer as _;
    let again = mlm.score_batch(&prompts).unwrap();
    assert_eq!(mlm.passes(), 1);
    assert_eq!(again, scores);

    // An artifact whose router.json lacks the kind is a BERT one (older format): refused here.
    let stripped = json.replace(r#""kind": "modernbert""#, r#""unused": 0"#);
    std::fs::write(out.join(META_FILE), stripped).unwrap();
    let err = MlmScorer::load(&out, &dir, &Device::Cpu).err().unwrap();
    assert!(
        matches!(
            err,
            ArtifactError::BackboneKind {
                expected: BackboneKind::Bert,
                found: BackboneKind::ModernBert
            }
        ),
        "{err}"
    );
}

#[test]
fn modernbert_backbones_are_refused_by_lite_mlc_knn_and_need_identity_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let train_set = common::toy_examples(8, 0);
    let valid = common::toy_examples(4, 100);
    let dir = common::tiny_modernbert_dir(&tmp.path().join("mb"), 2);
    for method in [Method::Lite, Method::Mlc, Method::Knn] {
        let req = request(&dir, method, &train_set, &valid, tmp.path().join("states"));
        let err = train(&req).err().unwrap();
        assert!(
            matches!(
                err,
                TrainError::Backbone(BackboneError::NotBert {
                    kind: EncoderKind::ModernBert,
                    ..
                })
            ),
            "{method}: {err}"
        );
    }
    // A vocabulary without [unusedN] cannot name the candidates.
    let bare = common::tiny_modernbert_dir(&tmp.path().join("bare"), 0);
    let req = request(
        &bare,
        Method::Mlm,
        &train_set,
        &valid,
        tmp.path().join("states"),
    );
    let err = train(&req).err().unwrap();
    assert!(
        matches!(&err, TrainError::Tokens(MlmTokenError::Missing { token, models: 2 }) if token == "[unused0]"),
        "{err}"
    );
}

#[test]
fn unsupported_model_types_are_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_modernbert_dir(&tmp.path().join("mb"), 2);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = cfg.replace(r#""model_type":"modernbert""#, r#""model_type":"roberta""#);
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let err = Backbone::load(&dir, &Device::Cpu).err().unwrap();
    assert!(matches!(err, BackboneError::ModelType { .. }), "{err}");
    assert!(err.to_string().contains("roberta"), "{err}");
}
