//! `train export`: a checkpoint as a TorchScript module for deployment, traced with
//! libtorch's tracer. The module takes one clip as the cache stores it, `u8` `[views, T, H,
//! W, 3]` at the model's size, and returns the class probabilities `[classes]`; the
//! normalisation (the backbone's mean and std, as in training) is inside. It loads with
//! `torch.jit.load` in Python or `tch::CModule::load`.
//!
//! Tracing records the operations of one forward pass at the traced shape: the module is
//! for that clip shape, and the weights are stored in it as constants.

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{CModule, Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::model::backbones::normalize;
use crate::model::{Input, InputType, ModelConfig, MultiViewModel};
use crate::run::checkpoint;

/// Export a checkpoint as a TorchScript module (RGB models): input `u8` `[views, T, H, W,
/// 3]`, output class probabilities; the normalisation is inside. Checks the saved module
/// against the model on a random clip before it reports success.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint (`.safetensors`).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// The TorchScript file to write (e.g. model.pt).
    #[arg(long)]
    pub out: PathBuf,
}

/// What `train export` wrote and how close the saved module came to the model.
#[derive(Debug)]
pub struct ExportSummary {
    /// The input shape `[views, T, H, W, 3]`.
    pub input: Vec<i64>,
    /// The class names, in output order.
    pub classes: Vec<String>,
    /// Largest difference between the saved module's and the model's probabilities.
    pub max_diff: f64,
}

/// The model of a checkpoint, built without a cache (RGB models only).
pub fn checkpoint_model(ckpt: &Path) -> Result<(VarStore, MultiViewModel, Vec<String>)> {
    let (st, settings) = checkpoint::load_with_settings(ckpt)?;
    let c = TrainConfig::new(&settings)?;
    if c.model.input_type != InputType::Rgb {
        return Err(TrainError::Other(format!(
            "{}: model.input_type={} reads keypoints; train export is built for RGB models only (keypoint models are not exported yet)",
            ckpt.display(),
            c.model.input_type
        )));
    }
    let config = ModelConfig {
        backbone: c.model.backbone,
        fusion: c.model.fusion_mode,
        num_classes: st.classes.len() as i64,
        num_views: st.views.len() as i64,
        input_type: c.model.input_type,
        modality_fusion: c.model.modality_fusion,
        clip: st.clip,
        keypoints: None,
        settings: c.model.backbones.clone(),
    };
    let mut vs = VarStore::new(Device::Cpu);
    let model = MultiViewModel::new(&vs.root(), config)?;
    checkpoint::load_weights(ckpt, &mut vs)?;
    Ok((vs, model, st.classes))
}

/// The backbone's input mean and std as `[3, 1, 1, 1]` tensors, made before tracing:
/// libtorch's tracer does not keep a tensor made from host memory inside the traced
/// function (it reads back as zeros), while tensors made outside become proper constants.
fn input_stats(model: &MultiViewModel) -> (Tensor, Tensor) {
    let (mean, std) = model.config().backbone.input_norm();
    let stat = |v: [f64; 3]| {
        Tensor::from_slice(&v)
            .to_kind(Kind::Float)
            .view([3, 1, 1, 1])
            .copy()
    };
    (stat(mean), stat(std))
}

/// What the exported module computes: `u8` `[V, T, H, W, 3]` -> probabilities `[classes]`,
/// normalised as [`crate::model::backbones::normalize`] does in training.
pub fn clip_probabilities(
    model: &MultiViewModel,
    clip: &Tensor,
    stats: &(Tensor, Tensor),
) -> Tensor {
    let x = (clip.to_kind(Kind::Float) / 255.0)
        .permute([0, 4, 1, 2, 3])
        .unsqueeze(0);
    let x = (x - &stats.0) / &stats.1;
    let scores = model.forward_t(&Input::rgb(x), false);
    scores.softmax(-1, Kind::Float).squeeze_dim(0)
}

/// A file removed when dropped (a no-op once it was renamed away).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `train export` (see [`ExportArgs`]).
pub fn export(args: &ExportArgs) -> Result<ExportSummary> {
    let (mut vs, model, classes) = checkpoint_model(&args.ckpt)?;
    // Weights become constants of the traced graph, which must not require gradients.
    vs.freeze();
    let m = model.config();
    let input = vec![m.num_views, m.clip.t, m.clip.h, m.clip.w, 3];
    let stats = input_stats(&model);
    let example = Tensor::randint(256, input.as_slice(), (Kind::Uint8, Device::Cpu));
    let module = tch::no_grad(|| {
        CModule::create_by_tracing("MvdriveClassifier", "forward", &[example], &mut |x| {
            vec![clip_probabilities(&model, &x[0], &stats)]
        })
    })
    .map_err(|e| {
        TrainError::Other(format!(
            "tracing the {} model failed, so it cannot be exported: {e}",
            model.config().backbone
        ))
    })?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut tmp = args.out.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = TempFile(PathBuf::from(tmp));
    module.save(&tmp.0)?;
    // The saved file, loaded back, against the model on another clip.
    let check = Tensor::randint(256, input.as_slice(), (Kind::Uint8, Device::Cpu));
    let loaded = CModule::load(&tmp.0)?;
    let got = tch::no_grad(|| loaded.forward_ts(&[&check]))?;
    // The training path's own normalisation, so the check covers the one inside.
    let want = tch::no_grad(|| {
        let x = (check.to_kind(Kind::Float) / 255.0)
            .permute([0, 4, 1, 2, 3])
            .unsqueeze(0);
        let norm = model.config().backbone.input_norm();
        let scores = model.forward_t(&Input::rgb(normalize(&x, norm)), false);
        scores.softmax(-1, Kind::Float).squeeze_dim(0)
    });
    let max_diff = (got - want).abs().max().double_value(&[]);
    if max_diff.is_nan() || max_diff > 1e-5 {
        return Err(TrainError::Other(format!(
            "the traced {} module differs from the model by {max_diff:e} on a test clip (more than 1e-5), so it was not written; this backbone cannot be exported by tracing yet",
            model.config().backbone
        )));
    }
    std::fs::rename(&tmp.0, &args.out).map_err(|source| TrainError::Io {
        path: args.out.clone(),
        source,
    })?;
    Ok(ExportSummary {
        input,
        classes,
        max_diff,
    })
}

/// Runs `train export` and says what it wrote.
pub fn run(args: &ExportArgs) -> Result<()> {
    let r = export(args)?;
    println!(
        "train export: {} (TorchScript): u8 {:?} [views, T, H, W, RGB] -> probabilities of {} classes ({}); the saved module matches the model to {:.1e}",
        args.out.display(),
        r.input,
        r.classes.len(),
        r.classes.join(", "),
        r.max_diff
    );
    Ok(())
}
