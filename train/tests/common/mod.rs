//! Helpers shared by the trainer's integration tests: the `prep` binary next to `train`,
//! and a tiny cache built from `prep synth` data.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn prep_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_train")).with_file_name("prep");
    assert!(
        p.exists(),
        "{} not found: build the workspace first (`make test` does)",
        p.display()
    );
    p
}

pub fn prep(args: &[&str]) {
    let out = Command::new(prep_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "prep {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 4 synthetic sessions (splits train, train, val, test), 16x16 frames at 2 fps.
pub fn tiny_cache(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    prep(&[
        "synth",
        "-q",
        "--out",
        data.to_str().unwrap(),
        "--sessions",
        "4",
        "--seed",
        "5",
    ]);
    let cache = dir.join("cache");
    prep(&[
        "build",
        "-q",
        "--manifest",
        data.join("manifest.csv").to_str().unwrap(),
        "--segments",
        data.join("segments.csv").to_str().unwrap(),
        "--out",
        cache.to_str().unwrap(),
        "data.img_size=16",
        "prep.fps=2",
        "data.max_video_frames=8",
    ]);
    cache
}
