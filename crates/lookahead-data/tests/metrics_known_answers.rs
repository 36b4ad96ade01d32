//! Every metric on a small hand-made fixture whose answers were computed by hand (see comments).
#![cfg(test)]

use lookahead_data::metrics::{
    argmax_accuracy, best_single, cost_aware_decisions, decisions_from_predictions, mean_cost,
    oracle_decisions, oracle_score, quality_cost_curve, random_decisions, random_expected_score,
    router_score, routing_share, single_model_scores, win_loss, WinLoss,
};
use lookahead_data::{EvalExtras, EvalSet, Evaluation, Manifest, Pool, PoolRecord, Response};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

/// Models a, b, c. Scaled scores:
/// S1: r1 [100, 0, 0], r2 [0, 100, 100], r3 [0, 0, 0], r4 [100, 100, 0]
/// S2: r5 [50, 80, 20], r6 [90, 10, 40]
fn fixture() -> EvalSet {
    let rows = [
        ("r1", "S1", [100.0, 0.0, 0.0]),
        ("r2", "S1", [0.0, 100.0, 100.0]),
        ("r3", "S1", [0.0, 0.0, 0.0]),
        ("r4", "S1", [100.0, 100.0, 0.0]),
        ("r5", "S2", [50.0, 80.0, 20.0]),
        ("r6", "S2", [90.0, 10.0, 40.0]),
    ];
    EvalSet::from_scaled(
        vec!["a".into(), "b".into(), "c".into()],
        rows.iter()
            .map(|(id, s, v)| (id.to_string(), s.to_string(), v.to_vec()))
            .collect(),
    )
    .unwrap()
}

/// The router under test: b, c, a, b, b, c.
const ROUTER: [usize; 6] = [1, 2, 0, 1, 1, 2];

#[test]
fn router_single_oracle_random_scores() {
    let set = fixture();
    // router: S1 (0+100+0+100)/4 = 50, S2 (80+40)/2 = 60, average 55
    let r = router_score(&set, &ROUTER).unwrap();
    close(r.get("S1").unwrap(), 50.0);
    close(r.get("S2").unwrap(), 60.0);
    close(r.average, 55.0);
    // singles: a 50/70 -> 60; b 50/45 -> 47.5; c 25/30 -> 27.5
    let s = single_model_scores(&set);
    let expected = [(50.0, 70.0, 60.0), (50.0, 45.0, 47.5), (25.0, 30.0, 27.5)];
    for (got, (s1, s2, avg)) in s.iter().zip(expected) {
        close(got.get("S1").unwrap(), s1);
        close(got.get("S2").unwrap(), s2);
        close(got.average, avg);
    }
    // oracle: S1 (100+100+0+100)/4 = 75, S2 (80+90)/2 = 85, average 80
    let o = oracle_score(&set);
    close(o.get("S1").unwrap(), 75.0);
    close(o.get("S2").unwrap(), 85.0);
    close(o.average, 80.0);
    close(
        router_score(&set, &oracle_decisions(&set)).unwrap().average,
        80.0,
    );
    // random (expected): S1 (100/3 + 200/3 + 0 + 200/3)/4 = 125/3; S2 (50 + 140/3)/2 = 145/3
    let rnd = random_expected_score(&set);
    close(rnd.get("S1").unwrap(), 125.0 / 3.0);
    close(rnd.get("S2").unwrap(), 145.0 / 3.0);
    close(rnd.average, 45.0);
}

#[test]
fn best_single_per_source_and_overall() {
    let b = best_single(&fixture());
    // S1: a and b tie at 50 -> the first in pool order (a); S2: a 70
    assert_eq!(b.per_source["S1"], ("a".to_string(), 50.0));
    assert_eq!(b.per_source["S2"], ("a".to_string(), 70.0));
    close(b.per_source_average, 60.0);
    assert_eq!(b.model, "a");
    close(b.average, 60.0);
}

#[test]
fn share_accuracy_and_win_loss() {
    let set = fixture();
    let share = routing_share(&set, &ROUTER).unwrap();
    assert_eq!(share.by_source["S1"], vec![0.25, 0.5, 0.25]);
    assert_eq!(share.by_source["S2"], vec![0.0, 0.5, 0.5]);
    for (got, want) in share.overall.iter().zip([1.0 / 6.0, 0.5, 1.0 / 3.0]) {
        close(*got, want);
    }
    // right on r2, r3 (all tie), r4, r5 -> S1 3/4, S2 1/2
    let acc = argmax_accuracy(&set, &ROUTER).unwrap();
    close(acc.get("S1").unwrap(), 0.75);
    close(acc.get("S2").unwrap(), 0.5);
    close(acc.average, 0.625);
    // vs always-a: r1 loss, r2 win, r3 tie, r4 tie, r5 win, r6 loss
    let (per, total) = win_loss(&set, &ROUTER, &[0; 6]).unwrap();
    assert_eq!(
        total,
        WinLoss {
            wins: 2,
            losses: 2,
            ties: 2
        }
    );
    assert_eq!(
        per["S1"],
        WinLoss {
            wins: 1,
            losses: 1,
            ties: 2
        }
    );
    assert_eq!(
        per["S2"],
        WinLoss {
            wins: 1,
            losses: 1,
            ties: 0
        }
    );
}

#[test]
fn costs_and_quality_cost_curve() {
    let set = fixture();
    let prices = [3.0, 2.0, 1.0];
    // router: S1 (2+1+3+2)/4 = 2, S2 (2+1)/2 = 1.5 -> 1.75
    close(mean_cost(&set, &ROUTER, &prices).unwrap().average, 1.75);
    let oracle_pred: Vec<Vec<f64>> = set.items().iter().map(|i| i.scaled.clone()).collect();
    // weight 10 by hand: r1 a, r2 c, r3 c, r4 b, r5 b, r6 a
    assert_eq!(
        cost_aware_decisions(&oracle_pred, &prices, 10.0).unwrap(),
        vec![0, 2, 2, 1, 1, 0]
    );
    let curve = quality_cost_curve(&set, &oracle_pred, &prices, &[0.0, 10.0, 1000.0]).unwrap();
    // w=0: oracle (a,b,a,a,b,a): quality 80, cost S1 11/4, S2 5/2 -> 2.625
    close(curve[0].quality, 80.0);
    close(curve[0].cost, 2.625);
    // w=10: quality S1 75, S2 85 -> 80; cost S1 7/4, S2 5/2 -> 2.125
    close(curve[1].quality, 80.0);
    close(curve[1].cost, 2.125);
    // w=1000: always c -> 27.5 at cost 1
    close(curve[2].quality, 27.5);
    close(curve[2].cost, 1.0);
    assert!(mean_cost(&set, &ROUTER, &[1.0, 2.0]).is_err());
    assert!(mean_cost(&set, &ROUTER, &[1.0, -2.0, 0.0]).is_err());
}

#[test]
fn random_router_is_seeded_and_in_range() {
    let set = fixture();
    let a = random_decisions(&set, 7);
    assert_eq!(a, random_decisions(&set, 7));
    assert!(a.iter().all(|&d| d < 3));
    // over many records the share is about uniform
    let rows = (0..3000)
        .map(|i| (format!("r{i}"), "S".to_string(), vec![0.0, 0.0, 0.0]))
        .collect();
    let big = EvalSet::from_scaled(vec!["a".into(), "b".into(), "c".into()], rows).unwrap();
    let share = routing_share(&big, &random_decisions(&big, 1)).unwrap();
    assert!(
        share.overall.iter().all(|s| (s - 1.0 / 3.0).abs() < 0.04),
        "{share:?}"
    );
}

#[test]
fn decisions_are_validated() {
    let set = fixture();
    assert!(router_score(&set, &[0; 5]).is_err());
    assert!(router_score(&set, &[3, 0, 0, 0, 0, 0]).is_err());
    assert_eq!(
        decisions_from_predictions(&[vec![0.1, 0.9, 0.9], vec![f64::NAN, 0.0, -1.0]]).unwrap(),
        vec![1, 1]
    );
    assert!(decisions_from_predictions(&[vec![]]).is_err());
}

#[test]
fn evaluation_summary_has_the_cli_json_schema() {
    let set = fixture();
    let prices = [3.0, 2.0, 1.0];
    let eval = Evaluation::compute(
        &set,
        "test",
        &ROUTER,
        EvalExtras {
            predictions: None,
            prices: Some(&prices),
        },
    )
    .unwrap();
    close(eval.average, 55.0);
    close(eval.oracle, 80.0);
    close(eval.random, 45.0);
    assert_eq!(eval.best_single.model, "a");
    close(eval.cost.unwrap(), 1.75);
    let s1 = &eval.sources["S1"];
    assert_eq!(s1.n, 4);
    close(s1.best_single, 50.0);
    close(s1.share["b"], 0.5);
    let json = serde_json::to_value(&eval).unwrap();
    for key in ["average", "sources", "best_single", "oracle", "random"] {
        assert!(json.get(key).is_some(), "{key}");
    }
    for key in ["n", "router", "oracle", "random", "best_single", "share"] {
        assert!(json["sources"]["S2"].get(key).is_some(), "{key}");
    }
    assert_eq!(json["best_single"]["model"], "a");
    assert_eq!(json["sources"]["S2"]["n"], 2);
}

/// Scaling from raw scores goes through the manifest's per-source range.
#[test]
fn eval_set_scales_with_the_manifest_range() {
    let manifest = Manifest::parse(
        r#"{"MT": {"score_range": [1, 10]}}"#,
        std::path::Path::new("m.json"),
    )
    .unwrap();
    let pool = Pool::new(["x", "y"]).unwrap();
    let rec = PoolRecord {
        id: "mt-1".into(),
        source: "MT".into(),
        prompt: "p".into(),
        responses: vec![
            Response {
                text: "".into(),
                score: 1.0,
                grader: None,
            },
            Response {
                text: "".into(),
                score: 5.5,
                grader: None,
            },
        ],
        reference: None,
    };
    let set = EvalSet::new(&pool, &[rec], &manifest, std::path::Path::new("m.json")).unwrap();
    assert_eq!(set.items()[0].scaled, vec![0.0, 50.0]);
}

/// The report renders Markdown and SVGs with text (plotters' SVG backend, no system fonts).
#[test]
fn report_writes_markdown_and_svg_plots_with_text() {
    let set = fixture();
    let prices = [3.0, 2.0, 1.0];
    let pred: Vec<Vec<f64>> = set.items().iter().map(|i| i.scaled.clone()).collect();
    let eval = Evaluation::compute(
        &set,
        "test",
        &ROUTER,
        EvalExtras {
            predictions: Some(&pred),
            prices: Some(&prices),
        },
    )
    .unwrap();
    assert!(!eval.quality_cost.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let written =
        lookahead_data::report::write_report(dir.path(), &eval, &["note".into()]).unwrap();
    assert_eq!(written.len(), 3);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("| S1 | 4 | 50.00 | 50.00 (a) | 75.00 | 41.67 | 75.0% |"),
        "{md}"
    );
    assert!(md.contains("![routing share](share.svg)"));
    let share = std::fs::read_to_string(dir.path().join("share.svg")).unwrap();
    assert!(
        share.starts_with("<svg") && share.contains(">\nS2\n</text>"),
        "{share}"
    );
    let cost = std::fs::read_to_string(dir.path().join("quality_cost.svg")).unwrap();
    assert!(cost.contains(">\noracle\n</text>"), "{cost}");

    // without prices: no cost plot, and the report says why
    let plain = Evaluation::compute(&set, "test", &ROUTER, EvalExtras::default()).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    assert_eq!(
        lookahead_data::report::write_report(dir2.path(), &plain, &[])
            .unwrap()
            .len(),
        2
    );
}
