//! What the planner tries and what it finds: a [`Candidate`] setting, its [`Verdict`]
//! against the budget, and the measured [`Row`].

use crate::optim::precision::Precision;
use crate::optim::recompute::CheckpointSegments;

/// One setting tried by the planner.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `data.batch_size`.
    pub batch_size: usize,
    /// `train.accumulate_grad_batches`.
    pub accumulate: usize,
    /// `trainer.precision`.
    pub precision: Precision,
    /// `model.use_gradient_checkpointing`.
    pub checkpointing: bool,
    /// `model.checkpoint_segments` (when checkpointing).
    pub segments: CheckpointSegments,
    /// `data.img_size` as given (`112`, `96x128`, `null`).
    pub img_size: String,
    /// `data.uniform_temporal_subsample_num`.
    pub frames: i64,
}

impl Candidate {
    /// The `key=value` overrides that select this setting (memory keys only).
    pub fn memory_overrides(&self) -> Vec<String> {
        vec![
            format!("data.batch_size={}", self.batch_size),
            format!("train.accumulate_grad_batches={}", self.accumulate),
            format!("trainer.precision={}", self.precision.name()),
            format!("model.use_gradient_checkpointing={}", self.checkpointing),
            format!("model.checkpoint_segments={}", self.segments),
        ]
    }

    /// Every override of this setting, input size and frames included.
    pub fn overrides(&self) -> Vec<String> {
        let mut o = self.memory_overrides();
        o.push(format!("data.img_size={}", self.img_size));
        o.push(format!(
            "data.uniform_temporal_subsample_num={}",
            self.frames
        ));
        o
    }

    /// `no-ckpt`, `ckpt` (every segment) or `ckpt first:3`.
    pub fn checkpoint_label(&self) -> String {
        match (self.checkpointing, self.segments) {
            (false, _) => "no-ckpt".into(),
            (true, CheckpointSegments::All) => "ckpt".into(),
            (true, s) => format!("ckpt {s}"),
        }
    }

    /// A short label: `bs=2 acc=4 bf16-mixed ckpt 112 T=8`.
    pub fn label(&self) -> String {
        format!(
            "bs={} acc={} {} {} img={} T={}",
            self.batch_size,
            self.accumulate,
            self.precision.name(),
            self.checkpoint_label(),
            self.img_size,
            self.frames
        )
    }
}

/// Whether a candidate fits, and if not, why.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within every budget.
    Fits,
    /// Over the RAM budget (measured, or stopped when it passed it).
    OverRam,
    /// Over the VRAM budget.
    OverVram,
    /// Died of memory.
    OutOfMemory(String),
    /// Failed for another reason (the message).
    Failed(String),
}

/// One row of the plan: a candidate and what it measured.
#[derive(Debug, Clone)]
pub struct Row {
    /// The setting.
    pub candidate: Candidate,
    /// Peak RSS of the child, bytes; with `complete` false a lower bound (it was stopped).
    pub peak_ram: Option<u64>,
    /// True when the child ran to the end, so `peak_ram` is its real peak.
    pub complete: bool,
    /// CUDA: peak device memory in use, bytes.
    pub peak_vram: Option<u64>,
    /// Seconds per optimizer step (same effective batch for every row).
    pub seconds_per_step: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}
