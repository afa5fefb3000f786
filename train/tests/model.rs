//! Backbones (torchvision video ResNets) and multi-view fusion, on CPU with small inputs.

use std::collections::HashMap;
use std::path::Path;

use mvdrive_train::model::backbones::{self, BackboneError, BackboneKind, VideoResNet};
use mvdrive_train::model::{self, FusionMode, Input, ModelConfig, ModelError, MultiViewModel};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const KINDS: [BackboneKind; 2] = [BackboneKind::R3d18, BackboneKind::R2Plus1d18];
const FUSIONS: [FusionMode; 4] = [
    FusionMode::LogitMean,
    FusionMode::ProbMean,
    FusionMode::FeatureMean,
    FusionMode::FeatureConcat,
];

fn build(
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

fn shapes(vs: &nn::VarStore) -> HashMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect()
}

fn trainable_param_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn parses_config_values() {
    assert_eq!(
        "r3d_18".parse::<BackboneKind>().unwrap(),
        BackboneKind::R3d18
    );
    assert_eq!(
        "r2plus1d_18".parse::<BackboneKind>().unwrap(),
        BackboneKind::R2Plus1d18
    );
    assert_eq!(
        "3dcnn".parse::<BackboneKind>().unwrap(),
        BackboneKind::R2Plus1d18
    );
    let err = "resnet50".parse::<BackboneKind>().unwrap_err().to_string();
    assert!(
        err.contains("model.backbone") && err.contains("resnet50"),
        "{err}"
    );
    for mode in FUSIONS {
        assert_eq!(mode.name().parse::<FusionMode>().unwrap(), mode);
    }
    let err = "logits_mean".parse::<FusionMode>().unwrap_err().to_string();
    assert!(
        err.contains("model.fusion_mode") && err.contains("`logit_mean`"),
        "{err}"
    );
    let vs = nn::VarStore::new(Device::Cpu);
    let bad = ModelConfig {
        backbone: BackboneKind::R3d18,
        fusion: FusionMode::LogitMean,
        num_classes: 0,
        num_views: 1,
        ..Default::default()
    };
    let err = MultiViewModel::new(&vs.root(), bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.model_class_num"), "{err}");
}

#[test]
fn output_shapes_for_both_backbones_and_all_fusions() {
    tch::manual_seed(0);
    let (b, v, t, hw, classes) = (2, 3, 4, 32, 5);
    let x = Tensor::randn([b, v, 3, t, hw, hw], (Kind::Float, Device::Cpu));
    for kind in KINDS {
        for fusion in FUSIONS {
            let (_vs, model) = build(kind, fusion, classes, v);
            for train in [true, false] {
                let y = tch::no_grad(|| model.f_forward_t(&Input::from(&x), train))
                    .expect("valid input");
                assert_eq!(y.size(), [b, classes], "{kind} {fusion} train={train}");
                assert!(
                    bool::try_from(y.isfinite().all()).unwrap(),
                    "{kind} {fusion}"
                );
            }
            if fusion == FusionMode::ProbMean {
                // prob_mean returns normalised log-probabilities.
                let y = tch::no_grad(|| model.forward_t(&Input::from(&x), false));
                let sums = y.exp().sum_dim_intlist(1, false, None);
                assert!(max_abs_diff(&sums, &Tensor::ones([b], (Kind::Float, Device::Cpu))) < 1e-5);
                let ce = MultiViewModel::loss(&y, &Tensor::from_slice(&[0i64, 3]));
                let nll = y.nll_loss(&Tensor::from_slice(&[0i64, 3]));
                assert!(max_abs_diff(&ce, &nll) < 1e-6);
            }
        }
    }
}

#[test]
fn fusion_modes_compute_what_they_say() {
    tch::manual_seed(1);
    let (b, v, classes) = (2, 3, 4);
    let x = Tensor::randn([b, v, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
    for fusion in FUSIONS {
        let (_vs, model) = build(BackboneKind::R2Plus1d18, fusion, classes, v);
        let _guard = tch::no_grad_guard();
        let feats = model
            .backbone()
            .features(&x.flatten(0, 1), false)
            .view([b, v, 512]);
        let fc = model.fc();
        let expected = match fusion {
            FusionMode::LogitMean => feats
                .linear(&fc.ws, fc.bs.as_ref())
                .mean_dim(1, false, None),
            FusionMode::ProbMean => feats
                .linear(&fc.ws, fc.bs.as_ref())
                .softmax(-1, None)
                .mean_dim(1, false, None)
                .log(),
            FusionMode::FeatureMean => feats
                .mean_dim(1, false, None)
                .linear(&fc.ws, fc.bs.as_ref()),
            FusionMode::FeatureConcat => {
                let cat = Tensor::cat(
                    &[feats.select(1, 0), feats.select(1, 1), feats.select(1, 2)],
                    1,
                );
                cat.linear(&fc.ws, fc.bs.as_ref())
            }
        };
        let got = model.forward_t(&Input::from(&x), false);
        assert!(max_abs_diff(&got, &expected) < 1e-5, "{fusion}");
    }
}

#[test]
fn blocks_are_separately_callable_segments() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = VideoResNet::new(&vs.root(), BackboneKind::R3d18);
    let x = Tensor::randn([2, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
    let _guard = tch::no_grad_guard();
    let names: Vec<&str> = net.blocks().iter().map(|s| s.name).collect();
    assert_eq!(names, ["stem", "layer1", "layer2", "layer3", "layer4"]);
    let mut h = x.shallow_clone();
    let mut sizes = vec![];
    for seg in net.blocks() {
        h = seg.forward_t(&h, false);
        sizes.push(h.size());
    }
    assert_eq!(
        sizes,
        [
            vec![2, 64, 4, 16, 16],
            vec![2, 64, 4, 16, 16],
            vec![2, 128, 2, 8, 8],
            vec![2, 256, 1, 4, 4],
            vec![2, 512, 1, 2, 2],
        ]
    );
    let pooled = VideoResNet::pool(&h);
    assert_eq!(pooled.size(), [2, 512]);
    assert_eq!(max_abs_diff(&pooled, &net.features(&x, false)), 0.0);
    assert_eq!(net.layers()[1].blocks().len(), 2);
}

#[test]
fn backward_gives_finite_nonzero_grads_on_every_parameter() {
    tch::manual_seed(3);
    let (b, v) = (2, 3);
    let x = Tensor::randn([b, v, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[1i64, 2]);
    for (kind, fusion) in [
        (BackboneKind::R3d18, FusionMode::FeatureConcat),
        (BackboneKind::R2Plus1d18, FusionMode::ProbMean),
    ] {
        let (vs, model) = build(kind, fusion, 3, v);
        let loss = MultiViewModel::loss(&model.forward_t(&Input::from(&x), true), &y);
        loss.backward();
        let mut checked = 0;
        for (name, var) in vs.variables() {
            if !var.requires_grad() {
                assert!(
                    name.ends_with("running_mean") || name.ends_with("running_var"),
                    "{name}"
                );
                continue;
            }
            let g = var.grad();
            assert!(g.defined(), "{kind}: no grad for {name}");
            assert!(
                bool::try_from(g.isfinite().all()).unwrap(),
                "{kind}: non-finite grad for {name}"
            );
            assert!(
                g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "{kind}: zero grad for {name}"
            );
            checked += 1;
        }
        assert_eq!(checked, vs.trainable_variables().len(), "{kind}");
    }
}

#[test]
fn variable_names_and_shapes_are_torchvision_s() {
    let expect = |kind: BackboneKind, n_vars: usize, keys: &[(&str, &[i64])]| {
        let (vs, _model) = build(kind, FusionMode::LogitMean, 400, 1);
        let got = shapes(&vs);
        for (key, shape) in keys {
            match got.get(*key) {
                Some(s) => assert_eq!(s.as_slice(), *shape, "{kind}: shape of {key}"),
                None => panic!("{kind}: no variable {key}"),
            }
        }
        // torchvision's state_dict has this many tensors once num_batches_tracked is dropped.
        assert_eq!(got.len(), n_vars, "{kind}: number of variables");
        assert!(!got.keys().any(|k| k.contains("num_batches_tracked")));
    };
    let mid = backbones::r3d::midplanes;
    assert_eq!(mid(64, 64), 144);
    assert_eq!(mid(64, 128), 230);
    assert_eq!(mid(128, 128), 288);
    assert_eq!(mid(512, 512), 1152);
    expect(
        BackboneKind::R2Plus1d18,
        187,
        &[
            ("stem.0.weight", &[45, 3, 1, 7, 7]),
            ("stem.1.weight", &[45]),
            ("stem.1.bias", &[45]),
            ("stem.1.running_mean", &[45]),
            ("stem.1.running_var", &[45]),
            ("stem.3.weight", &[64, 45, 3, 1, 1]),
            ("stem.4.running_var", &[64]),
            ("layer1.0.conv1.0.0.weight", &[144, 64, 1, 3, 3]),
            ("layer1.0.conv1.0.1.running_mean", &[144]),
            ("layer1.0.conv1.0.3.weight", &[64, 144, 3, 1, 1]),
            ("layer1.0.conv1.1.weight", &[64]),
            ("layer1.0.conv2.0.0.weight", &[144, 64, 1, 3, 3]),
            ("layer1.0.conv2.1.bias", &[64]),
            ("layer2.0.conv1.0.0.weight", &[mid(64, 128), 64, 1, 3, 3]),
            ("layer2.0.conv1.0.3.weight", &[128, 230, 3, 1, 1]),
            ("layer2.0.conv2.0.0.weight", &[230, 128, 1, 3, 3]),
            ("layer2.0.downsample.0.weight", &[128, 64, 1, 1, 1]),
            ("layer2.0.downsample.1.running_mean", &[128]),
            ("layer2.1.conv1.0.0.weight", &[288, 128, 1, 3, 3]),
            ("layer4.1.conv2.0.3.weight", &[512, 1152, 3, 1, 1]),
            ("layer4.1.conv2.1.weight", &[512]),
            ("fc.weight", &[400, 512]),
            ("fc.bias", &[400]),
        ],
    );
    expect(
        BackboneKind::R3d18,
        102,
        &[
            ("stem.0.weight", &[64, 3, 3, 7, 7]),
            ("stem.1.running_mean", &[64]),
            ("layer1.0.conv1.0.weight", &[64, 64, 3, 3, 3]),
            ("layer1.0.conv1.1.running_var", &[64]),
            ("layer1.1.conv2.0.weight", &[64, 64, 3, 3, 3]),
            ("layer2.0.conv1.0.weight", &[128, 64, 3, 3, 3]),
            ("layer2.0.downsample.0.weight", &[128, 64, 1, 1, 1]),
            ("layer2.0.downsample.1.weight", &[128]),
            ("layer4.1.conv2.1.bias", &[512]),
            ("fc.weight", &[400, 512]),
            ("fc.bias", &[400]),
        ],
    );
    // No downsample where torchvision has none (layer1, second blocks).
    let (vs, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 400, 1);
    let names = shapes(&vs);
    assert!(!names
        .keys()
        .any(|k| k.starts_with("layer1.0.downsample") || k.contains(".1.downsample")));
}

#[test]
fn parameter_counts_match_torchvision() {
    // torchvision R3D_18_Weights / R2Plus1D_18_Weights meta["num_params"].
    let (vs, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 400, 1);
    assert_eq!(trainable_param_count(&vs), 33_371_472);
    let (vs, _) = build(BackboneKind::R2Plus1d18, FusionMode::LogitMean, 400, 1);
    assert_eq!(trainable_param_count(&vs), 31_505_325);
    // feature_concat widens fc to 512 * V.
    let (vs, _) = build(BackboneKind::R2Plus1d18, FusionMode::FeatureConcat, 400, 3);
    assert_eq!(trainable_param_count(&vs), 31_505_325 + 2 * 512 * 400);
}

#[test]
fn summary_lists_blocks_and_totals() {
    let (vs, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 400, 1);
    let s = model::summary(&vs);
    eprintln!("{s}");
    let rows: Vec<&str> = s
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .filter(|n| *n != "Name")
        .collect();
    assert_eq!(
        rows,
        ["stem", "layer1", "layer2", "layer3", "layer4", "fc"],
        "{s}"
    );
    assert!(s.contains("33.4 M    Trainable params (33371472)"), "{s}");
    assert!(s.contains("Non-trainable params (0)"), "{s}");
    assert!(s.contains("Total params (33371472)"), "{s}");
    assert!(
        s.contains("133.486   Total estimated model params size (MB)"),
        "{s}"
    );
    // fc: 512 * 400 + 400 = 205,200 parameters = 0.821 MB.
    let fc = s.lines().find(|l| l.contains("| fc ")).expect("fc row");
    assert!(fc.contains("205 K") && fc.contains("0.821"), "{fc}");
}

#[test]
fn safetensors_round_trip_gives_identical_logits() {
    tch::manual_seed(4);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    let x = Tensor::randn([2, 2, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
    for kind in KINDS {
        let (vs, model) = build(kind, FusionMode::FeatureMean, 6, 2);
        // Move the BN running stats away from their init so loading them is tested too.
        let _ = tch::no_grad(|| model.forward_t(&Input::from(&x), true));
        let before = tch::no_grad(|| model.forward_t(&Input::from(&x), false));
        vs.save(&file).unwrap();

        let (mut vs2, model2) = build(kind, FusionMode::FeatureMean, 6, 2);
        let fresh = tch::no_grad(|| model2.forward_t(&Input::from(&x), false));
        assert!(max_abs_diff(&before, &fresh) > 0.0);
        vs2.load(&file).unwrap();
        let after = tch::no_grad(|| model2.forward_t(&Input::from(&x), false));
        assert_eq!(max_abs_diff(&before, &after), 0.0, "{kind}");

        // The strict loader gives the same result.
        let (mut vs3, model3) = build(kind, FusionMode::FeatureMean, 6, 2);
        let report = backbones::load_weights(&mut vs3, &file, &[]).unwrap();
        assert_eq!(report.loaded.len(), vs3.len());
        assert!(report.skipped.is_empty() && report.unused.is_empty());
        let after3 = tch::no_grad(|| model3.forward_t(&Input::from(&x), false));
        assert_eq!(max_abs_diff(&before, &after3), 0.0, "{kind}");
    }
}

#[test]
fn load_weights_skips_head_ignores_counters_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tv.safetensors");
    // A "torchvision" file: 400-class head plus a num_batches_tracked counter.
    let (vs400, _) = build(BackboneKind::R2Plus1d18, FusionMode::LogitMean, 400, 1);
    let mut named: Vec<(String, Tensor)> = vs400.variables().into_iter().collect();
    named.push(("stem.1.num_batches_tracked".into(), Tensor::from(7i64)));
    named.push((
        "extra.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&named, &file).unwrap();

    // Fine-tuning: 5 classes, keep a fresh head.
    let (mut vs5, _) = build(BackboneKind::R2Plus1d18, FusionMode::LogitMean, 5, 1);
    let report = backbones::load_weights(&mut vs5, &file, &["fc"]).unwrap();
    assert_eq!(report.skipped, ["fc.bias", "fc.weight"]);
    assert_eq!(report.loaded.len(), 185);
    assert_eq!(report.ignored_counters, 1);
    assert_eq!(report.unused, ["extra.weight"]);
    let a = vs400.variables()["layer3.1.conv2.0.3.weight"].shallow_clone();
    let b = vs5.variables()["layer3.1.conv2.0.3.weight"].shallow_clone();
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    // Without skipping fc, the error names the key, both shapes and the file.
    let (mut vs5, _) = build(BackboneKind::R2Plus1d18, FusionMode::LogitMean, 5, 1);
    let err = backbones::load_weights(&mut vs5, &file, &[]).unwrap_err();
    assert!(matches!(err, BackboneError::ShapeMismatch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("fc.") && msg.contains("[400") && msg.contains("tv.safetensors"),
        "{msg}"
    );

    // Wrong backbone: a missing key is named.
    let (mut vs_r3d, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 400, 1);
    let msg = backbones::load_weights(&mut vs_r3d, &file, &[])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("has no tensor `layer1.0.conv1.0.weight`") || msg.contains("has no tensor"),
        "{msg}"
    );

    // A missing file is named.
    let msg = backbones::load_weights(&mut vs_r3d, &dir.path().join("nope.safetensors"), &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.safetensors"), "{msg}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let (_vs, model) = build(BackboneKind::R3d18, FusionMode::FeatureConcat, 3, 2);
    let f = (Kind::Float, Device::Cpu);
    let cases = [
        (Tensor::zeros([2, 3, 4, 32, 32], f), "6"),
        (Tensor::zeros([1, 2, 1, 4, 32, 32], f), "channels"),
        (
            Tensor::zeros([1, 2, 3, 4, 32, 32], (Kind::Uint8, Device::Cpu)),
            "float",
        ),
        (
            Tensor::zeros([1, 3, 3, 4, 32, 32], f),
            "feature_concat was built for 2 views",
        ),
    ];
    for (x, needle) in cases {
        let msg = model
            .f_forward_t(&Input::from(&x), false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(needle), "{msg}");
    }
    assert!(matches!(
        model.check_input(&Input::from(&Tensor::zeros([1, 2, 3, 4, 32, 32], f))),
        Ok(())
    ));
    let _unused: Option<ModelError> = None;
}

#[test]
fn normalize_kinetics_uses_torchvision_constants() {
    let x = Tensor::ones([1, 3, 2, 2, 2], (Kind::Float, Device::Cpu)) * 0.5;
    let y = backbones::normalize_kinetics(&x);
    for c in 0..3 {
        let want = (0.5 - backbones::KINETICS_MEAN[c]) / backbones::KINETICS_STD[c];
        let got = y.double_value(&[0, c as i64, 1, 1, 1]);
        assert!((got - want).abs() < 1e-5);
    }
}

#[test]
fn overfits_a_tiny_batch() {
    tch::manual_seed(5);
    let (vs, model) = build(BackboneKind::R3d18, FusionMode::FeatureMean, 4, 1);
    let x = Tensor::randn([4, 1, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let mut opt = nn::AdamW::default().build(&vs, 1e-3).unwrap();
    let mut reached = None;
    for step in 0..60 {
        let scores = model.forward_t(&Input::from(&x), true);
        let loss = MultiViewModel::loss(&scores, &y);
        let acc = scores.accuracy_for_logits(&y).double_value(&[]);
        let loss_value = loss.double_value(&[]);
        // Memorised, not merely ranked right: all correct and a small loss.
        if acc == 1.0 && loss_value < 0.05 {
            eprintln!("100% train accuracy, loss {loss_value:.4} after {step} steps");
            reached = Some(step);
            break;
        }
        opt.backward_step(&loss);
    }
    assert!(
        reached.is_some(),
        "no 100% train accuracy with loss < 0.05 within 60 steps"
    );
}

/// Compares with torchvision's own logits. Needs files from
/// `scripts/export_torchvision.py --arch A --out $MVDRIVE_TORCHVISION_EXPORT/A` for A in
/// r3d_18, r2plus1d_18 (a Python with torch + torchvision); skipped when the variable is unset.
#[test]
fn matches_torchvision_logits_when_exports_are_given() {
    let Some(root) = std::env::var_os("MVDRIVE_TORCHVISION_EXPORT") else {
        eprintln!("skipped: set MVDRIVE_TORCHVISION_EXPORT to compare with torchvision");
        return;
    };
    for kind in KINDS {
        let dir = Path::new(&root).join(kind.name());
        let read = |name: &str, key: &str| {
            let file = dir.join(name);
            Tensor::read_safetensors(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .into_iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{}: no {key}", file.display()))
                .1
        };
        let input = read("input.safetensors", "input");
        let want_logits = read("logits.safetensors", "logits");
        let want_features = read("logits.safetensors", "features");
        let classes = want_logits.size()[1];
        let (mut vs, model) = build(kind, FusionMode::LogitMean, classes, 1);
        let weights = dir.join(format!("{}.safetensors", kind.name()));
        // Same set of names as torchvision's state_dict (minus num_batches_tracked).
        let report = backbones::load_weights(&mut vs, &weights, &[]).unwrap();
        assert!(
            report.unused.is_empty(),
            "{kind}: unused {:?}",
            report.unused
        );
        assert_eq!(report.ignored_counters, 0);
        let _guard = tch::no_grad_guard();
        let features = model.backbone().features(&input, false);
        let logits = model.forward_t(&Input::from(&input.unsqueeze(1)), false);
        let scale = want_logits.abs().max().double_value(&[]).max(1e-3);
        let d_logits = max_abs_diff(&logits, &want_logits);
        let d_feat = max_abs_diff(&features, &want_features);
        eprintln!(
            "{kind}: max |logits diff| {d_logits:e} (max |logit| {scale:e}), features {d_feat:e}"
        );
        assert!(
            d_logits <= 1e-4 * scale + 1e-6,
            "{kind}: logits differ by {d_logits}"
        );
        assert!(d_feat <= 1e-4, "{kind}: features differ by {d_feat}");
    }
}
