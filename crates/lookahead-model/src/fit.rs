//! What every training loop shares (lite/MLC in `train`, MLM in `mlm_router`, CLM in
//! `clm_router`): the learning-rate schedule, the progress bar, and early stopping on the
//! validation score with a snapshot of the best epoch's weights.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};

use crate::artifact::Metrics;
use crate::train::TrainError;

/// How the learning rate falls after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// Linearly to `floor` × base at the last step (lite, MLC).
    Linear { floor: f64 },
    /// Half a cosine to zero at the last step (the paper's schedule: MLM, CLM).
    Cosine,
}

/// Linear warm-up over the first 5% of the steps (at least one), then [`Decay`].
#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    base: f64,
    warmup: usize,
    total: usize,
    decay: Decay,
}

impl LrSchedule {
    pub fn new(base: f64, total_steps: usize, decay: Decay) -> Self {
        Self {
            base,
            warmup: (total_steps / 20).max(1),
            total: total_steps,
            decay,
        }
    }

    /// The learning rate of optimiser step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * (step + 1) as f64 / self.warmup as f64;
        }
        let f =
            (step - self.warmup) as f64 / (self.total.saturating_sub(self.warmup)).max(1) as f64;
        match self.decay {
            Decay::Linear { floor } => self.base * (1.0 - f).max(floor),
            Decay::Cosine => self.base * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()),
        }
    }
}

/// A step counter bar labelled `label`, or a hidden one when `enabled` is false (`--quiet`).
pub fn progress_bar(enabled: bool, total_steps: usize, label: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_steps as u64);
    let template = format!("{label} {{bar:30}} {{pos}}/{{len}} [{{elapsed}}<{{eta}}] {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

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

    #[test]
    fn schedule_warms_up_then_decays_to_its_end_value() {
        let cos = LrSchedule::new(1.0, 100, Decay::Cosine);
        assert!(
            (cos.at(0) - 0.2).abs() < 1e-12,
            "5 warm-up steps: 1/5 first"
        );
        assert!((cos.at(4) - 1.0).abs() < 1e-12);
        assert!(
            (cos.at(5) - 1.0).abs() < 1e-12,
            "decay starts at the base rate"
        );
        assert!(
            cos.at(52) < 0.51 && cos.at(52) > 0.49,
            "half way down at the midpoint"
        );
        assert!(cos.at(100).abs() < 1e-12);
        let lin = LrSchedule::new(2.0, 100, Decay::Linear { floor: 0.05 });
        assert!((lin.at(5) - 2.0).abs() < 1e-12);
        assert!(
            (lin.at(100) - 0.1).abs() < 1e-12,
            "floored at 5% of the base"
        );
        let tiny = LrSchedule::new(1.0, 3, Decay::Cosine);
        assert!(
            (tiny.at(0) - 1.0).abs() < 1e-12,
            "at least one warm-up step"
        );
        for s in 0..200 {
            assert!(cos.at(s).is_finite() && lin.at(s) >= 0.1 - 1e-12);
        }
    }

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
