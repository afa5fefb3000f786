//! Multi-view fusion: one backbone shared by every camera view, a torchvision-named
//! classifier `fc`, and the fusion of views (`model.fusion_mode`).
//!
//! Input `[B, V, 3, T, H, W]` float (Kinetics-normalised, see
//! [`crate::backbone::normalize_kinetics`]); the backbone runs once on `[B*V, 3, T, H, W]`
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

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::str::FromStr;

use tch::nn::{self, Module};
use tch::Tensor;

use crate::backbone::{r3d, Backbone, BackboneKind, Segment, VideoResNet};

/// How the views of a sample are fused (`model.fusion_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FusionMode {
    /// Mean over views of per-view logits.
    LogitMean,
    /// Log of the mean over views of per-view softmax probabilities.
    ProbMean,
    /// Mean of per-view features, then `fc`.
    FeatureMean,
    /// Concatenation of per-view features (`fc` input 512 * V), then `fc`.
    FeatureConcat,
}

/// The values `model.fusion_mode` accepts.
pub const FUSION_MODES: [&str; 4] = ["logit_mean", "prob_mean", "feature_mean", "feature_concat"];

impl FusionMode {
    /// The config spelling (`logit_mean`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FusionMode::LogitMean => "logit_mean",
            FusionMode::ProbMean => "prob_mean",
            FusionMode::FeatureMean => "feature_mean",
            FusionMode::FeatureConcat => "feature_concat",
        }
    }

    /// True when the model output is already normalised log-probabilities (`prob_mean`).
    /// Either way, `cross_entropy_for_logits` is the right loss (see the module docs).
    pub fn outputs_log_probs(self) -> bool {
        self == FusionMode::ProbMean
    }
}

impl fmt::Display for FusionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FusionMode {
    type Err = ModelError;

    /// Parses `logit_mean | prob_mean | feature_mean | feature_concat` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim().to_ascii_lowercase();
        match v.as_str() {
            "logit_mean" => Ok(FusionMode::LogitMean),
            "prob_mean" => Ok(FusionMode::ProbMean),
            "feature_mean" => Ok(FusionMode::FeatureMean),
            "feature_concat" => Ok(FusionMode::FeatureConcat),
            _ => {
                let closest = FUSION_MODES
                    .iter()
                    .min_by_key(|m| strsim::levenshtein(m, &v))
                    .copied()
                    .unwrap_or("logit_mean");
                Err(ModelError::UnknownFusion {
                    value: s.to_string(),
                    closest,
                })
            }
        }
    }
}

/// Errors a user can cause through the model config or the input shape.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model.fusion_mode: unknown fusion mode `{value}` (did you mean `{closest}`?); use \
         one of logit_mean, prob_mean, feature_mean, feature_concat"
    )]
    UnknownFusion {
        value: String,
        closest: &'static str,
    },
    #[error("{key}: must be at least 1, got {value}")]
    NotPositive { key: &'static str, value: i64 },
    #[error("model input has shape {found:?}; expected a float tensor [B, V, 3, T, H, W]{detail}")]
    BadInput { found: Vec<i64>, detail: String },
}

/// What [`MultiViewModel::new`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// `model.backbone`.
    pub backbone: BackboneKind,
    /// `model.fusion_mode`.
    pub fusion: FusionMode,
    /// `model.model_class_num`.
    pub num_classes: i64,
    /// Number of camera views V per sample. Only `feature_concat` depends on it (its `fc`
    /// input is 512 * V); the other modes accept any V.
    pub num_views: i64,
}

/// One shared video backbone over all views + fusion + the `fc` classifier.
#[derive(Debug)]
pub struct MultiViewModel {
    config: ModelConfig,
    backbone: Box<dyn Backbone>,
    feature_dim: i64,
    fc: nn::Linear,
}

impl MultiViewModel {
    /// Builds the model under `p` (at the VarStore root for torchvision names: `stem.*`,
    /// `layer1.*`..`layer4.*`, `fc.*`).
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
        let backbone: Box<dyn Backbone> = Box::new(VideoResNet::new(p, config.backbone));
        let feature_dim = backbone.feature_dim();
        let fc_in = match config.fusion {
            FusionMode::FeatureConcat => feature_dim * config.num_views,
            _ => feature_dim,
        };
        let fc = r3d::classifier(p / "fc", fc_in, config.num_classes);
        Ok(MultiViewModel {
            config,
            backbone,
            feature_dim,
            fc,
        })
    }

    /// The configuration this model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The shared per-view backbone.
    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    /// The backbone's segments, in forward order: the units that
    /// [`crate::recompute`] runs one by one (and recomputes under gradient checkpointing).
    /// Their input is `x.flatten(0, 1)` for a model input `x`; their last output goes to
    /// [`MultiViewModel::head`].
    pub fn segments(&self) -> Vec<Segment<'_>> {
        self.backbone.segments()
    }

    /// The rest of the forward pass after the last segment: the backbone's pooling, then
    /// view fusion and the classifier, for `b` samples of `v` views -> `[B, num_classes]`.
    pub fn head(&self, last: &Tensor, b: i64, v: i64) -> Tensor {
        let features = self.backbone.pool(last);
        self.fuse(&features.view([b, v, self.feature_dim]))
    }

    /// The classifier `fc`.
    pub fn fc(&self) -> &nn::Linear {
        &self.fc
    }

    /// Checks that `x` is `[B, V, 3, T, H, W]` (and, for `feature_concat`, that V matches).
    pub fn check_input(&self, x: &Tensor) -> Result<(), ModelError> {
        let size = x.size();
        let bad = |detail: String| ModelError::BadInput {
            found: size.clone(),
            detail,
        };
        if size.len() != 6 {
            return Err(bad(format!(" ({} dimensions instead of 6)", size.len())));
        }
        if size[2] != 3 {
            return Err(bad(format!(
                " (dimension 2 is {} channels, not 3 RGB)",
                size[2]
            )));
        }
        if size.iter().any(|&d| d < 1) {
            return Err(bad(" (a dimension is empty)".to_string()));
        }
        if !x.is_floating_point() {
            return Err(bad(format!(
                " (dtype {:?}; convert u8 frames to float)",
                x.kind()
            )));
        }
        if self.config.fusion == FusionMode::FeatureConcat && size[1] != self.config.num_views {
            return Err(bad(format!(
                " with V = {} views: feature_concat was built for {} views",
                size[1], self.config.num_views
            )));
        }
        Ok(())
    }

    /// Like [`MultiViewModel::forward_t`], after [`MultiViewModel::check_input`].
    pub fn f_forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.check_input(x)?;
        Ok(self.forward_t(x, train))
    }

    /// `[B, V, 3, T, H, W]` -> fused scores `[B, num_classes]` (logits, or log-probabilities
    /// for `prob_mean`; use [`MultiViewModel::loss`] for all modes). Panics on a malformed
    /// shape; call [`MultiViewModel::f_forward_t`] for a checked version.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let size = x.size();
        let (b, v) = (size[0], size[1]);
        let features = self.backbone.features(&x.flatten(0, 1), train);
        self.fuse(&features.view([b, v, self.feature_dim]))
    }

    /// Fusion + classifier on per-view features `[B, V, F]` -> `[B, num_classes]`.
    /// Split out so a checkpointing trainer can run the backbone segments itself.
    pub fn fuse(&self, features: &Tensor) -> Tensor {
        let size = features.size();
        let (b, v) = (size[0], size[1]);
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

    /// The training loss for every fusion mode: mean cross-entropy of the scores returned by
    /// [`MultiViewModel::forward_t`] against int64 class indices `[B]`.
    pub fn loss(scores: &Tensor, targets: &Tensor) -> Tensor {
        scores.cross_entropy_for_logits(targets)
    }
}

/// Lightning's `get_human_readable_count`: `28.2 K`, `221 K`, `33.4 M`.
fn human_count(n: i64) -> String {
    const LABELS: [&str; 5] = ["", "K", "M", "B", "T"];
    if n <= 0 {
        return format!("{n}");
    }
    let digits = (n as f64).log10().floor() as i32 + 1;
    let groups = (((digits + 2) / 3) as usize).min(LABELS.len());
    let index = groups - 1;
    let x = n as f64 / 10f64.powi(3 * index as i32);
    if index < 1 {
        format!("{n}")
    } else if x >= 100.0 {
        format!("{} {}", x as i64, LABELS[index])
    } else {
        format!("{x:.1} {}", LABELS[index])
    }
}

fn top_level_rank(name: &str) -> (u32, String) {
    let rank = match name {
        "stem" => 0,
        "fc" => 1000,
        n => n
            .strip_prefix("layer")
            .and_then(|k| k.parse::<u32>().ok())
            .map_or(500, |k| 1 + k),
    };
    (rank, name.to_string())
}

/// A PyTorch-Lightning-style model summary of a VarStore: one row per top-level block
/// (first component of the variable names: `stem`, `layer1`..`layer4`, `fc`) with its
/// parameter count and size in MB (f32, 1 MB = 10^6 bytes, as Lightning), then totals.
/// Parameters are the VarStore's trainable variables (frozen ones count as
/// non-trainable); BatchNorm running statistics are buffers and, as in Lightning, are not
/// counted as parameters (their number is shown on a separate line).
pub fn summary(vs: &nn::VarStore) -> String {
    let params: HashSet<usize> = vs
        .trainable_variables()
        .iter()
        .map(|t| t.data_ptr() as usize)
        .collect();
    // name -> (params, trainable params, buffer elements)
    let mut rows: BTreeMap<(u32, String), (i64, i64, i64)> = BTreeMap::new();
    for (name, t) in vs.variables() {
        let top = name.split('.').next().unwrap_or(&name).to_string();
        let entry = rows.entry(top_level_rank(&top)).or_default();
        let n = t.numel() as i64;
        if params.contains(&(t.data_ptr() as usize)) {
            entry.0 += n;
            if t.requires_grad() {
                entry.1 += n;
            }
        } else {
            entry.2 += n;
        }
    }
    let mb = |n: i64| n as f64 * 4.0 / 1e6;
    let name_w = rows.keys().map(|(_, n)| n.len()).max().unwrap_or(4).max(4);
    let idx_w = rows.len().saturating_sub(1).to_string().len();
    let header = format!(
        "{:>idx_w$} | {:<name_w$} | {:>8} | {:>9}",
        "", "Name", "Params", "Size (MB)"
    );
    let rule = "-".repeat(header.len());
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{rule}");
    let (mut total, mut trainable, mut buffers) = (0i64, 0i64, 0i64);
    for (i, ((_, name), (p, tr, buf))) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{i:>idx_w$} | {name:<name_w$} | {:>8} | {:>9.3}",
            human_count(*p),
            mb(*p)
        );
        total += p;
        trainable += tr;
        buffers += buf;
    }
    let _ = writeln!(out, "{rule}");
    let line = |n: i64, what: &str| format!("{:<10}{what} ({n})\n", human_count(n));
    out.push_str(&line(trainable, "Trainable params"));
    out.push_str(&line(total - trainable, "Non-trainable params"));
    out.push_str(&line(total, "Total params"));
    let _ = writeln!(
        out,
        "{:<10.3}Total estimated model params size (MB)",
        mb(total)
    );
    let _ = writeln!(
        out,
        "{:<10}Buffer elements (BatchNorm running stats) ({buffers})",
        human_count(buffers)
    );
    out
}
