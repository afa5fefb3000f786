//! The torchvision video ResNets (R3D-18, R(2+1)D-18) on CPU with small inputs: blocks as
//! segments, torchvision's variable names, shapes and parameter counts, load_weights,
//! normalize_kinetics, overfitting a tiny batch, and torchvision's own logits.

mod support;

use std::collections::HashMap;
use std::path::Path;

use mvdrive_train::model::backbones::{self, BackboneError, BackboneKind, VideoResNet};
use mvdrive_train::model::{FusionMode, Input, MultiViewModel};
use support::{build, max_abs_diff, trainable_param_count, KINDS};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn shapes(vs: &nn::VarStore) -> HashMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect()
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
