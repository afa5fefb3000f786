//! Fine-tuning from pretrained weights (`model.pretrained=FILE`): a `.safetensors` file of
//! a torchvision export (`scripts/export_torchvision.py`: the video ResNets' own names,
//! which the model uses too) or of an mvdrive checkpoint of any backbone.
//!
//! Loading is by variable name. A variable whose tensor in the file has its shape is
//! loaded. The classifier (`fc.*`, and `kpt_proj.*`, which maps keypoint features for
//! `modality_fusion=mean`) is the part that depends on the task: when its shape differs
//! (another number of classes, fusion or feature width) it keeps its fresh initialisation,
//! and the report says so. The transformer's and Mamba's positional embeddings of another
//! clip shape are interpolated: `pos_time` linearly over time, `pos_space` bilinearly over
//! the token grid (the file's grid is taken square, or else the factorisation of its token
//! count closest to the model's aspect). Any other backbone tensor of another shape means
//! the file is of another architecture: an error naming the first such tensor and both
//! shapes.
//! Variables the file lacks keep their initialisation (e.g. the keypoint branch when the
//! file is an RGB model), tensors of the file that nothing uses are ignored; both are
//! listed, on one line each, in [`PretrainedReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::Tensor;

/// What [`load_pretrained`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PretrainedReport {
    /// The file.
    pub file: PathBuf,
    /// Variables loaded from the file.
    pub loaded: Vec<String>,
    /// The file had pytorchvideo's X3D names (renamed on load).
    pub pytorchvideo: bool,
    /// Classifier variables kept fresh: (name, shape in the file, shape here).
    pub head_reinitialised: Vec<(String, Vec<i64>, Vec<i64>)>,
    /// Positional embeddings resized to this model's clip: (name, from, to).
    pub interpolated: Vec<(String, Vec<i64>, Vec<i64>)>,
    /// Variables the file does not have (kept as initialised).
    pub not_loaded: Vec<String>,
    /// Tensors of the file no variable uses (BatchNorm `num_batches_tracked` counters
    /// aside, which tch has no variable for).
    pub ignored: Vec<String>,
}

impl fmt::Display for PretrainedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pretrained {}: {} tensors loaded{}",
            self.file.display(),
            self.loaded.len(),
            if self.pytorchvideo {
                " (pytorchvideo's X3D names, renamed)"
            } else {
                ""
            }
        )?;
        if !self.head_reinitialised.is_empty() {
            let heads: Vec<String> = self
                .head_reinitialised
                .iter()
                .map(|(n, a, b)| format!("{n} {a:?} in the file, {b:?} here"))
                .collect();
            write!(f, "\n  classifier re-initialised: {}", heads.join("; "))?;
        }
        if !self.interpolated.is_empty() {
            let pos: Vec<String> = self
                .interpolated
                .iter()
                .map(|(n, a, b)| format!("{n} {a:?} -> {b:?}"))
                .collect();
            write!(
                f,
                "\n  positional embeddings interpolated: {}",
                pos.join("; ")
            )?;
        }
        if !self.not_loaded.is_empty() {
            let n = self.not_loaded.len();
            write!(
                f,
                "\n  not in the file ({n}, kept as initialised): {}",
                self.not_loaded.join(", ")
            )?;
        }
        if !self.ignored.is_empty() {
            let n = self.ignored.len();
            write!(
                f,
                "\n  ignored ({n}, no such variable): {}",
                self.ignored.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Errors of [`load_pretrained`]; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// The file cannot be read as safetensors.
    #[error("model.pretrained: cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: tch::TchError,
    },
    /// A backbone tensor of another shape: another architecture.
    #[error("model.pretrained: {}: tensor `{key}` has shape {found:?} in the file but {expected:?} in this model (model.backbone and its sizes must match the file's; is it a file of another backbone?)", file.display())]
    Shape {
        /// The file.
        file: PathBuf,
        /// The first mismatched tensor, in name order.
        key: String,
        /// Its shape in the model.
        expected: Vec<i64>,
        /// Its shape in the file.
        found: Vec<i64>,
    },
    /// Nothing of the file matches the model.
    #[error("model.pretrained: no tensor of {} has a name of this model (its first: {file_first}; the model's first: {model_first}); export the weights for this model.backbone (scripts/export_torchvision.py writes torchvision's names)", file.display())]
    NothingMatches {
        /// The file.
        file: PathBuf,
        /// The file's first tensor names.
        file_first: String,
        /// The model's first variable names.
        model_first: String,
    },
    /// Copying a tensor failed.
    #[error("model.pretrained: {}: cannot copy tensor `{key}`: {source}", file.display())]
    Copy {
        /// The file.
        file: PathBuf,
        /// The tensor.
        key: String,
        /// Why.
        source: tch::TchError,
    },
}

/// Whether `name` is a classifier variable (task-specific, re-initialised when its shape
/// differs).
pub fn is_head(name: &str) -> bool {
    ["fc", "kpt_proj"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// `src` (a positional embedding `[n, dim]` of the file) resized to `want` (`[m, dim]`),
/// when `name` is one; `space` is the model's token grid (height, width).
fn interpolate(
    name: &str,
    src: &Tensor,
    want: &[i64],
    space: Option<(i64, i64)>,
) -> Option<Tensor> {
    let have = src.size();
    if have.len() != 2 || want.len() != 2 || have[1] != want[1] || have[0] < 1 {
        return None;
    }
    let x = src.to_kind(tch::Kind::Float).transpose(0, 1).unsqueeze(0); // [1, dim, n]
    if name.ends_with("pos_time") {
        let y = x.upsample_linear1d([want[0]], false, None);
        return Some(y.squeeze_dim(0).transpose(0, 1));
    }
    if !name.ends_with("pos_space") {
        return None;
    }
    let (gh, gw) = space.filter(|(h, w)| h * w == want[0])?;
    let n = have[0];
    let side = (n as f64).sqrt().round() as i64;
    let (a, b) = if side * side == n {
        (side, side)
    } else {
        let aspect = (gh as f64 / gw as f64).ln();
        (1..=n)
            .filter(|a| n % a == 0)
            .map(|a| (a, n / a))
            .min_by(|p, q| {
                let d = |&(a, b): &(i64, i64)| ((a as f64 / b as f64).ln() - aspect).abs();
                d(p).total_cmp(&d(q))
            })?
    };
    let grid = x.view([1, have[1], a, b]);
    let y = grid.upsample_bilinear2d([gh, gw], false, None, None);
    Some(y.view([have[1], gh * gw]).transpose(0, 1))
}

/// Load `file` into `vs` by name, as the module documentation says; `space` is the token
/// grid (height, width) of the model's tubelet embedding, when it has one. Checks
/// everything before copying anything, so an error leaves `vs` as it was.
pub fn load_pretrained(
    vs: &mut VarStore,
    file: &Path,
    space: Option<(i64, i64)>,
) -> Result<PretrainedReport, PretrainedError> {
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(file)
        .map_err(|source| PretrainedError::Read {
            file: file.to_path_buf(),
            source,
        })?
        .into_iter()
        .collect();
    // pytorchvideo's X3D names become ours; the tensors without a counterpart stay (and are
    // listed as ignored).
    let pytorchvideo = super::pytorchvideo::is_pytorchvideo_x3d(tensors.keys());
    let tensors: BTreeMap<String, Tensor> = if pytorchvideo {
        tensors
            .into_iter()
            .map(|(n, t)| (super::pytorchvideo::from_pytorchvideo(&n).unwrap_or(n), t))
            .collect()
    } else {
        tensors
    };
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut report = PretrainedReport {
        file: file.to_path_buf(),
        pytorchvideo,
        ..Default::default()
    };
    let mut plan: Vec<(&String, &Tensor, Tensor)> = Vec::new();
    for (name, var) in &variables {
        let Some(src) = tensors.get(name) else {
            report.not_loaded.push(name.clone());
            continue;
        };
        if src.size() == var.size() {
            plan.push((name, var, src.shallow_clone()));
        } else if let Some(resized) = interpolate(name, src, &var.size(), space) {
            report
                .interpolated
                .push((name.clone(), src.size(), var.size()));
            plan.push((name, var, resized));
        } else if is_head(name) {
            report
                .head_reinitialised
                .push((name.clone(), src.size(), var.size()));
        } else {
            return Err(PretrainedError::Shape {
                file: file.to_path_buf(),
                key: name.clone(),
                expected: var.size(),
                found: src.size(),
            });
        }
    }
    if plan.iter().all(|(n, _, _)| is_head(n)) {
        let first = |names: Vec<&String>| {
            names
                .into_iter()
                .take(3)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(PretrainedError::NothingMatches {
            file: file.to_path_buf(),
            file_first: first(tensors.keys().collect()),
            model_first: first(variables.keys().collect()),
        });
    }
    let used: BTreeSet<&String> = variables.keys().collect();
    report.ignored = tensors
        .keys()
        .filter(|k| !used.contains(k) && !k.ends_with(".num_batches_tracked"))
        .cloned()
        .collect();
    tch::no_grad(|| {
        for (name, var, src) in plan {
            let src = src.to_kind(var.kind()).to_device(var.device());
            let mut var = var.shallow_clone();
            var.f_copy_(&src).map_err(|source| PretrainedError::Copy {
                file: file.to_path_buf(),
                key: name.clone(),
                source,
            })?;
            report.loaded.push(name.clone());
        }
        Ok::<(), PretrainedError>(())
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classifier_is_fc_and_kpt_proj_only() {
        assert!(is_head("fc.weight") && is_head("kpt_proj.bias"));
        assert!(!is_head("fcx.weight") && !is_head("layer1.0.fc.weight") && !is_head("fc"));
    }
}
