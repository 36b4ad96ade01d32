//! Deterministic splits by a hash of the record id, identical on every machine and run.
//!
//! `u(id) = first 8 bytes of SHA-256(key), big-endian, / 2^64` in `[0, 1)`, where `key` is the id,
//! or `salt + ":" + id` when a salt is set (a salt gives another, equally deterministic split).
//! Fractions: `u < train` -> train, `u < train + validation` -> validation, else test.
//! k-fold: fold `floor(u * k)`. A record's assignment never depends on the other records.
//!
//! [`Holdout`] is the one definition of which records a run holds out: `lookahead train` fits on
//! its train part and selects on its validation part, `lookahead eval` and `lookahead demo` score
//! its test part, and `scripts/cv.sh` passes both commands the same flags. Sharing it is what
//! keeps an evaluation from scoring records its router trained on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::DataError;

/// The id's position in `[0, 1)`; see the module docs.
pub fn unit_hash(id: &str, salt: &str) -> f64 {
    let mut h = Sha256::new();
    if !salt.is_empty() {
        h.update(salt.as_bytes());
        h.update(b":");
    }
    h.update(id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^-64: exact in f64; the u64 -> f64 rounding can reach 1.0 only for the top 2^10 values.
    (u64::from_be_bytes(first) as f64 * (1.0 / 18_446_744_073_709_551_616.0))
        .min(1.0 - f64::EPSILON)
}

/// Which part of the data a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        })
    }
}

impl FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "train" => Ok(Split::Train),
            "validation" | "val" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            other => Err(DataError::Split(format!(
                "unknown split {other:?} (train, validation, test)"
            ))),
        }
    }
}

/// Train / validation / test fractions (summing to 1) and an optional salt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    train: f64,
    validation: f64,
    test: f64,
    salt: String,
}

impl Default for SplitSpec {
    /// 80 / 10 / 10, no salt.
    fn default() -> Self {
        Self {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
            salt: String::new(),
        }
    }
}

impl SplitSpec {
    /// Fractions must be in `[0, 1]` and sum to 1 (within 1e-6).
    pub fn new(train: f64, validation: f64, test: f64) -> Result<Self, DataError> {
        let all = [train, validation, test];
        if all.iter().any(|f| !(0.0..=1.0).contains(f))
            || ((train + validation + test) - 1.0).abs() > 1e-6
        {
            return Err(DataError::Split(format!(
                "fractions {train}/{validation}/{test} must each be in [0, 1] and sum to 1"
            )));
        }
        Ok(Self {
            train,
            validation,
            test,
            salt: String::new(),
        })
    }

    pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
        self.salt = salt.into();
        self
    }

    pub fn fractions(&self) -> (f64, f64, f64) {
        (self.train, self.validation, self.test)
    }

    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// The split of the record with this id.
    pub fn assign(&self, id: &str) -> Split {
        let u = unit_hash(id, &self.salt);
        if u < self.train {
            Split::Train
        } else if u < self.train + self.validation {
            Split::Validation
        } else {
            Split::Test
        }
    }
}

/// k-fold cross-validation by id: fold `i` of `k` is the test part of round `i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KFold {
    k: usize,
    salt: String,
}

impl KFold {
    /// `k >= 2`.
    pub fn new(k: usize) -> Result<Self, DataError> {
        if k < 2 {
            return Err(DataError::Split(format!("k-fold needs k >= 2, got {k}")));
        }
        Ok(Self {
            k,
            salt: String::new(),
        })
    }

    pub fn with_salt(mut self, salt: impl Into<String>) -> Self {
        self.salt = salt.into();
        self
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// The fold (0-based, `< k`) of the record with this id.
    pub fn fold_of(&self, id: &str) -> usize {
        ((unit_hash(id, &self.salt) * self.k as f64) as usize).min(self.k - 1)
    }

    /// True when the record is in the held-out (test) part of round `fold`.
    pub fn is_held_out(&self, id: &str, fold: usize) -> bool {
        self.fold_of(id) == fold
    }
}

/// Share of the records outside the held-out fold that k-fold training keeps for validation.
pub const FOLD_VALIDATION_FRACTION: f64 = 0.1;

/// Which records a run holds out (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Holdout {
    /// Train / validation / test by the id hash's position (default 80/10/10, no salt).
    Split(SplitSpec),
    /// Fold `fold` of `kfold` is the test part. Of the other records,
    /// [`FOLD_VALIDATION_FRACTION`] (by a second id hash) is validation, the rest train.
    Fold { kfold: KFold, fold: usize },
}

impl Default for Holdout {
    /// The 80/10/10 split without salt.
    fn default() -> Self {
        Holdout::Split(SplitSpec::default())
    }
}

impl Holdout {
    /// The CLI's `--split-salt SALT [--folds K --fold F]`: fold `F` of `K`, or without folds the
    /// default 80/10/10 split, both under `salt` (empty: no salt).
    pub fn new(salt: &str, folds: Option<usize>, fold: Option<usize>) -> Result<Self, DataError> {
        match (folds, fold) {
            (None, None) => Ok(Holdout::Split(SplitSpec::default().with_salt(salt))),
            (Some(k), Some(fold)) => Self::fold(KFold::new(k)?.with_salt(salt), fold),
            (Some(_), None) => Err(DataError::Split("--folds needs --fold".into())),
            (None, Some(_)) => Err(DataError::Split("--fold needs --folds".into())),
        }
    }

    /// Fold `fold` (`< k`) of `kfold` held out.
    pub fn fold(kfold: KFold, fold: usize) -> Result<Self, DataError> {
        if fold >= kfold.k() {
            return Err(DataError::Split(format!(
                "--fold {fold} must be below --folds {}",
                kfold.k()
            )));
        }
        Ok(Holdout::Fold { kfold, fold })
    }

    /// The part of the record with this id.
    pub fn assign(&self, id: &str) -> Split {
        match self {
            Holdout::Split(spec) => spec.assign(id),
            Holdout::Fold { kfold, fold } if kfold.is_held_out(id, *fold) => Split::Test,
            Holdout::Fold { kfold, .. } => {
                // Unsalted: the key `lookahead train` has always used, so old runs reproduce.
                let key = match kfold.salt.as_str() {
                    "" => "validation".to_string(),
                    salt => format!("{salt}:validation"),
                };
                if unit_hash(id, &key) < FOLD_VALIDATION_FRACTION {
                    Split::Validation
                } else {
                    Split::Train
                }
            }
        }
    }

    /// True when the record is in the test part: never trained or selected on.
    pub fn is_held_out(&self, id: &str) -> bool {
        self.assign(id) == Split::Test
    }

    /// One line for logs and the artifact's metadata, e.g. `split 80/10/10 (id hash)`.
    pub fn describe(&self) -> String {
        let (text, salt) = match self {
            Holdout::Split(spec) => {
                let (t, v, e) = spec.fractions();
                let pct = |f: f64| (f * 100.0).round();
                let text = format!("split {}/{}/{} (id hash)", pct(t), pct(v), pct(e));
                (text, spec.salt.as_str())
            }
            Holdout::Fold { kfold, fold } => {
                let text = format!(
                    "fold {fold}/{} (id hash); validation {}% of the rest",
                    kfold.k(),
                    (FOLD_VALIDATION_FRACTION * 100.0).round()
                );
                (text, kfold.salt.as_str())
            }
        };
        match salt {
            "" => text,
            salt => format!("{text}, salt {salt:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed independently with Python's hashlib:
    /// `int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64`.
    #[test]
    fn assignments_are_stable_across_machines() {
        // (id, salt, u, split under 80/10/10, fold of 5)
        let cases: [(&str, &str, f64, Split, usize); 6] = [
            ("gsm8k-12", "", 0.4129390016010901, Split::Train, 2),
            ("alpacaeval-0", "", 0.09501163918796628, Split::Train, 0),
            ("mbpp-7", "", 0.34673787429578407, Split::Train, 1),
            ("math-9", "", 0.8110138496110547, Split::Validation, 4),
            ("math-28", "", 0.9643579255762214, Split::Test, 4),
            ("gsm8k-12", "seed1", 0.5198818985765197, Split::Train, 2),
        ];
        for (id, salt, expected_u, expected_split, expected_fold) in cases {
            let u = unit_hash(id, salt);
            assert!(
                (u - expected_u).abs() < 1e-12,
                "{id}/{salt}: {u} vs {expected_u}"
            );
            assert_eq!(
                SplitSpec::default().with_salt(salt).assign(id),
                expected_split,
                "{id}"
            );
            assert_eq!(
                KFold::new(5).unwrap().with_salt(salt).fold_of(id),
                expected_fold,
                "{id}"
            );
        }
    }

    #[test]
    fn fractions_are_respected_and_folds_partition() {
        let spec = SplitSpec::new(0.6, 0.2, 0.2).unwrap();
        let kfold = KFold::new(5).unwrap();
        let (mut tr, mut va, mut te) = (0, 0, 0);
        let mut folds = [0usize; 5];
        for i in 0..10_000 {
            let id = format!("rec-{i}");
            match spec.assign(&id) {
                Split::Train => tr += 1,
                Split::Validation => va += 1,
                Split::Test => te += 1,
            }
            let f = kfold.fold_of(&id);
            folds[f] += 1;
            assert_eq!((0..5).filter(|&r| kfold.is_held_out(&id, r)).count(), 1);
        }
        assert!((5800..6200).contains(&tr), "{tr}");
        assert!((1850..2150).contains(&va), "{va}");
        assert!((1850..2150).contains(&te), "{te}");
        assert!(
            folds.iter().all(|&n| (1850..2150).contains(&n)),
            "{folds:?}"
        );
    }

    #[test]
    fn salt_changes_assignment_and_bad_specs_fail() {
        let moved = (0..1000)
            .filter(|i| {
                let id = format!("r{i}");
                KFold::new(5).unwrap().fold_of(&id)
                    != KFold::new(5).unwrap().with_salt("x").fold_of(&id)
            })
            .count();
        assert!(moved > 600, "{moved}");
        assert!(SplitSpec::new(0.8, 0.1, 0.2).is_err());
        assert!(SplitSpec::new(-0.1, 0.6, 0.5).is_err());
        assert!(KFold::new(1).is_err());
        assert_eq!("val".parse::<Split>().unwrap(), Split::Validation);
        assert!("dev".parse::<Split>().is_err());
    }

    /// The rule `lookahead train` used before [`Holdout`] existed (unsalted), kept as the oracle.
    fn legacy_train_part(id: &str, k: usize, fold: usize) -> Split {
        if KFold::new(k).unwrap().fold_of(id) == fold {
            Split::Test
        } else if unit_hash(id, "validation") < 0.1 {
            Split::Validation
        } else {
            Split::Train
        }
    }

    #[test]
    fn unsalted_holdout_reproduces_the_old_train_and_eval_rules() {
        let split = Holdout::new("", None, None).unwrap();
        assert_eq!(split, Holdout::default());
        assert_eq!(split.describe(), "split 80/10/10 (id hash)");
        let fold = Holdout::new("", Some(5), Some(3)).unwrap();
        assert_eq!(
            fold.describe(),
            "fold 3/5 (id hash); validation 10% of the rest"
        );
        for i in 0..2000 {
            let id = format!("rec-{i}");
            assert_eq!(split.assign(&id), SplitSpec::default().assign(&id), "{id}");
            assert_eq!(fold.assign(&id), legacy_train_part(&id, 5, 3), "{id}");
            assert_eq!(
                fold.is_held_out(&id),
                KFold::new(5).unwrap().is_held_out(&id, 3)
            );
        }
    }

    /// What train fits or selects on and what eval scores, for every salt and fold: disjoint,
    /// together every record; across the folds of one salt each record is scored exactly once,
    /// by the fold eval's cross-validation gives it.
    #[test]
    fn train_and_eval_agree_for_every_salt_and_fold() {
        let ids: Vec<String> = (0..3000).map(|i| format!("src-{i}")).collect();
        for salt in ["", "seed1", "x"] {
            for k in [2, 3, 5, 10] {
                let cv = KFold::new(k).unwrap().with_salt(salt);
                let mut scored = vec![0usize; ids.len()];
                for fold in 0..k {
                    let holdout = Holdout::new(salt, Some(k), Some(fold)).unwrap();
                    let (mut trained, mut tested) = (0, 0);
                    for (n, id) in ids.iter().enumerate() {
                        let test = holdout.is_held_out(id);
                        let train = matches!(holdout.assign(id), Split::Train | Split::Validation);
                        assert!(test != train, "{salt:?} {k} {fold} {id}");
                        assert_eq!(test, cv.fold_of(id) == fold, "{salt:?} {k} {fold} {id}");
                        trained += usize::from(train);
                        tested += usize::from(test);
                        scored[n] += usize::from(test);
                    }
                    assert_eq!(trained + tested, ids.len());
                    assert!(tested > 0 && trained > 0, "{salt:?} {k} {fold}");
                }
                assert!(scored.iter().all(|&n| n == 1), "{salt:?} {k}");
            }
            let split = Holdout::new(salt, None, None).unwrap();
            let spec = SplitSpec::default().with_salt(salt);
            assert!(ids.iter().all(|id| split.assign(id) == spec.assign(id)));
        }
    }

    #[test]
    fn a_salt_moves_the_held_out_records_and_bad_flags_fail() {
        let plain = Holdout::new("", Some(5), Some(0)).unwrap();
        let salted = Holdout::new("seed1", Some(5), Some(0)).unwrap();
        assert!(salted.describe().ends_with(", salt \"seed1\""));
        // Why train and eval must share the salt: a salted test fold overlaps the unsalted
        // training part.
        let overlap = (0..1000)
            .map(|i| format!("r{i}"))
            .filter(|id| salted.is_held_out(id) && !plain.is_held_out(id))
            .count();
        assert!(overlap > 100, "{overlap}");
        assert!(Holdout::new("", Some(5), Some(5)).is_err());
        assert!(Holdout::new("", Some(5), None).is_err());
        assert!(Holdout::new("", None, Some(1)).is_err());
        assert!(Holdout::new("", Some(1), Some(0)).is_err());
    }
}
