//! What the token backbones (the transformer and Mamba) share: the tubelet embedding with
//! its positional embedding, block names and limits, dropout, initialisation helpers, the
//! final norm, and the segments of a token backbone (the units of checkpointing).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{BackboneError, Segment};
use crate::model::ClipShape;

/// Segment names of the blocks (`block0` .. `block31`); also their variable prefixes.
/// A backbone has at most this many blocks.
pub const BLOCK_NAMES: [&str; 32] = [
    "block0", "block1", "block2", "block3", "block4", "block5", "block6", "block7", "block8",
    "block9", "block10", "block11", "block12", "block13", "block14", "block15", "block16",
    "block17", "block18", "block19", "block20", "block21", "block22", "block23", "block24",
    "block25", "block26", "block27", "block28", "block29", "block30", "block31",
];

/// The most blocks (`model.transformer_layers`, `model.mamba_layers`) a backbone may have.
pub const MAX_LAYERS: i64 = BLOCK_NAMES.len() as i64;

/// Checks `value >= 1`, naming `key` otherwise.
pub(crate) fn check_positive(key: &str, value: i64) -> Result<(), BackboneError> {
    if value < 1 {
        return Err(BackboneError::Config(format!(
            "{key}={value} must be at least 1"
        )));
    }
    Ok(())
}

/// Checks `1 <= layers <= MAX_LAYERS`, naming `key` otherwise.
pub(crate) fn check_layers(key: &str, layers: i64) -> Result<(), BackboneError> {
    if !(1..=MAX_LAYERS).contains(&layers) {
        return Err(BackboneError::Config(format!(
            "{key}={layers} must be between 1 and {MAX_LAYERS}"
        )));
    }
    Ok(())
}

/// Checks `0 <= p < 1`, naming `key` otherwise.
pub(crate) fn check_dropout(key: &str, p: f64) -> Result<(), BackboneError> {
    if !(0.0..1.0).contains(&p) {
        return Err(BackboneError::Config(format!(
            "{key}={p} must be in [0, 1)"
        )));
    }
    Ok(())
}

pub(crate) use crate::model::dropout::maybe_dropout;

/// A Linear layer initialised like ViT: weight normal(0, 0.02), bias 0.
pub(crate) fn vit_linear(p: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    nn::linear(
        p,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.)),
            bias: true,
        },
    )
}

/// LayerNorm over the last dimension (eps 1e-6 as in ViT), weight 1 and bias 0.
pub(crate) fn layer_norm(p: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        nn::LayerNormConfig {
            eps: 1e-6,
            ..Default::default()
        },
    )
}

/// Tubelet (3D patch) embedding with a learned factorised positional embedding:
/// `[N, 3, T, H, W] -> [N, t * h * w, dim]`, tokens time-major (see the module docs).
///
/// Equivalent to PyTorch's `Conv3d(3, dim, kernel_size=tubelet, stride=tubelet)` (the
/// variables `proj.weight` `[dim, 3, pt, ph, pw]` and `proj.bias` `[dim]` have that layout)
/// followed by `+ pos_time[i] + pos_space[j]` (`pos_time` `[t, dim]`, `pos_space`
/// `[h * w, dim]`, normal(0, 0.02)). Inputs whose size is not a multiple of the tubelet are
/// zero-padded at the end of each dimension.
#[derive(Debug)]
pub struct TubeletEmbed {
    weight: Tensor,
    bias: Tensor,
    pos_time: Tensor,
    pos_space: Tensor,
    dim: i64,
    tubelet: [i64; 3],
    input: [i64; 3],
    grid: [i64; 3],
}

impl TubeletEmbed {
    /// Builds the embedding under `p` (variables `<p>.proj.weight`, `<p>.proj.bias`,
    /// `<p>.pos_time`, `<p>.pos_space`) for clips of shape `input`.
    /// `dim_key` names the config key of `dim` in errors.
    pub fn new(
        p: &nn::Path,
        dim: i64,
        tubelet: [i64; 3],
        input: ClipShape,
        dim_key: &str,
    ) -> Result<Self, BackboneError> {
        check_positive(dim_key, dim)?;
        if tubelet.iter().any(|&k| k < 1) {
            return Err(BackboneError::Config(format!(
                "tubelet {tubelet:?} must be at least 1 in every dimension"
            )));
        }
        let input = [input.t, input.h, input.w];
        let what = [
            ("T", "frames", "data.uniform_temporal_subsample_num"),
            ("H", "pixels of height", "data.img_size"),
            ("W", "pixels of width", "data.img_size"),
        ];
        for i in 0..3 {
            if input[i] < tubelet[i] {
                let (name, unit, key) = what[i];
                return Err(BackboneError::Config(format!(
                    "input {name}={} is smaller than the tubelet ({} {unit}, tubelet \
                     {tubelet:?}); set {key} so that {name} >= {}",
                    input[i], tubelet[i], tubelet[i]
                )));
            }
        }
        let grid: [i64; 3] = std::array::from_fn(|i| (input[i] + tubelet[i] - 1) / tubelet[i]);
        let fan_in = 3 * tubelet[0] * tubelet[1] * tubelet[2];
        let bound = 1.0 / (fan_in as f64).sqrt();
        let proj = p / "proj";
        let weight = proj.var(
            "weight",
            &[dim, 3, tubelet[0], tubelet[1], tubelet[2]],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let bias = proj.var(
            "bias",
            &[dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let pos_init = nn::Init::Randn {
            mean: 0.,
            stdev: 0.02,
        };
        let pos_time = p.var("pos_time", &[grid[0], dim], pos_init);
        let pos_space = p.var("pos_space", &[grid[1] * grid[2], dim], pos_init);
        Ok(TubeletEmbed {
            weight,
            bias,
            pos_time,
            pos_space,
            dim,
            tubelet,
            input,
            grid,
        })
    }

    /// Token grid `[t, h, w]` (input size divided by the tubelet, rounded up).
    pub fn grid(&self) -> [i64; 3] {
        self.grid
    }

    /// Number of tokens `t * h * w`.
    pub fn num_tokens(&self) -> i64 {
        self.grid.iter().product()
    }

    /// Token width.
    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// The tubelet size `[frames, height, width]`.
    pub fn tubelet(&self) -> [i64; 3] {
        self.tubelet
    }

    /// The clip size `[T, H, W]` this embedding was built for.
    pub fn input(&self) -> [i64; 3] {
        self.input
    }

    /// `[N, 3, T, H, W] -> [N, t * h * w, dim]` (tokens plus positional embedding), in the
    /// input's kind.
    ///
    /// # Panics
    /// If the input is not `[N, 3, T, H, W]` with the `(T, H, W)` given to [`Self::new`].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        assert!(
            size.len() == 5 && size[1] == 3 && size[2..] == self.input,
            "TubeletEmbed: expected input [N, 3, {}, {}, {}], got {size:?}",
            self.input[0],
            self.input[1],
            self.input[2]
        );
        let n = size[0];
        let [t, h, w] = self.grid;
        let [pt, ph, pw] = self.tubelet;
        let pad: [i64; 3] = std::array::from_fn(|i| self.grid[i] * self.tubelet[i] - self.input[i]);
        let x = if pad.iter().any(|&p| p > 0) {
            // constant_pad_nd pads the last dimension first: (W, H, T).
            x.constant_pad_nd([0, pad[2], 0, pad[1], 0, pad[0]])
        } else {
            x.shallow_clone()
        };
        // [N, 3, t, pt, h, ph, w, pw] -> [N, t, h, w, 3, pt, ph, pw] -> [N, L, 3*pt*ph*pw]
        let patches = x
            .reshape([n, 3, t, pt, h, ph, w, pw])
            .permute([0, 2, 4, 6, 1, 3, 5, 7])
            .reshape([n, t * h * w, 3 * pt * ph * pw]);
        let weight = self.weight.reshape([self.dim, -1]);
        let tokens = patches.linear(&weight, Some(&self.bias));
        // `* 1.0` gives each embedding's gradient a buffer of its own. With a one-token grid
        // (t = h = w = 1) the add's backward would hand both the same buffer, as views that
        // autograd keeps as their .grad; the next in-place accumulation (the following step,
        // or micro-batch) would then add every gradient twice.
        let (pt, ps) = (&self.pos_time * 1.0, &self.pos_space * 1.0);
        let pos = (pt.unsqueeze(1) + ps.unsqueeze(0)).reshape([1, t * h * w, self.dim]);
        tokens + pos
    }
}

/// The final `norm` segment: LayerNorm over every token.
#[derive(Debug)]
pub struct FinalNorm {
    norm: nn::LayerNorm,
}

impl FinalNorm {
    /// A LayerNorm over `dim` under `p` (variables `<p>.weight`, `<p>.bias`).
    pub(crate) fn new(p: nn::Path, dim: i64) -> Self {
        FinalNorm {
            norm: layer_norm(p, dim),
        }
    }
}

impl ModuleT for FinalNorm {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        x.apply(&self.norm)
    }
}

/// The segments of a token backbone: `embed`, `block0` .. `block{n-1}`, `norm`
/// (shared by the transformer and Mamba).
pub(crate) fn token_segments<'a, B: ModuleT>(
    embed: &'a dyn ModuleT,
    blocks: &'a [B],
    norm: &'a dyn ModuleT,
) -> Vec<Segment<'a>> {
    let mut segments = Vec::with_capacity(blocks.len() + 2);
    segments.push(Segment::new("embed", embed));
    for (name, block) in BLOCK_NAMES.iter().zip(blocks) {
        segments.push(Segment::new(name, block));
    }
    segments.push(Segment::light("norm", norm));
    segments
}

impl crate::model::ModelConfig {
    /// The token grid (height, width) of the video backbone's tubelet embedding (the
    /// transformer and Mamba), `None` for the others.
    pub fn token_grid(&self) -> Option<(i64, i64)> {
        let tubelet = match self.backbone {
            super::BackboneKind::Transformer => self.settings.transformer.tubelet,
            super::BackboneKind::Mamba => self.settings.mamba.tubelet,
            _ => return None,
        };
        let cells = |n: i64, k: i64| (n + k - 1) / k;
        Some((
            cells(self.clip.h, tubelet[1]),
            cells(self.clip.w, tubelet[2]),
        ))
    }
}
