//! `train fit --resume`: the configuration of a resumed run (the checkpoint's settings,
//! then what the user gives now), and the checks that it can continue the checkpoint
//! exactly: the same model shape always, and the same batches when it stopped mid-epoch.

use std::path::Path;

use crate::config::{Settings, TrainConfig, KEYS};
use crate::error::Result;
use crate::run::checkpoint::TrainerState;
use crate::run::session::Session;

/// Keys the remaining batches of an epoch depend on.
const SAME_BATCHES: &[&str] = &[
    "data.batch_size",
    "data.uniform_temporal_subsample_num",
    "data.img_size",
    "data.train_split",
    "data.fold",
    "data.balanced_sampler",
    "train.seed",
    "train.accumulate_grad_batches",
];

/// Key prefixes the model's shape depends on.
const SAME_SHAPE: &[&str] = &[
    "model.input_type",
    "model.modality_fusion",
    "model.transformer_",
    "model.mamba_",
    "model.stgcn_",
    "data.img_size",
    "data.uniform_temporal_subsample_num",
];

/// The checkpoint's settings, then `file` and `overrides` given now (e.g. more epochs).
pub fn resumed_config(
    state: &TrainerState,
    file: Option<&Path>,
    overrides: &[String],
) -> Result<TrainConfig> {
    let mut s = Settings::default();
    s.apply_yaml(&state.config_yaml)?;
    if let Some(f) = file {
        s.apply_yaml_file(f)?;
    }
    s.apply_overrides(overrides)?;
    Ok(TrainConfig::new(&s)?)
}

/// Checks that the session `now` can continue the checkpoint `state`.
pub fn check(state: &TrainerState, now: &Session) -> Result<()> {
    let mut then = Settings::default();
    then.apply_yaml(&state.config_yaml)?;
    let now_s = now.config.settings();
    if state.next_batch > 0 {
        for &k in SAME_BATCHES {
            if then.raw(k) != now_s.raw(k) {
                return Err(format!(
                    "--resume: the checkpoint stopped mid-epoch with {k}={}; resuming with {k}={} would change the remaining batches (resume from an epoch-end checkpoint to change it)",
                    then.raw(k),
                    now_s.raw(k)
                )
                .into());
            }
        }
    }
    // Dropout does not change shapes; input sizes only matter to the token backbones
    // (their positional embeddings).
    let tokens = now.config.model.backbone.is_token();
    let shape_keys = KEYS
        .iter()
        .map(|k| k.name)
        .filter(|n| SAME_SHAPE.iter().any(|p| n.starts_with(p)))
        .filter(|k| !k.ends_with("_dropout") && (tokens || !k.starts_with("data.")));
    for k in shape_keys {
        if then.raw(k) != now_s.raw(k) {
            return Err(format!(
                "--resume: the checkpoint was trained with {k}={}; this run has {k}={} (the model's shape depends on it)",
                then.raw(k),
                now_s.raw(k)
            )
            .into());
        }
    }
    let backbone = now_s.raw("model.backbone");
    let fusion = now_s.raw("model.fusion_mode");
    let same = (backbone, fusion, &now.views, &now.classes)
        == (
            state.backbone.as_str(),
            state.fusion.as_str(),
            &state.views,
            &state.classes,
        );
    if !same {
        return Err(format!(
            "--resume: the checkpoint was trained with backbone {}, fusion {}, views {:?}, classes {:?}; this run has {backbone}, {fusion}, {:?}, {:?}",
            state.backbone, state.fusion, state.views, state.classes, now.views, now.classes
        )
        .into());
    }
    Ok(())
}
