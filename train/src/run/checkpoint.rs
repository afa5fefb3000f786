//! Checkpoints: `epoch=E-step=S.safetensors` (model weights, torchvision names), plus
//! `epoch=E-step=S.optim.safetensors` (AdamW moments) and `epoch=E-step=S.json` (trainer
//! state: position, counters, configuration, classes). Written under temporary names and
//! renamed, JSON last, so a checkpoint whose JSON exists is complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::config::{ConfigError, Settings};
use crate::error::{IoAt, Result, TrainError};
use crate::model::ClipShape;
use crate::optim::adamw::AdamW;

/// What is needed to continue a run exactly, or to rebuild its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// mvdrive format of this file.
    pub version: u32,
    /// Epoch the run is in (0-based).
    pub epoch: u64,
    /// Next batch of that epoch to run.
    pub next_batch: usize,
    /// Optimizer steps taken.
    pub global_step: u64,
    /// Sum of training losses of the epoch so far, and their count.
    pub epoch_loss_sum: f64,
    /// Batches in that sum.
    pub epoch_batches: u64,
    /// Best monitored value so far and its epoch.
    pub best: Option<(f64, u64)>,
    /// Epochs without improvement.
    pub bad_epochs: u64,
    /// Resolved configuration (YAML).
    pub config_yaml: String,
    /// `model.backbone` as built.
    pub backbone: String,
    /// `model.fusion_mode`.
    pub fusion: String,
    /// Views the model was trained on, in order.
    pub views: Vec<String>,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    /// The clip the model reads (stored as `input: [H, W, T]`, the layout of version 1).
    #[serde(rename = "input", with = "clip_hwt")]
    pub clip: ClipShape,
    /// fp16 loss scaler state, when training in fp16.
    #[serde(default)]
    pub scaler: Option<crate::optim::loss_scale::GradScaler>,
    /// xxh3-64 of the weights and optimizer files this state belongs to (hex), checked on
    /// load: a set mixed by an interrupted write is refused. Absent in checkpoints written
    /// before it existed, which load unchecked.
    #[serde(default)]
    pub files: Option<FileHashes>,
    /// Median length of the training segments, seconds: the span a clip covered in
    /// training, `train predict`'s default window. Absent in older checkpoints.
    #[serde(default)]
    pub segment_s: Option<f64>,
    /// The prep parameters of the training cache (frame size, timeline rate, ...), so
    /// `train predict --manifest` builds its cache of new recordings the same way.
    #[serde(default)]
    pub cache_params: Option<mvdrive_schemas::meta::PrepParams>,
    /// Ranks of the run that wrote it (`next_batch` counts batches of one rank's share).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Validation loss of the best epoch: it breaks ties of an accuracy-like
    /// `train.monitor`. Absent in older checkpoints (a tie then keeps the earlier epoch).
    #[serde(default)]
    pub best_val_loss: Option<f64>,
}

fn one() -> usize {
    1
}

/// The hashes that tie a checkpoint's three files into one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileHashes {
    /// xxh3-64 of `<name>.safetensors`.
    pub weights: String,
    /// xxh3-64 of `<name>.optim.safetensors`.
    pub optimizer: String,
}

/// xxh3-64 of a file, as 16 hex digits.
fn file_hash(path: &Path) -> Result<String> {
    let h = mvdrive_schemas::checksum::xxh3_file(path)?;
    Ok(mvdrive_schemas::checksum::to_hex(h))
}

impl TrainerState {
    /// The run's saved configuration (`config_yaml`) over the defaults.
    pub fn settings(&self) -> std::result::Result<Settings, ConfigError> {
        let mut s = Settings::default();
        s.apply_yaml(&self.config_yaml)?;
        Ok(s)
    }

    /// The state of a run that starts from scratch in `s`.
    pub fn fresh(s: &crate::run::session::Session) -> TrainerState {
        let m = &s.config.settings();
        TrainerState {
            version: 1,
            epoch: 0,
            next_batch: 0,
            global_step: 0,
            epoch_loss_sum: 0.0,
            epoch_batches: 0,
            best: None,
            bad_epochs: 0,
            config_yaml: s.config.to_yaml(),
            backbone: m.raw("model.backbone").to_string(),
            fusion: m.raw("model.fusion_mode").to_string(),
            views: s.views.clone(),
            classes: s.classes.clone(),
            clip: s.clip(),
            scaler: None,
            files: None,
            segment_s: median_segment_s(s),
            cache_params: Some(s.cache.meta.params.clone()),
            world_size: 1,
            best_val_loss: None,
        }
    }
}

/// Median length of the segments `s` trains on (`None` when it has none).
fn median_segment_s(s: &crate::run::session::Session) -> Option<f64> {
    let items = s.items(&s.train_selection()).ok()?;
    let mut lens: Vec<f64> = items
        .iter()
        .filter_map(|i| s.cache.segments.get(i.segment))
        .map(|g| g.end_s - g.start_s)
        .collect();
    lens.sort_by(f64::total_cmp);
    lens.get(lens.len() / 2).copied()
}

/// The three files of a checkpoint, from any one of them.
pub fn paths(ckpt: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let s = ckpt.to_string_lossy();
    let stem = s
        .strip_suffix(".optim.safetensors")
        .or_else(|| s.strip_suffix(".safetensors"))
        .or_else(|| s.strip_suffix(".json"))
        .unwrap_or(&s)
        .to_string();
    (
        PathBuf::from(format!("{stem}.safetensors")),
        PathBuf::from(format!("{stem}.optim.safetensors")),
        PathBuf::from(format!("{stem}.json")),
    )
}

fn rename(tmp: &Path, dst: &Path) -> Result<()> {
    std::fs::rename(tmp, dst).at(dst)
}

/// Write a checkpoint at `weights` (`....safetensors`).
pub fn save(weights: &Path, vs: &VarStore, opt: &AdamW, state: &TrainerState) -> Result<()> {
    let (w, o, j) = paths(weights);
    let tmp = |p: &Path| PathBuf::from(format!("{}.tmp.safetensors", p.display()));
    vs.save(tmp(&w))
        .map_err(|e| format!("{}: {e}", w.display()))?;
    let named: Vec<(String, Tensor)> = opt
        .params
        .iter()
        .zip(opt.m.iter().zip(&opt.v))
        .zip(&opt.steps)
        .flat_map(|(((n, _), (m, v)), &t)| {
            [
                (format!("m.{n}"), m.shallow_clone()),
                (format!("v.{n}"), v.shallow_clone()),
                (format!("t.{n}"), Tensor::from(t as i64)),
            ]
        })
        .collect();
    Tensor::write_safetensors(&named, tmp(&o)).map_err(|e| format!("{}: {e}", o.display()))?;
    // The JSON, written last, names the other two files' contents: a crash between the
    // renames leaves a set that `load_state` refuses instead of silently mixing epochs.
    let mut state = state.clone();
    state.files = Some(FileHashes {
        weights: file_hash(&tmp(&w))?,
        optimizer: file_hash(&tmp(&o))?,
    });
    let json = serde_json::to_string_pretty(&state)?;
    let jt = PathBuf::from(format!("{}.tmp", j.display()));
    std::fs::write(&jt, json).map_err(|e| format!("{}: {e}", jt.display()))?;
    rename(&tmp(&w), &w)?;
    rename(&tmp(&o), &o)?;
    rename(&jt, &j)
}

/// Copies the checkpoint at `ckpt` (all three files) to `<alias>.*` in the same folder,
/// e.g. `last` or `best`: each copy is written under a temporary name and renamed, the
/// JSON last, so an alias whose JSON exists is complete.
pub fn copy_as(ckpt: &Path, alias: &str) -> Result<PathBuf> {
    let dir = ckpt.parent().unwrap_or(Path::new("."));
    let (w, o, j) = paths(ckpt);
    let (aw, ao, aj) = paths(&dir.join(format!("{alias}.safetensors")));
    for (from, to) in [(&w, &aw), (&o, &ao), (&j, &aj)] {
        let tmp = PathBuf::from(format!("{}.tmp", to.display()));
        std::fs::copy(from, &tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        rename(&tmp, to)?;
    }
    Ok(aw)
}

/// `TrainerState::clip` as `[H, W, T]`.
mod clip_hwt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::ClipShape;

    pub fn serialize<S: Serializer>(c: &ClipShape, s: S) -> Result<S::Ok, S::Error> {
        (c.h, c.w, c.t).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClipShape, D::Error> {
        let (h, w, t) = <(i64, i64, i64)>::deserialize(d)?;
        Ok(ClipShape { t, h, w })
    }
}

/// Read a checkpoint's trainer state and its saved configuration over the defaults
/// (what `train eval`, `train export` and `train predict` rebuild the model from).
pub fn load_with_settings(ckpt: &Path) -> Result<(TrainerState, Settings)> {
    let st = load_state(ckpt)?;
    let settings = st
        .settings()
        .map_err(|e| format!("{}: its saved configuration: {e}", ckpt.display()))?;
    Ok((st, settings))
}

/// Read a checkpoint's trainer state.
pub fn load_state(ckpt: &Path) -> Result<TrainerState> {
    if ckpt.is_dir() {
        return Err(TrainError::Other(format!(
            "{} is a folder; give a checkpoint file, e.g. {}/last.safetensors or best.safetensors",
            ckpt.display(),
            ckpt.display()
        )));
    }
    let (w, _, j) = paths(ckpt);
    if !w.exists() {
        return Err(TrainError::Other(format!(
            "{}: checkpoint not found",
            w.display()
        )));
    }
    let text = std::fs::read_to_string(&j).map_err(|e| {
        format!(
            "{}: {e} (every mvdrive checkpoint has this file next to its weights)",
            j.display()
        )
    })?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not an mvdrive trainer state: {e}", j.display()))?;
    if let Some(files) = &state.files {
        let (_, o, _) = paths(ckpt);
        for (file, want) in [(&w, &files.weights), (&o, &files.optimizer)] {
            if &file_hash(file)? != want {
                return Err(TrainError::Other(format!(
                    "{}: does not match {} (an interrupted write left files of two different checkpoints); resume from another checkpoint, e.g. the last epoch=E-step=S one",
                    file.display(),
                    j.display()
                )));
            }
        }
    }
    Ok(state)
}

/// Load weights into `vs`; names and shapes must match exactly.
pub fn load_weights(ckpt: &Path, vs: &mut VarStore) -> Result<()> {
    let (w, _, _) = paths(ckpt);
    let stored = match Tensor::read_safetensors(&w) {
        Ok(t) => t,
        Err(e) => {
            return Err(TrainError::Other(format!(
                "{}: not a readable safetensors file ({e}); the checkpoint is damaged",
                w.display()
            )))
        }
    };
    // libtorch's load skips tensors the model lacks; a checkpoint with more is of another
    // model (e.g. an X3D saved before its stage-1 shortcut lost its BatchNorm).
    let names = vs.variables();
    if let Some((extra, _)) = stored.iter().find(|(n, _)| !names.contains_key(n)) {
        return Err(TrainError::Other(format!(
            "{}: holds `{extra}`, which this model does not have: it was saved by another model (another model.backbone or settings, or an X3D from before mvdrive's X3D matched pytorchvideo's); retrain it, or load its weights with model.pretrained",
            w.display()
        )));
    }
    Ok(vs.load(&w).map_err(|e| {
        format!("{}: does not fit this model ({e}); was it trained with another model.backbone, model.fusion_mode or class count?", w.display())
    })?)
}

/// Load the optimizer moments into `opt`.
pub fn load_optimizer(ckpt: &Path, opt: &mut AdamW, step: u64) -> Result<()> {
    let (_, o, _) = paths(ckpt);
    let named = Tensor::read_safetensors(&o).map_err(|e| format!("{}: {e}", o.display()))?;
    let map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
    for (i, (n, p)) in opt.params.iter().enumerate() {
        let (Some(m), Some(v)) = (map.get(&format!("m.{n}")), map.get(&format!("v.{n}"))) else {
            return Err(TrainError::Other(format!(
                "{}: no optimizer state for `{n}`",
                o.display()
            )));
        };
        if m.size() != p.size() || v.size() != p.size() {
            return Err(TrainError::Other(format!(
                "{}: optimizer state of `{n}` has shape {:?}, the parameter {:?}; the checkpoint belongs to another model",
                o.display(),
                m.size(),
                p.size()
            )));
        }
        tch::no_grad(|| {
            opt.m[i].copy_(&m.to_device(p.device()));
            opt.v[i].copy_(&v.to_device(p.device()));
        });
        // The parameter's own step count; checkpoints from before it was saved used the
        // global one for every parameter.
        opt.steps[i] = match map.get(&format!("t.{n}")) {
            Some(t) => t
                .f_int64_value(&[])
                .ok()
                .and_then(|t| u64::try_from(t).ok())
                .ok_or_else(|| {
                    TrainError::Other(format!(
                        "{}: the step count of `{n}` is not one non-negative integer; the file is damaged",
                        o.display()
                    ))
                })?,
            None => step,
        };
    }
    opt.step = step;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn optimizer() -> AdamW {
        let p = |n: i64| Tensor::ones([n], (Kind::Float, Device::Cpu));
        AdamW::new(vec![("a".into(), p(2)), ("b".into(), p(3))], 0.0)
    }

    /// Writes an optimizer file with moments for `a` and `b`, and the given step entries.
    fn write(dir: &Path, steps: Vec<(String, Tensor)>) -> PathBuf {
        let ckpt = dir.join("c.safetensors");
        let z = |n: i64| Tensor::full([n], 0.5, (Kind::Float, Device::Cpu));
        let mut named = vec![
            ("m.a".to_string(), z(2)),
            ("v.a".to_string(), z(2)),
            ("m.b".to_string(), z(3)),
            ("v.b".to_string(), z(3)),
        ];
        named.extend(steps);
        Tensor::write_safetensors(&named, paths(&ckpt).1).unwrap();
        ckpt
    }

    #[test]
    fn the_best_epoch_breaks_ties_of_an_accuracy_monitor_by_validation_loss() {
        use crate::config::Monitor;
        let f1 = Monitor::ValMacroF1;
        assert!(
            f1.improves((0.5, 1.0), None),
            "the first epoch is the best so far"
        );
        assert!(f1.improves((0.6, 2.0), Some((0.5, Some(1.0)))));
        assert!(!f1.improves((0.4, 0.1), Some((0.5, Some(1.0)))));
        // A tie: the lower loss wins; an equal or unknown one keeps the earlier epoch.
        assert!(f1.improves((0.5, 0.9), Some((0.5, Some(1.0)))));
        assert!(!f1.improves((0.5, 1.0), Some((0.5, Some(1.0)))));
        assert!(!f1.improves((0.5, 0.9), Some((0.5, None))));
        assert!(!f1.improves((f64::NAN, 0.1), Some((0.5, Some(1.0)))));
        // The loss monitor has no second criterion.
        let loss = Monitor::ValLoss;
        assert!(loss.improves((0.9, 0.9), Some((1.0, Some(1.0)))));
        assert!(!loss.improves((1.0, 1.0), Some((1.0, Some(2.0)))));
        // A resumed run compares against the best read back from JSON: bit-equal, so a tie
        // stays a tie (serde_json's float_roundtrip; its fast parser can be off by an ulp).
        for x in [
            0.1 + 0.2,
            2.0f64 / 3.0,
            0.123_456_789_012_345_68,
            1e-300 / 3.0,
        ] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e}");
        }
    }

    #[test]
    fn per_parameter_step_counts_load_and_old_files_fall_back_to_the_global_count() {
        let dir = tempfile::tempdir().unwrap();
        // Written by this version: each parameter's own count.
        let ckpt = write(
            dir.path(),
            vec![
                ("t.a".into(), Tensor::from(7i64)),
                ("t.b".into(), Tensor::from(2i64)),
            ],
        );
        let mut opt = optimizer();
        load_optimizer(&ckpt, &mut opt, 7).unwrap();
        assert_eq!((opt.steps.clone(), opt.step), (vec![7, 2], 7));
        assert_eq!(opt.m[1].double_value(&[0]), 0.5);

        // Written before per-parameter counts: every parameter takes the global one.
        let ckpt = write(dir.path(), vec![]);
        let mut opt = optimizer();
        load_optimizer(&ckpt, &mut opt, 5).unwrap();
        assert_eq!(opt.steps, vec![5, 5]);

        // A count that is not one non-negative integer names the parameter.
        let ckpt = write(dir.path(), vec![("t.b".into(), Tensor::from(-1i64))]);
        let err = load_optimizer(&ckpt, &mut optimizer(), 5)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("step count of `b`") && err.contains("damaged"),
            "{err}"
        );
    }
}
