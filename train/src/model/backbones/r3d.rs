//! R3D-18 and R(2+1)D-18: torchvision's video ResNets (`torchvision.models.video.resnet`),
//! rebuilt in tch with the same module names, shapes, strides, paddings and initialisation,
//! so that a torchvision `state_dict` exported to safetensors (`scripts/export_torchvision.py`)
//! loads by name into a [`tch::nn::VarStore`].
//!
//! Architecture (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions"), both
//! models are `VideoResNet(BasicBlock, layers=[2, 2, 2, 2])`:
//!
//! | segment | r3d_18                                   | r2plus1d_18                                   |
//! |---------|------------------------------------------|-----------------------------------------------|
//! | stem    | `0` conv 3->64 (3,7,7) s(1,2,2) p(1,3,3), `1` BN, `2` ReLU | `0` conv 3->45 (1,7,7) s(1,2,2) p(0,3,3), `1` BN, `2` ReLU, `3` conv 45->64 (3,1,1) p(1,0,0), `4` BN, `5` ReLU |
//! | conv    | `Conv3DSimple`: (3,3,3) stride s, pad 1  | `Conv2Plus1D` (a Sequential): `0` conv (1,3,3) s(1,s,s) p(0,1,1) to `midplanes`, `1` BN, `2` ReLU, `3` conv (3,1,1) s(s,1,1) p(1,0,0) |
//! | layerN  | 2 `BasicBlock`s, planes 64/128/256/512, stride 1/2/2/2 | same                                 |
//!
//! A `BasicBlock` is `conv1 = Sequential(conv, BN, ReLU)`, `conv2 = Sequential(conv, BN)`,
//! `downsample = Sequential(conv 1x1x1 stride (s,s,s), BN)` when the stride is not 1 or the
//! width changes (the first block of layer2..4), then `relu(out + residual)`.
//! `midplanes = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)` is computed once per
//! block from the block's `inplanes` and `planes` and used by both of its convs.
//! All convs have `bias=False`; BatchNorm3d has eps 1e-5 and momentum 0.1; there is no
//! zero-init of the residual BN (torchvision's `zero_init_residual` only touches Bottleneck).
//! Initialisation follows `VideoResNet._initialize_weights`: convs kaiming-normal
//! (fan_out, relu), BN weight 1 / bias 0, Linear normal(0, 0.01) / bias 0.
//! The head is `AdaptiveAvgPool3d(1)` + flatten -> `[N, 512]`; the classifier `fc`
//! (Linear 512 -> num_classes) is owned by [`crate::model::MultiViewModel`].
//!
//! Variable names, e.g. for r2plus1d_18: `stem.0.weight` [45,3,1,7,7],
//! `stem.1.{weight,bias,running_mean,running_var}`, `stem.3.weight` [64,45,3,1,1],
//! `layer1.0.conv1.0.0.weight` [144,64,1,3,3], `layer1.0.conv1.0.1.*` (mid BN),
//! `layer1.0.conv1.0.3.weight` [64,144,3,1,1], `layer1.0.conv1.1.*` (BN),
//! `layer2.0.downsample.0.weight` [128,64,1,1,1], `layer2.0.downsample.1.*`; for r3d_18:
//! `stem.0.weight` [64,3,3,7,7], `layer1.0.conv1.0.weight` [64,64,3,3,3], `layer1.0.conv1.1.*`.
//!
//! BatchNorm: torchvision state dicts also carry `*.num_batches_tracked` (an int64 counter
//! that only matters when `momentum=None`); tch's BatchNorm has no such variable, so the
//! export script drops it and [`crate::model::backbones::load_weights`] ignores it if present.
//!
//! Input: float `[N, 3, T, H, W]`, RGB in `[0, 1]` normalised with the Kinetics-400
//! mean/std ([`KINETICS_MEAN`], [`KINETICS_STD`], see [`normalize_kinetics`]).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{conv, Backbone, BackboneKind, Segment};

/// Kinetics-400 per-channel (RGB) mean used by torchvision's video models.
pub const KINETICS_MEAN: [f64; 3] = [0.43216, 0.394666, 0.37645];
/// Kinetics-400 per-channel (RGB) standard deviation used by torchvision's video models.
pub const KINETICS_STD: [f64; 3] = [0.22803, 0.22145, 0.216989];
/// Width of the pooled feature vector (`512 * BasicBlock.expansion`).
pub const FEATURE_DIM: i64 = 512;

/// Normalises a float clip tensor `[..., 3, T, H, W]` with values in `[0, 1]` by the
/// Kinetics mean/std (channel dimension is the 4th from the end). Keeps device and kind.
pub fn normalize_kinetics(x: &Tensor) -> Tensor {
    normalize(x, (KINETICS_MEAN, KINETICS_STD))
}

/// Normalises a float clip tensor `[..., 3, T, H, W]` with values in `[0, 1]` by a per-channel
/// (mean, std). Keeps device and kind.
pub fn normalize(x: &Tensor, (mean, std): ([f64; 3], [f64; 3])) -> Tensor {
    let opts = (x.kind(), x.device());
    let mean = Tensor::from_slice(&mean).to_kind(opts.0).to_device(opts.1);
    let std = Tensor::from_slice(&std).to_kind(opts.0).to_device(opts.1);
    (x - mean.view([3, 1, 1, 1])) / std.view([3, 1, 1, 1])
}

/// torchvision's `midplanes` for a (2+1)D block.
pub fn midplanes(inplanes: i64, planes: i64) -> i64 {
    (inplanes * planes * 3 * 3 * 3) / (inplanes * 3 * 3 + 3 * planes)
}

/// Conv3d with `bias=False` and kaiming-normal (fan_out, relu) init, as torchvision.
fn conv3d(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: [i64; 3],
    stride: [i64; 3],
    padding: [i64; 3],
) -> nn::Conv3D {
    let config = nn::ConvConfigND::<[i64; 3]> {
        stride,
        padding,
        dilation: [1, 1, 1],
        groups: 1,
        bias: false,
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

/// BatchNorm3d with torchvision's defaults (eps 1e-5, momentum 0.1, weight 1, bias 0).
fn bn3d(p: nn::Path, c: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        cudnn_enabled: true,
        eps: 1e-5,
        momentum: 0.1,
        affine: true,
        ws_init: nn::Init::Const(1.),
        bs_init: nn::Init::Const(0.),
    };
    nn::batch_norm3d(p, c, config)
}

/// A Linear layer initialised like torchvision's video ResNet head (`fc`):
/// weight normal(0, 0.01), bias 0. Weight shape `[out_dim, in_dim]`.
pub fn classifier(p: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    nn::linear(
        p,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.,
                stdev: 0.01,
            },
            bs_init: Some(nn::Init::Const(0.)),
            bias: true,
        },
    )
}

/// The "conv_builder" of a block: one 3x3x3 conv (R3D) or a (2+1)D factorised conv.
// 16 of these per network: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum BlockConv {
    /// `Conv3DSimple`: a single `Conv3d` (names `<p>.weight`).
    Simple(nn::Conv3D),
    /// `Conv2Plus1D`: Sequential `0` spatial conv, `1` BN, `2` ReLU, `3` temporal conv.
    TwoPlusOne {
        spatial: nn::Conv3D,
        bn: nn::BatchNorm,
        temporal: nn::Conv3D,
    },
}

impl BlockConv {
    fn new(p: nn::Path, kind: BackboneKind, c_in: i64, c_out: i64, mid: i64, stride: i64) -> Self {
        match kind {
            BackboneKind::R3d18 => BlockConv::Simple(conv3d(
                p,
                c_in,
                c_out,
                [3, 3, 3],
                [stride, stride, stride],
                [1, 1, 1],
            )),
            _ => BlockConv::TwoPlusOne {
                spatial: conv3d(
                    &p / "0",
                    c_in,
                    mid,
                    [1, 3, 3],
                    [1, stride, stride],
                    [0, 1, 1],
                ),
                bn: bn3d(&p / "1", mid),
                temporal: conv3d(&p / "3", mid, c_out, [3, 1, 1], [stride, 1, 1], [1, 0, 0]),
            },
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            BlockConv::Simple(c) => conv(x, c),
            BlockConv::TwoPlusOne {
                spatial,
                bn,
                temporal,
            } => conv(&conv(x, spatial).apply_t(bn, train).relu_(), temporal),
        }
    }
}

/// torchvision's `BasicBlock` (expansion 1) for video ResNets.
#[derive(Debug)]
pub struct BasicBlock {
    conv1: BlockConv,
    bn1: nn::BatchNorm,
    conv2: BlockConv,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv3D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: nn::Path, kind: BackboneKind, inplanes: i64, planes: i64, stride: i64) -> Self {
        let mid = midplanes(inplanes, planes);
        let c1 = &p / "conv1";
        let c2 = &p / "conv2";
        let downsample = if stride != 1 || inplanes != planes {
            let d = &p / "downsample";
            // Both Conv3DSimple and Conv2Plus1D use (stride, stride, stride) here.
            Some((
                conv3d(
                    &d / "0",
                    inplanes,
                    planes,
                    [1, 1, 1],
                    [stride, stride, stride],
                    [0, 0, 0],
                ),
                bn3d(&d / "1", planes),
            ))
        } else {
            None
        };
        BasicBlock {
            conv1: BlockConv::new(&c1 / "0", kind, inplanes, planes, mid, stride),
            bn1: bn3d(&c1 / "1", planes),
            conv2: BlockConv::new(&c2 / "0", kind, planes, planes, mid, 1),
            bn2: bn3d(&c2 / "1", planes),
            downsample,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = self
            .conv1
            .forward_t(x, train)
            .apply_t(&self.bn1, train)
            .relu_();
        let out = self.conv2.forward_t(&out, train).apply_t(&self.bn2, train);
        let residual = match &self.downsample {
            Some((c, bn)) => conv(x, c).apply_t(bn, train),
            None => x.shallow_clone(),
        };
        (out + residual).relu_()
    }
}

/// The stem: `BasicStem` (r3d_18) or `R2Plus1dStem` (r2plus1d_18), each a Sequential of
/// conv/BN/ReLU triples (indices 0,1,2 and, for R(2+1)D, 3,4,5).
#[derive(Debug)]
pub struct Stem {
    stages: Vec<(nn::Conv3D, nn::BatchNorm)>,
}

impl Stem {
    fn new(p: nn::Path, kind: BackboneKind) -> Self {
        let stages = match kind {
            BackboneKind::R3d18 => vec![(
                conv3d(&p / "0", 3, 64, [3, 7, 7], [1, 2, 2], [1, 3, 3]),
                bn3d(&p / "1", 64),
            )],
            _ => vec![
                (
                    conv3d(&p / "0", 3, 45, [1, 7, 7], [1, 2, 2], [0, 3, 3]),
                    bn3d(&p / "1", 45),
                ),
                (
                    conv3d(&p / "3", 45, 64, [3, 1, 1], [1, 1, 1], [1, 0, 0]),
                    bn3d(&p / "4", 64),
                ),
            ],
        };
        Stem { stages }
    }
}

impl ModuleT for Stem {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for (c, bn) in &self.stages {
            x = conv(&x, c).apply_t(bn, train).relu_();
        }
        x
    }
}

/// One of `layer1..layer4`: a Sequential of two [`BasicBlock`]s (names `layerN.0`, `layerN.1`).
#[derive(Debug)]
pub struct ResLayer {
    blocks: Vec<BasicBlock>,
}

impl ResLayer {
    fn new(
        p: nn::Path,
        kind: BackboneKind,
        inplanes: i64,
        planes: i64,
        n_blocks: usize,
        stride: i64,
    ) -> Self {
        let mut blocks = Vec::with_capacity(n_blocks);
        blocks.push(BasicBlock::new(&p / "0", kind, inplanes, planes, stride));
        for i in 1..n_blocks {
            blocks.push(BasicBlock::new(&p / i, kind, planes, planes, 1));
        }
        ResLayer { blocks }
    }

    /// The residual blocks of this layer, in order (finer checkpoint segments).
    pub fn blocks(&self) -> &[BasicBlock] {
        &self.blocks
    }
}

impl ModuleT for ResLayer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for block in &self.blocks {
            x = block.forward_t(&x, train);
        }
        x
    }
}

/// A torchvision video ResNet without its classifier: a feature extractor
/// `[N, 3, T, H, W] -> [N, 512]`.
#[derive(Debug)]
pub struct VideoResNet {
    kind: BackboneKind,
    stem: Stem,
    layers: [ResLayer; 4],
}

const LAYER_NAMES: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];

impl VideoResNet {
    /// Builds the backbone under `p` (variables `<p>.stem.*`, `<p>.layer1.*`, ...). Build it
    /// at the VarStore root to get torchvision's exact names.
    pub fn new(p: &nn::Path, kind: BackboneKind) -> Self {
        let planes = [64, 128, 256, 512];
        let strides = [1, 2, 2, 2];
        let mut inplanes = 64;
        let layers = std::array::from_fn(|i| {
            let layer = ResLayer::new(p / LAYER_NAMES[i], kind, inplanes, planes[i], 2, strides[i]);
            inplanes = planes[i];
            layer
        });
        VideoResNet {
            kind,
            stem: Stem::new(p / "stem", kind),
            layers,
        }
    }

    /// Which architecture this is.
    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// Width of [`VideoResNet::features`]' output (512).
    pub fn feature_dim(&self) -> i64 {
        FEATURE_DIM
    }

    /// The stem and `layer1..layer4` as separately callable segments, in forward order.
    /// Chaining them and then [`VideoResNet::pool`] equals [`VideoResNet::features`].
    pub fn blocks(&self) -> [Segment<'_>; 5] {
        [
            Segment::new("stem", &self.stem),
            Segment::new(LAYER_NAMES[0], &self.layers[0]),
            Segment::new(LAYER_NAMES[1], &self.layers[1]),
            Segment::new(LAYER_NAMES[2], &self.layers[2]),
            Segment::new(LAYER_NAMES[3], &self.layers[3]),
        ]
    }

    /// The stem alone.
    pub fn stem(&self) -> &Stem {
        &self.stem
    }

    /// `layer1..layer4` (index 0..3).
    pub fn layers(&self) -> &[ResLayer; 4] {
        &self.layers
    }

    /// `AdaptiveAvgPool3d(1)` + `flatten(1)`: `[N, C, t, h, w] -> [N, C]`.
    pub fn pool(x: &Tensor) -> Tensor {
        x.adaptive_avg_pool3d([1, 1, 1]).flatten(1, -1)
    }

    /// Pooled features `[N, 512]` of a normalised clip batch `[N, 3, T, H, W]`.
    /// `train` selects batch statistics (and running-stat updates) in BatchNorm.
    pub fn features(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for segment in self.blocks() {
            x = segment.forward_t(&x, train);
        }
        Self::pool(&x)
    }
}

/// Checkpoint segment names: the stem, then each `BasicBlock` (`layer1.0` ...).
const BLOCK_NAMES: [[&str; 2]; 4] = [
    ["layer1.0", "layer1.1"],
    ["layer2.0", "layer2.1"],
    ["layer3.0", "layer3.1"],
    ["layer4.0", "layer4.1"],
];

impl Backbone for VideoResNet {
    /// The stem, then each of the 8 `BasicBlock`s: finer than [`VideoResNet::blocks`], so
    /// that a recompute holds one block's activations, not a whole layer's.
    fn segments(&self) -> Vec<Segment<'_>> {
        let mut out = vec![Segment::new("stem", &self.stem)];
        for (layer, names) in self.layers.iter().zip(BLOCK_NAMES) {
            for (block, name) in layer.blocks().iter().zip(names) {
                out.push(Segment::new(name, block));
            }
        }
        out
    }

    fn pool(&self, x: &Tensor) -> Tensor {
        VideoResNet::pool(x)
    }

    fn feature_dim(&self) -> i64 {
        FEATURE_DIM
    }
}

impl ModuleT for VideoResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features(x, train)
    }
}
