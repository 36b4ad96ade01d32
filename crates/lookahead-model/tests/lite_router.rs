//! Lite / MLC / kNN routers on a tiny, randomly initialised BERT written as a real Hugging Face
//! directory (loaded through the production path: config.json, safetensors, tokenizers).
#![cfg(test)]

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lookahead_model::artifact::{save_artifact, ArtifactError, Method, RouterMeta};
use lookahead_model::fit::mask_rate;
use lookahead_model::kernels::ops::Mode;
use lookahead_model::methods::lite::model::{
    loss, seed_upper_from_backbone, stack_states, visible_positions, UpperKind, UpperModel,
    UpperShape,
};
use lookahead_model::{load_scorer, Backbone, HyperParams, ScorerOptions};

fn tiny_hyper() -> HyperParams {
    HyperParams {
        frozen_layers: 1,
        trainable_layers: 2,
        slot_tokens: 4,
        max_prompt_tokens: 16,
        lambda: 0.5,
        learning_rate: 1e-2,
        batch_size: 8,
        max_epochs: 20,
        patience: 20,
        knn_k: 3,
        ..HyperParams::default()
    }
}

#[test]
fn gradients_reach_every_trainable_tensor_and_no_frozen_one() -> candle_core::Result<()> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let backbone = Backbone::load(&dir, &Device::Cpu).unwrap();
    let cfg = backbone.bert("this test").unwrap().config.clone();
    let varmap = VarMap::new();
    seed_upper_from_backbone(&varmap, &backbone.tensors, 1, 2)?;
    let shape = UpperShape {
        kind: UpperKind::Lite,
        frozen_layers: 1,
        trainable_layers: 2,
        slot_tokens: 4,
        models: 2,
    };
    let model = UpperModel::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
        shape,
    )?;

    // Frozen layer run in training mode, so its weights are in the graph.
    let batch = backbone
        .batch(&["alpha code", "beta math story poem"], 16)
        .unwrap();
    let prompt = backbone
        .encoder
        .forward_lower(&batch.ids, &batch.keep, 1, Mode::Train)?;
    let resp = Tensor::randn(0f32, 1.0, (2, 2, 4, cfg.hidden_size), &Device::Cpu)?;
    let keep = Tensor::new(
        &[
            [[1f32, 1., 1., 0.], [1., 1., 1., 1.]],
            [[1., 1., 0., 0.], [1., 1., 1., 1.]],
        ],
        &Device::Cpu,
    )?;
    let visible = visible_positions(&keep, 0.5)?;
    let out = model.forward(&prompt, &batch.keep, Some((&resp, &visible)), Mode::Train)?;
    let labels = Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu)?;
    let l = loss(&out, &labels, Some((&resp, &keep, &visible)), 0.5)?;
    assert!(l.reconstruction > 0.0);
    let grads = l.total.backward()?;
    let vars = varmap.data().lock().unwrap();
    assert!(
        vars.len() >= 2 * 16 + 6,
        "only {} trainable tensors",
        vars.len()
    );
    for (name, var) in vars.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0, "zero gradient for {name}");
    }
    for (name, t) in &backbone.tensors {
        assert!(
            grads.get(t).is_none(),
            "frozen backbone tensor {name} got a gradient"
        );
    }
    Ok(())
}

#[test]
fn curriculum_rises_from_start_to_full_masking_over_first_fifth() {
    assert!((mask_rate(0, 100, 0.3, 0.2) - 0.3).abs() < 1e-9);
    assert!((mask_rate(10, 100, 0.3, 0.2) - 0.65).abs() < 1e-9);
    assert!((mask_rate(20, 100, 0.3, 0.2) - 1.0).abs() < 1e-9);
    assert!((mask_rate(90, 100, 0.3, 0.2) - 1.0).abs() < 1e-9);
}

#[test]
fn masking_hides_the_response_suffix_and_padding() -> candle_core::Result<()> {
    let keep = Tensor::new(&[[[1f32, 1., 1., 1.], [1., 1., 0., 0.]]], &Device::Cpu)?;
    let v: Vec<Vec<Vec<f32>>> = visible_positions(&keep, 0.3)?.to_vec3()?;
    // ceil(0.3 * 4) = 2 suffix positions masked; padding never visible.
    assert_eq!(v[0], vec![vec![1., 1., 0., 0.], vec![1., 1., 0., 0.]]);
    let v: Vec<Vec<Vec<f32>>> = visible_positions(&keep, 1.0)?.to_vec3()?;
    assert_eq!(v[0], vec![vec![0.; 4], vec![0.; 4]]);
    Ok(())
}

#[test]
fn stacking_pads_prompts_and_slots() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let a = Tensor::ones((3, 8), DType::F16, &dev)?;
    let b = Tensor::ones((5, 8), DType::F16, &dev)?;
    let r1 = Tensor::ones((2, 8), DType::F16, &dev)?;
    let r2 = Tensor::ones((6, 8), DType::F16, &dev)?;
    let responses = vec![vec![&r1, &r2], vec![&r2, &r1]];
    let batch = stack_states(&[&a, &b], Some(&responses), 4, &dev)?;
    assert_eq!(batch.prompt.dims(), &[2, 5, 8]);
    assert_eq!(
        batch.prompt_keep.to_vec2::<f32>()?[0],
        vec![1., 1., 1., 0., 0.]
    );
    let rk: Vec<Vec<Vec<f32>>> = batch.resp_keep.unwrap().to_vec3()?;
    assert_eq!(rk[0], vec![vec![1., 1., 0., 0.], vec![1., 1., 1., 1.]]);
    assert_eq!(batch.responses.unwrap().dims(), &[2, 2, 4, 8]);
    Ok(())
}

fn train(
    method: Method,
    dir: &std::path::Path,
    states: &std::path::Path,
    lambda: f64,
) -> lookahead_model::Trained {
    let train_set = common::toy_examples(48, 0);
    let valid = common::toy_examples(16, 1000);
    let test = common::toy_examples(16, 2000);
    let req = common::toy_request(
        dir,
        method,
        HyperParams {
            lambda,
            ..tiny_hyper()
        },
        &train_set,
        &valid,
        Some(&test),
        states.to_path_buf(),
    );
    lookahead_model::train(&req).unwrap()
}

/// The toy task is learnable only from the prompt's key word: every method should route
/// (nearly) perfectly on held-out prompts, and lite's BCE must fall well below its start; lite
/// and MLC pass the acceptance gate (they beat the best single model on validation).
#[test]
fn lite_mlc_and_knn_learn_a_toy_routing_task() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let states = tmp.path().join("states");
    for method in [Method::Lite, Method::Mlc, Method::Knn] {
        let t = train(method, &dir, &states, 0.5);
        let verdict = t.meta.acceptance.clone().expect("the acceptance gate ran");
        assert_eq!(verdict.examples, 16);
        assert!(verdict.gain > 0.0, "{method}: {verdict}");
        if method != Method::Knn {
            // kNN (k = 3 over 48 prompts) is not perfect on 16 prompts: its bound stays wide.
            assert!(verdict.accepted, "{method}: {verdict}");
        }
        let test = t.meta.test.clone().unwrap();
        assert_eq!(test.examples, 16);
        assert!(
            test.router >= 87.5,
            "{method}: held-out router {} (oracle {})",
            test.router,
            test.oracle
        );
        if method != Method::Knn {
            // Labels are balanced: BCE starts at ln 2.
            assert!(test.bce.unwrap() < 0.45, "{method}: bce {:?}", test.bce);
        }
    }
}

#[test]
fn artifact_round_trip_scores_prompts_alone_and_rejects_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let other = common::tiny_backbone_dir(&tmp.path().join("other"), 0.5);
    let states = tmp.path().join("states");
    let t = train(Method::Lite, &dir, &states, 0.5);
    let art = tmp.path().join("artifact");
    save_artifact(&art, &t.meta, &t.tensors).unwrap();

    // Inference needs prompts only (no responses anywhere in the API) and scores the pool.
    let scorer = load_scorer(&art, &common::on(&dir)).unwrap();
    assert_eq!(scorer.models(), common::models().as_slice());
    // Unseen prompts of the toy task: an "alpha" one, a "beta" one, and a bare word.
    let unseen = common::toy_examples(2, 5000);
    assert!(unseen[0].prompt.contains("alpha") && unseen[1].prompt.contains("beta"));
    let scores = scorer
        .score_batch(&[&unseen[0].prompt, &unseen[1].prompt, "fast"])
        .unwrap();
    assert_eq!(scores.len(), 3);
    assert!(scores
        .iter()
        .all(|s| s.len() == 2 && s.iter().all(|p| (0.0..=1.0).contains(p))));
    assert!(
        scores[0][0] > scores[0][1] && scores[1][1] > scores[1][0],
        "{scores:?}"
    );
    // Batched and single scoring agree (padding is masked).
    let single = scorer.score_batch(&["fast"]).unwrap();
    assert!((single[0][0] - scores[2][0]).abs() < 1e-4);

    // The saved meta round-trips.
    assert_eq!(RouterMeta::read(&art).unwrap(), t.meta);

    // Another backbone, another pool, another format: clear errors.
    let err = load_scorer(&art, &common::on(&other)).err().unwrap();
    assert!(
        matches!(err, ArtifactError::BackboneMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--backbone"));
    let swapped = ScorerOptions {
        models: Some(vec!["m-beta".to_string(), "m-alpha".to_string()]),
        ..common::on(&dir)
    };
    let err = load_scorer(&art, &swapped).err().unwrap();
    assert!(matches!(err, ArtifactError::ModelsMismatch { .. }), "{err}");
    let same = ScorerOptions {
        models: Some(common::models()),
        ..common::on(&dir)
    };
    assert!(load_scorer(&art, &same).is_ok());
    let json = std::fs::read_to_string(art.join("router.json")).unwrap();
    std::fs::write(
        art.join("router.json"),
        json.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    let err = load_scorer(&art, &common::on(&dir)).err().unwrap();
    assert!(
        matches!(err, ArtifactError::Version { found: 99, .. }),
        "{err}"
    );
}

/// `--precision int8` (int8 linears, fused attention): the same artifact routes the same way and
/// (lite, MLC) its scores stay close to the f32 ones; batched = single holds for it too.
#[test]
fn int8_scorer_routes_like_the_f32_scorer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let states = tmp.path().join("states");
    for method in [Method::Lite, Method::Mlc, Method::Knn] {
        let t = train(method, &dir, &states, 0.5);
        let art = tmp.path().join(format!("artifact-{method}"));
        save_artifact(&art, &t.meta, &t.tensors).unwrap();
        let f32_scorer = load_scorer(&art, &common::on(&dir)).unwrap();
        let int8_options = ScorerOptions {
            precision: lookahead_model::Precision::Int8,
            ..common::on(&dir)
        };
        let int8 = load_scorer(&art, &int8_options).unwrap();
        let unseen = common::toy_examples(16, 7000);
        let prompts: Vec<&str> = unseen.iter().map(|e| e.prompt.as_str()).collect();
        let exact = f32_scorer.score_batch(&prompts).unwrap();
        let quant = int8.score_batch(&prompts).unwrap();
        let mut same = 0;
        for (e, q) in exact.iter().zip(&quant) {
            // kNN scores are means over neighbours, so a swapped neighbour moves them by 1/k:
            // only its decisions are compared.
            if method != Method::Knn {
                for (a, b) in e.iter().zip(q) {
                    assert!((a - b).abs() < 0.05, "{method}: f32 {e:?} vs int8 {q:?}");
                }
            }
            let best = |s: &[f32]| usize::from(s[1] > s[0]);
            same += usize::from(best(e) == best(q));
        }
        assert!(
            same >= 15,
            "{method}: int8 picks the f32 choice on {same}/16"
        );
        let single = int8.score_batch(&prompts[..1]).unwrap();
        assert!((single[0][0] - quant[0][0]).abs() < 1e-4);
    }
}

#[test]
fn state_cache_encodes_each_text_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let backbone = Backbone::load(&dir, &Device::Cpu).unwrap();
    use lookahead_model::states::{state_key, TextKind};
    let kind = TextKind::Prompt { max_tokens: 8 };
    let resp = TextKind::Response { k: 2 };
    let texts = [
        (kind, "alpha beta"),
        (kind, "alpha beta"),
        (resp, "gamma delta code"),
    ];
    let mut cache = lookahead_model::StateCache::open(tmp.path(), &backbone.hash, 1).unwrap();
    assert_eq!(cache.ensure(&backbone, &texts, false).unwrap(), 2);
    assert_eq!(cache.ensure(&backbone, &texts, false).unwrap(), 0);
    let reopened = lookahead_model::StateCache::open(tmp.path(), &backbone.hash, 1).unwrap();
    assert_eq!(reopened.len(), 2);
    // [CLS] alpha beta [SEP] = 4 states; the response keeps its first k = 2 tokens.
    assert_eq!(
        reopened.get(&state_key(kind, "alpha beta")).unwrap().dims(),
        &[4, 32]
    );
    assert_eq!(
        reopened
            .get(&state_key(resp, "gamma delta code"))
            .unwrap()
            .dims(),
        &[2, 32]
    );
}

/// Inference computes only the rows it reads in the last layer; that must equal the full pass
/// (training mode runs every row and the composable kernels).
#[test]
fn inference_shortcut_matches_the_full_pass() -> candle_core::Result<()> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let backbone = Backbone::load(&dir, &Device::Cpu).unwrap();
    let cfg = backbone.bert("this test").unwrap().config.clone();
    for kind in [UpperKind::Lite, UpperKind::Mlc] {
        let varmap = VarMap::new();
        seed_upper_from_backbone(&varmap, &backbone.tensors, 1, 2)?;
        let shape = UpperShape {
            kind,
            frozen_layers: 1,
            trainable_layers: 2,
            slot_tokens: 3,
            models: 3,
        };
        let model = UpperModel::new(
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            &cfg,
            shape,
        )?;
        let batch = backbone
            .batch(&["alpha code tree", "beta math story poem list"], 16)
            .unwrap();
        let states = backbone
            .encoder
            .forward_lower(&batch.ids, &batch.keep, 1, Mode::Inference)?;
        let fast = model.forward(&states, &batch.keep, None, Mode::Inference)?;
        let full = model.forward(&states, &batch.keep, None, Mode::Train)?;
        let diff = (fast.logits - full.logits)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{kind:?}: {diff}");
    }
    Ok(())
}
