//! Gradient checkpointing (`model.use_gradient_checkpointing=true`), written over tch.
//!
//! One micro-batch runs forward and backward through [`forward_backward`]. The model's
//! backbone is a chain of segments ([`crate::model::backbones::Backbone::segments`]: the stem
//! and each BasicBlock for the ResNets, the embedding, each block and the final norm for the
//! token backbones) followed by [`MultiViewModel::head`] (pooling, view fusion, classifier).
//! [`CheckpointSegments`] (`model.checkpoint_segments`) says which segments are recomputed;
//! the others keep their activations as without checkpointing.
//!
//! Both ways, each segment's input is a detached leaf, and backward goes segment by
//! segment from the top: the head runs with autograd on a detached copy of the last
//! output, the loss is back-propagated to it, and each segment's output is then
//! back-propagated with the gradient that arrived from above (`out.backward(grad)`,
//! through a small C++ shim in `optim/autograd.rs` because tch has no `backward` with a
//! gradient); the gradient of its input goes on down.
//!
//! - **Off**: every segment runs with autograd recording; every activation of the whole
//!   network is kept until backward, as in one plain backward (the gradients are the same).
//! - **On**: the checkpointed segments first run under `no_grad`, keeping only their input
//!   (a segment that is not checkpointed keeps its graph, as with it off). In backward each
//!   is run again from its saved input with autograd on before its output is
//!   back-propagated. At any time only one segment's activations are alive: peak memory
//!   drops from the whole network to the segment inputs plus the largest segment.
//! - **The kept tail** ([`kept_tail`]): the last segment that is not light (not a final
//!   norm) and those after it are never recomputed. Their recompute would run right after
//!   the first pass, with the same activations alive as their kept graph, so keeping the
//!   graph costs no peak memory and saves one block's forward.
//! - **Weight-heavy convolutions** (on or off): a segment that ran a CPU convolution with
//!   more weights than unfolded input ([`crate::model::backbones::take_weight_heavy_mark`],
//!   the last stage of a video ResNet) is back-propagated on ATen's own kernels
//!   ([`NativeConvBackward`]): oneDNN's backward of such a convolution holds about nine
//!   weight-sized buffers at once (R3D-18's layer4: 248 MiB for 27 MiB of weights), ATen's
//!   about one unfolded input (38 MiB), at the same speed or better. Going segment by
//!   segment is what lets the choice differ between segments of one backward. The switch
//!   is ATen's process-wide flag, so it is on only where the `train` binary turns it on
//!   ([`crate::optim::autograd::set_native_conv_backward`]).
//!
//! Two things make the recomputed segment identical to the first run:
//! - **Dropout masks**: before each segment runs (first run and recompute) the torch RNG is
//!   seeded with [`segment_seed`] of the step's seed and the segment's index. The same seeding
//!   is used with checkpointing off, so on and off draw the same masks.
//! - **BatchNorm statistics**: in training mode BatchNorm updates its running mean and
//!   variance every time it runs. The buffers (every variable without a gradient) are saved
//!   after the first run and restored after the recompute, so they are updated once per
//!   micro-batch, exactly as without checkpointing.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::model::backbones::take_weight_heavy_mark;
use crate::model::backbones::Segment;
use crate::model::{Input, MultiViewModel};
use crate::optim::autograd::{backward_with_grad, NativeConvBackward};

/// Which backbone segments gradient checkpointing recomputes (`model.checkpoint_segments`):
/// the dial between memory and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointSegments {
    /// Every segment (least memory, one extra forward pass).
    #[default]
    All,
    /// Every `n`-th segment, from the first (0, n, 2n, ...).
    Every(usize),
    /// The first `n` segments (in a CNN the early ones hold the largest activations).
    First(usize),
}

impl CheckpointSegments {
    /// Whether segment `i` is recomputed.
    pub fn recomputes(self, i: usize) -> bool {
        match self {
            CheckpointSegments::All => true,
            CheckpointSegments::Every(n) => i.is_multiple_of(n.max(1)),
            CheckpointSegments::First(n) => i < n,
        }
    }
}

impl std::fmt::Display for CheckpointSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointSegments::All => write!(f, "all"),
            CheckpointSegments::Every(n) => write!(f, "every:{n}"),
            CheckpointSegments::First(n) => write!(f, "first:{n}"),
        }
    }
}

impl std::str::FromStr for CheckpointSegments {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let n = |v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("`{s}`: N must be a whole number >= 1"))
        };
        match s.split_once(':') {
            None if s == "all" => Ok(CheckpointSegments::All),
            Some(("every", v)) => Ok(CheckpointSegments::Every(n(v)?)),
            Some(("first", v)) => Ok(CheckpointSegments::First(n(v)?)),
            _ => Err(format!("`{s}`: use all, every:N or first:N")),
        }
    }
}

/// How one micro-batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Recompute segments in backward instead of keeping their activations.
    pub checkpointing: bool,
    /// Which segments, when `checkpointing`.
    pub segments: CheckpointSegments,
    /// Run forward passes under CUDA autocast (float16 mixed precision).
    pub autocast: bool,
    /// Seed of this micro-batch's dropout masks (see [`segment_seed`]).
    pub seed: i64,
    /// Train the classifier only: the backbones run in evaluation mode (BatchNorm
    /// statistics used, not updated; no dropout) without a graph.
    pub frozen_backbone: bool,
}

/// One segment of one stream in backward: recomputed (`output` None), or kept with its
/// graph (`output` Some).
struct Unit {
    /// Index of its segment.
    index: usize,
    /// Its input, a detached leaf (requiring grad from the second segment on).
    input: Tensor,
    /// The kept segment's output, with its graph.
    output: Option<Tensor>,
    /// It ran a weight-heavy CPU convolution: back-propagate it on ATen's kernels
    /// ([`NativeConvBackward`]).
    native_conv_backward: bool,
}

/// The first segment of the tail that checkpointing never recomputes: the last segment
/// that is not [`Segment::light`], and everything after it. Its recompute would run right
/// after the first pass, so keeping its graph instead costs no extra peak memory (the same
/// activations would be alive during its backward) and saves one segment's forward.
pub fn kept_tail(segments: &[Segment<'_>]) -> usize {
    segments.iter().rposition(|s| !s.light).unwrap_or(0)
}

/// The torch seed set before segment `i` of a micro-batch seeded `seed`.
pub fn segment_seed(seed: i64, i: usize) -> i64 {
    seed.wrapping_mul(1_000_003).wrapping_add(i as i64 + 1)
}

fn autocast<T>(on: bool, f: impl FnOnce() -> T) -> T {
    if on {
        tch::autocast(true, f)
    } else {
        f()
    }
}

/// Every variable of `vs` that has no gradient (BatchNorm running statistics), copied.
fn buffers(vs: &VarStore) -> Vec<(Tensor, Tensor)> {
    tch::no_grad(|| {
        vs.variables()
            .into_values()
            .filter(|t| !t.requires_grad())
            .map(|t| {
                let saved = t.copy();
                (t, saved)
            })
            .collect()
    })
}

fn restore(saved: Vec<(Tensor, Tensor)>) {
    tch::no_grad(|| {
        for (mut t, s) in saved {
            t.copy_(&s);
        }
    });
}

/// Runs `model` on `x` in training mode, computes `loss_of(scores)` (scores
/// as float32), and back-propagates `loss * scale`; gradients accumulate in the variables'
/// `.grad`. `vs` is the model's VarStore (its BatchNorm buffers are restored after a
/// recompute). Returns the unscaled loss, detached.
pub fn forward_backward(
    model: &MultiViewModel,
    vs: &VarStore,
    x: &Input,
    loss_of: &dyn Fn(&Tensor) -> Tensor,
    scale: f64,
    opts: RunOptions,
) -> Tensor {
    let (b, v) = (x.batch_size(), x.num_views());
    let streams = model.streams(x);
    // Segment `i` of stream `s` is seeded by index `s * STREAM_STRIDE + i`.
    const STREAM_STRIDE: usize = 1000;
    if opts.frozen_backbone {
        let lasts: Vec<Tensor> = tch::no_grad(|| {
            streams
                .iter()
                .map(|stream| {
                    let mut h = stream.input.shallow_clone();
                    for seg in &stream.segments {
                        h = autocast(opts.autocast, || seg.forward_t(&h, false));
                    }
                    h
                })
                .collect()
        });
        let scores = autocast(opts.autocast, || {
            model.head(&lasts, b, v, x.present.as_ref())
        })
        .to_kind(Kind::Float);
        let loss = loss_of(&scores);
        (&loss * scale).backward();
        return loss.detach();
    }
    // First run. Every segment is a unit whose input is a detached leaf, so backward goes
    // unit by unit from the top: a checkpointed segment runs without a graph and keeps its
    // input, any other keeps its graph (all of them without checkpointing).
    let mut units: Vec<Vec<Unit>> = Vec::with_capacity(streams.len());
    let mut lasts = Vec::with_capacity(streams.len());
    for (si, stream) in streams.iter().enumerate() {
        let mut chain: Vec<Unit> = Vec::with_capacity(stream.segments.len());
        let mut h = stream.input.shallow_clone();
        let tail = kept_tail(&stream.segments);
        for (i, seg) in stream.segments.iter().enumerate() {
            tch::manual_seed(segment_seed(opts.seed, si * STREAM_STRIDE + i));
            let recompute = opts.checkpointing && i < tail && opts.segments.recomputes(i);
            // The model input needs no gradient; a recomputed input gets one in backward.
            let leaf = h.detach();
            let input = if i > 0 && !recompute {
                leaf.set_requires_grad(true)
            } else {
                leaf
            };
            take_weight_heavy_mark();
            h = if recompute {
                tch::no_grad(|| autocast(opts.autocast, || seg.forward_t(&input, true)))
            } else {
                autocast(opts.autocast, || seg.forward_t(&input, true))
            };
            chain.push(Unit {
                index: i,
                input,
                output: (!recompute).then(|| h.shallow_clone()),
                native_conv_backward: take_weight_heavy_mark() && NativeConvBackward::allowed(),
            });
        }
        units.push(chain);
        lasts.push(h.detach().set_requires_grad(true));
    }
    let scores = autocast(opts.autocast, || {
        model.head(&lasts, b, v, x.present.as_ref())
    })
    .to_kind(Kind::Float);
    let loss = loss_of(&scores);
    (&loss * scale).backward();
    let saved = opts.checkpointing.then(|| buffers(vs));
    for (si, (stream, mut chain)) in streams.iter().zip(units).enumerate() {
        let mut grad = lasts[si].grad();
        while let Some(unit) = chain.pop() {
            if !grad.defined() {
                // Nothing flows back into this stream (the head did not use it): its
                // segments get no gradient, as without checkpointing.
                break;
            }
            let xi = if unit.index > 0 && unit.output.is_none() {
                unit.input.detach().set_requires_grad(true)
            } else {
                unit.input.shallow_clone()
            };
            let out = match unit.output {
                Some(out) => out,
                None => {
                    let i = unit.index;
                    tch::manual_seed(segment_seed(opts.seed, si * STREAM_STRIDE + i));
                    autocast(opts.autocast, || stream.segments[i].forward_t(&xi, true))
                }
            };
            let native = unit.native_conv_backward.then(NativeConvBackward::enter);
            backward_with_grad(&out, &grad);
            drop(native);
            drop(out);
            if unit.index > 0 {
                grad = xi.grad();
            }
        }
    }
    drop(lasts);
    if let Some(saved) = saved {
        restore(saved);
    }
    loss.detach()
}
