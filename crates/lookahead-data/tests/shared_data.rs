//! On the real shared routing dataset (`../shared/data/routing`, or `LOOKAHEAD_DATA`): the
//! library's single-model and oracle averages equal those computed here independently, with plain
//! `serde_json` over the gzip files and the manifest. Skips (with the reason) when the data is absent.
#![cfg(test)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use lookahead_data::metrics::{oracle_score, single_model_scores};
use lookahead_data::{Dataset, EvalSet, Pool, BENCHMARK_SOURCES, PAPER_POOL};
use serde_json::Value;

fn data_dir() -> Option<PathBuf> {
    lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()
}

/// Per source: (records kept, per-model mean scaled score, oracle mean scaled score), skipped.
fn independent(dir: &Path) -> BTreeMap<String, (usize, Vec<f64>, f64, usize)> {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for source in BENCHMARK_SOURCES {
        let range = &manifest[source]["score_range"];
        let (lo, hi) = (range[0].as_f64().unwrap(), range[1].as_f64().unwrap());
        let file = std::fs::File::open(dir.join(format!("{source}.jsonl.gz"))).unwrap();
        let lines = BufReader::new(flate2::read::MultiGzDecoder::new(file)).lines();
        let (mut n, mut skipped, mut oracle) = (0usize, 0usize, 0.0);
        let mut sums = vec![0.0; PAPER_POOL.len()];
        for line in lines {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let scores: Option<Vec<f64>> = PAPER_POOL
                .iter()
                .map(|m| v["responses"][m]["score"].as_f64())
                .collect();
            let Some(scores) = scores else {
                skipped += 1;
                continue;
            };
            let scaled: Vec<f64> = scores
                .iter()
                .map(|s| (s - lo) / (hi - lo) * 100.0)
                .collect();
            for (sum, s) in sums.iter_mut().zip(&scaled) {
                *sum += s;
            }
            oracle += scaled.iter().cloned().fold(f64::MIN, f64::max);
            n += 1;
        }
        let means = sums.iter().map(|s| s / n as f64).collect();
        out.insert(source.to_string(), (n, means, oracle / n as f64, skipped));
    }
    out
}

/// Real component: the shared routing dataset on disk (gzip JSONL + manifest).
#[test]
fn single_model_and_oracle_averages_match_an_independent_computation() {
    let Some(dir) = data_dir() else { return };
    let expected = independent(&dir);

    let data = Dataset::open(&dir).unwrap();
    let sources = data.resolve_sources(Some(&BENCHMARK_SOURCES)).unwrap();
    let pool = Pool::paper();
    let selection = data.select_pool(&sources, &pool).unwrap();
    let set = EvalSet::new(
        &pool,
        &selection.records,
        data.manifest(),
        &data.manifest_path(),
    )
    .unwrap();
    let singles = single_model_scores(&set);
    let oracle = oracle_score(&set);

    let counts = set.counts();
    for (source, (n, means, oracle_mean, skipped)) in &expected {
        assert_eq!(counts[source], *n, "{source} records");
        assert_eq!(
            selection
                .skipped
                .by_source
                .get(source)
                .copied()
                .unwrap_or(0),
            *skipped,
            "{source} skipped"
        );
        for (m, want) in means.iter().enumerate() {
            let got = singles[m].get(source).unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{source} {}: {got} vs {want}",
                PAPER_POOL[m]
            );
        }
        let got = oracle.get(source).unwrap();
        assert!(
            (got - oracle_mean).abs() < 1e-9,
            "{source} oracle: {got} vs {oracle_mean}"
        );
    }
    let k = expected.len() as f64;
    let oracle_avg: f64 = expected.values().map(|e| e.2).sum::<f64>() / k;
    assert!((oracle.average - oracle_avg).abs() < 1e-9);
    for (m, single) in singles.iter().enumerate() {
        let avg: f64 = expected.values().map(|e| e.1[m]).sum::<f64>() / k;
        assert!((single.average - avg).abs() < 1e-9, "{}", PAPER_POOL[m]);
    }
    eprintln!(
        "oracle {:.2}; singles {:?}",
        oracle.average,
        singles
            .iter()
            .map(|s| format!("{:.2}", s.average))
            .collect::<Vec<_>>()
    );
}
