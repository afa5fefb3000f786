//! The bidirectional Mamba-2 video backbone: shapes, gradients, the default config, input
//! padding, segment chaining, bfloat16, config errors, overfitting a tiny batch, and the
//! chunked selective scan against the step-by-step recurrence.

mod support;

use mvdrive_train::model::backbones::mamba::{ssd_chunked, ssd_naive, MambaConfig, VideoMamba};
use mvdrive_train::model::backbones::Backbone;
use mvdrive_train::model::ClipShape;
use support::{
    all_finite, check_bfloat16_forward, check_forward_backward, check_segments_chain, max_abs_diff,
    overfit_toy_batch, INPUT,
};
use tch::nn;
use tch::{Device, Kind, Tensor};

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
fn mamba_default_config_builds() {
    let vs = nn::VarStore::new(Device::Cpu);
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
fn mamba_input_padding() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let input = ClipShape::new(7, 20, 33);
    let m = VideoMamba::new(&(vs.root() / "m"), &small_mamba(0.0), input).expect("valid");
    let x = Tensor::randn([2, 3, 7, 20, 33], (Kind::Float, Device::Cpu));
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

#[test]
fn mamba_segments_chain_equals_features() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = VideoMamba::new(&(vs.root() / "m"), &small_mamba(0.2), INPUT).expect("valid");
    check_segments_chain(&m);
}

#[test]
fn mamba_bfloat16_forward() {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let m = VideoMamba::new(&(vs.root() / "m"), &small_mamba(0.1), INPUT).expect("valid");
    check_bfloat16_forward(&mut vs, &m);
}

#[test]
fn mamba_config_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let error = |cfg: &MambaConfig, input: ClipShape| {
        VideoMamba::new(&vs.root(), cfg, input)
            .unwrap_err()
            .to_string()
    };
    let full = ClipShape::new(8, 224, 224);
    let cfg = MambaConfig {
        dim: 40,
        headdim: 64,
        ..Default::default()
    };
    let e = error(&cfg, full);
    assert!(
        e.contains("model.mamba_dim=40")
            && e.contains("heads of 64")
            && !e.contains("mamba_headdim"),
        "{e}"
    );
    let e = error(&MambaConfig::default(), ClipShape::new(8, 10, 224));
    assert!(e.contains("H=10") && e.contains("data.img_size"), "{e}");
    let cfg = MambaConfig {
        state: 0,
        ..Default::default()
    };
    let e = error(&cfg, full);
    assert!(e.contains("model.mamba_state=0"), "{e}");
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
    let steps = overfit_toy_batch(&vs, &model);
    eprintln!("mamba: loss < 0.05 after {steps} steps");
}
