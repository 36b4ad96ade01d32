//! Early stopping on the validation score, with a snapshot of the best epoch's weights.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::request::TrainError;
use crate::artifact::Metrics;

/// The score early stopping maximises: validation routing quality, BCE breaking ties.
pub fn selection_score(validation: &Metrics) -> f64 {
    validation.router - 1e-3 * validation.bce.unwrap_or(0.0)
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
    best: Option<BestEpoch>,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        Self {
            patience,
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
        let score = selection_score(&validation);
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
        let mut stop = EarlyStopping::new(1);
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

    #[test]
    fn without_validation_data_every_epoch_runs_and_the_last_is_kept() {
        let varmap = VarMap::new();
        let mut stop = EarlyStopping::new(1);
        for epoch in 1..=4 {
            assert!(stop.observe(epoch, Metrics::default(), &varmap).unwrap());
        }
        assert_eq!(stop.into_best().unwrap().epoch, 4);
        assert!(matches!(
            EarlyStopping::new(1).into_best(),
            Err(TrainError::Empty)
        ));
    }
}
