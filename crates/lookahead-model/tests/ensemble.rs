//! Ensembles (`Method::Ensemble`) of real member routers, trained through
//! `lookahead_model::train` on a tiny, randomly initialised BERT written as a real Hugging Face
//! directory, saved as an artifact with its members' artifacts and served by `load_scorer`.
#![cfg(test)]

mod common;

use lookahead_model::artifact::{member_dir, Method, RouterMeta};
use lookahead_model::select::select;
use lookahead_model::{load_scorer, Example, HyperParams, TrainError};

fn hyper(members: Vec<Method>) -> HyperParams {
    HyperParams {
        frozen_layers: 1,
        trainable_layers: 2,
        slot_tokens: 4,
        max_prompt_tokens: 16,
        lambda: 0.0,
        learning_rate: 1e-2,
        batch_size: 8,
        max_epochs: 6,
        patience: 6,
        ngram_buckets: 1 << 12,
        members,
        ..HyperParams::default()
    }
}

/// Toy examples whose key word comes after 30 filler words: past the encoder's 16-token window.
fn late_key(n: usize, offset: usize) -> Vec<Example> {
    common::toy_examples(n, offset)
        .into_iter()
        .map(|mut e| {
            let key = if e.prompt.contains("alpha") {
                "alpha"
            } else {
                "beta"
            };
            e.prompt = format!("{} question {key}", vec!["the"; 30].join(" "));
            e
        })
        .collect()
}

/// The n-gram router reads the key word a head-cut encoder never sees: an ensemble of the two
/// routes the task through the mean of their scores, its gate judges the ensemble on
/// validation (the n-gram member's own gate is cross-fitted), and the saved artifact, members
/// under `members/<method>`, serves exactly the decisions training measured.
#[test]
fn an_ensemble_trains_its_members_gates_their_mean_and_serves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let (train, valid, test) = (late_key(48, 0), late_key(16, 1000), late_key(16, 2000));
    let mut req = common::toy_request(
        &dir,
        Method::Ensemble,
        hyper(vec![Method::Ngram, Method::Mlc]),
        &train,
        &valid,
        Some(&test),
        tmp.path().join("states"),
    );
    req.acceptance_folds = 4;
    let t = lookahead_model::train(&req).unwrap();
    assert_eq!(t.meta.method, Method::Ensemble);
    let methods: Vec<Method> = t.members.iter().map(|m| m.meta.method).collect();
    assert_eq!(methods, [Method::Ngram, Method::Mlc]);
    let ngram = t.members[0].meta.acceptance.clone().unwrap();
    assert_eq!(ngram.folds, 4, "{ngram}");
    assert_eq!(t.members[1].meta.acceptance.clone().unwrap().folds, 0);
    let verdict = t.meta.acceptance.clone().expect("the ensemble's gate ran");
    assert_eq!((verdict.folds, verdict.examples), (0, 16), "{verdict}");
    assert!(verdict.accepted, "{verdict}");
    let test_metrics = t.meta.test.clone().unwrap();
    let mlc_alone = t.members[1].meta.test.clone().unwrap();
    assert!(
        test_metrics.router >= 87.5,
        "ensemble {}",
        test_metrics.router
    );
    assert!(mlc_alone.router <= 75.0, "MLC alone {}", mlc_alone.router);

    let art = tmp.path().join("ensemble");
    t.save(&art).unwrap();
    let meta = RouterMeta::read(&art).unwrap();
    assert_eq!(meta.hyper.members, [Method::Ngram, Method::Mlc]);
    for m in [Method::Ngram, Method::Mlc] {
        assert_eq!(RouterMeta::read(&member_dir(&art, m)).unwrap().method, m);
    }
    let scorer = load_scorer(&art, &common::on(&dir)).unwrap();
    assert!(!scorer.is_trivial(), "an encoder member runs a model");
    let prompts: Vec<&str> = test.iter().map(|e| e.prompt.as_str()).collect();
    let served: f64 = scorer
        .score_batch(&prompts)
        .unwrap()
        .iter()
        .zip(&test)
        .map(|(row, e)| f64::from(e.quality[select(row, None, 0.0).unwrap()]))
        .sum::<f64>()
        / test.len() as f64;
    assert!(
        (served - test_metrics.router).abs() < 1e-9,
        "{served} vs {}",
        test_metrics.router
    );
}

/// Members the ensemble cannot be made of are refused before anything trains.
#[test]
fn an_ensemble_without_members_nested_or_repeated_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let (train, valid) = (late_key(8, 0), late_key(4, 1000));
    for members in [
        vec![],
        vec![Method::Ngram, Method::Ensemble],
        vec![Method::Ngram, Method::Ngram],
    ] {
        let req = common::toy_request(
            &dir,
            Method::Ensemble,
            hyper(members.clone()),
            &train,
            &valid,
            None,
            tmp.path().join("states"),
        );
        let err = lookahead_model::train(&req).err().unwrap();
        assert!(matches!(err, TrainError::Hyper(_)), "{members:?}: {err}");
    }
}
