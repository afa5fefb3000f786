//! Training configuration: the key table and its checked text ([`keys`]), read once into
//! the typed [`TrainConfig`], where every rule that spans keys is checked, in one place
//! ([`TrainConfig::new`]); `trainer.device` as written ([`device`]).

pub mod choice;
pub mod device;
pub mod keys;
mod rules;

use std::path::{Path, PathBuf};

pub use device::DeviceChoice;
pub use keys::{keys_help, ConfigError, Key, Kind, Settings, KEYS};

use crate::model::backbones::mamba::MambaConfig;
use crate::model::backbones::stgcn::StgcnConfig;
use crate::model::backbones::transformer::TransformerConfig;
use crate::model::backbones::{BackboneKind, BackboneSettings};
use crate::model::{FusionMode, InputType, ModalityFusion};
use crate::optim::precision::Precision;
use crate::optim::recompute::CheckpointSegments;

crate::choice_enum! {
    /// `train.view`: one view, or every view of the cache fused.
    pub enum ViewMode for "train.view" {
        /// One view (`train.view_name`).
        Single => "single",
        /// Every view, fused.
        Multi => "multi",
    }
}

crate::choice_enum! {
    /// `train.monitor`: the validation metric of the best checkpoint and early stopping.
    pub enum Monitor for "train.monitor" {
        /// Macro-averaged F1.
        ValMacroF1 => "val_macro_f1",
        /// Top-1 accuracy.
        ValTop1 => "val_top1",
        /// Mean per-class accuracy.
        ValMeanClassAcc => "val_mean_class_acc",
        /// Validation loss (lower is better).
        ValLoss => "val_loss",
    }
}

impl Monitor {
    /// True when `a` is better than `b` for this metric; NaN is never better.
    pub fn better(self, a: f64, b: f64) -> bool {
        if a.is_nan() {
            return false;
        }
        if b.is_nan() {
            return true;
        }
        if self == Monitor::ValLoss {
            a < b
        } else {
            a > b
        }
    }

    /// True when an epoch's (monitored value, validation loss) improves on the best so far
    /// (`None`: there is none). An accuracy-like metric ties often on a small validation
    /// set; a tie is then broken by the lower validation loss (an unknown best loss, from
    /// an older checkpoint, keeps the earlier epoch).
    pub fn improves(self, (value, loss): (f64, f64), best: Option<(f64, Option<f64>)>) -> bool {
        let Some((b, best_loss)) = best else {
            return true;
        };
        self.better(value, b)
            || (self != Monitor::ValLoss
                && value == b
                && best_loss.is_some_and(|l| Monitor::ValLoss.better(loss, l)))
    }
}

crate::choice_enum! {
    /// `eval.crops`: the spatial views of each evaluated clip.
    pub enum Crops for "eval.crops" {
        /// The whole frame, as training sees it.
        One => "1",
        /// Three squares of the frame's short side along its long side.
        Three => "3",
    }
}

crate::choice_enum! {
    /// `data.aug.flip`.
    pub enum FlipMode for "data.aug.flip" {
        /// On unless a class names a side that `data.aug.flip_pairs` does not pair.
        Auto => "auto",
        /// On.
        On => "on",
        /// Off.
        Off => "off",
    }
}

/// `data.aug.*`: training-time augmentation (see [`crate::data::augment`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AugConfig {
    /// `data.aug.enabled`.
    pub enabled: bool,
    /// Smallest area fraction of the random resized crop, in (0, 1].
    pub crop_scale: f64,
    /// Aspect ratios from `1 / crop_ratio` to `crop_ratio`.
    pub crop_ratio: f64,
    /// `data.aug.flip`.
    pub flip: FlipMode,
    /// Classes that swap under a flip.
    pub flip_pairs: Vec<(String, String)>,
    /// Jitter amounts.
    pub brightness: f64,
    /// See `brightness`.
    pub contrast: f64,
    /// See `brightness`.
    pub saturation: f64,
    /// Grey footage: no saturation jitter.
    pub grey: bool,
    /// Crop and jitter drawn per view.
    pub per_view: bool,
    /// Keypoint rotation, degrees.
    pub kpt_rotate: f64,
    /// Keypoint scale amount.
    pub kpt_scale: f64,
    /// Keypoint shift, fraction of the skeleton's extent.
    pub kpt_shift: f64,
    /// Keypoint noise, fraction of the skeleton's extent.
    pub kpt_jitter: f64,
    /// Mixup's Beta alpha (0 = off).
    pub mixup: f64,
    /// CutMix's Beta alpha (0 = off).
    pub cutmix: f64,
}

/// `data.aug.flip_pairs` (`a:b,c:d`) as pairs.
fn flip_pairs(s: &Settings) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(text) = opt_text(s, "data.aug.flip_pairs") else {
        return Ok(Vec::new());
    };
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once(':') {
            Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => {
                Ok((a.trim().to_string(), b.trim().to_string()))
            }
            _ => Err(ConfigError(format!(
                "data.aug.flip_pairs: `{p}` is not a pair `label_a:label_b` (pairs are separated by commas)"
            ))),
        })
        .collect()
}

/// The most frames per clip `data.uniform_temporal_subsample_num` may ask for.
pub const MAX_FRAMES: i64 = 1024;

/// The most loader threads `data.num_workers` may ask for.
pub const MAX_WORKERS: usize = 64;

/// `data.*`: what the loader reads.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// Clips per batch.
    pub batch_size: usize,
    /// Loader threads preparing batches ahead (0 = in the training thread).
    pub num_workers: usize,
    /// Model input (height, width); `None` = the cache's frame size.
    pub img_size: Option<(i64, i64)>,
    /// Frames per clip (T).
    pub uniform_temporal_subsample_num: i64,
    /// Read RGB records.
    pub load_rgb: bool,
    /// Read keypoint records.
    pub load_kpt: bool,
    /// Split trained on.
    pub train_split: String,
    /// Split evaluated each epoch, if any.
    pub val_split: Option<String>,
    /// Cross-validation fold used for validation (the others train).
    pub fold: Option<u32>,
    /// Class-balanced draws instead of one pass.
    pub balanced_sampler: bool,
    /// `data.aug.*`.
    pub aug: AugConfig,
}

/// `train.*`: the loop and the optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// Epochs.
    pub max_epochs: u64,
    /// Batches per optimizer step.
    pub accumulate_grad_batches: usize,
    /// One view or all.
    pub view: ViewMode,
    /// The view of `train.view=single` (`None` = the cache's first).
    pub view_name: Option<String>,
    /// Seed of initialisation, order and jitter.
    pub seed: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up, in epochs.
    pub warmup_epochs: f64,
    /// Gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Cross-entropy label smoothing.
    pub label_smoothing: f64,
    /// Metric of the best checkpoint and early stopping.
    pub monitor: Monitor,
    /// Epochs without improvement before stopping (0 = never).
    pub early_stopping_patience: u64,
    /// Mid-epoch checkpoint every N optimizer steps (0 = off).
    pub checkpoint_every_n_steps: u64,
    /// `train.backbone_lr_mult`.
    pub backbone_lr_mult: f64,
    /// `train.freeze_backbone_epochs`.
    pub freeze_backbone_epochs: u64,
}

/// `trainer.*`: where and how precisely the run happens, and where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    /// Compute precision.
    pub precision: Precision,
    /// Device as written.
    pub device: DeviceChoice,
    /// Runs go to `<log_dir>/<experiment>/version_N`.
    pub experiment: String,
    /// Folder of runs.
    pub log_dir: PathBuf,
    /// Multi-process runs: how long a rank waits for the others (rendezvous, collectives).
    pub dist_timeout_s: u64,
}

/// `model.*`: the network.
#[derive(Debug, Clone)]
pub struct ModelSection {
    /// Per-view network.
    pub backbone: BackboneKind,
    /// How views are fused.
    pub fusion_mode: FusionMode,
    /// Which modalities the model reads.
    pub input_type: InputType,
    /// How a view's RGB and keypoint features combine.
    pub modality_fusion: ModalityFusion,
    /// Sizes of the configurable backbones (`model.transformer_*`, `mamba_*`, `stgcn_*`).
    pub backbones: BackboneSettings,
    /// Number of classes (`None` = the cache's labels).
    pub model_class_num: Option<u32>,
    /// Recompute backbone segments in backward.
    pub use_gradient_checkpointing: bool,
    /// Which segments, when checkpointing.
    pub checkpoint_segments: CheckpointSegments,
    /// `model.pretrained`: weights to start from.
    pub pretrained: Option<PathBuf>,
}

/// The most clips per segment `eval.clips` may ask for.
pub const MAX_EVAL_CLIPS: usize = 64;

/// `eval.*`: how segments are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalConfig {
    /// Clips per segment, spread uniformly over it.
    pub clips: usize,
    /// Spatial crops per clip.
    pub crops: Crops,
}

/// `predict.*`: how `train predict` windows whole recordings and cuts segments.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    /// Window length, seconds (`None`: the checkpoint's training segments' median).
    pub window_s: Option<f64>,
    /// Step between windows, seconds (`None`: half a window).
    pub stride_s: Option<f64>,
    /// Moving-average length of the per-frame scores, seconds.
    pub smooth_s: f64,
    /// Shorter gaps between segments of a class are joined.
    pub min_gap_s: f64,
    /// Shorter segments are dropped.
    pub min_len_s: f64,
    /// The class of "nothing happening".
    pub background: Option<String>,
    /// Multi-label threshold (`None`: the argmax class per frame).
    pub threshold: Option<f64>,
}

/// The typed training configuration, read once from [`Settings`].
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// `data.*`.
    pub data: DataConfig,
    /// `train.*`.
    pub train: LoopConfig,
    /// `trainer.*`.
    pub trainer: TrainerConfig,
    /// `model.*`.
    pub model: ModelSection,
    /// `eval.*`.
    pub eval: EvalConfig,
    /// `predict.*`.
    pub predict: PredictConfig,
    settings: Settings,
}

/// A setting's text parsed as `T`; [`Settings`] checked it already, so a failure here is a
/// bug in the key table, reported as a configuration error rather than a panic.
fn get<T: std::str::FromStr>(s: &Settings, key: &str) -> Result<T, ConfigError> {
    s.raw(key).parse().map_err(|_| {
        ConfigError(format!(
            "config key `{key}`: `{}` cannot be read",
            s.raw(key)
        ))
    })
}

fn opt_text(s: &Settings, key: &str) -> Option<String> {
    Some(s.raw(key))
        .filter(|v| *v != "null" && !v.is_empty())
        .map(String::from)
}

fn img_size(s: &Settings) -> Option<(i64, i64)> {
    img_size_of(&opt_text(s, "data.img_size")?)
}

/// A `data.img_size` value (`N` or `HxW`) as (height, width); `None` for `null`.
pub fn img_size_of(v: &str) -> Option<(i64, i64)> {
    match v.split_once(['x', 'X']) {
        Some((h, w)) => Some((h.trim().parse().ok()?, w.trim().parse().ok()?)),
        None => v.parse().ok().map(|n| (n, n)),
    }
}

fn choice<T>(s: &Settings, key: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr<Err = choice::ChoiceError>,
{
    s.raw(key)
        .parse()
        .map_err(|e: choice::ChoiceError| ConfigError(e.to_string()))
}

impl TrainConfig {
    /// Reads every key once and checks the rules that span keys.
    pub fn new(s: &Settings) -> Result<TrainConfig, ConfigError> {
        let data = DataConfig {
            batch_size: get(s, "data.batch_size")?,
            num_workers: get(s, "data.num_workers")?,
            img_size: img_size(s),
            uniform_temporal_subsample_num: get(s, "data.uniform_temporal_subsample_num")?,
            load_rgb: get(s, "data.load_rgb")?,
            load_kpt: get(s, "data.load_kpt")?,
            train_split: opt_text(s, "data.train_split").unwrap_or_else(|| "train".into()),
            val_split: opt_text(s, "data.val_split"),
            fold: opt_text(s, "data.fold")
                .map(|_| get(s, "data.fold"))
                .transpose()?,
            balanced_sampler: get(s, "data.balanced_sampler")?,
            aug: AugConfig {
                enabled: get(s, "data.aug.enabled")?,
                crop_scale: get(s, "data.aug.crop_scale")?,
                crop_ratio: get(s, "data.aug.crop_ratio")?,
                flip: choice(s, "data.aug.flip")?,
                flip_pairs: flip_pairs(s)?,
                brightness: get(s, "data.aug.brightness")?,
                contrast: get(s, "data.aug.contrast")?,
                saturation: get(s, "data.aug.saturation")?,
                grey: get(s, "data.aug.grey")?,
                per_view: get(s, "data.aug.per_view")?,
                kpt_rotate: get(s, "data.aug.kpt_rotate")?,
                kpt_scale: get(s, "data.aug.kpt_scale")?,
                kpt_shift: get(s, "data.aug.kpt_shift")?,
                kpt_jitter: get(s, "data.aug.kpt_jitter")?,
                mixup: get(s, "data.aug.mixup")?,
                cutmix: get(s, "data.aug.cutmix")?,
            },
        };
        let train = LoopConfig {
            max_epochs: get(s, "train.max_epochs")?,
            accumulate_grad_batches: get(s, "train.accumulate_grad_batches")?,
            view: choice(s, "train.view")?,
            view_name: opt_text(s, "train.view_name"),
            seed: get(s, "train.seed")?,
            lr: get(s, "train.lr")?,
            weight_decay: get(s, "train.weight_decay")?,
            warmup_epochs: get(s, "train.warmup_epochs")?,
            grad_clip: get(s, "train.grad_clip")?,
            label_smoothing: get(s, "train.label_smoothing")?,
            monitor: choice(s, "train.monitor")?,
            early_stopping_patience: get(s, "train.early_stopping_patience")?,
            checkpoint_every_n_steps: get(s, "train.checkpoint_every_n_steps")?,
            backbone_lr_mult: get(s, "train.backbone_lr_mult")?,
            freeze_backbone_epochs: get(s, "train.freeze_backbone_epochs")?,
        };
        let trainer = TrainerConfig {
            precision: choice(s, "trainer.precision")?,
            device: s.raw("trainer.device").parse()?,
            experiment: s.raw("trainer.experiment").to_string(),
            log_dir: PathBuf::from(s.raw("trainer.log_dir")),
            dist_timeout_s: get(s, "trainer.dist_timeout_s")?,
        };
        let mut backbones = BackboneSettings::default();
        backbones.transformer = TransformerConfig {
            dim: get(s, "model.transformer_dim")?,
            layers: get(s, "model.transformer_layers")?,
            heads: get(s, "model.transformer_heads")?,
            ff_dim: get(s, "model.transformer_ff_dim")?,
            dropout: get(s, "model.transformer_dropout")?,
            pool: choice(s, "model.transformer_pool")?,
            ..backbones.transformer
        };
        backbones.mamba = MambaConfig {
            dim: get(s, "model.mamba_dim")?,
            layers: get(s, "model.mamba_layers")?,
            state: get(s, "model.mamba_state")?,
            dropout: get(s, "model.mamba_dropout")?,
            ..backbones.mamba
        };
        backbones.stgcn = StgcnConfig {
            hidden_dim: get(s, "model.stgcn_hidden_dim")?,
            layers: get(s, "model.stgcn_layers")?,
            temporal_kernel: get(s, "model.stgcn_temporal_kernel")?,
            dropout: get(s, "model.stgcn_dropout")?,
        };
        let model = ModelSection {
            backbone: choice(s, "model.backbone")?,
            fusion_mode: choice(s, "model.fusion_mode")?,
            input_type: choice(s, "model.input_type")?,
            modality_fusion: choice(s, "model.modality_fusion")?,
            backbones,
            model_class_num: opt_text(s, "model.model_class_num")
                .map(|_| get(s, "model.model_class_num"))
                .transpose()?,
            use_gradient_checkpointing: get(s, "model.use_gradient_checkpointing")?,
            checkpoint_segments: s
                .raw("model.checkpoint_segments")
                .parse()
                .map_err(|e| ConfigError(format!("config key `model.checkpoint_segments`: {e}")))?,
            pretrained: opt_text(s, "model.pretrained").map(PathBuf::from),
        };
        let eval = EvalConfig {
            clips: get(s, "eval.clips")?,
            crops: choice(s, "eval.crops")?,
        };
        let opt_f64 = |key: &str| -> Result<Option<f64>, ConfigError> {
            opt_text(s, key).map(|_| get(s, key)).transpose()
        };
        let predict = PredictConfig {
            window_s: opt_f64("predict.window_s")?,
            stride_s: opt_f64("predict.stride_s")?,
            smooth_s: get(s, "predict.smooth_s")?,
            min_gap_s: get(s, "predict.min_gap_s")?,
            min_len_s: get(s, "predict.min_len_s")?,
            background: opt_text(s, "predict.background"),
            threshold: opt_f64("predict.threshold")?,
        };
        let c = TrainConfig {
            data,
            train,
            trainer,
            model,
            eval,
            predict,
            settings: s.clone(),
        };
        c.check_rules()?;
        Ok(c)
    }

    /// Reads `--config` (if any) over the defaults, then the `key=value` overrides.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<TrainConfig, ConfigError> {
        TrainConfig::new(&Settings::load(file, overrides)?)
    }

    /// The text of every key this configuration was read from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The resolved configuration as YAML (saved with every run; `--config` reads it back).
    pub fn to_yaml(&self) -> String {
        self.settings.to_yaml()
    }

    /// Model input (height, width): `data.img_size`, or `cache` = the cache's frame size.
    pub fn img_size_or(&self, cache: (i64, i64)) -> (i64, i64) {
        self.data.img_size.unwrap_or(cache)
    }
}

impl Settings {
    /// The defaults, then `file` (YAML) if given, then the `key=value` overrides.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        if let Some(f) = file {
            s.apply_yaml_file(f)?;
        }
        s.apply_overrides(overrides)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[&str]) -> Result<TrainConfig, ConfigError> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::load(None, &o)
    }

    #[test]
    fn typed_fields_read_the_settings() {
        let c = with(&[
            "data.batch_size=2",
            "train.lr=3e-4",
            "data.img_size=96x128",
            "model.backbone=3dcnn",
            "trainer.precision=bf16",
            "trainer.device=cuda:1",
            "data.fold=2",
        ])
        .unwrap();
        assert_eq!(c.data.batch_size, 2);
        assert_eq!(c.train.lr, 3e-4);
        assert_eq!(c.data.img_size, Some((96, 128)));
        assert_eq!(c.model.backbone, BackboneKind::R2Plus1d18);
        assert_eq!(c.trainer.precision, Precision::Bf16Mixed);
        assert_eq!(c.trainer.device, DeviceChoice::Cuda(1));
        assert_eq!(c.data.fold, Some(2));
        assert_eq!(c.data.val_split.as_deref(), Some("val"));
        let d = with(&[]).unwrap();
        assert_eq!(d.data.img_size, Some((224, 224)));
        assert_eq!(d.model.model_class_num, None);
        assert_eq!(d.train.monitor, Monitor::ValMacroF1);
        assert!(with(&["data.img_size=null", "data.val_split=null"])
            .map(|c| c.data.img_size.is_none() && c.data.val_split.is_none())
            .unwrap());
    }

    #[test]
    fn rules_spanning_keys_are_checked() {
        let e = with(&["model.input_type=kpt"]).unwrap_err().0;
        assert!(e.contains("data.load_kpt=false"), "{e}");
        let e = with(&["model.input_type=kpt", "data.load_kpt=true"])
            .unwrap_err()
            .0;
        assert!(e.contains("model.backbone=stgcn"), "{e}");
        let e = with(&["model.backbone=stgcn"]).unwrap_err().0;
        assert!(e.contains("model.input_type=kpt"), "{e}");
        let e = with(&["trainer.device=gpu"]).unwrap_err().0;
        assert!(e.contains("trainer.device `gpu`"), "{e}");
        let e = with(&["model.stgcn_temporal_kernel=4"]).unwrap_err().0;
        assert!(e.contains("must be odd"), "{e}");
        // Sizes of another backbone are not checked.
        assert!(with(&["model.transformer_heads=5"]).is_ok());
        let kpt = [
            "model.input_type=rgb_kpt",
            "data.load_kpt=true",
            "data.aug.cutmix=1",
        ];
        let e = with(&kpt).unwrap_err().0;
        assert!(
            e.contains("data.aug.cutmix=1") && e.contains("rgb_kpt"),
            "{e}"
        );
        let e = with(&["data.aug.mixup=0.2", "data.batch_size=1"])
            .unwrap_err()
            .0;
        assert!(
            e.contains("data.aug.mixup") && e.contains("batch_size=1"),
            "{e}"
        );
        assert!(with(&[
            "data.aug.mixup=0.2",
            "data.batch_size=1",
            "data.aug.enabled=false"
        ])
        .is_ok());
    }

    #[test]
    fn choice_lists_come_from_the_enums() {
        for k in KEYS {
            if let Kind::Choice(names) = k.kind {
                assert!(names.contains(&k.default), "{}", k.name);
            }
        }
        assert!(BackboneKind::NAMES.contains(&"3dcnn"));
        assert!(Precision::NAMES.contains(&"16"));
        let e = "logits_mean".parse::<FusionMode>().unwrap_err().to_string();
        assert!(e.contains("did you mean `logit_mean`"), "{e}");
    }
}
