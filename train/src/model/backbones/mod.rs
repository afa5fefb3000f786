//! Per-view video backbones.
//!
//! One backbone is shared by every camera view (see [`crate::model`]):
//! - torchvision's video ResNets ([`r3d`]): `r3d_18` and `r2plus1d_18`, with torchvision's
//!   exact variable names so Kinetics-400 weights exported by `scripts/export_torchvision.py`
//!   load by name ([`load_weights`]);
//! - [`x3d`]: X3D-S/M, the low-memory CNN;
//! - [`transformer`]: a factorised space-time video transformer;
//! - [`mamba`]: a bidirectional Mamba-2 (SSD) selective state-space model;
//! - [`stgcn`]: ST-GCN over keypoints.
//!
//! Every backbone is a chain of [`Segment`]s (the units of gradient checkpointing) and a
//! pooling ([`Backbone`]).

pub mod mamba;
pub mod r3d;
pub mod stgcn;
pub mod tokens;
pub mod transformer;
pub mod x3d;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::model::{ClipShape, InputType};

pub use r3d::{
    normalize, normalize_kinetics, VideoResNet, FEATURE_DIM, KINETICS_MEAN, KINETICS_STD,
};

/// A named, separately callable piece of a backbone (`stem`, `layer1`, `block3`, ...): the
/// unit a gradient-checkpointing trainer recomputes (see [`crate::optim::recompute`]).
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Module name, also the variable-name prefix (`stem`, `layer1`, ...).
    pub name: &'static str,
    /// The module itself: one tensor in, one tensor out.
    pub module: &'a dyn ModuleT,
    /// Few activations next to the other segments' (a final norm): gradient checkpointing
    /// keeps the graph of the last segment that is not light and of everything after it,
    /// since their recompute would follow the first pass at once (see
    /// [`crate::optim::recompute`]).
    pub light: bool,
}

impl<'a> Segment<'a> {
    /// A segment named `name` (not light).
    pub fn new(name: &'static str, module: &'a dyn ModuleT) -> Segment<'a> {
        Segment {
            name,
            module,
            light: false,
        }
    }

    /// A light segment (a final norm): see [`Segment::light`].
    pub fn light(name: &'static str, module: &'a dyn ModuleT) -> Segment<'a> {
        Segment {
            name,
            module,
            light: true,
        }
    }

    /// Runs this segment alone.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.module.forward_t(x, train)
    }
}

/// What every backbone offers the multi-view model and the trainer: its forward pass as a
/// chain of [`Backbone::segments`] followed by [`Backbone::pool`], so that gradient
/// checkpointing, mixed precision and the model's fusion work the same for every network.
///
/// Input is one tensor per clip batch: `[N, 3, T, H, W]` (Kinetics-normalised RGB) for video
/// backbones, `[N, C + 1, T, K]` (C coordinates, then the validity channel, 1 = valid) for
/// keypoint backbones. Output of `pool` is `[N, feature_dim]`.
pub trait Backbone: fmt::Debug {
    /// The forward pass, in order. Chaining them and then [`Backbone::pool`] equals
    /// [`Backbone::features`]. Every segment must be a pure function of its input tensor,
    /// its variables and the torch RNG (dropout), so a trainer can recompute it.
    fn segments(&self) -> Vec<Segment<'_>>;

    /// Output of the last segment -> `[N, feature_dim]` (no variables).
    fn pool(&self, x: &Tensor) -> Tensor;

    /// Width of the pooled feature vector.
    fn feature_dim(&self) -> i64;

    /// Pooled features `[N, feature_dim]`; `train` enables dropout and batch statistics.
    fn features(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for segment in self.segments() {
            h = segment.forward_t(&h, train);
        }
        self.pool(&h)
    }
}

thread_local! {
    static WEIGHT_HEAVY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a CPU convolution run by [`conv`] on this thread since the last call had more
/// weights than its unfolded input (`batch x C_in x kernel volume x output volume`), as in
/// the last stage of a video ResNet; clears the mark. oneDNN's backward of such a
/// convolution holds about nine weight-sized buffers (27 MiB of weights, 248 MiB at its
/// peak), ATen's own kernel about the unfolded input: the segment-by-segment backward
/// ([`crate::optim::recompute`]) runs a segment that had one on ATen's kernels.
pub fn take_weight_heavy_mark() -> bool {
    WEIGHT_HEAVY.with(|m| m.replace(false))
}

/// Applies a convolution layer to `x` (through [`padded_conv`]) and notes a weight-heavy
/// CPU convolution for [`take_weight_heavy_mark`].
pub fn conv<ND>(x: &Tensor, conv: &nn::Conv<ND>) -> Tensor
where
    nn::Conv<ND>: nn::Module,
{
    let out = padded_conv(x, conv);
    if x.device() == tch::Device::Cpu {
        let (k, o) = (conv.ws.size(), out.size());
        let unfolded: i64 = o[0] * x.size()[1] * k[2..].iter().product::<i64>();
        if conv.ws.numel() as i64 > unfolded * o[2..].iter().product::<i64>() {
            WEIGHT_HEAVY.with(|m| m.set(true));
        }
    }
    out
}

/// Applies a convolution layer to `x`, working around a libtorch 2.11 CPU bug: in bfloat16,
/// the weight gradient of a convolution is wrong (garbage, often inf/NaN) when an input
/// extent `n` along the first convolved dimension lies strictly between 1 and the kernel
/// size (e.g. a `(3, 1, 1)` temporal convolution over 2 frames; found by
/// `train/tests/memory_techniques.rs`). There, the input is zero-padded at the end up to
/// the kernel size and the output cut back to its usual length: with "same"-style zero
/// padding the appended zeros only replace padding zeros, so values and gradients are
/// those of the plain convolution. Float32 and CUDA inputs take the plain path.
fn padded_conv<ND>(x: &Tensor, conv: &nn::Conv<ND>) -> Tensor
where
    nn::Conv<ND>: nn::Module,
{
    use tch::{Device, Kind};
    if x.kind() != Kind::BFloat16 || x.device() != Device::Cpu {
        return x.apply(conv);
    }
    let k = conv.ws.size();
    let s = x.size();
    let nd = k.len() - 2;
    let mut h = x.shallow_clone();
    let mut grown = Vec::new();
    for d in 0..nd {
        let dim = s.len() - nd + d;
        let (n, kd) = (s[dim], k[2 + d]);
        if n > 1 && n < kd {
            let mut shape = h.size();
            shape[dim] = kd - n;
            h = Tensor::cat(
                &[
                    h.shallow_clone(),
                    Tensor::zeros(shape, (h.kind(), h.device())),
                ],
                dim as i64,
            );
            grown.push((dim, n));
        }
    }
    if grown.is_empty() {
        return x.apply(conv);
    }
    // Only reached for tiny extents: the output shape of the plain convolution, cheaply.
    let reference = tch::no_grad(|| x.apply(conv)).size();
    let mut out = h.apply(conv);
    for (dim, _) in grown {
        out = out.narrow(dim as i64, 0, reference[dim]);
    }
    out
}

crate::choice_enum! {
    /// Which backbone `model.backbone` selects.
    pub enum BackboneKind for "model.backbone" {
        /// torchvision `r2plus1d_18`: (2+1)D factorised convolutions (31.5 M with 400
        /// classes). The original project's `3dcnn` means this one.
        R2Plus1d18 => "r2plus1d_18" | "3dcnn",
        /// torchvision `r3d_18`: 3x3x3 convolutions (33.4 M parameters with a 400-class head).
        R3d18 => "r3d_18",
        /// X3D-S/M ([`x3d`]): depthwise 3D convolutions, 3.0 M parameters; the low-memory CNN.
        X3d => "x3d",
        /// Video transformer ([`transformer`]): tubelets, divided space-time attention.
        Transformer => "transformer",
        /// Bidirectional Mamba-2 selective state-space model over tubelet tokens ([`mamba`]).
        Mamba => "mamba",
        /// ST-GCN over keypoints ([`stgcn`]); the only keypoint backbone.
        Stgcn => "stgcn",
    }
}

/// pytorchvideo's X3D input normalisation (every channel).
pub const X3D_MEAN_STD: ([f64; 3], [f64; 3]) = ([0.45; 3], [0.225; 3]);

impl BackboneKind {
    /// The (mean, std) per channel its RGB input is normalised with: the constants of the
    /// pretrained weights each backbone loads (torchvision's Kinetics for the ResNets and
    /// the token models, pytorchvideo's for X3D).
    pub fn input_norm(self) -> ([f64; 3], [f64; 3]) {
        match self {
            BackboneKind::X3d => X3D_MEAN_STD,
            _ => (KINETICS_MEAN, KINETICS_STD),
        }
    }

    /// True for backbones of RGB clips, false for the keypoint backbone.
    pub fn is_video(self) -> bool {
        self != BackboneKind::Stgcn
    }

    /// True for the token backbones, whose positional embeddings depend on the clip shape.
    pub fn is_token(self) -> bool {
        matches!(self, BackboneKind::Transformer | BackboneKind::Mamba)
    }
}

/// Sizes of the configurable backbones (`model.transformer_*`, `model.mamba_*`,
/// `model.stgcn_*`; X3D has none).
#[derive(Debug, Clone, Default)]
pub struct BackboneSettings {
    /// `model.transformer_*`.
    pub transformer: transformer::TransformerConfig,
    /// `model.mamba_*`.
    pub mamba: mamba::MambaConfig,
    /// X3D-S/M.
    pub x3d: x3d::X3dConfig,
    /// `model.stgcn_*`.
    pub stgcn: stgcn::StgcnConfig,
}

/// Builds the video backbone `kind` under `p` for clips of shape `clip` (the token
/// backbones size their positional embeddings from it). Errors name the config key.
pub fn build_video(
    p: &nn::Path,
    kind: BackboneKind,
    settings: &BackboneSettings,
    clip: ClipShape,
) -> Result<Box<dyn Backbone>, BackboneError> {
    Ok(match kind {
        BackboneKind::R3d18 | BackboneKind::R2Plus1d18 => Box::new(VideoResNet::new(p, kind)),
        BackboneKind::X3d => Box::new(x3d::X3d::try_new(p, &settings.x3d)?),
        BackboneKind::Transformer => Box::new(transformer::VideoTransformer::new(
            p,
            &settings.transformer,
            clip,
        )?),
        BackboneKind::Mamba => Box::new(mamba::VideoMamba::new(p, &settings.mamba, clip)?),
        BackboneKind::Stgcn => {
            return Err(BackboneError::Config(
                InputType::Rgb
                    .check_backbone(kind)
                    .err()
                    .unwrap_or_default(),
            ))
        }
    })
}

/// Errors of backbone selection and weight loading; each names the key or file involved.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("cannot read weights file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: tch::TchError,
    },
    #[error(
        "weights file {} has no tensor `{key}`; was it exported for another backbone? \
         (scripts/export_torchvision.py writes torchvision names)",
        file.display()
    )]
    MissingKey { key: String, file: PathBuf },
    #[error(
        "weights file {}: tensor `{key}` has shape {found:?} but the model expects \
         {expected:?}; export weights for the same backbone, or skip this key (e.g. `fc` \
         when the number of classes differs)",
        file.display()
    )]
    ShapeMismatch {
        key: String,
        file: PathBuf,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("weights file {}: cannot copy tensor `{key}`: {source}", file.display())]
    Copy {
        key: String,
        file: PathBuf,
        source: tch::TchError,
    },
    /// A backbone's settings (or its input size) cannot build it; the message names the key.
    #[error("{0}")]
    Config(String),
}

/// What [`load_weights`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables whose values came from the file.
    pub loaded: Vec<String>,
    /// Variables left as they were because they matched a `skip` prefix.
    pub skipped: Vec<String>,
    /// `*.num_batches_tracked` tensors in the file (torchvision BatchNorm counters; tch
    /// has no such variable and momentum-based BN never reads it).
    pub ignored_counters: usize,
    /// Other tensors in the file that no variable asked for.
    pub unused: Vec<String>,
}

fn matches_prefix(name: &str, prefix: &str) -> bool {
    name == prefix
        || (name.len() > prefix.len()
            && name.starts_with(prefix)
            && name.as_bytes()[prefix.len()] == b'.')
}

/// Loads a `.safetensors` file (e.g. from `scripts/export_torchvision.py`) into `vs` by
/// variable name, strictly: every variable of `vs` not under a `skip` prefix (e.g. `"fc"`
/// to keep a freshly initialised head of another size) must be in the file with the same
/// shape. Values are cast to the variable's kind and device. `*.num_batches_tracked`
/// tensors are ignored; other extra tensors are listed in [`LoadReport::unused`].
pub fn load_weights(
    vs: &mut nn::VarStore,
    file: &Path,
    skip: &[&str],
) -> Result<LoadReport, BackboneError> {
    let tensors: HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(file)
        .map_err(|source| BackboneError::Read {
            file: file.to_path_buf(),
            source,
        })?
        .into_iter()
        .collect();
    let mut report = LoadReport::default();
    let mut used = BTreeSet::new();
    let mut variables: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    // Check everything before copying anything, so a failed load leaves `vs` untouched.
    let mut plan = Vec::with_capacity(variables.len());
    for (name, var) in variables {
        if skip.iter().any(|p| matches_prefix(&name, p)) {
            report.skipped.push(name);
            continue;
        }
        let Some(src) = tensors.get(&name) else {
            return Err(BackboneError::MissingKey {
                key: name,
                file: file.to_path_buf(),
            });
        };
        if src.size() != var.size() {
            return Err(BackboneError::ShapeMismatch {
                expected: var.size(),
                found: src.size(),
                key: name,
                file: file.to_path_buf(),
            });
        }
        used.insert(name.clone());
        plan.push((name, var, src));
    }
    tch::no_grad(|| {
        for (name, mut var, src) in plan {
            let src = src.to_kind(var.kind()).to_device(var.device());
            var.f_copy_(&src).map_err(|source| BackboneError::Copy {
                key: name.clone(),
                file: file.to_path_buf(),
                source,
            })?;
            report.loaded.push(name);
        }
        Ok::<(), BackboneError>(())
    })?;
    let mut unused: Vec<String> = tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .filter(|k| !skip.iter().any(|p| matches_prefix(k, p)))
        .cloned()
        .collect();
    unused.sort();
    report.ignored_counters = unused
        .iter()
        .filter(|k| k.ends_with(".num_batches_tracked"))
        .count();
    unused.retain(|k| !k.ends_with(".num_batches_tracked"));
    report.unused = unused;
    Ok(report)
}
