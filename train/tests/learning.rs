//! Every backbone learns the synthetic dataset (`prep synth`, 4 classes, chance 0.25) well
//! above chance on held-out drivers, and bf16 mixed precision with gradient checkpointing
//! converges on CPU, and X3D still learns with the default augmentation (`data.aug.*`;
//! the other runs turn it off: in 6 epochs on 12 sessions the transformer, with learned
//! absolute positions, learns nothing from randomly cropped clips). One cache (the demo's: 12 sessions, 64x64, 8 fps), one run per setting.
//! R(2+1)D-18 is `make demo`'s model and is covered there and in `tests/fit.rs`.

use std::path::{Path, PathBuf};

use mvdrive_train::run::fit::{fit, FitArgs};

mod common;
use common::{synth_cache, synth_cache_relabelled};

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

/// One CPU run of X3D on `cache` (64x64, 8 frames, the front view) with `extra` settings.
fn x3d_run(cache: &Path, logs: &Path, name: &str, extra: &[String]) -> (f64, PathBuf) {
    let mut o: Vec<String> = [
        "model.backbone=x3d",
        "data.img_size=64",
        "data.uniform_temporal_subsample_num=8",
        "data.batch_size=4",
        "data.num_workers=1",
        "train.view=single",
        "train.view_name=front",
        "train.monitor=val_top1",
        "trainer.device=cpu",
        "data.aug.enabled=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("trainer.log_dir={}", logs.display()));
    o.push(format!("trainer.experiment={name}"));
    o.extend(extra.iter().cloned());
    let args = FitArgs {
        cache: cache.to_path_buf(),
        config: None,
        resume: None,
        overrides: o,
    };
    let summary = fit(&args, true).unwrap_or_else(|e| panic!("{name}: {e}"));
    let best = summary.best.unwrap().0;
    (best, summary.run_dir.join("checkpoints/best.safetensors"))
}

/// Pre-training on one synthetic dataset, then fine-tuning on a small, different one (other
/// drivers, three renamed classes, so a classifier of another size) beats training that
/// small dataset from scratch with the same budget.
#[test]
fn fine_tuning_pretrained_weights_beats_training_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let pre_cache = demo_cache(&dir.path().join("pre"));
    let epochs = |n: usize| vec![format!("train.max_epochs={n}"), "train.lr=0.001".into()];
    let (pre_top1, weights) = x3d_run(&pre_cache, &logs, "pretrain", &epochs(6));
    // 8 sessions of 4 new drivers: 2 drivers train, 1 validates.
    let small = synth_cache_relabelled(
        &dir.path().join("small"),
        8,
        11,
        &["data.img_size=64", "prep.fps=8", "data.max_video_frames=64"],
        Some(&[
            ("drinking", "sip"),
            ("texting", "phone"),
            ("looking_left", "mirror"),
        ]),
    );
    let (scratch, _) = x3d_run(&small, &logs, "scratch", &epochs(3));
    let mut tuned = epochs(3);
    tuned.push(format!("model.pretrained={}", weights.display()));
    let (fine, _) = x3d_run(&small, &logs, "fine", &tuned);
    eprintln!(
        "pre-training val top-1 {pre_top1:.2}; small dataset (3 new classes, chance 0.33), 3 epochs: from scratch {scratch:.2}, fine-tuned {fine:.2}"
    );
    assert!(
        fine > scratch,
        "fine-tuned top-1 {fine} is not above from-scratch {scratch}"
    );
}
