//! The rules that span keys, checked once when a [`TrainConfig`] is read and nowhere else.

use super::{ConfigError, TrainConfig, MAX_EVAL_CLIPS, MAX_FRAMES, MAX_WORKERS};
use crate::model::backbones::BackboneKind;
use crate::model::InputType;

impl TrainConfig {
    /// Mixup and CutMix mix samples of a batch of RGB clips.
    fn check_mix(&self) -> Result<(), ConfigError> {
        let a = &self.data.aug;
        for (key, alpha) in [("data.aug.mixup", a.mixup), ("data.aug.cutmix", a.cutmix)] {
            if alpha <= 0.0 || !a.enabled {
                continue;
            }
            if self.model.input_type != InputType::Rgb {
                return Err(ConfigError(format!(
                    "{key}={alpha} mixes RGB clips, but model.input_type={} also reads keypoints (a blend of two skeletons is not a skeleton); set {key}=0 or model.input_type=rgb",
                    self.model.input_type
                )));
            }
            if self.data.batch_size < 2 {
                return Err(ConfigError(format!(
                    "{key}={alpha} mixes the samples of a batch, but data.batch_size=1; use data.batch_size >= 2 (with train.accumulate_grad_batches for memory) or {key}=0"
                )));
            }
        }
        Ok(())
    }

    /// Every rule that spans keys, checked here and nowhere else.
    pub(super) fn check_rules(&self) -> Result<(), ConfigError> {
        let a = &self.data.aug;
        if !(a.crop_scale > 0.0 && a.crop_scale <= 1.0) {
            return Err(ConfigError(format!(
                "data.aug.crop_scale={} is not in (0, 1]: it is the smallest fraction of the frame's area a crop keeps (1 = no crop)",
                a.crop_scale
            )));
        }
        for (key, v) in [
            ("data.aug.brightness", a.brightness),
            ("data.aug.contrast", a.contrast),
            ("data.aug.saturation", a.saturation),
            ("data.aug.kpt_scale", a.kpt_scale),
        ] {
            if v >= 1.0 {
                return Err(ConfigError(format!(
                    "{key}={v}: factors are drawn from [1 - x, 1 + x], so x must be below 1"
                )));
            }
        }
        self.check_mix()?;
        if self.eval.clips > MAX_EVAL_CLIPS {
            return Err(ConfigError(format!(
                "eval.clips={} is more than mvdrive evaluates per segment (at most {MAX_EVAL_CLIPS}; 1-10 is usual)",
                self.eval.clips
            )));
        }
        let t = self.data.uniform_temporal_subsample_num;
        if t > MAX_FRAMES {
            return Err(ConfigError(format!(
                "data.uniform_temporal_subsample_num={t} frames per clip is more than mvdrive takes (at most {MAX_FRAMES}; video models use 8-64)"
            )));
        }
        if self.data.num_workers > MAX_WORKERS {
            return Err(ConfigError(format!(
                "data.num_workers={} is more loader threads than mvdrive runs (at most {MAX_WORKERS}; 2-8 keep a GPU fed)",
                self.data.num_workers
            )));
        }
        let m = &self.model;
        let it = m.input_type;
        for (uses, modality, key, load) in [
            (it.uses_rgb(), "rgb", "data.load_rgb", self.data.load_rgb),
            (it.uses_kpt(), "kpt", "data.load_kpt", self.data.load_kpt),
        ] {
            if uses && !load {
                return Err(ConfigError(format!(
                    "model.input_type={it} reads {modality} but {key}=false; set {key}=true, or model.input_type={}",
                    if modality == "rgb" { "kpt" } else { "rgb" }
                )));
            }
        }
        it.check_backbone(m.backbone).map_err(ConfigError)?;
        let b = &m.backbones;
        if m.backbone == BackboneKind::Mamba && (2 * b.mamba.dim) % 64 != 0 {
            return Err(ConfigError(format!(
                "model.mamba_dim={} must be a multiple of 32 (the SSM runs 2 x dim channels in heads of 64)",
                b.mamba.dim
            )));
        }
        if m.backbone == BackboneKind::Transformer && b.transformer.dim % b.transformer.heads != 0 {
            return Err(ConfigError(format!(
                "model.transformer_dim={} is not divisible by model.transformer_heads={}",
                b.transformer.dim, b.transformer.heads
            )));
        }
        if b.stgcn.temporal_kernel % 2 == 0 {
            return Err(ConfigError(format!(
                "model.stgcn_temporal_kernel={} must be odd (the convolution is centred)",
                b.stgcn.temporal_kernel
            )));
        }
        Ok(())
    }
}
