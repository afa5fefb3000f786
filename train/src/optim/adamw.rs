//! AdamW with decoupled weight decay, written over tch tensors so that its moments can be
//! saved and restored exactly (libtorch's optimizer state is not reachable from tch), and a
//! linear warm-up + cosine learning-rate schedule counted in optimizer steps.

use tch::Tensor;

/// AdamW over a fixed list of named parameters.
#[derive(Debug)]
pub struct AdamW {
    /// (name, parameter) pairs, in a fixed order.
    pub params: Vec<(String, Tensor)>,
    /// First moments.
    pub m: Vec<Tensor>,
    /// Second moments.
    pub v: Vec<Tensor>,
    /// Steps taken.
    pub step: u64,
    /// Steps each parameter took (with a gradient and a nonzero learning-rate factor), as
    /// PyTorch counts them: a parameter that starts updating late (a backbone unfrozen after
    /// `train.freeze_backbone_epochs`) starts its bias correction at 1, not at the global
    /// step, where corrections near 1 over zero moments would make its first steps several
    /// times the learning rate.
    pub steps: Vec<u64>,
    /// Beta 1.
    pub beta1: f64,
    /// Beta 2.
    pub beta2: f64,
    /// Epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Learning-rate factor of each parameter (1 unless set; 0 leaves it alone: no
    /// update, no decay, no moments).
    pub lr_mult: Vec<f64>,
}

impl AdamW {
    /// An optimizer of `params` (betas 0.9 / 0.999, eps 1e-8, as torch.optim.AdamW).
    pub fn new(mut params: Vec<(String, Tensor)>, weight_decay: f64) -> AdamW {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let lr_mult = vec![1.0; params.len()];
        let steps = vec![0; params.len()];
        AdamW {
            lr_mult,
            steps,
            params,
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// Set each parameter's learning-rate factor from its name.
    pub fn set_lr_mult(&mut self, mult: impl Fn(&str) -> f64) {
        self.lr_mult = self.params.iter().map(|(n, _)| mult(n)).collect();
    }

    /// Zero every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            crate::optim::autograd::clear_grad(p);
        }
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self) -> f64 {
        crate::optim::loss_scale::grads_norm(&self.grads())
    }

    /// The current gradients of the parameters (shallow handles), in parameter order.
    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.grad()).collect()
    }

    /// One AdamW step at learning rate `lr` with the parameters' own gradients.
    pub fn step(&mut self, lr: f64) {
        let grads = self.grads();
        self.step_with(lr, &grads);
    }

    /// One AdamW step with `grads` given in parameter order (e.g. fp32 gradients of a
    /// bf16 compute copy of the model); undefined gradients leave their parameter alone.
    pub fn step_with(&mut self, lr: f64, grads: &[Tensor]) {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        tch::no_grad(|| {
            for (((((_, p), (m, v)), g), &mult), t) in self
                .params
                .iter_mut()
                .zip(self.m.iter_mut().zip(self.v.iter_mut()))
                .zip(grads)
                .zip(&self.lr_mult)
                .zip(self.steps.iter_mut())
            {
                if !g.defined() || mult == 0.0 {
                    continue;
                }
                *t += 1;
                let t = i32::try_from(*t).unwrap_or(i32::MAX);
                let c1 = 1.0 - b1.powi(t);
                let c2 = 1.0 - b2.powi(t);
                let lr = lr * mult;
                if lr == 0.0 {
                    // Moments still move, as in PyTorch; the weights do not.
                    let _ = m.lerp_(g, 1.0 - b1);
                    let _ = v.lerp_(&g.square(), 1.0 - b2);
                    continue;
                }
                // In place, with at most one parameter-sized temporary alive at a time
                // (the step's peak memory is state + gradients + one of these).
                let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                let _ = m.lerp_(g, 1.0 - b1);
                let _ = v.lerp_(&g.square(), 1.0 - b2);
                // p -= lr / c1 * m / (sqrt(v / c2) + eps), as p += m / denom with the
                // factor folded into denom.
                let mut denom = v.sqrt();
                let _ = denom.g_mul_scalar_(1.0 / c2.sqrt());
                let _ = denom.g_add_scalar_(self.eps);
                let _ = denom.g_mul_scalar_(-c1 / lr);
                let _ = p.addcdiv_(m, &denom);
            }
        });
    }
}

/// Scale `grads` in place so that their global norm is at most `max` (0 = off); returns
/// the norm before clipping.
pub fn clip_grads(grads: &mut [Tensor], max: f64) -> f64 {
    let norm = crate::optim::loss_scale::grads_norm(grads);
    if max > 0.0 && norm > max {
        let k = max / (norm + 1e-6);
        tch::no_grad(|| {
            for g in grads.iter_mut().filter(|g| g.defined()) {
                let _ = g.g_mul_scalar_(k);
            }
        });
    }
    norm
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up over
/// `warmup` steps to `peak`, then cosine decay to 0 at `total`.
pub fn lr_at(step: u64, total: u64, warmup: u64, peak: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let x = (step.saturating_sub(warmup) as f64 / span).min(1.0);
    0.5 * peak * (1.0 + (std::f64::consts::PI * x).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
        assert!(lr_at(100, 100, 10, 1.0).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        // After one step from zero moments, Adam moves each weight by lr * g/|g| (plus decay).
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], 0.1);
        let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float);
        loss.backward();
        opt.step(0.01);
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn a_parameter_that_starts_late_takes_a_first_step_of_lr() {
        // `b` has no gradient for 10 steps (frozen, or unused), then gets one: its first
        // move is lr * sign(g), as from a fresh AdamW, not a step scaled by corrections
        // computed from the global count.
        let a = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            0.0,
        );
        for _ in 0..10 {
            opt.zero_grad();
            (&a * 3.0).sum(Kind::Float).backward();
            opt.step(0.01);
        }
        opt.zero_grad();
        ((&a + &b) * 3.0).sum(Kind::Float).backward();
        opt.step(0.01);
        let moved = 1.0 - f64::try_from(&b.detach()).unwrap();
        assert!((moved - 0.01).abs() < 1e-6, "moved {moved}");
        assert_eq!(opt.steps, [11, 1]);
    }
}
