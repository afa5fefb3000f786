//! Checkpoints: `epoch=E-step=S.safetensors` (model weights, torchvision names), plus
//! `epoch=E-step=S.optim.safetensors` (AdamW moments) and `epoch=E-step=S.json` (trainer
//! state: position, counters, configuration, classes). Written under temporary names and
//! renamed, JSON last, so a checkpoint whose JSON exists is complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::optim::AdamW;

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
    /// Model input size (H, W) and frames per clip.
    pub input: (i64, i64, i64),
    /// fp16 loss scaler state, when training in fp16.
    #[serde(default)]
    pub scaler: Option<crate::scaler::GradScaler>,
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

fn rename(tmp: &Path, dst: &Path) -> Result<(), String> {
    std::fs::rename(tmp, dst).map_err(|e| format!("{}: {e}", dst.display()))
}

/// Write a checkpoint at `weights` (`....safetensors`).
pub fn save(
    weights: &Path,
    vs: &VarStore,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<(), String> {
    let (w, o, j) = paths(weights);
    let tmp = |p: &Path| PathBuf::from(format!("{}.tmp.safetensors", p.display()));
    vs.save(tmp(&w))
        .map_err(|e| format!("{}: {e}", w.display()))?;
    let named: Vec<(String, Tensor)> = opt
        .params
        .iter()
        .zip(opt.m.iter().zip(&opt.v))
        .flat_map(|((n, _), (m, v))| {
            [
                (format!("m.{n}"), m.shallow_clone()),
                (format!("v.{n}"), v.shallow_clone()),
            ]
        })
        .collect();
    Tensor::write_safetensors(&named, tmp(&o)).map_err(|e| format!("{}: {e}", o.display()))?;
    let json = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    let jt = PathBuf::from(format!("{}.tmp", j.display()));
    std::fs::write(&jt, json).map_err(|e| format!("{}: {e}", jt.display()))?;
    rename(&tmp(&w), &w)?;
    rename(&tmp(&o), &o)?;
    rename(&jt, &j)
}

/// Read a checkpoint's trainer state.
pub fn load_state(ckpt: &Path) -> Result<TrainerState, String> {
    if ckpt.is_dir() {
        return Err(format!(
            "{} is a folder; give a checkpoint file, e.g. {}/last.safetensors or best.safetensors",
            ckpt.display(),
            ckpt.display()
        ));
    }
    let (w, _, j) = paths(ckpt);
    if !w.exists() {
        return Err(format!("{}: checkpoint not found", w.display()));
    }
    let text = std::fs::read_to_string(&j).map_err(|e| {
        format!(
            "{}: {e} (every mvdrive checkpoint has this file next to its weights)",
            j.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: not an mvdrive trainer state: {e}", j.display()))
}

/// Load weights into `vs`; names and shapes must match exactly.
pub fn load_weights(ckpt: &Path, vs: &mut VarStore) -> Result<(), String> {
    let (w, _, _) = paths(ckpt);
    if let Err(e) = Tensor::read_safetensors(&w) {
        return Err(format!(
            "{}: not a readable safetensors file ({e}); the checkpoint is damaged",
            w.display()
        ));
    }
    vs.load(&w).map_err(|e| {
        format!("{}: does not fit this model ({e}); was it trained with another model.backbone, model.fusion_mode or class count?", w.display())
    })
}

/// Load the optimizer moments into `opt`.
pub fn load_optimizer(ckpt: &Path, opt: &mut AdamW, step: u64) -> Result<(), String> {
    let (_, o, _) = paths(ckpt);
    let named = Tensor::read_safetensors(&o).map_err(|e| format!("{}: {e}", o.display()))?;
    let map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
    for (i, (n, p)) in opt.params.iter().enumerate() {
        let (Some(m), Some(v)) = (map.get(&format!("m.{n}")), map.get(&format!("v.{n}"))) else {
            return Err(format!("{}: no optimizer state for `{n}`", o.display()));
        };
        if m.size() != p.size() || v.size() != p.size() {
            return Err(format!(
                "{}: optimizer state of `{n}` has shape {:?}, the parameter {:?}; the checkpoint belongs to another model",
                o.display(),
                m.size(),
                p.size()
            ));
        }
        tch::no_grad(|| {
            opt.m[i].copy_(&m.to_device(p.device()));
            opt.v[i].copy_(&v.to_device(p.device()));
        });
    }
    opt.step = step;
    Ok(())
}
