//! End-to-end tests of the trainer on tiny caches built by `prep` from `prep synth` data:
//! selective loading, exact resume, eval outputs, and the errors users can cause.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mvdrive_schemas::Cache;
use mvdrive_train::config::{Settings, TrainConfig};
use mvdrive_train::data::loader::{ClipPick, Loader, Prefetch};
use mvdrive_train::data::sampler::{select, Sampler, Selection};
use mvdrive_train::run::eval::{eval, EvalArgs};
use mvdrive_train::run::fit::{fit, FitArgs};

mod common;
use common::tiny_cache;

/// The overrides of a small CPU run logging under `dir`, then `extra`.
fn config(dir: &Path, extra: &[&str]) -> Vec<String> {
    let log_dir = format!("trainer.log_dir={}", dir.join("logs").display());
    let mut o: Vec<String> = [
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.batch_size=2",
        "data.num_workers=1",
        "train.max_epochs=2",
        "train.view=single",
        "trainer.device=cpu",
        log_dir.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

/// `train fit` arguments; with `resume`, `overrides` apply over the checkpoint's settings.
fn args(cache: &Path, overrides: Vec<String>, resume: Option<PathBuf>) -> FitArgs {
    FitArgs {
        cache: cache.to_path_buf(),
        config: None,
        resume,
        nproc: None,
        overrides,
    }
}

fn eval_args(ckpt: &Path, cache: &Path, split: &str, out: Option<&Path>) -> EvalArgs {
    EvalArgs {
        ckpt: ckpt.to_path_buf(),
        cache: cache.to_path_buf(),
        split: split.to_string(),
        out: out.map(Path::to_path_buf),
        device: "cpu".into(),
        clips: None,
        crops: None,
    }
}

#[test]
fn the_loader_reads_only_the_modalities_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&tiny_cache(dir.path())).unwrap());
    let views = cache.meta.views.clone();
    let items = select(&cache, &Selection::Split("train".into())).unwrap();
    let sampler = Arc::new(Sampler {
        items,
        batch_size: 3,
        seed: 0,
        balanced: false,
        shuffle: true,
        shard: mvdrive_train::data::sampler::Shard::WHOLE,
    });
    let (t, frame) = (4usize, 16 * 16 * 3);

    let rgb_only = Arc::new(Loader::new(cache.clone(), views.clone(), t, true, false).unwrap());
    let mut clips = 0;
    for b in Prefetch::start(
        rgb_only.clone(),
        sampler.clone(),
        0,
        0,
        ClipPick::Jittered,
        2,
    ) {
        let b = b.unwrap();
        assert!(b.kpt.is_none());
        assert_eq!(
            b.rgb.as_ref().unwrap().len(),
            b.size * views.len() * t * frame
        );
        clips += b.size;
    }
    assert_eq!(clips, sampler.items.len());
    assert_eq!(
        rgb_only.counters.rgb_bytes.load(Ordering::Relaxed),
        (clips * views.len() * t * frame) as u64
    );
    assert_eq!(
        rgb_only.counters.kpt_bytes.load(Ordering::Relaxed),
        0,
        "keypoints were read"
    );
    assert!(
        rgb_only.opened_files().iter().all(|f| f.contains("/rgb-")),
        "{:?}",
        rgb_only.opened_files()
    );

    let kpt_only = Arc::new(Loader::new(cache.clone(), views.clone(), t, false, true).unwrap());
    for b in Prefetch::start(
        kpt_only.clone(),
        sampler.clone(),
        0,
        0,
        ClipPick::Jittered,
        0,
    ) {
        let b = b.unwrap();
        assert!(b.rgb.is_none());
        let (vals, mask) = b.kpt.unwrap();
        assert_eq!(vals.len(), b.size * views.len() * t * 17 * 3);
        assert!(
            mask.iter().all(|m| *m == 1),
            "synth keypoints are all detected"
        );
    }
    assert_eq!(
        kpt_only.counters.rgb_bytes.load(Ordering::Relaxed),
        0,
        "RGB was read"
    );
    assert!(kpt_only.counters.kpt_bytes.load(Ordering::Relaxed) > 0);
    assert!(
        kpt_only.opened_files().iter().all(|f| f.contains("/kpt-")),
        "{:?}",
        kpt_only.opened_files()
    );
}

#[test]
fn prefetching_gives_the_same_batches_as_loading_inline() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&tiny_cache(dir.path())).unwrap());
    let items = select(&cache, &Selection::Split("train".into())).unwrap();
    let sampler = Arc::new(Sampler {
        items,
        batch_size: 2,
        seed: 9,
        balanced: false,
        shuffle: true,
        shard: mvdrive_train::data::sampler::Shard::WHOLE,
    });
    let loader =
        Arc::new(Loader::new(cache.clone(), cache.meta.views.clone(), 3, true, false).unwrap());
    let a: Vec<_> = Prefetch::start(loader.clone(), sampler.clone(), 4, 1, ClipPick::Jittered, 0)
        .map(|b| b.unwrap().rgb)
        .collect();
    let b: Vec<_> = Prefetch::start(loader.clone(), sampler.clone(), 4, 1, ClipPick::Jittered, 3)
        .map(|b| b.unwrap().rgb)
        .collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), sampler.batches() - 1, "started at batch 1");
}

fn metric_rows(run: &Path) -> Vec<String> {
    // Every column but the wall time.
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

#[test]
fn a_resumed_run_continues_bit_for_bit_and_eval_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let cfg = config(
        dir.path(),
        &[
            "train.checkpoint_every_n_steps=1",
            "trainer.experiment=full",
            // Mixing draws by position too: each batch takes mixup or cutmix.
            "data.aug.mixup=0.4",
            "data.aug.cutmix=1.0",
        ],
    );
    let full = fit(&args(&cache, cfg, None), true).unwrap();
    assert_eq!(full.epochs.len(), 2);
    let ckpts = full.run_dir.join("checkpoints");
    for f in [
        "last.safetensors",
        "last.optim.safetensors",
        "last.json",
        "best.safetensors",
        "epoch=0-step=1.safetensors",
    ] {
        assert!(ckpts.join(f).exists(), "{f} missing");
    }
    assert!(full.run_dir.join("config.yaml").exists() && full.run_dir.join("metrics.png").exists());
    assert!(
        full.run_dir.join("confusion.csv").exists() && full.run_dir.join("confusion.png").exists()
    );

    // Resume from the middle of epoch 0 (after optimizer step 1).
    let resumed = fit(
        &args(
            &cache,
            vec!["trainer.experiment=resumed".into()],
            Some(ckpts.join("epoch=0-step=1.safetensors")),
        ),
        true,
    )
    .unwrap();
    assert_eq!(
        metric_rows(&resumed.run_dir),
        metric_rows(&full.run_dir),
        "the resumed run must see the same losses"
    );

    // A checkpoint whose files come from two different saves (a crash between the
    // renames) is refused, not resumed.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for f in ["last.safetensors", "last.optim.safetensors", "last.json"] {
        std::fs::copy(ckpts.join(f), mixed.join(f)).unwrap();
    }
    std::fs::copy(
        ckpts.join("epoch=0-step=1.safetensors"),
        mixed.join("last.safetensors"),
    )
    .unwrap();
    let e = fit(
        &args(&cache, vec![], Some(mixed.join("last.safetensors"))),
        true,
    )
    .err()
    .expect("a mixed checkpoint is refused")
    .to_string();
    assert!(
        e.contains("last.safetensors") && e.contains("interrupted write"),
        "{e}"
    );

    // Eval on the validation split.
    let out = dir.path().join("eval");
    let s = eval(&eval_args(
        &ckpts.join("last.safetensors"),
        &cache,
        "val",
        Some(&out),
    ))
    .unwrap();
    let c = Cache::open(&cache).unwrap();
    let val = c
        .segments
        .iter()
        .filter(|g| g.split.as_deref() == Some("val"))
        .count();
    assert_eq!(s.segments, val);
    let preds = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(preds.lines().count(), val + 1);
    assert!(preds.starts_with("segment_id,session,start_s,end_s,label,pred,correct,p_drinking"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for k in [
        "top1",
        "mean_class_acc",
        "macro_f1",
        "per_class",
        "confusion",
    ] {
        assert!(m.get(k).is_some(), "metrics.json lacks {k}");
    }
}

#[test]
fn user_mistakes_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let err = |extra: &[&str]| {
        fit(&args(&cache, config(dir.path(), extra), None), true)
            .err()
            .expect("should fail")
            .to_string()
    };
    let e = err(&["data.val_split=holdout"]);
    assert!(
        e.contains("no segments in split `holdout`") && e.contains("train, val"),
        "{e}"
    );
    let e = err(&["model.model_class_num=7"]);
    assert!(
        e.contains("model.model_class_num=7") && e.contains("4 classes"),
        "{e}"
    );
    let e = err(&["trainer.precision=16-mixed"]);
    assert!(
        e.contains("trainer.precision=16-mixed needs CUDA") && e.contains("bf16-mixed"),
        "{e}"
    );
    let e = Settings::default()
        .apply_overrides(&["train.accumulate_grad_batches=0".to_string()])
        .expect_err("accumulation 0 is refused")
        .to_string();
    assert!(
        e.contains("train.accumulate_grad_batches") && e.contains(">= 1"),
        "{e}"
    );
    let e = err(&["train.view_name=roof", "train.view=single"]);
    assert!(e.contains("train.view_name `roof`"), "{e}");
    // A diverging run stops with a message and leaves no checkpoint of the NaN state.
    let e = err(&[
        "train.lr=1e30",
        "train.warmup_epochs=0",
        "train.grad_clip=0",
        "trainer.experiment=nan",
    ]);
    assert!(
        e.contains("training loss is") && e.contains("without saving"),
        "{e}"
    );
    // ... and no empty run folder either.
    assert!(
        !dir.path().join("logs/nan/version_0").exists(),
        "a failed run left its version_0/ behind"
    );
    // Settings whose batches cannot fit in memory are refused before anything runs.
    let e = err(&["data.uniform_temporal_subsample_num=100000"]);
    assert!(
        e.contains("data.uniform_temporal_subsample_num=100000") && e.contains("at most 1024"),
        "{e}"
    );
    let e = err(&[
        "data.img_size=8192",
        "data.uniform_temporal_subsample_num=64",
    ]);
    assert!(
        e.contains("data.img_size=8192x8192") && e.contains("available"),
        "{e}"
    );
    let e = err(&["data.num_workers=100000"]);
    assert!(e.contains("data.num_workers=100000"), "{e}");

    // A checkpoint of another model cannot be resumed with this one.
    let cfg = config(dir.path(), &["train.max_epochs=1", "trainer.experiment=ok"]);
    let ok = fit(&args(&cache, cfg, None), true).unwrap();
    let ckpt = ok.run_dir.join("checkpoints/last.safetensors");
    let resume_with = |o: &str| {
        fit(&args(&cache, vec![o.to_string()], Some(ckpt.clone())), true)
            .err()
            .expect("should fail")
            .to_string()
    };
    let e = resume_with("model.backbone=r3d_18");
    assert!(e.contains("backbone") && e.contains("r3d_18"), "{e}");
    let e = resume_with("model.modality_fusion=mean");
    assert!(e.contains("model.modality_fusion=concat"), "{e}");
    // Settings of other backbones are not checked; a bad one of this backbone is.
    assert!(TrainConfig::load(None, &config(dir.path(), &["model.transformer_heads=5"])).is_ok());
    let e = err(&["model.backbone=mamba", "model.mamba_dim=40"]);
    assert!(e.contains("model.mamba_dim=40"), "{e}");
    let e = err(&["model.backbone=transformer", "model.transformer_heads=5"]);
    assert!(
        e.contains("model.transformer_dim=192 is not divisible"),
        "{e}"
    );
    // A cache whose index was tampered with fails verification.
    let meta = mvdrive_schemas::meta::Meta::load(&cache).unwrap();
    let idx = cache.join(
        mvdrive_schemas::cache::index_rel_path::<mvdrive_schemas::index::SegmentRow>(&meta)
            .unwrap(),
    );
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&idx, bytes).unwrap();
    let e = eval(&eval_args(&ckpt, &cache, "val", None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("index/segments.") && e.contains("checksum"),
        "{e}"
    );
}

#[test]
fn accumulating_four_batches_of_one_equals_one_batch_of_four() {
    use mvdrive_train::model::backbones::BackboneKind;
    use mvdrive_train::model::{FusionMode, Input, ModelConfig, MultiViewModel};
    use mvdrive_train::optim::adamw::AdamW;
    use mvdrive_train::optim::loss_scale::GradScaler;
    use tch::{nn::VarStore, Device, Kind, Tensor};
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let cfg = ModelConfig {
        backbone: BackboneKind::R3d18,
        fusion: FusionMode::FeatureMean,
        num_classes: 4,
        num_views: 2,
        ..Default::default()
    };
    let model = MultiViewModel::new(&vs.root(), cfg).unwrap();
    let opt = AdamW::new(
        vs.variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect(),
        0.0,
    );
    let x = Tensor::randn([4, 2, 3, 2, 16, 16], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    // BatchNorm in eval mode: no batch statistics, so the two must agree exactly.
    let grads = |f: &dyn Fn()| -> Vec<Tensor> {
        for (_, p) in &opt.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        f();
        opt.grads().iter().map(|g| g.copy()).collect()
    };
    let one_by_four =
        grads(&|| MultiViewModel::loss(&model.forward_t(&Input::from(&x), false), &y).backward());
    // The trainer's rule: each batch's loss times (loss scale / window size), then unscale.
    let mut scaler = GradScaler::new(true);
    scaler.scale = 1024.0;
    let mut four_by_one = grads(&|| {
        for i in 0..4 {
            let l = MultiViewModel::loss(
                &model.forward_t(&Input::from(&x.narrow(0, i, 1)), false),
                &y.narrow(0, i, 1),
            );
            (l * (scaler.scale / 4.0)).backward();
        }
    });
    assert!(!scaler.unscale(&mut four_by_one));
    let mut worst = 0f64;
    for (a, b) in one_by_four.iter().zip(&four_by_one) {
        worst = worst.max((a - b).abs().max().double_value(&[]));
    }
    assert!(worst < 1e-5, "largest gradient difference {worst}");
}

#[test]
fn a_rebuild_under_a_running_fit_stops_it_with_a_message() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let logs = dir.path().join("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["fit", "-q", "--cache"])
        .arg(&cache)
        .args([
            "data.img_size=16",
            "data.uniform_temporal_subsample_num=2",
            "data.batch_size=2",
            "train.max_epochs=500",
            "train.view=single",
            "trainer.device=cpu",
            "trainer.experiment=long",
        ])
        .arg(format!("trainer.log_dir={}", logs.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first epoch's checkpoint: the fit is running.
    let first = logs.join("long/version_0/checkpoints/last.json");
    let started = Instant::now();
    while !first.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the fit did not finish an epoch"
        );
        assert!(child.try_wait().unwrap().is_none(), "the fit ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Rebuild the cache with another frame rate: a new meta.json is committed.
    let mut config = mvdrive_prep::config::PrepConfig::default();
    config
        .apply_overrides(&[
            "data.img_size=16".into(),
            "prep.fps=3".into(),
            "data.max_video_frames=8".into(),
        ])
        .unwrap();
    let data = dir.path().join("data");
    mvdrive_prep::pipeline::build(&mvdrive_prep::pipeline::BuildArgs {
        manifest: data.join("manifest.csv"),
        segments: Some(data.join("segments.csv")),
        out: cache.clone(),
        config,
        quiet: true,
        ..Default::default()
    })
    .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the fit kept running on a rebuilt cache");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("was rebuilt"), "{stderr}");
}

#[test]
fn a_cache_with_a_missing_camera_trains_over_the_views_present() {
    use mvdrive_train::run::session::Session;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mvdrive_prep::synth::synth(&data, 4, 5, true).unwrap();
    // Session s002 lost its left camera.
    let manifest = data.join("manifest.csv");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with("s002,") && l.contains(",left,")))
        .collect();
    assert_eq!(kept.len() + 1, text.lines().count());
    std::fs::write(&manifest, kept.join("\n") + "\n").unwrap();
    let mut prep_config = mvdrive_prep::config::PrepConfig::default();
    prep_config
        .apply_overrides(&[
            "data.img_size=16".into(),
            "prep.fps=2".into(),
            "data.max_video_frames=8".into(),
        ])
        .unwrap();
    let cache = dir.path().join("cache");
    mvdrive_prep::pipeline::build(&mvdrive_prep::pipeline::BuildArgs {
        manifest,
        segments: Some(data.join("segments.csv")),
        out: cache.clone(),
        config: prep_config,
        quiet: true,
        allow_missing_views: true,
        ..Default::default()
    })
    .unwrap();
    // Every view, fused over the ones each sample has.
    let multi = |extra: &[&str]| {
        let mut o = config(dir.path(), &["train.view=multi", "train.max_epochs=1"]);
        o.extend(extra.iter().map(|s| s.to_string()));
        o
    };
    let run = fit(
        &args(&cache, multi(&["trainer.experiment=partial"]), None),
        true,
    )
    .unwrap();
    assert_eq!(run.epochs.len(), 1);
    assert!(run.epochs[0].train_loss.is_finite());
    let e = fit(
        &args(&cache, multi(&["model.fusion_mode=feature_concat"]), None),
        true,
    )
    .err()
    .expect("feature_concat is refused")
    .to_string();
    assert!(
        e.contains("feature_concat") && e.contains("--allow-missing-views"),
        "{e}"
    );
    // One view: sessions without it are left out.
    let items = |view: &str| {
        let o = config(
            dir.path(),
            &["train.view=single", &format!("train.view_name={view}")],
        );
        let s = Session::open(&cache, TrainConfig::load(None, &o).unwrap()).unwrap();
        let all = s.items(&s.train_selection()).unwrap();
        all.iter()
            .filter(|i| s.cache.segments[i.segment].session == "s002")
            .count()
    };
    assert!(items("front") > 0, "s002 trains on the front view");
    assert_eq!(items("left"), 0, "s002 has no left view");
}
