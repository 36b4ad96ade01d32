//! When the optimiser steps how hard: the learning-rate schedule, the masking curriculum and
//! the step counter bar.

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

/// Curriculum mask rate at `step` of `total`: linear from `start` to 1.0 over the first
/// `warm_fraction` of steps, then 1.0.
pub fn mask_rate(step: usize, total: usize, start: f64, warm_fraction: f64) -> f64 {
    let warm = (total as f64 * warm_fraction).max(1.0);
    let progress = (step as f64 / warm).min(1.0);
    start + (1.0 - start) * progress
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
