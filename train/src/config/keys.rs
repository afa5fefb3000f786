//! The key table: every key of `configs/config.yaml` that `train` reads, with its default,
//! type and documentation ([`KEYS`]; the single source of `train keys`, of validation and
//! of the docs), and [`Settings`], the checked text of each key. Values come from the
//! defaults, then a YAML file (`--config`, e.g. a preset), then `key.sub=value` overrides.
//! [`super::TrainConfig`] reads them once into typed fields.

use std::collections::BTreeMap;
use std::path::Path;

use mvdrive_schemas::settings::{self, flatten_yaml, nearest};

use super::{Crops, FlipMode, Monitor, ViewMode};
use crate::model::backbones::transformer::TokenPool;
use crate::model::backbones::BackboneKind;
use crate::model::{FusionMode, InputType, ModalityFusion};
use crate::optim::precision::Precision;

/// The type of a setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Whole number at least the given minimum.
    Int(i64),
    /// Number at least the given minimum.
    Float(f64),
    /// `true` / `false`.
    Bool,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// Any text; `null` allowed.
    Text,
    /// Whole number or `null`.
    OptInt,
    /// Number greater than the given bound, or `null`.
    OptFloat(f64),
    /// Size `N` or `HxW`, or `null` (= the cache's).
    Size,
}

/// One setting.
pub struct Key {
    /// `section.name`.
    pub name: &'static str,
    /// Default value as text.
    pub default: &'static str,
    /// Type.
    pub kind: Kind,
    /// One line of documentation.
    pub doc: &'static str,
}

const fn key(name: &'static str, default: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key {
        name,
        default,
        kind,
        doc,
    }
}

/// Every key `train` reads.
pub const KEYS: &[Key] = &[
    key("data.batch_size", "4", Kind::Int(1), "clips per batch"),
    key("data.num_workers", "2", Kind::Int(0), "loader threads preparing batches ahead (0 = in the training thread)"),
    key("data.img_size", "224", Kind::Size, "model input size N or HxW; if the cache's differs, frames are resized on the device (null = the cache's)"),
    key("data.uniform_temporal_subsample_num", "8", Kind::Int(1), "frames per clip (T), spread uniformly over the segment"),
    key("data.load_rgb", "true", Kind::Bool, "read RGB records (false: RGB pages are never touched)"),
    key("data.load_kpt", "false", Kind::Bool, "read keypoint records (false: keypoint shards are never touched)"),
    key("data.train_split", "train", Kind::Text, "split trained on (sessions/segments with this split)"),
    key("data.val_split", "val", Kind::Text, "split evaluated each epoch; null = none"),
    key("data.fold", "null", Kind::OptInt, "cross-validation: fold k is validation, the other folds train (overrides the splits)"),
    key("data.balanced_sampler", "false", Kind::Bool, "draw training segments class-balanced instead of one pass over them"),
    key("data.aug.enabled", "true", Kind::Bool, "augment training clips (evaluation always sees plain frames)"),
    key("data.aug.crop_scale", "0.8", Kind::Float(0.0), "random resized crop: smallest area kept, as a fraction in (0, 1] of the cached frame (1 = no crop); store the cache a little larger than data.img_size (e.g. 128 for 112)"),
    key("data.aug.crop_ratio", "1.333", Kind::Float(1.0), "random resized crop: aspect ratios from 1/r to r"),
    key("data.aug.flip", "auto", Kind::Choice(FlipMode::NAMES), "horizontal flip of half the clips: auto = on unless a class names a side (left/right) and data.aug.flip_pairs does not pair it; on; off"),
    key("data.aug.flip_pairs", "null", Kind::Text, "classes that swap under a flip, `a:b,c:d` (e.g. texting_left:texting_right)"),
    key("data.aug.brightness", "0.2", Kind::Float(0.0), "brightness factor drawn from [1 - x, 1 + x]"),
    key("data.aug.contrast", "0.2", Kind::Float(0.0), "contrast factor drawn from [1 - x, 1 + x]"),
    key("data.aug.saturation", "0.2", Kind::Float(0.0), "saturation factor drawn from [1 - x, 1 + x] (not with data.aug.grey)"),
    key("data.aug.grey", "false", Kind::Bool, "grey (NIR, single-channel) footage: jitter brightness and contrast only, so frames stay grey"),
    key("data.aug.per_view", "false", Kind::Bool, "each view draws its own crop and jitter (the flip is always the sample's)"),
    key("data.aug.kpt_rotate", "10", Kind::Float(0.0), "keypoints: rotation drawn from [-x, x] degrees about the skeleton's centre"),
    key("data.aug.kpt_scale", "0.1", Kind::Float(0.0), "keypoints: scale drawn from [1 - x, 1 + x]"),
    key("data.aug.kpt_shift", "0.05", Kind::Float(0.0), "keypoints: shift drawn from [-x, x] of the skeleton's extent"),
    key("data.aug.kpt_jitter", "0.005", Kind::Float(0.0), "keypoints: Gaussian noise per joint, std x the skeleton's extent"),
    key("data.aug.mixup", "0", Kind::Float(0.0), "mixup: blend each clip and its label with another of the batch, weight ~ Beta(x, x) (0 = off; 0.2 is usual; RGB models, data.batch_size >= 2)"),
    key("data.aug.cutmix", "0", Kind::Float(0.0), "cutmix: paste a box of another clip of the batch into every frame, area ~ Beta(x, x), labels weighed by area (0 = off; 1.0 is usual); with mixup, each batch uses one of the two"),
    key("train.max_epochs", "10", Kind::Int(1), "epochs"),
    key("train.accumulate_grad_batches", "1", Kind::Int(1), "batches per optimizer step (1 = no accumulation); a short last window at epoch end steps with the batches it has"),
    key("train.view", "multi", Kind::Choice(ViewMode::NAMES), "single: one view (train.view_name); multi: every view, fused"),
    key("train.view_name", "null", Kind::Text, "the view used when train.view=single (null = the first)"),
    key("train.seed", "0", Kind::Int(0), "seed of initialisation, sample order and jitter"),
    key("train.lr", "0.001", Kind::Float(0.0), "peak learning rate (AdamW)"),
    key("train.weight_decay", "0.05", Kind::Float(0.0), "AdamW decoupled weight decay"),
    key("train.warmup_epochs", "1", Kind::Float(0.0), "linear warm-up, then cosine decay to 0 (counted in optimizer steps)"),
    key("train.grad_clip", "1.0", Kind::Float(0.0), "clip the gradient norm to this (0 = off)"),
    key("train.label_smoothing", "0.0", Kind::Float(0.0), "cross-entropy label smoothing"),
    key("train.backbone_lr_mult", "1.0", Kind::Float(0.0), "learning-rate factor of the backbone against the classifier (e.g. 0.1 when fine-tuning model.pretrained weights)"),
    key("train.freeze_backbone_epochs", "0", Kind::Int(0), "train only the classifier for this many first epochs: the backbone is not updated and its BatchNorm statistics stay as loaded"),
    key("train.monitor", "val_macro_f1", Kind::Choice(Monitor::NAMES), "metric for best checkpoint and early stopping (a tie of an accuracy-like metric goes to the lower val loss)"),
    key("train.early_stopping_patience", "0", Kind::Int(0), "stop after this many epochs without improvement (0 = never)"),
    key("train.checkpoint_every_n_steps", "0", Kind::Int(0), "also checkpoint every N optimizer steps, mid-epoch (0 = only at epoch end)"),
    key("eval.clips", "1", Kind::Int(1), "clips per segment when evaluating (validation in fit, and train eval unless --clips): spread uniformly over it, probabilities averaged"),
    key("eval.crops", "1", Kind::Choice(Crops::NAMES), "spatial crops per clip when evaluating: 1 = the whole frame (as training sees it); 3 = three squares along the frame's long side (left, centre, right), probabilities averaged"),
    key("predict.window_s", "null", Kind::OptFloat(0.0), "train predict: window length in seconds (null = the median labelled segment of the training cache, saved in the checkpoint)"),
    key("predict.stride_s", "null", Kind::OptFloat(0.0), "train predict: step between windows in seconds (null = half a window)"),
    key("predict.smooth_s", "1.0", Kind::Float(0.0), "train predict: moving average of the per-frame scores over this many seconds before segmenting (0 = none)"),
    key("predict.min_gap_s", "0.5", Kind::Float(0.0), "train predict: join segments of one class separated by less than this"),
    key("predict.min_len_s", "0.5", Kind::Float(0.0), "train predict: drop segments shorter than this"),
    key("predict.background", "null", Kind::Text, "train predict: the class meaning 'nothing happening' (no segments are written for it; null = a class named background, if any)"),
    key("predict.threshold", "null", Kind::OptFloat(0.0), "train predict: null = one class per frame (the argmax); a number = multi-label, every class scoring at least this"),
    key("trainer.precision", "32", Kind::Choice(Precision::NAMES), "32 | 16-mixed (CUDA autocast + loss scaling) | bf16-mixed (bfloat16 compute, float32 master weights; CPU and CUDA); 16 and bf16 are aliases of the mixed ones"),
    key("trainer.device", "auto", Kind::Text, "auto | cpu | cuda:N"),
    key("trainer.experiment", "default", Kind::Text, "runs go to <log_dir>/<experiment>/version_N"),
    key("trainer.log_dir", "logs", Kind::Text, "folder of runs"),
    key("trainer.dist_timeout_s", "1800", Kind::Int(1), "multi-process runs (torchrun, srun, fit --nproc): seconds a rank waits for the rendezvous or for another rank at a collective before stopping with an error"),
    key("model.backbone", "3dcnn", Kind::Choice(BackboneKind::NAMES), "per-view network: 3dcnn (= r2plus1d_18), r3d_18, x3d, transformer, mamba (video); stgcn (keypoints, with model.input_type=kpt)"),
    key("model.fusion_mode", "logit_mean", Kind::Choice(FusionMode::NAMES), "how views are fused (one shared backbone)"),
    key("model.input_type", "rgb", Kind::Choice(InputType::NAMES), "rgb: video backbone; kpt: ST-GCN on keypoints (model.backbone=stgcn); rgb_kpt: both, fused per view"),
    key("model.modality_fusion", "concat", Kind::Choice(ModalityFusion::NAMES), "rgb_kpt: concatenate a view's RGB and keypoint features, or average them"),
    key("model.transformer_dim", "192", Kind::Int(1), "transformer: token width (divisible by the heads)"),
    key("model.transformer_layers", "4", Kind::Int(1), "transformer: divided space-time blocks (each a checkpoint segment; at most 32)"),
    key("model.transformer_heads", "3", Kind::Int(1), "transformer: attention heads"),
    key("model.transformer_ff_dim", "768", Kind::Int(1), "transformer: MLP hidden width"),
    key("model.transformer_dropout", "0.1", Kind::Float(0.0), "transformer: dropout on embeddings, attention outputs and MLPs"),
    key("model.transformer_pool", "cls", Kind::Choice(TokenPool::NAMES), "transformer: CLS token or mean of tokens"),
    key("model.mamba_dim", "192", Kind::Int(1), "mamba: token width"),
    key("model.mamba_layers", "4", Kind::Int(1), "mamba: bidirectional Mamba-2 blocks (at most 32)"),
    key("model.mamba_state", "16", Kind::Int(1), "mamba: SSM state size per head"),
    key("model.mamba_dropout", "0.1", Kind::Float(0.0), "mamba: dropout on embeddings and block outputs"),
    key("model.stgcn_hidden_dim", "64", Kind::Int(1), "stgcn: width of the first units (doubled from the middle unit on)"),
    key("model.stgcn_layers", "6", Kind::Int(1), "stgcn: ST-GCN units (at most 32)"),
    key("model.stgcn_temporal_kernel", "9", Kind::Int(1), "stgcn: temporal convolution kernel (odd)"),
    key("model.stgcn_dropout", "0.1", Kind::Float(0.0), "stgcn: dropout in each unit"),
    key("model.model_class_num", "null", Kind::OptInt, "number of classes; null = the cache's labels (a mismatch is an error)"),
    key("model.pretrained", "null", Kind::Text, "a .safetensors file to start from: a torchvision export (scripts/export_torchvision.py) or an mvdrive checkpoint; tensors load by name, a classifier of another shape is re-initialised (null = random initialisation)"),
    key("model.use_gradient_checkpointing", "false", Kind::Bool, "recompute each backbone segment in backward instead of storing its activations (less memory, more time)"),
    key("model.checkpoint_segments", "all", Kind::Text, "with checkpointing: which segments to recompute: all, every:N (segments 0, N, 2N, ...) or first:N (the first N; a CNN's largest activations); the rest keep their activations"),
];

/// Keys of `configs/config.yaml` that `prep` reads; those `train` does not read itself are
/// accepted (and ignored) in files.
use mvdrive_schemas::settings::PREP_KEY_NAMES as PREP_ONLY_KEYS;

pub use mvdrive_schemas::settings::ConfigError;

/// Every key of [`KEYS`] with its checked text (the layer YAML files, overrides, saved
/// runs and child processes speak); [`super::TrainConfig`] is the typed reading of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    values: BTreeMap<&'static str, String>,
}

fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn check(k: &Key, v: &str) -> Result<String, ConfigError> {
    let v = v.trim().trim_matches('"').trim_matches('\'');
    let bad = |want: String| ConfigError(format!("config key `{}`: `{v}` is not {want}", k.name));
    let ok = match k.kind {
        Kind::Int(min) => v
            .parse::<i64>()
            .map_err(|_| bad(format!("a whole number >= {min} ({})", k.doc)))
            .and_then(|n| {
                if n >= min {
                    Ok(n.to_string())
                } else {
                    Err(bad(format!("a whole number >= {min} ({})", k.doc)))
                }
            })?,
        Kind::Float(min) => match v.parse::<f64>() {
            Ok(f) if k.name == "train.label_smoothing" && !(0.0..1.0).contains(&f) => {
                return Err(bad("a number in [0, 1)".into()))
            }
            Ok(f) if f.is_finite() && f >= min => v.to_string(),
            _ => return Err(bad(format!("a number >= {min}"))),
        },
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => "true".into(),
            "false" | "0" | "no" => "false".into(),
            _ => return Err(bad("true or false".into())),
        },
        Kind::Choice(choices) => {
            if choices.contains(&v) {
                v.to_string()
            } else {
                return Err(bad(format!("one of {}", choices.join(", "))));
            }
        }
        Kind::Text => v.to_string(),
        Kind::OptInt => {
            if v == "null" || v.parse::<u32>().is_ok() {
                v.to_string()
            } else {
                return Err(bad("a whole number or null".into()));
            }
        }
        Kind::OptFloat(above) => match v.parse::<f64>() {
            _ if v == "null" => v.to_string(),
            Ok(f) if f.is_finite() && f > above => v.to_string(),
            _ => return Err(bad(format!("a number > {above}, or null ({})", k.doc))),
        },
        Kind::Size => {
            let dim = |d: &str| {
                d.trim()
                    .parse::<u32>()
                    .is_ok_and(|n| (2..=8192).contains(&n))
            };
            let ok = v == "null"
                || match v.split_once(['x', 'X']) {
                    Some((h, w)) => dim(h) && dim(w),
                    None => dim(v),
                };
            if ok {
                v.to_string()
            } else {
                return Err(bad("a size N or HxW between 2 and 8192, or null".into()));
            }
        }
    };
    Ok(ok)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            values: KEYS
                .iter()
                .map(|k| (k.name, k.default.to_string()))
                .collect(),
        }
    }
}

impl Settings {
    /// Set one key. Prep-only keys are accepted (and ignored) only from files.
    pub fn set(&mut self, name: &str, value: &str, from_file: bool) -> Result<(), ConfigError> {
        if let Some(k) = find(name) {
            self.values.insert(k.name, check(k, value)?);
            return Ok(());
        }
        if PREP_ONLY_KEYS.contains(&name) {
            if from_file {
                return Ok(());
            }
            return Err(ConfigError(format!(
                "config key `{name}` is a `prep` setting; it is fixed when the cache is built"
            )));
        }
        let hint = nearest(
            name,
            KEYS.iter()
                .map(|k| k.name)
                .chain(PREP_ONLY_KEYS.iter().copied()),
        )
        .map(|n| format!("; did you mean `{n}`?"))
        .unwrap_or_default();
        Err(ConfigError(format!(
            "unknown config key `{name}`{hint} (`train keys` lists every key)"
        )))
    }

    /// Apply `key.sub=value` overrides.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), ConfigError> {
        settings::apply_overrides(overrides, "data.batch_size=2", |k, v, f| self.set(k, v, f))
    }

    /// Apply a YAML file (layout of `configs/config.yaml` and the presets).
    pub fn apply_yaml_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        settings::apply_yaml_file(path, |k, v, f| self.set(k, v, f))
    }

    /// Apply YAML text.
    pub fn apply_yaml(&mut self, text: &str) -> Result<(), ConfigError> {
        for (k, v) in flatten_yaml(text).map_err(ConfigError)? {
            self.set(&k, &v, true)?;
        }
        Ok(())
    }

    /// The raw text of a key.
    pub fn raw(&self, name: &str) -> &str {
        self.values.get(name).map(String::as_str).unwrap_or("null")
    }

    /// The resolved configuration as YAML (saved with every run; `--config` reads it back).
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("# Resolved mvdrive train configuration\n");
        let mut section = "";
        for k in KEYS {
            let (sec, name) = k.name.split_once('.').unwrap_or(("", k.name));
            if sec != section {
                out += &format!("{sec}:\n");
                section = sec;
            }
            let v = self.raw(k.name);
            let quoted = if matches!(k.kind, Kind::Text | Kind::Choice(_)) && v != "null" {
                format!("\"{v}\"")
            } else {
                v.to_string()
            };
            out += &format!("  {name}: {quoted}\n");
        }
        out
    }
}

/// `train keys`: every key with its default and documentation.
pub fn keys_help() -> String {
    let mut s = String::new();
    for k in KEYS {
        s += &format!("{:<36} {:<14} {}\n", k.name, k.default, k.doc);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_errors() {
        let mut c = Settings::default();
        c.apply_overrides(&[
            "data.batch_size=2".into(),
            "train.lr=3e-4".into(),
            "data.img_size=96x128".into(),
        ])
        .unwrap();
        assert_eq!(c.raw("data.batch_size"), "2");
        assert_eq!(c.raw("train.lr"), "3e-4");
        assert_eq!(c.raw("data.img_size"), "96x128");
        let e = c
            .apply_overrides(&["data.batch_sise=2".into()])
            .unwrap_err()
            .0;
        assert!(e.contains("did you mean `data.batch_size`"), "{e}");
        let e = c
            .apply_overrides(&["data.batch_size=two".into()])
            .unwrap_err()
            .0;
        assert!(e.contains("data.batch_size") && e.contains("two"), "{e}");
        let e = c
            .apply_overrides(&["model.fusion_mode=max".into()])
            .unwrap_err()
            .0;
        assert!(e.contains("logit_mean"), "{e}");
        assert!(c
            .apply_overrides(&["prep.fps=8".into()])
            .unwrap_err()
            .0
            .contains("prep"));
    }

    #[test]
    fn the_shared_key_list_matches_this_table() {
        let mine: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(mine, mvdrive_schemas::settings::TRAIN_KEY_NAMES);
    }

    #[test]
    fn the_resolved_yaml_reads_back_to_the_same_config() {
        let mut c = Settings::default();
        c.apply_overrides(&[
            "train.view=single".into(),
            "train.view_name=left".into(),
            "data.fold=2".into(),
        ])
        .unwrap();
        let mut d = Settings::default();
        d.apply_yaml(&c.to_yaml()).unwrap();
        assert_eq!(c, d);
    }

    #[test]
    fn shipped_config_and_presets_parse_and_config_yaml_documents_every_default() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut c = Settings::default();
        c.apply_yaml_file(&root.join("configs/config.yaml"))
            .unwrap();
        assert_eq!(
            c,
            Settings::default(),
            "configs/config.yaml must state the code defaults"
        );
        let text = std::fs::read_to_string(root.join("configs/config.yaml")).unwrap();
        for k in KEYS {
            // The last part: `data.aug.flip` is `flip:` under `aug:` under `data:`.
            let leaf = k.name.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf}:")),
                "configs/config.yaml lacks {}",
                k.name
            );
        }
        for p in ["standard", "aggressive", "extreme"] {
            let mut c = Settings::default();
            c.apply_yaml_file(&root.join(format!("configs/presets/{p}.yaml")))
                .unwrap();
        }
    }
}
