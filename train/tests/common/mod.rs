//! Helpers shared by the trainer's integration tests: caches built from `prep synth` data
//! through the `mvdrive-prep` library (a dev-dependency, so cargo builds it first; no
//! prebuilt binary is needed).

#![allow(dead_code)] // each test binary uses some of these

use std::path::{Path, PathBuf};

use mvdrive_prep::config::PrepConfig;
use mvdrive_prep::pipeline::{build, BuildArgs};
use mvdrive_prep::synth::synth;

/// `prep synth --sessions N --seed S`, then `prep build` with `settings` into `dir/cache`.
pub fn synth_cache(dir: &Path, sessions: usize, seed: u64, settings: &[&str]) -> PathBuf {
    let data = dir.join("data");
    synth(&data, sessions, seed, true).expect("prep synth");
    let mut config = PrepConfig::default();
    let overrides: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    config.apply_overrides(&overrides).expect("prep settings");
    let cache = dir.join("cache");
    build(&BuildArgs {
        manifest: data.join("manifest.csv"),
        segments: data.join("segments.csv"),
        out: cache.clone(),
        config,
        quiet: true,
        ..Default::default()
    })
    .expect("prep build");
    cache
}

/// 4 synthetic sessions (splits train, train, val, test), 16x16 frames at 2 fps.
pub fn tiny_cache(dir: &Path) -> PathBuf {
    synth_cache(
        dir,
        4,
        5,
        &["data.img_size=16", "prep.fps=2", "data.max_video_frames=8"],
    )
}
