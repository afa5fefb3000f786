//! A `u8` batch becomes the model input on the device: RGB bytes to a Kinetics-normalised
//! float `[B, V, 3, T, H, W]` (resized on the device when the model's size differs from the
//! cache's), keypoints to `[B, V, C + 1, T, K]` with the validity channel last. Each part
//! is built only when the model reads it.

use tch::{Device, Kind, Tensor};

use crate::data::loader::Batch;
use crate::error::Result;
use crate::model::backbones::normalize_kinetics;
use crate::model::{Input, KeypointSpec, ModelConfig};

/// `batch` as the input of a model of `model`, on `device`. `cache_hw` is the cache's
/// frame size (height, width).
pub fn to_input(
    batch: &Batch,
    model: &ModelConfig,
    cache_hw: (i64, i64),
    device: Device,
) -> Result<Input> {
    let rgb = if model.input_type.uses_rgb() {
        Some(rgb_input(batch, model, cache_hw, device)?)
    } else {
        None
    };
    let kpt = match (&model.keypoints, model.input_type.uses_kpt()) {
        (Some(k), true) => Some(kpt_input(batch, model, k, device)?),
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

fn rgb_input(
    batch: &Batch,
    model: &ModelConfig,
    cache_hw: (i64, i64),
    device: Device,
) -> Result<Tensor> {
    let rgb = batch
        .rgb
        .as_ref()
        .ok_or("the batch has no RGB (data.load_rgb=false)")?;
    let (ch, cw) = cache_hw;
    let (b, v, t) = (batch.size as i64, model.num_views, model.clip.t);
    // Stays u8 until it is on the device.
    let x = Tensor::from_slice(rgb)
        .to_device(device)
        .view([b, v, t, ch, cw, 3])
        .permute([0, 1, 5, 2, 3, 4]);
    let mut x = x.to_kind(Kind::Float) / 255.0;
    let (h, w) = (model.clip.h, model.clip.w);
    if (h, w) != (ch, cw) {
        x = x
            .reshape([b * v, 3, t, ch, cw])
            .upsample_trilinear3d([t, h, w], false, None, None, None)
            .view([b, v, 3, t, h, w]);
    }
    Ok(normalize_kinetics(&x))
}
