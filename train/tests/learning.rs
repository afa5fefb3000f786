//! Every backbone learns the synthetic dataset (`prep synth`, 4 classes, chance 0.25) well
//! above chance on held-out drivers, and bf16 mixed precision with gradient checkpointing
//! converges on CPU, and X3D still learns with the default augmentation (`data.aug.*`;
//! the other runs turn it off: in 6 epochs on 12 sessions the transformer, with learned
//! absolute positions, learns nothing from randomly cropped clips). One cache (the demo's: 12 sessions, 64x64, 8 fps), one run per setting.
//! R(2+1)D-18 is `make demo`'s model and is covered there and in `tests/fit.rs`.

use std::path::{Path, PathBuf};

use mvdrive_train::run::fit::{fit, FitArgs};

mod common;
use common::synth_cache;

/// The demo's cache: 12 sessions, 64x64, 8 fps.
fn demo_cache(dir: &Path) -> PathBuf {
    synth_cache(
        dir,
        12,
        0,
        &["data.img_size=64", "prep.fps=8", "data.max_video_frames=64"],
    )
}

#[test]
fn every_backbone_learns_the_synthetic_dataset_well_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    let cache = demo_cache(dir.path());
    let log_dir = format!("trainer.log_dir={}", dir.path().join("logs").display());
    let runs: &[(&str, &[&str])] = &[
        (
            "transformer",
            &["model.backbone=transformer", "train.lr=0.0005"],
        ),
        (
            "transformer, bf16-mixed + checkpointing",
            &[
                "model.backbone=transformer",
                "train.lr=0.0005",
                "trainer.precision=bf16-mixed",
                "model.use_gradient_checkpointing=true",
            ],
        ),
        ("mamba", &["model.backbone=mamba", "train.lr=0.0005"]),
        ("x3d", &["model.backbone=x3d", "train.lr=0.001"]),
        (
            "stgcn (keypoints, 3 views)",
            &[
                "model.backbone=stgcn",
                "model.input_type=kpt",
                "data.load_kpt=true",
                "data.load_rgb=false",
                "train.view=multi",
                "train.max_epochs=15",
            ],
        ),
        (
            "x3d with the default augmentation",
            &[
                "model.backbone=x3d",
                "train.lr=0.001",
                "data.aug.enabled=true",
            ],
        ),
        (
            "transformer + stgcn (rgb_kpt)",
            &[
                "model.backbone=transformer",
                "model.input_type=rgb_kpt",
                "data.load_kpt=true",
                "train.lr=0.0005",
                "train.max_epochs=8",
            ],
        ),
    ];
    let mut report = Vec::new();
    for (i, (name, extra)) in runs.iter().enumerate() {
        let mut o: Vec<String> = [
            "data.img_size=64",
            "data.uniform_temporal_subsample_num=8",
            "data.batch_size=4",
            "data.num_workers=1",
            "train.max_epochs=6",
            "train.view=single",
            "train.view_name=front",
            "train.monitor=val_top1",
            "trainer.device=cpu",
            // What each backbone learns without augmentation; one x3d run adds it.
            "data.aug.enabled=false",
            log_dir.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        o.push(format!("trainer.experiment=run{i}"));
        o.extend(extra.iter().map(|s| s.to_string()));
        let started = std::time::Instant::now();
        let args = FitArgs {
            cache: cache.clone(),
            config: None,
            resume: None,
            overrides: o,
        };
        let summary = fit(&args, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (best, epoch) = summary.best.unwrap();
        let first = summary.epochs[0].train_loss;
        let last = summary.epochs.last().unwrap().train_loss;
        report.push(format!(
            "{name}: best val top-1 {best:.2} (epoch {epoch}), train loss {first:.3} -> {last:.3}, {:.0} s",
            started.elapsed().as_secs_f64()
        ));
        eprintln!("{}", report.last().unwrap());
        assert!(last < first, "{name}: the training loss did not fall");
        assert!(
            best >= 0.5,
            "{name}: best validation top-1 {best} is not well above chance (0.25)"
        );
    }
    eprintln!("{}", report.join("\n"));
}
