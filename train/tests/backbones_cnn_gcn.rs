//! X3D-S/M and ST-GCN backbones on CPU with small inputs: shapes, gradients, parameter
//! counts, the keypoint validity mask, segment chaining, bf16, and overfitting a tiny batch.

use std::time::Instant;

use mvdrive_schemas::layout;
use mvdrive_train::model::backbones::stgcn::{spatial_adjacency, Stgcn, StgcnConfig};
use mvdrive_train::model::backbones::x3d::{round_width, X3d, X3dConfig};
use mvdrive_train::model::backbones::Backbone;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn trainable_param_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) == 1
}

fn assert_finite_grads(vs: &nn::VarStore) {
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

fn chain(backbone: &dyn Backbone, x: &Tensor, train: bool) -> Tensor {
    let mut h = x.shallow_clone();
    for segment in backbone.segments() {
        h = segment.forward_t(&h, train);
    }
    backbone.pool(&h)
}

/// Trains `backbone` + a Linear head on 4 samples of 2 classes; returns (final loss,
/// train-mode accuracy, eval-mode accuracy).
fn overfit(
    vs: &nn::VarStore,
    backbone: &dyn Backbone,
    x: &Tensor,
    labels: &Tensor,
    steps: usize,
    lr: f64,
) -> (f64, f64, f64) {
    let head = nn::linear(
        vs.root() / "fc",
        backbone.feature_dim(),
        2,
        Default::default(),
    );
    let mut opt = nn::AdamW::default().build(vs, lr).expect("optimizer");
    let mut loss_value = f64::INFINITY;
    for _ in 0..steps {
        let logits = backbone.features(x, true).apply(&head);
        let loss = logits.cross_entropy_for_logits(labels);
        opt.backward_step(&loss);
        loss_value = loss.double_value(&[]);
    }
    let accuracy = |train: bool| {
        tch::no_grad(|| {
            let logits = backbone.features(x, train).apply(&head);
            logits
                .argmax(-1, false)
                .eq_tensor(labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        })
    };
    let eval_accuracy = accuracy(false);
    let train_accuracy = accuracy(true);
    (loss_value, train_accuracy, eval_accuracy)
}

// ---------------------------------------------------------------- X3D

#[test]
fn x3d_round_width_matches_pytorchvideo() {
    assert_eq!(round_width(12, 2.0), 24);
    assert_eq!(round_width(54, 0.0625), 8);
    assert_eq!(round_width(108, 0.0625), 8);
    assert_eq!(round_width(216, 0.0625), 16);
    assert_eq!(round_width(432, 0.0625), 32);
    let c = X3dConfig::default();
    assert_eq!(c.widths(), [24, 48, 96, 192]);
    assert_eq!(c.conv5_dim(), 432);
}

#[test]
fn x3d_shapes_grads_and_param_count() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = X3d::new(&vs.root(), &X3dConfig::default());
    let params = trainable_param_count(&vs);
    // With a 400-class Linear head (weights + bias), as the paper counts.
    let with_head = params + 2048 * 400 + 400;
    println!("X3D-S/M parameters: {params} without classifier, {with_head} with a 400-class head");
    assert!(
        (2_500_000..4_500_000).contains(&params),
        "X3D-S/M feature extractor should have ~3.0 M parameters, has {params}"
    );
    assert!(
        (3_700_000..3_900_000).contains(&with_head),
        "X3D-S with a 400-class head should have ~3.8 M parameters, has {with_head}"
    );
    let names: Vec<&str> = net.segments().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    );
    let variables = vs.variables();
    for name in [
        "stem.conv_xy.weight",
        "stem.conv_t.weight",
        "stage1.0.se.fc1.weight",
        "stage4.6.conv_c.weight",
        "head.lin5.weight",
    ] {
        assert!(variables.contains_key(name), "missing variable {name}");
    }
    assert!(!variables.contains_key("stage1.1.se.fc1.weight"));
    assert_eq!(variables["stem.conv_t.weight"].size(), [24, 1, 5, 1, 1]);
    assert_eq!(
        variables["stage3.0.conv_b.weight"].size(),
        [216, 1, 3, 3, 3]
    );

    let x = Tensor::randn([2, 3, 8, 64, 64], (Kind::Float, Device::Cpu));
    let features = net.features(&x, true);
    assert_eq!(features.size(), [2, 2048]);
    assert_eq!(net.feature_dim(), 2048);
    assert!(all_finite(&features));
    features.square().mean(Kind::Float).backward();
    assert_finite_grads(&vs);
}

#[test]
fn x3d_config_is_validated() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bad = X3dConfig {
        depths: [3, 0, 11, 7],
        ..Default::default()
    };
    let err = X3d::try_new(&vs.root(), &bad).unwrap_err();
    assert!(err.contains("model.x3d_depths"), "{err}");
    let bad = X3dConfig {
        width_factor: f64::NAN,
        ..Default::default()
    };
    let err = X3d::try_new(&vs.root(), &bad).unwrap_err();
    assert!(err.contains("model.x3d_width_factor"), "{err}");
}

#[test]
fn x3d_segments_equal_features_and_bf16_works() {
    tch::manual_seed(1);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cfg = X3dConfig {
        depths: [1, 2, 2, 1],
        feature_dim: 64,
        ..Default::default()
    };
    let net = X3d::new(&vs.root(), &cfg);
    let x = Tensor::randn([2, 3, 4, 32, 32], (Kind::Float, Device::Cpu));
    // A training step first, so the running statistics are not the initial ones.
    let _ = net.features(&x, true);
    let a = net.features(&x, false);
    let b = chain(&net, &x, false);
    assert_eq!(a.size(), [2, 64]);
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    vs.bfloat16();
    let xb = x.to_kind(Kind::BFloat16);
    for train in [false, true] {
        let y = net.features(&xb, train);
        assert_eq!(y.size(), [2, 64]);
        assert_eq!(y.kind(), Kind::BFloat16);
        assert!(all_finite(&y));
    }
}

#[test]
fn x3d_overfits_a_tiny_batch() {
    const STEPS: usize = 20;
    tch::manual_seed(2);
    let start = Instant::now();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = X3d::new(&vs.root(), &X3dConfig::default());
    let x = Tensor::randn([4, 3, 8, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let (loss, train_acc, eval_acc) = overfit(&vs, &net, &x, &labels, STEPS, 1e-3);
    println!(
        "x3d overfit: loss {loss:.4}, train-mode accuracy {train_acc}, eval-mode accuracy \
         {eval_acc}, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(loss < 0.05, "loss {loss}");
    assert_eq!(train_acc, 1.0);
}

// ---------------------------------------------------------------- ST-GCN

fn coco_edges() -> Vec<(usize, usize)> {
    layout::COCO17
        .edges
        .iter()
        .map(|&(a, b)| (a as usize, b as usize))
        .collect()
}

/// `[N, C + 1, T, K]` keypoints: `C` random coordinate channels plus a validity channel
/// built from a per-(n, t) frame flag and an optional per-joint pattern.
fn keypoints(n: i64, c: i64, t: i64, k: i64, valid: &Tensor) -> Tensor {
    let coords = Tensor::randn([n, c, t, k], (Kind::Float, Device::Cpu));
    Tensor::cat(&[coords, valid.to_kind(Kind::Float)], 1)
}

#[test]
fn stgcn_adjacency_partitions() {
    let a = spatial_adjacency(17, &coco_edges()).unwrap();
    assert_eq!(a.size(), [3, 17, 17]);
    // Root partition contains every joint itself; partitions are disjoint.
    assert_eq!(
        a.get(0)
            .diagonal(0, 0, 1)
            .sum(Kind::Float)
            .double_value(&[]),
        17.0
    );
    assert!(
        a.sum_dim_intlist(0, false, None::<Kind>)
            .max()
            .double_value(&[])
            <= 1.0
    );
    // Every undirected edge appears twice (i->j and j->i) across partitions.
    let off_diagonal = a.sum(Kind::Float).double_value(&[]) - 17.0;
    let edges: std::collections::BTreeSet<(usize, usize)> = coco_edges()
        .into_iter()
        .map(|(a, b)| (a.min(b), a.max(b)))
        .collect();
    assert_eq!(off_diagonal, 2.0 * edges.len() as f64);
    // Centripetal of i <-> centrifugal of j.
    assert_eq!(max_abs_diff(&a.get(1), &a.get(2).transpose(0, 1)), 0.0);
    // Every layout builds (driveact26 has an isolated joint).
    for l in layout::LAYOUTS {
        let edges: Vec<(usize, usize)> = l
            .edges
            .iter()
            .map(|&(a, b)| (a as usize, b as usize))
            .collect();
        let k = l.len() as i64;
        assert_eq!(spatial_adjacency(k, &edges).unwrap().size(), [3, k, k]);
    }
}

#[test]
fn stgcn_shapes_and_grads() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = StgcnConfig::default();
    let net = Stgcn::new(&vs.root(), &cfg, 17, &coco_edges(), 3).unwrap();
    println!(
        "ST-GCN (default, coco17, C=3) parameters: {}",
        trainable_param_count(&vs)
    );
    assert_eq!(net.feature_dim(), 128);
    let names: Vec<&str> = net.segments().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["data_bn", "unit0", "unit1", "unit2", "unit3", "unit4", "unit5"]
    );
    let strides: Vec<i64> = net.units().iter().map(|u| u.stride()).collect();
    assert_eq!(strides, [1, 1, 1, 2, 1, 1]);
    let valid = Tensor::ones([2, 1, 15, 17], (Kind::Float, Device::Cpu));
    let _ = valid.narrow(2, 10, 5).fill_(0.0);
    let x = keypoints(2, 3, 15, 17, &valid);
    // Segment outputs carry the mask as their last channel.
    let mut h = x.shallow_clone();
    for segment in net.segments() {
        h = segment.forward_t(&h, true);
    }
    assert_eq!(h.size(), [2, 129, 8, 17]);
    let features = net.pool(&h);
    assert_eq!(features.size(), [2, 128]);
    assert!(all_finite(&features));
    features.square().mean(Kind::Float).backward();
    assert_finite_grads(&vs);
}

#[test]
fn stgcn_ignores_invalid_entries() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    // No dropout, so that training mode is deterministic too (the torch RNG is global and
    // other tests run in parallel); eval mode never drops anyway.
    let cfg = StgcnConfig {
        dropout: 0.0,
        ..Default::default()
    };
    let net = Stgcn::new(&vs.root(), &cfg, 17, &coco_edges(), 3).unwrap();
    let (n, c, t, k) = (3, 3, 12, 17);
    // Frame flags (some frames missing), plus a few missing joints in valid frames.
    let valid = Tensor::ones([n, 1, t, k], (Kind::Float, Device::Cpu));
    let _ = valid.get(0).narrow(1, 0, 4).fill_(0.0);
    let _ = valid.get(1).narrow(1, 5, 3).fill_(0.0);
    let _ = valid.get(2).narrow(2, 9, 6).fill_(0.0);
    let x = keypoints(n, c, t, k, &valid);
    // Some training steps first, so BatchNorm running statistics are not trivial.
    for _ in 0..3 {
        let _ = tch::no_grad(|| net.features(&x, true));
    }
    let invalid = valid.eq(0.0).expand([n, c, t, k], false);
    let garbage = Tensor::randn([n, c, t, k], (Kind::Float, Device::Cpu)) * 1e4;
    let coords = x
        .narrow(1, 0, c)
        .where_self(&invalid.logical_not(), &garbage);
    let x_garbage = Tensor::cat(&[coords, x.narrow(1, c, 1)], 1);
    let coords_nan = x.narrow(1, 0, c).masked_fill(&invalid, f64::NAN);
    let x_nan = Tensor::cat(&[coords_nan, x.narrow(1, c, 1)], 1);
    tch::no_grad(|| {
        let a = net.features(&x, false);
        let b = net.features(&x_garbage, false);
        let d = net.features(&x_nan, false);
        assert!(all_finite(&a));
        assert!(
            max_abs_diff(&a, &b) <= 1e-6,
            "diff {}",
            max_abs_diff(&a, &b)
        );
        assert!(
            max_abs_diff(&a, &d) <= 1e-6,
            "diff {}",
            max_abs_diff(&a, &d)
        );
        // Training mode (batch statistics) too.
        let a = net.features(&x, true);
        let b = net.features(&x_garbage, true);
        assert!(
            max_abs_diff(&a, &b) <= 1e-6,
            "diff {}",
            max_abs_diff(&a, &b)
        );
    });
}

#[test]
fn stgcn_all_invalid_input_is_finite() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Stgcn::new(&vs.root(), &StgcnConfig::default(), 17, &coco_edges(), 3).unwrap();
    let valid = Tensor::zeros([2, 1, 10, 17], (Kind::Float, Device::Cpu));
    let x = keypoints(2, 3, 10, 17, &valid);
    for train in [true, false] {
        let y = net.features(&x, train);
        assert_eq!(y.size(), [2, 128]);
        assert!(all_finite(&y));
        assert_eq!(y.abs().max().double_value(&[]), 0.0);
    }
    // One sample all-invalid, one valid: the valid one still gets features.
    let valid = Tensor::cat(
        &[
            Tensor::zeros([1, 1, 10, 17], (Kind::Float, Device::Cpu)),
            Tensor::ones([1, 1, 10, 17], (Kind::Float, Device::Cpu)),
        ],
        0,
    );
    let x = keypoints(2, 3, 10, 17, &valid);
    let y = net.features(&x, true);
    y.sum(Kind::Float).backward();
    assert!(all_finite(&y));
    assert_finite_grads(&vs);
}

#[test]
fn stgcn_rejects_bad_edges_and_config() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = StgcnConfig::default();
    let err = Stgcn::new(&vs.root(), &cfg, 17, &[(0, 1), (3, 17)], 3).unwrap_err();
    assert!(err.contains("(3, 17)") && err.contains("17"), "{err}");
    let even = StgcnConfig {
        temporal_kernel: 8,
        ..Default::default()
    };
    let err = Stgcn::new(&vs.root(), &even, 17, &coco_edges(), 3).unwrap_err();
    assert!(err.contains("model.stgcn_temporal_kernel"), "{err}");
    let err = Stgcn::new(
        &vs.root(),
        &StgcnConfig {
            layers: 0,
            ..Default::default()
        },
        17,
        &coco_edges(),
        3,
    )
    .unwrap_err();
    assert!(err.contains("model.stgcn_layers"), "{err}");
    let err = Stgcn::new(
        &vs.root(),
        &StgcnConfig {
            dropout: 1.0,
            ..Default::default()
        },
        17,
        &coco_edges(),
        3,
    )
    .unwrap_err();
    assert!(err.contains("model.stgcn_dropout"), "{err}");
    let err = Stgcn::new(
        &vs.root(),
        &StgcnConfig {
            hidden_dim: 0,
            ..Default::default()
        },
        17,
        &coco_edges(),
        3,
    )
    .unwrap_err();
    assert!(err.contains("model.stgcn_hidden_dim"), "{err}");
}

#[test]
fn stgcn_width_rule() {
    let shapes = |layers| {
        StgcnConfig {
            layers,
            hidden_dim: 8,
            ..Default::default()
        }
        .unit_shapes()
    };
    assert_eq!(shapes(1), [(8, 1)]);
    assert_eq!(shapes(2), [(8, 1), (16, 2)]);
    assert_eq!(shapes(5), [(8, 1), (8, 1), (16, 2), (16, 1), (16, 1)]);
    assert_eq!(
        StgcnConfig {
            layers: 1,
            ..Default::default()
        }
        .feature_dim(),
        64
    );
}

#[test]
fn stgcn_segments_equal_features_and_bf16_works() {
    tch::manual_seed(6);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let l = layout::OPENPOSE25;
    let edges: Vec<(usize, usize)> = l
        .edges
        .iter()
        .map(|&(a, b)| (a as usize, b as usize))
        .collect();
    let k = l.len() as i64;
    let cfg = StgcnConfig {
        hidden_dim: 16,
        layers: 4,
        ..Default::default()
    };
    let net = Stgcn::new(&vs.root(), &cfg, k, &edges, 4).unwrap();
    let valid = Tensor::rand([2, 1, 9, k], (Kind::Float, Device::Cpu)).gt(0.3);
    let x = keypoints(2, 4, 9, k, &valid);
    let _ = net.features(&x, true);
    let a = net.features(&x, false);
    let b = chain(&net, &x, false);
    assert_eq!(a.size(), [2, 32]);
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    vs.bfloat16();
    let xb = x.to_kind(Kind::BFloat16);
    for train in [false, true] {
        let y = net.features(&xb, train);
        assert_eq!(y.size(), [2, 32]);
        assert_eq!(y.kind(), Kind::BFloat16);
        assert!(all_finite(&y));
    }
}

#[test]
fn stgcn_overfits_a_tiny_batch() {
    const STEPS: usize = 60;
    tch::manual_seed(7);
    let start = Instant::now();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Stgcn::new(&vs.root(), &StgcnConfig::default(), 17, &coco_edges(), 3).unwrap();
    let valid = Tensor::ones([4, 1, 16, 17], (Kind::Float, Device::Cpu));
    let _ = valid.get(1).narrow(1, 0, 5).fill_(0.0);
    let _ = valid.get(2).narrow(1, 12, 4).fill_(0.0);
    let x = keypoints(4, 3, 16, 17, &valid);
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let (loss, train_acc, eval_acc) = overfit(&vs, &net, &x, &labels, STEPS, 1e-3);
    println!(
        "stgcn overfit: loss {loss:.4}, train-mode accuracy {train_acc}, eval-mode accuracy \
         {eval_acc}, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(loss < 0.05, "loss {loss}");
    assert_eq!(train_acc, 1.0);
}
