//! The canonical inputs: `manifest.csv`/`.parquet` (one row per session and view) and
//! `segments.csv` (labelled time ranges), read and validated before anything is written.
//!
//! Every problem is one line that names the file and line, and says what to do. All
//! problems are collected, so a user fixes a manifest in one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
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

fn cell<'a>(t: &TextTable, row: &'a [String], name: &str) -> Option<&'a str> {
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
    pub fn load(path: &Path, root: Option<&Path>) -> Result<Manifest, Vec<String>> {
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
            let fps = match cell(&t, row, "fps").map(str::parse::<f64>) {
                None => None,
                Some(Ok(f)) if f.is_finite() && f > 0.0 => Some(f),
                Some(_) => {
                    problems.push(format!(
                        "{at}: fps `{}` is not a positive number",
                        cell(&t, row, "fps").unwrap_or("")
                    ));
                    continue;
                }
            };
            let offset_s = match cell(&t, row, "offset_s").map(str::parse::<f64>) {
                None => 0.0,
                Some(Ok(o)) if o.is_finite() => o,
                Some(_) => {
                    problems.push(format!(
                        "{at}: offset_s `{}` is not a number of seconds",
                        cell(&t, row, "offset_s").unwrap_or("")
                    ));
                    continue;
                }
            };
            let path = match resolve_under(&root, video) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if !path.exists() {
                problems.push(format!(
                    "{at}: video {} not found; fix the path or remove the row",
                    path.display()
                ));
                continue;
            }
            if !path.is_file() {
                problems.push(format!("{at}: video {} is not a file", path.display()));
                continue;
            }
            if let Err(e) = File::open(&path) {
                problems.push(format!(
                    "{at}: video {} cannot be read: {e}",
                    path.display()
                ));
                continue;
            }
            let keypoints = cell(&t, row, "keypoints").map(String::from);
            let keypoint_layout = cell(&t, row, "keypoint_layout").map(String::from);
            let mut keypoints_path = None;
            if let Some(k) = &keypoints {
                match &keypoint_layout {
                    None => {
                        problems.push(format!(
                            "{at}: keypoints given without keypoint_layout (one of {})",
                            mvdrive_schemas::layout::layout_names()
                        ));
                        continue;
                    }
                    Some(l) if mvdrive_schemas::layout::layout(l).is_none() => {
                        problems.push(format!(
                            "{at}: unknown keypoint_layout `{l}` (known: {})",
                            mvdrive_schemas::layout::layout_names()
                        ));
                        continue;
                    }
                    Some(_) => {}
                }
                match resolve_under(&root, k) {
                    Ok(p) if p.exists() => keypoints_path = Some(p),
                    Ok(p) => {
                        problems.push(format!(
                            "{at}: keypoints {} not found; fix the path or leave the cell empty (a view may have no keypoints)",
                            p.display()
                        ));
                        continue;
                    }
                    Err(e) => {
                        problems.push(format!("{at}: {e}"));
                        continue;
                    }
                }
            }
            let fold = match cell(&t, row, "fold").map(str::parse::<u32>) {
                None => None,
                Some(Ok(f)) => Some(f),
                Some(Err(_)) => {
                    problems.push(format!(
                        "{at}: fold `{}` is not a whole number",
                        cell(&t, row, "fold").unwrap_or("")
                    ));
                    continue;
                }
            };
            if !views.iter().any(|v| v == view) {
                views.push(view.to_string());
            }
            entries.push(ViewEntry {
                line: *line,
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
                split: cell(&t, row, "split").map(String::from),
                fold,
            });
        }
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
            if !missing.is_empty() {
                problems.push(format!(
                    "{shown}: session `{}` is missing view(s) {} (every session needs every view: {}); add the rows or remove the session",
                    s.name,
                    missing.join(", "),
                    views.join(", ")
                ));
            }
            s.views
                .sort_by_key(|v| views.iter().position(|x| *x == v.view));
        }
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

/// How a segment's times are given.
#[derive(Debug, Clone, PartialEq)]
pub enum SegTime {
    /// Seconds on the session timeline, half-open.
    Seconds {
        /// Start.
        start: f64,
        /// End (exclusive).
        end: f64,
    },
    /// Source frame indices of `view` (the session's first view if none), half-open.
    Frames {
        /// First frame.
        start: i64,
        /// One past the last frame.
        end: i64,
        /// `frame_view` column.
        view: Option<String>,
    },
}

/// One labelled segment as written.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    /// Line in the segments file.
    pub line: u64,
    /// Session id.
    pub session: String,
    /// Label.
    pub label: String,
    /// Times.
    pub time: SegTime,
    /// `split` column.
    pub split: Option<String>,
}

/// Validated segments and the class order.
#[derive(Debug, Clone)]
pub struct Segments {
    /// The segments file.
    pub path: PathBuf,
    /// Rows, in file order.
    pub rows: Vec<SegmentEntry>,
    /// Class order: `labels.txt` if given, else sorted unique labels.
    pub labels: Vec<String>,
}

impl Segments {
    /// Read and validate segments against a validated manifest. `labels_txt` (one label
    /// per line) fixes the class order.
    pub fn load(
        path: &Path,
        manifest: &Manifest,
        labels_txt: Option<&Path>,
    ) -> Result<Segments, Vec<String>> {
        let t = TextTable::read(path).map_err(|e| vec![e])?;
        let shown = path.display().to_string();
        let secs = t.col("start_s").is_some() && t.col("end_s").is_some();
        let frames = t.col("start_frame").is_some() && t.col("end_frame").is_some();
        if t.col("session").is_none() || t.col("label").is_none() || !(secs || frames) {
            return Err(vec![format!(
                "{shown}: needs columns session, label and either start_s, end_s (seconds) or \
                 start_frame, end_frame (frames, with optional frame_view); it has: {}",
                t.headers.join(", ")
            )]);
        }
        let sessions: HashMap<&str, &SessionEntry> = manifest
            .sessions
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut problems = Vec::new();
        let mut rows = Vec::new();
        for (line, row) in &t.rows {
            let at = format!("{shown} line {line}");
            let (Some(session), Some(label)) = (cell(&t, row, "session"), cell(&t, row, "label"))
            else {
                problems.push(format!("{at}: session and label must be filled in"));
                continue;
            };
            if !sessions.contains_key(session) {
                problems.push(format!(
                    "{at}: session `{session}` is not in the manifest {}",
                    manifest.path.display()
                ));
                continue;
            }
            let time = if secs && cell(&t, row, "start_s").is_some() {
                let parse = |c: &str| {
                    cell(&t, row, c)
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|v| v.is_finite())
                };
                match (parse("start_s"), parse("end_s")) {
                    (Some(start), Some(end)) if start < end => SegTime::Seconds { start, end },
                    (Some(_), Some(_)) => {
                        problems.push(format!("{at}: start_s must be before end_s"));
                        continue;
                    }
                    _ => {
                        problems.push(format!(
                            "{at}: start_s and end_s must be numbers of seconds"
                        ));
                        continue;
                    }
                }
            } else if frames {
                let parse = |c: &str| cell(&t, row, c).and_then(|v| v.parse::<i64>().ok());
                let view = cell(&t, row, "frame_view").map(String::from);
                if let Some(v) = &view {
                    if !manifest.views.contains(v) {
                        problems.push(format!(
                            "{at}: frame_view `{v}` is not a view of the manifest ({})",
                            manifest.views.join(", ")
                        ));
                        continue;
                    }
                }
                match (parse("start_frame"), parse("end_frame")) {
                    (Some(start), Some(end)) if 0 <= start && start < end => {
                        SegTime::Frames { start, end, view }
                    }
                    (Some(_), Some(_)) => {
                        problems.push(format!(
                            "{at}: need 0 <= start_frame < end_frame (end is exclusive)"
                        ));
                        continue;
                    }
                    _ => {
                        problems.push(format!(
                            "{at}: start_frame and end_frame must be whole numbers"
                        ));
                        continue;
                    }
                }
            } else {
                problems.push(format!("{at}: no start_s/end_s given"));
                continue;
            };
            rows.push(SegmentEntry {
                line: *line,
                session: session.into(),
                label: label.into(),
                time,
                split: cell(&t, row, "split").map(String::from),
            });
        }
        let labels = match labels_txt {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| vec![format!("{}: {e}", p.display())])?;
                let mut labels: Vec<String> = Vec::new();
                for (i, l) in text.lines().enumerate() {
                    let l = l.trim();
                    if l.is_empty() {
                        continue;
                    }
                    if labels.iter().any(|x| x == l) {
                        problems.push(format!(
                            "{} line {}: label `{l}` is listed twice; keep one",
                            p.display(),
                            i + 1
                        ));
                        continue;
                    }
                    labels.push(l.to_string());
                }
                let known: HashSet<&str> = labels.iter().map(String::as_str).collect();
                for r in &rows {
                    if !known.contains(r.label.as_str()) {
                        problems.push(format!(
                            "{shown} line {}: label `{}` is not in {}",
                            r.line,
                            r.label,
                            p.display()
                        ));
                    }
                }
                labels
            }
            None => {
                let set: BTreeMap<&str, ()> = rows.iter().map(|r| (r.label.as_str(), ())).collect();
                set.keys().map(|s| s.to_string()).collect()
            }
        };
        if rows.is_empty() && problems.is_empty() {
            problems.push(format!(
                "{shown}: no segments; add at least one labelled segment"
            ));
        }
        if problems.is_empty() {
            Ok(Segments {
                path: path.to_path_buf(),
                rows,
                labels,
            })
        } else {
            Err(problems)
        }
    }
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
