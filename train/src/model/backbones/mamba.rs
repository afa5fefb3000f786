//! A bidirectional selective state-space video model (Mamba-2 blocks, Dao & Gu 2024,
//! "Transformers are SSMs"; bidirectional scanning of video tokens as in VideoMamba, Li et
//! al. 2024): `model.backbone=mamba`.
//!
//! Pipeline, for a normalised clip batch `[N, 3, T, H, W]`:
//!
//! 1. `embed`: [`TubeletEmbed`] (tubelets + learned factorised positional embedding, tokens
//!    time-major) + dropout -> `[N, L, dim]`, `L = t * h * w`.
//! 2. `block0`, `block1`, ... ([`MambaBlock`]): pre-LayerNorm, then
//!    `in_proj` (Linear `dim -> 2E + 2S + H`, `E = expand * dim` inner width, `S` state
//!    size, `H = E / headdim` heads) splits into the gate `z` `[N, L, E]`, `xBC`
//!    `[N, L, E + 2S]` and the raw step sizes `[N, L, H]`. For each direction (`fwd` over
//!    the token order, `bwd` over the flipped order) separately: a depthwise causal conv1d
//!    (kernel `conv_kernel`) and SiLU on `xBC`, split into `x` `[N, L, H, headdim]`, `B` and
//!    `C` `[N, L, 1, S]` (one group shared by all heads), `dt = softplus(raw + dt_bias)`
//!    `[N, L, H]`, `A = -exp(A_log)` `[H]`, and the selective scan
//!    `h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t`, `y_t = C_t . h_t + D x_t`
//!    ([`ssd_chunked`]). The two directions' outputs (the backward one flipped back) are
//!    summed, gated `y * SiLU(z)`, RMS-normalised (Mamba-2's gated norm), projected back
//!    (`out_proj`, `E -> dim`), dropped out and added to the residual.
//! 3. `norm`: a final LayerNorm over every token.
//!
//! [`Backbone::pool`] is then the mean over tokens: `[N, dim]`.
//!
//! The scan is computed with the chunked "state space duality" algorithm (Mamba-2's
//! `ssd_minimal` reference): quadratic attention-like products inside chunks of `chunk`
//! tokens, and a recurrence over chunk states only, so the cost is a handful of batched
//! matrix products rather than one kernel launch per token. [`ssd_naive`] is the plain
//! token-by-token recurrence, for tests.
//!
//! Every segment passes a single `[N, L, dim]` tensor, is a pure function of that tensor,
//! its variables and the torch RNG (dropout), and keeps the input's kind; the scan, the step
//! sizes and the RMS norm are computed in float32 (float64 for float64 input) and cast
//! back, so the model runs in bfloat16 after `VarStore::bfloat16()`.
//!
//! Initialisation follows Mamba-2: `dt_bias` so that `softplus(dt_bias)` is log-uniform in
//! `[0.001, 0.1]`, `A_log = log(U[1, 16])`, `D = 1`, PyTorch-default Linear and Conv1d.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::tokens::{
    check_dropout, check_layers, check_positive, layer_norm, maybe_dropout, token_segments,
    FinalNorm, TubeletEmbed, BLOCK_NAMES,
};
use super::{Backbone, BackboneError, Segment};
use crate::model::ClipShape;

/// Hyper-parameters of [`VideoMamba`] (config keys `model.mamba_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct MambaConfig {
    /// Token width (`model.mamba_dim`, default 192).
    pub dim: i64,
    /// Number of blocks (`model.mamba_layers`, default 4, at most
    /// [`super::tokens::MAX_LAYERS`]).
    pub layers: i64,
    /// SSM state size `S` per head (`model.mamba_state`, default 16).
    pub state: i64,
    /// Inner width factor: `E = expand * dim` (fixed at 2; not a config key).
    pub expand: i64,
    /// Channels per SSM head; `E` must be divisible by it and `H = E / headdim`
    /// (`model.mamba_headdim`, default 64, so 6 heads at the default width).
    pub headdim: i64,
    /// Kernel of the depthwise causal conv1d (`model.mamba_conv_kernel`, default 4).
    pub conv_kernel: i64,
    /// Chunk length of the chunked scan (`model.mamba_chunk`, default 64). Any value gives
    /// the same result up to rounding; it only trades memory (`chunk^2`) against the number
    /// of chunks.
    pub chunk: i64,
    /// Dropout after the embedding and on each block's output before the residual sum
    /// (`model.mamba_dropout`, default 0.1), in `[0, 1)`.
    pub dropout: f64,
    /// Tubelet size `[frames, height, width]` (default `[2, 16, 16]`).
    pub tubelet: [i64; 3],
}

impl Default for MambaConfig {
    fn default() -> Self {
        MambaConfig {
            dim: 192,
            layers: 4,
            state: 16,
            expand: 2,
            headdim: 64,
            conv_kernel: 4,
            chunk: 64,
            dropout: 0.1,
            tubelet: [2, 16, 16],
        }
    }
}

/// Float32, or float64 for float64 input: the kind the scan is computed in.
fn compute_kind(kind: Kind) -> Kind {
    if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Sizes of the scan inputs, checked: `(N, L, H, P, G, S)`.
fn scan_sizes(x: &Tensor, dt: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor) -> [i64; 6] {
    let xs = x.size();
    assert!(xs.len() == 4, "ssd: x must be [N, L, H, P], got {xs:?}");
    let (n, l, h, p) = (xs[0], xs[1], xs[2], xs[3]);
    assert_eq!(dt.size(), [n, l, h], "ssd: dt must be [N, L, H]");
    assert_eq!(a.size(), [h], "ssd: A must be [H]");
    let bs = b.size();
    assert!(
        bs.len() == 4 && bs[0] == n && bs[1] == l && bs[2] >= 1 && h % bs[2] == 0,
        "ssd: B must be [N, L, G, S] with H % G == 0, got {bs:?} for H = {h}"
    );
    assert_eq!(c.size(), bs, "ssd: C must have the shape of B");
    [n, l, h, p, bs[2], bs[3]]
}

/// `[N, L, G, S] -> [N, L, H, S]`: head `i` uses group `i / (H / G)`.
fn expand_groups(b: &Tensor, heads: i64) -> Tensor {
    let (n, l, g, s) = b.size4().expect("ssd: B/C must be [N, L, G, S]");
    if g == heads {
        return b.shallow_clone();
    }
    b.unsqueeze(3)
        .expand([n, l, g, heads / g, s], false)
        .reshape([n, l, heads, s])
}

/// Reference selective scan, one step per token (slow; for tests).
///
/// Shapes: `x` `[N, L, H, P]` (inputs, `P` channels per head), `dt` `[N, L, H]` (positive
/// step sizes, already through softplus), `a` `[H]` (negative decay rates), `b` and `c`
/// `[N, L, G, S]` (input and output projections of the state, `G` groups with `H % G == 0`,
/// head `i` using group `i / (H / G)`; `G = 1` shares them across heads). Returns `y`
/// `[N, L, H, P]` in `x`'s kind, with, per batch, head and channel `p`,
/// `h_t = exp(dt_t a) h_{t-1} + dt_t x_t[p] B_t` (`h` of size `S`, `h_{-1} = 0`) and
/// `y_t[p] = C_t . h_t` (no skip term `D x_t`). Computed in float32 (float64 for float64
/// input).
///
/// # Panics
/// On inconsistent shapes.
pub fn ssd_naive(x: &Tensor, dt: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor) -> Tensor {
    let [n, l, h, p, _, s] = scan_sizes(x, dt, a, b, c);
    let out_kind = x.kind();
    let ck = compute_kind(out_kind);
    let (x, dt, a) = (x.to_kind(ck), dt.to_kind(ck), a.to_kind(ck));
    let b = expand_groups(&b.to_kind(ck), h);
    let c = expand_groups(&c.to_kind(ck), h);
    let mut state = Tensor::zeros([n, h, p, s], (ck, x.device()));
    let mut ys = Vec::with_capacity(l as usize);
    for t in 0..l {
        let dt_t = dt.select(1, t); // [N, H]
        let decay = (&dt_t * a.view([1, h])).exp().view([n, h, 1, 1]);
        let input = (x.select(1, t) * dt_t.unsqueeze(-1)).unsqueeze(-1) // [N, H, P, 1]
            * b.select(1, t).unsqueeze(2); // [N, H, 1, S]
        state = state * decay + input;
        let y_t =
            (&state * c.select(1, t).unsqueeze(2)).sum_dim_intlist([-1i64].as_slice(), false, None);
        ys.push(y_t);
    }
    Tensor::stack(&ys, 1).to_kind(out_kind)
}

/// Segment sums `[..., T] -> [..., T, T]`: `out[i, j] = x[j+1] + ... + x[i]` for `i >= j`
/// (0 on the diagonal), `-inf` above the diagonal, computed stably by masked cumulative
/// sums (no differences of large prefix sums).
fn segsum(x: &Tensor) -> Tensor {
    let size = x.size();
    let t = *size.last().expect("segsum: input must have a dimension");
    let mut expanded = size.clone();
    expanded.push(t);
    let x = x.unsqueeze(-1).expand(expanded.as_slice(), false);
    let ones = Tensor::ones([t, t], (Kind::Bool, x.device()));
    let strict = ones.tril(-1);
    let x = x.masked_fill(&strict.logical_not(), 0.0);
    let sums = x.cumsum(-2, None);
    sums.masked_fill(&ones.tril(0).logical_not(), f64::NEG_INFINITY)
}

/// Chunked selective scan (Mamba-2's state space duality, the `ssd_minimal` algorithm):
/// the same result as [`ssd_naive`] (same shapes and meaning) computed with batched tensor
/// products: within each chunk of `chunk` tokens the output is a masked, decay-weighted
/// `C B^T` "attention" product; the state at each chunk boundary is propagated by a short
/// recurrence over chunks (itself a `[chunks + 1]^2` decay matrix product). `L` need not be
/// a multiple of `chunk`: the sequence is zero-padded at the end (`dt = 0` there, so padded
/// steps neither decay nor feed the state, and being last they cannot affect earlier
/// outputs) and the output cut back to `L`. Computed in float32 (float64 for float64
/// input), returned in `x`'s kind.
///
/// # Panics
/// On inconsistent shapes or `chunk < 1`.
pub fn ssd_chunked(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    chunk: i64,
) -> Tensor {
    assert!(
        chunk >= 1,
        "ssd_chunked: chunk must be at least 1, got {chunk}"
    );
    let [n, l, h, p, _, s] = scan_sizes(x, dt, a, b, c);
    let out_kind = x.kind();
    let ck = compute_kind(out_kind);
    let (x, dt, a) = (x.to_kind(ck), dt.to_kind(ck), a.to_kind(ck));
    let b = expand_groups(&b.to_kind(ck), h);
    let c = expand_groups(&c.to_kind(ck), h);
    let q = chunk;
    let pad = (q - l % q) % q;
    let (x, dt, b, c) = if pad > 0 {
        (
            x.constant_pad_nd([0, 0, 0, 0, 0, pad]),
            dt.constant_pad_nd([0, 0, 0, pad]),
            b.constant_pad_nd([0, 0, 0, 0, 0, pad]),
            c.constant_pad_nd([0, 0, 0, 0, 0, pad]),
        )
    } else {
        (x, dt, b, c)
    };
    let lp = l + pad;
    let nc = lp / q;
    // Discretisation: X = dt x, A = dt a.
    let xdt = (&x * dt.unsqueeze(-1)).reshape([n, nc, q, h, p]); // b c l h p
    let adt = (&dt * a.view([1, 1, h]))
        .reshape([n, nc, q, h])
        .permute([0, 3, 1, 2]); // b h c l
    let b = b.reshape([n, nc, q, h, s]); // b c l h n
    let c = c.reshape([n, nc, q, h, s]);
    let a_cum = adt.cumsum(-1, None); // b h c l

    // 1. Outputs from inputs of the same chunk (diagonal blocks).
    let decay = segsum(&adt).exp(); // b h c l s
    let y_diag = Tensor::einsum(
        "bclhn,bcshn,bhcls,bcshp->bclhp",
        &[&c, &b, &decay, &xdt],
        None::<&[i64]>,
    );

    // 2. State at the end of each chunk from that chunk's inputs.
    let decay_states = (a_cum.narrow(-1, q - 1, 1) - &a_cum).exp(); // b h c l
    let states = Tensor::einsum(
        "bclhn,bhcl,bclhp->bchpn",
        &[&b, &decay_states, &xdt],
        None::<&[i64]>,
    );

    // 3. Recurrence over chunks: the state entering each chunk.
    let states = Tensor::cat(&[states.zeros_like().narrow(1, 0, 1), states], 1); // b c+1 h p n
    let chunk_decay = segsum(&a_cum.select(-1, q - 1).constant_pad_nd([1, 0])).exp(); // b h z c
    let entering = Tensor::einsum(
        "bhzc,bchpn->bzhpn",
        &[&chunk_decay, &states],
        None::<&[i64]>,
    )
    .narrow(1, 0, nc);

    // 4. Outputs from the entering states.
    let y_off = Tensor::einsum(
        "bclhn,bchpn,bhcl->bclhp",
        &[&c, &entering, &a_cum.exp()],
        None::<&[i64]>,
    );
    (y_diag + y_off)
        .reshape([n, lp, h, p])
        .narrow(1, 0, l)
        .to_kind(out_kind)
}

/// RMS norm over the last dimension (eps 1e-5) computed in float32 and cast back, times
/// `weight`.
fn rms_norm(x: &Tensor, weight: &Tensor) -> Tensor {
    let kind = x.kind();
    let xf = x.to_kind(compute_kind(kind));
    let rms = (xf.square().mean_dim([-1i64].as_slice(), true, None) + 1e-5).rsqrt();
    (xf * rms).to_kind(kind) * weight
}

/// One scan direction of a [`MambaBlock`]: its causal conv and SSM parameters
/// (`conv1d.weight` `[E + 2S, 1, K]`, `conv1d.bias`, `dt_bias` `[H]`, `A_log` `[H]`,
/// `D` `[H]`).
#[derive(Debug)]
struct Direction {
    conv: nn::Conv1D,
    dt_bias: Tensor,
    a_log: Tensor,
    d: Tensor,
}

impl Direction {
    fn new(p: nn::Path, channels: i64, heads: i64, kernel: i64) -> Self {
        let conv = nn::conv1d(
            &p / "conv1d",
            channels,
            channels,
            kernel,
            nn::ConvConfig {
                groups: channels,
                padding: kernel - 1,
                ..Default::default()
            },
        );
        let opts = (Kind::Float, p.device());
        let (dt_min, dt_max): (f64, f64) = (0.001, 0.1);
        let dt = (Tensor::rand([heads], opts) * (dt_max.ln() - dt_min.ln()) + dt_min.ln())
            .exp()
            .clamp_min(1e-4);
        // Inverse of softplus: softplus(dt + log(-expm1(-dt))) = dt.
        let inv_dt = &dt + (-(-&dt).expm1()).log();
        let a_log = (Tensor::rand([heads], opts) * 15.0 + 1.0).log();
        Direction {
            conv,
            dt_bias: p.var_copy("dt_bias", &inv_dt),
            a_log: p.var_copy("A_log", &a_log),
            d: p.ones("D", &[heads]),
        }
    }
}

/// One bidirectional Mamba-2 block (see the module docs), `[N, L, dim] -> [N, L, dim]`.
/// Variables: `norm`, `in_proj`, `fwd.*`, `bwd.*` (see `Direction`), `gate_norm.weight`
/// `[E]`, `out_proj`.
#[derive(Debug)]
pub struct MambaBlock {
    norm: nn::LayerNorm,
    in_proj: nn::Linear,
    directions: [Direction; 2],
    gate_norm: Tensor,
    out_proj: nn::Linear,
    inner: i64,
    heads: i64,
    headdim: i64,
    state: i64,
    chunk: i64,
    dropout: f64,
}

impl MambaBlock {
    fn new(p: nn::Path, cfg: &MambaConfig) -> Self {
        let inner = cfg.expand * cfg.dim;
        let heads = inner / cfg.headdim;
        let conv_channels = inner + 2 * cfg.state;
        MambaBlock {
            norm: layer_norm(&p / "norm", cfg.dim),
            in_proj: nn::linear(
                &p / "in_proj",
                cfg.dim,
                2 * inner + 2 * cfg.state + heads,
                Default::default(),
            ),
            directions: [
                Direction::new(&p / "fwd", conv_channels, heads, cfg.conv_kernel),
                Direction::new(&p / "bwd", conv_channels, heads, cfg.conv_kernel),
            ],
            gate_norm: (&p / "gate_norm").ones("weight", &[inner]),
            out_proj: nn::linear(&p / "out_proj", inner, cfg.dim, Default::default()),
            inner,
            heads,
            headdim: cfg.headdim,
            state: cfg.state,
            chunk: cfg.chunk,
            dropout: cfg.dropout,
        }
    }

    /// The SSM path of one direction over `xbc` `[N, L, E + 2S]` and raw step sizes
    /// `dt_raw` `[N, L, H]` (already flipped for the backward direction): `[N, L, E]`.
    fn scan(&self, dir: &Direction, xbc: &Tensor, dt_raw: &Tensor) -> Tensor {
        let (n, l, _) = xbc.size3().expect("MambaBlock: xBC must be [N, L, C]");
        let xbc = super::conv(&xbc.transpose(1, 2), &dir.conv)
            .narrow(2, 0, l)
            .silu()
            .transpose(1, 2);
        let parts = xbc.split_with_sizes([self.inner, self.state, self.state], -1);
        let x = parts[0].reshape([n, l, self.heads, self.headdim]);
        let b = parts[1].unsqueeze(2);
        let c = parts[2].unsqueeze(2);
        let ck = compute_kind(x.kind());
        let dt = (dt_raw.to_kind(ck) + dir.dt_bias.to_kind(ck)).softplus();
        let a = -dir.a_log.to_kind(ck).exp();
        let y =
            ssd_chunked(&x, &dt, &a, &b, &c, self.chunk) + &x * dir.d.view([1, 1, self.heads, 1]);
        y.reshape([n, l, self.inner])
    }
}

impl ModuleT for MambaBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let proj = x.apply(&self.norm).apply(&self.in_proj);
        let parts =
            proj.split_with_sizes([self.inner, self.inner + 2 * self.state, self.heads], -1);
        let (z, xbc, dt_raw) = (&parts[0], &parts[1], &parts[2]);
        let y_fwd = self.scan(&self.directions[0], xbc, dt_raw);
        let y_bwd = self
            .scan(&self.directions[1], &xbc.flip([1]), &dt_raw.flip([1]))
            .flip([1]);
        let y = rms_norm(&((y_fwd + y_bwd) * z.silu()), &self.gate_norm);
        let out = y.apply(&self.out_proj);
        x + maybe_dropout(out, self.dropout, train)
    }
}

/// The `embed` segment of [`VideoMamba`]: [`TubeletEmbed`] + dropout,
/// `[N, 3, T, H, W] -> [N, t * h * w, dim]`.
#[derive(Debug)]
pub struct MambaEmbed {
    tubelet: TubeletEmbed,
    dropout: f64,
}

impl ModuleT for MambaEmbed {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        maybe_dropout(self.tubelet.forward(x), self.dropout, train)
    }
}

/// A bidirectional Mamba-2 video backbone without a classifier: `[N, 3, T, H, W] ->
/// [N, dim]` (see the module docs). Variables: `embed.*`, `block0.*` .. , `norm.*`.
#[derive(Debug)]
pub struct VideoMamba {
    cfg: MambaConfig,
    embed: MambaEmbed,
    blocks: Vec<MambaBlock>,
    norm: FinalNorm,
}

impl VideoMamba {
    /// Builds the backbone under `p` for clips of `input = (T, H, W)`.
    ///
    /// Errors (naming the config key) when a size is not positive, `expand * dim` is not
    /// divisible by `headdim`, `layers` is outside `1..=`
    /// [`super::tokens::MAX_LAYERS`], `dropout` is outside `[0, 1)`, or the input is
    /// smaller than one tubelet (sizes that are not a multiple of it are zero-padded).
    pub fn new(p: &nn::Path, cfg: &MambaConfig, input: ClipShape) -> Result<Self, BackboneError> {
        check_positive("model.mamba_dim", cfg.dim)?;
        check_layers("model.mamba_layers", cfg.layers)?;
        check_positive("model.mamba_state", cfg.state)?;
        // Fixed sizes (not config keys): named by their field.
        check_positive("MambaConfig::expand", cfg.expand)?;
        check_positive("MambaConfig::headdim", cfg.headdim)?;
        check_positive("MambaConfig::conv_kernel", cfg.conv_kernel)?;
        check_positive("MambaConfig::chunk", cfg.chunk)?;
        check_dropout("model.mamba_dropout", cfg.dropout)?;
        let inner = cfg.expand * cfg.dim;
        if inner % cfg.headdim != 0 {
            return Err(BackboneError::Config(format!(
                "model.mamba_dim={}: the SSM runs {} x dim = {inner} channels in heads of {}, \
                 which do not divide them; choose model.mamba_dim so that {} x dim is a \
                 multiple of {}",
                cfg.dim, cfg.expand, cfg.headdim, cfg.expand, cfg.headdim
            )));
        }
        let tubelet = TubeletEmbed::new(
            &(p / "embed"),
            cfg.dim,
            cfg.tubelet,
            input,
            "model.mamba_dim",
        )?;
        let blocks = (0..cfg.layers as usize)
            .map(|i| MambaBlock::new(p / BLOCK_NAMES[i], cfg))
            .collect();
        Ok(VideoMamba {
            cfg: cfg.clone(),
            embed: MambaEmbed {
                tubelet,
                dropout: cfg.dropout,
            },
            blocks,
            norm: FinalNorm::new(p / "norm", cfg.dim),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MambaConfig {
        &self.cfg
    }

    /// Token grid `[t, h, w]`.
    pub fn grid(&self) -> [i64; 3] {
        self.embed.tubelet.grid()
    }

    /// Number of SSM heads per direction (`expand * dim / headdim`).
    pub fn heads(&self) -> i64 {
        self.cfg.expand * self.cfg.dim / self.cfg.headdim
    }
}

impl Backbone for VideoMamba {
    /// `embed`, `block0` .. `block{layers-1}`, `norm`.
    fn segments(&self) -> Vec<Segment<'_>> {
        token_segments(&self.embed, &self.blocks, &self.norm)
    }

    /// Mean over tokens of the normalised sequence: `[N, dim]`.
    fn pool(&self, x: &Tensor) -> Tensor {
        x.mean_dim([1i64].as_slice(), false, None)
    }

    fn feature_dim(&self) -> i64 {
        self.cfg.dim
    }
}

impl ModuleT for VideoMamba {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features(x, train)
    }
}
