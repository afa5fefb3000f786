//! Drive&Act `activities_3s/{view}/*.csv`: the fine-grained activity annotations cut into
//! 3-second chunks, one CSV per camera view, header
//! `participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id`.
//!
//! `file_id` is `vp1/run1b_2018-05-29-14-02-47.kinect_color`: the session and a
//! view-specific suffix after the last dot. Chunks of one `annotation_id` that touch
//! (`frame_end` of one = `frame_start` of the next, or one frame apart) are merged back
//! into one segment. `frame_end` is exclusive: consecutive 90-frame chunks read `0,90` and
//! `90,180`. A session's segments come from one view (`--time-view`, default the first
//! view in view-map order); the other views only add manifest rows.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::table::TextTable;

mod files;

use files::{find_inputs, Input};

use super::{
    absolute, fill_pattern, outside_root_problem, parse_view_map, Ctx, ImportArgs, Imported, Seg,
    Span, ViewRow,
};

/// Drive&Act's camera folders and our view names, in the default view order.
pub(super) const DEFAULT_VIEW_MAP: &[(&str, &str)] = &[
    ("kinect_color", "front"),
    ("kinect_ir", "front_ir"),
    ("kinect_depth", "front_depth"),
    ("inner_mirror", "mirror"),
    ("a_column_driver", "driver_pillar"),
    ("a_column_co_driver", "codriver_pillar"),
    ("ceiling", "ceiling"),
    ("steering_wheel", "wheel"),
];

const DEFAULT_PATTERN: &str = "{view}/{file_id}.mp4";

const COLUMNS: [&str; 6] = [
    "participant_id",
    "file_id",
    "annotation_id",
    "frame_start",
    "frame_end",
    "activity",
];

/// One row.
#[derive(Debug, Clone)]
struct Chunk {
    start: i64,
    end: i64,
    activity: String,
    at: String,
}

/// One (session, view).
struct SessionView {
    session: String,
    view: String,
    view_src: String,
    file_id: String,
    participant: String,
    subject: String,
    split: Option<String>,
    root: PathBuf,
    at: String,
    /// Annotations in order of first appearance.
    anns: Vec<(String, Vec<Chunk>)>,
}

/// The merged annotations of one (session, view): (annotation id, segments).
type MergedAnns = Vec<(String, Vec<Merged>)>;

/// A merged annotation.
#[derive(Debug, Clone, PartialEq)]
struct Merged {
    pub label: String,
    pub start: i64,
    pub end: i64,
    pub at: String,
}

/// `vp1/run1b_2018-05-29-14-02-47.kinect_color` -> (`vp1/run1b_2018-05-29-14-02-47`, `kinect_color`).
pub(super) fn split_file_id(file_id: &str) -> (&str, &str) {
    match file_id.rfind('.') {
        Some(i) if !file_id[i + 1..].contains('/') && i > 0 => (&file_id[..i], &file_id[i + 1..]),
        _ => (file_id, ""),
    }
}

/// Merge touching chunks of one annotation (sorted by start); different activities within
/// one annotation are an error.
fn merge_chunks(chunks: &[Chunk], ann: &str) -> Result<Vec<Merged>, String> {
    let mut sorted: Vec<&Chunk> = chunks.iter().collect();
    sorted.sort_by_key(|c| (c.start, c.end));
    let first = sorted.first().map(|c| (c.activity.as_str(), c.at.as_str()));
    let mut out: Vec<Merged> = Vec::new();
    for c in sorted {
        if let Some((act, at)) = first {
            if c.activity != act {
                return Err(format!(
                    "{}: annotation_id `{ann}` has activity `{}` here but `{act}` at {at}; one activity per annotation",
                    c.at, c.activity
                ));
            }
        }
        match out.last_mut() {
            Some(m) if c.start <= m.end + 1 => m.end = m.end.max(c.end),
            _ => out.push(Merged {
                label: c.activity.clone(),
                start: c.start,
                end: c.end,
                at: c.at.clone(),
            }),
        }
    }
    Ok(out)
}

pub(super) fn import(args: &ImportArgs, ctx: &Ctx) -> Result<Imported, Vec<String>> {
    let level = args.opts.level.as_deref().unwrap_or("midlevel");
    let k = args.opts.split_index.unwrap_or(0);
    let pattern = args
        .opts
        .video_pattern
        .as_deref()
        .unwrap_or(DEFAULT_PATTERN);
    let map: Vec<(String, String)> = match &args.view_map {
        Some(s) => parse_view_map(s).map_err(|e| vec![e])?,
        None => DEFAULT_VIEW_MAP
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    let mut warnings = Vec::new();
    let inputs = find_inputs(&args.sources, level, k, &mut warnings)?;
    let view_name = |src: &str| -> String {
        map.iter()
            .find(|(a, _)| a == src)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| src.to_string())
    };

    let (svs, files_read) = read_inputs(&inputs, &view_name, ctx)?;
    let views = view_order(&map, &svs);
    let vpos = |v: &str| views.iter().position(|(n, _)| n == v).unwrap_or(usize::MAX);
    let time_view = match &args.time_view {
        Some(tv) => match views.iter().find(|(n, s)| n == tv || s == tv) {
            Some((n, _)) => Some(n.clone()),
            None => {
                return Err(vec![format!(
                    "--time-view `{tv}` is not among the views read ({})",
                    views
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )])
            }
        },
        None => None,
    };

    let merged = merge_all(&svs)?;

    let mut out = Imported {
        files: files_read,
        warnings,
        ..Default::default()
    };
    let mut problems = manifest_rows(&svs, pattern, ctx, &vpos, &mut out)?;
    problems.extend(segments(
        &svs,
        &merged,
        time_view.as_deref(),
        level,
        &vpos,
        &mut out,
    ));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Read the rows of every input into (session, view) groups; returns them and the number
/// of files read.
fn read_inputs(
    inputs: &[Input],
    view_name: &dyn Fn(&str) -> String,
    ctx: &Ctx,
) -> Result<(Vec<SessionView>, usize), Vec<String>> {
    let mut problems = Vec::new();
    let mut svs: Vec<SessionView> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut files_read = 0;
    for inp in inputs {
        let view = view_name(&inp.view_src);
        if !ctx.keep_view(&view) {
            continue;
        }
        files_read += 1;
        let shown = inp.file.display().to_string();
        let csv = match TextTable::read_ragged(&inp.file) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let cols: Vec<Option<usize>> = COLUMNS.iter().map(|c| csv.col_any(&[c])).collect();
        let missing: Vec<&str> = COLUMNS
            .iter()
            .zip(&cols)
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{shown}: missing column(s) {} (a Drive&Act activities file has participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id; it has {})",
                missing.join(", "),
                csv.headers.join(",")
            ));
            continue;
        }
        let c: Vec<usize> = cols.into_iter().flatten().collect();
        let groups = Groups {
            svs: &mut svs,
            index: &mut index,
        };
        read_rows(inp, &view, &csv, &c, groups, &mut problems);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((svs, files_read))
}

/// The (session, view) groups being built, and where each key sits.
struct Groups<'a> {
    svs: &'a mut Vec<SessionView>,
    index: &'a mut HashMap<(String, String), usize>,
}

/// Read one CSV's rows (columns `c` in [`COLUMNS`] order) of view `view` into `g`.
fn read_rows(
    inp: &Input,
    view: &str,
    csv: &TextTable,
    c: &[usize],
    g: Groups<'_>,
    problems: &mut Vec<String>,
) {
    let Groups { svs, index } = g;
    let shown = inp.file.display().to_string();
    for (line, row) in &csv.rows {
        let at = format!("{shown} line {line}");
        let cell = |i: usize| row[c[i]].as_str();
        let (participant, file_id, ann, activity) = (cell(0), cell(1), cell(2), cell(5));
        if participant.is_empty() || file_id.is_empty() || ann.is_empty() || activity.is_empty() {
            problems.push(format!(
                "{at}: participant_id, file_id, annotation_id and activity must all be filled in"
            ));
            continue;
        }
        let frame = |i: usize| cell(i).parse::<i64>().ok().filter(|f| *f >= 0);
        let (start, end) = match (frame(3), frame(4)) {
            (Some(s), Some(e)) if e > s => (s, e),
            (Some(s), Some(e)) => {
                problems.push(format!("{at}: frame_end {e} must be after frame_start {s}"));
                continue;
            }
            _ => {
                problems.push(format!(
                    "{at}: frame_start `{}` and frame_end `{}` must be whole frame numbers >= 0",
                    cell(3),
                    cell(4)
                ));
                continue;
            }
        };
        let (session, _) = split_file_id(file_id);
        let subject = if participant.starts_with("vp") {
            participant.to_string()
        } else {
            format!("vp{participant}")
        };
        let key = (session.to_string(), view.to_string());
        let i = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key, svs.len());
                svs.push(SessionView {
                    session: session.to_string(),
                    view: view.to_string(),
                    view_src: inp.view_src.clone(),
                    file_id: file_id.to_string(),
                    participant: participant.to_string(),
                    subject: subject.clone(),
                    split: inp.split.clone(),
                    root: inp.root.clone(),
                    at: at.clone(),
                    anns: Vec::new(),
                });
                svs.len() - 1
            }
        };
        let sv = &mut svs[i];
        if sv.file_id != file_id {
            problems.push(format!(
            "{at}: session `{}` view `{view}` has file_id `{file_id}` here but `{}` at {}; one video per session and view",
            sv.session, sv.file_id, sv.at
        ));
            continue;
        }
        if sv.subject != subject {
            problems.push(format!(
                "{at}: session `{}` has participant_id `{participant}` here but `{}` at {}",
                sv.session, sv.participant, sv.at
            ));
            continue;
        }
        if sv.split != inp.split {
            problems.push(format!(
                "{at}: session `{}` is in split {} here but {} at {}; one split per session",
                sv.session,
                inp.split.as_deref().unwrap_or("(none)"),
                sv.split.as_deref().unwrap_or("(none)"),
                sv.at
            ));
            continue;
        }
        let chunk = Chunk {
            start,
            end,
            activity: activity.to_string(),
            at,
        };
        match sv.anns.iter_mut().find(|(a, _)| a == ann) {
            Some((_, v)) => v.push(chunk),
            None => sv.anns.push((ann.to_string(), vec![chunk])),
        }
    }
}

/// View order: the view map's order, then the others as found; (name, source folder).
fn view_order(map: &[(String, String)], svs: &[SessionView]) -> Vec<(String, String)> {
    let mut views: Vec<(String, String)> = Vec::new(); // (name, src)
    for (src, name) in map {
        if svs.iter().any(|s| s.view_src == *src) && !views.iter().any(|(n, _)| n == name) {
            views.push((name.clone(), src.clone()));
        }
    }
    for s in svs {
        if !views.iter().any(|(n, _)| *n == s.view) {
            views.push((s.view.clone(), s.view_src.clone()));
        }
    }
    views
}

/// Merge the chunks of every annotation of every (session, view).
fn merge_all(svs: &[SessionView]) -> Result<Vec<MergedAnns>, Vec<String>> {
    let mut problems = Vec::new();
    let mut merged: Vec<MergedAnns> = Vec::with_capacity(svs.len());
    for sv in svs {
        let mut m = Vec::new();
        for (ann, chunks) in &sv.anns {
            match merge_chunks(chunks, ann) {
                Ok(x) => m.push((ann.clone(), x)),
                Err(e) => problems.push(e),
            }
        }
        merged.push(m);
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    Ok(merged)
}

/// Sessions in order of first appearance.
fn session_order(svs: &[SessionView]) -> Vec<&str> {
    let mut order: Vec<&str> = Vec::new();
    for sv in svs {
        if !order.contains(&sv.session.as_str()) {
            order.push(&sv.session);
        }
    }
    order
}

/// Manifest rows (videos from `pattern`), in session then view order; the problems of
/// videos outside the data root.
fn manifest_rows(
    svs: &[SessionView],
    pattern: &str,
    ctx: &Ctx,
    vpos: &dyn Fn(&str) -> usize,
    out: &mut Imported,
) -> Result<Vec<String>, Vec<String>> {
    // Manifest rows.
    let mut videos: Vec<(usize, PathBuf)> = Vec::new();
    for (i, sv) in svs.iter().enumerate() {
        let values = [
            ("view", sv.view_src.as_str()),
            ("name", sv.view.as_str()),
            ("file_id", sv.file_id.as_str()),
            ("session", sv.session.as_str()),
            ("participant", sv.participant.as_str()),
        ];
        match fill_pattern(pattern, &values) {
            Ok(rel) => videos.push((i, absolute(&sv.root.join(rel)))),
            Err(e) => return Err(vec![e]),
        }
    }
    let all: Vec<PathBuf> = videos.iter().map(|(_, p)| p.clone()).collect();
    let mut outside = Vec::new();
    for (i, path) in &videos {
        let sv = &svs[*i];
        match ctx.video_rel(path) {
            Ok(video) => out.views.push(ViewRow {
                session: sv.session.clone(),
                subject: sv.subject.clone(),
                view: sv.view.clone(),
                video,
                offset_s: None,
                split: sv.split.clone(),
                at: sv.at.clone(),
            }),
            Err(e) => outside.push((sv.at.clone(), e)),
        }
    }
    let problems = outside_root_problem(&outside, &all).into_iter().collect();
    // Keep the manifest in view order within a session.
    out.views.sort_by_key(|v| vpos(&v.view));
    let session_order = session_order(svs);
    out.views.sort_by_key(|v| {
        session_order
            .iter()
            .position(|s| *s == v.session)
            .unwrap_or(usize::MAX)
    });

    Ok(problems)
}

/// Segments from the time view (`time_view`, default the first view in `vpos` order) of
/// each session; a warning per other view whose annotations differ.
fn segments(
    svs: &[SessionView],
    merged: &[MergedAnns],
    time_view: Option<&str>,
    level: &str,
    vpos: &dyn Fn(&str) -> usize,
    out: &mut Imported,
) -> Vec<String> {
    let mut problems = Vec::new();
    let session_order = session_order(svs);
    // Segments from the time view; compare the others.
    let mut differ: HashMap<&str, (usize, usize, String)> = HashMap::new();
    for s in &session_order {
        let mine: Vec<usize> = (0..svs.len()).filter(|&i| svs[i].session == *s).collect();
        let chosen = match &time_view {
            Some(tv) => mine.iter().copied().find(|&i| svs[i].view == *tv),
            None => mine.iter().copied().min_by_key(|&i| vpos(&svs[i].view)),
        };
        let Some(t) = chosen else {
            let tv = time_view.unwrap_or("");
            problems.push(format!(
                "{}: session `{s}` has no annotations in view `{tv}` (--time-view); pick a view every session has",
                svs[mine[0]].at
            ));
            continue;
        };
        for (ann, segs) in &merged[t] {
            for m in segs {
                out.segs.push(Seg {
                    session: s.to_string(),
                    label: m.label.clone(),
                    span: Span::Frames {
                        start: m.start,
                        end: m.end,
                        view: svs[t].view.clone(),
                    },
                    at: m.at.clone(),
                    group: level.to_string(),
                });
            }
            for &o in mine.iter().filter(|&&o| o != t) {
                let other = merged[o].iter().find(|(a, _)| a == ann).map(|(_, m)| m);
                let same = other.is_some_and(|om| {
                    om.len() == segs.len()
                        && om.iter().zip(segs).all(|(x, y)| {
                            (x.start - y.start).abs() <= 2 && (x.end - y.end).abs() <= 2
                        })
                });
                let e = differ.entry(&svs[o].view).or_insert((0, 0, String::new()));
                e.1 += 1;
                if !same {
                    e.0 += 1;
                    if e.2.is_empty() {
                        e.2 = format!("session `{s}` annotation_id `{ann}`");
                    }
                }
            }
        }
    }
    let mut differ: Vec<_> = differ.into_iter().filter(|(_, d)| d.0 > 0).collect();
    differ.sort_by_key(|(v, _)| vpos(v));
    for (view, (n, total, example)) in differ {
        out.warnings.push(format!(
            "view `{view}`: {n} of {total} annotations differ from the time view by more than 2 frames or are missing (e.g. {example}); segments use the time view's frames"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(start: i64, end: i64, act: &str) -> Chunk {
        Chunk {
            start,
            end,
            activity: act.into(),
            at: format!("line {start}"),
        }
    }

    #[test]
    fn file_ids_split_into_session_and_view() {
        assert_eq!(
            split_file_id("vp1/run1b_2018-05-29-14-02-47.kinect_color"),
            ("vp1/run1b_2018-05-29-14-02-47", "kinect_color")
        );
        assert_eq!(split_file_id("vp1/run1.ids_1"), ("vp1/run1", "ids_1"));
        assert_eq!(split_file_id("vp1/run1"), ("vp1/run1", ""));
    }

    #[test]
    fn touching_chunks_merge_and_gaps_split() {
        let m = merge_chunks(
            &[c(90, 180, "eat"), c(0, 90, "eat"), c(300, 390, "eat")],
            "7",
        )
        .unwrap();
        assert_eq!(
            m.iter().map(|x| (x.start, x.end)).collect::<Vec<_>>(),
            vec![(0, 180), (300, 390)]
        );
        // Inclusive-end style chunks (0-89, 90-179) merge too.
        let m = merge_chunks(&[c(0, 89, "eat"), c(90, 179, "eat")], "7").unwrap();
        assert_eq!((m.len(), m[0].end), (1, 179));
        assert!(merge_chunks(&[c(0, 90, "eat"), c(90, 180, "drink")], "7")
            .unwrap_err()
            .contains("one activity per annotation"));
    }
}
