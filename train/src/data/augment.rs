//! Training-time augmentation, applied on the device to the `u8` batch (evaluation always
//! sees plain frames): a random resized crop, a horizontal flip and brightness / contrast /
//! saturation jitter for RGB; for keypoints the same flip (left and right joints swapped)
//! plus rotation, scaling, shifting and Gaussian jitter of the valid joints.
//!
//! One draw covers every frame of a clip. Crop and jitter are shared by a sample's views
//! unless `data.aug.per_view`; the flip is always the sample's (it may swap the label,
//! `data.aug.flip_pairs`, which must hold for every view). Every draw comes from
//! `(train.seed, epoch, position in the epoch)`, so a run does not depend on the loader's
//! threads and a resumed run draws exactly what the uninterrupted one did.

use mvdrive_common::rng::Rng;
use tch::{Kind, Tensor};

use crate::config::{AugConfig, FlipMode};
use crate::data::input::Window;

/// What one clip (one view of one sample) is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipDraw {
    /// The part of the cached frame that is resized to the model's input.
    pub window: Window,
    /// Mirrored left-right.
    pub flip: bool,
    /// Brightness factor (1 = unchanged).
    pub brightness: f64,
    /// Contrast factor around the clip's mean grey (1 = unchanged).
    pub contrast: f64,
    /// Saturation factor (1 = unchanged; not applied to grey footage).
    pub saturation: f64,
    /// Keypoints: rotation (radians), scale and shift (fractions of the skeleton's
    /// extent) about the skeleton's centre.
    pub kpt_rotate: f64,
    /// See `kpt_rotate`.
    pub kpt_scale: f64,
    /// See `kpt_rotate`.
    pub kpt_shift: (f64, f64),
}

/// Salt of the augmentation stream (the frame jitter uses another).
const SALT: u64 = 0x0a06_5eed;

/// The augmentation of a training run.
#[derive(Debug, Clone)]
pub struct Augment {
    /// The settings.
    pub config: AugConfig,
    /// Label after a flip, per label; `None` when flipping is off.
    pub flip_labels: Option<Vec<i64>>,
    /// `train.seed`.
    pub seed: u64,
}

impl Augment {
    /// Draws for the `size` samples at positions `first..first + size` of `epoch`'s order
    /// (a batch's [`crate::data::loader::Batch::first`]) x `views` clips of frames of
    /// `cache_hw`, sample-major.
    pub fn draw(
        &self,
        epoch: u64,
        first: usize,
        size: usize,
        views: usize,
        cache_hw: (i64, i64),
    ) -> Vec<ClipDraw> {
        let c = &self.config;
        let mut out = Vec::with_capacity(size * views);
        for i in 0..size {
            let position = (first + i) as u64;
            let mut rng = Rng::for_item(self.seed ^ SALT, epoch, position);
            let flip = self.flip_labels.is_some() && rng.unit() < 0.5;
            let mut shared = None;
            for _ in 0..views {
                let d = match shared {
                    Some(d) if !c.per_view => d,
                    _ => draw_clip(&mut rng, c, cache_hw, flip),
                };
                shared = Some(d);
                out.push(d);
            }
        }
        out
    }

    /// The labels after the draws' flips (`draws` sample-major, `views` per sample).
    pub fn labels(&self, labels: &[i64], draws: &[ClipDraw], views: usize) -> Vec<i64> {
        let Some(map) = &self.flip_labels else {
            return labels.to_vec();
        };
        labels
            .iter()
            .enumerate()
            .map(|(i, &y)| match draws.get(i * views) {
                Some(d) if d.flip => map.get(y as usize).copied().unwrap_or(y),
                _ => y,
            })
            .collect()
    }
}

/// One clip's draw: torchvision's `RandomResizedCrop` sampling (area fraction in
/// `[crop_scale, 1]`, log-uniform aspect in `[1/r, r]`, 10 tries, else the whole frame).
fn draw_clip(rng: &mut Rng, c: &AugConfig, (h, w): (i64, i64), flip: bool) -> ClipDraw {
    let mut window = Window { y: 0, x: 0, h, w };
    let area = (h * w) as f64;
    let ln_r = c.crop_ratio.ln();
    for _ in 0..10 {
        let target = area * rng.range(c.crop_scale, 1.0);
        let ratio = rng.range(-ln_r, ln_r).exp();
        let cw = (target * ratio).sqrt().round() as i64;
        let ch = (target / ratio).sqrt().round() as i64;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let y = rng.below((h - ch + 1) as usize) as i64;
            let x = rng.below((w - cw + 1) as usize) as i64;
            window = Window { y, x, h: ch, w: cw };
            break;
        }
    }
    let mut factor = |amount: f64| rng.range(1.0 - amount, 1.0 + amount).max(0.0);
    let (brightness, contrast, saturation) = (
        factor(c.brightness),
        factor(c.contrast),
        factor(c.saturation),
    );
    let kpt_scale = factor(c.kpt_scale);
    let kpt_rotate = rng.range(-c.kpt_rotate, c.kpt_rotate).to_radians();
    let kpt_shift = (
        rng.range(-c.kpt_shift, c.kpt_shift),
        rng.range(-c.kpt_shift, c.kpt_shift),
    );
    ClipDraw {
        window,
        flip,
        brightness,
        contrast,
        saturation,
        kpt_rotate,
        kpt_scale,
        kpt_shift,
    }
}

/// Apply a draw to one clip `[3, T, H, W]` of values in `[0, 1]` (already cropped and
/// resized): flip, then brightness, contrast and saturation (not for `grey` footage).
pub fn apply_rgb(clip: &Tensor, d: &ClipDraw, grey: bool) -> Tensor {
    let mut x = if d.flip {
        clip.flip([3])
    } else {
        clip.shallow_clone()
    };
    if d.brightness != 1.0 {
        x = &x * d.brightness;
    }
    let luma = |x: &Tensor| {
        let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114])
            .to_device(x.device())
            .to_kind(x.kind())
            .view([3, 1, 1, 1]);
        (x * w).sum_dim_intlist(0, true, x.kind())
    };
    if d.contrast != 1.0 {
        let mean = luma(&x).mean(x.kind());
        x = (x - &mean) * d.contrast + mean;
    }
    if d.saturation != 1.0 && !grey {
        let g = luma(&x);
        x = (&x - &g) * d.saturation + g;
    }
    x.clamp(0.0, 1.0)
}

/// Apply a draw to one clip's keypoints `[C + 1, T, K]` (C coordinate channels, the last
/// of them the confidence, then the validity mask): mirror (x about the skeleton's centre,
/// left and right joints swapped by `mirror`), rotate, scale and shift (x, y) about the
/// centre of the clip's valid joints, add Gaussian noise of `jitter` x the skeleton's
/// extent. Masked joints stay masked and zero.
pub fn apply_kpt(clip: &Tensor, d: &ClipDraw, mirror: &[i64], jitter: f64) -> Tensor {
    let c1 = clip.size()[0];
    let mask = clip.narrow(0, c1 - 1, 1);
    let mut x = clip.shallow_clone();
    if d.flip && !mirror.is_empty() {
        let idx = Tensor::from_slice(mirror).to_device(clip.device());
        x = x.index_select(2, &idx);
    }
    let mask = if d.flip && !mirror.is_empty() {
        x.narrow(0, c1 - 1, 1)
    } else {
        mask
    };
    let n = mask.sum(Kind::Float).clamp_min(1.0);
    let xy = x.narrow(0, 0, 2);
    let centre = (&xy * &mask).sum_dim_intlist([1, 2].as_slice(), true, Kind::Float) / &n;
    let big = 1e9;
    let unmask = mask.ones_like() - &mask;
    let lo = (&xy + &unmask * big).amin([1, 2].as_slice(), true);
    let hi = (&xy - &unmask * big).amax([1, 2].as_slice(), true);
    let extent = (hi - lo).amax([0].as_slice(), true).clamp_min(1e-6);
    let mut p = &xy - &centre;
    if d.flip {
        let sign = Tensor::from_slice(&[-1f32, 1.0])
            .to_device(clip.device())
            .view([2, 1, 1]);
        p = &p * sign;
    }
    let (s, r) = (d.kpt_scale, d.kpt_rotate);
    let (cos, sin) = (r.cos() * s, r.sin() * s);
    let px = p.narrow(0, 0, 1);
    let py = p.narrow(0, 1, 1);
    let rx = &px * cos - &py * sin;
    let ry = &px * sin + &py * cos;
    let shift = Tensor::from_slice(&[d.kpt_shift.0 as f32, d.kpt_shift.1 as f32])
        .to_device(clip.device())
        .view([2, 1, 1]);
    let mut moved = Tensor::cat(&[rx, ry], 0) + centre + shift * &extent;
    if jitter > 0.0 {
        moved = &moved + moved.randn_like() * (&extent * jitter);
    }
    let moved = moved * &mask;
    Tensor::cat(&[moved, x.narrow(0, 2, c1 - 2)], 0)
}

impl Augment {
    /// The augmentation `config` asks for over `classes`, or `None` when it is off, and a
    /// note when the flip was turned off because a class names a side. Errors name a
    /// `data.aug.flip_pairs` label that is not a class.
    pub fn new(
        config: &AugConfig,
        classes: &[String],
        seed: u64,
    ) -> Result<(Option<Augment>, Option<String>), String> {
        let map = flip_map(classes, &config.flip_pairs)?;
        if !config.enabled {
            return Ok((None, None));
        }
        let paired = |c: &String| config.flip_pairs.iter().any(|(a, b)| a == c || b == c);
        let sided: Vec<&String> = classes
            .iter()
            .filter(|c| names_a_side(c) && !paired(c))
            .collect();
        let (flip_labels, note) = match config.flip {
            FlipMode::Off => (None, None),
            FlipMode::On => (Some(map), None),
            FlipMode::Auto if sided.is_empty() => (Some(map), None),
            FlipMode::Auto => {
                let names: Vec<&str> = sided.iter().map(|s| s.as_str()).collect();
                let note = format!(
                    "horizontal flip is off: classes {} name a side, and a mirror image would show the other side; pair them with data.aug.flip_pairs=a:b,... or set data.aug.flip=on",
                    names.join(", ")
                );
                (None, Some(note))
            }
        };
        let augment = Augment {
            config: config.clone(),
            flip_labels,
            seed,
        };
        Ok((Some(augment), note))
    }
}

/// Whether a class name speaks of a side (so a mirror image would mislabel it).
pub fn names_a_side(label: &str) -> bool {
    let l = label.to_ascii_lowercase();
    l.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| matches!(w, "left" | "right" | "l" | "r"))
}

/// The label map of a flip: `pairs` swap, the others stay. Errors name an unknown label.
pub fn flip_map(classes: &[String], pairs: &[(String, String)]) -> Result<Vec<i64>, String> {
    let mut map: Vec<i64> = (0..classes.len() as i64).collect();
    let find = |l: &str| {
        classes.iter().position(|c| c == l).ok_or_else(|| {
            format!(
                "data.aug.flip_pairs names `{l}`, which is not a class of the cache ({})",
                classes.join(", ")
            )
        })
    };
    for (a, b) in pairs {
        let (i, j) = (find(a)?, find(b)?);
        map[i] = j as i64;
        map[j] = i as i64;
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, TrainConfig};
    use crate::data::input::{to_input, Spatial};
    use crate::data::loader::Batch;
    use crate::model::{ClipShape, ModelConfig};
    use tch::Device;

    fn plain(window: Window, flip: bool) -> ClipDraw {
        ClipDraw {
            window,
            flip,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            kpt_rotate: 0.0,
            kpt_scale: 1.0,
            kpt_shift: (0.0, 0.0),
        }
    }

    fn aug_config() -> AugConfig {
        TrainConfig::new(&Settings::default()).unwrap().data.aug
    }

    #[test]
    fn a_crop_and_flip_of_a_known_frame_give_the_expected_pixels() {
        // One clip of 2 frames of 6 x 8 pixels; pixel (t, y, x, c) = 10 t + 20 y + x + c.
        let (t, h, w) = (2i64, 6i64, 8i64);
        let mut rgb = Vec::new();
        for ti in 0..t {
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        rgb.push((10 * ti + 20 * y + x + c) as u8);
                    }
                }
            }
        }
        let batch = Batch {
            index: 0,
            first: 0,
            draw: 0,
            size: 1,
            rgb: Some(rgb),
            kpt: None,
            present: vec![1],
            labels: vec![0],
            segments: vec![0],
        };
        // A 4 x 4 window at (1, 2), shown at 4 x 4: no resizing, only the crop and flip.
        let model = ModelConfig {
            clip: ClipShape::new(t, 4, 4),
            ..Default::default()
        };
        let d = plain(
            Window {
                y: 1,
                x: 2,
                h: 4,
                w: 4,
            },
            true,
        );
        let draws = [d];
        let spatial = Spatial::Augmented {
            draws: &draws,
            grey: false,
            kpt_jitter: 0.0,
        };
        let x = to_input(&batch, &model, (h, w), Device::Cpu, spatial).unwrap();
        let got = x.rgb.unwrap(); // [1, 1, 3, T, 4, 4], normalised
        let mean = crate::model::backbones::KINETICS_MEAN;
        let std = crate::model::backbones::KINETICS_STD;
        for c in 0..3i64 {
            for ti in 0..t {
                for y in 0..4i64 {
                    for x in 0..4i64 {
                        // Flipped: output column x shows window column 3 - x.
                        let src = 10 * ti + 20 * (1 + y) + (2 + 3 - x) + c;
                        let want = (src as f64 / 255.0 - mean[c as usize]) / std[c as usize];
                        let v = got.double_value(&[0, 0, c, ti, y, x]);
                        assert!((v - want).abs() < 1e-5, "({c},{ti},{y},{x}): {v} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn jitter_keeps_values_in_range_and_grey_footage_grey() {
        let clip = Tensor::rand([3, 2, 5, 5], (Kind::Float, Device::Cpu));
        let grey = clip.narrow(0, 0, 1).repeat([3, 1, 1, 1]);
        let mut d = plain(
            Window {
                y: 0,
                x: 0,
                h: 5,
                w: 5,
            },
            false,
        );
        (d.brightness, d.contrast, d.saturation) = (1.3, 0.7, 1.5);
        let out = apply_rgb(&grey, &d, true);
        assert!(out.min().double_value(&[]) >= 0.0 && out.max().double_value(&[]) <= 1.0);
        let spread = (out.narrow(0, 0, 1) - out.narrow(0, 2, 1)).abs().max();
        assert_eq!(spread.double_value(&[]), 0.0, "grey stays grey");
        let coloured = apply_rgb(&clip, &d, false);
        assert!(!coloured.equal(&clip));
    }

    #[test]
    fn flip_pairs_swap_labels_and_sides_turn_the_flip_off_unless_paired() {
        let classes: Vec<String> = ["drinking", "texting_left", "texting_right", "looking_left"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = aug_config();
        let (aug, note) = Augment::new(&c, &classes, 0).unwrap();
        assert!(aug.unwrap().flip_labels.is_none());
        assert!(note.unwrap().contains("texting_left"));

        c.flip_pairs = vec![("texting_left".into(), "texting_right".into())];
        c.flip = FlipMode::On;
        let (aug, note) = Augment::new(&c, &classes, 0).unwrap();
        let aug = aug.unwrap();
        assert!(note.is_none());
        let w = Window {
            y: 0,
            x: 0,
            h: 4,
            w: 4,
        };
        let draws = [
            plain(w, true),
            plain(w, true),
            plain(w, false),
            plain(w, false),
        ];
        // Two samples of two views: the first flipped, the second not.
        assert_eq!(aug.labels(&[1, 2], &draws, 2), vec![2, 2]);
        assert_eq!(aug.labels(&[2, 0], &draws, 2), vec![1, 0]);

        c.flip_pairs = vec![("texting_left".into(), "txting_right".into())];
        let e = Augment::new(&c, &classes, 0).unwrap_err();
        assert!(
            e.contains("`txting_right`") && e.contains("data.aug.flip_pairs"),
            "{e}"
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (k, v, want) in [
            ("data.aug.crop_scale", "0", "(0, 1]"),
            ("data.aug.crop_scale", "1.5", "(0, 1]"),
            ("data.aug.brightness", "1.2", "below 1"),
            ("data.aug.flip_pairs", "a-b", "label_a:label_b"),
        ] {
            let mut s = Settings::default();
            s.set(k, v, false).unwrap();
            let e = TrainConfig::new(&s).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(want), "{k}={v}: {e}");
        }
    }

    #[test]
    fn draws_are_a_function_of_seed_epoch_and_position_and_stay_inside_the_frame() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let (aug, _) = Augment::new(&aug_config(), &classes, 3).unwrap();
        let aug = aug.unwrap();
        // Batch 1 of size 4 holds positions 4..8, as four batches of 1 would.
        let whole = aug.draw(2, 4, 4, 2, (30, 40));
        let ones: Vec<ClipDraw> = (4..8)
            .flat_map(|b| aug.draw(2, b, 1, 2, (30, 40)))
            .collect();
        assert_eq!(whole, ones);
        assert_ne!(whole, aug.draw(3, 4, 4, 2, (30, 40)));
        for d in &whole {
            let r = d.window;
            assert!(r.y >= 0 && r.x >= 0 && r.y + r.h <= 30 && r.x + r.w <= 40);
            assert!((r.h * r.w) as f64 >= 0.6 * 1200.0 * 0.9);
        }
        // Views share a draw unless per_view.
        assert_eq!(whole[0], whole[1]);
    }

    #[test]
    fn mirrored_keypoints_swap_left_and_right_and_masked_joints_stay_masked() {
        let l = mvdrive_schemas::layout::layout("coco17").unwrap();
        let mirror: Vec<i64> = l.mirror().into_iter().map(|j| j as i64).collect();
        let (lw, rw, nose) = (
            l.joint("left_wrist").unwrap() as i64,
            l.joint("right_wrist").unwrap() as i64,
            l.joint("nose").unwrap() as i64,
        );
        let ank = l.joint("left_ankle").unwrap() as i64;
        // [C + 1 = 4, T = 1, K = 17]: x, y, conf, valid; only three joints valid.
        let x = Tensor::zeros([4, 1, 17], (Kind::Float, Device::Cpu));
        let set = |c: i64, j: i64, v: f64| {
            let _ = x.get(c).get(0).get(j).fill_(v);
        };
        for (j, px, py) in [(lw, 0.2, 0.5), (rw, 0.8, 0.4), (nose, 0.5, 0.1)] {
            set(0, j, px);
            set(1, j, py);
            set(2, j, 0.9);
            set(3, j, 1.0);
        }
        let d = plain(
            Window {
                y: 0,
                x: 0,
                h: 1,
                w: 1,
            },
            true,
        );
        let out = apply_kpt(&x, &d, &mirror, 0.0);
        let at = |c: i64, j: i64| out.double_value(&[c, 0, j]);
        // Centre x = 0.5: the right wrist (0.8, 0.4) mirrored is (0.2, 0.4), now the left.
        assert!((at(0, lw) - 0.2).abs() < 1e-6 && (at(1, lw) - 0.4).abs() < 1e-6);
        assert!((at(0, rw) - 0.8).abs() < 1e-6 && (at(1, rw) - 0.5).abs() < 1e-6);
        assert!((at(0, nose) - 0.5).abs() < 1e-6);
        assert_eq!((at(0, ank), at(1, ank), at(3, ank)), (0.0, 0.0, 0.0));
        // Rotation and noise move valid joints only.
        let mut d = d;
        (d.flip, d.kpt_rotate, d.kpt_scale) = (false, 0.3, 1.2);
        let out = apply_kpt(&x, &d, &mirror, 0.05);
        assert!((out.double_value(&[0, 0, lw]) - 0.2).abs() > 1e-3);
        assert_eq!(out.double_value(&[0, 0, ank]), 0.0);
        assert_eq!(out.double_value(&[3, 0, lw]), 1.0);
    }
}
