//! A `u8` batch becomes the model input on the device: RGB bytes to a normalised (the
//! backbone's constants, [`crate::model::backbones::BackboneKind::input_norm`])
//! float `[B, V, 3, T, H, W]` (an evaluation crop cut out, and resized on the device when
//! the model's size differs from the cache's), keypoints to `[B, V, C + 1, T, K]` with the validity channel last. Each part
//! is built only when the model reads it.

use tch::{Device, Kind, Tensor};

use crate::config::Crops;
use crate::data::augment::{apply_kpt, apply_rgb, ClipDraw};
use crate::data::loader::Batch;
use crate::error::{Result, TrainError};
use crate::model::backbones::normalize;
use crate::model::{Input, KeypointSpec, ModelConfig};

/// A rectangle of the cached frame, in pixels: what an evaluation crop shows the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Top row.
    pub y: i64,
    /// Left column.
    pub x: i64,
    /// Height.
    pub h: i64,
    /// Width.
    pub w: i64,
}

/// The spatial views `crops` takes of frames of `cache_hw` (height, width): `None` for the
/// whole frame; for three crops, squares of the short side at the start, centre and end
/// of the long side. Three crops of a square frame would be one crop three times: an error.
pub fn crop_windows(cache_hw: (i64, i64), crops: Crops) -> Result<Vec<Option<Window>>> {
    let (h, w) = cache_hw;
    match crops {
        Crops::One => Ok(vec![None]),
        Crops::Three if h == w => Err(TrainError::Other(format!(
            "eval.crops=3 takes three squares along the frame's long side, but the cache's frames are square ({h}x{w}); use eval.crops=1, or build a cache that keeps the aspect (e.g. prep data.img_size=128x171)"
        ))),
        Crops::Three => {
            let side = h.min(w);
            let slack = h.max(w) - side;
            Ok([0, slack / 2, slack]
                .into_iter()
                .map(|at| {
                    let (y, x) = if w > h { (0, at) } else { (at, 0) };
                    Some(Window { y, x, h: side, w: side })
                })
                .collect())
        }
    }
}

/// What part of each frame the model is shown.
#[derive(Debug, Clone, Copy)]
pub enum Spatial<'a> {
    /// The whole frame.
    Whole,
    /// One window of every frame (an evaluation crop).
    Window(Window),
    /// Training augmentation: one draw per clip (sample-major, views inner), with
    /// `grey` footage and keypoint noise `kpt_jitter` (see [`crate::data::augment`]).
    Augmented {
        /// The draws.
        draws: &'a [ClipDraw],
        /// `data.aug.grey`.
        grey: bool,
        /// `data.aug.kpt_jitter`.
        kpt_jitter: f64,
    },
}

/// `batch` as the input of a model of `model`, on `device`. `cache_hw` is the cache's
/// frame size (height, width); `spatial` says what part of each frame is shown (resized
/// to the model's input size).
pub fn to_input(
    batch: &Batch,
    model: &ModelConfig,
    cache_hw: (i64, i64),
    device: Device,
    spatial: Spatial,
) -> Result<Input> {
    let rgb = if model.input_type.uses_rgb() {
        Some(rgb_input(batch, model, cache_hw, device, spatial)?)
    } else {
        None
    };
    let kpt = match (&model.keypoints, model.input_type.uses_kpt()) {
        (Some(k), true) => {
            let x = kpt_input(batch, model, k, device)?;
            Some(match spatial {
                Spatial::Augmented {
                    draws, kpt_jitter, ..
                } => per_clip(&x, draws, |c, d| apply_kpt(c, d, &k.mirror, kpt_jitter))?,
                _ => x,
            })
        }
        _ => None,
    };
    // Which views each sample has: only when a camera is missing somewhere in the batch
    // (a complete batch fuses exactly as before).
    let present = batch.present.contains(&0).then(|| {
        Tensor::from_slice(&batch.present)
            .to_device(device)
            .to_kind(Kind::Float)
            .view([batch.size as i64, model.num_views])
    });
    Ok(Input { rgb, kpt, present })
}

fn kpt_input(
    batch: &Batch,
    model: &ModelConfig,
    k: &KeypointSpec,
    device: Device,
) -> Result<Tensor> {
    let (vals, mask) = batch
        .kpt
        .as_ref()
        .ok_or("the batch has no keypoints (data.load_kpt=false)")?;
    let (b, v, t) = (batch.size as i64, model.num_views, model.clip.t);
    let x = Tensor::from_slice(vals)
        .to_device(device)
        .view([b, v, t, k.joints, k.channels])
        .permute([0, 1, 4, 2, 3]);
    // Valid: the frame has a detection and the joint a confidence above 0 (prep stores
    // undetected joints as zeros).
    let frame = Tensor::from_slice(mask)
        .to_device(device)
        .to_kind(Kind::Float)
        .view([b, v, 1, t, 1]);
    let conf = x.narrow(2, k.channels - 1, 1).gt(0.0).to_kind(Kind::Float);
    let m = conf * frame;
    Ok(Tensor::cat(&[x, m], 2).contiguous())
}

/// `f` applied to each clip of `x` (`[B, V, ...]`) with its draw.
fn per_clip(
    x: &Tensor,
    draws: &[ClipDraw],
    f: impl Fn(&Tensor, &ClipDraw) -> Tensor,
) -> Result<Tensor> {
    let size = x.size();
    let (b, v) = (size[0], size[1]);
    if draws.len() as i64 != b * v {
        return Err(TrainError::Other(format!(
            "{} augmentation draws for {b} x {v} clips",
            draws.len()
        )));
    }
    let flat = x.flatten(0, 1);
    let clips: Vec<Tensor> = draws
        .iter()
        .enumerate()
        .map(|(i, d)| f(&flat.get(i as i64), d))
        .collect();
    let out = Tensor::stack(&clips, 0);
    let mut shape = vec![b, v];
    shape.extend_from_slice(&out.size()[1..]);
    Ok(out.view(shape.as_slice()))
}

fn rgb_input(
    batch: &Batch,
    model: &ModelConfig,
    cache_hw: (i64, i64),
    device: Device,
    spatial: Spatial,
) -> Result<Tensor> {
    let rgb = batch
        .rgb
        .as_ref()
        .ok_or("the batch has no RGB (data.load_rgb=false)")?;
    let (ch, cw) = cache_hw;
    let (b, v, t) = (batch.size as i64, model.num_views, model.clip.t);
    // Stays u8 until it is on the device.
    let mut x = Tensor::from_slice(rgb)
        .to_device(device)
        .view([b, v, t, ch, cw, 3])
        .permute([0, 1, 5, 2, 3, 4]);
    let (mut ch, mut cw) = (ch, cw);
    let (h, w) = (model.clip.h, model.clip.w);
    match spatial {
        Spatial::Whole => {}
        Spatial::Window(r) => {
            x = x.narrow(4, r.y, r.h).narrow(5, r.x, r.w);
            (ch, cw) = (r.h, r.w);
        }
        Spatial::Augmented { draws, grey, .. } => {
            let x = x.to_kind(Kind::Float) / 255.0;
            let x = per_clip(&x, draws, |c, d| {
                let r = d.window;
                let c = c.narrow(2, r.y, r.h).narrow(3, r.x, r.w).unsqueeze(0);
                let c = c
                    .upsample_trilinear3d([t, h, w], false, None, None, None)
                    .squeeze_dim(0);
                apply_rgb(&c, d, grey)
            })?;
            return Ok(normalize(&x, model.backbone.input_norm()));
        }
    }
    let mut x = x.to_kind(Kind::Float) / 255.0;
    if (h, w) != (ch, cw) {
        x = x
            .reshape([b * v, 3, t, ch, cw])
            .upsample_trilinear3d([t, h, w], false, None, None, None)
            .view([b, v, 3, t, h, w]);
    }
    Ok(normalize(&x, model.backbone.input_norm()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_crops_run_along_the_long_side_and_refuse_square_frames() {
        assert_eq!(crop_windows((16, 16), Crops::One).unwrap(), vec![None]);
        let along_w = crop_windows((16, 24), Crops::Three).unwrap();
        let xs: Vec<(i64, i64, i64, i64)> = along_w
            .iter()
            .map(|r| r.map(|r| (r.y, r.x, r.h, r.w)).unwrap())
            .collect();
        assert_eq!(xs, vec![(0, 0, 16, 16), (0, 4, 16, 16), (0, 8, 16, 16)]);
        let along_h = crop_windows((30, 20), Crops::Three).unwrap();
        assert_eq!(
            along_h[2].unwrap(),
            Window {
                y: 10,
                x: 0,
                h: 20,
                w: 20
            }
        );
        let e = crop_windows((16, 16), Crops::Three)
            .unwrap_err()
            .to_string();
        assert!(e.contains("square") && e.contains("eval.crops=1"), "{e}");
    }
}
