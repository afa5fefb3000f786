//! `train predict --manifest`: new recordings (raw videos, no segments) become a temporary
//! cache built by the `prep` binary with the training cache's parameters (saved in the
//! checkpoint), which is removed afterwards, error or not.
//!
//! Why a temporary cache and not decoding on the fly: prep's pipeline is the one decoder
//! of the project (timeline alignment, frame-rate conversion, resizing and keypoint
//! resampling live there), so the model sees exactly the frames a cache of the same videos
//! holds, and `train` stays free of FFmpeg. The cost is disk for one recording set at the
//! model's frame size, and the time to write it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use mvdrive_schemas::meta::PrepParams;

use crate::error::{Result, TrainError};

/// A cache folder removed when dropped.
#[derive(Debug)]
pub struct TempCache {
    /// The folder.
    pub dir: PathBuf,
}

impl Drop for TempCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `prep` binary: `$MVDRIVE_PREP`, else next to this executable (or one folder up,
/// where cargo keeps the binaries of a test executable's build).
pub fn prep_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MVDRIVE_PREP") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("where is this binary? {e}"))?;
    let here = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    [here.join("prep"), here.join("../prep")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TrainError::Other(format!(
                "train predict --manifest runs the prep binary, which is not next to {} (build it with `cargo build --release -p mvdrive-prep`, or set MVDRIVE_PREP)",
                exe.display()
            ))
        })
}

/// The views a CSV manifest names (`None` for Parquet: prep checks those).
fn manifest_views(manifest: &Path) -> Result<Option<BTreeSet<String>>> {
    if manifest.extension().is_some_and(|e| e == "parquet") {
        return Ok(None);
    }
    let shown = manifest.display();
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(manifest)
        .map_err(|e| format!("{shown}: {e}"))?;
    let col = r
        .headers()
        .map_err(|e| format!("{shown}: {e}"))?
        .iter()
        .position(|h| h == "view")
        .ok_or_else(|| format!("{shown}: no `view` column (see prep build --help)"))?;
    let mut views = BTreeSet::new();
    for row in r.records() {
        let row = row.map_err(|e| format!("{shown}: {e}"))?;
        views.insert(row.get(col).unwrap_or("").to_string());
    }
    Ok(Some(views))
}

/// Build a cache of `manifest` in `dir` (removed when the result is dropped) as the
/// training cache was built (`params`), after checking it has the model's `views`.
pub fn build_cache(
    manifest: &Path,
    views: &[String],
    params: &PrepParams,
    dir: PathBuf,
    quiet: bool,
) -> Result<TempCache> {
    if let Some(have) = manifest_views(manifest)? {
        if let Some(v) = views.iter().find(|v| !have.contains(*v)) {
            return Err(TrainError::Other(format!(
                "{}: the model reads view `{v}`, which the manifest does not have (views: {}); add its videos",
                manifest.display(),
                have.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let prep = prep_binary()?;
    let temp = TempCache { dir };
    let mut cmd = Command::new(&prep);
    cmd.arg("build")
        .arg("--manifest")
        .arg(manifest)
        .arg("--out")
        .arg(&temp.dir)
        .arg(format!(
            "data.img_size={}x{}",
            params.img_height, params.img_width
        ))
        .arg(format!("prep.fps={}", params.fps))
        .arg(format!("prep.resize={}", params.resize))
        .arg(format!("prep.scaler={}", params.scaler))
        .arg(format!("data.max_video_frames={}", params.max_video_frames))
        .arg(format!("prep.kpt_normalize={}", params.kpt_normalize));
    if quiet {
        cmd.arg("-q");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running {}: {e}", prep.display()))?;
    if !status.success() {
        return Err(TrainError::Other(format!(
            "prep build of {} failed ({status}; its message is above)",
            manifest.display()
        )));
    }
    Ok(temp)
}
