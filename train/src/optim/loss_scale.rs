//! Dynamic loss scaling for fp16 mixed precision (as `torch.cuda.amp.GradScaler`): the loss
//! is multiplied by `scale` before backward; before clipping and the optimizer step the
//! gradients are divided by it and checked; a step with an inf/NaN gradient is skipped and
//! the scale backs off; after `growth_interval` clean steps it grows.

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Loss scaler state (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    /// Off: scale stays 1 and nothing is checked (fp32, bf16).
    pub enabled: bool,
    /// Current scale.
    pub scale: f64,
    /// Multiplier after `growth_interval` clean steps.
    pub growth_factor: f64,
    /// Multiplier after a step with inf/NaN gradients.
    pub backoff_factor: f64,
    /// Clean steps before growing.
    pub growth_interval: u64,
    /// Clean steps since the last change.
    pub growth_tracker: u64,
    /// Steps skipped so far.
    pub skipped: u64,
}

impl GradScaler {
    /// torch's defaults: 2^16, x2 every 2000 clean steps, x0.5 on overflow.
    pub fn new(enabled: bool) -> GradScaler {
        GradScaler {
            enabled,
            scale: if enabled { 65536.0 } else { 1.0 },
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
            skipped: 0,
        }
    }

    /// A scaler that keeps the scale at 1 but still checks gradients and skips steps with
    /// inf/NaN ones (bf16: no overflow to scale away, but a rare bad step is still caught).
    pub fn check_only() -> GradScaler {
        GradScaler {
            backoff_factor: 1.0,
            growth_factor: 1.0,
            growth_interval: u64::MAX,
            scale: 1.0,
            ..GradScaler::new(true)
        }
    }

    /// Divide `grads` by the scale in place; true if any is inf or NaN.
    pub fn unscale(&self, grads: &mut [Tensor]) -> bool {
        if !self.enabled {
            return false;
        }
        let inv = 1.0 / self.scale;
        let mut found = false;
        tch::no_grad(|| {
            for g in grads.iter_mut() {
                if !g.defined() {
                    continue;
                }
                let _ = g.g_mul_scalar_(inv);
                if !found {
                    let finite = g.isfinite().all().int64_value(&[]) == 1;
                    found = !finite;
                }
            }
        });
        found
    }

    /// Record the outcome of a step: back off after an overflow, grow after a clean run.
    pub fn update(&mut self, found_inf: bool) {
        if !self.enabled {
            return;
        }
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
            self.skipped += 1;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }
}

/// Sum of squares of `grads` as f64 (for clipping external gradient buffers).
pub fn grads_norm(grads: &[Tensor]) -> f64 {
    grads
        .iter()
        .filter(|g| g.defined())
        // `norm` reduces in place; squaring into a float64 sum made two gradient-sized
        // temporaries (3x the largest gradient: R3D-18's step peak).
        .map(|g| g.norm().double_value(&[]).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::adamw::AdamW;
    use tch::Kind;

    #[test]
    fn an_inf_gradient_skips_the_step_leaves_parameters_unchanged_and_backs_off() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], 0.0);
        let mut s = GradScaler::new(true);
        let before: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        // Inject an inf into the (scaled) gradient.
        let loss = (&p * Tensor::from_slice(&[f32::INFINITY, 1.0])).sum(Kind::Float) * s.scale;
        loss.backward();
        let mut grads = opt.grads();
        let found = s.unscale(&mut grads);
        assert!(found);
        if !found {
            opt.step_with(0.1, &grads);
        }
        s.update(found);
        let after: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        assert_eq!(before, after, "a skipped step must not move the parameters");
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        assert_eq!(opt.step, 0, "the optimizer did not count a step");
    }

    #[test]
    fn clean_steps_unscale_exactly_and_grow_after_the_interval() {
        let mut s = GradScaler::new(true);
        s.growth_interval = 3;
        let mut g = vec![Tensor::from_slice(&[65536.0f32, -131072.0])];
        assert!(!s.unscale(&mut g));
        assert_eq!(Vec::<f32>::try_from(&g[0]).unwrap(), vec![1.0, -2.0]);
        for _ in 0..3 {
            s.update(false);
        }
        assert_eq!(s.scale, 131072.0);
        let off = GradScaler::new(false);
        let mut g = vec![Tensor::from_slice(&[f32::NAN])];
        assert!(!off.unscale(&mut g), "a disabled scaler checks nothing");
    }
}
