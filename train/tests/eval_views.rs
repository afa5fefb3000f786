//! Test-time evaluation: `train eval --clips K --crops C` averages the class probabilities
//! of K clips spread over each segment x C crops of each clip, and writes them with top-1,
//! top-5 (more than 5 classes) and per-class accuracy.

use std::path::{Path, PathBuf};

use mvdrive_train::config::{Settings, TrainConfig};
use mvdrive_train::data::sampler::{eval_clip_frames, Item, Selection};
use mvdrive_train::model::MultiViewModel;
use mvdrive_train::run::checkpoint;
use mvdrive_train::run::eval::{eval, EvalArgs};
use mvdrive_train::run::fit::{fit, FitArgs};
use mvdrive_train::run::session::Session;
use tch::{Kind, Tensor};

mod common;
use common::synth_cache;

/// A one-epoch model on a cache of 16x24 (non-square) frames; returns (cache, checkpoint).
fn trained(dir: &Path) -> (PathBuf, PathBuf) {
    let cache = synth_cache(
        dir,
        4,
        5,
        &[
            "data.img_size=16x24",
            "prep.fps=2",
            "data.max_video_frames=8",
        ],
    );
    let overrides: Vec<String> = [
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.max_epochs=1",
        "train.view=single",
        "trainer.device=cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("trainer.log_dir={}", dir.join("logs").display())])
    .collect();
    let args = FitArgs {
        cache: cache.clone(),
        config: None,
        resume: None,
        nproc: None,
        overrides,
    };
    let run = fit(&args, true).unwrap();
    (cache, run.run_dir.join("checkpoints/last.safetensors"))
}

fn eval_args(
    ckpt: &Path,
    cache: &Path,
    out: &Path,
    clips: Option<u32>,
    crops: Option<&str>,
) -> EvalArgs {
    EvalArgs {
        ckpt: ckpt.to_path_buf(),
        cache: cache.to_path_buf(),
        split: "test".into(),
        out: Some(out.to_path_buf()),
        device: "cpu".into(),
        clips,
        crops: crops.map(String::from),
    }
}

/// predictions.csv as (segment id, probabilities).
fn probabilities(csv: &Path) -> Vec<(u64, Vec<f64>)> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let first_p = header.iter().position(|h| h.starts_with("p_")).unwrap();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let p = f[first_p..].iter().map(|v| v.parse().unwrap()).collect();
            (f[0].parse().unwrap(), p)
        })
        .collect()
}

#[test]
fn several_clips_and_crops_average_the_probabilities_of_each_view() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, ckpt) = trained(dir.path());

    let one = eval(&eval_args(
        &ckpt,
        &cache,
        &dir.path().join("e1"),
        None,
        None,
    ))
    .unwrap();
    assert_eq!(one.views, (1, 1));
    let many = eval(&eval_args(
        &ckpt,
        &cache,
        &dir.path().join("e6"),
        Some(2),
        Some("3"),
    ))
    .unwrap();
    assert_eq!(many.views, (2, 3));
    assert_eq!(one.segments, many.segments);
    let rows = probabilities(&many.predictions);
    assert_eq!(rows.len(), many.segments, "one row per segment");

    // The same average, computed here view by view: the checkpoint's model on clip k of 2
    // of each segment, on each of the three 16x16 squares of the 16x24 frames.
    let st = checkpoint::load_state(&ckpt).unwrap();
    let mut settings = Settings::default();
    settings.apply_yaml(&st.config_yaml).unwrap();
    let s = Session::open(&cache, TrainConfig::new(&settings).unwrap()).unwrap();
    let mut vs = tch::nn::VarStore::new(s.device);
    let model = MultiViewModel::new(&vs.root(), s.model.clone()).unwrap();
    checkpoint::load_weights(&ckpt, &mut vs).unwrap();
    let loader = s.new_loader().unwrap();
    let items: Vec<Item> = s.items(&Selection::Split("test".into())).unwrap();
    let windows =
        mvdrive_train::data::input::crop_windows((16, 24), mvdrive_train::config::Crops::Three)
            .unwrap();
    for item in &items {
        let seg = &s.cache.segments[item.segment];
        let mut sum = Tensor::zeros(
            [1, s.classes.len() as i64],
            (Kind::Double, tch::Device::Cpu),
        );
        for k in 0..2 {
            let frames = eval_clip_frames(seg.frame_start, seg.frame_end, 2, k, 2);
            let batch = loader.load(0, &[*item], &[frames]).unwrap();
            for w in &windows {
                let x = s.input_window(&batch, *w).unwrap();
                let scores = tch::no_grad(|| model.forward_t(&x, false));
                sum += scores.softmax(-1, Kind::Double);
            }
        }
        let want: Vec<f64> = Vec::try_from((sum / 6.0).flatten(0, -1)).unwrap();
        let (_, got) = rows.iter().find(|(id, _)| *id == seg.segment_id).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 2e-6,
                "segment {}: {got:?} vs {want:?}",
                seg.segment_id
            );
        }
        assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    }

    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&many.metrics).unwrap()).unwrap();
    assert_eq!(
        (m["clips"].as_u64(), m["crops"].as_u64()),
        (Some(2), Some(3))
    );
    assert!(m["top5"].is_null(), "4 classes: no top-5");
    let per_class = m["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 4);
    assert!(per_class.iter().all(|c| c["accuracy"].as_f64().is_some()));
}

#[test]
fn bad_clip_and_crop_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_train");
    let out = std::process::Command::new(bin)
        .args([
            "eval",
            "--ckpt",
            "x.safetensors",
            "--cache",
            "c",
            "--clips",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--clips"), "{err}");
    let out = std::process::Command::new(bin)
        .args([
            "eval",
            "--ckpt",
            "x.safetensors",
            "--cache",
            "c",
            "--crops",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Three crops of square frames are one crop three times: refused before training.
    let cache = common::tiny_cache(dir.path());
    let mut s = Settings::default();
    for kv in ["eval.crops=3", "data.img_size=16", "trainer.device=cpu"] {
        let (k, v) = kv.split_once('=').unwrap();
        s.set(k, v, false).unwrap();
    }
    let e = Session::open(&cache, TrainConfig::new(&s).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("square") && e.contains("eval.crops=1"), "{e}");
    // eval.clips has a ceiling.
    s.set("eval.clips", "1000", false).unwrap();
    assert!(TrainConfig::new(&s)
        .unwrap_err()
        .to_string()
        .contains("eval.clips"));
}
