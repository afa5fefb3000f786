//! Label Studio JSON exports of video timeline labelling (`<TimelineLabels>` on a `<Video>`).
//!
//! A task's `annotations[].result[]` items carry `value.timelinelabels` (labels) and
//! `value.ranges` (`{start, end}` frames). Label Studio counts video frames from 1 and a
//! range includes its end frame (one clicked frame is `{start: 5, end: 5}`), so a range
//! becomes source frames `start-1 .. end` (0-based, end exclusive). JSON-MIN exports (one
//! flat record per annotation, the results under the control's name, e.g. `videoLabels`)
//! and tasks with a top-level `result` list are read too.
//!
//! Several annotations of one (session, view) are merged by a per-frame vote: on every
//! frame each annotation votes once for each label it gives the frame; the label with the
//! most votes wins if it has at least `--min-votes`; a tie goes to the label supported by
//! the annotation with the smallest id (then its earliest region). Runs of frames with the
//! same winner become segments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{outside_root_problem, Ctx, ImportArgs, Imported, Seg, Span, ViewRow};

mod paths;
mod vote;

use paths::{clean_ls_path, VideoPath};
use vote::{vote, Region};

/// The group name for overlap checks: after the vote there is one label per frame.
const GROUP: &str = "timeline";

/// An annotation id, ordered: numbers, then text, then none; ties by file order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum AnnId {
    Num(i64),
    Text(String),
    None,
}

impl AnnId {
    fn of(v: Option<&Value>) -> AnnId {
        match v {
            Some(Value::Number(n)) => n.as_i64().map(AnnId::Num).unwrap_or(AnnId::None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(AnnId::Num)
                .unwrap_or_else(|_| AnnId::Text(s.clone())),
            _ => AnnId::None,
        }
    }
}

/// One annotation: its id, file order and regions (label, start, end, at).
struct Ann {
    id: AnnId,
    seq: usize,
    regions: Vec<(String, i64, i64, String)>,
}

/// All tasks of one (session, view).
struct Group {
    session: String,
    view: String,
    subject: String,
    split: Option<String>,
    video: String,
    at: String,
    anns: Vec<Ann>,
}

pub(super) fn import(args: &ImportArgs, ctx: &Ctx) -> Result<Imported, Vec<String>> {
    let files = super::collect_files(&args.sources, false, &|p: &Path| {
        p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    })?;
    let mut st = State {
        args,
        ctx,
        groups: Vec::new(),
        index: HashMap::new(),
        problems: Vec::new(),
        seq: 0,
        abs_videos: Vec::new(),
        outside: Vec::new(),
        regions: 0,
    };
    for (file, _) in &files {
        st.read_file(file);
    }
    if let Some(p) = outside_root_problem(&st.outside, &st.abs_videos) {
        st.problems.push(p);
    }
    let State {
        groups,
        mut problems,
        ..
    } = st;

    let mut out = Imported {
        files: files.len(),
        ..Default::default()
    };
    let min_votes = args.opts.min_votes.unwrap_or(1);
    // Sessions in order of first appearance, each with its groups.
    let mut sessions: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        match sessions.iter_mut().find(|(s, _)| *s == g.session) {
            Some((_, v)) => v.push(i),
            None => sessions.push((g.session.clone(), vec![i])),
        }
        out.views.push(ViewRow {
            session: g.session.clone(),
            subject: g.subject.clone(),
            view: g.view.clone(),
            video: g.video.clone(),
            offset_s: None,
            split: g.split.clone(),
            at: g.at.clone(),
        });
    }
    let mut ignored = 0usize;
    let mut ignored_example = String::new();
    for (session, idx) in &sessions {
        let labelled: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| groups[i].anns.iter().any(|a| !a.regions.is_empty()))
            .collect();
        let chosen = match &args.time_view {
            Some(tv) => match idx.iter().copied().find(|&i| groups[i].view == *tv) {
                Some(i) => Some(i),
                None => {
                    if let Some(&i) = labelled.first() {
                        problems.push(format!(
                            "{}: session `{session}` has no task in view `{tv}` (--time-view); its views are {}",
                            groups[i].at,
                            idx.iter()
                                .map(|&i| groups[i].view.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    None
                }
            },
            None => labelled.first().copied(),
        };
        let Some(chosen) = chosen else { continue };
        for &i in &labelled {
            if i != chosen {
                ignored += 1;
                if ignored_example.is_empty() {
                    ignored_example = format!(
                        "session `{session}` view `{}` ({})",
                        groups[i].view, groups[i].at
                    );
                }
            }
        }
        let g = &groups[chosen];
        for (label, start, end, at) in merge_group(g, min_votes) {
            out.segs.push(Seg {
                session: g.session.clone(),
                label,
                span: Span::Frames {
                    start,
                    end,
                    view: g.view.clone(),
                },
                at,
                group: GROUP.into(),
            });
        }
    }
    if ignored > 0 {
        out.warnings.push(format!(
            "{ignored} labelled task group(s) in a second view were ignored, e.g. {ignored_example}: a session's segments come from one view (the first labelled one, or --time-view)"
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Rank a group's annotations by id and vote.
fn merge_group(g: &Group, min_votes: u32) -> Vec<(String, i64, i64, String)> {
    let mut order: Vec<usize> = (0..g.anns.len()).collect();
    order.sort_by(|&a, &b| (&g.anns[a].id, g.anns[a].seq).cmp(&(&g.anns[b].id, g.anns[b].seq)));
    let mut regions = Vec::new();
    for (rank, &ai) in order.iter().enumerate() {
        for (k, (label, start, end, at)) in g.anns[ai].regions.iter().enumerate() {
            regions.push(Region {
                label: label.clone(),
                start: *start,
                end: *end,
                rank,
                order: k,
                at: at.clone(),
            });
        }
    }
    vote(&regions, min_votes)
}

/// A JSON scalar as text (strings as is, numbers printed), or None.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct State<'a> {
    args: &'a ImportArgs,
    ctx: &'a Ctx,
    groups: Vec<Group>,
    index: HashMap<(String, String), usize>,
    problems: Vec<String>,
    seq: usize,
    /// Absolute video paths seen (for a --data-root suggestion).
    abs_videos: Vec<PathBuf>,
    /// (at, error) of absolute videos outside the data root.
    outside: Vec<(String, String)>,
    /// Timeline regions read so far (an input file that adds none is an error).
    regions: usize,
}

impl State<'_> {
    fn read_file(&mut self, file: &Path) {
        let shown = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                self.problems.push(format!("{shown}: cannot be read: {e}"));
                return;
            }
        };
        let json: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.problems.push(format!(
                    "{shown} line {} column {}: not valid JSON: {e}; export the project again as JSON",
                    e.line(),
                    e.column()
                ));
                return;
            }
        };
        let (before, problems) = (self.regions, self.problems.len());
        match &json {
            Value::Array(tasks) => {
                for (i, t) in tasks.iter().enumerate() {
                    self.read_task(t, &format!("{shown}: [{i}]"));
                }
            }
            Value::Object(_) => self.read_task(&json, &format!("{shown}: (top)")),
            _ => self.problems.push(format!(
                "{shown}: expected a list of Label Studio tasks (a JSON array); export as JSON or JSON-MIN"
            )),
        }
        // Nothing read and nothing wrong said: a layout this importer does not know.
        if self.regions == before && self.problems.len() == problems {
            self.problems.push(format!(
                "{shown}: no timeline segments found; looked for `annotations[].result[]` (and `completions`), timeline lists under a control name in an annotation or a JSON-MIN record (e.g. `videoLabels`), and a top-level `result`, each item with `ranges` and `timelinelabels` (or under `value`)"
            ));
        }
    }

    fn read_task(&mut self, t: &Value, at: &str) {
        let Some(obj) = t.as_object() else {
            self.problems
                .push(format!("{at}: a task must be a JSON object"));
            return;
        };
        let args = self.args;
        // Full export: data + annotations; JSON-MIN: the data keys sit on the record.
        let (data, data_at, min) = match obj.get("data") {
            Some(Value::Object(d)) => (d, format!("{at}.data"), false),
            Some(_) => {
                self.problems
                    .push(format!("{at}.data: must be an object of task data"));
                return;
            }
            None => (obj, at.to_string(), true),
        };
        let key = args.opts.video_key.as_deref().unwrap_or("video");
        let Some(raw_video) = data.get(key) else {
            let keys: Vec<&str> = data.keys().map(String::as_str).collect();
            self.problems.push(format!(
                "{data_at}: no `{key}` key with the video (keys: {}); pass --video-key if your labelling config uses another name",
                keys.join(", ")
            ));
            return;
        };
        let Some(raw_video) = raw_video.as_str() else {
            self.problems.push(format!(
                "{data_at}.{key}: the video must be a string path or URL"
            ));
            return;
        };
        let video = match clean_ls_path(raw_video) {
            Ok(VideoPath::Rel(r)) => r,
            Ok(VideoPath::Abs(p)) => {
                self.abs_videos.push(p.clone());
                match self.ctx.video_rel(&p) {
                    Ok(r) => r,
                    Err(e) => {
                        self.outside.push((format!("{data_at}.{key}"), e));
                        return;
                    }
                }
            }
            Err(e) => {
                self.problems
                    .push(format!("{data_at}.{key}: {e}; fix the task's video path"));
                return;
            }
        };
        let stem = Path::new(&video)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| video.clone());
        let session = text(data.get("session")).unwrap_or(stem);
        let view = text(data.get("view"))
            .or_else(|| args.opts.view.clone())
            .unwrap_or_else(|| "front".into());
        if !self.ctx.keep_view(&view) {
            return;
        }
        let subject = text(data.get("subject"))
            .or_else(|| args.opts.subject.clone())
            .unwrap_or_else(|| "unknown".into());
        let split = text(data.get("split"));

        // A record with the video at the top level may still list its annotations (the
        // original Python project's files): read them as annotations.
        let listed = obj.contains_key("annotations") || obj.contains_key("completions");
        let anns = if min && !listed {
            self.min_annotation(obj, at)
        } else {
            self.annotations(obj, at)
        };
        let Some(anns) = anns else { return };
        self.regions += anns.iter().map(|a| a.regions.len()).sum::<usize>();

        let k = (session.clone(), view.clone());
        match self.index.get(&k) {
            Some(&i) => {
                let g = &mut self.groups[i];
                if g.video != video {
                    self.problems.push(format!(
                        "{data_at}: session `{session}` view `{view}` has video `{video}` here but `{}` at {}; give each video its own data.session or data.view",
                        g.video, g.at
                    ));
                    return;
                }
                if g.subject != subject {
                    self.problems.push(format!(
                        "{data_at}: session `{session}` has subject `{subject}` here but `{}` at {}; one subject per session",
                        g.subject, g.at
                    ));
                    return;
                }
                g.anns.extend(anns);
            }
            None => {
                self.index.insert(k, self.groups.len());
                self.groups.push(Group {
                    session,
                    view,
                    subject,
                    split,
                    video,
                    at: data_at,
                    anns,
                });
            }
        }
    }

    /// `annotations` (or legacy `completions`), or a top-level `result` list.
    fn annotations(&mut self, obj: &Map<String, Value>, at: &str) -> Option<Vec<Ann>> {
        let mut out = Vec::new();
        let list = obj
            .get("annotations")
            .map(|v| ("annotations", v))
            .or_else(|| obj.get("completions").map(|v| ("completions", v)));
        if let Some((name, list)) = list {
            let Some(list) = list.as_array() else {
                self.problems
                    .push(format!("{at}.{name}: must be a list of annotations"));
                return None;
            };
            for (j, a) in list.iter().enumerate() {
                let a_at = format!("{at}.{name}[{j}]");
                let Some(a) = a.as_object() else {
                    self.problems
                        .push(format!("{a_at}: an annotation must be an object"));
                    continue;
                };
                if a.get("was_cancelled").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let regions = match a.get("result") {
                    Some(result) => self.results(result, &format!("{a_at}.result"))?,
                    // Results under the control's name (`videoLabels`), as JSON-MIN has them.
                    None => {
                        let regions = self.control_results(a, &a_at)?;
                        if regions.is_empty() {
                            self.problems.push(format!(
                                "{a_at}: no `result` list and no timeline list under a control name (e.g. `videoLabels`); export with annotations included"
                            ));
                            continue;
                        }
                        regions
                    }
                };
                self.seq += 1;
                out.push(Ann {
                    id: AnnId::of(a.get("id")),
                    seq: self.seq,
                    regions,
                });
            }
        } else if let Some(result) = obj.get("result") {
            let regions = self.results(result, &format!("{at}.result"))?;
            self.seq += 1;
            out.push(Ann {
                id: AnnId::of(obj.get("annotation_id")),
                seq: self.seq,
                regions,
            });
        }
        Some(out)
    }

    /// A JSON-MIN record: one annotation whose results sit under the control names.
    fn min_annotation(&mut self, obj: &Map<String, Value>, at: &str) -> Option<Vec<Ann>> {
        if let Some(r) = obj.get("result") {
            let regions = self.results(r, &format!("{at}.result"))?;
            self.seq += 1;
            return Some(vec![Ann {
                id: AnnId::of(obj.get("annotation_id")),
                seq: self.seq,
                regions,
            }]);
        }
        let regions = self.control_results(obj, at)?;
        if regions.is_empty() && obj.get("annotation_id").is_none() {
            return Some(Vec::new());
        }
        self.seq += 1;
        Some(vec![Ann {
            id: AnnId::of(obj.get("annotation_id")),
            seq: self.seq,
            regions,
        }])
    }

    /// Timeline items listed under control names (`"videoLabels": [{ranges,
    /// timelinelabels}]`) in a JSON-MIN record or an annotation.
    fn control_results(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
    ) -> Option<Vec<(String, i64, i64, String)>> {
        let mut regions = Vec::new();
        for (k, v) in obj {
            let is_timeline = |x: &Value| {
                x.get("ranges").is_some()
                    || x.get("timelinelabels").is_some()
                    || x.get("value").is_some_and(|v| v.get("ranges").is_some())
            };
            let items: Vec<&Value> = match v {
                Value::Array(a) if a.iter().any(is_timeline) => a.iter().collect(),
                Value::Object(_) if is_timeline(v) => vec![v],
                _ => continue,
            };
            for (i, item) in items.iter().enumerate() {
                let item_at = if matches!(v, Value::Array(_)) {
                    format!("{at}.{k}[{i}]")
                } else {
                    format!("{at}.{k}")
                };
                let mut r = self.item(item, &item_at)?;
                regions.append(&mut r);
            }
        }
        Some(regions)
    }

    fn results(&mut self, result: &Value, at: &str) -> Option<Vec<(String, i64, i64, String)>> {
        let Some(items) = result.as_array() else {
            self.problems
                .push(format!("{at}: must be a list of result items"));
            return None;
        };
        let mut out = Vec::new();
        for (k, item) in items.iter().enumerate() {
            out.append(&mut self.item(item, &format!("{at}[{k}]"))?);
        }
        Some(out)
    }

    /// One result item: `{value: {ranges, timelinelabels}}` or `{ranges, timelinelabels}`.
    /// Items of other controls (no ranges, no timelinelabels) are skipped.
    fn item(&mut self, item: &Value, at: &str) -> Option<Vec<(String, i64, i64, String)>> {
        let (v, v_at) = match item.get("value") {
            Some(v) if v.is_object() => (v, format!("{at}.value")),
            _ => (item, at.to_string()),
        };
        let ranges = v.get("ranges");
        let labels = v.get("timelinelabels");
        if ranges.is_none() && labels.is_none() {
            return Some(Vec::new());
        }
        let (Some(ranges), Some(labels)) = (ranges, labels) else {
            let missing = if ranges.is_none() {
                "ranges"
            } else {
                "timelinelabels"
            };
            self.problems.push(format!(
                "{v_at}: has no `{missing}`; a timeline region needs both `ranges` and `timelinelabels`"
            ));
            return Some(Vec::new());
        };
        let Some(labels) = labels.as_array() else {
            self.problems.push(format!(
                "{v_at}.timelinelabels: must be a list of label strings"
            ));
            return Some(Vec::new());
        };
        let mut names = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            match l.as_str().map(str::trim) {
                Some(s) if !s.is_empty() => names.push(s.to_string()),
                _ => self.problems.push(format!(
                    "{v_at}.timelinelabels[{i}]: a label must be a non-empty string"
                )),
            }
        }
        if labels.is_empty() {
            self.problems.push(format!(
                "{v_at}.timelinelabels: is empty; give the region a label or delete it"
            ));
        }
        let Some(ranges) = ranges.as_array() else {
            self.problems.push(format!(
                "{v_at}.ranges: must be a list of {{start, end}} frame ranges"
            ));
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        for (i, r) in ranges.iter().enumerate() {
            let r_at = format!("{v_at}.ranges[{i}]");
            let frame = |k: &str| -> Option<i64> {
                let x = r.get(k)?;
                x.as_i64().or_else(|| {
                    x.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                })
            };
            match (frame("start"), frame("end")) {
                (Some(s), Some(e)) if s >= 1 && e >= s => {
                    for n in &names {
                        out.push((n.clone(), s - 1, e, r_at.clone()));
                    }
                }
                (Some(s), Some(e)) if s >= 1 => self.problems.push(format!(
                    "{r_at}: end frame {e} is before start frame {s}; fix the region"
                )),
                (Some(s), Some(_)) => self.problems.push(format!(
                    "{r_at}: start frame {s}: Label Studio numbers video frames from 1; fix the region"
                )),
                _ => self.problems.push(format!(
                    "{r_at}: `start` and `end` must be whole frame numbers"
                )),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_ids_order_numbers_first() {
        assert!(AnnId::of(Some(&Value::from(7))) < AnnId::of(Some(&Value::from("12"))));
        assert!(AnnId::of(Some(&Value::from("x"))) < AnnId::of(None));
    }
}
