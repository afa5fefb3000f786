//! What a run leaves behind: [`metrics`] (confusion matrix, epoch rows, metrics.csv),
//! [`plot`] (metrics.png, confusion.png), [`run_dir`] (the `version_N` folder), [`segments`]
//! (segment files) and [`localisation`] (temporal localisation metrics, `train score`).

pub mod aicity;
pub mod localisation;
pub mod metrics;
pub mod plot;
pub mod run_dir;
pub mod segments;
pub mod timeline;

use std::path::Path;

use crate::error::{IoAt, Result};

/// Write `bytes` to `path` whole or not at all: into a temporary file next to it, then
/// renamed over it, so a crash never leaves half a file behind.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}
