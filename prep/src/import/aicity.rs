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

use super::{
    absolute, collect_files, outside_root_problem, parse_view_map, Ctx, ImportArgs, Imported, Seg,
    Span, ViewRow,
};

const GROUP: &str = "activity";

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

/// `H:MM:SS`, `MM:SS` or seconds (fractions allowed) -> seconds.
pub(super) fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let parts: Vec<&str> = s.split(':').map(str::trim).collect();
    let whole = |p: &str| -> Option<f64> {
        (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            .then(|| p.parse::<f64>().ok())
            .flatten()
    };
    let secs = |p: &str| -> Option<f64> {
        let ok = !p.is_empty()
            && p.chars().all(|c| c.is_ascii_digit() || c == '.')
            && p.chars().filter(|c| *c == '.').count() <= 1
            && !p.starts_with('.');
        ok.then(|| p.parse::<f64>().ok()).flatten()
    };
    let t = match parts.as_slice() {
        [s] => secs(s)?,
        [m, s] => {
            let s = secs(s).filter(|s| *s < 60.0)?;
            whole(m)? * 60.0 + s
        }
        [h, m, s] => {
            let s = secs(s).filter(|s| *s < 60.0)?;
            let m = whole(m).filter(|m| *m < 60.0)?;
            whole(h)? * 3600.0 + m * 60.0 + s
        }
        _ => return None,
    };
    t.is_finite().then_some(t)
}

/// `Class 3` / `class_3` / `3` -> Some(3); `NA` -> None; anything else is an error.
pub(super) fn parse_label(s: &str) -> Result<Option<u32>, ()> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("na") || t.eq_ignore_ascii_case("n/a") {
        return Ok(None);
    }
    let lower = t.to_ascii_lowercase();
    let rest = lower.strip_prefix("class").unwrap_or(&lower);
    let rest = rest.trim().trim_start_matches(['_', '-', ' ']);
    rest.parse::<u32>().map(Some).map_err(|_| ())
}

/// A camera view name in our form: lower case, `_` between words, known spellings merged.
pub(super) fn normalize_view(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    match out.as_str() {
        "rearview" | "rear" | "rear_view_mirror" => "rear_view".into(),
        "rightside_window" | "right_side" | "rightside" | "right" | "right_window" => {
            "right_side_window".into()
        }
        "dash" | "dashboard_camera" => "dashboard".into(),
        _ => out,
    }
}

/// The digits that follow `user_id_` (any case) in `s`.
fn user_id_in(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let i = lower
        .find("user_id_")
        .map(|i| i + "user_id_".len())
        .or_else(|| lower.find("userid_").map(|i| i + "userid_".len()))?;
    let digits: String = lower[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// The number that ends a file name (`..._NoAudio_3` -> 3), extension ignored.
fn block_of(filename: &str) -> Option<String> {
    let stem = match filename.rsplit_once('.') {
        Some((s, ext)) if ext.chars().all(char::is_alphanumeric) && ext.len() <= 4 => s,
        _ => filename,
    };
    let (_, last) = stem.rsplit_once('_')?;
    (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit())).then(|| last.to_string())
}

/// The view a file name starts with (`Rear_view_user_id_1_NoAudio_0` -> `rear_view`).
fn view_from_filename(filename: &str) -> Option<String> {
    let lower = filename.to_ascii_lowercase();
    let i = lower.find("_user")?;
    let v = normalize_view(&filename[..i]);
    (!v.is_empty()).then_some(v)
}

/// `--labels-map`: `N,name` (or `Class N,name`) lines, or one name per line from class 0.
fn read_labels_map(path: &Path) -> Result<HashMap<u32, String>, Vec<String>> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: cannot be read: {e}")])?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().trim_start_matches('\u{feff}')))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let keyed = lines.iter().any(|(_, l)| l.contains(','));
    let mut map = HashMap::new();
    let mut problems = Vec::new();
    for (k, (n, l)) in lines.iter().enumerate() {
        let (class, name) = if keyed {
            let Some((key, name)) = l.split_once(',') else {
                problems.push(format!(
                    "{shown} line {n}: expected `N,name` like the other lines"
                ));
                continue;
            };
            match parse_label(key) {
                Ok(Some(c)) => (c, name.trim()),
                _ => {
                    // A header line such as `id,name` is skipped.
                    if k == 0 {
                        continue;
                    }
                    problems.push(format!(
                        "{shown} line {n}: `{}` is not a class number (write `3,texting_right` or `Class 3,texting_right`)",
                        key.trim()
                    ));
                    continue;
                }
            }
        } else {
            (k as u32, *l)
        };
        if name.is_empty() {
            problems.push(format!("{shown} line {n}: the class name is empty"));
            continue;
        }
        if map.insert(class, name.to_string()).is_some() {
            problems.push(format!("{shown} line {n}: class {class} is named twice"));
        }
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(problems)
    }
}

/// The video file of `filename` in `dir`: `filename + ext`; when absent, a file of the
/// folder with that name in another letter case, or with `_NoAudio` before the block
/// number (`Dashboard_user_id_1_0` -> `Dashboard_user_id_1_NoAudio_0`).
fn video_file(dir: &Path, filename: &str, ext: &str) -> PathBuf {
    let lower = filename.to_ascii_lowercase();
    let stem = if lower.ends_with(&ext.to_ascii_lowercase()) {
        &filename[..filename.len() - ext.len()]
    } else {
        filename
    };
    let name = format!("{stem}{ext}");
    let exact = dir.join(&name);
    if exact.is_file() {
        return exact;
    }
    let mut wanted = vec![name.clone()];
    if let Some((head, block)) = stem.rsplit_once('_') {
        if !head.to_ascii_lowercase().ends_with("_noaudio") {
            wanted.push(format!("{head}_NoAudio_{block}{ext}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for w in &wanted {
            for p in &files {
                let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
                if n.is_some_and(|n| n.eq_ignore_ascii_case(w)) && p.is_file() {
                    return p.clone();
                }
            }
        }
    }
    exact
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
        let shown = file.display().to_string();
        let csv = match TextTable::read_ragged(file) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let col_file = csv.col_any(&["Filename", "File Name", "Video"]);
        let col_view = csv.col_any(&["Camera View", "View"]);
        let col_start = csv.col_any(&["Start Time"]);
        let col_end = csv.col_any(&["End Time"]);
        let col_label = csv.col_any(&["Label (Primary)", "Label/Class ID", "Label", "Class"]);
        let col_block = csv.col_any(&["Appearance Block"]);
        let col_user = csv.col_any(&["User ID"]);
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
        if !missing.is_empty() {
            let msg = format!(
                "{shown}: missing column(s) {} (an AI City user CSV has Filename, Camera View, Activity Type, Start Time, End Time, Label (Primary), Appearance Block; it has {})",
                missing.join(", "),
                csv.headers.join(", ")
            );
            if *explicit {
                problems.push(msg);
            } else {
                warnings.push(format!("{msg}; skipped"));
            }
            continue;
        }
        read += 1;
        let (Some(cf), Some(cv), Some(cs), Some(ce), Some(cl)) =
            (col_file, col_view, col_start, col_end, col_label)
        else {
            continue;
        };
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
    if read == 0 && problems.is_empty() {
        problems.push(
            "no AI City user CSV among the sources (none has the Filename, Camera View, Start Time, End Time, Label (Primary) header)"
                .into(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Group rows by (session, view), in order of appearance.
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

    let mut out = Imported {
        files: read,
        warnings,
        ..Default::default()
    };
    // Manifest rows.
    let paths: Vec<PathBuf> = groups
        .iter()
        .map(|(_, _, idx)| {
            let r = &rows[idx[0]];
            absolute(&video_file(&r.dir, &r.filename, &ext))
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
    problems.extend(outside_root_problem(&outside, &paths));

    // Segments from one view per session.
    let mut sessions: Vec<&str> = Vec::new();
    for (s, _, _) in &groups {
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
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn name_string(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        assert_eq!(parse_time("0:01:05"), Some(65.0));
        assert_eq!(parse_time(" 1:00:00 "), Some(3600.0));
        assert_eq!(parse_time("02:07"), Some(127.0));
        assert_eq!(parse_time("7.5"), Some(7.5));
        assert_eq!(parse_time("0:00:07.25"), Some(7.25));
        for bad in [
            "", "1:2:3:4", "0:61:00", "0:00:60", "a:00", "-3", "1e3", "0:0x:01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("Class 3"), Ok(Some(3)));
        assert_eq!(parse_label("class_12"), Ok(Some(12)));
        assert_eq!(parse_label(" 0 "), Ok(Some(0)));
        assert_eq!(parse_label("NA"), Ok(None));
        assert_eq!(parse_label("Class X"), Err(()));
    }

    #[test]
    fn views_normalise() {
        assert_eq!(normalize_view("Dashboard"), "dashboard");
        assert_eq!(normalize_view("Rear_view"), "rear_view");
        assert_eq!(normalize_view("Rearview"), "rear_view");
        assert_eq!(normalize_view(" Right side window "), "right_side_window");
        assert_eq!(normalize_view("Rightside_window"), "right_side_window");
    }

    #[test]
    fn file_names_give_user_block_and_view() {
        let f = "Dashboard_User_id_24026_NoAudio_3";
        assert_eq!(user_id_in(f).as_deref(), Some("24026"));
        assert_eq!(block_of(f).as_deref(), Some("3"));
        assert_eq!(
            block_of("Rear_view_user_id_1_NoAudio_5.MP4").as_deref(),
            Some("5")
        );
        assert_eq!(
            view_from_filename("Rear_view_user_id_1_NoAudio_5").as_deref(),
            Some("rear_view")
        );
    }
}
