//! Fine-tuning: `model.pretrained` loads weights by name (a classifier of another size is
//! re-initialised, a file of another architecture is refused naming the tensor),
//! `train.freeze_backbone_epochs` trains the classifier only, with the backbone's
//! BatchNorm statistics frozen, and `train.backbone_lr_mult=0` leaves the backbone's
//! weights alone.

use std::collections::BTreeMap;
use std::path::Path;

use mvdrive_train::model::backbones::BackboneKind;
use mvdrive_train::model::pretrained::{load_pretrained, PretrainedError};
use mvdrive_train::model::{FusionMode, Input};
use mvdrive_train::run::fit::{fit, FitArgs};
use tch::{Device, Kind, Tensor};

mod common;
mod support;
use support::build;

/// Every variable of `vs`, plus a BatchNorm counter and one tensor no model has, written
/// as a safetensors file the way an export script writes a state dict.
fn save(vs: &tch::nn::VarStore, path: &Path) {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.push(("stem.1.num_batches_tracked".into(), Tensor::from(7i64)));
    named.push((
        "extra.weight".into(),
        Tensor::zeros([3], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&named, path).unwrap();
}

fn vars(vs: &tch::nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn clip() -> Input {
    let rgb = Tensor::randn([2, 1, 3, 2, 16, 16], (Kind::Float, Device::Cpu));
    Input {
        rgb: Some(rgb),
        kpt: None,
        present: None,
    }
}

#[test]
fn weights_load_by_name_and_a_classifier_of_another_size_stays_fresh() {
    let _g = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r3d.safetensors");
    tch::manual_seed(1);
    let (src_vs, src) = build(BackboneKind::R3d18, FusionMode::LogitMean, 4, 1);
    save(&src_vs, &file);

    // Same classes: the model computes exactly what the source does.
    tch::manual_seed(2);
    let (mut vs, model) = build(BackboneKind::R3d18, FusionMode::LogitMean, 4, 1);
    let report = load_pretrained(&mut vs, &file, None).unwrap();
    assert!(report.head_reinitialised.is_empty() && report.not_loaded.is_empty());
    assert_eq!(report.ignored, vec!["extra.weight".to_string()]);
    let x = clip();
    let diff = (model.forward_t(&x, false) - src.forward_t(&x, false))
        .abs()
        .max();
    assert_eq!(diff.double_value(&[]), 0.0);

    // Another class count: the backbone loads, the classifier keeps its initialisation.
    tch::manual_seed(3);
    let (mut vs, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 7, 1);
    let before = vars(&vs);
    let report = load_pretrained(&mut vs, &file, None).unwrap();
    let heads: Vec<&str> = report
        .head_reinitialised
        .iter()
        .map(|h| h.0.as_str())
        .collect();
    assert_eq!(heads, vec!["fc.bias", "fc.weight"]);
    assert_eq!(report.head_reinitialised[1].1, vec![4, 512]);
    assert_eq!(report.head_reinitialised[1].2, vec![7, 512]);
    let text = report.to_string();
    assert!(
        text.contains("classifier re-initialised") && text.contains("ignored (1"),
        "{text}"
    );
    let (after, want) = (vars(&vs), vars(&src_vs));
    for (name, t) in &after {
        if name.starts_with("fc.") {
            assert!(t.equal(&before[name]), "{name} changed");
        } else {
            assert!(t.equal(&want[name]), "{name} not loaded");
        }
    }
}

#[test]
fn a_file_of_another_architecture_is_refused_naming_the_tensor() {
    let _g = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r2plus1d.safetensors");
    let (src_vs, _) = build(BackboneKind::R2Plus1d18, FusionMode::LogitMean, 4, 1);
    save(&src_vs, &file);
    let (mut vs, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 4, 1);
    let before = vars(&vs);
    let e = load_pretrained(&mut vs, &file, None).unwrap_err();
    assert!(matches!(e, PretrainedError::Shape { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("tensor `") && msg.contains("in the file but"),
        "{msg}"
    );
    let after = vars(&vs);
    assert!(
        before.iter().all(|(n, t)| t.equal(&after[n])),
        "a failed load changed the model"
    );

    let (mut vs, _) = build(BackboneKind::X3d, FusionMode::LogitMean, 4, 1);
    let e = load_pretrained(&mut vs, &file, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no tensor of") && e.contains("model.backbone"),
        "{e}"
    );
    let e = load_pretrained(&mut vs, &dir.path().join("missing.safetensors"), None).unwrap_err();
    assert!(e.to_string().contains("missing.safetensors"), "{e}");
}

/// One epoch of `train fit` from `pretrained` with `extra` settings; the final weights.
fn fine_tune(
    dir: &Path,
    cache: &Path,
    pretrained: &Path,
    extra: &[&str],
) -> BTreeMap<String, Tensor> {
    let mut overrides: Vec<String> = [
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_epochs=1",
        "train.view=single",
        "train.warmup_epochs=0",
        "trainer.device=cpu",
        "model.backbone=r3d_18",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    overrides.push(format!("trainer.log_dir={}", dir.display()));
    overrides.push(format!("model.pretrained={}", pretrained.display()));
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let run = fit(
        &FitArgs {
            cache: cache.to_path_buf(),
            config: None,
            resume: None,
            nproc: None,
            overrides,
        },
        true,
    )
    .unwrap();
    Tensor::read_safetensors(run.run_dir.join("checkpoints/last.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn a_frozen_backbone_keeps_its_weights_and_statistics_and_the_classifier_learns() {
    let _g = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let cache = common::tiny_cache(dir.path());
    let file = dir.path().join("pre.safetensors");
    tch::manual_seed(11);
    // 5 classes: the tiny cache's 4 make the classifier re-initialise.
    let (src_vs, _) = build(BackboneKind::R3d18, FusionMode::LogitMean, 5, 1);
    save(&src_vs, &file);
    let want = vars(&src_vs);

    let frozen = fine_tune(
        &dir.path().join("a"),
        &cache,
        &file,
        &["train.freeze_backbone_epochs=1"],
    );
    for (name, t) in &frozen {
        if name.starts_with("fc.") {
            continue;
        }
        assert!(t.equal(&want[name]), "{name} changed while frozen");
    }

    // Learning rate 0 for the backbone: its weights stay, but it trains in training mode,
    // so its BatchNorm statistics move.
    let still = fine_tune(
        &dir.path().join("b"),
        &cache,
        &file,
        &["train.backbone_lr_mult=0"],
    );
    assert!(still["layer1.0.conv1.0.weight"].equal(&want["layer1.0.conv1.0.weight"]));
    assert!(!still["stem.1.running_mean"].equal(&want["stem.1.running_mean"]));

    // Unfrozen at the full rate, the backbone learns.
    let free = fine_tune(&dir.path().join("c"), &cache, &file, &[]);
    assert!(!free["layer1.0.conv1.0.weight"].equal(&want["layer1.0.conv1.0.weight"]));
}

#[test]
fn positional_embeddings_are_interpolated_to_another_clip_shape() {
    use mvdrive_train::model::{ClipShape, ModelConfig, MultiViewModel};
    let _g = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tf.safetensors");
    let model = |clip: ClipShape| {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let config = ModelConfig {
            backbone: BackboneKind::Transformer,
            num_classes: 4,
            clip,
            ..Default::default()
        };
        let grid = config.token_grid();
        MultiViewModel::new(&vs.root(), config).unwrap();
        (vs, grid)
    };
    // 4 frames of 32 x 32: 2 x (2 x 2) tokens. Time embedding a ramp 0, 1 per channel.
    let (src, _) = model(ClipShape::new(4, 32, 32));
    let find = |vs: &tch::nn::VarStore, end: &str| {
        vs.variables()
            .into_iter()
            .find(|(n, _)| n.ends_with(end))
            .unwrap()
    };
    let (time_name, time) = find(&src, "pos_time");
    tch::no_grad(|| {
        let ramp = Tensor::from_slice(&[0f32, 1.0])
            .view([2, 1])
            .expand_as(&time);
        time.shallow_clone().copy_(&ramp);
    });
    save(&src, &file);
    // 8 frames of 64 x 32: 4 x (4 x 2) tokens.
    let (mut vs, grid) = model(ClipShape::new(8, 64, 32));
    assert_eq!(grid, Some((4, 2)));
    let report = load_pretrained(&mut vs, &file, grid).unwrap();
    let names: Vec<&str> = report.interpolated.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(names.len(), 2, "{report}");
    assert!(report.to_string().contains("interpolated"));
    let (_, t) = find(&vs, "pos_time");
    assert_eq!(t.size()[0], 4);
    // Linear, half-pixel centres: 2 -> 4 samples of the ramp 0, 1 are 0, 0.25, 0.75, 1.
    let got: Vec<f64> = (0..4).map(|i| t.double_value(&[i, 0])).collect();
    for (g, w) in got.iter().zip([0.0, 0.25, 0.75, 1.0]) {
        assert!((g - w).abs() < 1e-6, "{got:?} ({time_name})");
    }
    let (_, s) = find(&vs, "pos_space");
    assert_eq!(s.size()[0], 8);
}

/// pytorchvideo's name for one of our X3D tensors: the inverse of the table in
/// docs/x3d-pytorchvideo.md, written out here independently of the loader's rename.
fn pytorchvideo_name(ours: &str) -> String {
    let fixed = [
        ("stem.conv_xy.weight", "blocks.0.conv.conv_t.weight"),
        ("stem.conv_t.weight", "blocks.0.conv.conv_xy.weight"),
        ("head.conv5.weight", "blocks.5.pool.pre_conv.weight"),
        ("head.lin5.weight", "blocks.5.pool.post_conv.weight"),
    ];
    if let Some((_, pv)) = fixed.iter().find(|(o, _)| *o == ours) {
        return pv.to_string();
    }
    if let Some(x) = ours.strip_prefix("stem.bn.") {
        return format!("blocks.0.norm.{x}");
    }
    if let Some(x) = ours.strip_prefix("head.bn5.") {
        return format!("blocks.5.pool.pre_norm.{x}");
    }
    if let Some(x) = ours.strip_prefix("fc.") {
        return format!("blocks.5.proj.{x}");
    }
    // stageS.B.rest
    let mut it = ours.splitn(3, '.');
    let (stage, block, rest) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let s = stage.strip_prefix("stage").unwrap();
    let rest = [
        ("conv_a.", "branch2.conv_a."),
        ("bn_a.", "branch2.norm_a."),
        ("conv_b.", "branch2.conv_b."),
        ("bn_b.", "branch2.norm_b.0."),
        ("se.fc1.", "branch2.norm_b.1.block.0."),
        ("se.fc2.", "branch2.norm_b.1.block.2."),
        ("conv_c.", "branch2.conv_c."),
        ("bn_c.", "branch2.norm_c."),
        ("branch1_conv.", "branch1_conv."),
        ("branch1_bn.", "branch1_norm."),
    ]
    .iter()
    .find_map(|(o, p)| rest.strip_prefix(o).map(|x| format!("{p}{x}")))
    .unwrap_or_else(|| panic!("no pytorchvideo name for {ours}"));
    format!("blocks.{s}.res_blocks.{block}.{rest}")
}

#[test]
fn an_x3d_file_with_pytorchvideos_names_loads_every_tensor() {
    let _g = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x3d_s.safetensors");
    tch::manual_seed(3);
    let (src_vs, src) = build(BackboneKind::X3d, FusionMode::LogitMean, 4, 1);
    let names: Vec<String> = src_vs.variables().into_keys().collect();
    // Like pytorchvideo: stage 1's stride-2 shortcut keeps the width, so it has no norm.
    assert!(!names.iter().any(|n| n.starts_with("stage1.0.branch1_bn")));
    assert!(names.iter().any(|n| n.starts_with("stage2.0.branch1_bn")));
    let mut named: Vec<(String, Tensor)> = src_vs
        .variables()
        .into_iter()
        .map(|(n, t)| (pytorchvideo_name(&n), t))
        .collect();
    named.push((
        "blocks.0.norm.num_batches_tracked".into(),
        Tensor::from(7i64),
    ));
    Tensor::write_safetensors(&named, &file).unwrap();

    tch::manual_seed(4);
    let (mut vs, model) = build(BackboneKind::X3d, FusionMode::LogitMean, 4, 1);
    let report = load_pretrained(&mut vs, &file, None).unwrap();
    assert!(
        report.pytorchvideo && report.not_loaded.is_empty(),
        "{report}"
    );
    assert_eq!(report.loaded.len(), names.len());
    assert!(report.to_string().contains("pytorchvideo"));
    let (a, b) = (vars(&src_vs), vars(&vs));
    assert!(a.iter().all(|(n, t)| t.equal(&b[n])));
    let x = clip();
    let (ya, yb) = tch::no_grad(|| (src.forward_t(&x, false), model.forward_t(&x, false)));
    assert!(ya.equal(&yb));
}
