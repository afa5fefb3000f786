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
    let mut s = state.settings()?;
    if let Some(f) = file {
        s.apply_yaml_file(f)?;
    }
    s.apply_overrides(overrides)?;
    Ok(TrainConfig::new(&s)?)
}

/// Fits a checkpoint's position to this rank of a run of `world` ranks. The epoch's loss so
/// far (a sum over all ranks, as saved by rank 0) stays with rank 0. A checkpoint of another
/// world size stopped mid-epoch at a batch of one rank's share: the run continues at the
/// accumulation window that starts at or before the same number of clips of that epoch's
/// order (a few may be seen twice). Weights, optimizer moments, step count, epoch and the
/// epoch's order carry over exactly either way; only the same world size continues the very
/// same batches.
pub fn for_rank(st: &mut TrainerState, rank: usize, world: usize, accum: usize, quiet: bool) {
    if rank != 0 {
        st.epoch_loss_sum = 0.0;
        st.epoch_batches = 0;
    }
    if st.world_size != world && st.next_batch > 0 {
        let next =
            st.next_batch * st.world_size.max(1) / world.max(1) / accum.max(1) * accum.max(1);
        if !quiet {
            eprintln!(
                "note: the checkpoint was written by {} rank(s) at batch {} of its epoch; {world} rank(s) continue at batch {next} (same epoch order, split anew)",
                st.world_size, st.next_batch
            );
        }
        st.next_batch = next;
    }
    st.world_size = world;
}

/// A run resumed with another `train.monitor` starts its best and early-stopping count
/// afresh: the saved best is a value of the old metric (an accuracy is no loss to beat).
pub fn follow_monitor(st: &mut TrainerState, now: &Settings, quiet: bool) -> Result<()> {
    let then = st.settings()?;
    let (old, new) = (then.raw("train.monitor"), now.raw("train.monitor"));
    if old != new && st.best.is_some() {
        if !quiet {
            eprintln!(
                "note: the checkpoint monitored {old}, this run monitors {new}: the best checkpoint and early stopping start afresh"
            );
        }
        st.best = None;
        st.best_val_loss = None;
        st.bad_epochs = 0;
    }
    Ok(())
}

/// Checks that the session `now` can continue the checkpoint `state`.
pub fn check(state: &TrainerState, now: &Session) -> Result<()> {
    let then = state.settings()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    fn state(world: usize, next_batch: usize) -> TrainerState {
        let config = TrainConfig::load(None, &[]).unwrap();
        TrainerState {
            version: 1,
            epoch: 3,
            next_batch,
            global_step: 40,
            epoch_loss_sum: 5.0,
            epoch_batches: 8,
            best: None,
            bad_epochs: 0,
            config_yaml: config.to_yaml(),
            backbone: "transformer".into(),
            fusion: "logit_mean".into(),
            views: vec!["front".into()],
            classes: vec!["a".into(), "b".into()],
            clip: crate::model::ClipShape::new(8, 32, 32),
            scaler: None,
            files: None,
            segment_s: None,
            cache_params: None,
            world_size: world,
            best_val_loss: None,
        }
    }

    #[test]
    fn a_checkpoint_moves_to_the_window_of_the_same_clips_on_another_world() {
        // 2 ranks stopped after batch 6 of each share: 12 batches of the epoch's order.
        let mut st = state(2, 6);
        for_rank(&mut st, 0, 4, 1, true);
        assert_eq!((st.next_batch, st.world_size), (3, 4));
        assert_eq!((st.epoch, st.global_step, st.epoch_batches), (3, 40, 8));
        // Rounded down to an accumulation window, on a rank other than 0 (which keeps the
        // epoch's loss so far).
        let mut st = state(2, 6);
        for_rank(&mut st, 1, 3, 4, true);
        assert_eq!(
            (st.next_batch, st.epoch_loss_sum, st.epoch_batches),
            (4, 0.0, 0)
        );
        let mut st = state(3, 5);
        for_rank(&mut st, 2, 2, 2, true);
        assert_eq!(
            st.next_batch, 6,
            "15 batches' clips -> 7.5 -> window start 6"
        );
        // The same world size keeps the very same position.
        let mut st = state(2, 5);
        for_rank(&mut st, 0, 2, 4, true);
        assert_eq!(st.next_batch, 5);
    }

    #[test]
    fn another_monitor_starts_the_best_afresh() {
        let mut st = state(1, 0);
        st.best = Some((0.8, 2));
        st.best_val_loss = Some(0.5);
        st.bad_epochs = 1;
        let same = TrainConfig::load(None, &[]).unwrap();
        follow_monitor(&mut st, same.settings(), true).unwrap();
        assert_eq!((st.best, st.bad_epochs), (Some((0.8, 2)), 1));
        // The default monitors val_macro_f1.
        let now = TrainConfig::load(None, &["train.monitor=val_loss".into()]).unwrap();
        follow_monitor(&mut st, now.settings(), true).unwrap();
        assert_eq!((st.best, st.best_val_loss, st.bad_epochs), (None, None, 0));
    }
}
