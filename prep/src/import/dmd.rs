//! DMD (Driver Monitoring Dataset) OpenLABEL annotations, e.g.
//! `gA_1_s1_2019-03-08T09;31;15+01;00_rgb_ann_distraction.json`.
//!
//! `openlabel.actions` maps ids to `{type: "driver_actions/texting_right", frame_intervals:
//! [{frame_start, frame_end}]}` with `frame_end` INCLUSIVE, counted on the annotation
//! (mosaic) timeline. `openlabel.streams` lists the cameras (`face_camera`, `body_camera`,
//! `hands_camera`); `stream_properties.sync.frame_shift` is where a camera's first frame
//! sits relative to the face camera's. The mosaic starts with the earliest camera, so a
//! camera's `offset_s` is `(frame_shift - min(0, all shifts)) / fps`, and the segments are
//! written in frames of the selected camera that starts first. Videos sit next to the JSON:
//! `<stem>_face.mp4`, `<stem>_body.mp4`, `<stem>_hands.mp4` where `<stem>` is the JSON name
//! before `_ann_` (e.g. `gA_1_s1_2019-03-08T09;31;15+01;00_rgb`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    absolute, collect_files, fill_pattern, list, outside_root_problem, parse_view_map, Ctx,
    ImportArgs, Imported, Seg, Span, ViewRow,
};

/// DMD's recording rate of the face and hands cameras, and of the mosaic (the body
/// camera's 29.98 fps video was re-timed to it).
pub(super) const DMD_FPS: f64 = 29.76;
const DEFAULT_PATTERN: &str = "{stem}_{camera}.mp4";
/// Default view order.
const CAMERA_ORDER: &[&str] = &["face_camera", "body_camera", "hands_camera"];

/// A stream of one file.
#[derive(Debug, Clone)]
pub(super) struct Stream {
    pub name: String,
    pub shift: Option<i64>,
}

/// Mosaic-frame offsets of each stream: `shift - min(0, shifts)`.
pub(super) fn mosaic_offsets(streams: &[Stream]) -> Vec<i64> {
    let min = streams.iter().filter_map(|s| s.shift).fold(0i64, i64::min);
    streams.iter().map(|s| s.shift.unwrap_or(0) - min).collect()
}

/// `..._rgb_ann_distraction.json` -> `..._rgb`.
fn stem_of(name: &str) -> String {
    let base = name
        .strip_suffix(".json")
        .or_else(|| name.strip_suffix(".JSON"))
        .unwrap_or(name);
    match base.rfind("_ann") {
        Some(i) if i > 0 => base[..i].to_string(),
        _ => base.to_string(),
    }
}

/// `gA_1_s1_2019..._rgb` -> session `gA_1_s1_2019...`, subject `gA_1` (if the name has it).
fn session_of(stem: &str) -> (String, Option<String>) {
    let mut session = stem.to_string();
    for s in ["_rgb", "_ir", "_depth"] {
        if let Some(x) = session.strip_suffix(s) {
            session = x.to_string();
            break;
        }
    }
    let parts: Vec<&str> = session.split('_').collect();
    let subject = match parts.as_slice() {
        [g, n, ..]
            if g.starts_with('g') && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) =>
        {
            Some(format!("{g}_{n}"))
        }
        _ => None,
    };
    (session, subject)
}

pub(super) fn import(args: &ImportArgs, ctx: &Ctx) -> Result<Imported, Vec<String>> {
    let set = Settings::of(args)?;
    let files = collect_files(&args.sources, true, &|p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("_ann") && n.to_ascii_lowercase().ends_with(".json"))
    })?;

    let mut problems = Vec::new();
    let mut out = Imported::default();
    let mut pending: Vec<(ViewRow, PathBuf)> = Vec::new();
    for (file, _) in &files {
        let shown = file.display().to_string();
        let json = match read_json(file, &shown) {
            Ok(v) => v,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let (root, rname) = match (json.get("openlabel"), json.get("vcd")) {
            (Some(r), _) if r.is_object() => (r, "openlabel"),
            (_, Some(r)) if r.is_object() => (r, "vcd"),
            _ => {
                problems.push(format!(
                    "{shown}: no `openlabel` object at the top; this is not a DMD OpenLABEL annotation file"
                ));
                continue;
            }
        };
        out.files += 1;

        let Some((streams, streams_at)) = read_streams(root, rname, &shown, &set, &mut problems)
        else {
            continue;
        };
        let Some(intervals) = read_actions(root, rname, &shown, &set, &mut problems) else {
            continue;
        };
        let streams = FileStreams {
            list: &streams,
            at: &streams_at,
        };
        add_file(
            file,
            &shown,
            streams,
            intervals,
            &set,
            ctx,
            &mut out,
            &mut pending,
        )?;
    }
    let all: Vec<PathBuf> = pending.iter().map(|(_, p)| p.clone()).collect();
    let mut outside = Vec::new();
    for (mut row, path) in pending {
        match ctx.video_rel(&path) {
            Ok(v) => {
                row.video = v;
                out.views.push(row);
            }
            Err(e) => outside.push((row.at.clone(), e)),
        }
    }
    problems.extend(outside_root_problem(&outside, &all));
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The settings of a run, from the command line.
struct Settings<'a> {
    fps: f64,
    /// Namespaces to import; `None`: all.
    namespaces: Option<Vec<String>>,
    pattern: &'a str,
    map: Option<Vec<(String, String)>>,
    full_type: bool,
    subject: Option<String>,
}

impl<'a> Settings<'a> {
    fn of(args: &'a ImportArgs) -> Result<Settings<'a>, Vec<String>> {
        let fps = args.opts.fps.unwrap_or(DMD_FPS);
        let namespaces: Option<Vec<String>> = match args.opts.namespace.as_deref().map(list) {
            None => Some(vec!["driver_actions".into()]),
            Some(l) if l.iter().any(|n| n == "all" || n == "*") => None,
            Some(l) if l.is_empty() => {
                return Err(vec![
                    "--namespace is empty; name one (driver_actions) or `all`".into(),
                ])
            }
            Some(l) => Some(l),
        };
        let pattern = args
            .opts
            .video_pattern
            .as_deref()
            .unwrap_or(DEFAULT_PATTERN);
        let map: Option<Vec<(String, String)>> = match &args.view_map {
            Some(s) => Some(parse_view_map(s).map_err(|e| vec![e])?),
            None => None,
        };
        Ok(Settings {
            fps,
            namespaces,
            pattern,
            map,
            full_type: args.opts.full_type,
            subject: args.opts.subject.clone(),
        })
    }

    /// Our name of camera stream `stream`.
    fn view_name(&self, stream: &str) -> String {
        self.map
            .as_ref()
            .and_then(|m| m.iter().find(|(a, _)| a == stream).map(|(_, b)| b.clone()))
            .unwrap_or_else(|| stream.strip_suffix("_camera").unwrap_or(stream).to_string())
    }
}

/// A file's JSON, or the message.
fn read_json(file: &Path, shown: &str) -> Result<Value, String> {
    std::fs::read(file)
        .map_err(|e| format!("{shown}: cannot be read: {e}"))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                format!(
                    "{shown} line {} column {}: not valid JSON: {e}",
                    e.line(),
                    e.column()
                )
            })
        })
}

/// The streams of a file in view order, and where they are listed (for messages);
/// `None` (with problems pushed) when they cannot be read.
fn read_streams(
    root: &Value,
    rname: &str,
    shown: &str,
    set: &Settings<'_>,
    problems: &mut Vec<String>,
) -> Option<(Vec<Stream>, String)> {
    let (streams_v, streams_at) = match root.get("streams") {
        Some(s) => (Some(s), format!("{rname}.streams")),
        None => (
            root.get("metadata").and_then(|m| m.get("streams")),
            format!("{rname}.metadata.streams"),
        ),
    };
    let Some(streams_obj) = streams_v.and_then(Value::as_object) else {
        problems.push(format!(
        "{shown}: {rname}.streams: missing or not an object; the cameras (face_camera, body_camera, hands_camera) are listed there"
    ));
        return None;
    };
    let mut names: Vec<&String> = streams_obj.keys().collect();
    let rank = |n: &str| -> usize {
        match &set.map {
            Some(m) => m.iter().position(|(a, _)| a == n),
            None => CAMERA_ORDER.iter().position(|c| *c == n),
        }
        .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let mut streams: Vec<Stream> = Vec::new();
    let mut bad = false;
    for n in names {
        let v = &streams_obj[n.as_str()];
        let shift_v = v
            .get("stream_properties")
            .and_then(|p| p.get("sync"))
            .and_then(|s| s.get("frame_shift"));
        let shift = match shift_v {
            None | Some(Value::Null) => None,
            Some(x) => match x.as_i64() {
                Some(i) => Some(i),
                None => {
                    problems.push(format!(
                    "{shown}: {streams_at}.{n}.stream_properties.sync.frame_shift: `{x}` is not a whole number of frames"
                ));
                    bad = true;
                    None
                }
            },
        };
        streams.push(Stream {
            name: n.clone(),
            shift,
        });
    }
    if bad {
        return None;
    }
    Some((streams, streams_at))
}

/// A labelled interval: (label, namespace, start, end exclusive, where).
type Interval = (String, String, i64, i64, String);

/// The intervals of the actions in the selected namespaces, in annotation frames with
/// an exclusive end; `None` (with a problem pushed) when the file has no actions list.
fn read_actions(
    root: &Value,
    rname: &str,
    shown: &str,
    set: &Settings<'_>,
    problems: &mut Vec<String>,
) -> Option<Vec<Interval>> {
    let Some(actions) = root.get("actions") else {
        problems.push(format!(
            "{shown}: {rname}.actions: missing; a DMD annotation lists its actions there"
        ));
        return None;
    };
    let entries: Vec<(String, &Value)> = match actions {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => {
            problems.push(format!(
                "{shown}: {rname}.actions: must be an object of actions"
            ));
            return None;
        }
    };
    let mut intervals: Vec<(String, String, i64, i64, String)> = Vec::new();
    for (id, a) in entries {
        let a_at = format!("{shown}: {rname}.actions.{id}");
        let Some(ty) = a.get("type").and_then(Value::as_str) else {
            problems.push(format!(
                "{a_at}: no `type` string (like `driver_actions/texting_right`)"
            ));
            continue;
        };
        let (ns, leaf) = match ty.rsplit_once('/') {
            Some((ns, leaf)) => (ns, leaf),
            None => ("", ty),
        };
        if let Some(list) = &set.namespaces {
            if !list.iter().any(|n| n == ns) {
                continue;
            }
        }
        let label = if set.full_type { ty } else { leaf }.trim().to_string();
        if label.is_empty() {
            problems.push(format!("{a_at}: type `{ty}` gives an empty label"));
            continue;
        }
        let Some(fis) = a.get("frame_intervals").and_then(Value::as_array) else {
            problems.push(format!(
                "{a_at}: no `frame_intervals` list; each action needs its frame intervals"
            ));
            continue;
        };
        for (k, fi) in fis.iter().enumerate() {
            let fi_at = format!("{a_at}.frame_intervals[{k}]");
            let f = |key: &str| fi.get(key).and_then(Value::as_i64);
            match (f("frame_start"), f("frame_end")) {
                (Some(s), Some(e)) if 0 <= s && s <= e => {
                    intervals.push((label.clone(), ns.to_string(), s, e + 1, fi_at));
                }
                (Some(s), Some(e)) => problems.push(format!(
                    "{fi_at}: need 0 <= frame_start <= frame_end (inclusive), got {s}..{e}"
                )),
                _ => problems.push(format!(
                    "{fi_at}: `frame_start` and `frame_end` must be whole frame numbers"
                )),
            }
        }
    }
    Some(intervals)
}

/// A file's streams and where they are listed.
struct FileStreams<'a> {
    list: &'a [Stream],
    at: &'a str,
}

/// The manifest rows (pending the data-root check) and segments of one file.
#[allow(clippy::too_many_arguments)]
fn add_file(
    file: &Path,
    shown: &str,
    streams: FileStreams<'_>,
    intervals: Vec<Interval>,
    set: &Settings<'_>,
    ctx: &Ctx,
    out: &mut Imported,
    pending: &mut Vec<(ViewRow, PathBuf)>,
) -> Result<(), Vec<String>> {
    let FileStreams {
        list: streams,
        at: streams_at,
    } = streams;
    let offsets = mosaic_offsets(streams);
    let any_shift = streams.iter().any(|s| s.shift.is_some());
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if intervals.is_empty() {
        out.warnings.push(format!(
            "{shown}: no actions in namespace {}; file skipped",
            set.namespaces
                .as_ref()
                .map(|l| l.join(", "))
                .unwrap_or_else(|| "(any)".into())
        ));
        return Ok(());
    }
    let stem = stem_of(&name);
    let (session, subject) = session_of(&stem);
    let subject = subject
        .or_else(|| set.subject.clone())
        .unwrap_or_else(|| "unknown".into());
    let dir = absolute(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();

    // Views of this file, and the frame view (the kept camera that starts first).
    let kept: Vec<usize> = (0..streams.len())
        .filter(|&i| ctx.keep_view(&set.view_name(&streams[i].name)))
        .collect();
    let Some(&fv) = kept.iter().min_by_key(|&&i| (offsets[i], i)) else {
        return Ok(());
    };
    let frame_view = set.view_name(&streams[fv].name);
    let sub = offsets[fv];
    for &i in &kept {
        let s = &streams[i];
        let view = set.view_name(&s.name);
        let camera = s.name.strip_suffix("_camera").unwrap_or(&s.name);
        let values = [
            ("stem", stem.as_str()),
            ("camera", camera),
            ("stream", s.name.as_str()),
            ("view", view.as_str()),
        ];
        let rel = fill_pattern(set.pattern, &values).map_err(|e| vec![e])?;
        pending.push((
            ViewRow {
                session: session.clone(),
                subject: subject.clone(),
                view,
                video: String::new(),
                offset_s: any_shift.then(|| offsets[i] as f64 / set.fps),
                split: None,
                at: format!("{shown}: {streams_at}.{}", s.name),
            },
            absolute(&dir.join(rel)),
        ));
    }
    let mut dropped = 0;
    for (label, ns, s, e, at) in intervals {
        let (s, e) = (s - sub, e - sub);
        if e <= 0 {
            dropped += 1;
            continue;
        }
        out.segs.push(Seg {
            session: session.clone(),
            label,
            span: Span::Frames {
                start: s.max(0),
                end: e,
                view: frame_view.clone(),
            },
            at,
            group: ns,
        });
    }
    if dropped > 0 {
        out.warnings.push(format!(
        "{shown}: {dropped} interval(s) end before camera `{frame_view}` starts and were dropped"
    ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, shift: Option<i64>) -> Stream {
        Stream {
            name: name.into(),
            shift,
        }
    }

    #[test]
    fn offsets_start_at_the_earliest_camera() {
        // Face first, body 12 frames later, hands 5 later.
        let o = mosaic_offsets(&[s("face", None), s("body", Some(12)), s("hands", Some(5))]);
        assert_eq!(o, vec![0, 12, 5]);
        // Body first (shift -4): the face starts 4 frames into the mosaic.
        let o = mosaic_offsets(&[s("face", None), s("body", Some(-4)), s("hands", Some(3))]);
        assert_eq!(o, vec![4, 0, 7]);
    }

    #[test]
    fn names_give_stem_session_and_subject() {
        let stem = stem_of("gA_1_s1_2019-03-08T09;31;15+01;00_rgb_ann_distraction.json");
        assert_eq!(stem, "gA_1_s1_2019-03-08T09;31;15+01;00_rgb");
        let (session, subject) = session_of(&stem);
        assert_eq!(session, "gA_1_s1_2019-03-08T09;31;15+01;00");
        assert_eq!(subject.as_deref(), Some("gA_1"));
        assert_eq!(session_of("recording").1, None);
    }
}
