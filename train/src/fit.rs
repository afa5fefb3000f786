//! `train fit` and `train eval`: the loop. Batches stream from the cache as `u8`, become
//! float on the device, go through the multi-view model; AdamW with warm-up + cosine,
//! gradient clipping, accumulation; per-epoch validation metrics, plots, checkpoints,
//! early stopping; exact resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mvdrive_schemas::Cache;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use mvdrive_schemas::sys::{peak_rss_bytes, rss_bytes};

use crate::backbone::BackboneSettings;
use crate::backbone::{normalize_kinetics, BackboneKind};
use crate::checkpoint::{self, TrainerState};
use crate::config::Config;
use crate::loader::{Batch, Loader, Prefetch};
use crate::metrics::{ConfusionMatrix, EpochMetrics, MetricsCsv};
use crate::model::{
    summary, FusionMode, Input, InputType, KeypointSpec, ModelConfig, MultiViewModel,
};
use crate::optim::{lr_at, AdamW};
use crate::plot;
use crate::precision::Precision;
use crate::sampler::{select, Sampler, Selection};
use crate::step::{loss_of, Trainer};

/// Pick the device of `trainer.device`.
pub fn device(cfg: &Config) -> Result<Device, String> {
    match cfg.raw("trainer.device") {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        d => {
            let n: usize = d
                .strip_prefix("cuda:")
                .or_else(|| (d == "cuda").then_some("0"))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("trainer.device `{d}` is not auto, cpu or cuda:N"))?;
            if !tch::Cuda::is_available() {
                return Err(format!(
                    "trainer.device={d} but CUDA is not available to this binary (no GPU, or built without the `cuda` feature); use trainer.device=cpu"
                ));
            }
            if n >= tch::Cuda::device_count() as usize {
                return Err(format!(
                    "trainer.device={d} but only {} CUDA device(s) exist",
                    tch::Cuda::device_count()
                ));
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// What a run trains on: the cache, the views, the classes and the model input.
pub struct Setup {
    /// The cache.
    pub cache: Arc<Cache>,
    /// Views fed to the model.
    pub views: Vec<String>,
    /// Class names.
    pub classes: Vec<String>,
    /// Model configuration.
    pub model: ModelConfig,
    /// Model input (H, W) and frames per clip.
    pub input: (i64, i64, i64),
}

/// Open the cache and resolve views, classes and the model from the configuration.
pub fn setup(cache_dir: &Path, cfg: &Config) -> Result<Setup, String> {
    let cache = Cache::open(cache_dir).map_err(|e| e.to_string())?;
    let problems = mvdrive_schemas::verify::verify_index(&cache);
    if !problems.is_empty() {
        return Err(format!(
            "{} fails verification:\n{}\nrun `prep verify {}` and rebuild it with `prep build`",
            cache_dir.display(),
            problems.join("\n"),
            cache_dir.display()
        ));
    }
    let views = match cfg.raw("train.view") {
        "single" => {
            let v = cfg
                .opt("train.view_name")
                .map(String::from)
                .unwrap_or_else(|| cache.meta.views[0].clone());
            if !cache.meta.views.contains(&v) {
                return Err(format!(
                    "train.view_name `{v}` is not a view of the cache (views: {})",
                    cache.meta.views.join(", ")
                ));
            }
            vec![v]
        }
        _ => cache.meta.views.clone(),
    };
    let classes: Vec<String> = cache.labels.iter().map(|l| l.label.clone()).collect();
    if let Some(n) = cfg.opt_u32("model.model_class_num") {
        if n as usize != classes.len() {
            return Err(format!(
                "model.model_class_num={n} but the cache has {} classes ({}); set it to {} or to null",
                classes.len(),
                classes.join(", "),
                classes.len()
            ));
        }
    }
    let backbone: BackboneKind = cfg
        .raw("model.backbone")
        .parse()
        .map_err(|e: crate::backbone::BackboneError| e.to_string())?;
    let fusion: FusionMode = cfg
        .raw("model.fusion_mode")
        .parse()
        .map_err(|e: crate::model::ModelError| e.to_string())?;
    let p = &cache.meta.params;
    let (h, w) = cfg
        .img_size()
        .unwrap_or((p.img_height as i64, p.img_width as i64));
    if (h, w) != (p.img_height as i64, p.img_width as i64) {
        eprintln!(
            "note: the cache holds {}x{} frames; they are resized to data.img_size={h}x{w} on the device (pass data.img_size={}x{} to skip this)",
            p.img_height, p.img_width, p.img_height, p.img_width
        );
    }
    let t = cfg.int("data.uniform_temporal_subsample_num");
    let input_type: InputType = cfg
        .raw("model.input_type")
        .parse()
        .map_err(|e: crate::model::ModelError| e.to_string())?;
    let keypoints = if input_type.uses_kpt() {
        Some(keypoint_spec(&cache, &views)?)
    } else {
        None
    };
    let model = ModelConfig {
        backbone,
        fusion,
        num_classes: classes.len() as i64,
        num_views: views.len() as i64,
        input_type,
        modality_fusion: cfg
            .raw("model.modality_fusion")
            .parse()
            .map_err(|e: crate::model::ModelError| e.to_string())?,
        clip: (t, h, w),
        keypoints,
        settings: backbone_settings(cfg)?,
    };
    Ok(Setup {
        cache: Arc::new(cache),
        views,
        classes,
        model,
        input: (h, w, t),
    })
}

/// The keypoints of `views` in `cache`: joints and channels of their records, the skeleton
/// of their layout. Every view must share one layout.
fn keypoint_spec(cache: &Cache, views: &[String]) -> Result<KeypointSpec, String> {
    let mut layout: Option<&str> = None;
    for row in cache.views.iter().filter(|r| views.contains(&r.view)) {
        let Some(l) = row.keypoint_layout.as_deref() else {
            return Err(format!(
                "model.input_type needs keypoints, but view `{}` of session `{}` has none in {}; add a keypoints column to the manifest and rebuild, or use model.input_type=rgb",
                row.view, row.session, cache.dir.display()
            ));
        };
        match layout {
            None => layout = Some(l),
            Some(prev) if prev != l => {
                return Err(format!(
                    "the views' keypoints use different layouts ({prev} and {l}); train on one view (train.view=single) or rebuild with one layout"
                ))
            }
            Some(_) => {}
        }
    }
    let name = layout.ok_or("no views selected")?;
    let l = mvdrive_schemas::layout::layout(name).ok_or_else(|| {
        format!(
            "the cache's keypoint layout `{name}` is not known to this build (known: {})",
            mvdrive_schemas::layout::layout_names()
        )
    })?;
    let rec = cache
        .records
        .iter()
        .find(|r| r.modality == "kpt" && views.contains(&r.view))
        .ok_or_else(|| format!("{} has no keypoint records", cache.dir.display()))?;
    Ok(KeypointSpec {
        joints: rec.height as i64,
        channels: rec.width as i64,
        edges: l
            .edges
            .iter()
            .map(|&(a, b)| (a as usize, b as usize))
            .collect(),
    })
}

/// The `model.transformer_*`, `model.mamba_*` and `model.stgcn_*` settings.
pub fn backbone_settings(cfg: &Config) -> Result<BackboneSettings, String> {
    let mut b = BackboneSettings::default();
    b.transformer.dim = cfg.int("model.transformer_dim");
    b.transformer.layers = cfg.int("model.transformer_layers");
    b.transformer.heads = cfg.int("model.transformer_heads");
    b.transformer.ff_dim = cfg.int("model.transformer_ff_dim");
    b.transformer.dropout = cfg.float("model.transformer_dropout");
    b.transformer.pool = cfg
        .raw("model.transformer_pool")
        .parse()
        .map_err(|e: String| e)?;
    b.mamba.dim = cfg.int("model.mamba_dim");
    b.mamba.layers = cfg.int("model.mamba_layers");
    b.mamba.state = cfg.int("model.mamba_state");
    b.mamba.dropout = cfg.float("model.mamba_dropout");
    b.stgcn.hidden_dim = cfg.int("model.stgcn_hidden_dim");
    b.stgcn.layers = cfg.int("model.stgcn_layers");
    b.stgcn.temporal_kernel = cfg.int("model.stgcn_temporal_kernel");
    b.stgcn.dropout = cfg.float("model.stgcn_dropout");
    Ok(b)
}

/// A batch to the model input on `device`: RGB bytes to a normalised float
/// `[B, V, 3, T, H, W]`, keypoints to `[B, V, C + 1, T, K]` (validity last), each only
/// when the model reads it.
pub fn to_input(batch: &Batch, s: &Setup, device: Device) -> Result<Input, String> {
    let rgb = if s.model.input_type.uses_rgb() {
        Some(rgb_input(batch, s, device)?)
    } else {
        None
    };
    let kpt = match (&s.model.keypoints, s.model.input_type.uses_kpt()) {
        (Some(k), true) => {
            let (vals, mask) = batch
                .kpt
                .as_ref()
                .ok_or("the batch has no keypoints (data.load_kpt=false)")?;
            let (b, v, t) = (batch.size as i64, s.views.len() as i64, s.input.2);
            let x = Tensor::from_slice(vals)
                .to_device(device)
                .view([b, v, t, k.joints, k.channels])
                .permute([0, 1, 4, 2, 3]);
            // Valid: the frame has a detection and the joint a confidence above 0 (prep
            // stores undetected joints as zeros).
            let frame = Tensor::from_slice(mask)
                .to_device(device)
                .to_kind(Kind::Float)
                .view([b, v, 1, t, 1]);
            let conf = x.narrow(2, k.channels - 1, 1).gt(0.0).to_kind(Kind::Float);
            let m = conf * frame;
            Some(Tensor::cat(&[x, m], 2).contiguous())
        }
        _ => None,
    };
    Ok(Input { rgb, kpt })
}

fn rgb_input(batch: &Batch, s: &Setup, device: Device) -> Result<Tensor, String> {
    let rgb = batch
        .rgb
        .as_ref()
        .ok_or("the batch has no RGB (data.load_rgb=false)")?;
    let p = &s.cache.meta.params;
    let (ch, cw) = (p.img_height as i64, p.img_width as i64);
    let (b, v, t) = (batch.size as i64, s.views.len() as i64, s.input.2);
    // Stays u8 until it is on the device.
    let x = Tensor::from_slice(rgb)
        .to_device(device)
        .view([b, v, t, ch, cw, 3])
        .permute([0, 1, 5, 2, 3, 4]);
    let mut x = x.to_kind(Kind::Float) / 255.0;
    let (h, w) = (s.input.0, s.input.1);
    if (h, w) != (ch, cw) {
        x = x
            .reshape([b * v, 3, t, ch, cw])
            .upsample_trilinear3d([t, h, w], false, None, None, None)
            .view([b, v, 3, t, h, w]);
    }
    Ok(normalize_kinetics(&x))
}

/// Result of evaluating a model on a split.
pub struct Evaluation {
    /// Confusion matrix.
    pub confusion: ConfusionMatrix,
    /// Mean loss.
    pub loss: f64,
    /// (segment id, target, prediction, probabilities) per segment.
    pub predictions: Vec<(u64, usize, usize, Vec<f64>)>,
}

/// Evaluate deterministically (centre frames, no jitter) over every item of `sampler`.
pub fn evaluate(
    model: &MultiViewModel,
    loader: &Arc<Loader>,
    sampler: &Arc<Sampler>,
    s: &Setup,
    device: Device,
    workers: usize,
) -> Result<Evaluation, String> {
    let mut cm = ConfusionMatrix::new(s.classes.len());
    let (mut loss, mut n) = (0.0, 0usize);
    let mut predictions = Vec::new();
    for batch in Prefetch::start(loader.clone(), sampler.clone(), 0, 0, false, workers) {
        let batch = batch?;
        let x = to_input(&batch, s, device)?;
        let y = Tensor::from_slice(&batch.labels).to_device(device);
        let scores = tch::no_grad(|| model.forward_t(&x, false));
        loss += loss_of(&scores, &y, 0.0).double_value(&[]) * batch.size as f64;
        n += batch.size;
        let probs = scores.softmax(-1, Kind::Double).to_device(Device::Cpu);
        let pred: Vec<i64> =
            Vec::try_from(probs.argmax(-1, false)).map_err(|e: tch::TchError| e.to_string())?;
        for (i, (&target, &p)) in batch.labels.iter().zip(&pred).enumerate() {
            cm.add(target as usize, p as usize)
                .map_err(|e| e.to_string())?;
            let row: Vec<f64> =
                Vec::try_from(probs.get(i as i64)).map_err(|e: tch::TchError| e.to_string())?;
            predictions.push((batch.segments[i], target as usize, p as usize, row));
        }
    }
    Ok(Evaluation {
        confusion: cm,
        loss: loss / n.max(1) as f64,
        predictions,
    })
}

/// Arguments of `train fit`.
pub struct FitArgs {
    /// Cache folder.
    pub cache: PathBuf,
    /// Resolved configuration (before a resume merges the checkpoint's).
    pub config: Config,
    /// Overrides given on the command line (re-applied over a checkpoint's config).
    pub overrides: Vec<String>,
    /// `--config` file, re-applied over a checkpoint's config.
    pub config_file: Option<PathBuf>,
    /// Checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// No progress bar.
    pub quiet: bool,
}

/// What `train fit` did.
pub struct FitSummary {
    /// `logs/<experiment>/version_N`.
    pub run_dir: PathBuf,
    /// One row per finished epoch of this run.
    pub epochs: Vec<EpochMetrics>,
    /// Best monitored value and its epoch.
    pub best: Option<(f64, u64)>,
    /// Last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// True if early stopping ended the run.
    pub stopped_early: bool,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss: u64,
}

fn next_version(dir: &Path) -> PathBuf {
    let mut n = 0;
    while dir.join(format!("version_{n}")).exists() {
        n += 1;
    }
    dir.join(format!("version_{n}"))
}

fn better(monitor: &str, a: f64, b: f64) -> bool {
    if a.is_nan() {
        return false;
    }
    if b.is_nan() {
        return true;
    }
    if monitor == "val_loss" {
        a < b
    } else {
        a > b
    }
}

/// Run `train fit`.
pub fn fit(args: FitArgs) -> Result<FitSummary, String> {
    let mut cfg = args.config.clone();
    let resume_state = match &args.resume {
        Some(ckpt) => {
            let st = checkpoint::load_state(ckpt)?;
            // The checkpoint's settings, then what the user gave now (e.g. more epochs).
            let mut c = Config::default();
            c.apply_yaml(&st.config_yaml).map_err(|e| e.to_string())?;
            if let Some(f) = &args.config_file {
                c.apply_yaml_file(f).map_err(|e| e.to_string())?;
            }
            c.apply_overrides(&args.overrides)
                .map_err(|e| e.to_string())?;
            cfg = c;
            Some(st)
        }
        None => None,
    };
    cfg.check_supported().map_err(|e| e.to_string())?;
    let s = setup(&args.cache, &cfg)?;
    if let Some(st) = &resume_state {
        // Mid-epoch, the batches depend on these: changing them breaks "same batches".
        if st.next_batch > 0 {
            let mut then = Config::default();
            then.apply_yaml(&st.config_yaml)
                .map_err(|e| e.to_string())?;
            for k in [
                "data.batch_size",
                "data.uniform_temporal_subsample_num",
                "data.img_size",
                "data.train_split",
                "data.fold",
                "data.balanced_sampler",
                "train.seed",
                "train.accumulate_grad_batches",
            ] {
                if then.raw(k) != cfg.raw(k) {
                    return Err(format!(
                        "--resume: the checkpoint stopped mid-epoch with {k}={}; resuming with {k}={} would change the remaining batches (resume from an epoch-end checkpoint to change it)",
                        then.raw(k),
                        cfg.raw(k)
                    ));
                }
            }
        }
        // The model's shape must match the checkpoint's, at any resume point.
        let mut then_cfg = Config::default();
        then_cfg
            .apply_yaml(&st.config_yaml)
            .map_err(|e| e.to_string())?;
        for k in crate::config::KEYS.iter().map(|k| k.name).filter(|n| {
            [
                "model.input_type",
                "model.modality_fusion",
                "model.transformer_",
                "model.mamba_",
                "model.stgcn_",
                "data.img_size",
                "data.uniform_temporal_subsample_num",
            ]
            .iter()
            .any(|p| n.starts_with(p))
        }) {
            // Dropout does not change shapes; input sizes only matter to the token
            // backbones (their positional embeddings).
            let tokens = matches!(cfg.raw("model.backbone"), "transformer" | "mamba");
            if k.ends_with("_dropout") || (k.starts_with("data.") && !tokens) {
                continue;
            }
            if then_cfg.raw(k) != cfg.raw(k) {
                return Err(format!(
                    "--resume: the checkpoint was trained with {k}={}; this run has {k}={} (the model's shape depends on it)",
                    then_cfg.raw(k),
                    cfg.raw(k)
                ));
            }
        }
        let now = (
            cfg.raw("model.backbone"),
            cfg.raw("model.fusion_mode"),
            &s.views,
            &s.classes,
        );
        let then = (
            st.backbone.as_str(),
            st.fusion.as_str(),
            &st.views,
            &st.classes,
        );
        if now != then {
            return Err(format!(
                "--resume: the checkpoint was trained with backbone {}, fusion {}, views {:?}, classes {:?}; this run has {}, {}, {:?}, {:?}",
                then.0, then.1, then.2, then.3, now.0, now.1, now.2, now.3
            ));
        }
    }
    let device = device(&cfg)?;
    let seed = cfg.int("train.seed") as u64;
    tch::manual_seed(seed as i64);
    let precision = Precision::parse(cfg.raw("trainer.precision"), device)?;
    let mut tr = Trainer::new(
        &s.model,
        device,
        precision,
        cfg.bool("model.use_gradient_checkpointing"),
        cfg.float("train.weight_decay"),
    )?;
    if let (Some(ckpt), Some(st)) = (&args.resume, &resume_state) {
        checkpoint::load_weights(ckpt, &mut tr.vs)?;
        checkpoint::load_optimizer(ckpt, &mut tr.opt, st.global_step)?;
        // The saved scaler only if it is of this precision's kind (a bf16 checker must not
        // become an fp16 run's scaler, nor an fp16 scale an fp32 run's).
        if let Some(sc) = &st.scaler {
            let kind = |g: &crate::scaler::GradScaler| (g.enabled, g.growth_factor == 1.0);
            if kind(sc) == kind(&tr.scaler) {
                tr.scaler = sc.clone();
            }
        }
    }

    // Data.
    let (train_sel, val_sel) = match cfg.opt_u32("data.fold") {
        Some(k) => (
            Selection::Folds {
                include: false,
                fold: k,
            },
            Some(Selection::Folds {
                include: true,
                fold: k,
            }),
        ),
        None => (
            Selection::Split(cfg.opt("data.train_split").unwrap_or("train").to_string()),
            cfg.opt("data.val_split")
                .map(|v| Selection::Split(v.to_string())),
        ),
    };
    let train_items = select(&s.cache, &train_sel)?;
    let val_items = match &val_sel {
        Some(v) => Some(select(&s.cache, v)?),
        None => None,
    };
    let t = s.input.2 as usize;
    let loader = Arc::new(Loader::new(
        s.cache.clone(),
        s.views.clone(),
        t,
        // What the model reads, nothing more (data.load_* were checked against it).
        s.model.input_type.uses_rgb(),
        s.model.input_type.uses_kpt(),
    )?);
    let bs = cfg.usize("data.batch_size");
    let train_sampler = Arc::new(Sampler {
        items: train_items,
        batch_size: bs,
        seed,
        balanced: cfg.bool("data.balanced_sampler"),
        shuffle: true,
    });
    let val_sampler = val_items.map(|items| {
        Arc::new(Sampler {
            items,
            batch_size: bs,
            seed,
            balanced: false,
            shuffle: false,
        })
    });
    let workers = cfg.usize("data.num_workers");
    let accum = cfg.usize("train.accumulate_grad_batches").max(1);
    let batches = train_sampler.batches();
    let steps_per_epoch = batches.div_ceil(accum) as u64;
    let max_epochs = cfg.int("train.max_epochs") as u64;
    let total_steps = steps_per_epoch * max_epochs;
    let warmup = (cfg.float("train.warmup_epochs") * steps_per_epoch as f64).round() as u64;
    let peak = cfg.float("train.lr");
    let (clip, smoothing) = (
        cfg.float("train.grad_clip"),
        cfg.float("train.label_smoothing"),
    );
    let monitor = cfg.raw("train.monitor").to_string();
    let patience = cfg.int("train.early_stopping_patience") as u64;
    let every = cfg.int("train.checkpoint_every_n_steps") as u64;

    // Run folder.
    let exp_dir = Path::new(cfg.raw("trainer.log_dir")).join(cfg.raw("trainer.experiment"));
    std::fs::create_dir_all(&exp_dir).map_err(|e| format!("{}: {e}", exp_dir.display()))?;
    let run_dir = next_version(&exp_dir);
    let ckpt_dir = run_dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir).map_err(|e| format!("{}: {e}", ckpt_dir.display()))?;
    std::fs::write(run_dir.join("config.yaml"), cfg.to_yaml())
        .map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let mut csv = MetricsCsv::open(run_dir.join("metrics.csv")).map_err(|e| e.to_string())?;
    if !args.quiet {
        eprintln!("{}", summary(&tr.vs));
        eprintln!(
            "train fit: {} training segments, {} validation, views {:?}, {} classes, {} batches/epoch, device {device:?} -> {}",
            train_sampler.items.len(),
            val_sampler.as_ref().map_or(0, |v| v.items.len()),
            s.views,
            s.classes.len(),
            batches,
            run_dir.display()
        );
    }

    if let Some(st) = &resume_state {
        if st.next_batch > batches {
            return Err(format!(
                "--resume: the checkpoint's next batch {} is past the {batches} batches of an epoch; the checkpoint does not belong to this cache and settings",
                st.next_batch
            ));
        }
    }
    let mut st = resume_state.clone().unwrap_or(TrainerState {
        version: 1,
        epoch: 0,
        next_batch: 0,
        global_step: 0,
        epoch_loss_sum: 0.0,
        epoch_batches: 0,
        best: None,
        bad_epochs: 0,
        config_yaml: String::new(),
        backbone: cfg.raw("model.backbone").to_string(),
        fusion: cfg.raw("model.fusion_mode").to_string(),
        views: s.views.clone(),
        classes: s.classes.clone(),
        input: s.input,
        scaler: None,
    });
    st.config_yaml = cfg.to_yaml();
    let mut rows = Vec::new();
    let mut last_ckpt = None;
    let mut stopped_early = false;
    let save =
        |st: &TrainerState, vs: &VarStore, opt: &AdamW, name: &str| -> Result<PathBuf, String> {
            let path = ckpt_dir.join(format!("{name}.safetensors"));
            checkpoint::save(&path, vs, opt, st)?;
            Ok(path)
        };

    while st.epoch < max_epochs {
        let epoch = st.epoch;
        let started = Instant::now();
        let pb = if args.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let pb = indicatif::ProgressBar::new(batches as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ({per_sec}, ETA {eta}) {msg}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_prefix(format!("{}/{}", epoch + 1, max_epochs));
            pb.set_position(st.next_batch as u64);
            pb
        };
        let mut lr = lr_at(st.global_step, total_steps, warmup, peak);
        for batch in Prefetch::start(
            loader.clone(),
            train_sampler.clone(),
            epoch,
            st.next_batch,
            true,
            workers,
        ) {
            let batch = batch?;
            let b = batch.index;
            let x = to_input(&batch, &s, device)?;
            let y = Tensor::from_slice(&batch.labels).to_device(device);
            let window_start = (b / accum) * accum;
            // Each accumulation window averages its batches; the last window of an epoch
            // may be shorter (it steps with what it has, see `crate::step`).
            let window = accum.min(batches - window_start);
            // Unique per micro-batch: (step, position in its window).
            let micro_seed = (seed as i64).wrapping_mul(1_000_003).wrapping_add(
                (st.global_step as i64)
                    .wrapping_mul(accum as i64)
                    .wrapping_add((b - window_start) as i64),
            );
            let lv = tr.micro_batch(&x, &y, smoothing, window, micro_seed)?;
            // Under fp16 an overflowing forward pass is the loss scaler's business: its
            // gradients are inf, the step is skipped and the scale backs off.
            let fp16_overflow = !lv.is_finite() && tr.precision == Precision::Fp16Mixed;
            if !lv.is_finite() && !fp16_overflow {
                return Err(format!(
                    "the training loss is {lv} at epoch {epoch}, batch {b} (optimizer step {}): stopping without saving a checkpoint of this state; lower train.lr (now {peak}) or check the data (segments {:?})",
                    st.global_step, batch.segments
                ));
            }
            if !fp16_overflow {
                st.epoch_loss_sum += lv;
                st.epoch_batches += 1;
            }
            st.next_batch = b + 1;
            if b + 1 == window_start + window {
                lr = lr_at(st.global_step, total_steps, warmup, peak);
                let before = tr.scaler.scale;
                let out = tr.step(lr, clip);
                if !out.applied && !args.quiet {
                    pb.println(format!(
                        "step {}: inf/NaN gradients, step skipped, loss scale {before} -> {}",
                        st.global_step, out.scale
                    ));
                }
                st.scaler = tr.scaler.enabled.then(|| tr.scaler.clone());
                st.global_step += 1;
                if every > 0 && st.global_step % every == 0 && b + 1 < batches {
                    let path = save(
                        &st,
                        &tr.vs,
                        &tr.opt,
                        &format!("epoch={epoch}-step={}", st.global_step),
                    )?;
                    if !args.quiet {
                        pb.println(format!("checkpoint {}", path.display()));
                    }
                }
            }
            let gpu = match (device, crate::cuda_mem::used_bytes()) {
                (Device::Cuda(_), Some(b)) => format!(" cuda {:.0} MiB", b as f64 / 1048576.0),
                _ => String::new(),
            };
            pb.set_message(format!(
                "step {}/{total_steps} loss {lv:.4} lr {lr:.2e} rss {:.0} MiB{gpu}",
                st.global_step,
                rss_bytes() as f64 / 1048576.0
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
        let train_loss = st.epoch_loss_sum / st.epoch_batches.max(1) as f64;
        let mut row = EpochMetrics {
            epoch: epoch as u32,
            step: st.global_step,
            train_loss,
            val_loss: f64::NAN,
            top1: f64::NAN,
            mean_class_acc: f64::NAN,
            macro_f1: f64::NAN,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut improved = false;
        if let Some(vsmp) = &val_sampler {
            let ev = evaluate(&tr.model, &loader, vsmp, &s, device, workers)?;
            row = row.with_confusion(&ev.confusion);
            row.val_loss = ev.loss;
            std::fs::write(
                run_dir.join("confusion.csv"),
                ev.confusion.to_csv(&s.classes),
            )
            .map_err(|e| e.to_string())?;
            plot::plot_confusion(&ev.confusion, &s.classes, &run_dir.join("confusion.png"))
                .map_err(|e| e.to_string())?;
            let value = match monitor.as_str() {
                "val_top1" => row.top1,
                "val_mean_class_acc" => row.mean_class_acc,
                "val_loss" => row.val_loss,
                _ => row.macro_f1,
            };
            improved = st.best.is_none_or(|(b, _)| better(&monitor, value, b));
            if improved {
                st.best = Some((value, epoch));
                st.bad_epochs = 0;
            } else {
                st.bad_epochs += 1;
            }
        }
        row.seconds = started.elapsed().as_secs_f64();
        csv.append(&row).map_err(|e| e.to_string())?;
        rows.push(row);
        let all = MetricsCsv::read(run_dir.join("metrics.csv")).map_err(|e| e.to_string())?;
        plot::plot_metrics(&all, &run_dir.join("metrics.png")).map_err(|e| e.to_string())?;
        if !args.quiet {
            eprintln!(
                "epoch {}/{}: train loss {:.4}, val loss {:.4}, top1 {:.3}, mean class acc {:.3}, macro-F1 {:.3} ({:.1} s)",
                epoch + 1,
                max_epochs,
                row.train_loss,
                row.val_loss,
                row.top1,
                row.mean_class_acc,
                row.macro_f1,
                row.seconds
            );
        }
        st.epoch += 1;
        st.next_batch = 0;
        st.epoch_loss_sum = 0.0;
        st.epoch_batches = 0;
        let path = save(
            &st,
            &tr.vs,
            &tr.opt,
            &format!("epoch={epoch}-step={}", st.global_step),
        )?;
        // last.* and best.*: copies under temporary names, renamed, JSON last.
        let (w, o, j) = checkpoint::paths(&path);
        let stamp = format!("epoch={epoch}-step={}", st.global_step);
        let mut aliases = vec!["last"];
        if improved {
            aliases.push("best");
        }
        for alias in aliases {
            for f in [&w, &o, &j] {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().replacen(&stamp, alias, 1))
                    .unwrap_or_default();
                let tmp = ckpt_dir.join(format!("{name}.tmp"));
                std::fs::copy(f, &tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, ckpt_dir.join(&name))
                    .map_err(|e| format!("{}: {e}", name))?;
            }
        }
        last_ckpt = Some(path);
        if patience > 0 && st.bad_epochs >= patience {
            stopped_early = true;
            if !args.quiet {
                eprintln!("early stopping: {monitor} has not improved for {patience} epoch(s)");
            }
            break;
        }
    }
    Ok(FitSummary {
        run_dir,
        epochs: rows,
        best: st.best,
        last_checkpoint: last_ckpt,
        stopped_early,
        peak_rss: peak_rss_bytes(),
    })
}

/// What `train eval` wrote.
pub struct EvalSummary {
    /// predictions.csv.
    pub predictions: PathBuf,
    /// metrics.json.
    pub metrics: PathBuf,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Macro-F1.
    pub macro_f1: f64,
    /// Segments evaluated.
    pub segments: usize,
}

/// Run `train eval`: the checkpoint's model on a split of a cache.
pub fn eval(
    ckpt: &Path,
    cache_dir: &Path,
    split: &str,
    out: Option<&Path>,
    device_name: &str,
) -> Result<EvalSummary, String> {
    let st = checkpoint::load_state(ckpt)?;
    let mut cfg = Config::default();
    cfg.apply_yaml(&st.config_yaml)
        .map_err(|e| format!("{}: its saved configuration: {e}", ckpt.display()))?;
    cfg.set("trainer.device", device_name, false)
        .map_err(|e| e.to_string())?;
    let s = setup(cache_dir, &cfg)?;
    if s.classes != st.classes {
        return Err(format!(
            "{}: the checkpoint has {} classes ({}) but the cache {} has {} ({}); evaluate on a cache built from the same labels",
            ckpt.display(),
            st.classes.len(),
            st.classes.join(", "),
            cache_dir.display(),
            s.classes.len(),
            s.classes.join(", ")
        ));
    }
    if s.views != st.views {
        return Err(format!(
            "{}: trained on views {:?} but the cache gives {:?}",
            ckpt.display(),
            st.views,
            s.views
        ));
    }
    let device = device(&cfg)?;
    let mut vs = VarStore::new(device);
    let model = MultiViewModel::new(&vs.root(), s.model.clone()).map_err(|e| e.to_string())?;
    checkpoint::load_weights(ckpt, &mut vs)?;
    let items = select(&s.cache, &Selection::Split(split.to_string()))
        .map_err(|e| format!("{e} (for `train eval`, pass the split with --split)"))?;
    let loader = Arc::new(Loader::new(
        s.cache.clone(),
        s.views.clone(),
        s.input.2 as usize,
        s.model.input_type.uses_rgb(),
        s.model.input_type.uses_kpt(),
    )?);
    let sampler = Arc::new(Sampler {
        items,
        batch_size: cfg.usize("data.batch_size"),
        seed: 0,
        balanced: false,
        shuffle: false,
    });
    let ev = evaluate(
        &model,
        &loader,
        &sampler,
        &s,
        device,
        cfg.usize("data.num_workers"),
    )?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| {
        ckpt.parent()
            .unwrap_or(Path::new("."))
            .join(format!("eval-{split}"))
    });
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut csv = String::from("segment_id,session,start_s,end_s,label,pred,correct");
    for c in &s.classes {
        csv += &format!(",p_{c}");
    }
    csv.push('\n');
    for (seg_id, target, pred, probs) in &ev.predictions {
        let seg = &s.cache.segments[*seg_id as usize];
        csv += &format!(
            "{seg_id},{},{},{},{},{},{}",
            seg.session,
            seg.start_s,
            seg.end_s,
            s.classes[*target],
            s.classes[*pred],
            target == pred
        );
        for p in probs {
            csv += &format!(",{p:.6}");
        }
        csv.push('\n');
    }
    let pred_path = out.join("predictions.csv");
    std::fs::write(&pred_path, csv).map_err(|e| format!("{}: {e}", pred_path.display()))?;
    let cm = &ev.confusion;
    let per_class: Vec<serde_json::Value> = cm
        .per_class()
        .iter()
        .zip(&s.classes)
        .map(|(m, c)| serde_json::json!({"class": c, "support": m.support, "precision": m.precision, "recall": m.recall, "f1": m.f1}))
        .collect();
    let confusion: Vec<Vec<u64>> = (0..s.classes.len()).map(|r| cm.row(r).to_vec()).collect();
    let json = serde_json::json!({
        "checkpoint": ckpt.display().to_string(),
        "cache": cache_dir.display().to_string(),
        "split": split,
        "segments": ev.predictions.len(),
        "loss": ev.loss,
        "top1": cm.accuracy(),
        "mean_class_acc": cm.mean_class_accuracy(),
        "macro_f1": cm.macro_f1(),
        "classes": s.classes,
        "per_class": per_class,
        "confusion": confusion,
    });
    let metrics_path = out.join("metrics.json");
    std::fs::write(
        &metrics_path,
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", metrics_path.display()))?;
    plot::plot_confusion(cm, &s.classes, &out.join("confusion.png")).map_err(|e| e.to_string())?;
    Ok(EvalSummary {
        predictions: pred_path,
        metrics: metrics_path,
        top1: cm.accuracy(),
        macro_f1: cm.macro_f1(),
        segments: ev.predictions.len(),
    })
}
