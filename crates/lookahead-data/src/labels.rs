//! Training targets, as in the Lookahead paper: per prompt, min–max normalise the pool's scores;
//! a model is positive if its normalised score is >= `threshold` × the best normalised score
//! (the best is 1 after normalisation, so: normalised >= threshold).
//!
//! All-equal scores (every model right, or every model wrong) normalise to 1 for everyone, so all
//! models are positive: none is worse than another on that prompt, and a multi-label router should
//! not be taught to avoid any of them.

use crate::manifest::ScoreRange;

/// The paper's threshold.
pub const DEFAULT_LABEL_THRESHOLD: f64 = 0.8;

/// Absorbs rounding in `(s - min) / (max - min)` so that e.g. 0.8 compares as 0.8.
const EPS: f64 = 1e-9;

/// Per-prompt min–max normalisation to `[0, 1]`; all-equal scores give all 1.
pub fn normalise(scores: &[f64]) -> Vec<f64> {
    let (min, max) = scores
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    let span = max - min;
    if span.is_nan() || span <= 0.0 {
        return vec![1.0; scores.len()];
    }
    scores.iter().map(|s| (s - min) / span).collect()
}

/// Positive (true) for models whose normalised score is >= `threshold` × the best.
pub fn positive_labels(scores: &[f64], threshold: f64) -> Vec<bool> {
    let normalised = normalise(scores);
    let best = normalised.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    normalised
        .iter()
        .map(|&n| n + EPS >= threshold * best)
        .collect()
}

/// [`positive_labels`] as 0/1 floats, the form a BCE loss takes.
pub fn label_targets(scores: &[f64], threshold: f64) -> Vec<f32> {
    positive_labels(scores, threshold)
        .into_iter()
        .map(|p| if p { 1.0 } else { 0.0 })
        .collect()
}

/// Raw scores mapped to 0–100 with the source's range (for regression-style and cost-aware use,
/// and for comparing across sources).
pub fn scaled_scores(scores: &[f64], range: ScoreRange) -> Vec<f64> {
    scores.iter().map(|&s| range.scale(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_labels_on_hand_computed_prompts() {
        // ArenaHard-like scores: min -6, max 4, span 10 -> normalised [0, 1, .8, .79, .5]
        let scores = [-6.0, 4.0, 2.0, 1.9, -1.0];
        let n = normalise(&scores);
        let expected = [0.0, 1.0, 0.8, 0.79, 0.5];
        for (a, b) in n.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{n:?}");
        }
        assert_eq!(
            positive_labels(&scores, 0.8),
            vec![false, true, true, false, false]
        );
        assert_eq!(label_targets(&scores, 0.5), vec![0.0, 1.0, 1.0, 1.0, 1.0]);
        // threshold 1: only the best (ties included)
        assert_eq!(
            positive_labels(&[0.0, 1.0, 1.0], 1.0),
            vec![false, true, true]
        );
    }

    #[test]
    fn all_equal_scores_are_all_positive() {
        assert_eq!(positive_labels(&[0.0, 0.0, 0.0], 0.8), vec![true; 3]);
        assert_eq!(positive_labels(&[1.0, 1.0], 0.8), vec![true; 2]);
        assert_eq!(normalise(&[7.5]), vec![1.0]);
    }

    #[test]
    fn scaled_scores_use_the_source_range() {
        let r = ScoreRange::new(1.0, 10.0).unwrap();
        assert_eq!(scaled_scores(&[1.0, 10.0, 5.5], r), vec![0.0, 100.0, 50.0]);
    }
}
