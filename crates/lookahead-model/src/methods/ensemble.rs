//! An ensemble router: the mean of its members' scores. Members that read a prompt differently
//! (the n-gram router every word of it, lite an encoder's view of its head and tail) err on
//! different prompts, so their mean errs less than either (docs/results.md, "Ensembles").

use crate::scorer::{ScoreError, Scorer};

/// The mean of each model's score over `members` (rows in pool order): the ensemble's score,
/// in training and serving alike. No members give no rows; members that scored different
/// numbers of prompts, or a prompt with different numbers of models, are an error.
pub fn average(members: &[&[Vec<f32>]]) -> Result<Vec<Vec<f32>>, String> {
    let Some(first) = members.first() else {
        return Ok(Vec::new());
    };
    let n = members.len() as f32;
    let mut mean: Vec<Vec<f32>> = first.iter().map(|row| vec![0f32; row.len()]).collect();
    for member in members {
        if member.len() != mean.len() {
            return Err(format!(
                "ensemble members scored {} and {} prompts",
                mean.len(),
                member.len()
            ));
        }
        for (sum, row) in mean.iter_mut().zip(member.iter()) {
            if row.len() != sum.len() {
                return Err(format!(
                    "ensemble members scored {} and {} models for one prompt",
                    sum.len(),
                    row.len()
                ));
            }
            for (s, x) in sum.iter_mut().zip(row) {
                *s += x / n;
            }
        }
    }
    Ok(mean)
}

/// Scores a batch with every member and serves their mean.
pub struct EnsembleScorer {
    members: Vec<Box<dyn Scorer>>,
    /// The pool every member scores.
    models: Vec<String>,
}

impl EnsembleScorer {
    /// An ensemble of `members`, which must score the same pool in the same order.
    pub fn new(members: Vec<Box<dyn Scorer>>) -> Result<Self, String> {
        let Some(first) = members.first() else {
            return Err("an ensemble needs at least one member".into());
        };
        if let Some(other) = members.iter().find(|m| m.models() != first.models()) {
            return Err(format!(
                "ensemble members score different pools: {:?} and {:?}",
                first.models(),
                other.models()
            ));
        }
        let models = first.models().to_vec();
        Ok(Self { members, models })
    }
}

impl Scorer for EnsembleScorer {
    fn models(&self) -> &[String] {
        &self.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        let rows = self
            .members
            .iter()
            .map(|m| m.score_batch(prompts))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(short) = rows.iter().find(|r| r.len() != prompts.len()) {
            return Err(ScoreError::Model(format!(
                "an ensemble member scored {} of {} prompts",
                short.len(),
                prompts.len()
            )));
        }
        let rows: Vec<&[Vec<f32>]> = rows.iter().map(Vec::as_slice).collect();
        average(&rows).map_err(ScoreError::Model)
    }

    fn is_trivial(&self) -> bool {
        self.members.iter().all(|m| m.is_trivial())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<String>, Vec<f32>);

    impl Scorer for Fixed {
        fn models(&self) -> &[String] {
            &self.0
        }
        fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
            Ok(prompts.iter().map(|_| self.1.clone()).collect())
        }
    }

    fn pool(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Two members that disagree on the best model: the ensemble serves their mean, so the
    /// model both rate well wins over each member's narrow favourite.
    #[test]
    fn the_ensemble_serves_the_mean_of_its_members_scores() {
        let ab = pool(&["a", "b", "c"]);
        let ensemble = EnsembleScorer::new(vec![
            Box::new(Fixed(ab.clone(), vec![0.9, 0.8, 0.0])),
            Box::new(Fixed(ab.clone(), vec![0.0, 0.7, 0.8])),
        ])
        .unwrap();
        let rows = ensemble.score_batch(&["p", "q"]).unwrap();
        assert_eq!(rows.len(), 2);
        for (got, want) in rows[0].iter().zip([0.45, 0.75, 0.4]) {
            assert!((got - want).abs() < 1e-6, "{:?}", rows[0]);
        }
        assert_eq!(ensemble.models(), ab.as_slice());
    }

    #[test]
    fn ragged_member_scores_are_an_error_not_a_panic() {
        let two = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let one = vec![vec![0.5, 0.5]];
        assert!(average(&[&two, &one])
            .unwrap_err()
            .contains("2 and 1 prompts"));
        let narrow = vec![vec![0.5], vec![0.5]];
        assert!(average(&[&two, &narrow]).unwrap_err().contains("models"));
        assert!(average(&[]).unwrap().is_empty());
        let mean = average(&[&two, &two]).unwrap();
        assert_eq!(mean, two);
    }

    #[test]
    fn members_of_different_pools_are_refused() {
        let err = EnsembleScorer::new(vec![
            Box::new(Fixed(pool(&["a", "b"]), vec![0.0, 1.0])),
            Box::new(Fixed(pool(&["b", "a"]), vec![0.0, 1.0])),
        ])
        .err()
        .unwrap();
        assert!(err.contains("different pools"), "{err}");
        assert!(EnsembleScorer::new(Vec::new()).is_err());
    }
}
