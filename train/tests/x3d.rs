//! X3D-S/M backbone on CPU with small inputs: width rounding, shapes, gradients, parameter
//! counts, config validation, segment chaining, bf16, and overfitting a tiny batch.

mod support;

use mvdrive_train::model::backbones::x3d::{round_width, X3d, X3dConfig};
use mvdrive_train::model::backbones::Backbone;
use support::{
    all_finite, assert_finite_grads, assert_overfits, check_segments_then_bf16,
    trainable_param_count,
};
use tch::nn;
use tch::{Device, Kind, Tensor};

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
    let err = X3d::try_new(&vs.root(), &bad).unwrap_err().to_string();
    assert!(err.contains("model.x3d_depths"), "{err}");
    let bad = X3dConfig {
        width_factor: f64::NAN,
        ..Default::default()
    };
    let err = X3d::try_new(&vs.root(), &bad).unwrap_err().to_string();
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
    check_segments_then_bf16(&mut vs, &net, &x, 64);
}

#[test]
fn x3d_overfits_a_tiny_batch() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = X3d::new(&vs.root(), &X3dConfig::default());
    let x = Tensor::randn([4, 3, 8, 32, 32], (Kind::Float, Device::Cpu));
    assert_overfits("x3d", &vs, &net, &x, 20);
}
