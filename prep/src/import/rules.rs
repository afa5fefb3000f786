//! The rules every format obeys, applied to what a reader produced: views filter,
//! duplicates, complete sessions, label vocabulary, overlaps, background fill.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use super::{Ctx, ImportArgs, Imported, Seg, Span, ViewRow};
use crate::error::PrepError;

/// Manifest rows, segments and warnings, ready to write.
pub(super) type Finished = (Vec<ViewRow>, Vec<Seg>, Vec<String>);

/// Checks and fixes shared by all formats: views filter, duplicates, complete sessions,
/// label vocabulary, overlaps, background. Returns sorted rows and warnings.
pub(super) fn finish(
    imp: Imported,
    args: &ImportArgs,
    ctx: &Ctx,
    vocab: Option<&(PathBuf, Vec<(usize, String)>)>,
) -> Result<Finished, PrepError> {
    let Imported {
        mut views,
        mut segs,
        mut warnings,
        ..
    } = imp;
    // View order = first appearance; sessions likewise.
    let mut view_order: Vec<String> = Vec::new();
    let mut session_order: Vec<String> = Vec::new();
    for v in &views {
        if !view_order.contains(&v.view) {
            view_order.push(v.view.clone());
        }
        if !session_order.contains(&v.session) {
            session_order.push(v.session.clone());
        }
    }
    let mut problems = view_filter_problems(&views, &view_order, ctx);
    problems.extend(session_problems(&views, &segs, &view_order, &session_order));
    if let Some(vocab) = vocab {
        problems.extend(vocabulary_problems(
            &segs,
            vocab,
            args.background.as_deref(),
        ));
    }
    let pos: HashMap<&str, usize> = session_order
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    sort_segments(&mut segs, &pos);
    problems.extend(overlap_problems(&segs));
    if !problems.is_empty() {
        return Err(PrepError::Invalid(problems));
    }
    if let Some(bg) = &args.background {
        fill_background(&mut segs, bg, &pos);
    }
    warnings.extend(coverage_warnings(&views, &segs, &session_order, ctx));

    let vpos: HashMap<String, usize> = view_order
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), i))
        .collect();
    views.sort_by(|a, b| {
        pos.get(a.session.as_str())
            .cmp(&pos.get(b.session.as_str()))
            .then(vpos.get(&a.view).cmp(&vpos.get(&b.view)))
    });
    Ok((views, segs, warnings))
}

/// `--views` names a view the sources lack; the sources hold no videos.
fn view_filter_problems(views: &[ViewRow], view_order: &[String], ctx: &Ctx) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(keep) = &ctx.keep {
        for k in keep {
            if !view_order.contains(k) {
                problems.push(format!(
                    "--views: no view `{k}` in the sources (views found: {}); fix the name",
                    if view_order.is_empty() {
                        "none".to_string()
                    } else {
                        view_order.join(", ")
                    }
                ));
            }
        }
    }
    if views.is_empty() && problems.is_empty() {
        problems
            .push("the sources hold no videos to import; check the files and --views".to_string());
    }

    problems
}

/// One row per (session, view), one subject and split per session, every session has
/// every view, every segment a session of the manifest and a known frame view.
fn session_problems(
    views: &[ViewRow],
    segs: &[Seg],
    view_order: &[String],
    session_order: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    // One row per (session, view), one subject and split per session.
    let mut seen: HashMap<(&str, &str), &ViewRow> = HashMap::new();
    let mut per_session: HashMap<&str, &ViewRow> = HashMap::new();
    for v in views {
        if let Some(first) = seen.insert((&v.session, &v.view), v) {
            problems.push(format!(
                "{}: session `{}` view `{}` is given twice (first at {}); keep one",
                v.at, v.session, v.view, first.at
            ));
        }
        match per_session.get(v.session.as_str()) {
            None => {
                per_session.insert(&v.session, v);
            }
            Some(first) => {
                if first.subject != v.subject {
                    problems.push(format!(
                        "{}: session `{}` has subject `{}` here but `{}` at {}; one subject per session",
                        v.at, v.session, v.subject, first.subject, first.at
                    ));
                }
                if first.split != v.split {
                    problems.push(format!(
                        "{}: session `{}` is in split {} here but {} at {}; one split per session",
                        v.at,
                        v.session,
                        v.split.as_deref().unwrap_or("(none)"),
                        first.split.as_deref().unwrap_or("(none)"),
                        first.at
                    ));
                }
            }
        }
    }
    // Every session has every view (prep build requires it).
    for s in session_order {
        let missing: Vec<&str> = view_order
            .iter()
            .filter(|v| !seen.contains_key(&(s.as_str(), v.as_str())))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let at = per_session
                .get(s.as_str())
                .map(|v| v.at.as_str())
                .unwrap_or("");
            problems.push(format!(
                "{at}: session `{s}` has no video for view(s) {} (every session needs every view: {}); add them or pick views with --views",
                missing.join(", "),
                view_order.join(", ")
            ));
        }
    }
    // Every segment belongs to a session of the manifest, in a known frame view.
    for g in segs.iter() {
        if !per_session.contains_key(g.session.as_str()) {
            problems.push(format!(
                "{}: session `{}` has segments but no video, so it would be missing from the manifest; add its video or remove its annotations",
                g.at, g.session
            ));
        } else if let Span::Frames { view, .. } = &g.span {
            if !seen.contains_key(&(g.session.as_str(), view.as_str())) {
                problems.push(format!(
                    "{}: segment frames are counted in view `{view}`, which session `{}` does not have; pick the view with --time-view",
                    g.at, g.session
                ));
            }
        }
    }

    problems
}

/// Labels not in the `--labels` vocabulary (and a `--background` not in it).
fn vocabulary_problems(
    segs: &[Seg],
    vocab: &(PathBuf, Vec<(usize, String)>),
    background: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (path, lines) = vocab;
    let known: HashSet<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let shown = path.display();
    let mut reported: HashSet<&str> = HashSet::new();
    for g in segs {
        if !known.contains(g.label.as_str()) && reported.insert(&g.label) {
            problems.push(format!(
                "{}: label `{}` is not in {shown}{}; add it there or fix the annotation",
                g.at,
                g.label,
                closest(&g.label, &known)
            ));
        }
    }
    if let Some(b) = background {
        if !known.contains(b) {
            problems.push(format!(
                "--background `{b}` is not in {shown}; add it there"
            ));
        }
    }
    problems
}

/// Sort segments by session order, then start.
fn sort_segments(segs: &mut [Seg], pos: &HashMap<&str, usize>) {
    segs.sort_by(|a, b| {
        let (sa, _) = a.span.bounds();
        let (sb, _) = b.span.bounds();
        pos.get(a.session.as_str())
            .cmp(&pos.get(b.session.as_str()))
            .then(sa.total_cmp(&sb))
    });
}

/// Overlaps within a session, group and time unit (`segs` sorted by [`sort_segments`]).
fn overlap_problems(segs: &[Seg]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last: HashMap<(&str, &str, Option<&str>), &Seg> = HashMap::new();
    for g in segs.iter() {
        let key = (g.session.as_str(), g.group.as_str(), g.span.unit());
        let (start, end) = g.span.bounds();
        if let Some(prev) = last.get(&key) {
            let (_, pend) = prev.span.bounds();
            if start < pend {
                problems.push(format!(
                    "{}: segment `{}` {} overlaps segment `{}` {} ({}) in session `{}`; one label at a time: fix the times",
                    g.at,
                    g.label,
                    g.span.show(),
                    prev.label,
                    prev.span.show(),
                    prev.at,
                    g.session
                ));
            }
            if end <= pend {
                continue; // keep the one reaching further
            }
        }
        last.insert(key, g);
    }

    problems
}

/// Background: fill gaps from 0 to each session's last end, per group and unit.
fn fill_background(segs: &mut Vec<Seg>, bg: &str, pos: &HashMap<&str, usize>) {
    let mut fill = Vec::new();
    let mut cursor: BTreeMap<(usize, String, Option<String>), (f64, Seg)> = BTreeMap::new();
    for g in segs.iter() {
        let key = (
            pos.get(g.session.as_str()).copied().unwrap_or(usize::MAX),
            g.group.clone(),
            g.span.unit().map(String::from),
        );
        let (start, end) = g.span.bounds();
        let from = cursor.get(&key).map(|(e, _)| *e).unwrap_or(0.0);
        if start > from {
            let span = match &g.span {
                Span::Frames { view, .. } => Span::Frames {
                    start: from as i64,
                    end: start as i64,
                    view: view.clone(),
                },
                Span::Seconds { .. } => Span::Seconds {
                    start: from,
                    end: start,
                },
            };
            fill.push(Seg {
                session: g.session.clone(),
                label: bg.to_string(),
                span,
                at: format!("background before {}", g.at),
                group: g.group.clone(),
            });
        }
        if end > from {
            cursor.insert(key, (end, g.clone()));
        }
    }
    segs.extend(fill);
    sort_segments(segs, pos);
}

/// Sessions without segments, and videos not found.
fn coverage_warnings(
    views: &[ViewRow],
    segs: &[Seg],
    session_order: &[String],
    ctx: &Ctx,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let with_segs: HashSet<&str> = segs.iter().map(|g| g.session.as_str()).collect();
    let bare: Vec<&str> = session_order
        .iter()
        .map(String::as_str)
        .filter(|s| !with_segs.contains(s))
        .collect();
    if !bare.is_empty() {
        warnings.push(format!(
            "{} session(s) have no segments (e.g. `{}`); they are in the manifest without labels",
            bare.len(),
            bare[0]
        ));
    }
    let missing: Vec<&ViewRow> = views
        .iter()
        .filter(|v| !ctx.root.join(&v.video).is_file())
        .collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "{} of {} video(s) are not found under the data root {} (e.g. `{}`); prep build will need them there",
            missing.len(),
            views.len(),
            ctx.root.display(),
            missing[0].video
        ));
    }

    warnings
}

/// ` (did you mean `x`?)` when a known label is close.
fn closest(label: &str, known: &HashSet<&str>) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(label, k), *k))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}
