#![cfg(test)]
//! The honest evaluation protocol (issue 15): baselines chosen on each artifact's training
//! records, paired bootstrap comparisons, and the per-record predictions file.

use lookahead_data::metrics::{best_single, oracle_decisions};
use lookahead_data::report::comparison_table;
use lookahead_data::{
    honest_comparisons, matched_scores, prediction_lines, read_predictions, write_predictions,
    BootstrapOptions, ComparisonKind, EvalExtras, EvalSet, Evaluation,
};

/// Source S: fold 0 = r1 [90, 0], r2 [0, 0]; fold 1 = r3 [0, 50], r4 [0, 50]. In sample, b is
/// best on S (25 vs 22.5), but each fold's artifact trained on the *other* fold: fold 0's saw
/// b win (50 vs 0), fold 1's saw a win (45 vs 0), and both choices score 0 on their own fold.
/// Source T: t1 (fold 0) and t2 (fold 1), a always 80, b 20.
fn set() -> EvalSet {
    let rows = [
        ("r1", "S", [90.0, 0.0]),
        ("r2", "S", [0.0, 0.0]),
        ("r3", "S", [0.0, 50.0]),
        ("r4", "S", [0.0, 50.0]),
        ("t1", "T", [80.0, 20.0]),
        ("t2", "T", [80.0, 20.0]),
    ];
    EvalSet::from_scaled(
        vec!["a".into(), "b".into()],
        rows.iter()
            .map(|(id, s, v)| (id.to_string(), s.to_string(), v.to_vec()))
            .collect(),
    )
    .unwrap()
}

const FOLDS: [Option<usize>; 6] = [Some(0), Some(0), Some(1), Some(1), Some(0), Some(1)];

#[test]
fn the_bar_is_chosen_on_the_training_folds_not_in_sample() {
    let set = set();
    let in_sample = best_single(&set);
    assert_eq!(in_sample.per_source["S"], ("b".to_string(), 25.0));
    assert_eq!(in_sample.per_source_average, (25.0 + 80.0) / 2.0);

    let choices = set.trained_choices(&FOLDS).unwrap();
    // S: fold 0 records take b, fold 1 records take a; T: a everywhere.
    assert_eq!(choices.per_source, vec![1, 1, 0, 0, 0, 0]);
    // Overall (equal weight over S and T of the training fold): fold 0's artifact saw
    // a (0 + 80) / 2 = 40 vs b (50 + 20) / 2 = 35 -> a; fold 1's saw a (45 + 80) / 2 -> a.
    assert_eq!(choices.overall, vec![0; 6]);

    let oracle = oracle_decisions(&set);
    let comparisons =
        honest_comparisons(&set, &oracle, &choices, &BootstrapOptions::default()).unwrap();
    let bar = &comparisons[0];
    assert_eq!(bar.kind, ComparisonKind::HonestBar);
    assert_eq!(bar.sources["S"], 0.0, "both folds' choices score 0 on S");
    assert_eq!(bar.score, 40.0, "(0 + 80) / 2, not the in-sample 52.5");
    // The oracle scores (47.5 + 80) / 2 = 63.75.
    assert!((bar.gain.gain - 23.75).abs() < 1e-9, "{:?}", bar.gain);
    assert!(bar.gain.lower <= bar.gain.gain && bar.gain.gain <= bar.gain.upper);
    assert_eq!(bar.picks["S"]["a"], 2);
    assert_eq!(bar.picks["S"]["b"], 2);
    let single = &comparisons[1];
    assert_eq!(single.kind, ComparisonKind::BestSingle);
    assert_eq!(single.score, (22.5 + 80.0) / 2.0);

    let mut eval = Evaluation::compute(&set, "oracle", &oracle, EvalExtras::default()).unwrap();
    eval.comparisons = comparisons;
    let table = comparison_table(&eval);
    assert!(table.contains("| 40.00 | +23.75 ["), "{table}");
    assert!(table.contains("S: a (2), b (2); T: a (2)"), "{table}");
    let json = serde_json::to_value(&eval).unwrap();
    assert_eq!(json["comparisons"][0]["kind"], "honest_bar");
    assert_eq!(json["comparisons"][0]["gain"]["gain"], 23.75);
}

#[test]
fn a_single_holdout_chooses_on_its_train_and_validation_records() {
    let set = set();
    // r1, r2, t1 trained the one artifact; r3, r4, t2 are its test records.
    let marks = [None, None, Some(0), Some(0), None, Some(0)];
    let judged = set.judged(&marks).unwrap();
    assert_eq!(judged.len(), 3);
    let choices = set.trained_choices(&marks).unwrap();
    assert_eq!(choices.per_source, vec![0, 0, 0], "r1 made a the bar on S");
    let router = vec![1, 1, 0];
    let c = honest_comparisons(&judged, &router, &choices, &BootstrapOptions::default()).unwrap();
    assert_eq!(c[0].score, 40.0);
    assert_eq!(c[0].gain.gain, (50.0 + 80.0) / 2.0 - 40.0);
}

#[test]
fn predictions_round_trip_and_match_by_record_id() {
    let set = set();
    let decisions = vec![0, 1, 1, 0, 0, 1];
    let predicted: Vec<Vec<f64>> = (0..6).map(|i| vec![i as f64, 0.5]).collect();
    let folds = [0, 0, 1, 1, 0, 1];
    let lines = prediction_lines(&set, &decisions, Some(&predicted), Some(&folds)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pred.jsonl");
    write_predictions(&path, &lines).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(
        text.starts_with(
            r#"{"id":"r1","source":"S","fold":0,"predicted":{"a":0.0,"b":0.5},"decision":"a","scaled":{"a":90.0,"b":0.0}}"#
        ),
        "{text}"
    );
    let back = read_predictions(&path).unwrap();
    assert_eq!(back, lines);

    // Matched by id, whatever the file's order.
    let mut shuffled = back.clone();
    shuffled.reverse();
    let scores = matched_scores(&set, &shuffled, &path).unwrap();
    assert_eq!(scores, set.scores_of(&decisions).unwrap());

    // Without predictions or folds those keys are left out.
    let bare = prediction_lines(&set, &decisions, None, None).unwrap();
    let json = serde_json::to_string(&bare[0]).unwrap();
    assert!(
        !json.contains("fold") && !json.contains("predicted"),
        "{json}"
    );
}

#[test]
fn predictions_of_other_records_are_a_clear_error() {
    let set = set();
    let lines = prediction_lines(&set, &[0; 6], None, None).unwrap();
    let path = std::path::Path::new("other.jsonl");
    let err = matched_scores(&set, &lines[..5], path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("other.jsonl"), "{err}");
    assert!(
        err.contains("1 of the 6 records evaluated here are not in the file (first: t2)"),
        "{err}"
    );
    let mut extra = lines.clone();
    extra[5].id = "zz".into();
    let err = matched_scores(&set, &extra, path).unwrap_err().to_string();
    assert!(
        err.contains("and 1 of the file's 6 records are not evaluated here"),
        "{err}"
    );
    let mut twice = lines.clone();
    twice.push(lines[0].clone());
    let err = matched_scores(&set, &twice, path).unwrap_err().to_string();
    assert!(err.contains("\"r1\" appears twice"), "{err}");
    std::fs::write(
        std::env::temp_dir().join("la-bad-pred.jsonl"),
        "{not json\n",
    )
    .unwrap();
    assert!(read_predictions(&std::env::temp_dir().join("la-bad-pred.jsonl")).is_err());
}
