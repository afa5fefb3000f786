//! Helpers shared by the per-backbone test files (r3d, x3d, stgcn, transformer, mamba) and
//! the multi-view model tests: tensor checks, segment chaining, overfitting a tiny batch,
//! and small model builders.

#![allow(dead_code)] // each test binary uses some of these

use mvdrive_train::model::backbones::{Backbone, BackboneKind};
use mvdrive_train::model::{ClipShape, FusionMode, ModelConfig, MultiViewModel};
use std::time::Instant;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------- tensor checks

pub fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) == 1
}

/// The largest absolute difference, computed in float64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

pub fn trainable_param_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Every trainable variable has a defined, finite gradient (and there is at least one).
pub fn assert_finite_grads(vs: &nn::VarStore) {
    let mut with_grad = 0;
    for (name, var) in vs.variables() {
        if !var.requires_grad() {
            continue;
        }
        let g = var.grad();
        assert!(g.defined(), "no gradient for {name}");
        assert!(all_finite(&g), "non-finite gradient for {name}");
        with_grad += 1;
    }
    assert!(with_grad > 0);
}

// ---------------------------------------------------------------- backbones

/// `segments()` chained, then `pool()`: what `features()` should equal.
pub fn chain(backbone: &dyn Backbone, x: &Tensor, train: bool) -> Tensor {
    let mut h = x.shallow_clone();
    for segment in backbone.segments() {
        h = segment.forward_t(&h, train);
    }
    backbone.pool(&h)
}

/// Trains `backbone` + a Linear head with AdamW (lr 1e-3) for `steps` steps on the 4
/// samples `x` labelled 0, 1, 0, 1; asserts a final loss below 0.05 and full train-mode
/// accuracy, and prints both accuracies.
pub fn assert_overfits(
    name: &str,
    vs: &nn::VarStore,
    backbone: &dyn Backbone,
    x: &Tensor,
    steps: usize,
) {
    let start = Instant::now();
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let head = nn::linear(
        vs.root() / "fc",
        backbone.feature_dim(),
        2,
        Default::default(),
    );
    let mut opt = nn::AdamW::default().build(vs, 1e-3).expect("optimizer");
    let mut loss = f64::INFINITY;
    for _ in 0..steps {
        let logits = backbone.features(x, true).apply(&head);
        let step_loss = logits.cross_entropy_for_logits(&labels);
        opt.backward_step(&step_loss);
        loss = step_loss.double_value(&[]);
    }
    let accuracy = |train: bool| {
        tch::no_grad(|| {
            let logits = backbone.features(x, train).apply(&head);
            logits
                .argmax(-1, false)
                .eq_tensor(&labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        })
    };
    let eval_acc = accuracy(false);
    let train_acc = accuracy(true);
    println!(
        "{name} overfit: loss {loss:.4}, train-mode accuracy {train_acc}, eval-mode accuracy \
         {eval_acc}, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(loss < 0.05, "loss {loss}");
    assert_eq!(train_acc, 1.0);
}

/// One train-mode pass first (so BatchNorm running statistics are not the initial ones),
/// then chaining the segments in eval mode equals `features()` exactly, of width `dim`;
/// then [`check_bf16_features`].
pub fn check_segments_then_bf16(vs: &mut nn::VarStore, net: &dyn Backbone, x: &Tensor, dim: i64) {
    let _ = net.features(x, true);
    let a = net.features(x, false);
    let b = chain(net, x, false);
    assert_eq!(a.size(), [x.size()[0], dim]);
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    check_bf16_features(vs, net, x, dim);
}

/// Converts `vs` (holding `net`) to bfloat16: `features()` of `x` in bfloat16, in eval and
/// train mode, are finite bfloat16 of width `dim`.
pub fn check_bf16_features(vs: &mut nn::VarStore, net: &dyn Backbone, x: &Tensor, dim: i64) {
    vs.bfloat16();
    let xb = x.to_kind(Kind::BFloat16);
    for train in [false, true] {
        let y = net.features(&xb, train);
        assert_eq!(y.size(), [x.size()[0], dim]);
        assert_eq!(y.kind(), Kind::BFloat16);
        assert!(all_finite(&y), "{net:?}");
    }
}

// ---------------------------------------------------------------- token backbones

/// The clip size the transformer and Mamba tests use.
pub const INPUT: ClipShape = ClipShape::new(8, 32, 32);

pub fn clip(n: i64) -> Tensor {
    Tensor::randn(
        [n, 3, INPUT.t, INPUT.h, INPUT.w],
        (Kind::Float, Device::Cpu),
    )
}

/// Forward shape, then a backward pass reaching every trainable variable with finite
/// gradients.
pub fn check_forward_backward(vs: &nn::VarStore, model: &dyn Backbone, dim: i64) {
    let x = clip(2);
    let f = model.features(&x, true);
    assert_eq!(f.size(), [2, dim]);
    assert_eq!(model.feature_dim(), dim);
    assert!(all_finite(&f));
    let w = Tensor::randn([2, dim], (Kind::Float, Device::Cpu));
    (f * w).sum(Kind::Float).backward();
    let vars = vs.trainable_variables();
    assert!(!vars.is_empty());
    let mut nonzero = 0;
    for (name, var) in vs.variables() {
        let g = var.grad();
        assert!(g.defined(), "{name} has no gradient");
        assert!(all_finite(&g), "{name} has a non-finite gradient");
        if g.abs().max().double_value(&[]) > 0.0 {
            nonzero += 1;
        }
    }
    assert!(
        nonzero * 10 >= vars.len() * 9,
        "only {nonzero} of {} variables have a nonzero gradient",
        vars.len()
    );
}

/// Chaining `segments()` then `pool()` equals `features()`: exactly in eval mode, and in
/// train mode (dropout) when the RNG is re-seeded identically before each.
pub fn check_segments_chain(model: &dyn Backbone) {
    let x = clip(2);
    tch::no_grad(|| {
        let eval = model.features(&x, false);
        assert!(eval.equal(&chain(model, &x, false)));
        tch::manual_seed(7);
        let train = model.features(&x, true);
        tch::manual_seed(7);
        assert!(train.equal(&chain(model, &x, true)));
        // Dropout really is active in train mode.
        assert!(!train.equal(&eval));
    });
}

/// [`check_bf16_features`] on a clip of 2 with width 32, then a backward pass in bfloat16
/// gives finite gradients.
pub fn check_bfloat16_forward(vs: &mut nn::VarStore, model: &dyn Backbone) {
    let x = clip(2);
    check_bf16_features(vs, model, &x, 32);
    // Backward in bfloat16 too.
    let f = model.features(&x.to_kind(Kind::BFloat16), true);
    f.to_kind(Kind::Float).square().sum(Kind::Float).backward();
    for (name, var) in vs.variables() {
        let g = var.grad();
        assert!(g.defined() && all_finite(&g), "{name}");
    }
}

/// Four clips of two classes: class 0 is bright in the top half, class 1 in the bottom
/// half, both with noise.
fn toy_batch() -> (Tensor, Tensor) {
    let opts = (Kind::Float, Device::Cpu);
    let ClipShape { t, h, w } = INPUT;
    let mut clips = Vec::new();
    for k in 0..4 {
        let x = Tensor::randn([3, t, h, w], opts) * 0.5;
        let top = k % 2 == 0;
        let mut half = x.narrow(2, if top { 0 } else { h / 2 }, h / 2);
        half += 1.5;
        clips.push(x);
    }
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
    (Tensor::stack(&clips, 0), labels)
}

/// Trains backbone + Linear head with AdamW on the toy batch until the training loss is
/// below 0.05; returns the number of steps.
pub fn overfit_toy_batch(vs: &nn::VarStore, model: &dyn Backbone) -> usize {
    let head = nn::linear(
        vs.root() / "head",
        model.feature_dim(),
        2,
        Default::default(),
    );
    let mut opt = nn::AdamW::default().build(vs, 2e-3).expect("optimizer");
    let (x, y) = toy_batch();
    let mut last = f64::INFINITY;
    for step in 1..=100 {
        let logits = head.forward(&model.features(&x, true));
        let loss = logits.cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        last = loss.double_value(&[]);
        if last < 0.05 {
            let logits = tch::no_grad(|| head.forward(&model.features(&x, false)));
            let acc = logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float);
            assert_eq!(acc.double_value(&[]), 1.0);
            return step;
        }
    }
    panic!("did not overfit: loss {last} after 100 steps");
}

// ---------------------------------------------------------------- multi-view model

/// The torchvision video ResNets.
pub const KINDS: [BackboneKind; 2] = [BackboneKind::R3d18, BackboneKind::R2Plus1d18];

/// A multi-view model on CPU in a fresh VarStore.
pub fn build(
    backbone: BackboneKind,
    fusion: FusionMode,
    num_classes: i64,
    num_views: i64,
) -> (nn::VarStore, MultiViewModel) {
    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig {
        backbone,
        fusion,
        num_classes,
        num_views,
        ..Default::default()
    };
    let model = MultiViewModel::new(&vs.root(), config).expect("valid config");
    (vs, model)
}

/// Serialises tests that time or seed libtorch globally within one test binary.
pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The largest absolute difference between two lists of (possibly undefined) tensors,
/// which must be defined in the same places.
pub fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.defined(), y.defined());
        if x.defined() {
            worst = worst.max((x - y).abs().max().double_value(&[]));
        }
    }
    worst
}

/// The device of the device-generic tests: the CPU, or CUDA device 0 when
/// `MVDRIVE_TEST_DEVICE=cuda` (`scripts/gpu_check.sh` runs them so on a GPU machine).
pub fn test_device() -> Device {
    match std::env::var("MVDRIVE_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            assert!(
                tch::Cuda::is_available(),
                "MVDRIVE_TEST_DEVICE=cuda, but CUDA is not available to this test binary (built without --features cuda, or no GPU)"
            );
            Device::Cuda(0)
        }
        _ => Device::Cpu,
    }
}
