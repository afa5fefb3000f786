//! One training step, with every memory technique composed in one place: micro-batches
//! ([`Trainer::micro_batch`]) accumulate gradients, in float32, float16 autocast or a
//! bfloat16 compute copy ([`crate::optim::precision`]), with or without gradient checkpointing
//! ([`crate::optim::recompute`]); [`Trainer::step`] then unscales (loss scaling), checks for
//! inf/NaN (skipping the step), clips and runs AdamW. `train fit`, the memory probe
//! (`train plan`) and `make bench-memory` all train through this type, so what the planner
//! measures is what `fit` runs.
//!
//! **Accumulation rule.** An optimizer step averages the losses of its window of
//! `train.accumulate_grad_batches` batches: each batch's loss is multiplied by
//! `loss_scale / window` before backward. The last window of an epoch may be shorter when
//! the number of batches is not a multiple of the window; it steps with the batches it has,
//! averaged over their number (so every step is a mean, never a partial sum). The learning
//! rate schedule and logs count optimizer steps.

use std::sync::Arc;
use std::time::Instant;

use mvdrive_dist::ProcessGroup;
use tch::nn::VarStore;
use tch::{Device, Reduction, Tensor};

use crate::error::Result;
use crate::model::pretrained::is_head;
use crate::model::{Input, ModelConfig, MultiViewModel};
use crate::optim::adamw::{clip_grads, AdamW};
use crate::optim::loss_scale::GradScaler;
use crate::optim::precision::{HalfCopy, Precision};
use crate::optim::recompute::{forward_backward, CheckpointSegments, RunOptions};

/// Cross-entropy with label smoothing, the training loss of every model. `targets` are
/// class indices `[B]`, or class probabilities `[B, classes]` (a mixed batch, computed in
/// float32 whatever the scores' precision).
pub fn loss_of(scores: &Tensor, targets: &Tensor, smoothing: f64) -> Tensor {
    if targets.is_floating_point() {
        let scores = scores.to_kind(tch::Kind::Float);
        return scores.cross_entropy_loss::<Tensor>(
            targets,
            None,
            Reduction::Mean,
            -100,
            smoothing,
        );
    }
    scores.cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, -100, smoothing)
}

/// What happened at an optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// False when inf/NaN gradients made the scaler skip it.
    pub applied: bool,
    /// Gradient norm before clipping (unscaled; NaN when skipped).
    pub grad_norm: f64,
    /// Loss scale after the step's update.
    pub scale: f64,
}

/// What the gradient all-reduces of a multi-process run cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// All-reduces (one per optimizer step).
    pub syncs: u64,
    /// Seconds spent in them.
    pub seconds: f64,
    /// Gradient bytes all-reduced per sync.
    pub bytes: u64,
}

/// The model, its optimizer and the settings of how a step runs.
#[derive(Debug)]
pub struct Trainer {
    /// Master (float32) variables: what checkpoints hold.
    pub vs: VarStore,
    /// The master model (evaluation runs on it).
    pub model: MultiViewModel,
    /// AdamW over the master's trainable variables.
    pub opt: AdamW,
    /// Loss scaler (fp16), or inf/NaN checker (bf16), or off (fp32).
    pub scaler: GradScaler,
    /// `trainer.precision`.
    pub precision: Precision,
    /// `model.use_gradient_checkpointing`.
    pub checkpointing: bool,
    /// `model.checkpoint_segments`: which segments checkpointing recomputes (all by default).
    pub segments: CheckpointSegments,
    /// Only the classifier trains (see [`Trainer::set_backbone`]).
    pub frozen_backbone: bool,
    /// The c10d group whose ranks average their gradients ([`Trainer::sync_gradients`]).
    pub dist: Option<Arc<ProcessGroup>>,
    /// Time and bytes spent in gradient all-reduces so far.
    pub comm: CommStats,
    half: Option<HalfCopy>,
    half_grads: Vec<Tensor>,
    fresh_copy: bool,
}

impl Trainer {
    /// Build the model (seeded by the caller through `tch::manual_seed`) on `device`.
    pub fn new(
        config: &ModelConfig,
        device: Device,
        precision: Precision,
        checkpointing: bool,
        weight_decay: f64,
    ) -> Result<Trainer> {
        precision.check_device(device)?;
        let vs = VarStore::new(device);
        let model = MultiViewModel::new(&vs.root(), config.clone())?;
        let opt = AdamW::new(
            vs.variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .collect(),
            weight_decay,
        );
        let scaler = match precision {
            Precision::Fp16Mixed => GradScaler::new(true),
            Precision::Bf16Mixed => GradScaler::check_only(),
            Precision::Fp32 => GradScaler::new(false),
        };
        Ok(Trainer {
            vs,
            model,
            opt,
            scaler,
            precision,
            checkpointing,
            segments: CheckpointSegments::All,
            frozen_backbone: false,
            dist: None,
            comm: CommStats::default(),
            half: None,
            half_grads: Vec::new(),
            fresh_copy: false,
        })
    }

    /// Fine-tuning: the backbone learns at `lr_mult` times the classifier's rate, or not at
    /// all while `frozen` (then it also runs in evaluation mode, so its BatchNorm statistics
    /// stay as they are, and without a graph).
    pub fn set_backbone(&mut self, lr_mult: f64, frozen: bool) {
        self.frozen_backbone = frozen;
        let backbone = if frozen { 0.0 } else { lr_mult };
        self.opt
            .set_lr_mult(|name| if is_head(name) { 1.0 } else { backbone });
    }

    /// Forward and backward of one batch `x` (float32) with targets `y` (class indices,
    /// or probabilities for a mixed batch, see [`loss_of`]), as `1 / window` of the current step's loss. Returns the batch's loss.
    pub fn micro_batch(
        &mut self,
        x: &Input,
        y: &Tensor,
        smoothing: f64,
        window: usize,
        seed: i64,
    ) -> Result<f64> {
        let opts = RunOptions {
            checkpointing: self.checkpointing,
            segments: self.segments,
            autocast: self.precision == Precision::Fp16Mixed,
            seed,
            frozen_backbone: self.frozen_backbone,
        };
        let scale = self.scaler.scale / window.max(1) as f64;
        let loss_fn = |s: &Tensor| loss_of(s, y, smoothing);
        let loss = if self.precision == Precision::Bf16Mixed {
            if self.half.is_none() {
                self.half = Some(HalfCopy::new(self.model.config(), &self.vs)?);
                self.fresh_copy = true;
            }
            let half = self.half.as_ref().ok_or("no bf16 copy")?;
            if !self.fresh_copy {
                half.load_from(&self.vs);
                self.fresh_copy = true;
            }
            let xh = x.to_kind(tch::Kind::BFloat16);
            let loss = forward_backward(&half.model, &half.vs, &xh, &loss_fn, scale, opts);
            half.take_grads(&self.opt.params, &mut self.half_grads);
            loss
        } else {
            forward_backward(&self.model, &self.vs, x, &loss_fn, scale, opts)
        };
        Ok(loss.double_value(&[]))
    }

    /// The gradients accumulated so far, unscaled (as the next [`Trainer::step`] would see
    /// them before clipping), copied. For tests and the benchmark's gradient agreement.
    pub fn gradients(&self) -> Vec<Tensor> {
        let source = if self.precision == Precision::Bf16Mixed {
            self.half_grads.iter().map(|g| g.shallow_clone()).collect()
        } else {
            self.opt.grads()
        };
        let grads: Vec<Tensor> = source
            .iter()
            .map(|g| if g.defined() { g.copy() } else { Tensor::new() })
            .collect();
        let inv = 1.0 / self.scaler.scale;
        grads
            .into_iter()
            .map(|g| if g.defined() { g * inv } else { g })
            .collect()
    }

    /// Multi-process runs: averages the accumulated gradients across the ranks (one bucketed
    /// all-reduce per optimizer step, after accumulation; no sync on the micro-batches). Every
    /// rank then holds the same gradients, so the loss scaler's inf/NaN check and the
    /// clipping norm agree everywhere and every rank skips or steps together. A no-op alone.
    pub fn sync_gradients(&mut self) -> Result<()> {
        let Some(g) = self.dist.clone() else {
            return Ok(());
        };
        let grads: Vec<Tensor> = if self.precision == Precision::Bf16Mixed {
            self.half_grads.iter().map(|t| t.shallow_clone()).collect()
        } else {
            self.opt.grads()
        };
        let started = Instant::now();
        // Ranks must agree on which gradients exist, or the buckets would not line up.
        let defined: Vec<f32> = grads.iter().map(|t| t.defined() as u8 as f32).collect();
        let mask = Tensor::from_slice(&defined);
        g.all_reduce_sum_(std::slice::from_ref(&mask))?;
        let world = g.world() as f32;
        let sums = Vec::<f32>::try_from(&mask)?;
        if let Some(i) = sums.iter().position(|&n| n != 0.0 && n != world) {
            let name = self.opt.params.get(i).map_or("?", |(n, _)| n.as_str());
            return Err(format!(
                "parameter `{name}` has a gradient on only {} of {world} ranks: every rank must run the same model on the same modalities",
                sums[i]
            )
            .into());
        }
        g.all_reduce_mean_(&grads)?;
        self.comm.syncs += 1;
        self.comm.seconds += started.elapsed().as_secs_f64();
        self.comm.bytes = grads
            .iter()
            .filter(|t| t.defined())
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum();
        Ok(())
    }

    /// End of an accumulation window: unscale, check, clip to `clip` (0 = off), AdamW at
    /// `lr` (skipped on inf/NaN), update the scale, clear the gradients.
    pub fn step(&mut self, lr: f64, clip: f64) -> StepOutcome {
        let mut grads = if self.precision == Precision::Bf16Mixed {
            std::mem::take(&mut self.half_grads)
        } else {
            self.opt.grads()
        };
        let found_inf = self.scaler.unscale(&mut grads);
        let mut norm = f64::NAN;
        if !found_inf {
            norm = clip_grads(&mut grads, clip);
            self.opt.step_with(lr, &grads);
        }
        self.scaler.update(found_inf);
        self.opt.zero_grad();
        self.half_grads.clear();
        if let Some(h) = &self.half {
            h.store_stats(&self.vs);
        }
        // The master changed: the compute copy is refreshed before the next micro-batch.
        self.fresh_copy = false;
        StepOutcome {
            applied: !found_inf,
            grad_norm: norm,
            scale: self.scaler.scale,
        }
    }

    /// Forget accumulated gradients without stepping.
    pub fn zero_grad(&mut self) {
        self.opt.zero_grad();
        self.half_grads.clear();
        if let Some(h) = &self.half {
            h.clear_grads();
        }
    }
}
