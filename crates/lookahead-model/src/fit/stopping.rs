//! Early stopping on the validation score, with a snapshot of the best epoch's weights.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::request::TrainError;
use crate::artifact::{Metrics, SelectOn};

/// The score early stopping maximises under `selection`: validation routing quality with BCE
/// breaking ties, or minus the BCE with routing quality breaking ties (routing quality alone
/// when there is no BCE).
pub fn selection_score(validation: &Metrics, selection: SelectOn) -> f64 {
    match (selection, validation.bce) {
        (SelectOn::Bce, Some(bce)) => -bce + 1e-6 * validation.router,
        (_, bce) => validation.router - 1e-3 * bce.unwrap_or(0.0),
    }
}

/// The best epoch so far: its score, number, weights (on the CPU) and validation metrics.
pub struct BestEpoch {
    pub score: f64,
    pub epoch: usize,
    pub tensors: HashMap<String, Tensor>,
    pub validation: Metrics,
}

/// Early stopping: keeps the best epoch's weights, and says stop once `patience` epochs have
/// passed without improvement. Without validation data there is nothing to select on: every
/// epoch runs and the last one is kept.
pub struct EarlyStopping {
    patience: usize,
    selection: SelectOn,
    best: Option<BestEpoch>,
}

impl EarlyStopping {
    pub fn new(patience: usize, selection: SelectOn) -> Self {
        Self {
            patience,
            selection,
            best: None,
        }
    }

    /// Records epoch `epoch`'s validation result; snapshots `varmap` when it improves on the
    /// best so far. Returns whether training should go on.
    pub fn observe(
        &mut self,
        epoch: usize,
        validation: Metrics,
        varmap: &VarMap,
    ) -> Result<bool, TrainError> {
        let score = selection_score(&validation, self.selection);
        match &self.best {
            Some(best) if validation.examples > 0 && score <= best.score => {
                Ok(epoch - best.epoch <= self.patience)
            }
            _ => {
                self.best = Some(BestEpoch {
                    score,
                    epoch,
                    tensors: snapshot(varmap)?,
                    validation,
                });
                Ok(true)
            }
        }
    }

    /// The best epoch; an error when no epoch was observed.
    pub fn into_best(self) -> Result<BestEpoch, TrainError> {
        self.best.ok_or(TrainError::Empty)
    }
}

/// An independent CPU copy of every variable. A copy, not a view: the optimiser updates the
/// variables in place (`Var::set`), and `Tensor::to_device` to the device a tensor is already
/// on shares its storage, so a view would silently follow the later epochs.
pub fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>, TrainError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    data.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.as_tensor().copy()?.to_device(&Device::Cpu)?.detach(),
            ))
        })
        .collect()
}

/// `tensors` moved onto `device` (to rebuild the best model there for the test evaluation).
pub fn to_device(
    tensors: &HashMap<String, Tensor>,
    device: &Device,
) -> candle_core::Result<HashMap<String, Tensor>> {
    tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn metrics(router: f64) -> Metrics {
        Metrics {
            examples: 10,
            router,
            bce: Some(0.5),
            ..Metrics::default()
        }
    }

    /// The snapshot of the best epoch keeps that epoch's values after the optimiser has
    /// changed the variables in place.
    #[test]
    fn early_stopping_keeps_the_best_epochs_weights_and_stops_after_patience() {
        let varmap = VarMap::new();
        let w = varmap
            .get(
                (2,),
                "w",
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let var = varmap.all_vars().remove(0);
        let mut stop = EarlyStopping::new(1, SelectOn::Router);
        assert!(stop.observe(1, metrics(60.0), &varmap).unwrap());
        var.set(&Tensor::new(&[2f32, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        assert!(stop.observe(2, metrics(70.0), &varmap).unwrap(), "improved");
        var.set(&Tensor::new(&[3f32, 3.0], &Device::Cpu).unwrap())
            .unwrap();
        assert!(
            stop.observe(3, metrics(65.0), &varmap).unwrap(),
            "within patience"
        );
        var.set(&Tensor::new(&[4f32, 4.0], &Device::Cpu).unwrap())
            .unwrap();
        assert!(
            !stop.observe(4, metrics(69.0), &varmap).unwrap(),
            "patience spent"
        );
        assert_eq!(
            w.to_vec1::<f32>().unwrap(),
            [4.0, 4.0],
            "the live variable moved on"
        );
        let best = stop.into_best().unwrap();
        assert_eq!(best.epoch, 2);
        assert_eq!(best.validation.router, 70.0);
        assert_eq!(best.tensors["w"].to_vec1::<f32>().unwrap(), [2.0, 2.0]);
    }

    /// Selecting on BCE keeps the epoch whose validation BCE is lowest even when its pooled
    /// routing score is a hair lower (the lite run at 400 records in docs/results.md), and
    /// stops once BCE stops falling for `patience` epochs.
    #[test]
    fn bce_selection_keeps_the_smoothly_better_epoch_the_pooled_score_would_drop() {
        let varmap = VarMap::new();
        let at = |router: f64, bce: f64| Metrics {
            examples: 562,
            router,
            bce: Some(bce),
            ..Metrics::default()
        };
        let epochs = [at(64.278, 0.586), at(64.260, 0.561), at(64.9, 0.563)];
        let best_under = |selection| {
            let mut stop = EarlyStopping::new(1, selection);
            let mut went_on = Vec::new();
            for (i, m) in epochs.iter().enumerate() {
                went_on.push(stop.observe(i + 1, m.clone(), &varmap).unwrap());
            }
            (stop.into_best().unwrap().epoch, went_on)
        };
        assert_eq!(best_under(SelectOn::Router), (3, vec![true, true, true]));
        assert_eq!(best_under(SelectOn::Bce), (2, vec![true, true, true]));
        let mut two = EarlyStopping::new(1, SelectOn::Router);
        two.observe(1, epochs[0].clone(), &varmap).unwrap();
        two.observe(2, epochs[1].clone(), &varmap).unwrap();
        assert_eq!(
            two.into_best().unwrap().epoch,
            1,
            "two epochs, pooled score: the first is kept"
        );
        // Without a BCE (a method that reports none) BCE selection falls back to the score.
        assert_eq!(
            selection_score(
                &Metrics {
                    router: 60.0,
                    ..Metrics::default()
                },
                SelectOn::Bce
            ),
            60.0
        );
    }

    #[test]
    fn without_validation_data_every_epoch_runs_and_the_last_is_kept() {
        let varmap = VarMap::new();
        let mut stop = EarlyStopping::new(1, SelectOn::Router);
        for epoch in 1..=4 {
            assert!(stop.observe(epoch, Metrics::default(), &varmap).unwrap());
        }
        assert_eq!(stop.into_best().unwrap().epoch, 4);
        assert!(matches!(
            EarlyStopping::new(1, SelectOn::Router).into_best(),
            Err(TrainError::Empty)
        ));
    }
}
