//! A video transformer with divided space-time attention (TimeSformer, Bertasius et al.
//! 2021, "Is Space-Time Attention All You Need for Video Understanding?"):
//! `model.backbone=transformer`.
//!
//! Pipeline, for a normalised clip batch `[N, 3, T, H, W]`:
//!
//! 1. `embed` ([`TubeletEmbed`] + optional CLS token + dropout): non-overlapping 3D patches
//!    ("tubelets", default `2 x 16 x 16` frames x pixels) are projected to `dim` channels
//!    (a Conv3d with kernel = stride = tubelet, computed as one matrix product), then a
//!    learned factorised positional embedding (one vector per time step plus one per
//!    spatial position) is added. Tokens are ordered time-major: token `i * (h * w) + j`
//!    is time step `i`, spatial position `j` (row-major). With [`TokenPool::Cls`] a learned
//!    CLS token is prepended, so the segment output is `[N, 1 + t * h * w, dim]`.
//! 2. `block0`, `block1`, ... ([`DividedBlock`], pre-LayerNorm, residual): temporal
//!    attention among the `t` tokens at the same spatial position, then spatial attention
//!    among the `h * w` tokens of one time step (the CLS token joins every time step's
//!    spatial attention and its `t` outputs are averaged, as in TimeSformer), then an MLP
//!    (`dim -> ff_dim -> dim`, GELU). Dropout (`model.transformer_dropout`) is applied to
//!    the embedding output, to each attention output and inside the MLP.
//! 3. `norm`: a final LayerNorm over every token.
//!
//! [`Backbone::pool`] then takes the CLS token or the mean over tokens: `[N, dim]`.
//!
//! Every segment passes a single `[N, L, dim]` token tensor, is a pure function of that
//! tensor, its variables and the torch RNG (dropout), and keeps the input's kind, so the
//! whole model runs in bfloat16 after `VarStore::bfloat16()`.
//!
//! Input sizes that are not a multiple of the tubelet are zero-padded at the end (last
//! frames, bottom rows, right columns) up to the next multiple; an input smaller than one
//! tubelet in any dimension is an error. The input size is fixed at construction (the
//! positional embedding has one entry per token); a forward on another size panics.

use std::fmt;
use std::str::FromStr;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{Backbone, Segment};

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

/// How the token sequence becomes one feature vector (`model.transformer_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenPool {
    /// A learned CLS token is prepended; its final (normalised) state is the feature.
    #[default]
    Cls,
    /// No CLS token; the feature is the mean of the final (normalised) tokens.
    Mean,
}

impl TokenPool {
    /// `cls` or `mean`.
    pub fn name(self) -> &'static str {
        match self {
            TokenPool::Cls => "cls",
            TokenPool::Mean => "mean",
        }
    }
}

impl fmt::Display for TokenPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenPool {
    type Err = String;

    /// Parses `cls` or `mean`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cls" => Ok(TokenPool::Cls),
            "mean" => Ok(TokenPool::Mean),
            _ => Err(format!(
                "model.transformer_pool: unknown pooling `{s}`; use cls or mean"
            )),
        }
    }
}

/// Hyper-parameters of [`VideoTransformer`] (config keys `model.transformer_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    /// Token width (`model.transformer_dim`, default 192); must be divisible by `heads`.
    pub dim: i64,
    /// Number of divided space-time blocks (`model.transformer_layers`, default 4, at most
    /// [`MAX_LAYERS`]).
    pub layers: i64,
    /// Attention heads (`model.transformer_heads`, default 3).
    pub heads: i64,
    /// Hidden width of each MLP (`model.transformer_ff_dim`, default 768).
    pub ff_dim: i64,
    /// Dropout probability after the embedding, on attention outputs and in the MLP
    /// (`model.transformer_dropout`, default 0.1), in `[0, 1)`.
    pub dropout: f64,
    /// Tubelet size `[frames, height, width]` (default `[2, 16, 16]`).
    pub tubelet: [i64; 3],
    /// CLS token or mean pooling (`model.transformer_pool`, default [`TokenPool::Cls`]).
    pub pool: TokenPool,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        TransformerConfig {
            dim: 192,
            layers: 4,
            heads: 3,
            ff_dim: 768,
            dropout: 0.1,
            tubelet: [2, 16, 16],
            pool: TokenPool::Cls,
        }
    }
}

/// Checks `value >= 1`, naming `key` otherwise.
pub(crate) fn check_positive(key: &str, value: i64) -> Result<(), String> {
    if value < 1 {
        return Err(format!("{key}={value} must be at least 1"));
    }
    Ok(())
}

/// Checks `1 <= layers <= MAX_LAYERS`, naming `key` otherwise.
pub(crate) fn check_layers(key: &str, layers: i64) -> Result<(), String> {
    if !(1..=MAX_LAYERS).contains(&layers) {
        return Err(format!("{key}={layers} must be between 1 and {MAX_LAYERS}"));
    }
    Ok(())
}

/// Checks `0 <= p < 1`, naming `key` otherwise.
pub(crate) fn check_dropout(key: &str, p: f64) -> Result<(), String> {
    if !(0.0..1.0).contains(&p) {
        return Err(format!("{key}={p} must be in [0, 1)"));
    }
    Ok(())
}

/// Applies (inverted) dropout only when it can change anything (so `p = 0` draws no
/// random numbers). The mask comes from one uniform draw compared with `p`: on CPU this is
/// about 30% faster than libtorch's Bernoulli-based `dropout` (measured at [2, 1569, 768]),
/// which matters twice under gradient checkpointing, where every mask is drawn again in the
/// recompute. Same distribution; same torch generator, so re-seeding reproduces the mask.
pub(crate) fn maybe_dropout(x: Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        // A bool mask: backward keeps 1 byte per element instead of a float mask.
        // Drawn in float32 whatever x's kind, so a bf16 run draws the masks an fp32 run
        // with the same seed draws.
        let keep = tch::no_grad(|| Tensor::rand(x.size(), (tch::Kind::Float, x.device())).ge(p));
        x * keep * (1.0 / (1.0 - p))
    } else {
        x
    }
}

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
    /// `<p>.pos_time`, `<p>.pos_space`) for clips of `input = (T, H, W)`.
    /// `dim_key` names the config key of `dim` in errors.
    pub fn new(
        p: &nn::Path,
        dim: i64,
        tubelet: [i64; 3],
        input: (i64, i64, i64),
        dim_key: &str,
    ) -> Result<Self, String> {
        check_positive(dim_key, dim)?;
        if tubelet.iter().any(|&k| k < 1) {
            return Err(format!(
                "tubelet {tubelet:?} must be at least 1 in every dimension"
            ));
        }
        let input = [input.0, input.1, input.2];
        let what = [
            ("T", "frames", "data.uniform_temporal_subsample_num"),
            ("H", "pixels of height", "data.img_size"),
            ("W", "pixels of width", "data.img_size"),
        ];
        for i in 0..3 {
            if input[i] < tubelet[i] {
                let (name, unit, key) = what[i];
                return Err(format!(
                    "input {name}={} is smaller than the tubelet ({} {unit}, tubelet \
                     {tubelet:?}); set {key} so that {name} >= {}",
                    input[i], tubelet[i], tubelet[i]
                ));
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
        let pos = (self.pos_time.unsqueeze(1) + self.pos_space.unsqueeze(0)).reshape([
            1,
            t * h * w,
            self.dim,
        ]);
        tokens + pos
    }
}

/// Multi-head self-attention (`qkv` Linear `dim -> 3 dim`, scaled dot-product attention,
/// `proj` Linear `dim -> dim`, dropout on the output) over `[B, L, dim]`.
#[derive(Debug)]
pub struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl Attention {
    fn new(p: nn::Path, dim: i64, heads: i64, dropout: f64) -> Self {
        Attention {
            qkv: vit_linear(&p / "qkv", dim, 3 * dim),
            proj: vit_linear(&p / "proj", dim, dim),
            heads,
            dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, l, d) = x.size3().expect("Attention: input must be [B, L, dim]");
        let qkv = x
            .apply(&self.qkv)
            .reshape([b, l, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = out.transpose(1, 2).reshape([b, l, d]).apply(&self.proj);
        maybe_dropout(out, self.dropout, train)
    }
}

/// The `embed` segment of [`VideoTransformer`]: tubelets + positional embedding
/// (+ CLS token) + dropout, `[N, 3, T, H, W] -> [N, (1 +) t * h * w, dim]`.
#[derive(Debug)]
pub struct TransformerEmbed {
    tubelet: TubeletEmbed,
    cls: Option<Tensor>,
    dropout: f64,
}

impl ModuleT for TransformerEmbed {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let tokens = self.tubelet.forward(x);
        let tokens = match &self.cls {
            Some(cls) => {
                let n = tokens.size()[0];
                let cls = cls.expand([n, 1, self.tubelet.dim()], false);
                Tensor::cat(&[cls, tokens], 1)
            }
            None => tokens,
        };
        maybe_dropout(tokens, self.dropout, train)
    }
}

/// One divided space-time block (pre-LayerNorm, residuals): temporal attention, spatial
/// attention, MLP. Input and output `[N, (1 +) t * s, dim]` (`s = h * w`; the CLS token
/// first when present). Variables: `norm_time`, `attn_time`, `norm_space`, `attn_space`,
/// `norm_mlp`, `mlp.fc1`, `mlp.fc2`.
#[derive(Debug)]
pub struct DividedBlock {
    norm_time: nn::LayerNorm,
    attn_time: Attention,
    norm_space: nn::LayerNorm,
    attn_space: Attention,
    norm_mlp: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    dropout: f64,
    frames: i64,
    positions: i64,
    has_cls: bool,
}

impl DividedBlock {
    fn new(p: nn::Path, cfg: &TransformerConfig, frames: i64, positions: i64) -> Self {
        let mlp = &p / "mlp";
        DividedBlock {
            norm_time: layer_norm(&p / "norm_time", cfg.dim),
            attn_time: Attention::new(&p / "attn_time", cfg.dim, cfg.heads, cfg.dropout),
            norm_space: layer_norm(&p / "norm_space", cfg.dim),
            attn_space: Attention::new(&p / "attn_space", cfg.dim, cfg.heads, cfg.dropout),
            norm_mlp: layer_norm(&p / "norm_mlp", cfg.dim),
            fc1: vit_linear(&mlp / "fc1", cfg.dim, cfg.ff_dim),
            fc2: vit_linear(&mlp / "fc2", cfg.ff_dim, cfg.dim),
            dropout: cfg.dropout,
            frames,
            positions,
            has_cls: cfg.pool == TokenPool::Cls,
        }
    }
}

impl ModuleT for DividedBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (n, _, d) = x.size3().expect("DividedBlock: input must be [N, L, dim]");
        let (t, s) = (self.frames, self.positions);
        let (cls, patches) = if self.has_cls {
            (Some(x.narrow(1, 0, 1)), x.narrow(1, 1, t * s))
        } else {
            (None, x.shallow_clone())
        };

        // Temporal attention: the t tokens at each spatial position.
        let xt = patches
            .reshape([n, t, s, d])
            .permute([0, 2, 1, 3])
            .reshape([n * s, t, d]);
        let yt = self
            .attn_time
            .forward_t(&xt.apply(&self.norm_time), train)
            .reshape([n, s, t, d])
            .permute([0, 2, 1, 3])
            .reshape([n, t * s, d]);
        let patches = patches + yt;

        // Spatial attention: the s tokens of each time step (+ the CLS token).
        let xs = patches.reshape([n * t, s, d]);
        let xs = match &cls {
            Some(cls) => {
                let rep = cls.expand([n, t, d], false).reshape([n * t, 1, d]);
                Tensor::cat(&[rep, xs], 1)
            }
            None => xs,
        };
        let ys = self
            .attn_space
            .forward_t(&xs.apply(&self.norm_space), train);
        let x = match cls {
            Some(cls) => {
                let cls_out =
                    ys.narrow(1, 0, 1)
                        .reshape([n, t, d])
                        .mean_dim([1i64].as_slice(), true, None);
                let ys = ys.narrow(1, 1, s).reshape([n, t * s, d]);
                Tensor::cat(&[cls + cls_out, patches + ys], 1)
            }
            None => patches + ys.reshape([n, t * s, d]),
        };

        // MLP.
        let h = x.apply(&self.norm_mlp).apply(&self.fc1).gelu("none");
        let h = maybe_dropout(h, self.dropout, train).apply(&self.fc2);
        x + maybe_dropout(h, self.dropout, train)
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

/// A divided space-time video transformer without a classifier: `[N, 3, T, H, W] ->
/// [N, dim]` (see the module docs). Variables: `embed.*`, `block0.*` .. , `norm.*`.
#[derive(Debug)]
pub struct VideoTransformer {
    cfg: TransformerConfig,
    embed: TransformerEmbed,
    blocks: Vec<DividedBlock>,
    norm: FinalNorm,
}

impl VideoTransformer {
    /// Builds the backbone under `p` for clips of `input = (T, H, W)`.
    ///
    /// Errors (naming the config key) when a size is not positive, `dim` is not divisible
    /// by `heads`, `layers` is outside `1..=`[`MAX_LAYERS`], `dropout` is outside `[0, 1)`,
    /// or the input is smaller than one tubelet.
    pub fn new(
        p: &nn::Path,
        cfg: &TransformerConfig,
        input: (i64, i64, i64),
    ) -> Result<Self, String> {
        check_positive("model.transformer_dim", cfg.dim)?;
        check_positive("model.transformer_heads", cfg.heads)?;
        check_positive("model.transformer_ff_dim", cfg.ff_dim)?;
        check_layers("model.transformer_layers", cfg.layers)?;
        check_dropout("model.transformer_dropout", cfg.dropout)?;
        if cfg.dim % cfg.heads != 0 {
            return Err(format!(
                "model.transformer_dim={} is not divisible by model.transformer_heads={}",
                cfg.dim, cfg.heads
            ));
        }
        let ep = p / "embed";
        let tubelet = TubeletEmbed::new(&ep, cfg.dim, cfg.tubelet, input, "model.transformer_dim")?;
        let cls = match cfg.pool {
            TokenPool::Cls => Some(ep.var(
                "cls_token",
                &[1, 1, cfg.dim],
                nn::Init::Randn {
                    mean: 0.,
                    stdev: 0.02,
                },
            )),
            TokenPool::Mean => None,
        };
        let [t, h, w] = tubelet.grid();
        let blocks = (0..cfg.layers as usize)
            .map(|i| DividedBlock::new(p / BLOCK_NAMES[i], cfg, t, h * w))
            .collect();
        Ok(VideoTransformer {
            cfg: cfg.clone(),
            embed: TransformerEmbed {
                tubelet,
                cls,
                dropout: cfg.dropout,
            },
            blocks,
            norm: FinalNorm::new(p / "norm", cfg.dim),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// Token grid `[t, h, w]`.
    pub fn grid(&self) -> [i64; 3] {
        self.embed.tubelet.grid()
    }

    /// Sequence length of the segments' outputs (tokens, plus 1 with a CLS token).
    pub fn seq_len(&self) -> i64 {
        self.embed.tubelet.num_tokens() + i64::from(self.embed.cls.is_some())
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
    segments.push(Segment {
        name: "embed",
        module: embed,
    });
    for (name, block) in BLOCK_NAMES.iter().zip(blocks) {
        segments.push(Segment {
            name,
            module: block,
        });
    }
    segments.push(Segment {
        name: "norm",
        module: norm,
    });
    segments
}

impl Backbone for VideoTransformer {
    /// `embed`, `block0` .. `block{layers-1}`, `norm`.
    fn segments(&self) -> Vec<Segment<'_>> {
        token_segments(&self.embed, &self.blocks, &self.norm)
    }

    /// CLS token (`[:, 0]`) or mean over tokens of the normalised sequence: `[N, dim]`.
    fn pool(&self, x: &Tensor) -> Tensor {
        match self.cfg.pool {
            TokenPool::Cls => x.select(1, 0),
            TokenPool::Mean => x.mean_dim([1i64].as_slice(), false, None),
        }
    }

    fn feature_dim(&self) -> i64 {
        self.cfg.dim
    }
}

impl ModuleT for VideoTransformer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features(x, train)
    }
}
