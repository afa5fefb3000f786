//! `train predict` over whole sessions of a tiny cache: what it writes (per-frame scores
//! that are averaged probabilities, segments inside the timeline, pictures, AI City lines)
//! and the mistakes it refuses. Whether its timelines are right is tests/learning.rs's job.

use std::path::{Path, PathBuf};

use mvdrive_train::report::segments::read_segments;
use mvdrive_train::run::fit::{fit, FitArgs};
use mvdrive_train::run::predict::{predict, PredictArgs};

mod common;
use common::tiny_cache;

/// One epoch of the default model on the front view of `cache`: its best checkpoint.
fn trained(cache: &Path, dir: &Path) -> PathBuf {
    let o: Vec<String> = [
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.batch_size=2",
        "data.num_workers=1",
        "train.max_epochs=1",
        "train.view=single",
        "train.view_name=front",
        "trainer.device=cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("trainer.log_dir={}", dir.join("logs").display())])
    .collect();
    let args = FitArgs {
        cache: cache.to_path_buf(),
        config: None,
        resume: None,
        nproc: None,
        overrides: o,
    };
    let run = fit(&args, true).unwrap().run_dir;
    run.join("checkpoints/best.safetensors")
}

fn args(ckpt: &Path, cache: &Path, out: &Path, overrides: &[&str]) -> PredictArgs {
    PredictArgs {
        ckpt: ckpt.to_path_buf(),
        cache: Some(cache.to_path_buf()),
        manifest: None,
        out: out.to_path_buf(),
        sessions: vec![],
        device: "cpu".into(),
        aicity_ids: None,
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
    }
}

/// The shape in a `.npy` header and the float32 values after it.
fn read_npy(path: &Path) -> ((usize, usize), Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    let shape = header.split("'shape': (").nth(1).unwrap();
    let dims: Vec<usize> = shape
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let values = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ((dims[0], dims[1]), values)
}

#[test]
fn predict_writes_per_frame_scores_segments_pictures_and_aicity_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let ckpt = trained(&cache, dir.path());
    let out = dir.path().join("pred");
    let ids = dir.path().join("ids.csv");
    let mut text = String::from("kind,name,id\n");
    for s in 1..=4 {
        text += &format!("session,s{s:03},{s}\n");
    }
    for (i, c) in ["drinking", "looking_left", "safe_driving", "texting"]
        .iter()
        .enumerate()
    {
        text += &format!("class,{c},{}\n", i + 10);
    }
    std::fs::write(&ids, text).unwrap();
    let mut a = args(
        &ckpt,
        &cache,
        &out,
        &["predict.stride_s=1", "predict.min_len_s=0"],
    );
    a.aicity_ids = Some(ids.clone());
    let r = predict(&a, true).unwrap();
    assert_eq!(r.sessions, 4);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("predict.json")).unwrap()).unwrap();
    let cache_index = mvdrive_schemas::Cache::open(&cache).unwrap();
    for row in &cache_index.sessions {
        let ((frames, classes), values) =
            read_npy(&out.join("scores").join(format!("{}.npy", row.session)));
        assert_eq!((frames as u64, classes), (row.timeline_frames, 4));
        // Averaged window probabilities: every frame's scores sum to 1.
        for f in 0..frames {
            let sum: f32 = values[f * 4..(f + 1) * 4].iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "{} frame {f}: {sum}", row.session);
        }
        let listed = meta["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session"] == row.session.as_str())
            .unwrap();
        assert_eq!(listed["frames"], row.timeline_frames);
        assert!(out
            .join("timeline")
            .join(format!("{}.png", row.session))
            .exists());
    }
    // Segments: inside their session's timeline, of the model's classes, read back as a
    // segments file; one AI City line each, with the mapped ids.
    let segs = read_segments(&out.join("segments.csv"), None).unwrap();
    assert_eq!(
        segs,
        r.segments
            .iter()
            .map(|g| {
                let mut g = g.clone();
                g.start = (g.start * 1000.0).round() / 1000.0;
                g.end = (g.end * 1000.0).round() / 1000.0;
                g.score = (g.score * 10000.0).round() / 10000.0;
                g
            })
            .collect::<Vec<_>>()
    );
    assert!(!segs.is_empty());
    for g in &segs {
        let row = cache_index
            .sessions
            .iter()
            .find(|r| r.session == g.session)
            .unwrap();
        let end = row.timeline_start_s + row.timeline_frames as f64 / row.fps;
        assert!(
            g.start >= row.timeline_start_s - 1e-3 && g.end <= end + 1e-3,
            "{g:?}"
        );
    }
    let lines = std::fs::read_to_string(out.join("aicity.txt")).unwrap();
    assert_eq!(lines.lines().count(), segs.len());
    let first: Vec<&str> = lines.lines().next().unwrap().split(' ').collect();
    assert_eq!(first.len(), 4);
    assert!(first[1].parse::<u32>().unwrap() >= 10);
    // The window defaults to the median training segment, saved in the checkpoint.
    let window = meta["window_s"].as_f64().unwrap();
    assert!((2.0..3.3).contains(&window), "{window}");
}

#[test]
fn predict_refuses_bad_windows_sessions_views_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let ckpt = trained(&cache, dir.path());
    let out = dir.path().join("pred");
    let err = |a: &PredictArgs| predict(a, true).unwrap_err().to_string();
    // 0.5 s at 2 fps is 1 frame; the model reads 2.
    let e = err(&args(&ckpt, &cache, &out, &["predict.window_s=0.5"]));
    assert!(
        e.contains("predict.window_s=0.5") && e.contains("2 frames per clip"),
        "{e}"
    );
    let mut a = args(&ckpt, &cache, &out, &[]);
    a.sessions = vec!["s009".into()];
    let e = err(&a);
    assert!(e.contains("s009"), "{e}");
    let e = err(&args(
        &ckpt,
        &cache,
        &out,
        &["predict.window_s=2", "predict.stride_s=3"],
    ));
    assert!(
        e.contains("predict.stride_s=3") && e.contains("no score"),
        "{e}"
    );
    let e = err(&args(&ckpt, &cache, &out, &["predict.background=nothing"]));
    assert!(
        e.contains("predict.background") && e.contains("nothing"),
        "{e}"
    );
    let ids = dir.path().join("ids.csv");
    std::fs::write(&ids, "session,s001,1\n").unwrap();
    let mut a = args(&ckpt, &cache, &out, &["predict.min_len_s=0"]);
    a.aicity_ids = Some(ids);
    let e = err(&a);
    assert!(e.contains("ids.csv") && e.contains("add a line"), "{e}");

    // A cache without the model's camera.
    let other = dir.path().join("no-front");
    let data = dir.path().join("data");
    let manifest = std::fs::read_to_string(data.join("manifest.csv")).unwrap();
    let kept: Vec<&str> = manifest
        .lines()
        .filter(|l| !l.contains(",front,"))
        .collect();
    std::fs::write(data.join("no-front.csv"), kept.join("\n") + "\n").unwrap();
    let mut config = mvdrive_prep::config::PrepConfig::default();
    config
        .apply_overrides(&[
            "data.img_size=16".into(),
            "prep.fps=2".into(),
            "data.max_video_frames=8".into(),
        ])
        .unwrap();
    mvdrive_prep::pipeline::build(&mvdrive_prep::pipeline::BuildArgs {
        manifest: data.join("no-front.csv"),
        segments: Some(data.join("segments.csv")),
        out: other.clone(),
        config,
        quiet: true,
        ..Default::default()
    })
    .unwrap();
    let e = err(&args(&ckpt, &other, &out, &[]));
    assert!(e.contains("front"), "{e}");
    // The same videos as raw recordings: refused before anything is decoded.
    let mut a = args(&ckpt, &cache, &out, &[]);
    a.cache = None;
    a.manifest = Some(data.join("no-front.csv"));
    let e = err(&a);
    assert!(
        e.contains("no-front.csv") && e.contains("view `front`"),
        "{e}"
    );
    assert!(!out.join(".predict-cache").exists());
}

#[test]
fn raw_videos_predict_exactly_like_their_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let ckpt = trained(&cache, dir.path());
    let from_cache = dir.path().join("from-cache");
    predict(&args(&ckpt, &cache, &from_cache, &[]), true).unwrap();
    // The manifest alone: no segments file, a temporary cache through the prep binary.
    let from_videos = dir.path().join("from-videos");
    let mut a = args(&ckpt, &cache, &from_videos, &[]);
    a.cache = None;
    a.manifest = Some(dir.path().join("data/manifest.csv"));
    let r = predict(&a, true).unwrap();
    assert_eq!(r.sessions, 4);
    assert!(
        r.against_truth.is_none(),
        "an unlabelled cache has no truth"
    );
    for s in ["s001", "s002", "s003", "s004"] {
        let f = format!("scores/{s}.npy");
        let (a, b) = (
            std::fs::read(from_cache.join(&f)).unwrap(),
            std::fs::read(from_videos.join(&f)).unwrap(),
        );
        assert!(a == b, "{s}: the scores differ");
    }
    assert_eq!(
        std::fs::read(from_cache.join("segments.csv")).unwrap(),
        std::fs::read(from_videos.join("segments.csv")).unwrap()
    );
    assert!(
        !from_videos.join(".predict-cache").exists(),
        "the temporary cache stays"
    );
}
