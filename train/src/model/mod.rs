//! Multi-view fusion: one backbone shared by every camera view, a torchvision-named
//! classifier `fc`, and the fusion of views (`model.fusion_mode`).
//!
//! Input `[B, V, 3, T, H, W]` float (Kinetics-normalised, see
//! [`crate::model::backbones::normalize_kinetics`]); the backbone runs once on `[B*V, 3, T, H, W]`
//! (so BatchNorm sees all views of the batch), giving features `[B, V, 512]`, then:
//!
//! | `model.fusion_mode` | output `[B, C]`                                        | `fc` input |
//! |---------------------|--------------------------------------------------------|-----------|
//! | `logit_mean`        | mean over views of per-view logits `fc(f_v)`            | 512       |
//! | `prob_mean`         | `log(mean_v softmax(fc(f_v)))` (log-probabilities)      | 512       |
//! | `feature_mean`      | `fc(mean_v f_v)`                                        | 512       |
//! | `feature_concat`    | `fc([f_1, ..., f_V])` (views concatenated in order)    | 512 * V   |
//!
//! **Output convention and loss.** [`MultiViewModel::forward_t`] always returns scores `s`
//! with `softmax(s)` = the fused class probabilities: logits for three modes and normalised
//! log-probabilities for `prob_mean`. Because `log_softmax(log p) = log p` when `p` sums
//! to 1, cross-entropy on logits (`log_softmax` + NLL, [`MultiViewModel::loss`] =
//! `Tensor::cross_entropy_for_logits`) is the correct loss for all four modes, and argmax
//! is the prediction. [`FusionMode::outputs_log_probs`] says whether the scores are
//! already normalised.
//!
//! With `V = 1` and `logit_mean`, the VarStore holds exactly torchvision's state-dict names
//! (`stem.*`, `layer1.*` .. `layer4.*`, `fc.*`), so a torchvision classifier exported by
//! `scripts/export_torchvision.py` loads by name and gives torchvision's logits.

pub mod backbones;
pub mod dropout;
pub mod pretrained;
pub mod pytorchvideo;
pub mod summary;

pub use summary::summary;

use std::fmt;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::model::backbones::stgcn::Stgcn;
use crate::model::backbones::{
    build_video, r3d, Backbone, BackboneError, BackboneKind, BackboneSettings, Segment,
};

crate::choice_enum! {
    /// How the views of a sample are fused (`model.fusion_mode`).
    pub enum FusionMode for "model.fusion_mode" {
        /// Mean over views of per-view logits.
        LogitMean => "logit_mean",
        /// Log of the mean over views of per-view softmax probabilities.
        ProbMean => "prob_mean",
        /// Mean of per-view features, then `fc`.
        FeatureMean => "feature_mean",
        /// Concatenation of per-view features (`fc` input 512 * V), then `fc`.
        FeatureConcat => "feature_concat",
    }
}

impl FusionMode {
    /// True when the model output is already normalised log-probabilities (`prob_mean`).
    /// Either way, `cross_entropy_for_logits` is the right loss (see the module docs).
    pub fn outputs_log_probs(self) -> bool {
        self == FusionMode::ProbMean
    }
}

crate::choice_enum! {
    /// Which modalities the model sees (`model.input_type`).
    pub enum InputType for "model.input_type" {
        /// RGB clips through a video backbone.
        Rgb => "rgb",
        /// Keypoints through ST-GCN.
        Kpt => "kpt",
        /// Both: a video backbone and ST-GCN per view, fused by `model.modality_fusion`.
        RgbKpt => "rgb_kpt",
    }
}

impl InputType {
    /// Whether RGB clips are needed.
    pub fn uses_rgb(self) -> bool {
        self != InputType::Kpt
    }

    /// Whether keypoints are needed.
    pub fn uses_kpt(self) -> bool {
        self != InputType::Rgb
    }

    /// The one rule pairing backbones and inputs: ST-GCN reads keypoints and only
    /// keypoints; every other backbone reads RGB.
    pub fn check_backbone(self, backbone: BackboneKind) -> Result<(), String> {
        match (self, backbone.is_video()) {
            (InputType::Kpt, true) => Err(format!(
                "model.input_type=kpt needs model.backbone=stgcn (the keypoint backbone), not {backbone}"
            )),
            (InputType::Rgb | InputType::RgbKpt, false) => Err(format!(
                "model.backbone=stgcn reads keypoints: set model.input_type=kpt (and data.load_kpt=true), or choose a video backbone for model.input_type={self}"
            )),
            _ => Ok(()),
        }
    }
}

crate::choice_enum! {
    /// How a view's RGB and keypoint features are combined (`model.modality_fusion`).
    pub enum ModalityFusion for "model.modality_fusion" {
        /// `[f_rgb, f_kpt]`.
        Concat => "concat",
        /// `(f_rgb + W f_kpt) / 2`, with a linear map `kpt_proj` to the RGB width when the
        /// widths differ.
        Mean => "mean",
    }
}

/// The clip a model reads: frames T, height H, width W.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClipShape {
    /// Frames per clip.
    pub t: i64,
    /// Height in pixels.
    pub h: i64,
    /// Width in pixels.
    pub w: i64,
}

impl ClipShape {
    /// `t` frames of `h` x `w`.
    pub const fn new(t: i64, h: i64, w: i64) -> ClipShape {
        ClipShape { t, h, w }
    }
}

impl fmt::Display for ClipShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} x {}x{}", self.t, self.h, self.w)
    }
}

/// The keypoints a model reads: joints, coordinate channels and the skeleton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeypointSpec {
    /// Joints K.
    pub joints: i64,
    /// Coordinate channels C per joint (3: x, y, conf; 4: x, y, z, conf).
    pub channels: i64,
    /// Skeleton edges (joint index pairs), from the cache's layout.
    pub edges: Vec<(usize, usize)>,
    /// The joint each joint becomes in a mirror image (left and right swapped).
    pub mirror: Vec<i64>,
}

impl KeypointSpec {
    /// The joints, edges and mirror of `layout`, with `channels` values per joint.
    pub fn from_layout(layout: &mvdrive_schemas::layout::Layout, channels: i64) -> Self {
        KeypointSpec {
            joints: layout.len() as i64,
            channels,
            edges: layout
                .edges
                .iter()
                .map(|&(a, b)| (a as usize, b as usize))
                .collect(),
            mirror: layout.mirror().into_iter().map(|j| j as i64).collect(),
        }
    }
}

/// Errors a user can cause through the model config or the input shape.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{key}: must be at least 1, got {value}")]
    NotPositive { key: &'static str, value: i64 },
    #[error("model input {found}{detail}")]
    BadInput { found: String, detail: String },
    #[error("{0}")]
    Config(String),
    /// A backbone's settings or weights.
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    /// `model.pretrained`.
    #[error(transparent)]
    Pretrained(#[from] pretrained::PretrainedError),
}

/// What [`MultiViewModel::new`] builds.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// `model.backbone`: the video backbone (rgb, rgb_kpt) or `stgcn` (kpt).
    pub backbone: BackboneKind,
    /// `model.fusion_mode`.
    pub fusion: FusionMode,
    /// `model.model_class_num`.
    pub num_classes: i64,
    /// Number of camera views V per sample. Only `feature_concat` depends on it (its `fc`
    /// input is F * V); the other modes accept any V.
    pub num_views: i64,
    /// `model.input_type`.
    pub input_type: InputType,
    /// `model.modality_fusion` (rgb_kpt only).
    pub modality_fusion: ModalityFusion,
    /// Clip shape the token backbones are built for.
    pub clip: ClipShape,
    /// The keypoints (kpt, rgb_kpt).
    pub keypoints: Option<KeypointSpec>,
    /// Sizes of the configurable backbones.
    pub settings: BackboneSettings,
}

impl Default for ModelConfig {
    /// R(2+1)D-18, logit_mean, 1 class, 1 view, RGB, 8 x 112 x 112.
    fn default() -> Self {
        ModelConfig {
            backbone: BackboneKind::R2Plus1d18,
            fusion: FusionMode::LogitMean,
            num_classes: 1,
            num_views: 1,
            input_type: InputType::Rgb,
            modality_fusion: ModalityFusion::Concat,
            clip: ClipShape {
                t: 8,
                h: 112,
                w: 112,
            },
            keypoints: None,
            settings: BackboneSettings::default(),
        }
    }
}

/// A model input: `rgb` `[B, V, 3, T, H, W]` (float, normalised with the backbone's constants) and/or `kpt`
/// `[B, V, C + 1, T, K]` (coordinates, then the validity channel), and which views each
/// sample has.
#[derive(Debug)]
pub struct Input {
    /// RGB clips.
    pub rgb: Option<Tensor>,
    /// Keypoints with validity.
    pub kpt: Option<Tensor>,
    /// `[B, V]`, 1 where the sample's session has the view, 0 where it lacks that camera
    /// (its clips are zeros); `None` when every view is present. Fusion averages over the
    /// views present.
    pub present: Option<Tensor>,
}

impl From<&Tensor> for Input {
    /// An RGB-only input (shares the tensor's storage).
    fn from(x: &Tensor) -> Input {
        Input::rgb(x.shallow_clone())
    }
}

impl Input {
    /// RGB only.
    pub fn rgb(x: Tensor) -> Input {
        Input {
            rgb: Some(x),
            kpt: None,
            present: None,
        }
    }

    fn first(&self) -> Option<&Tensor> {
        self.rgb.as_ref().or(self.kpt.as_ref())
    }

    /// Batch size B.
    pub fn batch_size(&self) -> i64 {
        self.first().map_or(0, |t| t.size()[0])
    }

    /// Views V.
    pub fn num_views(&self) -> i64 {
        self.first().map_or(0, |t| t.size()[1])
    }

    /// Both parts converted to `kind` (e.g. bfloat16 for the compute copy).
    pub fn to_kind(&self, kind: Kind) -> Input {
        Input {
            rgb: self.rgb.as_ref().map(|t| t.to_kind(kind)),
            kpt: self.kpt.as_ref().map(|t| t.to_kind(kind)),
            present: self.present.as_ref().map(|t| t.to_kind(kind)),
        }
    }

    /// Samples `start..start + len` of the batch.
    pub fn narrow(&self, start: i64, len: i64) -> Input {
        Input {
            rgb: self.rgb.as_ref().map(|t| t.narrow(0, start, len)),
            kpt: self.kpt.as_ref().map(|t| t.narrow(0, start, len)),
            present: self.present.as_ref().map(|t| t.narrow(0, start, len)),
        }
    }
}

/// One modality's path through the model: its input, flattened to `[B*V, ...]`, and the
/// backbone segments it runs through.
pub struct Stream<'a> {
    /// `[B*V, ...]`.
    pub input: Tensor,
    /// The backbone's segments, in order.
    pub segments: Vec<Segment<'a>>,
}

/// One shared backbone per modality over all views, modality fusion, view fusion and the
/// `fc` classifier.
#[derive(Debug)]
pub struct MultiViewModel {
    config: ModelConfig,
    rgb: Option<Box<dyn Backbone>>,
    kpt: Option<Box<dyn Backbone>>,
    kpt_proj: Option<nn::Linear>,
    feature_dim: i64,
    fc: nn::Linear,
}

impl MultiViewModel {
    /// Builds the model under `p`. The video backbone sits at `p` itself (torchvision names
    /// for the ResNets: `stem.*`, `layer1.*`..`layer4.*`), ST-GCN under `kpt.*`, the
    /// classifier at `fc.*`.
    pub fn new(p: &nn::Path, config: ModelConfig) -> Result<Self, ModelError> {
        if config.num_classes < 1 {
            return Err(ModelError::NotPositive {
                key: "model.model_class_num",
                value: config.num_classes,
            });
        }
        if config.num_views < 1 {
            return Err(ModelError::NotPositive {
                key: "number of views",
                value: config.num_views,
            });
        }
        let cfgerr = ModelError::Config;
        config
            .input_type
            .check_backbone(config.backbone)
            .map_err(cfgerr)?;
        let rgb = if config.input_type.uses_rgb() {
            Some(build_video(
                p,
                config.backbone,
                &config.settings,
                config.clip,
            )?)
        } else {
            None
        };
        let kpt = if config.input_type.uses_kpt() {
            let k = config.keypoints.as_ref().ok_or_else(|| {
                cfgerr("model.input_type needs keypoints but the model was given none (data.load_kpt=true and a cache with keypoints)".into())
            })?;
            Some(Box::new(Stgcn::new(
                &(p / "kpt"),
                &config.settings.stgcn,
                k.joints,
                &k.edges,
                k.channels,
            )?) as Box<dyn Backbone>)
        } else {
            None
        };
        let (rd, kd) = (
            rgb.as_ref().map(|b| b.feature_dim()),
            kpt.as_ref().map(|b| b.feature_dim()),
        );
        let (feature_dim, kpt_proj) = match (rd, kd, config.modality_fusion) {
            (Some(r), Some(k), ModalityFusion::Concat) => (r + k, None),
            (Some(r), Some(k), ModalityFusion::Mean) if r != k => (
                r,
                Some(nn::linear(p / "kpt_proj", k, r, Default::default())),
            ),
            (Some(r), _, _) | (None, Some(r), _) => (r, None),
            (None, None, _) => return Err(cfgerr("model.input_type selects no modality".into())),
        };
        let fc_in = match config.fusion {
            FusionMode::FeatureConcat => feature_dim * config.num_views,
            _ => feature_dim,
        };
        let fc = r3d::classifier(p / "fc", fc_in, config.num_classes);
        Ok(MultiViewModel {
            config,
            rgb,
            kpt,
            kpt_proj,
            feature_dim,
            fc,
        })
    }

    /// The configuration this model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The video backbone (or the keypoint one for kpt-only models).
    pub fn backbone(&self) -> &dyn Backbone {
        match (&self.rgb, &self.kpt) {
            (Some(b), _) | (None, Some(b)) => b.as_ref(),
            (None, None) => unreachable!("a model has at least one backbone"),
        }
    }

    /// Width of a view's features after modality fusion.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// The classifier `fc`.
    pub fn fc(&self) -> &nn::Linear {
        &self.fc
    }

    /// Checks the parts the model needs are present and shaped `[B, V, 3, T, H, W]` /
    /// `[B, V, C + 1, T, K]`, float, with the same B and V (and, for `feature_concat`, the V
    /// the model was built for).
    pub fn check_input(&self, x: &Input) -> Result<(), ModelError> {
        let check = |t: Option<&Tensor>, what: &str, ch: i64, ch_doc: &str| {
            let t = t.ok_or_else(|| ModelError::BadInput {
                found: format!("has no {what}"),
                detail: format!(" but model.input_type needs it (data.load_{what}=true)"),
            })?;
            let size = t.size();
            let bad = |detail: String| ModelError::BadInput {
                found: format!("{what} has shape {size:?}"),
                detail,
            };
            let dims = 6 - (what == "kpt") as usize;
            if size.len() != dims {
                return Err(bad(format!(
                    " ({} dimensions instead of {dims}); expected {ch_doc}",
                    size.len()
                )));
            }
            if size[2] != ch {
                return Err(bad(format!(
                    " (dimension 2 is {} channels, not {ch}); expected {ch_doc}",
                    size[2]
                )));
            }
            if size.iter().any(|&d| d < 1) {
                return Err(bad(" (a dimension is empty)".to_string()));
            }
            if !t.is_floating_point() {
                return Err(bad(format!(" (dtype {:?}; convert to float)", t.kind())));
            }
            if self.config.fusion == FusionMode::FeatureConcat && size[1] != self.config.num_views {
                return Err(bad(format!(
                    " with V = {} views: feature_concat was built for {} views",
                    size[1], self.config.num_views
                )));
            }
            Ok((size[0], size[1]))
        };
        let mut bv = Vec::new();
        if self.rgb.is_some() {
            bv.push(check(x.rgb.as_ref(), "rgb", 3, "float [B, V, 3, T, H, W]")?);
        }
        if let (Some(_), Some(k)) = (&self.kpt, &self.config.keypoints) {
            bv.push(check(
                x.kpt.as_ref(),
                "kpt",
                k.channels + 1,
                "float [B, V, C + 1, T, K]",
            )?);
        }
        if bv.windows(2).any(|w| w[0] != w[1]) {
            return Err(ModelError::BadInput {
                found: format!("rgb and kpt disagree on (B, V): {bv:?}"),
                detail: String::new(),
            });
        }
        Ok(())
    }

    /// Like [`MultiViewModel::forward_t`], after [`MultiViewModel::check_input`].
    pub fn f_forward_t(&self, x: &Input, train: bool) -> Result<Tensor, ModelError> {
        self.check_input(x)?;
        Ok(self.forward_t(x, train))
    }

    /// The model's streams for an input (RGB first, then keypoints): the units that
    /// [`crate::optim::recompute`] runs segment by segment. Their last outputs go to
    /// [`MultiViewModel::head`].
    pub fn streams(&self, x: &Input) -> Vec<Stream<'_>> {
        let mut out = Vec::new();
        for (backbone, t) in [(&self.rgb, &x.rgb), (&self.kpt, &x.kpt)] {
            if let (Some(b), Some(t)) = (backbone, t) {
                out.push(Stream {
                    input: t.flatten(0, 1),
                    segments: b.segments(),
                });
            }
        }
        out
    }

    /// Everything after the streams' last segments: pooling, modality fusion, view fusion
    /// and the classifier, for `b` samples of `v` views -> `[B, num_classes]`.
    pub fn head(&self, lasts: &[Tensor], b: i64, v: i64, present: Option<&Tensor>) -> Tensor {
        let mut feats = Vec::new();
        for (backbone, last) in [&self.rgb, &self.kpt].into_iter().flatten().zip(lasts) {
            feats.push(backbone.pool(last));
        }
        let f = match (feats.len(), self.config.modality_fusion) {
            (2, ModalityFusion::Concat) => Tensor::cat(&feats, 1),
            (2, ModalityFusion::Mean) => {
                let k = match &self.kpt_proj {
                    Some(proj) => feats[1].apply(proj),
                    None => feats[1].shallow_clone(),
                };
                (&feats[0] + k) * 0.5
            }
            _ => feats.swap_remove(0),
        };
        self.fuse(&f.view([b, v, self.feature_dim]), present)
    }

    /// The fused scores `[B, num_classes]` (logits, or log-probabilities for `prob_mean`;
    /// use [`MultiViewModel::loss`] for all modes). Panics on a malformed input; call
    /// [`MultiViewModel::f_forward_t`] for a checked version.
    pub fn forward_t(&self, x: &Input, train: bool) -> Tensor {
        let (b, v) = (x.batch_size(), x.num_views());
        let lasts: Vec<Tensor> = self
            .streams(x)
            .into_iter()
            .map(|s| {
                let mut h = s.input;
                for seg in s.segments {
                    h = seg.forward_t(&h, train);
                }
                h
            })
            .collect();
        self.head(&lasts, b, v, x.present.as_ref())
    }

    /// Fusion + classifier on per-view features `[B, V, F]` -> `[B, num_classes]`.
    pub fn fuse(&self, features: &Tensor, present: Option<&Tensor>) -> Tensor {
        let size = features.size();
        let (b, v) = (size[0], size[1]);
        if let Some(m) = present {
            return self.fuse_present(features, &m.to_kind(features.kind()));
        }
        match self.config.fusion {
            FusionMode::LogitMean => self.fc.forward(features).mean_dim(1, false, None),
            FusionMode::ProbMean => {
                // log(mean_v p_v) = logsumexp_v(log p_v) - log V, computed stably.
                self.fc
                    .forward(features)
                    .log_softmax(-1, None)
                    .logsumexp(1, false)
                    - (v as f64).ln()
            }
            FusionMode::FeatureMean => self.fc.forward(&features.mean_dim(1, false, None)),
            FusionMode::FeatureConcat => self
                .fc
                .forward(&features.reshape([b, v * self.feature_dim])),
        }
    }

    /// [`MultiViewModel::fuse`] over the views present (`m` `[B, V]`, 1 or 0): the means
    /// are over present views only; `feature_concat` sees zeros for a missing view.
    fn fuse_present(&self, features: &Tensor, m: &Tensor) -> Tensor {
        let size = features.size();
        let (b, v) = (size[0], size[1]);
        let n = m.sum_dim_intlist(1, true, None).clamp_min(1.0);
        let m3 = m.unsqueeze(-1);
        match self.config.fusion {
            FusionMode::LogitMean => {
                (self.fc.forward(features) * &m3).sum_dim_intlist(1, false, None) / n
            }
            FusionMode::ProbMean => {
                // log(sum_v m_v p_v / n): a missing view adds log 0 = -inf to the logsumexp.
                (self.fc.forward(features).log_softmax(-1, None) + m3.log()).logsumexp(1, false)
                    - n.log()
            }
            FusionMode::FeatureMean => self
                .fc
                .forward(&((features * &m3).sum_dim_intlist(1, false, None) / n)),
            FusionMode::FeatureConcat => self
                .fc
                .forward(&(features * &m3).reshape([b, v * self.feature_dim])),
        }
    }

    /// The training loss for every fusion mode: mean cross-entropy of the scores returned by
    /// [`MultiViewModel::forward_t`] against int64 class indices `[B]`.
    pub fn loss(scores: &Tensor, targets: &Tensor) -> Tensor {
        scores.cross_entropy_for_logits(targets)
    }
}
