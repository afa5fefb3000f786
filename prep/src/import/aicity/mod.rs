//! AI City Challenge Track 3 (naturalistic driving action recognition) user CSVs:
//! `Filename, Camera View, Activity Type, Start Time, End Time, Label (Primary),
//! Appearance Block` (spaces, a BOM and stray whitespace tolerated; the 2022 headers
//! `User ID` and `Label/Class ID` too).
//!
//! A blank Filename, Camera View, Appearance Block, User ID or Activity Type cell repeats
//! the cell above (a blank Camera View on a row that starts a new Filename is read from the
//! file name's prefix instead). Times are `H:MM:SS`, `MM:SS` or seconds, with an optional
//! fraction. `Class N` (or `N`) becomes `class_N` or the `--labels-map` name; `NA` rows
//! are dropped (the background label fills them when `--background` is given).
//!
//! Session = `user_<id>_block<N>` where `<id>` is the user id in the file name and `<N>`
//! the number that ends the file name (`Dashboard_user_id_24026_NoAudio_3` -> block 3),
//! shared by the three camera views of one recording. A session's segments come from one
//! view (`--time-view`, default the first listed); views that disagree by more than 1 s
//! are reported as warnings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::table::TextTable;

mod fields;

use fields::{
    block_of, name_string, normalize_view, parse_label, parse_time, read_labels_map, user_id_in,
    video_file, view_from_filename,
};

use super::{
    absolute, collect_files, outside_root_problem, parse_view_map, Ctx, ImportArgs, Imported, Seg,
    Span, ViewRow,
};

const GROUP: &str = "activity";

/// (session, view, indices of its rows).
type Group = (String, String, Vec<usize>);

/// A row after blank cells were filled in.
#[derive(Debug, Clone)]
struct Row {
    session: String,
    subject: String,
    view: String,
    filename: String,
    dir: PathBuf,
    start: f64,
    end: f64,
    /// None for `NA`.
    class: Option<u32>,
    at: String,
}

pub(super) fn import(args: &ImportArgs, ctx: &Ctx) -> Result<Imported, Vec<String>> {
    let ext = match args.opts.video_ext.as_deref().map(str::trim) {
        None => ".MP4".to_string(),
        Some(e) if e.starts_with('.') => e.to_string(),
        Some(e) => format!(".{e}"),
    };
    let map: Vec<(String, String)> = match &args.view_map {
        Some(s) => parse_view_map(s)
            .map_err(|e| vec![e])?
            .into_iter()
            .map(|(a, b)| (normalize_view(&a), b))
            .collect(),
        None => Vec::new(),
    };
    let names = match &args.opts.labels_map {
        Some(p) => Some(read_labels_map(p)?),
        None => None,
    };
    let files = collect_files(&args.sources, true, &|p: &Path| {
        p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
            && !matches!(
                p.file_name().and_then(|n| n.to_str()),
                Some("manifest.csv" | "segments.csv")
            )
    })?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut read = 0;
    for (file, explicit) in &files {
        let csv = match TextTable::read_ragged(file) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        match columns(&csv, file) {
            Ok(cols) => {
                read += 1;
                read_rows(&csv, file, &cols, &map, ctx, &mut rows, &mut problems);
            }
            Err(msg) if *explicit => problems.push(msg),
            Err(msg) => warnings.push(format!("{msg}; skipped")),
        }
    }
    if read == 0 && problems.is_empty() {
        problems.push(
            "no AI City user CSV among the sources (none has the Filename, Camera View, Start Time, End Time, Label (Primary) header)"
                .into(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let groups = group_rows(&rows)?;
    let mut out = Imported {
        files: read,
        warnings,
        ..Default::default()
    };
    problems.extend(manifest_rows(&groups, &rows, &ext, ctx, &mut out));
    problems.extend(segments(args, &groups, &rows, names.as_ref(), &mut out));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The columns of an AI City user CSV.
struct Cols {
    file: usize,
    view: usize,
    start: usize,
    end: usize,
    label: usize,
    block: Option<usize>,
    user: Option<usize>,
}

/// Find the columns of `csv`; the message when a required one is missing.
fn columns(csv: &TextTable, file: &Path) -> Result<Cols, String> {
    let shown = file.display().to_string();
    let col_file = csv.col_any(&["Filename", "File Name", "Video"]);
    let col_view = csv.col_any(&["Camera View", "View"]);
    let col_start = csv.col_any(&["Start Time"]);
    let col_end = csv.col_any(&["End Time"]);
    let col_label = csv.col_any(&["Label (Primary)", "Label/Class ID", "Label", "Class"]);
    let col_block = csv.col_any(&["Appearance Block"]);
    let col_user = csv.col_any(&["User ID"]);
    match (col_file, col_view, col_start, col_end, col_label) {
        (Some(file), Some(view), Some(start), Some(end), Some(label)) => Ok(Cols {
            file,
            view,
            start,
            end,
            label,
            block: col_block,
            user: col_user,
        }),
        _ => {
            let required = [
                ("Filename", col_file),
                ("Camera View", col_view),
                ("Start Time", col_start),
                ("End Time", col_end),
                ("Label (Primary)", col_label),
            ];
            let missing: Vec<&str> = required
                .iter()
                .filter(|(_, c)| c.is_none())
                .map(|(n, _)| *n)
                .collect();
            Err(format!(
                    "{shown}: missing column(s) {} (an AI City user CSV has Filename, Camera View, Activity Type, Start Time, End Time, Label (Primary), Appearance Block; it has {})",
                    missing.join(", "),
                    csv.headers.join(", ")
                ))
        }
    }
}

/// Read the rows of one CSV into `rows` (blank cells repeat the cell above).
fn read_rows(
    csv: &TextTable,
    file: &Path,
    cols: &Cols,
    map: &[(String, String)],
    ctx: &Ctx,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let shown = file.display().to_string();
    let (cf, cv, cs, ce, cl) = (cols.file, cols.view, cols.start, cols.end, cols.label);
    let (col_block, col_user) = (cols.block, cols.user);
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let file_user = user_id_in(&name_string(file));
    let (mut filename, mut camera, mut block, mut user) =
        (String::new(), String::new(), String::new(), String::new());
    for (line, row) in &csv.rows {
        let at = format!("{shown} line {line}");
        let cell = |c: usize| row.get(c).map(String::as_str).unwrap_or("");
        let new_file = !cell(cf).is_empty();
        if new_file {
            filename = cell(cf).to_string();
        }
        if !cell(cv).is_empty() {
            camera = cell(cv).to_string();
        } else if new_file {
            if let Some(v) = view_from_filename(&filename) {
                camera = v;
            }
        }
        if let Some(c) = col_block.filter(|&c| !cell(c).is_empty()) {
            block = cell(c).to_string();
        }
        if let Some(c) = col_user.filter(|&c| !cell(c).is_empty()) {
            user = cell(c).to_string();
        }
        if filename.is_empty() {
            problems.push(format!(
                "{at}: no Filename on this row or any row above; fill in the video's file name"
            ));
            continue;
        }
        if camera.is_empty() {
            problems.push(format!(
                "{at}: no Camera View on this row or any row above; fill it in (Dashboard, Rear_view, Right_side_window)"
            ));
            continue;
        }
        let (start, end) = match (parse_time(cell(cs)), parse_time(cell(ce))) {
            (Some(s), Some(e)) => (s, e),
            (s, _) => {
                let (name, v) = if s.is_none() {
                    ("Start Time", cell(cs))
                } else {
                    ("End Time", cell(ce))
                };
                problems.push(format!(
                    "{at}: {name} `{v}` is not a time; write H:MM:SS, MM:SS or seconds"
                ));
                continue;
            }
        };
        let class = match parse_label(cell(cl)) {
            Ok(c) => c,
            Err(()) => {
                problems.push(format!(
                    "{at}: Label (Primary) `{}` is neither `Class N` nor `NA`; fix the cell",
                    cell(cl)
                ));
                continue;
            }
        };
        let uid = if user.is_empty() {
            user_id_in(&filename).or_else(|| file_user.clone())
        } else {
            let d: String = user.chars().filter(char::is_ascii_digit).collect();
            (!d.is_empty()).then_some(d)
        };
        let Some(uid) = uid else {
            problems.push(format!(
                "{at}: no user id in Filename `{filename}` (expected `..._user_id_<digits>_...`) nor in the CSV's name; fix the file name"
            ));
            continue;
        };
        let session = match block_of(&filename) {
            Some(n) => format!("user_{uid}_block{n}"),
            None => {
                let slug = normalize_view(&block);
                if slug.is_empty() {
                    format!("user_{uid}")
                } else {
                    format!("user_{uid}_{slug}")
                }
            }
        };
        let norm = normalize_view(&camera);
        let view = map
            .iter()
            .find(|(a, _)| *a == norm)
            .map(|(_, b)| b.clone())
            .unwrap_or(norm);
        if !ctx.keep_view(&view) {
            continue;
        }
        if end < start {
            problems.push(format!(
                "{at}: End Time {} is before Start Time {}; fix the times",
                cell(ce),
                cell(cs)
            ));
            continue;
        }
        rows.push(Row {
            session,
            subject: format!("user_{uid}"),
            view,
            filename: filename.clone(),
            dir: dir.clone(),
            start,
            end,
            class,
            at,
        });
    }
}

/// Rows grouped by (session, view), in order of appearance: one video each.
fn group_rows(rows: &[Row]) -> Result<Vec<Group>, Vec<String>> {
    let mut problems = Vec::new();
    let mut groups: Vec<(String, String, Vec<usize>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|(s, v, _)| *s == r.session && *v == r.view)
        {
            Some((_, _, idx)) => {
                let first = &rows[idx[0]];
                if !first.filename.eq_ignore_ascii_case(&r.filename) || first.dir != r.dir {
                    problems.push(format!(
                        "{}: session `{}` view `{}` is video `{}` here but `{}` at {}; one video per session and view",
                        r.at, r.session, r.view, r.filename, first.filename, first.at
                    ));
                    continue;
                }
                idx.push(i);
            }
            None => groups.push((r.session.clone(), r.view.clone(), vec![i])),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    Ok(groups)
}

/// Manifest rows of the groups; the problems of videos outside the data root.
fn manifest_rows(
    groups: &[Group],
    rows: &[Row],
    ext: &str,
    ctx: &Ctx,
    out: &mut Imported,
) -> Vec<String> {
    let paths: Vec<PathBuf> = groups
        .iter()
        .map(|(_, _, idx)| {
            let r = &rows[idx[0]];
            absolute(&video_file(&r.dir, &r.filename, ext))
        })
        .collect();
    let mut outside = Vec::new();
    for ((session, view, idx), path) in groups.iter().zip(&paths) {
        let r = &rows[idx[0]];
        match ctx.video_rel(path) {
            Ok(video) => out.views.push(ViewRow {
                session: session.clone(),
                subject: r.subject.clone(),
                view: view.clone(),
                video,
                offset_s: None,
                split: None,
                at: r.at.clone(),
            }),
            Err(e) => outside.push((r.at.clone(), e)),
        }
    }
    outside_root_problem(&outside, &paths).into_iter().collect()
}

/// Segments from one view per session (`--time-view`, default the first), and warnings
/// where the other views disagree.
fn segments(
    args: &ImportArgs,
    groups: &[Group],
    rows: &[Row],
    names: Option<&HashMap<u32, String>>,
    out: &mut Imported,
) -> Vec<String> {
    let mut problems = Vec::new();
    let label_of = |c: u32, at: &str| -> Result<String, String> {
        match &names {
            None => Ok(format!("class_{c}")),
            Some(m) => m.get(&c).cloned().ok_or_else(|| {
                format!(
                    "{at}: class {c} has no name in {}; add `{c},name` there",
                    args.opts
                        .labels_map
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            }),
        }
    };

    let mut sessions: Vec<&str> = Vec::new();
    for (s, _, _) in groups {
        if !sessions.contains(&s.as_str()) {
            sessions.push(s);
        }
    }
    let labelled = |idx: &[usize]| -> Vec<usize> {
        let mut v: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| rows[i].class.is_some())
            .collect();
        v.sort_by(|&a, &b| rows[a].start.total_cmp(&rows[b].start));
        v
    };
    for s in sessions {
        let mine: Vec<&(String, String, Vec<usize>)> =
            groups.iter().filter(|(x, _, _)| x == s).collect();
        let chosen = match &args.time_view {
            Some(tv) => {
                let tvn = normalize_view(tv);
                match mine.iter().find(|(_, v, _)| v == tv || *v == tvn) {
                    Some(g) => *g,
                    None => {
                        problems.push(format!(
                            "{}: session `{s}` has no view `{tv}` (--time-view); its views are {}",
                            rows[mine[0].2[0]].at,
                            mine.iter()
                                .map(|(_, v, _)| v.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        continue;
                    }
                }
            }
            None => mine[0],
        };
        let base = labelled(&chosen.2);
        for &i in &base {
            let r = &rows[i];
            let Some(c) = r.class else { continue };
            let label = match label_of(c, &r.at) {
                Ok(l) => l,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let mut end = r.end;
            if end <= r.start {
                out.warnings.push(format!(
                    "{}: Start Time equals End Time; read as the one second {}-{} s",
                    r.at,
                    super::num(r.start),
                    super::num(r.start + 1.0)
                ));
                end = r.start + 1.0;
            }
            out.segs.push(Seg {
                session: s.to_string(),
                label,
                span: Span::Seconds {
                    start: r.start,
                    end,
                },
                at: r.at.clone(),
                group: GROUP.into(),
            });
        }
        // The other views should carry the same activities at about the same times.
        for g in mine.iter().filter(|g| !std::ptr::eq(**g, chosen)) {
            let other = labelled(&g.2);
            if other.len() != base.len() {
                out.warnings.push(format!(
                    "session `{s}`: view `{}` lists {} activities but `{}` lists {} ({}); segments use `{}`",
                    g.1,
                    other.len(),
                    chosen.1,
                    base.len(),
                    rows[g.2[0]].at,
                    chosen.1
                ));
                continue;
            }
            for (&a, &b) in base.iter().zip(&other) {
                let (ra, rb) = (&rows[a], &rows[b]);
                if (ra.start - rb.start).abs() > 1.0
                    || (ra.end - rb.end).abs() > 1.0
                    || ra.class != rb.class
                {
                    out.warnings.push(format!(
                        "{}: view `{}` has class {:?} at {}-{} s but `{}` has class {:?} at {}-{} s ({}): more than 1 s apart or a different class; segments use `{}`",
                        rb.at,
                        g.1,
                        rb.class.unwrap_or_default(),
                        super::num(rb.start),
                        super::num(rb.end),
                        chosen.1,
                        ra.class.unwrap_or_default(),
                        super::num(ra.start),
                        super::num(ra.end),
                        ra.at,
                        chosen.1
                    ));
                }
            }
        }
    }
    problems
}
