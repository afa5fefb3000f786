//! ST-GCN: the spatial-temporal graph convolution network of Yan et al. 2018, "Spatial
//! Temporal Graph Convolutional Networks for Skeleton-Based Action Recognition", over one
//! view's keypoints (`model.backbone=stgcn`), with missing detections treated as missing.
//!
//! # Input and the validity mask
//! Input is `[N, C + 1, T, K]`: `C` coordinate channels (e.g. x, y, confidence, or x, y, z,
//! confidence, as the cache stores them), then one validity channel: `> 0.5` means the
//! (frame, joint) entry was detected, anything else means missing. The caller usually
//! broadcasts a per-frame flag over the joints; per-joint values work the same way.
//! Missing entries are missing everywhere:
//! - their coordinates are replaced by 0 before anything reads them (whatever they hold,
//!   even NaN or infinity, cannot change the output);
//! - features are multiplied by the mask before every operation that mixes positions, and
//!   the output of every unit is 0 at invalid positions;
//! - graph aggregation is a mean over the *valid* neighbours of each partition (below), so a
//!   missing joint does not pull its neighbours toward zero;
//! - the temporal convolution is a partial convolution (Liu et al. 2018): its output is
//!   rescaled by `temporal_kernel / (valid frames in the window)`;
//! - the pooled feature vector is a mean over the valid `(t, k)` positions only, and 0 when
//!   a sample has none (never NaN).
//!
//! BatchNorm batch statistics are taken over all positions, invalid ones included (they
//! hold values that do not depend on the missing inputs).
//!
//! Because a [`Segment`] passes one tensor, the mask travels with the features: every
//! segment's output is `[N, Cf + 1, T', K]` whose last channel is the (binary) mask at that
//! temporal resolution.
//!
//! # Graph
//! The skeleton comes from an undirected edge list (e.g. [`mvdrive_schemas::layout`]'s
//! layouts). Neighbours are grouped with ST-GCN's *spatial* partitioning strategy into three
//! partitions relative to a centre joint: 0 = the root (the joint itself, and neighbours as
//! far from the centre as itself), 1 = centripetal (neighbours closer to the centre),
//! 2 = centrifugal (neighbours farther from it). The centre is chosen automatically, per
//! connected component of the graph, as the joint of smallest eccentricity (largest hop
//! distance to the other joints of its component; ties go to the lower index), so no layout
//! needs a hand-picked centre; a joint without edges only has its root partition.
//! The binary partition matrices ([`spatial_adjacency`], `[3, K, K]`, `A[p, i, j] = 1` when
//! `j` is a `p`-neighbour of `i`) are a constant tensor built at construction, not a
//! variable of the VarStore; they are cast to the input's kind and device on use.
//!
//! Aggregation for joint `i`: `sum_p (sum_j A[p,i,j] * E[p,i,j] * m_j * f_pj) / max(1,
//! sum_j A[p,i,j] * m_j)`, where `f_p = W_p x` is the 1x1 convolution's `p`-th slice, `m` the
//! mask and `E` ST-GCN's learnable edge importance (`unitN.gcn.edge_importance`, init 1).
//! This replaces ST-GCN's fixed degree normalisation by a mean over valid neighbours.
//!
//! # Layers
//! `data_bn`: BatchNorm1d over the `C * K` (joint-major, channel-minor, as ST-GCN's
//! `data_bn`) coordinate channels, then masked. Then `layers` ST-GCN units, each:
//! graph conv (`gcn.conv` 1x1, `in -> 3 * out` with bias, then the aggregation above);
//! `tcn.bn1`, ReLU; temporal conv `tcn.conv` (`temporal_kernel` x 1, stride (s, 1), padding
//! `(temporal_kernel - 1) / 2`, no bias, partial-conv rescaled); `tcn.bn2`; dropout; plus the
//! residual; ReLU; mask. The residual is none for `unit0` (as ST-GCN), the identity when the
//! width and resolution are unchanged, else `residual.conv` 1x1 stride (s, 1) + `residual.bn`.
//!
//! Width rule: with `L = layers` and `mid = L / 2` (integer division), units `0..mid` have
//! `hidden_dim` channels and units `mid..L` have `2 * hidden_dim`; unit `mid` has temporal
//! stride 2 (so `T' = ceil(T / 2)`). With `L = 1` there is no doubling and no stride. The
//! default (64, 6 layers) gives 64, 64, 64, 128 (stride 2), 128, 128 and 128 features. When
//! the stride is 2 the mask is downsampled by a max-pool over frames `2t-1, 2t, 2t+1`: an
//! output frame is valid when any frame next to its centre is.
//!
//! Variables: `data_bn.*`, `unitN.gcn.conv.{weight,bias}`, `unitN.gcn.edge_importance`,
//! `unitN.tcn.bn1.*`, `unitN.tcn.conv.weight`, `unitN.tcn.bn2.*`, `unitN.residual.conv.*`,
//! `unitN.residual.bn.*`. Convolutions use tch's default (kaiming-uniform) initialisation;
//! BatchNorm eps 1e-5, momentum 0.1.

use std::collections::{BTreeSet, VecDeque};

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::{Backbone, BackboneError, Segment};

/// Number of spatial partitions (root, centripetal, centrifugal).
pub const NUM_PARTITIONS: i64 = 3;

/// The most ST-GCN units a network can have (`model.stgcn_layers`).
pub const MAX_LAYERS: i64 = 32;

const UNIT_NAMES: [&str; MAX_LAYERS as usize] = [
    "unit0", "unit1", "unit2", "unit3", "unit4", "unit5", "unit6", "unit7", "unit8", "unit9",
    "unit10", "unit11", "unit12", "unit13", "unit14", "unit15", "unit16", "unit17", "unit18",
    "unit19", "unit20", "unit21", "unit22", "unit23", "unit24", "unit25", "unit26", "unit27",
    "unit28", "unit29", "unit30", "unit31",
];

/// Architecture of an [`Stgcn`] (keys `model.stgcn_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StgcnConfig {
    /// `model.stgcn_hidden_dim`: width of the first units; the second half has twice this
    /// (see the module documentation). Default 64. Must be >= 1.
    pub hidden_dim: i64,
    /// `model.stgcn_layers`: number of ST-GCN units. Default 6. Must be in 1..=32.
    pub layers: i64,
    /// `model.stgcn_temporal_kernel`: frames seen by each temporal convolution. Default 9.
    /// Must be odd (and >= 1).
    pub temporal_kernel: i64,
    /// `model.stgcn_dropout`: dropout probability in every unit. Default 0.1. Must be in
    /// `[0, 1)`.
    pub dropout: f64,
}

impl Default for StgcnConfig {
    fn default() -> Self {
        StgcnConfig {
            hidden_dim: 64,
            layers: 6,
            temporal_kernel: 9,
            dropout: 0.1,
        }
    }
}

impl StgcnConfig {
    /// Checks every field; the error names the key (`model.stgcn_*`) and the rule.
    pub fn validate(&self) -> Result<(), BackboneError> {
        if self.hidden_dim < 1 {
            return Err(BackboneError::Config(format!(
                "model.stgcn_hidden_dim must be >= 1, got {}",
                self.hidden_dim
            )));
        }
        if !(1..=MAX_LAYERS).contains(&self.layers) {
            return Err(BackboneError::Config(format!(
                "model.stgcn_layers must be in 1..={MAX_LAYERS}, got {}",
                self.layers
            )));
        }
        if self.temporal_kernel < 1 || self.temporal_kernel % 2 == 0 {
            return Err(BackboneError::Config(format!(
                "model.stgcn_temporal_kernel must be odd and >= 1 (it is centred on each \
                 frame), got {}",
                self.temporal_kernel
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(BackboneError::Config(format!(
                "model.stgcn_dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        Ok(())
    }

    /// `(output width, temporal stride)` of each unit, by the width rule of the module
    /// documentation.
    pub fn unit_shapes(&self) -> Vec<(i64, i64)> {
        let mid = if self.layers >= 2 {
            self.layers / 2
        } else {
            i64::MAX
        };
        (0..self.layers)
            .map(|i| {
                let width = if i >= mid {
                    2 * self.hidden_dim
                } else {
                    self.hidden_dim
                };
                (width, if i == mid { 2 } else { 1 })
            })
            .collect()
    }

    /// Width of the pooled features: the last unit's width.
    pub fn feature_dim(&self) -> i64 {
        self.unit_shapes()
            .last()
            .map_or(self.hidden_dim, |&(width, _)| width)
    }
}

/// The spatial-partition matrices of a skeleton, `[3, K, K]` float on the CPU: `A[p, i, j]`
/// is 1 when joint `j` is in partition `p` (0 root, 1 centripetal, 2 centrifugal) of joint
/// `i`, else 0 (see the module documentation). Self-loops and repeated edges in `edges` are
/// allowed. Errors name the first edge with a joint index `>= num_joints`, or a
/// `num_joints < 1`.
pub fn spatial_adjacency(
    num_joints: i64,
    edges: &[(usize, usize)],
) -> Result<Tensor, BackboneError> {
    if num_joints < 1 {
        return Err(BackboneError::Config(format!(
            "ST-GCN needs at least one joint, got num_joints = {num_joints}"
        )));
    }
    let k = num_joints as usize;
    let mut neighbours = vec![BTreeSet::new(); k];
    for (e, &(a, b)) in edges.iter().enumerate() {
        if a >= k || b >= k {
            return Err(BackboneError::Config(format!(
                "skeleton edge #{e} ({a}, {b}): joint index {} is out of range for \
                 {num_joints} joints (indices 0..{num_joints})",
                a.max(b)
            )));
        }
        if a != b {
            neighbours[a].insert(b);
            neighbours[b].insert(a);
        }
    }
    let bfs = |start: usize| -> Vec<Option<usize>> {
        let mut dist = vec![None; k];
        dist[start] = Some(0);
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            let d = dist[v].unwrap_or(0);
            for &w in &neighbours[v] {
                if dist[w].is_none() {
                    dist[w] = Some(d + 1);
                    queue.push_back(w);
                }
            }
        }
        dist
    };
    // Distance of every joint to the centre of its connected component.
    let mut to_centre: Vec<Option<usize>> = vec![None; k];
    for start in 0..k {
        if to_centre[start].is_some() {
            continue;
        }
        let component: Vec<usize> = bfs(start)
            .iter()
            .enumerate()
            .filter_map(|(v, d)| d.map(|_| v))
            .collect();
        // Component members in increasing index order: `min_by_key` keeps the first minimum.
        let centre = component
            .iter()
            .copied()
            .min_by_key(|&v| bfs(v).iter().flatten().copied().max().unwrap_or(0))
            .unwrap_or(start);
        let dist = bfs(centre);
        for &v in &component {
            to_centre[v] = dist[v];
        }
    }
    let dist: Vec<usize> = to_centre.into_iter().map(|d| d.unwrap_or(0)).collect();
    let mut a = vec![0f32; 3 * k * k];
    for i in 0..k {
        a[i * k + i] = 1.0;
        for &j in &neighbours[i] {
            let p = match dist[j].cmp(&dist[i]) {
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Less => 1,
                std::cmp::Ordering::Greater => 2,
            };
            a[p * k * k + i * k + j] = 1.0;
        }
    }
    Ok(Tensor::from_slice(&a).view([NUM_PARTITIONS, num_joints, num_joints]))
}

/// Splits a segment tensor `[N, Cf + 1, T, K]` into features `[N, Cf, T, K]` and mask
/// `[N, 1, T, K]`.
fn split(x: &Tensor, channels: i64) -> (Tensor, Tensor) {
    (x.narrow(1, 0, channels), x.narrow(1, channels, 1))
}

/// The `data_bn` segment: masks the coordinates, BatchNorm1d over `C * K` channels, masks
/// again. `[N, C + 1, T, K] -> [N, C + 1, T, K]` (last channel: the binary mask).
#[derive(Debug)]
pub struct StgcnDataBn {
    bn: nn::BatchNorm,
    in_channels: i64,
    num_joints: i64,
}

impl ModuleT for StgcnDataBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (c, k) = (self.in_channels, self.num_joints);
        let (coords, validity) = split(x, c);
        let valid = validity.gt(0.5);
        let mask = valid.to_kind(x.kind());
        let coords = coords.masked_fill(&valid.logical_not(), 0.0);
        let size = coords.size();
        let (n, t) = (size[0], size[2]);
        // [N, C, T, K] -> [N, K, C, T] -> [N, K * C, T], as ST-GCN's data_bn.
        let h = coords
            .permute([0, 3, 1, 2])
            .reshape([n, k * c, t])
            .apply_t(&self.bn, train)
            .view([n, k, c, t])
            .permute([0, 2, 3, 1]);
        Tensor::cat(&[h * &mask, mask], 1)
    }
}

/// One ST-GCN unit (graph conv, temporal conv, residual), mask-aware.
/// `[N, Cin + 1, T, K] -> [N, Cout + 1, T', K]`.
#[derive(Debug)]
pub struct StgcnUnit {
    in_channels: i64,
    out_channels: i64,
    stride: i64,
    temporal_kernel: i64,
    dropout: f64,
    adjacency: Tensor,
    gcn_conv: nn::Conv2D,
    edge_importance: Tensor,
    bn1: nn::BatchNorm,
    tcn_conv: nn::Conv2D,
    bn2: nn::BatchNorm,
    residual: Residual,
}

#[derive(Debug)]
enum Residual {
    None,
    Identity,
    Conv(Box<(nn::Conv2D, nn::BatchNorm)>),
}

impl StgcnUnit {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: nn::Path,
        adjacency: &Tensor,
        c_in: i64,
        c_out: i64,
        stride: i64,
        temporal_kernel: i64,
        dropout: f64,
        residual: bool,
    ) -> Self {
        let k = adjacency.size()[1];
        let gcn = &p / "gcn";
        let tcn = &p / "tcn";
        let residual = if !residual {
            Residual::None
        } else if c_in == c_out && stride == 1 {
            Residual::Identity
        } else {
            let r = &p / "residual";
            let config = nn::ConvConfigND::<[i64; 2]> {
                stride: [stride, 1],
                ..Default::default()
            };
            Residual::Conv(Box::new((
                nn::conv(&r / "conv", c_in, c_out, [1, 1], config),
                nn::batch_norm2d(&r / "bn", c_out, Default::default()),
            )))
        };
        let tcn_config = nn::ConvConfigND::<[i64; 2]> {
            stride: [stride, 1],
            padding: [(temporal_kernel - 1) / 2, 0],
            bias: false,
            ..Default::default()
        };
        StgcnUnit {
            in_channels: c_in,
            out_channels: c_out,
            stride,
            temporal_kernel,
            dropout,
            adjacency: adjacency.shallow_clone(),
            gcn_conv: nn::conv2d(
                &gcn / "conv",
                c_in,
                NUM_PARTITIONS * c_out,
                1,
                Default::default(),
            ),
            edge_importance: gcn.ones("edge_importance", &[NUM_PARTITIONS, k, k]),
            bn1: nn::batch_norm2d(&tcn / "bn1", c_out, Default::default()),
            tcn_conv: nn::conv(
                &tcn / "conv",
                c_out,
                c_out,
                [temporal_kernel, 1],
                tcn_config,
            ),
            bn2: nn::batch_norm2d(&tcn / "bn2", c_out, Default::default()),
            residual,
        }
    }

    /// Output width of this unit.
    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    /// Temporal stride of this unit (1 or 2).
    pub fn stride(&self) -> i64 {
        self.stride
    }
}

impl ModuleT for StgcnUnit {
    fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        let (x, m) = split(input, self.in_channels);
        let size = x.size();
        let (n, t, k) = (size[0], size[2], size[3]);
        let (kind, device) = (x.kind(), x.device());
        let c = self.out_channels;

        // Graph convolution: masked mean over each partition's valid neighbours.
        let a = self.adjacency.to_device(device).to_kind(kind);
        let weighted = &a * &self.edge_importance;
        let f = (x.apply(&self.gcn_conv) * &m).view([n, NUM_PARTITIONS, c, t, k]);
        // f[n, p, c, t, j] @ W[p, i, j]^T -> [n, p, c, t, i]
        let num = f.matmul(&weighted.transpose(-1, -2).unsqueeze(1));
        // m[n, 1, t, j] @ A[p, i, j]^T -> valid neighbour counts [n, p, t, i]
        let den = m.matmul(&a.transpose(-1, -2)).clamp_min(1.0).unsqueeze(2);
        let g = (num / den).sum_dim_intlist(1, false, None::<Kind>) * &m;

        // Temporal partial convolution.
        let h = g.apply_t(&self.bn1, train).relu() * &m;
        let kt = self.temporal_kernel;
        let pad = (kt - 1) / 2;
        let valid_in_window = m
            .avg_pool2d([kt, 1], [self.stride, 1], [pad, 0], false, true, Some(1))
            .clamp_min(1.0);
        let m_out = if self.stride == 1 {
            m.shallow_clone()
        } else {
            m.max_pool2d([3, 1], [self.stride, 1], [1, 0], [1, 1], false)
        };
        let h = super::conv(&h, &self.tcn_conv) * (valid_in_window.reciprocal() * kt as f64);
        let h = super::tokens::maybe_dropout(
            (h * &m_out).apply_t(&self.bn2, train),
            self.dropout,
            train,
        );
        let out = match &self.residual {
            Residual::None => h,
            Residual::Identity => h + &x,
            Residual::Conv(conv_bn) => h + x.apply(&conv_bn.0).apply_t(&conv_bn.1, train),
        };
        let out = out.relu() * &m_out;
        Tensor::cat(&[out, m_out], 1)
    }
}

/// ST-GCN without its classifier: a feature extractor `[N, C + 1, T, K] -> [N, feature_dim]`
/// over keypoints with a validity channel. See the module documentation.
#[derive(Debug)]
pub struct Stgcn {
    config: StgcnConfig,
    adjacency: Tensor,
    data_bn: StgcnDataBn,
    units: Vec<StgcnUnit>,
    feature_dim: i64,
}

impl Stgcn {
    /// Builds the network under `p` for `num_joints` joints connected by the undirected
    /// `edges` (joint index pairs) and `in_channels` coordinate channels `C` (not counting
    /// the validity channel: the input has `C + 1` channels).
    ///
    /// Errors: an invalid `config` (naming the `model.stgcn_*` key), an edge with a joint
    /// index `>= num_joints` (naming the edge), `num_joints < 1` or `in_channels < 1`.
    pub fn new(
        p: &nn::Path,
        config: &StgcnConfig,
        num_joints: i64,
        edges: &[(usize, usize)],
        in_channels: i64,
    ) -> Result<Stgcn, BackboneError> {
        config.validate()?;
        if in_channels < 1 {
            return Err(BackboneError::Config(format!(
                "ST-GCN needs at least one coordinate channel, got in_channels = {in_channels}"
            )));
        }
        let adjacency = spatial_adjacency(num_joints, edges)?.to_device(p.device());
        let data_bn = StgcnDataBn {
            bn: nn::batch_norm1d(p / "data_bn", in_channels * num_joints, Default::default()),
            in_channels,
            num_joints,
        };
        let mut c_in = in_channels;
        let units = config
            .unit_shapes()
            .into_iter()
            .zip(UNIT_NAMES)
            .enumerate()
            .map(|(i, ((c_out, stride), name))| {
                let unit = StgcnUnit::new(
                    p / name,
                    &adjacency,
                    c_in,
                    c_out,
                    stride,
                    config.temporal_kernel,
                    config.dropout,
                    i > 0,
                );
                c_in = c_out;
                unit
            })
            .collect();
        Ok(Stgcn {
            config: *config,
            adjacency,
            data_bn,
            units,
            feature_dim: config.feature_dim(),
        })
    }

    /// The configuration this network was built with.
    pub fn config(&self) -> &StgcnConfig {
        &self.config
    }

    /// The spatial-partition matrices `[3, K, K]` (see [`spatial_adjacency`]).
    pub fn adjacency(&self) -> &Tensor {
        &self.adjacency
    }

    /// The ST-GCN units, in order.
    pub fn units(&self) -> &[StgcnUnit] {
        &self.units
    }

    /// Masked mean over valid `(t, k)` of a segment output `[N, Cf + 1, T, K]` -> `[N, Cf]`
    /// (0 for a sample without a valid position).
    pub fn masked_mean(x: &Tensor, channels: i64) -> Tensor {
        let (f, m) = split(x, channels);
        let sum = (f * &m).sum_dim_intlist(&[2i64, 3][..], false, None::<Kind>);
        let count = m
            .sum_dim_intlist(&[2i64, 3][..], false, None::<Kind>)
            .clamp_min(1.0);
        sum / count
    }
}

impl Backbone for Stgcn {
    /// `data_bn`, then `unit0`, `unit1`, ...; each passes `[N, C + 1, T, K]` (features, then
    /// the mask).
    fn segments(&self) -> Vec<Segment<'_>> {
        let mut segments = Vec::with_capacity(self.units.len() + 1);
        segments.push(Segment::new("data_bn", &self.data_bn));
        for (name, unit) in UNIT_NAMES.iter().zip(&self.units) {
            segments.push(Segment::new(name, unit));
        }
        segments
    }

    /// [`Stgcn::masked_mean`] of the last unit's output.
    fn pool(&self, x: &Tensor) -> Tensor {
        Stgcn::masked_mean(x, self.feature_dim)
    }

    fn feature_dim(&self) -> i64 {
        self.feature_dim
    }
}

impl ModuleT for Stgcn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features(x, train)
    }
}
