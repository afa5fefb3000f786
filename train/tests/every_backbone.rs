//! Every backbone through the multi-view model and the trainer: shapes and gradients,
//! gradient checkpointing (dropout masks included), a bf16 step on CPU, accumulation
//! equivalence, and a save/load round trip.

use mvdrive_train::model::backbones::BackboneKind;
use mvdrive_train::model::{
    ClipShape, FusionMode, Input, InputType, KeypointSpec, ModalityFusion, ModelConfig,
    MultiViewModel,
};
use mvdrive_train::optim::precision::Precision;
use mvdrive_train::run::trainer::Trainer;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

mod support;
use support::{lock, max_diff};

const B: i64 = 2;
const V: i64 = 2;
const T: i64 = 4;
const HW: i64 = 32;

/// Tests here seed torch's global generator and rely on it: one at a time.
fn coco17() -> KeypointSpec {
    KeypointSpec::from_layout(&mvdrive_schemas::layout::layout("coco17").unwrap(), 3)
}

/// Small versions of every configuration a user can pick.
fn configs() -> Vec<(&'static str, ModelConfig)> {
    let base = |backbone, input_type| {
        let mut c = ModelConfig {
            backbone,
            fusion: FusionMode::LogitMean,
            num_classes: 3,
            num_views: V,
            input_type,
            modality_fusion: ModalityFusion::Concat,
            clip: ClipShape::new(T, HW, HW),
            keypoints: Some(coco17()),
            ..Default::default()
        };
        c.settings.transformer.dim = 32;
        c.settings.transformer.heads = 2;
        c.settings.transformer.ff_dim = 64;
        c.settings.transformer.layers = 2;
        c.settings.transformer.dropout = 0.2;
        c.settings.mamba.dim = 32;
        c.settings.mamba.layers = 2;
        c.settings.mamba.dropout = 0.2;
        c.settings.stgcn.hidden_dim = 16;
        c.settings.stgcn.layers = 2;
        c.settings.stgcn.temporal_kernel = 3;
        c.settings.stgcn.dropout = 0.2;
        c
    };
    let mut mean = base(BackboneKind::Transformer, InputType::RgbKpt);
    mean.modality_fusion = ModalityFusion::Mean;
    mean.fusion = FusionMode::FeatureConcat;
    vec![
        (
            "r2plus1d_18",
            base(BackboneKind::R2Plus1d18, InputType::Rgb),
        ),
        ("r3d_18", base(BackboneKind::R3d18, InputType::Rgb)),
        ("x3d", base(BackboneKind::X3d, InputType::Rgb)),
        (
            "transformer",
            base(BackboneKind::Transformer, InputType::Rgb),
        ),
        ("mamba", base(BackboneKind::Mamba, InputType::Rgb)),
        ("stgcn", base(BackboneKind::Stgcn, InputType::Kpt)),
        (
            "r3d_18+stgcn concat",
            base(BackboneKind::R3d18, InputType::RgbKpt),
        ),
        ("transformer+stgcn mean", mean),
    ]
}

fn input(c: &ModelConfig) -> (Input, Tensor) {
    tch::manual_seed(99);
    let f = (Kind::Float, Device::Cpu);
    let rgb = c
        .input_type
        .uses_rgb()
        .then(|| Tensor::randn([B, V, 3, T, HW, HW], f));
    let kpt = c.input_type.uses_kpt().then(|| {
        let coords = Tensor::rand([B, V, 3, T, 17], f);
        // Frame 1 of every clip has no detection.
        let mask = Tensor::ones([B, V, 1, T, 17], f);
        let _ = mask.narrow(3, 1, 1).fill_(0.0);
        Tensor::cat(&[coords * &mask, mask], 2)
    });
    let present = None;
    (Input { rgb, kpt, present }, Tensor::from_slice(&[0i64, 2]))
}

fn trainer(c: &ModelConfig, precision: Precision, checkpointing: bool) -> Trainer {
    tch::manual_seed(7);
    Trainer::new(c, Device::Cpu, precision, checkpointing, 0.0).unwrap()
}

#[test]
fn every_backbone_trains_checkpointed_with_the_same_gradients_and_dropout_masks() {
    let _guard = lock();
    for (name, c) in configs() {
        let (x, y) = input(&c);
        let mut plain = trainer(&c, Precision::Fp32, false);
        let mut ckpt = trainer(&c, Precision::Fp32, true);
        let la = plain.micro_batch(&x, &y, 0.0, 1, 11).unwrap();
        let lb = ckpt.micro_batch(&x, &y, 0.0, 1, 11).unwrap();
        assert!(
            la.is_finite() && (la - lb).abs() < 1e-6,
            "{name}: {la} vs {lb}"
        );
        let (ga, gb) = (plain.gradients(), ckpt.gradients());
        for ((n, _), g) in plain.opt.params.iter().zip(&ga) {
            assert!(g.defined(), "{name}: {n} has no gradient");
            assert_eq!(
                g.isfinite().all().int64_value(&[]),
                1,
                "{name}: {n} gradient not finite"
            );
        }
        let d = max_diff(&ga, &gb);
        assert!(d <= 1e-6, "{name}: checkpointed gradients differ by {d}");
        // The masks matter: another dropout seed gives other gradients.
        let dropout = !matches!(
            c.backbone,
            BackboneKind::R2Plus1d18 | BackboneKind::R3d18 | BackboneKind::X3d
        );
        if dropout {
            let mut other = trainer(&c, Precision::Fp32, true);
            other.micro_batch(&x, &y, 0.0, 1, 12).unwrap();
            let d = max_diff(&ga, &other.gradients());
            assert!(d > 1e-4, "{name}: dropout seems off ({d})");
        }
        // And the output has the right shape.
        let scores = tch::no_grad(|| plain.model.f_forward_t(&x, false)).unwrap();
        assert_eq!(scores.size(), vec![B, 3], "{name}");
    }
}

#[test]
fn every_backbone_takes_a_bf16_step_on_cpu_and_round_trips_through_a_file() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    for (name, c) in configs() {
        let (x, y) = input(&c);
        let mut tr = trainer(&c, Precision::Bf16Mixed, true);
        let before: Vec<Tensor> = tr.opt.params.iter().map(|(_, p)| p.copy()).collect();
        let loss = tr.micro_batch(&x, &y, 0.0, 1, 3).unwrap();
        assert!(loss.is_finite(), "{name}: bf16 loss {loss}");
        let out = tr.step(1e-3, 1.0);
        assert!(out.applied, "{name}: bf16 step skipped (inf/NaN gradients)");
        let after: Vec<Tensor> = tr.opt.params.iter().map(|(_, p)| p.copy()).collect();
        assert!(max_diff(&before, &after) > 0.0, "{name}: nothing moved");
        // Save, load into a fresh model, same outputs.
        let file = dir
            .path()
            .join(format!("{}.safetensors", name.replace(' ', "_")));
        tr.vs.save(&file).unwrap();
        let mut vs = VarStore::new(Device::Cpu);
        tch::manual_seed(1234);
        let fresh = MultiViewModel::new(&vs.root(), c.clone()).unwrap();
        vs.load(&file).unwrap();
        let a = tch::no_grad(|| tr.model.forward_t(&x, false));
        let b = tch::no_grad(|| fresh.forward_t(&x, false));
        assert_eq!(
            (a - b).abs().max().double_value(&[]),
            0.0,
            "{name}: loaded model differs"
        );
    }
}

#[test]
fn accumulating_four_batches_of_one_equals_one_batch_of_four_without_batch_statistics() {
    let _guard = lock();
    // The token backbones have no BatchNorm; with dropout off, training mode is exact.
    for (name, mut c) in configs()
        .into_iter()
        .filter(|(n, _)| *n == "transformer" || *n == "mamba")
    {
        c.settings.transformer.dropout = 0.0;
        c.settings.mamba.dropout = 0.0;
        let (x1, _) = input(&c);
        let x = Input {
            rgb: x1.rgb.map(|t| Tensor::cat(&[&t, &(&t * 0.5)], 0)),
            kpt: None,
            present: None,
        };
        let y = Tensor::from_slice(&[0i64, 2, 1, 1]);
        let mut one = trainer(&c, Precision::Fp32, false);
        let mut four = trainer(&c, Precision::Fp32, true);
        // Loss scaling (composes with accumulation) and checkpointing (composes too).
        four.scaler = mvdrive_train::optim::loss_scale::GradScaler::new(true);
        four.scaler.scale = 1024.0;
        one.micro_batch(&x, &y, 0.1, 1, 5).unwrap();
        for i in 0..4 {
            four.micro_batch(&x.narrow(i, 1), &y.narrow(0, i, 1), 0.1, 4, 5)
                .unwrap();
        }
        let d = max_diff(&one.gradients(), &four.gradients());
        assert!(d < 1e-5, "{name}: 4x1 vs 1x4 gradients differ by {d}");
        // Clipping happens after unscaling: the same norm, the same step. (AdamW's first
        // step moves every weight by about lr * sign(grad), so a gradient that is ~0 may
        // flip sign between the two sums; hence a tolerance well below lr = 1e-3.)
        let (a, b) = (one.step(1e-3, 0.05), four.step(1e-3, 0.05));
        assert!(a.applied && b.applied);
        let rel = (a.grad_norm - b.grad_norm).abs() / a.grad_norm;
        assert!(
            rel < 1e-5,
            "{name}: gradient norms {} vs {}",
            a.grad_norm,
            b.grad_norm
        );
        let pa: Vec<Tensor> = one.opt.params.iter().map(|(_, p)| p.copy()).collect();
        let pb: Vec<Tensor> = four.opt.params.iter().map(|(_, p)| p.copy()).collect();
        let d = max_diff(&pa, &pb);
        assert!(d < 1e-4, "{name}: parameters after the step differ by {d}");
    }
}

#[test]
fn mismatched_inputs_and_configs_are_clear_errors() {
    let _guard = lock();
    let all = configs();
    let stgcn = &all.iter().find(|(n, _)| *n == "stgcn").unwrap().1;
    let (rgb_only, _) = input(&all[0].1);
    let vs = VarStore::new(Device::Cpu);
    let m = MultiViewModel::new(&vs.root(), stgcn.clone()).unwrap();
    let e = m.check_input(&rgb_only).unwrap_err().to_string();
    assert!(e.contains("no kpt") && e.contains("data.load_kpt"), "{e}");
    let mut c = stgcn.clone();
    c.input_type = InputType::Rgb;
    let e = MultiViewModel::new(&(&vs.root() / "a"), c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.input_type=kpt"), "{e}");
    let mut c = all[0].1.clone();
    c.input_type = InputType::Kpt;
    let e = MultiViewModel::new(&(&vs.root() / "b"), c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.backbone=stgcn"), "{e}");
}
