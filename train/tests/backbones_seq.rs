//! Sequence backbones: the divided space-time transformer and the bidirectional Mamba-2
//! model (shapes, gradients, segment chaining, bfloat16, config errors, overfitting), and
//! the chunked selective scan against the step-by-step recurrence.

use mvdrive_train::model::backbones::mamba::{ssd_chunked, ssd_naive, MambaConfig, VideoMamba};
use mvdrive_train::model::backbones::transformer::{
    TokenPool, TransformerConfig, VideoTransformer,
};
use mvdrive_train::model::backbones::Backbone;
use mvdrive_train::model::ClipShape;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const INPUT: ClipShape = ClipShape::new(8, 32, 32);

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

fn small_mamba(dropout: f64) -> MambaConfig {
    MambaConfig {
        dim: 32,
        layers: 2,
        state: 8,
        expand: 2,
        headdim: 16,
        conv_kernel: 4,
        chunk: 4,
        dropout,
        tubelet: [2, 16, 16],
    }
}

fn clip(n: i64) -> Tensor {
    Tensor::randn(
        [n, 3, INPUT.t, INPUT.h, INPUT.w],
        (Kind::Float, Device::Cpu),
    )
}

fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) == 1
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Forward shape, then a backward pass reaching every trainable variable with finite
/// gradients.
fn check_forward_backward(vs: &nn::VarStore, model: &dyn Backbone, dim: i64) {
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
fn mamba_forward_backward() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = VideoMamba::new(&vs.root(), &small_mamba(0.1), INPUT).expect("valid config");
    assert_eq!(model.grid(), [4, 2, 2]);
    assert_eq!(model.heads(), 4);
    check_forward_backward(&vs, &model, 32);
}

#[test]
fn default_configs_build() {
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
    let m = VideoMamba::new(
        &(vs.root() / "m"),
        &MambaConfig::default(),
        ClipShape::new(8, 224, 224),
    )
    .expect("default mamba");
    assert_eq!(m.heads(), 6);
    assert_eq!(m.feature_dim(), 192);
    let names: Vec<&str> = m.segments().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["embed", "block0", "block1", "block2", "block3", "norm"]
    );
}

/// Non-multiple input sizes are zero-padded up to whole tubelets.
#[test]
fn input_padding() {
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
    let m = VideoMamba::new(&(vs.root() / "m"), &small_mamba(0.0), input).expect("valid");
    let x = Tensor::randn([2, 3, 7, 20, 33], (Kind::Float, Device::Cpu));
    assert_eq!(t.features(&x, false).size(), [2, 32]);
    assert_eq!(m.features(&x, false).size(), [2, 32]);
}

fn random_scan_inputs(
    n: i64,
    l: i64,
    h: i64,
    p: i64,
    g: i64,
    s: i64,
    kind: Kind,
) -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
    let opts = (kind, Device::Cpu);
    let x = Tensor::randn([n, l, h, p], opts);
    let dt = (Tensor::randn([n, l, h], opts) - 1.0).softplus();
    let a = -(Tensor::randn([h], opts) * 0.5).exp();
    let b = Tensor::randn([n, l, g, s], opts);
    let c = Tensor::randn([n, l, g, s], opts);
    (x, dt, a, b, c)
}

#[test]
fn ssd_chunked_matches_naive() {
    tch::manual_seed(1);
    for &(g, h) in &[(1, 3), (2, 4)] {
        for l in [1, 3, 4, 8, 13, 16, 37] {
            for chunk in [4, 8] {
                let (x, dt, a, b, c) = random_scan_inputs(2, l, h, 5, g, 6, Kind::Double);
                let reference = ssd_naive(&x, &dt, &a, &b, &c);
                assert_eq!(reference.size(), [2, l, h, 5]);
                // float32 chunked scan against the float64 recurrence.
                let f = |t: &Tensor| t.to_kind(Kind::Float);
                let y32 = ssd_chunked(&f(&x), &f(&dt), &f(&a), &f(&b), &f(&c), chunk);
                assert_eq!(y32.kind(), Kind::Float);
                assert_eq!(y32.size(), [2, l, h, 5]);
                let d32 = max_abs_diff(&y32, &reference);
                assert!(d32 <= 1e-4, "G={g} L={l} chunk={chunk}: f32 diff {d32}");
                // float64 all the way: agreement to rounding.
                let y64 = ssd_chunked(&x, &dt, &a, &b, &c, chunk);
                let d64 = max_abs_diff(&y64, &reference);
                assert!(d64 <= 1e-10, "G={g} L={l} chunk={chunk}: f64 diff {d64}");
            }
        }
    }
}

/// Gradients of the chunked scan (through the `-inf` entries of its segment sums) are finite
/// and equal those of the naive recurrence.
#[test]
fn ssd_chunked_gradients_match_naive() {
    tch::manual_seed(2);
    let (x, dt, a, b, c) = random_scan_inputs(2, 11, 2, 3, 1, 4, Kind::Double);
    let grads = |chunked: bool| {
        let inputs: Vec<Tensor> = [&x, &dt, &a, &b, &c]
            .iter()
            .map(|t| t.detach().set_requires_grad(true))
            .collect();
        let y = if chunked {
            ssd_chunked(
                &inputs[0], &inputs[1], &inputs[2], &inputs[3], &inputs[4], 4,
            )
        } else {
            ssd_naive(&inputs[0], &inputs[1], &inputs[2], &inputs[3], &inputs[4])
        };
        y.square().sum(Kind::Double).backward();
        inputs.iter().map(|t| t.grad()).collect::<Vec<_>>()
    };
    let (gc, gn) = (grads(true), grads(false));
    for (i, (c, n)) in gc.iter().zip(&gn).enumerate() {
        assert!(all_finite(c), "input {i}: non-finite gradient");
        let d = max_abs_diff(c, n);
        assert!(d <= 1e-8, "input {i}: gradient diff {d}");
    }
}

/// Chaining `segments()` then `pool()` equals `features()`: exactly in eval mode, and in
/// train mode (dropout) when the RNG is re-seeded identically before each.
fn check_segments_chain(model: &dyn Backbone) {
    let x = clip(2);
    let chain = |train: bool| {
        let mut h = x.shallow_clone();
        for segment in model.segments() {
            h = segment.forward_t(&h, train);
        }
        model.pool(&h)
    };
    tch::no_grad(|| {
        let eval = model.features(&x, false);
        assert!(eval.equal(&chain(false)));
        tch::manual_seed(7);
        let train = model.features(&x, true);
        tch::manual_seed(7);
        assert!(train.equal(&chain(true)));
        // Dropout really is active in train mode.
        assert!(!train.equal(&eval));
    });
}

#[test]
fn segments_chain_equals_features() {
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
    let m = VideoMamba::new(&(vs.root() / "m"), &small_mamba(0.2), INPUT).expect("valid");
    check_segments_chain(&m);
}

#[test]
fn bfloat16_forward() {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let t = VideoTransformer::new(
        &(vs.root() / "t"),
        &small_transformer(TokenPool::Cls, 0.1),
        INPUT,
    )
    .expect("valid");
    let m = VideoMamba::new(&(vs.root() / "m"), &small_mamba(0.1), INPUT).expect("valid");
    vs.bfloat16();
    let x = clip(2).to_kind(Kind::BFloat16);
    for model in [&t as &dyn Backbone, &m] {
        for train in [false, true] {
            let f = model.features(&x, train);
            assert_eq!(f.size(), [2, 32]);
            assert_eq!(f.kind(), Kind::BFloat16);
            assert!(all_finite(&f), "{model:?}");
        }
        // Backward in bfloat16 too.
        let f = model.features(&x, true);
        f.to_kind(Kind::Float).square().sum(Kind::Float).backward();
    }
    for (name, var) in vs.variables() {
        let g = var.grad();
        assert!(g.defined() && all_finite(&g), "{name}");
    }
}

#[test]
fn config_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let cfg = TransformerConfig {
        dim: 100,
        heads: 3,
        ..Default::default()
    };
    let e = VideoTransformer::new(&root, &cfg, ClipShape::new(8, 224, 224)).unwrap_err();
    assert!(
        e.contains("model.transformer_dim=100") && e.contains("model.transformer_heads=3"),
        "{e}"
    );
    let e = VideoTransformer::new(
        &root,
        &TransformerConfig::default(),
        ClipShape::new(1, 224, 224),
    )
    .unwrap_err();
    assert!(
        e.contains("T=1") && e.contains("data.uniform_temporal_subsample_num"),
        "{e}"
    );
    let e = VideoTransformer::new(
        &root,
        &TransformerConfig::default(),
        ClipShape::new(8, 224, 8),
    )
    .unwrap_err();
    assert!(e.contains("W=8") && e.contains("data.img_size"), "{e}");
    for layers in [0, 33] {
        let cfg = TransformerConfig {
            layers,
            ..Default::default()
        };
        let e = VideoTransformer::new(&root, &cfg, ClipShape::new(8, 224, 224)).unwrap_err();
        assert!(e.contains("model.transformer_layers"), "{e}");
    }
    let cfg = TransformerConfig {
        dropout: 1.0,
        ..Default::default()
    };
    let e = VideoTransformer::new(&root, &cfg, ClipShape::new(8, 224, 224)).unwrap_err();
    assert!(e.contains("model.transformer_dropout"), "{e}");
    assert_eq!("Mean".parse::<TokenPool>(), Ok(TokenPool::Mean));
    assert!("max"
        .parse::<TokenPool>()
        .unwrap_err()
        .to_string()
        .contains("model.transformer_pool"));

    let cfg = MambaConfig {
        dim: 40,
        headdim: 64,
        ..Default::default()
    };
    let e = VideoMamba::new(&root, &cfg, ClipShape::new(8, 224, 224)).unwrap_err();
    assert!(
        e.contains("model.mamba_dim=40")
            && e.contains("heads of 64")
            && !e.contains("mamba_headdim"),
        "{e}"
    );
    let e =
        VideoMamba::new(&root, &MambaConfig::default(), ClipShape::new(8, 10, 224)).unwrap_err();
    assert!(e.contains("H=10") && e.contains("data.img_size"), "{e}");
    let cfg = MambaConfig {
        state: 0,
        ..Default::default()
    };
    let e = VideoMamba::new(&root, &cfg, ClipShape::new(8, 224, 224)).unwrap_err();
    assert!(e.contains("model.mamba_state=0"), "{e}");
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

/// Trains backbone + Linear head with AdamW until the training loss is below 0.05;
/// returns the number of steps.
fn overfit(vs: &nn::VarStore, model: &dyn Backbone) -> usize {
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

#[test]
fn transformer_overfits_tiny_batch() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = TransformerConfig {
        tubelet: [2, 8, 8],
        ..small_transformer(TokenPool::Cls, 0.0)
    };
    let model = VideoTransformer::new(&(vs.root() / "backbone"), &cfg, INPUT).expect("valid");
    let steps = overfit(&vs, &model);
    eprintln!("transformer: loss < 0.05 after {steps} steps");
}

#[test]
fn mamba_overfits_tiny_batch() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MambaConfig {
        tubelet: [2, 8, 8],
        chunk: 16,
        ..small_mamba(0.0)
    };
    let model = VideoMamba::new(&(vs.root() / "backbone"), &cfg, INPUT).expect("valid");
    let steps = overfit(&vs, &model);
    eprintln!("mamba: loss < 0.05 after {steps} steps");
}
