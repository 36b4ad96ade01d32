//! Lookahead-MLM end to end on a tiny, randomly initialised BERT written as a real Hugging Face
//! directory: `train` -> artifact on disk -> `load_scorer` -> prompts scored
//! without any response.
#![cfg(test)]

mod common;

use lookahead_model::artifact::{save_artifact, Method};
use lookahead_model::{load_scorer, HyperParams, ScorerOptions};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

/// The tiny backbone with its last two (filler) words renamed `[unused0]`, `[unused1]`: the
/// identity tokens of a two-model pool.
fn backbone_with_identity_tokens(root: &std::path::Path) -> std::path::PathBuf {
    let dir = common::tiny_backbone_dir(&root.join("bb"), 0.0);
    let mut vocab = common::vocab();
    let n = vocab.len();
    vocab[n - 2] = "[unused0]".into();
    vocab[n - 1] = "[unused1]".into();
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
    dir
}

#[test]
fn mlm_artifact_trains_saves_loads_and_scores_prompts_without_responses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = backbone_with_identity_tokens(tmp.path());
    let train = common::toy_examples(64, 0);
    let valid = common::toy_examples(16, 1000);
    let hyper = HyperParams {
        trainable_layers: 2,
        slot_tokens: 4,
        max_prompt_tokens: 16,
        learning_rate: 3e-3,
        batch_size: 8,
        max_epochs: 16,
        patience: 16,
        ..HyperParams::default()
    };
    let req = common::toy_request(
        &dir,
        Method::Mlm,
        hyper,
        &train,
        &valid,
        None,
        tmp.path().join("states"),
    );
    let trained = lookahead_model::train(&req).unwrap();
    assert_eq!(trained.meta.method, Method::Mlm);
    assert!(trained.meta.acceptance.is_some(), "the acceptance gate ran");
    // 3 layers, 2 trainable: the lowest one (and the embeddings) stay frozen and are not saved.
    assert_eq!(trained.meta.hyper.frozen_layers, 1);
    assert!(trained
        .tensors
        .keys()
        .all(|k| !k.starts_with("embeddings.")));
    assert!(trained
        .tensors
        .contains_key("upper.1.attention.self.query.weight"));
    assert!(
        trained.meta.validation.router > trained.meta.validation.best_single,
        "{:?}",
        trained.meta.validation
    );
    let out = tmp.path().join("artifact");
    save_artifact(&out, &trained.meta, &trained.tensors).unwrap();
    let scorer = load_scorer(&out, &common::on(&dir)).unwrap();
    assert_eq!(scorer.models(), common::models().as_slice());
    let scores = scorer
        .score_batch(&["code alpha math story", "poem beta sum list"])
        .unwrap();
    assert_eq!(scores.len(), 2);
    assert!(scores.iter().all(|s| s.len() == 2));
    assert!(scores[0][0] > scores[0][1], "{scores:?}");
    assert!(scores[1][1] > scores[1][0], "{scores:?}");

    // int8 weights are for lite, MLC and kNN: asking for them is refused, not ignored.
    let int8 = ScorerOptions {
        precision: lookahead_model::Precision::Int8,
        ..common::on(&dir)
    };
    let err = load_scorer(&out, &int8).err().unwrap();
    assert!(
        matches!(err, lookahead_model::ArtifactError::Unsupported(_)),
        "{err}"
    );
    assert!(err.to_string().contains("int8"), "{err}");

    // Artifacts written before router.json recorded the encoder family load as BERT.
    let meta_path = out.join(lookahead_model::artifact::META_FILE);
    let json = std::fs::read_to_string(&meta_path).unwrap();
    assert!(json.contains(r#""kind": "bert""#), "{json}");
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old["backbone"].as_object_mut().unwrap().remove("kind");
    std::fs::write(&meta_path, old.to_string()).unwrap();
    let scorer = load_scorer(&out, &common::on(&dir)).unwrap();
    let again = scorer
        .score_batch(&["code alpha math story", "poem beta sum list"])
        .unwrap();
    assert_eq!(again, scores);
}
