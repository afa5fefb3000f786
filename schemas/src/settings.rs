//! Settings files shared by `prep` and `train`: YAML flattened to `section.key` pairs, and
//! "did you mean" suggestions for unknown keys.

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

/// Keys of `configs/config.yaml` that `prep` reads (its own table with defaults and docs is
/// `mvdrive_prep::config::PREP_KEYS`; a test keeps the two equal).
pub const PREP_KEY_NAMES: &[&str] = &[
    "data.img_size",
    "data.max_video_frames",
    "data.num_io_threads",
    "prep.fps",
    "prep.resize",
    "prep.scaler",
    "prep.compress",
    "prep.shard_size",
    "prep.max_decode_errors",
    "prep.kpt_normalize",
];

/// Keys of `configs/config.yaml` that `train` reads (its table with defaults and docs is
/// `mvdrive_train::config::KEYS`; a test keeps the two equal).
pub const TRAIN_KEY_NAMES: &[&str] = &[
    "data.batch_size",
    "data.num_workers",
    "data.img_size",
    "data.uniform_temporal_subsample_num",
    "data.load_rgb",
    "data.load_kpt",
    "data.train_split",
    "data.val_split",
    "data.fold",
    "data.balanced_sampler",
    "data.aug.enabled",
    "data.aug.crop_scale",
    "data.aug.crop_ratio",
    "data.aug.flip",
    "data.aug.flip_pairs",
    "data.aug.brightness",
    "data.aug.contrast",
    "data.aug.saturation",
    "data.aug.grey",
    "data.aug.per_view",
    "data.aug.kpt_rotate",
    "data.aug.kpt_scale",
    "data.aug.kpt_shift",
    "data.aug.kpt_jitter",
    "data.aug.mixup",
    "data.aug.cutmix",
    "train.max_epochs",
    "train.accumulate_grad_batches",
    "train.view",
    "train.view_name",
    "train.seed",
    "train.lr",
    "train.weight_decay",
    "train.warmup_epochs",
    "train.grad_clip",
    "train.label_smoothing",
    "train.backbone_lr_mult",
    "train.freeze_backbone_epochs",
    "train.monitor",
    "train.early_stopping_patience",
    "train.checkpoint_every_n_steps",
    "eval.clips",
    "eval.crops",
    "predict.window_s",
    "predict.stride_s",
    "predict.smooth_s",
    "predict.min_gap_s",
    "predict.min_len_s",
    "predict.background",
    "predict.threshold",
    "trainer.precision",
    "trainer.device",
    "trainer.experiment",
    "trainer.log_dir",
    "trainer.dist_timeout_s",
    "model.backbone",
    "model.fusion_mode",
    "model.input_type",
    "model.modality_fusion",
    "model.transformer_dim",
    "model.transformer_layers",
    "model.transformer_heads",
    "model.transformer_ff_dim",
    "model.transformer_dropout",
    "model.transformer_pool",
    "model.mamba_dim",
    "model.mamba_layers",
    "model.mamba_state",
    "model.mamba_dropout",
    "model.stgcn_hidden_dim",
    "model.stgcn_layers",
    "model.stgcn_temporal_kernel",
    "model.stgcn_dropout",
    "model.model_class_num",
    "model.pretrained",
    "model.use_gradient_checkpointing",
    "model.checkpoint_segments",
];

/// Flatten a YAML document into `(dotted.key, value text)` pairs, in file order.
pub fn flatten_yaml(text: &str) -> Result<Vec<(String, String)>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut flat = Vec::new();
    if let Some(doc) = docs.first() {
        flatten("", doc, &mut flat)?;
    }
    Ok(flat)
}

fn flatten(prefix: &str, y: &Yaml, out: &mut Vec<(String, String)>) -> Result<(), String> {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let k = match k {
                    Yaml::String(s) => s.clone(),
                    other => return Err(format!("key {other:?} under `{prefix}` is not text")),
                };
                let full = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&full, v, out)?;
            }
        }
        Yaml::Null if prefix.is_empty() => {}
        Yaml::Null => out.push((prefix.to_string(), "null".into())),
        Yaml::Real(s) | Yaml::String(s) => out.push((prefix.to_string(), s.clone())),
        Yaml::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        Yaml::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        _ => {
            return Err(format!(
                "`{prefix}` has a value of a kind mvdrive cannot read (lists are not settings)"
            ))
        }
    }
    Ok(())
}

/// Read a YAML settings file and flatten it ([`flatten_yaml`]); errors start with the
/// file's path.
pub fn read_yaml_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    flatten_yaml(&text).map_err(|m| format!("{shown}: {m}"))
}

/// Split a command-line override `key.sub=value` into its key (trimmed) and value;
/// `example` (like `data.img_size=112`) is quoted in the error.
pub fn split_override<'a>(o: &'a str, example: &str) -> Result<(&'a str, &'a str), String> {
    o.split_once('=')
        .map(|(k, v)| (k.trim(), v))
        .ok_or_else(|| format!("`{o}` is not a `key.sub=value` override (e.g. {example})"))
}

/// A configuration mistake (a key, a value, a file of settings), phrased for the user;
/// `prep` and `train` report their settings errors with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

/// Applies `key.sub=value` command-line overrides, in order, through
/// `set(key, value, from_file = false)`; `example` is quoted when one is malformed.
pub fn apply_overrides<E: From<String>>(
    overrides: &[String],
    example: &str,
    mut set: impl FnMut(&str, &str, bool) -> Result<(), E>,
) -> Result<(), E> {
    for o in overrides {
        let (k, v) = split_override(o, example)?;
        set(k, v, false)?;
    }
    Ok(())
}

/// Applies a YAML settings file (the layout of `configs/config.yaml`), in file order,
/// through `set(key, value, from_file = true)`; errors start with the file's path.
pub fn apply_yaml_file<E: From<String> + std::fmt::Display>(
    path: &Path,
    mut set: impl FnMut(&str, &str, bool) -> Result<(), E>,
) -> Result<(), E> {
    for (k, v) in read_yaml_file(path)? {
        set(&k, &v, true).map_err(|e| E::from(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The candidate closest to `key` (Jaro-Winkler above 0.7), for "did you mean" hints.
pub fn nearest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_yaml_flattens_to_dotted_keys() {
        let flat = flatten_yaml(
            "data:\n  img_size: 112\n  load_rgb: true\ntrainer:\n  precision: bf16-mixed\n",
        )
        .unwrap();
        assert_eq!(
            flat,
            vec![
                ("data.img_size".to_string(), "112".to_string()),
                ("data.load_rgb".into(), "true".into()),
                ("trainer.precision".into(), "bf16-mixed".into())
            ]
        );
        assert!(flatten_yaml("a: [1, 2]").is_err());
        assert_eq!(split_override(" a.b =c=d", "x.y=1"), Ok(("a.b", "c=d")));
        assert_eq!(
            split_override("a.b", "x.y=1").unwrap_err(),
            "`a.b` is not a `key.sub=value` override (e.g. x.y=1)"
        );
        assert_eq!(
            nearest("data.img_szie", ["data.img_size", "model.backbone"]),
            Some("data.img_size")
        );
    }
}
