//! `prep export-frames`: write cached frames as PNG files for people to look at.

use std::path::{Path, PathBuf};

use mvdrive_schemas::Cache;

use crate::error::{io, PrepError};

/// Write frames `start .. start + count` of (session, view) as
/// `DIR/<session>_<view>_<frame>.png`. Returns the files written.
pub fn export_frames(
    cache: &Path,
    session: &str,
    view: &str,
    start: u64,
    count: u64,
    out: &Path,
) -> Result<Vec<PathBuf>, PrepError> {
    let c = Cache::open(cache)?;
    let Some(s) = c.sessions.iter().find(|s| s.session == session) else {
        let known: Vec<&str> = c
            .sessions
            .iter()
            .take(10)
            .map(|s| s.session.as_str())
            .collect();
        return Err(PrepError::Other(format!(
            "{}: no session `{session}` (sessions: {} ...)",
            cache.display(),
            known.join(", ")
        )));
    };
    if !c.meta.views.iter().any(|v| v == view) {
        return Err(PrepError::Other(format!(
            "{}: no view `{view}` (views: {})",
            cache.display(),
            c.meta.views.join(", ")
        )));
    }
    if start >= s.timeline_frames {
        return Err(PrepError::Other(format!(
            "--start {start} is past the end of session `{session}` ({} timeline frames)",
            s.timeline_frames
        )));
    }
    let end = (start + count).min(s.timeline_frames);
    std::fs::create_dir_all(out).map_err(io(out))?;
    let (h, w) = (c.meta.params.img_height, c.meta.params.img_width);
    let mut written = Vec::new();
    for t in start..end {
        let rgb = c.read_frame(session, view, t)?;
        let path = out.join(format!(
            "{}_{}_{t:06}.png",
            crate::job::safe_component(session),
            crate::job::safe_component(view)
        ));
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let err = |e: png::EncodingError| PrepError::Other(format!("{}: {e}", path.display()));
        let mut wr = enc.write_header().map_err(err)?;
        wr.write_image_data(&rgb).map_err(err)?;
        wr.finish().map_err(err)?;
        written.push(path);
    }
    Ok(written)
}
