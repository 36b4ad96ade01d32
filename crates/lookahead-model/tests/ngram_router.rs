//! The n-gram router's source features (`HyperParams::source_features`), trained through
//! `lookahead_model::train` and served through `load_scorer` from a saved artifact.
#![cfg(test)]

mod common;

use std::path::Path;

use lookahead_model::wide::NgramTokens;
use lookahead_model::{
    load_scorer, save_artifact, Example, HyperParams, Method, ScorerOptions, Trained,
};

/// A two-model example whose labels are its scaled scores (0 or 1 here) and that has no
/// responses.
fn scored(id: String, source: &str, prompt: String, quality: Vec<f32>) -> Example {
    Example {
        id,
        source: source.into(),
        prompt,
        responses: vec![String::new(); 2],
        labels: quality.iter().map(|q| q / 100.0).collect(),
        quality,
    }
}

/// Two sources whose prompts say which they are ("quiz …" / "story …"), and a key word that
/// points to opposite models in each: on source A "alpha" prompts go to model 0, on source B to
/// model 1 (and "beta" the other way). No linear model over shared n-grams can route this (the
/// key word's weight would have to take both signs); one with a copy of each feature per source
/// can.
fn crossed(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let source_a = j % 4 < 2;
            let alpha = j.is_multiple_of(2);
            let first = alpha == source_a;
            let marker = if source_a { "quiz" } else { "story" };
            let key = if alpha { "alpha" } else { "beta" };
            // Independent of the route, so no bigram spells out (source, key).
            let filler = common::WORDS[4 + (j / 4) % 10];
            let quality = if first {
                vec![100.0, 0.0]
            } else {
                vec![0.0, 100.0]
            };
            scored(
                format!("crossed-{j}"),
                if source_a { "A" } else { "B" },
                format!("{marker} {filler} {key} {filler}"),
                quality,
            )
        })
        .collect()
}

/// The toy n-gram settings the tests vary one flag of: a small hash space and no calibration
/// (what a test checks is the fit itself).
fn toy_hyper() -> HyperParams {
    HyperParams {
        ngram_buckets: 1 << 12,
        source_calibration: false,
        ..HyperParams::default()
    }
}

/// The n-gram router trained through `lookahead_model::train` on the train, validation and
/// test examples.
fn train_ngram(
    backbone: &Path,
    tmp: &Path,
    hyper: HyperParams,
    [train, valid, test]: [&[Example]; 3],
) -> Trained {
    let req = common::toy_request(
        backbone,
        Method::Ngram,
        hyper,
        train,
        valid,
        Some(test),
        tmp.join("states"),
    );
    lookahead_model::train(&req).unwrap()
}

/// The router's score on the test examples, as training measured it.
fn score(trained: &Trained) -> f64 {
    trained.meta.test.as_ref().unwrap().router
}

#[test]
fn source_features_route_a_word_that_means_opposite_things_in_two_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let (train, valid, test) = (crossed(96, 0), crossed(32, 96), crossed(32, 128));
    let fit = |source_features: bool| {
        let hyper = HyperParams {
            source_features,
            ..toy_hyper()
        };
        train_ngram(&dir, tmp.path(), hyper, [&train, &valid, &test])
    };
    let shared = fit(false);
    let aware = fit(true);
    assert!(score(&shared) <= 75.0, "shared n-grams: {}", score(&shared));
    assert!(
        score(&aware) >= 90.0,
        "with source features: {}",
        score(&aware)
    );

    // The artifact serves the same: its source classifier picks the copy per prompt.
    let art = tmp.path().join("aware");
    save_artifact(&art, &aware.meta, &aware.tensors).unwrap();
    let scorer = load_scorer(&art, &ScorerOptions::default()).unwrap();
    let prompts: Vec<&str> = test.iter().map(|e| e.prompt.as_str()).collect();
    let scores = scorer.score_batch(&prompts).unwrap();
    let right = test
        .iter()
        .zip(&scores)
        .filter(|(e, s)| (s[1] > s[0]) == (e.quality[1] > e.quality[0]))
        .count();
    assert!(
        right * 10 >= test.len() * 9,
        "{right} of {} routed right",
        test.len()
    );
}

/// One prompt text that says nothing about the outcome; model 0 always scores 60, model 1
/// scores 100 on 55% of the examples and 0 on the rest. Model 0 is the better route (60 > 55
/// expected), yet the paper's labels (within 0.8 of the prompt's best after min–max
/// normalisation) call model 1 the winner of 55% of prompts and model 0 of 45%.
fn coin_flips(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let quality = if j % 20 < 11 {
                vec![60.0, 100.0]
            } else {
                vec![60.0, 0.0]
            };
            Example {
                id: format!("coin-{j}"),
                source: "A".into(),
                prompt: "please answer the question".into(),
                responses: vec![String::new(); 2],
                labels: lookahead_data::label_targets(
                    &quality.iter().map(|&q| f64::from(q)).collect::<Vec<_>>(),
                    HyperParams::default().label_threshold,
                ),
                quality,
            }
        })
        .collect()
}

/// `--score-targets`: the n-gram router (trained by `lookahead_model::train`) learns each model's
/// expected score and routes to the better model, where the paper's labels route to the one that
/// wins more often.
#[test]
fn score_targets_route_on_the_expected_score_not_on_how_often_a_model_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let (train, valid, test) = (
        coin_flips(400, 0),
        coin_flips(100, 400),
        coin_flips(100, 500),
    );
    let fit = |score_targets: bool| {
        let hyper = HyperParams {
            score_targets,
            ..toy_hyper()
        };
        train_ngram(&dir, tmp.path(), hyper, [&train, &valid, &test])
    };
    let paper = fit(false);
    let expected = fit(true);
    assert!(score(&paper) < 57.0, "paper labels: {}", score(&paper));
    assert!(
        (score(&expected) - 60.0).abs() < 1e-6,
        "score targets: {}",
        score(&expected)
    );
}

/// Two sources told apart by their last character only (`?` on A, `!` on B), model 0 best on
/// A and model 1 on B: only an n-gram map that reads punctuation can route (or classify) them.
fn punctuated(n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let source_a = j.is_multiple_of(2);
            let quality = if source_a {
                vec![100.0, 0.0]
            } else {
                vec![0.0, 100.0]
            };
            let words = [common::WORDS[j % 16], common::WORDS[(j / 16) % 16]];
            let mark = if source_a { "?" } else { "!" };
            scored(
                format!("punctuated-{j}"),
                if source_a { "A" } else { "B" },
                format!("{} {} {mark}", words[0], words[1]),
                quality,
            )
        })
        .collect()
}

/// An artifact written before `ngram_tokens` existed (no such key in its `router.json`) was
/// fitted on words and punctuation, and the router loading it (`load_scorer`: the n-gram
/// weights, the source classifier, the within-source calibration's classifier) keeps reading
/// it that way after an upgrade; read as words only it would route blind.
#[test]
fn an_artifact_from_before_the_token_setting_keeps_routing_on_punctuation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let (train, valid, test) = (punctuated(96, 0), punctuated(32, 96), punctuated(32, 128));
    let hyper = HyperParams {
        ngram_tokens: NgramTokens::WordsAndPunctuation,
        ngram_min_df: 1,
        source_features: true,
        source_calibration: true,
        ..toy_hyper()
    };
    let mut req = common::toy_request(
        &dir,
        Method::Ngram,
        hyper,
        &train,
        &valid,
        Some(&test),
        tmp.path().join("states"),
    );
    req.acceptance_folds = 4;
    let trained = lookahead_model::train(&req).unwrap();
    assert!(score(&trained) >= 99.0, "{}", score(&trained));
    let art = tmp.path().join("old");
    save_artifact(&art, &trained.meta, &trained.tensors).unwrap();
    let prompts: Vec<&str> = test.iter().map(|e| e.prompt.as_str()).collect();
    let served = |art: &Path| {
        let scorer = load_scorer(art, &ScorerOptions::default()).unwrap();
        scorer.score_batch(&prompts).unwrap()
    };
    let now = served(&art);

    let rewrite = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let path = art.join("router.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(meta["hyper"].as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_string(&meta).unwrap()).unwrap();
    };
    rewrite(&|hyper| {
        assert!(hyper.remove("ngram_tokens").is_some());
        assert!(hyper.remove("ngram_min_df").is_some());
    });
    assert_eq!(served(&art), now, "read as it was written");
    let right = |scores: &[Vec<f32>]| {
        test.iter()
            .zip(scores)
            .filter(|(e, s)| (s[1] > s[0]) == (e.quality[1] > e.quality[0]))
            .count()
    };
    assert_eq!(right(&now), test.len());

    rewrite(&|hyper| {
        hyper.insert("ngram_tokens".into(), "words".into());
    });
    let blind = served(&art);
    assert_ne!(blind, now);
    assert!(right(&blind) < test.len(), "{blind:?}");
}

/// `n` prompts holding `key` (and filler words that say nothing), where model `best` scores 100
/// and the other 0.
fn keyed(key: &str, best: usize, n: usize, offset: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let mut quality = vec![0.0, 0.0];
            quality[best] = 100.0;
            let prompt = format!(
                "{} {key} {}",
                common::WORDS[4 + j % 12],
                common::WORDS[4 + (j / 12) % 12]
            );
            scored(format!("keyed-{j}"), "A", prompt, quality)
        })
        .collect()
}

/// `refit`: once validation has picked the strength, the n-gram router (trained by
/// `lookahead_model::train`) is fitted again on training and validation examples together, so
/// what only the validation examples show (here: "gamma" prompts go to model 0, while the
/// training examples lean to model 1) reaches the router served and tested; its validation
/// line stays the first fit's.
#[test]
fn a_refit_router_learns_what_only_the_validation_examples_show() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let train = [keyed("alpha", 0, 32, 0), keyed("beta", 1, 64, 32)].concat();
    let valid = [keyed("beta", 1, 8, 96), keyed("gamma", 0, 24, 104)].concat();
    let test = keyed("gamma", 0, 24, 200);
    let fit = |refit: bool| {
        let hyper = HyperParams {
            refit,
            ..toy_hyper()
        };
        train_ngram(&dir, tmp.path(), hyper, [&train, &valid, &test])
    };
    let (first, refit) = (fit(false), fit(true));
    assert!(
        score(&first) <= 50.0,
        "without the refit: {}",
        score(&first)
    );
    assert!(score(&refit) >= 90.0, "refit: {}", score(&refit));
    assert_eq!(first.meta.validation, refit.meta.validation);
    assert_eq!(first.meta.ngram_strength, refit.meta.ngram_strength);
}

/// Chinese prompts, written without spaces: "…诗歌…" (a poem) prompts go to model 0, "…函数…"
/// (a function) prompts to model 1, around filler characters that make every prompt's text
/// different.
fn chinese(n: usize, offset: usize) -> Vec<Example> {
    const FILLER: [&str; 8] = ["山", "水", "花", "月", "风", "雨", "星", "云"];
    (0..n)
        .map(|i| {
            let j = i + offset;
            let poem = j.is_multiple_of(2);
            let quality = if poem {
                vec![100.0, 0.0]
            } else {
                vec![0.0, 100.0]
            };
            let key = if poem { "诗歌" } else { "函数" };
            let [a, b, c] = [j / 2 % 8, j / 16 % 8, j / 128 % 8].map(|k| FILLER[k]);
            let prompt = format!("请{a}{b}写一个{key}{c}");
            scored(format!("chinese-{j}"), "A", prompt, quality)
        })
        .collect()
}

/// The n-gram router (trained by `lookahead_model::train`) on its default tokens routes
/// Chinese prompts by what they ask; on `words`, each prompt is one token no other prompt has
/// and it routes blind.
#[test]
fn the_default_tokens_route_prompts_written_without_spaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_backbone_dir(&tmp.path().join("bb"), 0.0);
    let (train, valid, test) = (chinese(96, 0), chinese(32, 96), chinese(32, 128));
    let fit = |ngram_tokens| {
        let hyper = HyperParams {
            ngram_tokens,
            ..toy_hyper()
        };
        train_ngram(&dir, tmp.path(), hyper, [&train, &valid, &test])
    };
    let default = fit(HyperParams::default().ngram_tokens);
    assert!(score(&default) >= 90.0, "default: {}", score(&default));
    let words = fit(NgramTokens::Words);
    assert!(score(&words) <= 60.0, "words: {}", score(&words));
}
