//! Mixup and CutMix: a training batch blended with a permutation of itself, the targets
//! becoming the same blend of the two one-hot labels (`data.aug.mixup`, `data.aug.cutmix`,
//! each a Beta(alpha, alpha) for the mixing weight; 0 = off). Mixup blends whole clips;
//! CutMix pastes one box of the partner's clip into every frame and view (the weight is
//! then the box's exact area). When both are on, each batch uses one of them, at even odds.
//!
//! Mixing works within a batch, so it needs `data.batch_size >= 2`, and it is for RGB
//! models (a blend of two skeletons is not a skeleton); the configuration refuses the
//! rest. The draw is a function of `(train.seed, epoch, batch index)`, so a resumed run
//! mixes exactly as the uninterrupted one did.

use mvdrive_common::rng::Rng;
use tch::{Device, Kind, Tensor};

use crate::config::AugConfig;

/// Salt of the mixing stream (the clip draws use another).
const SALT: u64 = 0x0b1e_4d00;

/// How one batch is mixed.
#[derive(Debug, Clone, PartialEq)]
pub struct MixDraw {
    /// Weight of each sample's own clip and label, in [0, 1].
    pub lam: f64,
    /// Partner of each sample (a permutation of the batch).
    pub partner: Vec<i64>,
    /// CutMix: the pasted box as fractions of the frame (top, left, height, width);
    /// `None` for mixup.
    pub cut: Option<(f64, f64, f64, f64)>,
}

/// Marsaglia and Tsang's Gamma(shape, 1) sampler (shape < 1 by the boost
/// `Gamma(a) = Gamma(a + 1) U^(1/a)`).
fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = rng.unit().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // A standard normal by Box-Muller.
        let (u1, u2) = (rng.unit().max(f64::MIN_POSITIVE), rng.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * z).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.unit().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A draw of Beta(alpha, alpha).
pub fn beta(rng: &mut Rng, alpha: f64) -> f64 {
    let x = gamma(rng, alpha);
    let y = gamma(rng, alpha);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// The mixing of batch `batch_index` of `epoch` (`size` samples; in a multi-process run,
/// the index among every rank's batches, [`crate::data::loader::Batch::draw`]), or `None` when mixing
/// is off or the batch has one sample.
pub fn draw(
    c: &AugConfig,
    seed: u64,
    epoch: u64,
    batch_index: usize,
    size: usize,
) -> Option<MixDraw> {
    if size < 2 || (c.mixup <= 0.0 && c.cutmix <= 0.0) {
        return None;
    }
    let mut rng = Rng::for_item(seed ^ SALT, epoch, batch_index as u64);
    let cutmix = match (c.mixup > 0.0, c.cutmix > 0.0) {
        (true, true) => rng.unit() < 0.5,
        (_, cut) => cut,
    };
    let mut partner: Vec<i64> = (0..size as i64).collect();
    rng.shuffle(&mut partner);
    if !cutmix {
        let lam = beta(&mut rng, c.mixup);
        return Some(MixDraw {
            lam,
            partner,
            cut: None,
        });
    }
    // A box of area 1 - lam (sides sqrt(1 - lam) of the frame's) centred anywhere,
    // clipped to the frame; the weight is then what is left of the sample's own clip.
    let lam = beta(&mut rng, c.cutmix);
    let side = (1.0 - lam).sqrt();
    let (cy, cx) = (rng.unit(), rng.unit());
    let clip = |centre: f64| {
        let a = (centre - side / 2.0).max(0.0);
        let b = (centre + side / 2.0).min(1.0);
        (a, b - a)
    };
    let ((top, h), (left, w)) = (clip(cy), clip(cx));
    Some(MixDraw {
        lam,
        partner,
        cut: Some((top, left, h, w)),
    })
}

/// A mixed batch.
pub struct Mixed {
    /// The blended clips, `[B, V, 3, T, H, W]`.
    pub rgb: Tensor,
    /// Class probabilities `[B, classes]`.
    pub targets: Tensor,
    /// Which views each blend has (`[B, V]`, 1 = present): those either sample had.
    pub present: Option<Tensor>,
}

/// `rgb` (`[B, V, 3, T, H, W]`) mixed as `d` says, and the targets: class probabilities
/// `[B, classes]` (the blend of the one-hot `labels`, weighted by the pixels each clip
/// keeps). `present` (`[B, V]`, when a camera is missing somewhere in the batch): a view
/// that only one of the two samples has is that sample's clip, not blended with the other's
/// zeros (which would only darken it).
pub fn apply(
    rgb: &Tensor,
    present: Option<&Tensor>,
    labels: &[i64],
    classes: i64,
    d: &MixDraw,
) -> Mixed {
    let device = rgb.device();
    let partner = Tensor::from_slice(&d.partner).to_device(device);
    let mut own = rgb.shallow_clone();
    let mut other = rgb.index_select(0, &partner);
    let present = present.map(|p| {
        let theirs = p.index_select(0, &partner);
        let has = |m: &Tensor| m.gt(0.5).view([m.size()[0], m.size()[1], 1, 1, 1, 1]);
        let (own_has, other_has) = (has(p), has(&theirs));
        let filled_own = own.where_self(&own_has, &other);
        other = other.where_self(&other_has, &own);
        own = filled_own;
        p.maximum(&theirs)
    });
    let (mixed, lam) = match d.cut {
        None => (&own * d.lam + other * (1.0 - d.lam), d.lam),
        Some((top, left, h, w)) => {
            let size = rgb.size();
            let (fh, fw) = (size[4], size[5]);
            let px = |f: f64, n: i64| ((f * n as f64).round() as i64).clamp(0, n);
            let (y0, x0) = (px(top, fh), px(left, fw));
            let (y1, x1) = (px(top + h, fh).max(y0), px(left + w, fw).max(x0));
            let mask = Tensor::zeros([fh, fw], (Kind::Float, device));
            let _ = mask
                .narrow(0, y0, y1 - y0)
                .narrow(1, x0, x1 - x0)
                .fill_(1.0);
            let mask = mask.to_kind(rgb.kind());
            let mixed = &own * (1.0 - &mask) + other * &mask;
            (
                mixed,
                1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (fh * fw) as f64,
            )
        }
    };
    let targets = one_hot(labels, classes, device);
    let targets = &targets * lam + targets.index_select(0, &partner) * (1.0 - lam);
    Mixed {
        rgb: mixed,
        targets,
        present,
    }
}

fn one_hot(labels: &[i64], classes: i64, device: Device) -> Tensor {
    Tensor::from_slice(labels)
        .to_device(device)
        .one_hot(classes)
        .to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mixup: f64, cutmix: f64) -> AugConfig {
        AugConfig {
            mixup,
            cutmix,
            ..crate::config::TrainConfig::new(&crate::config::Settings::default())
                .unwrap()
                .data
                .aug
        }
    }

    #[test]
    fn beta_draws_have_the_mean_and_variance_of_beta() {
        for alpha in [0.2, 1.0, 4.0] {
            let mut rng = Rng::new(7);
            let n = 20_000;
            let xs: Vec<f64> = (0..n).map(|_| beta(&mut rng, alpha)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
            let want = 1.0 / (4.0 * (2.0 * alpha + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "alpha {alpha}: mean {mean}");
            assert!(
                (var - want).abs() < 0.1 * want,
                "alpha {alpha}: var {var} want {want}"
            );
        }
    }

    #[test]
    fn mixup_blends_clips_and_labels_with_one_weight() {
        let d = MixDraw {
            lam: 0.75,
            partner: vec![1, 0],
            cut: None,
        };
        // Sample 0 all 0, sample 1 all 1.
        let rgb = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 3, 2, 4, 4], (Kind::Float, Device::Cpu)),
                Tensor::ones([1, 1, 3, 2, 4, 4], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let Mixed {
            rgb: x, targets: y, ..
        } = apply(&rgb, None, &[2, 0], 3, &d);
        assert!((x.get(0).mean(Kind::Float).double_value(&[]) - 0.25).abs() < 1e-6);
        assert!((x.get(1).mean(Kind::Float).double_value(&[]) - 0.75).abs() < 1e-6);
        let y: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
        assert_eq!(y, vec![0.25, 0.0, 0.75, 0.75, 0.0, 0.25]);
    }

    #[test]
    fn cutmix_pastes_one_box_in_every_frame_and_weighs_labels_by_its_area() {
        // The right half of an 4 x 8 frame: 16 of 32 pixels.
        let d = MixDraw {
            lam: 0.0,
            partner: vec![1, 0],
            cut: Some((0.0, 0.5, 1.0, 0.5)),
        };
        let rgb = Tensor::cat(
            &[
                Tensor::zeros([1, 2, 3, 3, 4, 8], (Kind::Float, Device::Cpu)),
                Tensor::ones([1, 2, 3, 3, 4, 8], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let Mixed {
            rgb: x, targets: y, ..
        } = apply(&rgb, None, &[0, 1], 2, &d);
        let left = x.get(0).narrow(4, 0, 4);
        let right = x.get(0).narrow(4, 4, 4);
        assert_eq!(left.sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(right.mean(Kind::Float).double_value(&[]), 1.0);
        let y: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
        assert_eq!(y, vec![0.5, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn a_view_only_one_sample_has_is_its_clip_not_a_blend_with_zeros() {
        // Two samples, two views; sample 0 lacks view 1 (zeros), sample 1 has both.
        let d = MixDraw {
            lam: 0.75,
            partner: vec![1, 0],
            cut: None,
        };
        let full = |v: f64| Tensor::full([1, 1, 3, 2, 4, 4], v, (Kind::Float, Device::Cpu));
        let rgb = Tensor::cat(
            &[
                Tensor::cat(&[full(0.2), full(0.0)], 1),
                Tensor::cat(&[full(0.6), full(0.8)], 1),
            ],
            0,
        );
        let present = Tensor::from_slice(&[1f32, 0., 1., 1.]).view([2, 2]);
        let m = apply(&rgb, Some(&present), &[0, 1], 2, &d);
        let mean = |b: i64, v: i64| m.rgb.get(b).get(v).mean(Kind::Float).double_value(&[]);
        // View 0, which both have, blends; view 1 is sample 1's clip in both blends.
        assert!((mean(0, 0) - (0.75 * 0.2 + 0.25 * 0.6)).abs() < 1e-6);
        assert!((mean(1, 0) - (0.75 * 0.6 + 0.25 * 0.2)).abs() < 1e-6);
        assert!((mean(0, 1) - 0.8).abs() < 1e-6, "{}", mean(0, 1));
        assert!((mean(1, 1) - 0.8).abs() < 1e-6, "{}", mean(1, 1));
        let p: Vec<f32> = Vec::try_from(m.present.unwrap().flatten(0, -1)).unwrap();
        assert_eq!(p, vec![1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn draws_are_a_function_of_seed_epoch_and_batch_and_boxes_stay_inside() {
        let c = config(0.2, 1.0);
        assert_eq!(draw(&c, 1, 2, 3, 8), draw(&c, 1, 2, 3, 8));
        assert_ne!(draw(&c, 1, 2, 3, 8), draw(&c, 1, 2, 4, 8));
        assert_eq!(draw(&c, 1, 2, 3, 1), None);
        assert_eq!(draw(&config(0.0, 0.0), 1, 2, 3, 8), None);
        let (mut cuts, mut blends) = (0, 0);
        for b in 0..200 {
            let d = draw(&c, 5, 0, b, 4).unwrap();
            let mut p = d.partner.clone();
            p.sort();
            assert_eq!(p, vec![0, 1, 2, 3]);
            match d.cut {
                Some((t, l, h, w)) => {
                    cuts += 1;
                    assert!(t >= 0.0 && l >= 0.0 && t + h <= 1.0 + 1e-12 && l + w <= 1.0 + 1e-12);
                }
                None => blends += 1,
            }
        }
        assert!(cuts > 60 && blends > 60, "{cuts} cutmix, {blends} mixup");
    }
}
