//! `segments.csv`/`.parquet`: labelled time ranges (seconds or source frames) of the
//! sessions of a validated [`Manifest`], and the class order; and their mapping onto the
//! session timelines of a build ([`map_segments`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use mvdrive_schemas::index::SegmentRow;

use crate::job::Job;
use crate::manifest::{cell, Manifest, SessionEntry};
use crate::pipeline::{BuildSummary, SessionPlan};
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
    /// No segments and no classes: a cache of unlabelled recordings.
    pub fn none() -> Segments {
        Segments {
            path: PathBuf::from("(no segments file)"),
            rows: Vec::new(),
            labels: Vec::new(),
        }
    }

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

/// The video that bounds the timeline on the side a segment `start..end` falls off: the
/// view starting last (segment too early) or ending first (too late), with its header's
/// span; empty when no job is known.
fn limiting_video(jobs: &[Job], start: f64, end: f64) -> String {
    let span = |j: &Job| (j.entry.offset_s, j.entry.offset_s + j.info.duration_s);
    let late_start = jobs.iter().max_by(|a, b| span(a).0.total_cmp(&span(b).0));
    let early_end = jobs.iter().min_by(|a, b| span(a).1.total_cmp(&span(b).1));
    let pick = match (late_start, early_end) {
        (Some(a), _) if start < span(a).0 => Some(a),
        (_, Some(b)) if end > span(b).1 => Some(b),
        (_, b) => b,
    };
    pick.map(|j| {
        let (a, b) = span(j);
        format!(
            "; view `{}` ({}) covers {a:.3}-{b:.3} s by its header",
            j.entry.view,
            j.entry.path.display()
        )
    })
    .unwrap_or_default()
}

/// Map segments onto the session timelines: one row per segment of a planned session.
pub(crate) fn map_segments(
    segments: &Segments,
    manifest: &Manifest,
    plans: &BTreeMap<String, SessionPlan>,
    summary: &mut BuildSummary,
    problems: &mut Vec<String>,
) -> Vec<SegmentRow> {
    let mut seg_rows: Vec<SegmentRow> = Vec::new();
    let label_id: HashMap<&str, u32> = segments
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    let seg_file = segments.path.display().to_string();
    for seg in &segments.rows {
        let Some(plan) = plans.get(&seg.session) else {
            continue; // the session is skipped (reported) or has a timeline problem (reported)
        };
        let (start, end) = match &seg.time {
            SegTime::Seconds { start, end } => (*start, *end),
            SegTime::Frames { start, end, view } => {
                let job = match view {
                    Some(v) => plan.jobs.iter().find(|j| &j.entry.view == v),
                    None => plan.jobs.first(),
                };
                let Some(job) = job else {
                    problems.push(format!(
                        "{seg_file} line {}: frame_view `{}` is not a view of session `{}` (it lacks that camera); count the frames in a view it has",
                        seg.line,
                        view.as_deref().unwrap_or(""),
                        seg.session
                    ));
                    continue;
                };
                let f = job.info.fps;
                (
                    job.entry.offset_s + *start as f64 / f,
                    job.entry.offset_s + *end as f64 / f,
                )
            }
        };
        let tl = &plan.timeline;
        let range = tl.frame_range(start, end);
        if range.is_empty() {
            problems.push(format!(
                "{seg_file} line {}: segment {start:.3}-{end:.3} s of session `{}` lies outside its video timeline ({:.3}-{:.3} s, where all views overlap{}); fix the times, the views' offset_s, or the video",
                seg.line,
                seg.session,
                tl.start_s,
                tl.end_s(),
                limiting_video(&plan.jobs, start, end)
            ));
            continue;
        }
        if start < tl.start_s - 1e-6 || end > tl.end_s() + 1e-6 {
            summary.warnings.push(format!(
                "{seg_file} line {}: segment {start:.3}-{end:.3} s of session `{}` was clipped to the timeline {:.3}-{:.3} s",
                seg.line, seg.session, tl.start_s, tl.end_s()
            ));
        }
        let sess = manifest.sessions.iter().find(|s| s.name == seg.session);
        seg_rows.push(SegmentRow {
            segment_id: seg_rows.len() as u64,
            session: seg.session.clone(),
            label: seg.label.clone(),
            label_id: label_id[seg.label.as_str()],
            start_s: start,
            end_s: end,
            frame_start: range.start,
            frame_end: range.end,
            split: seg
                .split
                .clone()
                .or_else(|| sess.and_then(|s| s.split.clone())),
            source_row: seg.line,
        });
    }
    seg_rows
}

/// One warning per pair of segments of a session whose timeline frames overlap (allowed:
/// multi-label annotations overlap, but it is often a mistake).
pub(crate) fn overlap_warnings(rows: &[SegmentRow], file: &str) -> Vec<String> {
    let mut by_session: BTreeMap<&str, Vec<&SegmentRow>> = BTreeMap::new();
    for r in rows {
        by_session.entry(&r.session).or_default().push(r);
    }
    let mut out = Vec::new();
    for list in by_session.values_mut() {
        list.sort_by_key(|r| (r.frame_start, r.frame_end));
        for w in list.windows(2) {
            if w[1].frame_start < w[0].frame_end {
                out.push(format!(
                    "{file} lines {} and {}: segments `{}` and `{}` of session `{}` overlap",
                    w[0].source_row, w[1].source_row, w[0].label, w[1].label, w[0].session
                ));
            }
        }
    }
    out
}
