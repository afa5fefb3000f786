//! ST-GCN backbone on CPU with small inputs: the adjacency partitions, shapes, gradients,
//! the keypoint validity mask, config errors, the width rule, segment chaining, bf16, and
//! overfitting a tiny batch.

mod support;

use mvdrive_schemas::layout;
use mvdrive_train::model::backbones::stgcn::{spatial_adjacency, Stgcn, StgcnConfig};
use mvdrive_train::model::backbones::Backbone;
use support::{
    all_finite, assert_finite_grads, assert_overfits, check_segments_then_bf16, max_abs_diff,
    trainable_param_count,
};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// A layout's bones as `usize` pairs, as `Stgcn::new` takes them.
fn layout_edges(l: &layout::Layout) -> Vec<(usize, usize)> {
    l.edges
        .iter()
        .map(|&(a, b)| (a as usize, b as usize))
        .collect()
}

fn coco_edges() -> Vec<(usize, usize)> {
    layout_edges(&layout::COCO17)
}

/// An ST-GCN on COCO-17 keypoints with 3 coordinate channels.
fn coco_net(vs: &nn::VarStore, cfg: &StgcnConfig) -> Stgcn {
    Stgcn::new(&vs.root(), cfg, 17, &coco_edges(), 3).unwrap()
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
        let edges = layout_edges(&l);
        let k = l.len() as i64;
        assert_eq!(spatial_adjacency(k, &edges).unwrap().size(), [3, k, k]);
    }
}

#[test]
fn stgcn_shapes_and_grads() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = StgcnConfig::default();
    let net = coco_net(&vs, &cfg);
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
    let net = coco_net(&vs, &cfg);
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
    let net = coco_net(&vs, &StgcnConfig::default());
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
    let err = Stgcn::new(&vs.root(), &cfg, 17, &[(0, 1), (3, 17)], 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(3, 17)") && err.contains("17"), "{err}");
    type Break = fn(&mut StgcnConfig);
    let cases: [(Break, &str); 4] = [
        (|c| c.temporal_kernel = 8, "model.stgcn_temporal_kernel"),
        (|c| c.layers = 0, "model.stgcn_layers"),
        (|c| c.dropout = 1.0, "model.stgcn_dropout"),
        (|c| c.hidden_dim = 0, "model.stgcn_hidden_dim"),
    ];
    for (set, key) in cases {
        let mut bad = StgcnConfig::default();
        set(&mut bad);
        let err = Stgcn::new(&vs.root(), &bad, 17, &coco_edges(), 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err}");
    }
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
    let edges = layout_edges(&l);
    let k = l.len() as i64;
    let cfg = StgcnConfig {
        hidden_dim: 16,
        layers: 4,
        ..Default::default()
    };
    let net = Stgcn::new(&vs.root(), &cfg, k, &edges, 4).unwrap();
    let valid = Tensor::rand([2, 1, 9, k], (Kind::Float, Device::Cpu)).gt(0.3);
    let x = keypoints(2, 4, 9, k, &valid);
    check_segments_then_bf16(&mut vs, &net, &x, 32);
}

#[test]
fn stgcn_overfits_a_tiny_batch() {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = coco_net(&vs, &StgcnConfig::default());
    let valid = Tensor::ones([4, 1, 16, 17], (Kind::Float, Device::Cpu));
    let _ = valid.get(1).narrow(1, 0, 5).fill_(0.0);
    let _ = valid.get(2).narrow(1, 12, 4).fill_(0.0);
    let x = keypoints(4, 3, 16, 17, &valid);
    assert_overfits("stgcn", &vs, &net, &x, 60);
}
