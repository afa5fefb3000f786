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

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::tokens::{
    check_dropout, check_layers, check_positive, layer_norm, maybe_dropout, token_segments,
    vit_linear, FinalNorm, TubeletEmbed, BLOCK_NAMES,
};
use super::{Backbone, BackboneError, Segment};
use crate::model::ClipShape;

crate::choice_enum! {
    /// How the token sequence becomes one feature vector (`model.transformer_pool`):
    /// a learned CLS token prepended (its final normalised state is the feature, the
    /// default), or the mean of the final normalised tokens.
    #[derive(Default)]
    pub enum TokenPool for "model.transformer_pool" {
        /// The learned CLS token.
        #[default]
        Cls => "cls",
        /// The mean over tokens.
        Mean => "mean",
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
        input: ClipShape,
    ) -> Result<Self, BackboneError> {
        check_positive("model.transformer_dim", cfg.dim)?;
        check_positive("model.transformer_heads", cfg.heads)?;
        check_positive("model.transformer_ff_dim", cfg.ff_dim)?;
        check_layers("model.transformer_layers", cfg.layers)?;
        check_dropout("model.transformer_dropout", cfg.dropout)?;
        if cfg.dim % cfg.heads != 0 {
            return Err(BackboneError::Config(format!(
                "model.transformer_dim={} is not divisible by model.transformer_heads={}",
                cfg.dim, cfg.heads
            )));
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
