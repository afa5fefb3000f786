//! `segments.csv`/`.parquet`: labelled time ranges (seconds or source frames) of the
//! sessions of a validated [`Manifest`], and the class order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::manifest::{cell, Manifest, SessionEntry};
use crate::table::TextTable;

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
