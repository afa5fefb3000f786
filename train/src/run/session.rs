//! The session every command shares: the configuration, the device, the verified cache,
//! the views and classes, the model's settings, and the loader and samplers built from
//! them. `fit`, `eval`, the probe and the benchmarks all start here, so they read the same
//! clips the same way.

use std::path::Path;
use std::sync::Arc;

use mvdrive_common::bytes::format_bytes;
use mvdrive_schemas::Cache;
use tch::{Device, Tensor};

use crate::config::{DeviceChoice, TrainConfig, ViewMode};
use crate::data::augment::Augment;
use crate::data::input::{crop_windows, to_input, Spatial, Window};
use crate::data::loader::{Batch, Loader};
use crate::data::mix;
use crate::data::sampler::{select, Item, Sampler, Selection, Shard};
use crate::error::{Result, TrainError};
use crate::model::{ClipShape, Input, KeypointSpec, ModelConfig};
use crate::optim::precision::Precision;

/// Resolves `trainer.device` against this machine.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !tch::Cuda::is_available() {
                return Err(format!(
                    "trainer.device=cuda:{n} but CUDA is not available to this binary (no GPU, or built without the `cuda` feature); use trainer.device=cpu"
                )
                .into());
            }
            if n >= tch::Cuda::device_count() as usize {
                return Err(format!(
                    "trainer.device=cuda:{n} but only {} CUDA device(s) exist",
                    tch::Cuda::device_count()
                )
                .into());
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// What a run trains or evaluates on.
pub struct Session {
    /// The configuration.
    pub config: TrainConfig,
    /// The device of `trainer.device`.
    pub device: Device,
    /// `trainer.precision`, checked against the device.
    pub precision: Precision,
    /// The verified cache.
    pub cache: Arc<Cache>,
    /// Views fed to the model, in order.
    pub views: Vec<String>,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    /// The model to build.
    pub model: ModelConfig,
    /// Training-time augmentation (`None`: `data.aug.enabled=false`).
    pub augment: Option<Augment>,
    /// Identity of the cache's `meta.json` when it was opened (see [`Session::check_cache`]).
    meta_id: Option<(u64, i64)>,
}

/// (inode, mtime ns) of a file: a `prep build` that commits renames a new `meta.json`
/// into place, which changes both.
fn file_id(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

impl Session {
    /// Opens and verifies the cache, and resolves device, views, classes and the model.
    pub fn open(cache_dir: &Path, config: TrainConfig) -> Result<Session> {
        Session::open_with_classes(cache_dir, config, None)
    }

    /// [`Session::open`] for a trained model's `classes` (`train predict`: the cache may
    /// have other labels, or none).
    pub fn open_with_classes(
        cache_dir: &Path,
        config: TrainConfig,
        classes: Option<Vec<String>>,
    ) -> Result<Session> {
        let meta_id = file_id(&cache_dir.join("meta.json"));
        let cache = Cache::open(cache_dir)?;
        let problems = mvdrive_schemas::verify::verify_index(&cache);
        if !problems.is_empty() {
            return Err(format!(
                "{} fails verification:\n{}\nrun `prep verify {}` and rebuild it with `prep build`",
                cache_dir.display(),
                problems.join("\n"),
                cache_dir.display()
            )
            .into());
        }
        if let Some(w) = cache.checksum_warning() {
            eprintln!("warning: {w}");
        }
        let device = resolve_device(config.trainer.device)?;
        let precision = config.trainer.precision.check_device(device)?;
        if let Some(note) = precision.slow_note(device) {
            eprintln!("note: {note}");
        }
        let views = select_views(&cache, &config)?;
        if cache.meta.partial_views
            && views.len() > 1
            && config.model.fusion_mode == crate::model::FusionMode::FeatureConcat
        {
            return Err(format!(
                "{}: some sessions lack a camera (built with --allow-missing-views), and model.fusion_mode=feature_concat needs every view of every sample; use logit_mean, prob_mean or feature_mean (they average over the views present), or train.view=single",
                cache_dir.display()
            )
            .into());
        }
        let model_classes = classes.is_some();
        if !model_classes && cache.labels.is_empty() {
            return Err(format!(
                "{} has no labels (it was built without --segments): training and evaluation need labelled segments; run `train predict --cache` on it with a trained model",
                cache_dir.display()
            )
            .into());
        }
        let classes: Vec<String> =
            classes.unwrap_or_else(|| cache.labels.iter().map(|l| l.label.clone()).collect());
        if let Some(n) = config.model.model_class_num.filter(|_| !model_classes) {
            if n as usize != classes.len() {
                return Err(format!(
                    "model.model_class_num={n} but the cache has {} classes ({}); set it to {} or to null",
                    classes.len(),
                    classes.join(", "),
                    classes.len()
                )
                .into());
            }
        }
        let p = &cache.meta.params;
        let cache_hw = (p.img_height as i64, p.img_width as i64);
        let (h, w) = config.img_size_or(cache_hw);
        if (h, w) != cache_hw {
            eprintln!(
                "note: the cache holds {}x{} frames; they are resized to data.img_size={h}x{w} on the device (pass data.img_size={}x{} to skip this)",
                p.img_height, p.img_width, p.img_height, p.img_width
            );
        }
        let m = &config.model;
        let keypoints = if m.input_type.uses_kpt() {
            Some(keypoint_spec(&cache, &views)?)
        } else {
            None
        };
        let model = ModelConfig {
            backbone: m.backbone,
            fusion: m.fusion_mode,
            num_classes: classes.len() as i64,
            num_views: views.len() as i64,
            input_type: m.input_type,
            modality_fusion: m.modality_fusion,
            clip: ClipShape {
                t: config.data.uniform_temporal_subsample_num,
                h,
                w,
            },
            keypoints,
            settings: m.backbones.clone(),
        };
        check_batch_memory(&config, &model, cache_hw)?;
        if model.input_type.uses_rgb() {
            crop_windows(cache_hw, config.eval.crops)?;
        }
        let (augment, note) = Augment::new(&config.data.aug, &classes, config.train.seed)?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        Ok(Session {
            augment,
            config,
            device,
            precision,
            cache: Arc::new(cache),
            views,
            classes,
            model,
            meta_id,
        })
    }

    /// Fails when the cache was rebuilt (a new `meta.json` committed) since it was opened:
    /// open shards would then mix two builds' data. `train fit` checks before every batch.
    pub fn check_cache(&self) -> Result<()> {
        let meta = self.cache.dir.join("meta.json");
        if file_id(&meta) != self.meta_id {
            return Err(format!(
                "{} was rebuilt (or removed) while training: its meta.json changed, so the batches would mix two builds; start train fit again (--resume from the last checkpoint keeps the progress)",
                self.cache.dir.display()
            )
            .into());
        }
        Ok(())
    }

    /// The clip the model reads.
    pub fn clip(&self) -> ClipShape {
        self.model.clip
    }

    /// The cache's frame size (height, width).
    pub fn cache_hw(&self) -> (i64, i64) {
        let p = &self.cache.meta.params;
        (p.img_height as i64, p.img_width as i64)
    }

    /// The loader of this session's views and clip length, reading what the model reads
    /// and nothing more (`data.load_*` were checked against the model).
    pub fn loader(&self) -> Result<Arc<Loader>> {
        Ok(Arc::new(self.new_loader()?))
    }

    /// A loader as [`Session::loader`] gives, not yet shared (to change its settings).
    pub fn new_loader(&self) -> Result<Loader> {
        Loader::new(
            self.cache.clone(),
            self.views.clone(),
            self.clip().t as usize,
            self.model.input_type.uses_rgb(),
            self.model.input_type.uses_kpt(),
        )
    }

    /// What `train fit` trains on: every fold but `data.fold`, or `data.train_split`.
    pub fn train_selection(&self) -> Selection {
        match self.config.data.fold {
            Some(fold) => Selection::Folds {
                include: false,
                fold,
            },
            None => Selection::Split(self.config.data.train_split.clone()),
        }
    }

    /// What `train fit` validates on: fold `data.fold`, or `data.val_split` (if any).
    pub fn val_selection(&self) -> Option<Selection> {
        match self.config.data.fold {
            Some(fold) => Some(Selection::Folds {
                include: true,
                fold,
            }),
            None => self.config.data.val_split.clone().map(Selection::Split),
        }
    }

    /// The clips of `selection`. Sessions that lack every view read here (a camera
    /// missing in a cache built with `--allow-missing-views`, with `train.view=single`) are
    /// left out, and a note says how many.
    pub fn items(&self, selection: &Selection) -> Result<Vec<Item>> {
        let mut items = select(&self.cache, selection)?;
        if self.cache.meta.partial_views {
            let has: std::collections::HashSet<&str> = self
                .cache
                .views
                .iter()
                .filter(|r| self.views.contains(&r.view))
                .map(|r| r.session.as_str())
                .collect();
            let segments = &self.cache.segments;
            let (kept, out): (Vec<Item>, Vec<Item>) = items
                .into_iter()
                .partition(|i| has.contains(segments[i.segment].session.as_str()));
            if !out.is_empty() {
                let sessions: std::collections::HashSet<&str> = out
                    .iter()
                    .map(|i| segments[i.segment].session.as_str())
                    .collect();
                eprintln!(
                    "note: {} session(s) without view {} left out ({} segment(s))",
                    sessions.len(),
                    self.views.join(", "),
                    out.len()
                );
            }
            items = kept;
        }
        Ok(items)
    }

    /// The training sampler: shuffled by `train.seed`, class-balanced if asked; `shard` is
    /// this rank's part of each epoch ([`Shard::WHOLE`] alone).
    pub fn train_sampler(&self, items: Vec<Item>, shard: Shard) -> Arc<Sampler> {
        Arc::new(Sampler {
            items,
            batch_size: self.config.data.batch_size,
            seed: self.config.train.seed,
            balanced: self.config.data.balanced_sampler,
            shuffle: true,
            shard,
        })
    }

    /// An evaluation sampler: every item once, in order.
    pub fn eval_sampler(&self, items: Vec<Item>) -> Arc<Sampler> {
        Arc::new(Sampler {
            items,
            batch_size: self.config.data.batch_size,
            seed: self.config.train.seed,
            balanced: false,
            shuffle: false,
            shard: Shard::WHOLE,
        })
    }

    /// A batch as the model's input on this session's device.
    pub fn input(&self, batch: &Batch) -> Result<Input> {
        to_input(
            batch,
            &self.model,
            self.cache_hw(),
            self.device,
            Spatial::Whole,
        )
    }

    /// A training batch as the model's input, augmented as `data.aug.*` says (draws from
    /// the batch's position in `epoch`), and its targets on the device: class indices
    /// `[B]` (swapped where a flip swaps them), or class probabilities `[B, classes]` when
    /// the batch is mixed (`data.aug.mixup` / `data.aug.cutmix`).
    pub fn train_input(&self, batch: &Batch, epoch: u64) -> Result<(Input, Tensor)> {
        let Some(aug) = &self.augment else {
            let y = Tensor::from_slice(&batch.labels).to_device(self.device);
            return Ok((self.input(batch)?, y));
        };
        let views = self.model.num_views as usize;
        let draws = aug.draw(epoch, batch.first, batch.size, views, self.cache_hw());
        let spatial = Spatial::Augmented {
            draws: &draws,
            grey: aug.config.grey,
            kpt_jitter: aug.config.kpt_jitter,
        };
        let mut x = to_input(batch, &self.model, self.cache_hw(), self.device, spatial)?;
        let labels = aug.labels(&batch.labels, &draws, views);
        let mixing = mix::draw(&aug.config, aug.seed, epoch, batch.draw, batch.size);
        match (mixing, &x.rgb) {
            (Some(d), Some(rgb)) => {
                let m = mix::apply(rgb, x.present.as_ref(), &labels, self.model.num_classes, &d);
                x.rgb = Some(m.rgb);
                x.present = m.present;
                Ok((x, m.targets))
            }
            _ => Ok((x, Tensor::from_slice(&labels).to_device(self.device))),
        }
    }

    /// The evaluation crops of this session's frames (`eval.crops`; one whole frame for a
    /// keypoint-only model).
    pub fn eval_windows(&self) -> Result<Vec<Option<Window>>> {
        if self.model.input_type.uses_rgb() {
            crop_windows(self.cache_hw(), self.config.eval.crops)
        } else {
            Ok(vec![None])
        }
    }

    /// `batch` as the model's input, showing only `window` of each frame (an evaluation
    /// crop; `None`: the whole frame).
    pub fn input_window(&self, batch: &Batch, window: Option<Window>) -> Result<Input> {
        let spatial = window.map_or(Spatial::Whole, Spatial::Window);
        to_input(batch, &self.model, self.cache_hw(), self.device, spatial)
    }
}

/// Refuses settings whose batches cannot fit in this machine's memory (a huge
/// `data.img_size` or `data.uniform_temporal_subsample_num`), before anything is
/// allocated. A floor, not an estimate: the loader holds `num_workers + 2` batches of
/// bytes, and training a float32 copy of the input plus activations of at least ten times
/// the input (every backbone's first layers are wider than its input; `train plan`
/// measures the real figure).
fn check_batch_memory(
    config: &TrainConfig,
    model: &ModelConfig,
    cache_hw: (i64, i64),
) -> Result<()> {
    let Some(available) = mvdrive_common::sys::mem_available_bytes() else {
        return Ok(());
    };
    let c = model.clip;
    let clips = (config.data.batch_size as u64).saturating_mul(model.num_views as u64);
    let per_clip = |h: i64, w: i64| (c.t as u64).saturating_mul((h * w * 3) as u64);
    let bytes = clips.saturating_mul(per_clip(cache_hw.0, cache_hw.1));
    let batches = config.data.num_workers as u64 + 2;
    let floats = clips.saturating_mul(per_clip(c.h, c.w)).saturating_mul(4);
    let need = bytes
        .saturating_mul(batches)
        .saturating_add(floats.saturating_mul(11));
    if model.input_type.uses_rgb() && need > available {
        return Err(format!(
            "batches of data.batch_size={} x {} view(s) x data.uniform_temporal_subsample_num={} x data.img_size={}x{} need at least {} ({} per u8 batch x {batches} in flight, {} per float32 input and 10x that in activations), more than the {} this machine has available; lower data.img_size, data.uniform_temporal_subsample_num or data.batch_size",
            config.data.batch_size,
            model.num_views,
            c.t,
            c.h,
            c.w,
            format_bytes(need),
            format_bytes(bytes),
            format_bytes(floats),
            format_bytes(available)
        )
        .into());
    }
    Ok(())
}

/// `train.view=single` (with `train.view_name`, default the first view) or every view.
fn select_views(cache: &Cache, config: &TrainConfig) -> Result<Vec<String>> {
    match config.train.view {
        ViewMode::Single => {
            let v = config
                .train
                .view_name
                .clone()
                .unwrap_or_else(|| cache.meta.views[0].clone());
            if !cache.meta.views.contains(&v) {
                return Err(format!(
                    "train.view_name `{v}` is not a view of the cache (views: {})",
                    cache.meta.views.join(", ")
                )
                .into());
            }
            Ok(vec![v])
        }
        ViewMode::Multi => Ok(cache.meta.views.clone()),
    }
}

/// The keypoints of `views` in `cache`: joints and channels of their records, the skeleton
/// of their layout. Every view must share one layout.
fn keypoint_spec(cache: &Cache, views: &[String]) -> Result<KeypointSpec> {
    let mut layout: Option<&str> = None;
    for row in cache.views.iter().filter(|r| views.contains(&r.view)) {
        let Some(l) = row.keypoint_layout.as_deref() else {
            return Err(format!(
                "model.input_type needs keypoints, but view `{}` of session `{}` has none in {}; add a keypoints column to the manifest and rebuild, or use model.input_type=rgb",
                row.view, row.session, cache.dir.display()
            ).into());
        };
        match layout {
            None => layout = Some(l),
            Some(prev) if prev != l => {
                return Err(format!(
                    "the views' keypoints use different layouts ({prev} and {l}); train on one view (train.view=single) or rebuild with one layout"
                ).into())
            }
            Some(_) => {}
        }
    }
    let name = layout.ok_or("no views selected")?;
    let l = mvdrive_schemas::layout::layout(name).ok_or_else(|| {
        TrainError::Other(format!(
            "the cache's keypoint layout `{name}` is not known to this build (known: {})",
            mvdrive_schemas::layout::layout_names()
        ))
    })?;
    let rec = cache
        .records
        .iter()
        .find(|r| r.modality == "kpt" && views.contains(&r.view))
        .ok_or_else(|| format!("{} has no keypoint records", cache.dir.display()))?;
    Ok(KeypointSpec {
        joints: rec.height as i64,
        ..KeypointSpec::from_layout(&l, rec.width as i64)
    })
}
