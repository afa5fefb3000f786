//! Writing `manifest.csv`, `segments.csv` (and `labels.txt`): under temporary names,
//! renamed only once all are written.

use std::path::{Path, PathBuf};

use super::{num, Seg, Span, ViewRow};
use crate::error::{io, PrepError};

fn csv_bytes(rows: Vec<Vec<String>>) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(&r).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// Write manifest.csv, segments.csv (and labels.txt) under temporary names, then rename.
pub(super) fn write_outputs(
    out: &Path,
    views: &[ViewRow],
    segs: &[Seg],
    vocab: Option<&(PathBuf, Vec<(usize, String)>)>,
) -> Result<Vec<String>, PrepError> {
    let with_offset = views.iter().any(|v| v.offset_s.is_some());
    let with_split = views.iter().any(|v| v.split.is_some());
    let mut rows = vec![{
        let mut h: Vec<String> = ["session", "subject", "view", "video"]
            .map(String::from)
            .to_vec();
        if with_offset {
            h.push("offset_s".into());
        }
        if with_split {
            h.push("split".into());
        }
        h
    }];
    for v in views {
        let mut r = vec![
            v.session.clone(),
            v.subject.clone(),
            v.view.clone(),
            v.video.clone(),
        ];
        if with_offset {
            r.push(num(v.offset_s.unwrap_or(0.0)));
        }
        if with_split {
            r.push(v.split.clone().unwrap_or_default());
        }
        rows.push(r);
    }
    let manifest = csv_bytes(rows).map_err(PrepError::Other)?;

    let frames = segs.iter().any(|g| matches!(g.span, Span::Frames { .. }));
    let secs = segs.iter().any(|g| matches!(g.span, Span::Seconds { .. }));
    let mut header: Vec<String> = vec!["session".into()];
    if secs || !frames {
        header.extend(["start_s".into(), "end_s".into()]);
    }
    if frames {
        header.extend(["start_frame".into(), "end_frame".into()]);
    }
    header.push("label".into());
    if frames {
        header.push("frame_view".into());
    }
    let mut rows = vec![header];
    for g in segs {
        let mut r = vec![g.session.clone()];
        match &g.span {
            Span::Seconds { start, end } => {
                r.extend([num(*start), num(*end)]);
                if frames {
                    r.extend([String::new(), String::new()]);
                }
                r.push(g.label.clone());
                if frames {
                    r.push(String::new());
                }
            }
            Span::Frames { start, end, view } => {
                if secs {
                    r.extend([String::new(), String::new()]);
                }
                r.extend([
                    start.to_string(),
                    end.to_string(),
                    g.label.clone(),
                    view.clone(),
                ]);
            }
        }
        rows.push(r);
    }
    let segments = csv_bytes(rows).map_err(PrepError::Other)?;

    let mut files: Vec<(&str, Vec<u8>)> =
        vec![("manifest.csv", manifest), ("segments.csv", segments)];
    if let Some((_, lines)) = vocab {
        let mut text = String::new();
        for (_, l) in lines {
            text.push_str(l);
            text.push('\n');
        }
        files.push(("labels.txt", text.into_bytes()));
    }

    std::fs::create_dir_all(out).map_err(io(out))?;
    let tag = format!(".tmp-import-{}", std::process::id());
    let mut temps = Vec::new();
    for (name, bytes) in &files {
        let tmp = out.join(format!("{name}{tag}"));
        if let Err(e) = std::fs::write(&tmp, bytes) {
            for t in &temps {
                let _ = std::fs::remove_file(t);
            }
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        temps.push(tmp);
    }
    for ((name, _), tmp) in files.iter().zip(&temps) {
        let dest = out.join(name);
        std::fs::rename(tmp, &dest).map_err(io(&dest))?;
    }
    Ok(files
        .iter()
        .map(|(n, _)| out.join(n).display().to_string())
        .collect())
}
