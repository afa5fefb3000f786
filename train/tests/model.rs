//! The multi-view model and its fusion modes on CPU with small inputs: config parsing,
//! output shapes, what each fusion computes, gradients, the summary, a safetensors round
//! trip, and input errors.

mod support;

use mvdrive_train::model::backbones::{self, BackboneKind};
use mvdrive_train::model::{self, FusionMode, Input, ModelConfig, ModelError, MultiViewModel};
use support::{build, max_abs_diff, KINDS};
use tch::nn;
use tch::{Device, Kind, Tensor};

const FUSIONS: [FusionMode; 4] = [
    FusionMode::LogitMean,
    FusionMode::ProbMean,
    FusionMode::FeatureMean,
    FusionMode::FeatureConcat,
];

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
fn fusion_averages_over_the_views_present() {
    tch::manual_seed(4);
    let (b, v, classes) = (2, 3, 5);
    for mode in [
        FusionMode::LogitMean,
        FusionMode::ProbMean,
        FusionMode::FeatureMean,
    ] {
        let (_vs, m) = build(BackboneKind::R3d18, mode, classes, v);
        let f = Tensor::randn([b, v, m.feature_dim()], (Kind::Float, Device::Cpu));
        // Sample 0 lacks view 2, sample 1 lacks view 0.
        let present = Tensor::from_slice(&[1f32, 1., 0., 0., 1., 1.]).view([b, v]);
        let got = m.fuse(&f, Some(&present));
        let want0 = m.fuse(&f.narrow(0, 0, 1).narrow(1, 0, 2), None);
        let want1 = m.fuse(&f.narrow(0, 1, 1).narrow(1, 1, 2), None);
        let want = Tensor::cat(&[want0, want1], 0);
        assert!(
            max_abs_diff(&got, &want) < 1e-5,
            "{mode}: fused over present views differs by {}",
            max_abs_diff(&got, &want)
        );
        // Every view present: the mask changes nothing.
        let all = Tensor::ones([b, v], (Kind::Float, Device::Cpu));
        assert!(max_abs_diff(&m.fuse(&f, Some(&all)), &m.fuse(&f, None)) < 1e-5);
    }
}
