//! X3D-S/M: the efficient video network of Feichtenhofer 2020, "X3D: Expanding Architectures
//! for Efficient Video Recognition", rebuilt in tch after pytorchvideo's `create_x3d`.
//!
//! X3D-S and X3D-M share one architecture (the same widths and depths); they differ only in
//! the input they are trained on (X3D-S: 13 frames at 160 px, X3D-M: 16 frames at 224 px).
//! [`X3dConfig::default`] is that architecture:
//!
//! | segment  | layers                                                                      | output (input `[N, 3, T, H, W]`) |
//! |----------|-----------------------------------------------------------------------------|----------------------------------|
//! | `stem`   | `conv_xy` 3->24 (1,3,3) s(1,2,2) p(0,1,1); `conv_t` 24->24 (5,1,1) p(2,0,0) depthwise (groups 24); `bn`; ReLU | `[N, 24, T, H/2, W/2]` |
//! | `stage1` | 3 bottleneck blocks, width 24, inner 54, first block spatial stride 2        | `[N, 24, T, H/4, W/4]`   |
//! | `stage2` | 5 blocks, width 48, inner 108, stride 2                                      | `[N, 48, T, H/8, W/8]`   |
//! | `stage3` | 11 blocks, width 96, inner 216, stride 2                                     | `[N, 96, T, H/16, W/16]` |
//! | `stage4` | 7 blocks, width 192, inner 432, stride 2                                     | `[N, 192, T, H/32, W/32]`|
//! | `head`   | `conv5` 192->432 1x1x1, `bn5`, ReLU; global average pool; `lin5` 432->2048 1x1x1 (no BN, no bias), ReLU | `[N, 2048, 1, 1, 1]` |
//!
//! [`Backbone::pool`] then only flattens: `[N, 2048, 1, 1, 1] -> [N, 2048]`. The global
//! average pool and `lin5` sit inside the `head` segment (not in `pool`) because `pool` must
//! have no variables; the classifier (pytorchvideo's dropout 0.5 + `proj` Linear
//! 2048 -> classes) is owned by the model that uses the backbone.
//!
//! A bottleneck block (pytorchvideo `create_x3d_bottleneck_block`, with `dim_inner =
//! int(bottleneck_factor * width)`):
//! `conv_a` 1x1x1 in->inner, `bn_a`, ReLU; `conv_b` 3x3x3 depthwise (groups = inner) stride
//! (1,s,s) pad 1, `bn_b`, squeeze-excitation `se` (blocks 0, 2, 4, ... of a stage), Swish;
//! `conv_c` 1x1x1 inner->width, `bn_c`; plus the shortcut (`branch1_conv` 1x1x1 stride (1,s,s)
//! where the stride or the width changes, with `branch1_bn` only where the width changes,
//! as pytorchvideo builds it; else identity), then ReLU.
//!
//! The squeeze-excitation is global average pool, `se.fc1` 1x1x1 inner->r (bias), ReLU,
//! `se.fc2` r->inner (bias), sigmoid, scale; `r = round_width(inner, se_ratio)` (pytorchvideo's
//! rounding to a multiple of 8, at least 8: 8/8/16/32 for the four stages).
//!
//! There is no temporal stride anywhere: `T` is preserved up to the head's global pool.
//! All convolutions except the squeeze-excitation ones have no bias. Initialisation follows
//! pytorchvideo's `init_net_weights` for X3D: convolutions kaiming-normal (fan_out, ReLU) with
//! zero bias; BatchNorm weight 1 and bias 0, except each block's final `bn_c`, whose weight
//! is 0 (`zero_init_final_bn`), so that every residual block starts as the identity on its
//! shortcut. BatchNorm: eps 1e-5, momentum 0.1.
//!
//! Parameters: 2.97 M for the feature extractor (everything above, including `lin5`'s 0.88 M);
//! adding a 400-class Linear head gives 3.79 M, X3D-S's published 3.8 M.
//!
//! Variable names (under the path given to [`X3d::new`]): `stem.conv_xy.weight`,
//! `stem.conv_t.weight`, `stem.bn.*`, `stage1.0.conv_a.weight`, `stage1.0.bn_a.*`,
//! `stage1.0.conv_b.weight`, `stage1.0.bn_b.*`, `stage1.0.se.fc1.{weight,bias}`,
//! `stage1.0.se.fc2.*`, `stage1.0.conv_c.weight`, `stage1.0.bn_c.*`,
//! `stage1.0.branch1_conv.weight`, `stage1.0.branch1_bn.*`, ..., `head.conv5.weight`,
//! `head.bn5.*`, `head.lin5.weight`. They are not pytorchvideo's names: `model.pretrained`
//! renames a pytorchvideo state dict on load (see [`crate::model::pretrained`]).
//!
//! Input: float `[N, 3, T, H, W]`, normalised with pytorchvideo's X3D constants (mean 0.45,
//! std 0.225 on every channel, see [`super::BackboneKind::input_norm`]). `H` and `W` need not be multiples of 32
//! (each stride-2 stage rounds up).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{Backbone, BackboneError, Segment};

/// Output widths of the stem and of `stage1..stage4` at `width_factor` 1 (X3D-S/M).
pub const X3D_BASE_WIDTHS: [i64; 4] = [24, 48, 96, 192];

/// Architecture of an [`X3d`]. [`X3dConfig::default`] is X3D-S/M.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct X3dConfig {
    /// Multiplies the stage widths [`X3D_BASE_WIDTHS`] (and the stem width, equal to
    /// `stage1`'s), rounded to multiples of 8 as pytorchvideo's `round_width`. Default 1.0
    /// (X3D-S/M; pytorchvideo expresses the same as `width_factor=2.0` over a base of 12).
    /// Must be finite and > 0.
    pub width_factor: f64,
    /// Number of bottleneck blocks of `stage1..stage4`. Default `[3, 5, 11, 7]` (X3D-S/M;
    /// X3D-XS is the same, X3D-L is `[5, 10, 25, 15]`). Each must be >= 1.
    pub depths: [i64; 4],
    /// Inner (depthwise) width of a block relative to its output width. Default 2.25.
    /// Must be finite and > 0 (the inner width is at least 1).
    pub bottleneck_factor: f64,
    /// Squeeze-excitation reduction ratio, applied on every other block (0, 2, 4, ... of each
    /// stage). Default 1/16. 0 disables squeeze-excitation. Must be in `[0, 1]`.
    pub se_ratio: f64,
    /// Width of the pooled features (output channels of `lin5`). Default 2048 (X3D's head).
    /// Must be >= 1.
    pub feature_dim: i64,
}

impl Default for X3dConfig {
    fn default() -> Self {
        X3dConfig {
            width_factor: 1.0,
            depths: [3, 5, 11, 7],
            bottleneck_factor: 2.25,
            se_ratio: 1.0 / 16.0,
            feature_dim: 2048,
        }
    }
}

impl X3dConfig {
    /// Checks every field; the error names the field (`model.x3d_<field>`) and the rule.
    pub fn validate(&self) -> Result<(), BackboneError> {
        if !(self.width_factor.is_finite() && self.width_factor > 0.0) {
            return Err(BackboneError::Config(format!(
                "model.x3d_width_factor must be a finite number > 0, got {}",
                self.width_factor
            )));
        }
        if let Some(d) = self.depths.iter().find(|&&d| d < 1) {
            return Err(BackboneError::Config(format!(
                "model.x3d_depths: every stage needs at least 1 block, got {d} in {:?}",
                self.depths
            )));
        }
        if !(self.bottleneck_factor.is_finite() && self.bottleneck_factor > 0.0) {
            return Err(BackboneError::Config(format!(
                "model.x3d_bottleneck_factor must be a finite number > 0, got {}",
                self.bottleneck_factor
            )));
        }
        if !(0.0..=1.0).contains(&self.se_ratio) {
            return Err(BackboneError::Config(format!(
                "model.x3d_se_ratio must be in [0, 1] (0 disables squeeze-excitation), got {}",
                self.se_ratio
            )));
        }
        if self.feature_dim < 1 {
            return Err(BackboneError::Config(format!(
                "model.x3d_feature_dim must be >= 1, got {}",
                self.feature_dim
            )));
        }
        Ok(())
    }

    /// Output widths of `stage1..stage4` (the stem's width is `stage1`'s).
    pub fn widths(&self) -> [i64; 4] {
        X3D_BASE_WIDTHS.map(|w| round_width(w, self.width_factor))
    }

    /// Inner width of a block whose output width is `width`: `int(bottleneck_factor * width)`,
    /// at least 1.
    pub fn inner_width(&self, width: i64) -> i64 {
        ((self.bottleneck_factor * width as f64) as i64).max(1)
    }

    /// Width of `conv5` (the head's first conv): the inner width of the last stage (432).
    pub fn conv5_dim(&self) -> i64 {
        self.inner_width(self.widths()[3])
    }
}

/// pytorchvideo's `round_width(width, multiplier, min_width=8, divisor=8)`: `width *
/// multiplier` rounded to the nearest multiple of 8 (at least 8), bumped up by 8 when the
/// rounding lost more than 10%.
pub fn round_width(width: i64, multiplier: f64) -> i64 {
    const DIVISOR: i64 = 8;
    const MIN_WIDTH: i64 = 8;
    let w = width as f64 * multiplier;
    let mut out = MIN_WIDTH.max((w + DIVISOR as f64 / 2.0) as i64 / DIVISOR * DIVISOR);
    if (out as f64) < 0.9 * w {
        out += DIVISOR;
    }
    out
}

/// Conv3d as pytorchvideo's X3D: kaiming-normal (fan_out, ReLU) weights, optional zero bias.
fn conv3d(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: [i64; 3],
    stride: [i64; 3],
    groups: i64,
    bias: bool,
) -> nn::Conv3D {
    let config = nn::ConvConfigND::<[i64; 3]> {
        stride,
        padding: kernel.map(|k| k / 2),
        dilation: [1, 1, 1],
        groups,
        bias,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        bs_init: nn::Init::Const(0.),
        padding_mode: nn::PaddingMode::Zeros,
    };
    nn::conv(p, c_in, c_out, kernel, config)
}

/// BatchNorm3d (eps 1e-5, momentum 0.1, bias 0) with the given initial weight.
fn bn3d(p: nn::Path, c: i64, weight: f64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        cudnn_enabled: true,
        eps: 1e-5,
        momentum: 0.1,
        affine: true,
        ws_init: nn::Init::Const(weight),
        bs_init: nn::Init::Const(0.),
    };
    nn::batch_norm3d(p, c, config)
}

/// `[N, C, T, H, W] -> [N, C, 1, 1, 1]` global average pool.
fn global_pool(x: &Tensor) -> Tensor {
    x.adaptive_avg_pool3d([1, 1, 1])
}

/// The stem: spatial conv, depthwise temporal conv, BN, ReLU.
#[derive(Debug)]
pub struct X3dStem {
    conv_xy: nn::Conv3D,
    conv_t: nn::Conv3D,
    bn: nn::BatchNorm,
}

impl X3dStem {
    fn new(p: nn::Path, width: i64) -> Self {
        X3dStem {
            conv_xy: conv3d(&p / "conv_xy", 3, width, [1, 3, 3], [1, 2, 2], 1, false),
            conv_t: conv3d(
                &p / "conv_t",
                width,
                width,
                [5, 1, 1],
                [1, 1, 1],
                width,
                false,
            ),
            bn: bn3d(&p / "bn", width, 1.0),
        }
    }
}

impl ModuleT for X3dStem {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        super::conv(&super::conv(x, &self.conv_xy), &self.conv_t)
            .apply_t(&self.bn, train)
            .relu()
    }
}

/// Squeeze-excitation: global pool, 1x1x1 reduce, ReLU, 1x1x1 expand, sigmoid, scale.
#[derive(Debug)]
struct SqueezeExcitation {
    fc1: nn::Conv3D,
    fc2: nn::Conv3D,
}

impl SqueezeExcitation {
    fn new(p: nn::Path, channels: i64, reduced: i64) -> Self {
        SqueezeExcitation {
            fc1: conv3d(&p / "fc1", channels, reduced, [1, 1, 1], [1, 1, 1], 1, true),
            fc2: conv3d(&p / "fc2", reduced, channels, [1, 1, 1], [1, 1, 1], 1, true),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = global_pool(x)
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
            .sigmoid();
        x * s
    }
}

/// An X3D bottleneck block (see the module documentation).
#[derive(Debug)]
pub struct X3dBlock {
    conv_a: nn::Conv3D,
    bn_a: nn::BatchNorm,
    conv_b: nn::Conv3D,
    bn_b: nn::BatchNorm,
    se: Option<SqueezeExcitation>,
    conv_c: nn::Conv3D,
    bn_c: nn::BatchNorm,
    /// The shortcut's convolution (where the stride or the width changes) and its
    /// BatchNorm (only where the width changes, as in pytorchvideo).
    branch1: Option<(nn::Conv3D, Option<nn::BatchNorm>)>,
}

impl X3dBlock {
    fn new(
        p: nn::Path,
        c_in: i64,
        inner: i64,
        c_out: i64,
        stride: i64,
        se_reduced: Option<i64>,
    ) -> Self {
        let s = [1, stride, stride];
        let branch1 = (stride != 1 || c_in != c_out).then(|| {
            (
                conv3d(&p / "branch1_conv", c_in, c_out, [1, 1, 1], s, 1, false),
                (c_in != c_out).then(|| bn3d(&p / "branch1_bn", c_out, 1.0)),
            )
        });
        X3dBlock {
            conv_a: conv3d(&p / "conv_a", c_in, inner, [1, 1, 1], [1, 1, 1], 1, false),
            bn_a: bn3d(&p / "bn_a", inner, 1.0),
            conv_b: conv3d(&p / "conv_b", inner, inner, [3, 3, 3], s, inner, false),
            bn_b: bn3d(&p / "bn_b", inner, 1.0),
            se: se_reduced.map(|r| SqueezeExcitation::new(&p / "se", inner, r)),
            conv_c: conv3d(&p / "conv_c", inner, c_out, [1, 1, 1], [1, 1, 1], 1, false),
            bn_c: bn3d(&p / "bn_c", c_out, 0.0),
            branch1,
        }
    }
}

impl ModuleT for X3dBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x.apply(&self.conv_a).apply_t(&self.bn_a, train).relu();
        let out = super::conv(&out, &self.conv_b).apply_t(&self.bn_b, train);
        let out = match &self.se {
            Some(se) => se.forward(&out),
            None => out,
        };
        let out = out.silu().apply(&self.conv_c).apply_t(&self.bn_c, train);
        let shortcut = match &self.branch1 {
            Some((conv, Some(bn))) => x.apply(conv).apply_t(bn, train),
            Some((conv, None)) => x.apply(conv),
            None => x.shallow_clone(),
        };
        (out + shortcut).relu()
    }
}

/// One of `stage1..stage4`: a chain of [`X3dBlock`]s (names `stageN.0`, `stageN.1`, ...).
#[derive(Debug)]
pub struct X3dStage {
    blocks: Vec<X3dBlock>,
}

impl X3dStage {
    /// The blocks of this stage, in order.
    pub fn blocks(&self) -> &[X3dBlock] {
        &self.blocks
    }
}

impl ModuleT for X3dStage {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        x
    }
}

/// The head segment: `conv5` + `bn5` + ReLU, global average pool, `lin5` + ReLU.
/// `[N, C, T, H, W] -> [N, feature_dim, 1, 1, 1]`.
#[derive(Debug)]
pub struct X3dHead {
    conv5: nn::Conv3D,
    bn5: nn::BatchNorm,
    lin5: nn::Conv3D,
}

impl ModuleT for X3dHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x.apply(&self.conv5).apply_t(&self.bn5, train).relu();
        global_pool(&x).apply(&self.lin5).relu()
    }
}

const STAGE_NAMES: [&str; 4] = ["stage1", "stage2", "stage3", "stage4"];

/// X3D-S/M without its classifier: a feature extractor `[N, 3, T, H, W] -> [N, feature_dim]`
/// (`model.backbone=x3d`). See the module documentation for the architecture.
#[derive(Debug)]
pub struct X3d {
    config: X3dConfig,
    stem: X3dStem,
    stages: [X3dStage; 4],
    head: X3dHead,
}

impl X3d {
    /// Builds the network under `p` (variables `<p>.stem.*`, `<p>.stage1.*`, ...,
    /// `<p>.head.*`).
    ///
    /// # Panics
    /// If `config` fails [`X3dConfig::validate`]; use [`X3d::try_new`] for user-supplied
    /// configurations. [`X3dConfig::default`] is valid.
    pub fn new(p: &nn::Path, config: &X3dConfig) -> X3d {
        match X3d::try_new(p, config) {
            Ok(net) => net,
            Err(e) => panic!("invalid X3D configuration: {e}"),
        }
    }

    /// As [`X3d::new`], returning the [`X3dConfig::validate`] error instead of panicking.
    pub fn try_new(p: &nn::Path, config: &X3dConfig) -> Result<X3d, BackboneError> {
        config.validate()?;
        let widths = config.widths();
        let stem = X3dStem::new(p / "stem", widths[0]);
        let mut c_in = widths[0];
        let stages = std::array::from_fn(|i| {
            let sp = p / STAGE_NAMES[i];
            let width = widths[i];
            let inner = config.inner_width(width);
            let se_reduced = (config.se_ratio > 0.0).then(|| round_width(inner, config.se_ratio));
            let blocks = (0..config.depths[i])
                .map(|b| {
                    let block = X3dBlock::new(
                        &sp / b,
                        c_in,
                        inner,
                        width,
                        if b == 0 { 2 } else { 1 },
                        se_reduced.filter(|_| b % 2 == 0),
                    );
                    c_in = width;
                    block
                })
                .collect();
            X3dStage { blocks }
        });
        let hp = p / "head";
        let conv5_dim = config.conv5_dim();
        let head = X3dHead {
            conv5: conv3d(
                &hp / "conv5",
                c_in,
                conv5_dim,
                [1, 1, 1],
                [1, 1, 1],
                1,
                false,
            ),
            bn5: bn3d(&hp / "bn5", conv5_dim, 1.0),
            lin5: conv3d(
                &hp / "lin5",
                conv5_dim,
                config.feature_dim,
                [1, 1, 1],
                [1, 1, 1],
                1,
                false,
            ),
        };
        Ok(X3d {
            config: *config,
            stem,
            stages,
            head,
        })
    }

    /// The configuration this network was built with.
    pub fn config(&self) -> &X3dConfig {
        &self.config
    }

    /// `stage1..stage4` (index 0..3).
    pub fn stages(&self) -> &[X3dStage; 4] {
        &self.stages
    }

    /// `[N, feature_dim, 1, 1, 1]` (the `head` segment's output) -> `[N, feature_dim]`.
    pub fn pool(x: &Tensor) -> Tensor {
        x.flatten(1, -1)
    }
}

impl Backbone for X3d {
    /// `stem`, `stage1`..`stage4`, `head` (the last includes the global pool and `lin5`).
    fn segments(&self) -> Vec<Segment<'_>> {
        let mut segments = Vec::with_capacity(6);
        segments.push(Segment::new("stem", &self.stem));
        for (name, stage) in STAGE_NAMES.iter().zip(&self.stages) {
            segments.push(Segment::new(name, stage));
        }
        segments.push(Segment::new("head", &self.head));
        segments
    }

    fn pool(&self, x: &Tensor) -> Tensor {
        X3d::pool(x)
    }

    fn feature_dim(&self) -> i64 {
        self.config.feature_dim
    }
}

impl ModuleT for X3d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features(x, train)
    }
}
