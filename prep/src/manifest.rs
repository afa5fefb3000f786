//! The canonical manifest: `manifest.csv`/`.parquet` (one row per session and view), read
//! and validated before anything is written (segments: [`crate::segments`]).
//!
//! Every problem is one line that names the file and line, and says what to do. All
//! problems are collected, so a user fixes a manifest in one pass.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use crate::table::TextTable;

/// One manifest row: one view of one session.
#[derive(Debug, Clone)]
pub struct ViewEntry {
    /// Line in the manifest.
    pub line: u64,
    /// Session id.
    pub session: String,
    /// Subject id.
    pub subject: String,
    /// View name.
    pub view: String,
    /// Video path as written (relative to the data root).
    pub video: String,
    /// Resolved video path.
    pub path: PathBuf,
    /// `fps` column: overrides the container's frame rate and timestamps.
    pub fps: Option<f64>,
    /// `offset_s`: session time of this view's first frame.
    pub offset_s: f64,
    /// `keypoints` column as written (relative to the data root).
    pub keypoints: Option<String>,
    /// Resolved keypoint file or folder.
    pub keypoints_path: Option<PathBuf>,
    /// `keypoint_layout` column.
    pub keypoint_layout: Option<String>,
    /// `split` column.
    pub split: Option<String>,
    /// `fold` column (written by `prep split`).
    pub fold: Option<u32>,
}

/// One session and its views, in manifest view order.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// Session id.
    pub name: String,
    /// Subject id.
    pub subject: String,
    /// Split, if the manifest gives one.
    pub split: Option<String>,
    /// Fold, if the manifest gives one.
    pub fold: Option<u32>,
    /// One entry per view, in [`Manifest::views`] order.
    pub views: Vec<ViewEntry>,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Data root that video paths are relative to.
    pub root: PathBuf,
    /// View names in order of first appearance.
    pub views: Vec<String>,
    /// Sessions in order of first appearance.
    pub sessions: Vec<SessionEntry>,
}

const MANIFEST_REQUIRED: &[&str] = &["session", "subject", "view", "video"];
const MANIFEST_OPTIONAL: &[&str] = &[
    "fps",
    "offset_s",
    "keypoints",
    "keypoint_layout",
    "split",
    "fold",
];

/// The trimmed, non-empty cell of column `name` in `row`.
pub(crate) fn cell<'a>(t: &TextTable, row: &'a [String], name: &str) -> Option<&'a str> {
    t.col(name)
        .and_then(|i| row.get(i))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

/// Lexically resolve `rel` under `root`, refusing anything that leaves it.
pub fn resolve_under(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    let mut depth: i64 = 0;
    let mut out = root.to_path_buf();
    if p.is_absolute() {
        let canon_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        return if canon.starts_with(&canon_root) {
            Ok(canon)
        } else {
            Err(format!(
                "path `{rel}` is outside the data root {}",
                root.display()
            ))
        };
    }
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                depth += 1;
                out.push(s);
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "path `{rel}` escapes the data root {}; keep videos inside it or pass --data-root",
                        root.display()
                    ));
                }
                out.pop();
            }
            Component::CurDir => {}
            _ => return Err(format!("path `{rel}` is not a relative path")),
        }
    }
    // Symbolic links may still point outside the root.
    if let (Ok(canon), Ok(canon_root)) = (out.canonicalize(), root.canonicalize()) {
        if !canon.starts_with(&canon_root) {
            return Err(format!(
                "path `{rel}` resolves to {} outside the data root {} (through a symbolic link)",
                canon.display(),
                root.display()
            ));
        }
    }
    Ok(out)
}

impl Manifest {
    /// Read and validate a manifest. `root` defaults to the manifest's folder.
    /// Returns every problem found, one line each.
    pub fn load(
        path: &Path,
        root: Option<&Path>,
        allow_missing_views: bool,
    ) -> Result<Manifest, Vec<String>> {
        let t = TextTable::read(path).map_err(|e| vec![e])?;
        let shown = path.display().to_string();
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        let mut problems = Vec::new();
        for req in MANIFEST_REQUIRED {
            if t.col(req).is_none() {
                problems.push(format!(
                    "{shown}: missing column `{req}` (required: {}; optional: {})",
                    MANIFEST_REQUIRED.join(", "),
                    MANIFEST_OPTIONAL.join(", ")
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if t.rows.is_empty() {
            return Err(vec![format!(
                "{shown}: no rows; add one row per (session, view)"
            )]);
        }
        for h in &t.headers {
            if !MANIFEST_REQUIRED.contains(&h.as_str()) && !MANIFEST_OPTIONAL.contains(&h.as_str())
            {
                tracing::warn!("{shown}: ignoring unknown column `{h}`");
            }
        }
        let mut views: Vec<String> = Vec::new();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        let mut entries: Vec<ViewEntry> = Vec::new();
        for (line, row) in &t.rows {
            let at = format!("{shown} line {line}");
            let (Some(session), Some(subject), Some(view), Some(video)) = (
                cell(&t, row, "session"),
                cell(&t, row, "subject"),
                cell(&t, row, "view"),
                cell(&t, row, "video"),
            ) else {
                problems.push(format!(
                    "{at}: session, subject, view and video must all be filled in"
                ));
                continue;
            };
            if let Some(first) = seen.insert((session.into(), view.into()), *line) {
                problems.push(format!(
                    "{at}: duplicate (session `{session}`, view `{view}`), first given on line {first}; keep one row"
                ));
                continue;
            }
            let entry = match read_row(
                &t,
                row,
                Required {
                    session,
                    subject,
                    view,
                    video,
                },
                *line,
                &root,
                &at,
            ) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if !views.iter().any(|v| v == view) {
                views.push(view.to_string());
            }
            entries.push(entry);
        }
        let sessions = group_sessions(entries, &views, &shown, allow_missing_views, &mut problems);
        if problems.is_empty() {
            Ok(Manifest {
                path: path.to_path_buf(),
                root,
                views,
                sessions,
            })
        } else {
            Err(problems)
        }
    }
}

/// The required cells of a manifest row.
struct Required<'a> {
    session: &'a str,
    subject: &'a str,
    view: &'a str,
    video: &'a str,
}

/// Check one manifest row's optional cells and files; the entry, or the problem.
fn read_row(
    t: &TextTable,
    row: &[String],
    req: Required<'_>,
    line: u64,
    root: &Path,
    at: &str,
) -> Result<ViewEntry, String> {
    let Required {
        session,
        subject,
        view,
        video,
    } = req;
    let fps = match cell(t, row, "fps").map(str::parse::<f64>) {
        None => None,
        Some(Ok(f)) if f.is_finite() && f > 0.0 => Some(f),
        Some(_) => {
            return Err(format!(
                "{at}: fps `{}` is not a positive number",
                cell(t, row, "fps").unwrap_or("")
            ));
        }
    };
    let offset_s = match cell(t, row, "offset_s").map(str::parse::<f64>) {
        None => 0.0,
        Some(Ok(o)) if o.is_finite() => o,
        Some(_) => {
            return Err(format!(
                "{at}: offset_s `{}` is not a number of seconds",
                cell(t, row, "offset_s").unwrap_or("")
            ));
        }
    };
    let path = match resolve_under(root, video) {
        Ok(p) => p,
        Err(e) => {
            return Err(format!("{at}: {e}"));
        }
    };
    if !path.exists() {
        return Err(format!(
            "{at}: video {} not found; fix the path or remove the row",
            path.display()
        ));
    }
    if !path.is_file() {
        return Err(format!("{at}: video {} is not a file", path.display()));
    }
    if let Err(e) = File::open(&path) {
        return Err(format!(
            "{at}: video {} cannot be read: {e}",
            path.display()
        ));
    }
    let keypoints = cell(t, row, "keypoints").map(String::from);
    let keypoint_layout = cell(t, row, "keypoint_layout").map(String::from);
    let mut keypoints_path = None;
    if let Some(k) = &keypoints {
        match &keypoint_layout {
            None => {
                return Err(format!(
                    "{at}: keypoints given without keypoint_layout (one of {})",
                    mvdrive_schemas::layout::layout_names()
                ));
            }
            Some(l) if mvdrive_schemas::layout::layout(l).is_none() => {
                return Err(format!(
                    "{at}: unknown keypoint_layout `{l}` (known: {})",
                    mvdrive_schemas::layout::layout_names()
                ));
            }
            Some(_) => {}
        }
        match resolve_under(root, k) {
            Ok(p) if p.exists() => keypoints_path = Some(p),
            Ok(p) => {
                return Err(format!(
                    "{at}: keypoints {} not found; fix the path or leave the cell empty (a view may have no keypoints)",
                    p.display()
                ));
            }
            Err(e) => {
                return Err(format!("{at}: {e}"));
            }
        }
    }
    let fold = match cell(t, row, "fold").map(str::parse::<u32>) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(_)) => {
            return Err(format!(
                "{at}: fold `{}` is not a whole number",
                cell(t, row, "fold").unwrap_or("")
            ));
        }
    };
    Ok(ViewEntry {
        line,
        session: session.into(),
        subject: subject.into(),
        view: view.into(),
        video: video.into(),
        path,
        fps,
        offset_s,
        keypoints,
        keypoints_path,
        keypoint_layout,
        split: cell(t, row, "split").map(String::from),
        fold,
    })
}

/// Rows grouped by session (one subject, fold and split each; every view present unless
/// `allow_missing_views`), views in manifest view order.
fn group_sessions(
    entries: Vec<ViewEntry>,
    views: &[String],
    shown: &str,
    allow_missing_views: bool,
    problems: &mut Vec<String>,
) -> Vec<SessionEntry> {
    let mut sessions: Vec<SessionEntry> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for e in entries {
        let i = *by_name.entry(e.session.clone()).or_insert_with(|| {
            sessions.push(SessionEntry {
                name: e.session.clone(),
                subject: e.subject.clone(),
                split: e.split.clone(),
                fold: e.fold,
                views: Vec::new(),
            });
            sessions.len() - 1
        });
        let s = &mut sessions[i];
        if s.subject != e.subject {
            problems.push(format!(
                "{shown} line {}: session `{}` has subject `{}` here but `{}` on an earlier row; one subject per session",
                e.line, e.session, e.subject, s.subject
            ));
        }
        if s.fold != e.fold {
            problems.push(format!(
                "{shown} line {}: session `{}` has fold {:?} here but {:?} on an earlier row; one fold per session",
                e.line, e.session, e.fold, s.fold
            ));
        }
        if s.split != e.split {
            problems.push(format!(
                "{shown} line {}: session `{}` has split {:?} here but {:?} on an earlier row; one split per session",
                e.line, e.session, e.split, s.split
            ));
        }
        s.views.push(e);
    }
    for s in &mut sessions {
        let have: HashSet<&str> = s.views.iter().map(|v| v.view.as_str()).collect();
        let missing: Vec<&str> = views
            .iter()
            .filter(|v| !have.contains(v.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() && !allow_missing_views {
            problems.push(format!(
                "{shown}: session `{}` is missing view(s) {} (every session needs every view: {}); add the rows, remove the session, or pass --allow-missing-views to cache the views each session has",
                s.name,
                missing.join(", "),
                views.join(", ")
            ));
        }
        s.views
            .sort_by_key(|v| views.iter().position(|x| *x == v.view));
    }
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_may_not_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(resolve_under(dir.path(), "a/../b.mp4").is_ok());
        assert!(resolve_under(dir.path(), "../b.mp4")
            .unwrap_err()
            .contains("escapes the data root"));
        assert!(resolve_under(dir.path(), "/etc/passwd")
            .unwrap_err()
            .contains("outside the data root"));
    }
}
