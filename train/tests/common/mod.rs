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
    synth_cache_relabelled(dir, sessions, seed, settings, None)
}

/// [`synth_cache`] with the segments' labels renamed by `relabel` (old, new) first; the
/// segments of a label it does not name are dropped. A "new" dataset for fine-tuning.
pub fn synth_cache_relabelled(
    dir: &Path,
    sessions: usize,
    seed: u64,
    settings: &[&str],
    relabel: Option<&[(&str, &str)]>,
) -> PathBuf {
    let data = dir.join("data");
    synth(&data, sessions, seed, true).expect("prep synth");
    if let Some(map) = relabel {
        let path = data.join("segments.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let (head, label) = line.rsplit_once(',').unwrap();
            if i == 0 {
                out.push_str(line);
            } else if let Some((_, new)) = map.iter().find(|(old, _)| *old == label) {
                out.push_str(&format!("{head},{new}"));
            } else {
                continue;
            }
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap();
    }
    let mut config = PrepConfig::default();
    let overrides: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    config.apply_overrides(&overrides).expect("prep settings");
    let cache = dir.join("cache");
    build(&BuildArgs {
        manifest: data.join("manifest.csv"),
        segments: Some(data.join("segments.csv")),
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
