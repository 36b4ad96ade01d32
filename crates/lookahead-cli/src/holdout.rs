//! The held-out-record flags that `train` and `eval` share, so both read them one way:
//! `lookahead_data::Holdout` decides which records are held out.

use clap::Args;
use lookahead_data::{Holdout, KFold};

#[derive(Args, Debug, Clone, Default)]
pub struct HoldoutArgs {
    /// Hold out fold FOLD of --folds (by record-id hash) as the test set, instead of the
    /// 80/10/10 split; training keeps 10% of the other folds for validation.
    #[arg(long, requires = "folds")]
    pub fold: Option<usize>,
    /// Number of folds (with --fold; for eval also with one artifact per fold).
    #[arg(long)]
    pub folds: Option<usize>,
    /// Salt of the id hash: another, equally reproducible split or set of folds. Give train and
    /// eval the same salt, or the evaluation scores records the router trained on.
    #[arg(long, default_value = "")]
    pub split_salt: String,
}

impl HoldoutArgs {
    /// The held-out records these flags name.
    pub fn holdout(&self) -> anyhow::Result<Holdout> {
        Ok(Holdout::new(&self.split_salt, self.folds, self.fold)?)
    }

    /// The `--folds K` folds under this salt (eval's cross-validation: artifact i held out fold i).
    pub fn kfold(&self, k: usize) -> anyhow::Result<KFold> {
        Ok(KFold::new(k)?.with_salt(self.split_salt.clone()))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use lookahead_data::{PoolRecord, Split};

    use super::HoldoutArgs;
    use crate::eval::{EvalArgs, Subset};
    use crate::train::{part_of, TrainArgs};

    #[derive(Parser)]
    struct TrainCli {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[derive(Parser)]
    struct EvalCli {
        #[command(flatten)]
        args: EvalArgs,
    }

    fn records() -> Vec<PoolRecord> {
        (0..3000)
            .map(|i| PoolRecord {
                id: format!("{}-{i}", ["gsm8k", "mbpp", "math"][i % 3]),
                source: "S".into(),
                prompt: String::new(),
                responses: Vec::new(),
                reference: None,
            })
            .collect()
    }

    /// The part of each record `lookahead train` gives it under `flags`.
    fn train_parts(flags: &[String], records: &[PoolRecord]) -> Vec<Split> {
        let argv = ["train", "--data", "d", "--out", "o"].map(String::from);
        let train = TrainCli::parse_from(argv.iter().chain(flags)).args;
        let holdout = train.holdout.holdout().unwrap();
        records.iter().map(|r| part_of(r, &holdout, &[])).collect()
    }

    fn eval_subset(flags: &[String], artifacts: usize) -> Subset {
        let mut argv = ["eval", "--data", "d"].map(String::from).to_vec();
        match artifacts {
            1 => argv.extend(["--router", "oracle"].map(String::from)),
            k => argv.extend([
                "--artifact".into(),
                (0..k)
                    .map(|i| format!("a{i}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]),
        }
        let eval = EvalCli::parse_from(argv.iter().chain(flags)).args;
        Subset::from_args(&eval, artifacts).unwrap()
    }

    /// With the same flags, `eval` scores exactly the records `train` neither fit nor selected
    /// on, for every salt, for the 80/10/10 split and for every fold; and a cross-validated eval
    /// scores each record with the artifact whose training held it out.
    #[test]
    fn train_and_eval_agree_for_every_salt_and_fold() {
        let records = records();
        for salt in ["", "seed1", "x"] {
            let salt_flag = vec!["--split-salt".to_string(), salt.to_string()];
            let mut runs = vec![salt_flag.clone()];
            for k in [2usize, 5] {
                let artifacts: Vec<Vec<Split>> = (0..k)
                    .map(|fold| {
                        let mut flags = salt_flag.clone();
                        flags.extend(["--folds".into(), k.to_string()]);
                        flags.extend(["--fold".into(), fold.to_string()]);
                        runs.push(flags.clone());
                        train_parts(&flags, &records)
                    })
                    .collect();
                let mut cv_flags = salt_flag.clone();
                cv_flags.extend(["--folds".into(), k.to_string()]);
                let Subset::CrossValidation(kfold) = eval_subset(&cv_flags, k) else {
                    panic!("{k} artifacts and --folds {k} are a cross-validation");
                };
                for (n, r) in records.iter().enumerate() {
                    let scored_by = kfold.fold_of(&r.id);
                    assert_eq!(
                        artifacts[scored_by][n],
                        Split::Test,
                        "{salt:?} {k} {}",
                        r.id
                    );
                }
            }
            for flags in &runs {
                let parts = train_parts(flags, &records);
                let subset = eval_subset(flags, 1);
                let (mut trained, mut scored) = (0, 0);
                for (r, part) in records.iter().zip(&parts) {
                    let fit_or_selected = *part != Split::Test;
                    assert_ne!(fit_or_selected, subset.keeps(&r.id), "{flags:?} {}", r.id);
                    trained += usize::from(fit_or_selected);
                    scored += usize::from(subset.keeps(&r.id));
                }
                assert_eq!(trained + scored, records.len());
                assert!(scored > 0 && trained > 0, "{flags:?}");
            }
        }
    }

    #[test]
    fn train_only_sources_are_never_held_out() {
        let holdout = HoldoutArgs {
            fold: Some(0),
            folds: Some(2),
            split_salt: "s".into(),
        }
        .holdout()
        .unwrap();
        for r in records() {
            assert_eq!(part_of(&r, &holdout, &["S".into()]), Split::Train);
        }
    }
}
