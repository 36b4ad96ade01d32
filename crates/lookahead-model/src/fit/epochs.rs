//! The one epoch loop every trained method (lite, MLC, MLM, CLM) runs: shuffle, step AdamW on
//! each batch with the scheduled learning rate, validate after every epoch, stop early and keep
//! the best epoch's weights, then score the held-out records with them. The method supplies the
//! parts that differ through [`Trainee`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use lookahead_data::progress::{self, ProgressBar};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::request::{Fitted, TrainError};
use super::schedule::{Decay, LrSchedule};
use super::stopping::EarlyStopping;
use crate::artifact::{HyperParams, Metrics};

/// Optimiser step `index` of `total` (0-based): what a step-dependent curriculum needs.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub index: usize,
    pub total: usize,
}

/// One batch's loss: the tensor to step on, its routing (BCE) and auxiliary parts for the
/// progress line, and the mask rate of a masking curriculum, if any.
pub struct BatchLoss {
    pub total: Tensor,
    pub routing: f32,
    pub auxiliary: f32,
    pub mask_rate: Option<f64>,
}

/// What a method gives the epoch loop.
pub trait Trainee {
    /// The trainable variables: optimised, and snapshotted for the best epoch.
    fn varmap(&self) -> &VarMap;
    /// Loss of the training examples at indices `batch`, at optimiser step `step`.
    fn batch_loss(&self, batch: &[usize], step: Step) -> Result<BatchLoss, TrainError>;
    /// Validation metrics of the current weights.
    fn validate(&self) -> Result<Metrics, TrainError>;
    /// Held-out metrics of the model rebuilt from `best` (the best epoch's weights); `None`
    /// without held-out records.
    fn test(&self, best: &HashMap<String, Tensor>) -> Result<Option<Metrics>, TrainError>;
}

/// How the loop runs for one method.
pub struct FitSettings<'a> {
    pub hyper: &'a HyperParams,
    /// Training examples (the indices `batch_loss` gets are below this).
    pub examples: usize,
    pub decay: Decay,
    /// Progress bar label (`training`, `mlm`, `clm`).
    pub label: &'static str,
    /// Name of the auxiliary loss on the progress lines (`rec`, `mlm ce`, `lm ce`).
    pub auxiliary: &'static str,
    /// Steps between progress-bar message updates.
    pub message_every: usize,
    pub progress: bool,
    /// The time budget's end: see [`crate::TrainRequest::deadline`].
    pub deadline: Option<Instant>,
}

/// Whether another epoch as long as `last` still ends by `deadline`.
fn fits_before(deadline: Option<Instant>, last: Duration, now: Instant) -> bool {
    deadline.is_none_or(|d| now + last <= d)
}

/// Runs the epochs on `trainee`, batches shuffled with `rng`.
pub fn fit(
    trainee: &impl Trainee,
    settings: &FitSettings,
    rng: &mut StdRng,
) -> Result<Fitted, TrainError> {
    let hp = settings.hyper;
    let mut opt = AdamW::new(
        trainee.varmap().all_vars(),
        ParamsAdamW {
            lr: hp.learning_rate,
            weight_decay: hp.weight_decay,
            ..Default::default()
        },
    )?;
    let total = settings.examples.div_ceil(hp.batch_size) * hp.max_epochs.max(1);
    let mut run = EpochRun {
        schedule: LrSchedule::new(hp.learning_rate, total, settings.decay),
        bar: progress::bar(total as u64, settings.label, settings.progress),
        step: Step { index: 0, total },
        settings,
    };
    let mut stopping = EarlyStopping::new(hp.patience, hp.selection);
    let mut order: Vec<usize> = (0..settings.examples).collect();
    let epochs = hp.max_epochs.max(1);
    let mut epochs_run = 0;
    for epoch in 1..=epochs {
        let began = Instant::now();
        order.shuffle(rng);
        let (routing, auxiliary) = run.epoch(trainee, &mut opt, &order, epoch)?;
        let valid = trainee.validate()?;
        run.report(epoch, routing, auxiliary, &valid);
        epochs_run = epoch;
        if !stopping.observe(epoch, valid, trainee.varmap())? {
            break;
        }
        if epoch < epochs && !fits_before(settings.deadline, began.elapsed(), Instant::now()) {
            tracing::info!(
                epochs_run,
                epochs,
                epoch_seconds = began.elapsed().as_secs_f64(),
                "time budget: another epoch would end past it; keeping the best so far"
            );
            break;
        }
    }
    run.bar.finish_and_clear();
    let best = stopping.into_best()?;
    let test = trainee.test(&best.tensors)?;
    Ok(Fitted {
        tensors: best.tensors,
        validation: best.validation,
        test,
        best_epoch: best.epoch,
        epochs_run,
    })
}

/// The loop's running state across epochs.
struct EpochRun<'s> {
    schedule: LrSchedule,
    bar: ProgressBar,
    step: Step,
    settings: &'s FitSettings<'s>,
}

impl EpochRun<'_> {
    /// One pass over `order` in batches; the mean routing and auxiliary losses.
    fn epoch(
        &mut self,
        trainee: &impl Trainee,
        opt: &mut AdamW,
        order: &[usize],
        epoch: usize,
    ) -> Result<(f64, f64), TrainError> {
        let (mut sum_routing, mut sum_aux, mut n) = (0f64, 0f64, 0usize);
        for batch in order.chunks(self.settings.hyper.batch_size) {
            opt.set_learning_rate(self.schedule.at(self.step.index));
            let loss = trainee.batch_loss(batch, self.step)?;
            opt.backward_step(&loss.total)?;
            sum_routing += f64::from(loss.routing);
            sum_aux += f64::from(loss.auxiliary);
            n += 1;
            self.step.index += 1;
            self.bar.inc(1);
            if self.step.index.is_multiple_of(self.settings.message_every) {
                let mask = loss
                    .mask_rate
                    .map(|r| format!(" mask {r:.2}"))
                    .unwrap_or_default();
                self.bar.set_message(format!(
                    "epoch {epoch} bce {:.4} {} {:.4}{mask}",
                    sum_routing / n as f64,
                    self.settings.auxiliary,
                    sum_aux / n as f64
                ));
            }
        }
        let n = n.max(1) as f64;
        Ok((sum_routing / n, sum_aux / n))
    }

    /// The end-of-epoch log line and progress-bar line.
    fn report(&self, epoch: usize, routing: f64, auxiliary: f64, valid: &Metrics) {
        tracing::info!(
            method = self.settings.label,
            epoch,
            train_bce = routing,
            train_auxiliary = auxiliary,
            valid_router = valid.router,
            valid_bce = valid.bce,
            "epoch done"
        );
        self.bar.println(format!(
            "epoch {epoch}: train bce {routing:.4} {} {auxiliary:.4} | valid router {:.2} (oracle {:.2}, best single {:.2}) bce {:.4}",
            self.settings.auxiliary,
            valid.router,
            valid.oracle,
            valid.best_single,
            valid.bce.unwrap_or(f64::NAN)
        ));
    }
}
