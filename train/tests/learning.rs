//! Every backbone learns the synthetic dataset (`prep synth`, 4 classes, chance 0.25) well
//! above chance on held-out drivers, and bf16 mixed precision with gradient checkpointing
//! converges on CPU. X3D runs with the default augmentation (`data.aug.*`; without it,
//! 6 epochs reach 0.50-0.67, too close to this test's bar); the other runs turn it off: in
//! 6 epochs on 12 sessions the transformer, with learned absolute positions, learns
//! nothing from randomly cropped clips. The pre-trained X3D of the fine-tuning and
//! predict tests is trained without augmentation. One cache (the demo's: 12 sessions, 64x64, 8 fps), one run per setting.
//! R(2+1)D-18 is `make demo`'s model and is covered there and in `tests/fit.rs`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mvdrive_train::report::localisation::score;
use mvdrive_train::report::segments::read_segments;
use mvdrive_train::run::fit::{fit, FitArgs};
use mvdrive_train::run::predict::{predict, PredictArgs};

mod common;
mod support;
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
    // Tests run on parallel threads and torch's generator (initialisation, dropout) is
    // global: one fit at a time keeps each run reproducible.
    let _serial = support::lock();
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
            nproc: None,
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
        nproc: None,
        overrides: o,
    };
    let summary = fit(&args, true).unwrap_or_else(|e| panic!("{name}: {e}"));
    let best = summary.best.unwrap().0;
    (best, summary.run_dir.join("checkpoints/best.safetensors"))
}

/// X3D trained for 6 epochs on the demo cache, once for the tests that need a trained
/// model: (folder kept alive, cache, best checkpoint, its validation top-1).
fn pretrained_x3d() -> &'static (tempfile::TempDir, PathBuf, PathBuf, f64) {
    static PRE: OnceLock<(tempfile::TempDir, PathBuf, PathBuf, f64)> = OnceLock::new();
    PRE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cache = demo_cache(&dir.path().join("pre"));
        let extra = ["train.max_epochs=6".to_string(), "train.lr=0.001".into()];
        let (top1, ckpt) = x3d_run(&cache, &dir.path().join("logs"), "pretrain", &extra);
        (dir, cache, ckpt, top1)
    })
}

/// Pre-training on one synthetic dataset, then fine-tuning on a small, different one (other
/// drivers, three renamed classes, so a classifier of another size) beats training that
/// small dataset from scratch with the same budget.
#[test]
fn fine_tuning_pretrained_weights_beats_training_from_scratch() {
    // Tests run on parallel threads and torch's generator (initialisation, dropout) is
    // global: one fit at a time keeps each run reproducible.
    let _serial = support::lock();
    let (_, _, weights, pre_top1) = pretrained_x3d();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let epochs = |n: usize| vec![format!("train.max_epochs={n}"), "train.lr=0.001".into()];
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

/// `train predict` over the held-out sessions finds their segments: F1 at tIoU 0.5 well
/// above the same predicted segments with their labels shuffled.
#[test]
fn predicted_timelines_find_the_segments_of_held_out_drivers() {
    // Tests run on parallel threads and torch's generator (initialisation, dropout) is
    // global: one fit at a time keeps each run reproducible.
    let _serial = support::lock();
    let (_, cache, ckpt, _) = pretrained_x3d();
    let dir = tempfile::tempdir().unwrap();
    let args = PredictArgs {
        ckpt: ckpt.clone(),
        cache: Some(cache.clone()),
        manifest: None,
        out: dir.path().join("pred"),
        // The validation (p05) and test (p06) drivers.
        sessions: ["s005", "s006", "s011", "s012"].map(String::from).to_vec(),
        device: "cpu".into(),
        aicity_ids: None,
        overrides: vec![],
    };
    let r = predict(&args, true).unwrap();
    let truth = read_segments(&dir.path().join("pred/truth.csv"), None).unwrap();
    let f1 = score(&r.segments, &truth, &[0.5]).at_iou[0].f1;
    // The same segments with their labels shuffled (a fixed permutation, several seeds).
    let mut shuffled_f1 = 0.0;
    for seed in 0..5u64 {
        let mut labels: Vec<String> = r.segments.iter().map(|g| g.label.clone()).collect();
        mvdrive_common::rng::Rng::new(seed).shuffle(&mut labels);
        let mut shuffled = r.segments.clone();
        shuffled
            .iter_mut()
            .zip(labels)
            .for_each(|(g, l)| g.label = l);
        shuffled_f1 += score(&shuffled, &truth, &[0.5]).at_iou[0].f1 / 5.0;
    }
    eprintln!(
        "predict on 4 held-out sessions: {} segments ({} true), F1@0.5 {f1:.3}, with shuffled labels {shuffled_f1:.3}; {:.0}x real time",
        r.segments.len(),
        truth.len(),
        r.realtime
    );
    assert!(
        f1 > shuffled_f1 + 0.2,
        "F1@0.5 {f1} is not well above the shuffled-label baseline {shuffled_f1}"
    );
}

/// A cache of per-frame JPEG (`prep.compress=jpeg:90`) trains as well as a raw one: the
/// transformer's held-out top-1 on each, same settings and seed.
#[test]
fn a_jpeg_cache_trains_as_well_as_a_raw_one() {
    // Tests run on parallel threads and torch's generator (initialisation, dropout) is
    // global: one fit at a time keeps each run reproducible.
    let _serial = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let settings = ["data.img_size=64", "prep.fps=8", "data.max_video_frames=64"];
    let raw = synth_cache(&dir.path().join("raw"), 12, 0, &settings);
    let mut jpeg_settings = settings.to_vec();
    jpeg_settings.push("prep.compress=jpeg:90");
    let jpeg = synth_cache(&dir.path().join("jpeg"), 12, 0, &jpeg_settings);
    let logs = dir.path().join("logs");
    let run = |cache: &Path, name: &str| {
        let o: Vec<String> = [
            "model.backbone=transformer",
            "train.lr=0.0005",
            "data.img_size=64",
            "data.uniform_temporal_subsample_num=8",
            "data.batch_size=4",
            "data.num_workers=1",
            "train.max_epochs=6",
            "train.view=single",
            "train.view_name=front",
            "train.monitor=val_top1",
            "trainer.device=cpu",
            "data.aug.enabled=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("trainer.log_dir={}", logs.display()),
            format!("trainer.experiment={name}"),
        ])
        .collect();
        let args = FitArgs {
            cache: cache.to_path_buf(),
            config: None,
            resume: None,
            nproc: None,
            overrides: o,
        };
        fit(&args, true).unwrap().best.unwrap().0
    };
    let (a, b) = (run(&raw, "raw"), run(&jpeg, "jpeg"));
    eprintln!("transformer, best val top-1: raw cache {a:.2}, jpeg:90 cache {b:.2}");
    assert!(
        b >= 0.5,
        "the jpeg cache's top-1 {b} is not well above chance"
    );
    // 12 validation segments (one is 0.083) and a 6-epoch run: the same seed on slightly
    // different pixels moves the figure by a few segments either way (0.67 raw vs 0.92 jpeg
    // in one run). The claim checked is that JPEG costs no accuracy beyond that noise.
    assert!(
        b >= a - 0.17,
        "the jpeg cache's {b} is below the raw cache's {a}"
    );
}
