//! The divided space-time video transformer: shapes, gradients, the default config, input
//! padding, segment chaining, bfloat16, config errors, and overfitting a tiny batch.

mod support;

use mvdrive_train::model::backbones::transformer::{
    TokenPool, TransformerConfig, VideoTransformer,
};
use mvdrive_train::model::backbones::Backbone;
use mvdrive_train::model::ClipShape;
use support::{
    check_bfloat16_forward, check_forward_backward, check_segments_chain, overfit_toy_batch, INPUT,
};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn small_transformer(pool: TokenPool, dropout: f64) -> TransformerConfig {
    TransformerConfig {
        dim: 32,
        layers: 2,
        heads: 2,
        ff_dim: 64,
        dropout,
        tubelet: [2, 16, 16],
        pool,
    }
}

#[test]
fn transformer_forward_backward() {
    for pool in [TokenPool::Cls, TokenPool::Mean] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VideoTransformer::new(&vs.root(), &small_transformer(pool, 0.1), INPUT)
            .expect("valid config");
        assert_eq!(model.grid(), [4, 2, 2]);
        assert_eq!(
            model.seq_len(),
            16 + i64::from(pool == TokenPool::Cls),
            "{pool}"
        );
        check_forward_backward(&vs, &model, 32);
    }
}

#[test]
fn transformer_default_config_builds() {
    let vs = nn::VarStore::new(Device::Cpu);
    let t = VideoTransformer::new(
        &(vs.root() / "t"),
        &TransformerConfig::default(),
        ClipShape::new(8, 224, 224),
    )
    .expect("default transformer");
    assert_eq!(t.grid(), [4, 14, 14]);
    assert_eq!(t.feature_dim(), 192);
    assert_eq!(t.segments().len(), 6);
}

/// Non-multiple input sizes are zero-padded up to whole tubelets.
#[test]
fn transformer_input_padding() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let input = ClipShape::new(7, 20, 33);
    let t = VideoTransformer::new(
        &(vs.root() / "t"),
        &small_transformer(TokenPool::Cls, 0.0),
        input,
    )
    .expect("valid");
    assert_eq!(t.grid(), [4, 2, 3]);
    let x = Tensor::randn([2, 3, 7, 20, 33], (Kind::Float, Device::Cpu));
    assert_eq!(t.features(&x, false).size(), [2, 32]);
}

#[test]
fn transformer_segments_chain_equals_features() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let t = VideoTransformer::new(
        &(vs.root() / "t"),
        &small_transformer(TokenPool::Cls, 0.2),
        INPUT,
    )
    .expect("valid");
    let names: Vec<&str> = t.segments().iter().map(|s| s.name).collect();
    assert_eq!(names, ["embed", "block0", "block1", "norm"]);
    check_segments_chain(&t);
    let t = VideoTransformer::new(
        &(vs.root() / "tm"),
        &small_transformer(TokenPool::Mean, 0.2),
        INPUT,
    )
    .expect("valid");
    check_segments_chain(&t);
}

#[test]
fn transformer_bfloat16_forward() {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let t = VideoTransformer::new(
        &(vs.root() / "t"),
        &small_transformer(TokenPool::Cls, 0.1),
        INPUT,
    )
    .expect("valid");
    check_bfloat16_forward(&mut vs, &t);
}

#[test]
fn transformer_config_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let error = |cfg: &TransformerConfig, input: ClipShape| {
        VideoTransformer::new(&vs.root(), cfg, input)
            .unwrap_err()
            .to_string()
    };
    let full = ClipShape::new(8, 224, 224);
    let cfg = TransformerConfig {
        dim: 100,
        heads: 3,
        ..Default::default()
    };
    let e = error(&cfg, full);
    assert!(
        e.contains("model.transformer_dim=100") && e.contains("model.transformer_heads=3"),
        "{e}"
    );
    let e = error(&TransformerConfig::default(), ClipShape::new(1, 224, 224));
    assert!(
        e.contains("T=1") && e.contains("data.uniform_temporal_subsample_num"),
        "{e}"
    );
    let e = error(&TransformerConfig::default(), ClipShape::new(8, 224, 8));
    assert!(e.contains("W=8") && e.contains("data.img_size"), "{e}");
    for layers in [0, 33] {
        let cfg = TransformerConfig {
            layers,
            ..Default::default()
        };
        let e = error(&cfg, full);
        assert!(e.contains("model.transformer_layers"), "{e}");
    }
    let cfg = TransformerConfig {
        dropout: 1.0,
        ..Default::default()
    };
    let e = error(&cfg, full);
    assert!(e.contains("model.transformer_dropout"), "{e}");
    assert_eq!("Mean".parse::<TokenPool>(), Ok(TokenPool::Mean));
    assert!("max"
        .parse::<TokenPool>()
        .unwrap_err()
        .to_string()
        .contains("model.transformer_pool"));
}

#[test]
fn transformer_overfits_tiny_batch() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = TransformerConfig {
        tubelet: [2, 8, 8],
        ..small_transformer(TokenPool::Cls, 0.0)
    };
    let model = VideoTransformer::new(&(vs.root() / "backbone"), &cfg, INPUT).expect("valid");
    let steps = overfit_toy_batch(&vs, &model);
    eprintln!("transformer: loss < 0.05 after {steps} steps");
}
