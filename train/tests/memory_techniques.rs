//! Mixed precision, gradient checkpointing and the loss scaler, through the same
//! `Trainer` that `train fit` uses. They run on the CPU, or on CUDA device 0 with
//! `MVDRIVE_TEST_DEVICE=cuda` (what `scripts/gpu_check.sh` does on a GPU machine).

use mvdrive_train::model::backbones::BackboneKind;
use mvdrive_train::model::{ClipShape, FusionMode, Input, ModelConfig, MultiViewModel};
use mvdrive_train::optim::precision::Precision;
use mvdrive_train::optim::recompute::CheckpointSegments;
use mvdrive_train::run::trainer::Trainer;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

mod support;
use support::{lock, max_diff, test_device as dev};

/// Tests here seed torch's global generator and rely on it: one at a time.
fn model_config(backbone: BackboneKind) -> ModelConfig {
    let mut c = ModelConfig {
        backbone,
        fusion: FusionMode::LogitMean,
        num_classes: 3,
        num_views: 2,
        ..Default::default()
    };
    // The batch's clip (4 x 32x32), and a small transformer with dropout.
    c.clip = ClipShape::new(4, 32, 32);
    c.settings.transformer.dim = 32;
    c.settings.transformer.heads = 2;
    c.settings.transformer.ff_dim = 64;
    c.settings.transformer.layers = 3;
    c.settings.transformer.dropout = 0.2;
    c
}

fn trainer(backbone: BackboneKind, precision: Precision, checkpointing: bool) -> Trainer {
    tch::manual_seed(7);
    Trainer::new(
        &model_config(backbone),
        dev(),
        precision,
        checkpointing,
        0.0,
    )
    .unwrap()
}

fn batch() -> (Input, Tensor) {
    tch::manual_seed(99);
    let x = Tensor::randn([2, 2, 3, 4, 32, 32], (Kind::Float, dev()));
    (
        Input::rgb(x),
        Tensor::from_slice(&[0i64, 2]).to_device(dev()),
    )
}

fn buffers(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut b: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| !t.requires_grad())
        .collect();
    b.sort_by(|x, y| x.0.cmp(&y.0));
    b
}

/// One micro-batch of `(x, y)` through a trainer without and one with checkpointing
/// (fp32, same seed): the two trainers and their losses.
fn plain_and_checkpointed(
    kind: BackboneKind,
    x: &Input,
    y: &Tensor,
) -> (Trainer, Trainer, f64, f64) {
    let mut plain = trainer(kind, Precision::Fp32, false);
    let mut ckpt = trainer(kind, Precision::Fp32, true);
    let la = plain.micro_batch(x, y, 0.1, 1, 5).unwrap();
    let lb = ckpt.micro_batch(x, y, 0.1, 1, 5).unwrap();
    (plain, ckpt, la, lb)
}

#[test]
fn checkpointing_gives_the_same_gradients_and_updates_batchnorm_statistics_once() {
    let _guard = lock();
    let (x, y) = batch();
    for kind in [BackboneKind::R2Plus1d18, BackboneKind::R3d18] {
        let (plain, ckpt, la, lb) = plain_and_checkpointed(kind, &x, &y);
        assert!((la - lb).abs() < 1e-6, "{kind}: loss {la} vs {lb}");
        let d = max_diff(&plain.gradients(), &ckpt.gradients());
        assert!(d <= 1e-6, "{kind}: largest gradient difference {d}");
        // One training-mode forward of a third copy: the statistics after one update.
        tch::manual_seed(7);
        let vs = VarStore::new(dev());
        let once = MultiViewModel::new(&vs.root(), model_config(kind)).unwrap();
        let _ = tch::no_grad(|| once.forward_t(&x, true));
        let (b_once, b_ckpt, b_plain) = (buffers(&vs), buffers(&ckpt.vs), buffers(&plain.vs));
        assert!(!b_once.is_empty());
        let init = buffers(&trainer(kind, Precision::Fp32, false).vs);
        for (((n, a), (_, b)), ((_, c), (_, i))) in
            b_once.iter().zip(&b_ckpt).zip(b_plain.iter().zip(&init))
        {
            let moved = (a - i).abs().max().double_value(&[]);
            assert!(moved > 0.0, "{kind}: {n} was not updated at all");
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d <= 1e-6, "{kind}: {n} differs by {d}: updated twice?");
            let d = (a - c).abs().max().double_value(&[]);
            assert!(d <= 1e-6, "{kind}: {n} (no checkpointing) differs by {d}");
        }
    }
}

/// Turns ATen's convolution backward for weight-heavy segments on, and off again when
/// dropped (also when a test fails). Only under [`lock`]: the switch is process-wide.
struct NativeBackwardOn;

impl NativeBackwardOn {
    fn new() -> NativeBackwardOn {
        mvdrive_train::optim::autograd::set_native_conv_backward(true);
        NativeBackwardOn
    }
}

impl Drop for NativeBackwardOn {
    fn drop(&mut self) {
        mvdrive_train::optim::autograd::set_native_conv_backward(false);
    }
}

#[test]
fn aten_convolution_backward_for_weight_heavy_segments_keeps_the_gradients() {
    // What the `train` binary does by default: layer4 of these 32x32 clips (2x2 there) has
    // more weights than unfolded input, so its segments back-propagate on ATen's
    // kernels, with checkpointing on or off. Same gradients either way, and the same as
    // oneDNN's to float32 rounding.
    let _guard = lock();
    let (x, y) = batch();
    for kind in [BackboneKind::R2Plus1d18, BackboneKind::R3d18] {
        let mut onednn = trainer(kind, Precision::Fp32, false);
        onednn.micro_batch(&x, &y, 0.1, 1, 5).unwrap();
        let native = NativeBackwardOn::new();
        let (plain, ckpt, _, _) = plain_and_checkpointed(kind, &x, &y);
        drop(native);
        let d = max_diff(&plain.gradients(), &ckpt.gradients());
        assert!(d <= 1e-6, "{kind}: checkpointing changed a gradient by {d}");
        let (a, b) = (onednn.gradients(), plain.gradients());
        let d = max_diff(&a, &b);
        let largest = a
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.abs().max().double_value(&[]))
            .fold(0f64, f64::max);
        assert!(
            d <= 1e-4 * largest,
            "{kind}: ATen's kernels changed a gradient by {d} (largest {largest})"
        );
        // Other kernels round differently: the difference shows that they ran.
        assert!(d > 0.0, "{kind}: layer4 did not take ATen's kernels");
    }
}

#[test]
fn checkpointing_some_segments_gives_the_same_gradients_and_statistics() {
    let _guard = lock();
    let (x, y) = batch();
    // R3D-18 has 9 segments (stem + 8 blocks), BatchNorm and no dropout; the transformer
    // has dropout, whose masks must be the same in the kept and the recomputed segments.
    for kind in [BackboneKind::R3d18, BackboneKind::Transformer] {
        let mut plain = trainer(kind, Precision::Fp32, false);
        let lp = plain.micro_batch(&x, &y, 0.0, 1, 3).unwrap();
        for segments in [
            CheckpointSegments::Every(2),
            CheckpointSegments::First(3),
            CheckpointSegments::First(100),
            CheckpointSegments::Every(100),
        ] {
            let mut ckpt = trainer(kind, Precision::Fp32, true);
            ckpt.segments = segments;
            let lc = ckpt.micro_batch(&x, &y, 0.0, 1, 3).unwrap();
            assert!(
                (lp - lc).abs() < 1e-6,
                "{kind} {segments}: loss {lp} vs {lc}"
            );
            let d = max_diff(&plain.gradients(), &ckpt.gradients());
            assert!(d <= 1e-6, "{kind} {segments}: gradient difference {d}");
            let (bp, bc) = (buffers(&plain.vs), buffers(&ckpt.vs));
            for ((n, a), (_, b)) in bp.iter().zip(&bc) {
                let d = (a - b).abs().max().double_value(&[]);
                assert!(d <= 1e-6, "{kind} {segments}: {n} differs by {d}");
            }
        }
    }
    // The setting's words.
    for (text, want) in [
        ("all", CheckpointSegments::All),
        ("every:2", CheckpointSegments::Every(2)),
        ("First:3", CheckpointSegments::First(3)),
    ] {
        assert_eq!(text.parse::<CheckpointSegments>(), Ok(want));
        assert_eq!(want.to_string(), text.to_ascii_lowercase());
    }
    for bad in ["every:0", "first:", "some", "every:x"] {
        assert!(bad.parse::<CheckpointSegments>().is_err(), "{bad}");
    }
}

#[test]
fn an_inf_gradient_skips_the_step_through_the_trainer_and_the_scale_backs_off() {
    let _guard = lock();
    let (x, y) = batch();
    let mut tr = trainer(BackboneKind::R3d18, Precision::Fp32, false);
    tr.scaler = mvdrive_train::optim::loss_scale::GradScaler::new(true);
    let scale = tr.scaler.scale;
    tr.micro_batch(&x, &y, 0.0, 1, 1).unwrap();
    let before: Vec<Tensor> = tr.opt.params.iter().map(|(_, p)| p.copy()).collect();
    let _ = tr.opt.params[3].1.grad().fill_(f64::INFINITY);
    let out = tr.step(1e-3, 1.0);
    assert!(!out.applied);
    assert_eq!(out.scale, scale * 0.5);
    let after: Vec<Tensor> = tr.opt.params.iter().map(|(_, p)| p.copy()).collect();
    assert_eq!(
        max_diff(&before, &after),
        0.0,
        "a skipped step changed a parameter"
    );
    assert_eq!(tr.opt.step, 0, "AdamW's step counter moved");
    // The next clean step applies, at the lowered scale.
    tr.micro_batch(&x, &y, 0.0, 1, 2).unwrap();
    let out = tr.step(1e-3, 1.0);
    assert!(out.applied && out.grad_norm.is_finite());
    let moved: Vec<Tensor> = tr.opt.params.iter().map(|(_, p)| p.copy()).collect();
    assert!(max_diff(&after, &moved) > 0.0);
}

#[test]
fn bf16_mixed_computes_in_bfloat16_keeps_float32_masters_and_agrees_with_float32() {
    let _guard = lock();
    let (x, y) = batch();
    let mut fp32 = trainer(BackboneKind::R2Plus1d18, Precision::Fp32, false);
    let mut bf16 = trainer(BackboneKind::R2Plus1d18, Precision::Bf16Mixed, false);
    let l32 = fp32.micro_batch(&x, &y, 0.0, 1, 3).unwrap();
    let l16 = bf16.micro_batch(&x, &y, 0.0, 1, 3).unwrap();
    // At initialisation, BatchNorm over a tiny batch amplifies any rounding layer by layer
    // (the backbone's early gradients differ by tens of percent between two float32 runs
    // whose inputs differ by bf16 rounding), so the comparison is on the loss and on the
    // classifier's gradient, which sees the features directly.
    assert!((l32 - l16).abs() < 0.02 * l32.abs(), "loss {l32} vs {l16}");
    let (g32, g16) = (fp32.gradients(), bf16.gradients());
    let names: Vec<&String> = bf16.opt.params.iter().map(|(n, _)| n).collect();
    let fc = names.iter().position(|n| *n == "fc.weight").unwrap();
    let (a, b) = (g32[fc].flatten(0, -1), g16[fc].flatten(0, -1));
    assert_eq!(b.kind(), Kind::Float, "accumulated gradients are float32");
    assert!(g16.iter().all(|g| g.isfinite().all().int64_value(&[]) == 1));
    let cos = (&a * &b).sum(Kind::Double).double_value(&[])
        / (a.norm().double_value(&[]) * b.norm().double_value(&[]));
    assert!(cos > 0.95, "cosine similarity of the fc gradients {cos}");
    assert!(bf16.step(1e-3, 1.0).applied);
    // The compute copy: convolutions in bfloat16, BatchNorm (statistics included) in float32.
    let half =
        mvdrive_train::optim::precision::HalfCopy::new(bf16.model.config(), &bf16.vs).unwrap();
    let vars = half.vs.variables();
    assert_eq!(vars["stem.0.weight"].kind(), Kind::BFloat16);
    for part in ["weight", "bias", "running_mean", "running_var"] {
        assert_eq!(
            vars[&format!("stem.1.{part}")].kind(),
            Kind::Float,
            "{part}"
        );
    }
    for (name, p) in &bf16.opt.params {
        assert_eq!(p.kind(), Kind::Float, "{name} is not a float32 master");
    }
    // It learns: a tiny batch is fitted within 25 steps. It usually takes about 4, and the
    // loop stops there: each bf16 step takes seconds on a CPU without AVX-512.
    let first = bf16.micro_batch(&x, &y, 0.0, 1, 4).unwrap();
    let mut last = first;
    let mut steps = 0;
    while last >= 0.3 * first && steps < 25 {
        bf16.step(1e-3, 1.0);
        last = bf16.micro_batch(&x, &y, 0.0, 1, 5 + steps).unwrap();
        steps += 1;
    }
    assert!(
        last < 0.3 * first,
        "bf16 loss went {first} -> {last} in {steps} steps"
    );
}

#[test]
fn float16_is_refused_on_cpu_with_bf16_offered_and_trains_with_loss_scaling_on_cuda() {
    let _guard = lock();
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16Mixed);
    assert!("8".parse::<Precision>().is_err());
    let fp16 = "16-mixed".parse::<Precision>().unwrap();
    if dev() == Device::Cpu {
        let e = fp16.check_device(Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("needs CUDA") && e.contains("bf16-mixed"), "{e}");
        let e = Trainer::new(
            &model_config(BackboneKind::R3d18),
            Device::Cpu,
            Precision::Fp16Mixed,
            false,
            0.0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bf16-mixed"), "{e}");
        return;
    }
    // CUDA: the forward runs in float16 under autocast, the loss scaler is on, the step
    // applies, and a tiny batch is fitted.
    let (x, y) = batch();
    let mut tr = trainer(BackboneKind::R2Plus1d18, fp16, false);
    assert!(tr.scaler.enabled, "16-mixed without a loss scaler");
    let scores = tch::autocast(true, || tr.model.forward_t(&x, false));
    assert_eq!(
        scores.kind(),
        Kind::Half,
        "autocast did not compute in float16"
    );
    let first = tr.micro_batch(&x, &y, 0.0, 1, 1).unwrap();
    assert!(first.is_finite(), "fp16 loss {first}");
    let out = tr.step(1e-3, 1.0);
    assert!(out.applied && out.grad_norm.is_finite(), "{out:?}");
    let mut last = first;
    for i in 0..25 {
        last = tr.micro_batch(&x, &y, 0.0, 1, 2 + i).unwrap();
        tr.step(1e-3, 1.0);
    }
    assert!(last < 0.3 * first, "fp16 loss went {first} -> {last}");
}

#[test]
fn weight_heavy_convolutions_are_marked_and_back_propagate_alike_on_aten_kernels() {
    // `backbones::conv` marks a CPU convolution with more weights than unfolded input (the
    // last stage of a video ResNet); checkpointed and plain backward run such a segment's
    // backward under `NativeConvBackward` (ATen's kernels instead of oneDNN's). Both
    // kernels must give the same gradients, in float32 and bfloat16.
    use mvdrive_train::model::backbones::{conv, take_weight_heavy_mark};
    use mvdrive_train::optim::autograd::NativeConvBackward;
    use tch::nn;
    let _guard = lock();
    let vs = VarStore::new(Device::Cpu);
    let cfg = nn::ConvConfigND::<[i64; 3]> {
        stride: [1, 1, 1],
        padding: [1, 1, 1],
        dilation: [1, 1, 1],
        groups: 1,
        bias: false,
        ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
        bs_init: nn::Init::Const(0.),
        padding_mode: nn::PaddingMode::Zeros,
    };
    let wide = nn::conv(vs.root() / "wide", 64, 64, [3, 3, 3], cfg);
    let narrow = nn::conv(vs.root() / "narrow", 4, 4, [3, 3, 3], cfg);
    tch::manual_seed(3);
    // 64x64x27 weights over a 2 x 64 x 1x2x2 input: 110 592 weights, 13 824 unfolded.
    let small = Tensor::randn([2, 64, 1, 2, 2], (Kind::Float, Device::Cpu));
    // 432 weights over a 2 x 4 x 4x16x16 input.
    let large = Tensor::randn([2, 4, 4, 16, 16], (Kind::Float, Device::Cpu));
    take_weight_heavy_mark();
    let _ = conv(&large, &narrow);
    assert!(
        !take_weight_heavy_mark(),
        "activations outweigh the weights"
    );
    let _ = conv(&small, &wide);
    assert!(
        take_weight_heavy_mark(),
        "the weights outweigh the unfolded input"
    );
    assert!(!take_weight_heavy_mark(), "taking the mark clears it");

    for kind in [Kind::Float, Kind::BFloat16] {
        let grads = |native: bool| {
            let x = small.to_kind(kind).detach().set_requires_grad(true);
            let w = wide.ws.detach().to_kind(kind).set_requires_grad(true);
            let y = x.conv3d(&w, None::<Tensor>, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1);
            let g = Tensor::randn(y.size(), (Kind::Float, Device::Cpu)).to_kind(kind);
            let guard = native.then(NativeConvBackward::enter);
            (y.to_kind(Kind::Float) * g.to_kind(Kind::Float))
                .sum(Kind::Float)
                .backward();
            drop(guard);
            (w.grad().to_kind(Kind::Float), x.grad().to_kind(Kind::Float))
        };
        tch::manual_seed(4);
        let (w_dnn, x_dnn) = grads(false);
        tch::manual_seed(4);
        let (w_aten, x_aten) = grads(true);
        let tol = if kind == Kind::Float { 1e-5 } else { 2e-2 };
        for (name, a, b) in [("weight", &w_dnn, &w_aten), ("input", &x_dnn, &x_aten)] {
            let rel = (a - b).norm().double_value(&[]) / a.norm().double_value(&[]);
            assert!(
                rel < tol,
                "{kind:?} {name} gradient: relative difference {rel}"
            );
        }
        // The guard restored oneDNN: a third run agrees with the first exactly.
        tch::manual_seed(4);
        let (w_again, _) = grads(false);
        assert!(
            w_again.equal(&w_dnn),
            "{kind:?}: oneDNN restored after the guard"
        );
    }
}

#[test]
fn bf16_convolution_weight_gradients_are_right_for_short_inputs() {
    // libtorch 2.11's CPU bf16 convolution gets weight gradients wrong when an input extent
    // lies strictly between 1 and the kernel size; `backbones::conv` works around it.
    use tch::nn::{self, Module};
    let _guard = lock();
    for (t, k) in [(2i64, 3i64), (3, 5), (4, 5), (2, 5), (1, 3), (6, 3)] {
        for stride in [1i64, 2] {
            let vs = VarStore::new(dev());
            let cfg = nn::ConvConfigND::<[i64; 3]> {
                stride: [stride, 1, 1],
                padding: [k / 2, 1, 1],
                dilation: [1, 1, 1],
                groups: 1,
                bias: false,
                ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
                bs_init: nn::Init::Const(0.),
                padding_mode: nn::PaddingMode::Zeros,
            };
            let c = nn::conv(vs.root() / "c", 8, 8, [k, 3, 3], cfg);
            tch::manual_seed(1);
            let x = Tensor::randn([2, 8, t, 4, 4], (Kind::Float, dev()));
            let y = x.apply(&c);
            let g = Tensor::randn(y.size(), (Kind::Float, dev()));
            (&y * &g).sum(Kind::Float).backward();
            let g32 = c.ws.grad().copy();
            let mut vh = VarStore::new(dev());
            let ch = nn::conv(vh.root() / "c", 8, 8, [k, 3, 3], cfg);
            vh.bfloat16();
            tch::no_grad(|| ch.ws.shallow_clone().copy_(&c.ws));
            let yh = mvdrive_train::model::backbones::conv(&x.to_kind(Kind::BFloat16), &ch);
            assert_eq!(yh.size(), y.size());
            (yh * g.to_kind(Kind::BFloat16)).sum(Kind::Float).backward();
            let g16 = ch.ws.grad().to_kind(Kind::Float);
            let rel = (&g16 - &g32).norm().double_value(&[]) / g32.norm().double_value(&[]);
            assert!(
                rel < 0.02,
                "T={t} kernel {k} stride {stride}: relative error {rel}"
            );
            let _ = c.forward(&x);
        }
    }
}

#[test]
fn a_one_token_grid_accumulates_each_gradient_once() {
    // 2 frames of 16x16 are one tubelet: the positional embeddings' gradients once came
    // back as views of one buffer, so in-place accumulation counted them twice.
    let _guard = lock();
    for kind in [BackboneKind::Transformer, BackboneKind::Mamba] {
        let mut c = model_config(kind);
        c.clip = ClipShape::new(2, 16, 16);
        c.settings.transformer.dropout = 0.0;
        c.settings.mamba.dropout = 0.0;
        tch::manual_seed(3);
        let mut tr = Trainer::new(&c, dev(), Precision::Fp32, false, 0.0).unwrap();
        tch::manual_seed(4);
        let x = Input::rgb(Tensor::randn([2, 2, 3, 2, 16, 16], (Kind::Float, dev())));
        let y = Tensor::from_slice(&[0i64, 2]).to_device(dev());
        tr.micro_batch(&x, &y, 0.0, 1, 1).unwrap();
        let first = tr.gradients();
        tr.zero_grad();
        tr.micro_batch(&x, &y, 0.0, 1, 1).unwrap();
        let again = tr.gradients();
        let d = max_diff(&first, &again);
        assert!(
            d == 0.0,
            "{kind}: the same batch after zero_grad gives gradients {d} apart"
        );
    }
}
