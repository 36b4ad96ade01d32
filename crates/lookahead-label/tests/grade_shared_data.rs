//! The graders against the benchmark's own recorded judgements on the real shared routing dataset
//! (`../shared/data/routing`, or `LOOKAHEAD_DATA`): final-answer grading agrees with OpenCompass's
//! recorded correctness on GSM8K and MATH, and sandboxed unit tests with MBPP's. Skips (with the
//! reason) when the data is absent.
#![cfg(test)]

use std::path::PathBuf;

use lookahead_data::Dataset;
use lookahead_label::grade::{code, math};

fn data_dir() -> Option<PathBuf> {
    lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()
}

#[test]
fn exact_answer_grading_agrees_with_recorded_correctness() {
    let Some(dir) = data_dir() else { return };
    let data = Dataset::open(&dir).expect("dataset");
    for source in ["GSM8K", "MATH"] {
        let (mut n, mut agree) = (0usize, 0usize);
        for record in data.records(source).expect("source") {
            let record = record.expect("record");
            let answer = record
                .reference
                .as_ref()
                .and_then(|r| r.answer.clone())
                .expect("reference.answer");
            for response in record.responses.values() {
                let graded = if math::is_correct(&response.text, &answer) {
                    1.0
                } else {
                    0.0
                };
                n += 1;
                agree += usize::from(graded == response.score);
            }
        }
        let rate = agree as f64 / n as f64;
        eprintln!("{source}: {agree}/{n} = {rate:.4} agreement");
        assert!(n > 1000, "{source}: too few responses ({n})");
        assert!(rate >= 0.95, "{source}: agreement {rate:.4} < 0.95");
    }
}

#[test]
fn sandboxed_unit_tests_agree_with_recorded_mbpp_results() {
    let Some(dir) = data_dir() else { return };
    let data = Dataset::open(&dir).expect("dataset");
    let limits = code::SandboxLimits::default();
    let (mut n, mut agree) = (0usize, 0usize);
    // Every 4th record, one model per record (rotating): a spread sample that stays quick.
    for (i, record) in data
        .records("MBPP")
        .expect("MBPP")
        .enumerate()
        .filter(|(i, _)| i % 4 == 0)
    {
        let record = record.expect("record");
        let tests = record
            .reference
            .as_ref()
            .and_then(|r| r.tests.clone())
            .expect("reference.tests");
        let Some((_, response)) = record.responses.iter().nth(i / 4 % record.responses.len())
        else {
            continue;
        };
        let outcome =
            match code::run_python_tests(&code::extract_code(&response.text), &tests, &limits) {
                Ok(o) => o,
                Err(code::SandboxError::Unavailable(why)) => {
                    eprintln!("SKIP: sandbox unavailable: {why}");
                    return;
                }
                Err(e) => panic!("{e}"),
            };
        let graded = if outcome == code::CodeOutcome::Passed {
            1.0
        } else {
            0.0
        };
        n += 1;
        agree += usize::from(graded == response.score);
    }
    let rate = agree as f64 / n as f64;
    eprintln!("MBPP: {agree}/{n} = {rate:.4} agreement");
    assert!(n >= 40, "too few MBPP samples ({n})");
    assert!(rate >= 0.95, "MBPP agreement {rate:.4} < 0.95");
}
