//! `prep import FORMAT SRC... --out DIR`: convert public datasets' annotations into the
//! canonical `manifest.csv` + `segments.csv` that `prep build` reads.
//!
//! One file per format ([`label_studio`], [`drive_act`], [`aicity`], [`dmd`]); each turns
//! its sources into [`Imported`] rows. This module does what all formats share: check the
//! label vocabulary, reject overlapping segments, fill gaps with a background label, check
//! that every session has every view and every segment a session, and write the two files
//! under temporary names that are renamed only when everything is valid. The rules are
//! documented in `docs/importers.md`.

mod aicity;
mod dmd;
mod drive_act;
mod label_studio;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::error::{io, PrepError};

/// The formats `prep import` reads.
pub const FORMATS: &[&str] = &["label-studio", "drive-act", "aicity", "dmd"];

/// Arguments of `prep import`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// Annotation format.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(FORMATS))]
    pub format: String,
    /// Annotation files or folders.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Output folder for manifest.csv and segments.csv (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Folder the manifest's video paths are relative to [default: --out]; give the same
    /// --data-root to `prep build`.
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// labels.txt (one label per line): any other label is an error; copied to DIR/labels.txt
    /// to fix the class order.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Give unlabelled gaps (from time 0 to a session's last segment) this label
    /// [default: gaps stay unlabelled].
    #[arg(long, value_name = "LABEL")]
    pub background: Option<String>,
    /// Rename views: SOURCE=NAME pairs, comma-separated; replaces the format's default map
    /// (drive-act, aicity, dmd).
    #[arg(long, value_name = "SRC=NAME,...")]
    pub view_map: Option<String>,
    /// Import only these views (names after --view-map), comma-separated.
    #[arg(long, value_name = "NAME,...")]
    pub views: Option<String>,
    /// The view whose annotations give each session's segments (label-studio, drive-act,
    /// aicity) [default: the first view; see docs/importers.md].
    #[arg(long, value_name = "NAME")]
    pub time_view: Option<String>,
    /// Options of single formats.
    #[command(flatten)]
    pub opts: Box<FormatOptions>,
}

/// Options that only some formats read (giving one to another format is an error).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Format options")]
pub struct FormatOptions {
    /// label-studio: view of tasks without `data.view` [default: front].
    #[arg(long, value_name = "NAME")]
    pub view: Option<String>,
    /// label-studio, dmd: subject when the task or file name gives none [default: unknown].
    #[arg(long, value_name = "NAME")]
    pub subject: Option<String>,
    /// label-studio: key of the task data that holds the video [default: video].
    #[arg(long, value_name = "KEY")]
    pub video_key: Option<String>,
    /// label-studio: annotators that must agree before a frame gets a label [default: 1].
    #[arg(long, value_name = "N")]
    pub min_votes: Option<u32>,
    /// drive-act, dmd: video path pattern (see below for placeholders and defaults).
    #[arg(long, value_name = "PATTERN")]
    pub video_pattern: Option<String>,
    /// drive-act: annotation level, the file name prefix [default: midlevel].
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,
    /// drive-act: read the `.split_K.{train,val,test}.csv` files of this K (and set `split`)
    /// when a view folder has no unsplit file [default: 0].
    #[arg(long, value_name = "K")]
    pub split_index: Option<u32>,
    /// aicity: extension of the video files [default: .MP4].
    #[arg(long, value_name = "EXT")]
    pub video_ext: Option<String>,
    /// aicity: class names: `N,name` per line, or one name per line starting with class 0
    /// [default: labels class_N].
    #[arg(long, value_name = "FILE")]
    pub labels_map: Option<PathBuf>,
    /// dmd: frame rate of the annotation timeline, to turn frame shifts into offset_s
    /// [default: 29.76].
    #[arg(long, value_name = "FPS")]
    pub fps: Option<f64>,
    /// dmd: action type namespaces to import, comma-separated, or `all`
    /// [default: driver_actions].
    #[arg(long, value_name = "NS,...")]
    pub namespace: Option<String>,
    /// dmd: keep the full action type (`driver_actions/texting_right`) as the label.
    #[arg(long)]
    pub full_type: bool,
}

const IMPORT_HELP: &str = "\
Formats (details and rules: docs/importers.md):
  label-studio  Label Studio JSON export (list of tasks; JSON-MIN too) with TimelineLabels
                results; 1-based inclusive frame ranges -> 0-based half-open frames.
                Annotators are merged by per-frame vote.
  drive-act     Drive&Act activities_3s/{view}/*.csv chunks -> one segment per annotation.
                --video-pattern default: {view}/{file_id}.mp4 under the folder that holds
                activities_3s; placeholders {view} {name} {file_id} {session} {participant}.
  aicity        AI City Challenge Track 3 user CSVs (H:MM:SS times, blank cells repeat the
                cell above); segments in seconds from one camera view per block.
  dmd           DMD OpenLABEL JSON (*_ann_distraction.json); inclusive frame_end; stream
                frame shifts -> offset_s. --video-pattern default: {stem}_{camera}.mp4 next
                to the JSON; placeholders {stem} {camera} {stream} {view}.

Video paths are written relative to --data-root (default --out); nothing is written when
any input is invalid.";

/// One manifest row: a view of a session.
#[derive(Debug, Clone)]
pub(crate) struct ViewRow {
    pub session: String,
    pub subject: String,
    pub view: String,
    /// Relative to the data root, `/`-separated.
    pub video: String,
    pub offset_s: Option<f64>,
    pub split: Option<String>,
    /// Where it came from, for messages (`file line N`, `file: [i].data`).
    pub at: String,
}

/// A segment's time span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Span {
    /// Source frames of `view`, half-open.
    Frames { start: i64, end: i64, view: String },
    /// Seconds on the session clock, half-open.
    Seconds { start: f64, end: f64 },
}

impl Span {
    fn bounds(&self) -> (f64, f64) {
        match self {
            Span::Frames { start, end, .. } => (*start as f64, *end as f64),
            Span::Seconds { start, end } => (*start, *end),
        }
    }
    /// Frames of which view, or None for seconds: spans are comparable when equal.
    fn unit(&self) -> Option<&str> {
        match self {
            Span::Frames { view, .. } => Some(view),
            Span::Seconds { .. } => None,
        }
    }
    fn show(&self) -> String {
        match self {
            Span::Frames { start, end, view } => format!("frames {start}-{end} of `{view}`"),
            Span::Seconds { start, end } => format!("{}-{} s", num(*start), num(*end)),
        }
    }
}

/// One labelled segment.
#[derive(Debug, Clone)]
pub(crate) struct Seg {
    pub session: String,
    pub label: String,
    pub span: Span,
    /// Where it came from, for messages.
    pub at: String,
    /// Segments of one group may not overlap within a session (one label at a time).
    pub group: String,
}

/// What an importer read.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    pub views: Vec<ViewRow>,
    pub segs: Vec<Seg>,
    pub warnings: Vec<String>,
    /// Annotation files read.
    pub files: usize,
}

/// Shared settings of a run, resolved from [`ImportArgs`].
pub(crate) struct Ctx {
    /// Absolute, normalised data root.
    pub root: PathBuf,
    /// `--views` filter.
    pub keep: Option<Vec<String>>,
}

impl Ctx {
    /// Is view `name` imported?
    pub fn keep_view(&self, name: &str) -> bool {
        self.keep
            .as_ref()
            .is_none_or(|k| k.iter().any(|v| v == name))
    }

    /// `video` (a file path) relative to the data root, `/`-separated.
    pub fn video_rel(&self, video: &Path) -> Result<String, String> {
        let v = absolute(video);
        if let Ok(r) = v.strip_prefix(&self.root) {
            return Ok(slash(r));
        }
        // Symbolic links (e.g. /tmp -> /private/tmp): compare canonical forms too.
        let canon_root = self.root.canonicalize().ok();
        let canon_v = v.canonicalize().ok().or_else(|| {
            let parent = v.parent()?.canonicalize().ok()?;
            Some(parent.join(v.file_name()?))
        });
        for r in [Some(&self.root), canon_root.as_ref()]
            .into_iter()
            .flatten()
        {
            for p in [Some(&v), canon_v.as_ref()].into_iter().flatten() {
                if let Ok(rel) = p.strip_prefix(r) {
                    return Ok(slash(rel));
                }
            }
        }
        Err(format!(
            "video {} is not inside the data root {}",
            v.display(),
            self.root.display()
        ))
    }
}

/// `p` made absolute (against the current folder) and lexically normalised.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A number for CSV and messages: integers without a fraction, else up to 6 decimals.
pub(crate) fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.to_string()
        }
    }
}

/// Parse `a=b,c=d` into ordered pairs.
pub(crate) fn parse_view_map(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((a, b)) = part.split_once('=') else {
            return Err(format!(
                "--view-map: `{part}` is not SOURCE=NAME; write e.g. --view-map kinect_color=front,inner_mirror=mirror"
            ));
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() || b.is_empty() {
            return Err(format!("--view-map: `{part}` has an empty side"));
        }
        if out.iter().any(|(x, _): &(String, String)| x == a) {
            return Err(format!("--view-map: `{a}` is mapped twice"));
        }
        out.push((a.to_string(), b.to_string()));
    }
    Ok(out)
}

/// A comma-separated list.
pub(crate) fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Files to read: every file given, and in each folder given the files `want` accepts
/// (recursively when `deep`), sorted.
pub(crate) fn collect_files(
    sources: &[PathBuf],
    deep: bool,
    want: &dyn Fn(&Path) -> bool,
) -> Result<Vec<(PathBuf, bool)>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for src in sources {
        if src.is_file() {
            out.push((src.clone(), true));
        } else if src.is_dir() {
            let mut found = Vec::new();
            walk(src, deep, want, &mut found);
            found.sort();
            if found.is_empty() {
                problems.push(format!(
                    "{}: no annotation files found in this folder; give the files or the right folder",
                    src.display()
                ));
            }
            out.extend(found.into_iter().map(|f| (f, false)));
        } else {
            problems.push(format!("{}: not found", src.display()));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn walk(dir: &Path, deep: bool, want: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if deep {
                walk(&p, deep, want, out);
            }
        } else if want(&p) {
            out.push(p);
        }
    }
}

/// Lines of a labels file: (line number, label), blank lines and `#` comments skipped.
fn read_label_lines(path: &Path) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().trim_start_matches('\u{feff}').to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect())
}

/// Options that only some formats read; giving one to another format is an error.
fn check_options(a: &ImportArgs) -> Vec<String> {
    let given: &[(&str, bool, &[&str])] = &[
        (
            "--view-map",
            a.view_map.is_some(),
            &["drive-act", "aicity", "dmd"],
        ),
        (
            "--time-view",
            a.time_view.is_some(),
            &["label-studio", "drive-act", "aicity"],
        ),
        ("--view", a.opts.view.is_some(), &["label-studio"]),
        (
            "--subject",
            a.opts.subject.is_some(),
            &["label-studio", "dmd"],
        ),
        ("--video-key", a.opts.video_key.is_some(), &["label-studio"]),
        ("--min-votes", a.opts.min_votes.is_some(), &["label-studio"]),
        (
            "--video-pattern",
            a.opts.video_pattern.is_some(),
            &["drive-act", "dmd"],
        ),
        ("--level", a.opts.level.is_some(), &["drive-act"]),
        (
            "--split-index",
            a.opts.split_index.is_some(),
            &["drive-act"],
        ),
        ("--video-ext", a.opts.video_ext.is_some(), &["aicity"]),
        ("--labels-map", a.opts.labels_map.is_some(), &["aicity"]),
        ("--fps", a.opts.fps.is_some(), &["dmd"]),
        ("--namespace", a.opts.namespace.is_some(), &["dmd"]),
        ("--full-type", a.opts.full_type, &["dmd"]),
    ];
    given
        .iter()
        .filter(|(_, on, fmts)| *on && !fmts.contains(&a.format.as_str()))
        .map(|(opt, _, fmts)| {
            format!(
                "{opt} does not apply to `{}` (it is read by {}); remove it",
                a.format,
                fmts.join(", ")
            )
        })
        .collect()
}

/// Run `prep import`; returns the summary line.
pub fn run(args: &ImportArgs) -> Result<String, PrepError> {
    let mut problems = check_options(args);
    if let Some(m) = args.opts.min_votes {
        if m == 0 {
            problems.push("--min-votes must be at least 1".into());
        }
    }
    if let Some(f) = args.opts.fps {
        if !(f.is_finite() && f > 0.0) {
            problems.push(format!("--fps {f} is not a positive number"));
        }
    }
    if let Some(b) = &args.background {
        if b.trim().is_empty() || b.contains(['\n', '\r']) {
            problems.push("--background needs a non-empty one-line label".into());
        }
    }
    let vocab = match &args.labels {
        Some(p) => match read_label_lines(p) {
            Ok(lines) if lines.is_empty() => {
                problems.push(format!(
                    "{}: no labels in it; write one label per line",
                    p.display()
                ));
                None
            }
            Ok(lines) => {
                let mut seen = HashMap::new();
                for (n, l) in &lines {
                    if let Some(first) = seen.insert(l.clone(), *n) {
                        problems.push(format!(
                            "{} line {n}: label `{l}` repeats line {first}; keep one",
                            p.display()
                        ));
                    }
                }
                Some((p.clone(), lines))
            }
            Err(e) => {
                problems.push(e);
                None
            }
        },
        None => None,
    };
    let keep = args.views.as_deref().map(list);
    if keep.as_ref().is_some_and(Vec::is_empty) {
        problems.push("--views is empty; name the views to import".into());
    }
    if !problems.is_empty() {
        return Err(PrepError::Invalid(problems));
    }
    let root = absolute(args.data_root.as_deref().unwrap_or(&args.out));
    let ctx = Ctx { root, keep };

    let imported = match args.format.as_str() {
        "label-studio" => label_studio::import(args, &ctx),
        "drive-act" => drive_act::import(args, &ctx),
        "aicity" => aicity::import(args, &ctx),
        "dmd" => dmd::import(args, &ctx),
        other => Err(vec![format!(
            "unknown format `{other}`; use one of {}",
            FORMATS.join(", ")
        )]),
    }
    .map_err(PrepError::Invalid)?;
    let files = imported.files;
    let (views, segs, warnings) = finish(imported, args, &ctx, vocab.as_ref())?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let written = write_outputs(&args.out, &views, &segs, vocab.as_ref())?;

    let sessions: HashSet<&str> = views.iter().map(|v| v.session.as_str()).collect();
    let mut view_names: Vec<&str> = Vec::new();
    for v in &views {
        if !view_names.contains(&v.view.as_str()) {
            view_names.push(&v.view);
        }
    }
    let labels: HashSet<&str> = segs.iter().map(|s| s.label.as_str()).collect();
    let out = args.out.display();
    let mut summary = format!(
        "prep import {}: {} file(s) -> {} sessions, {} views ({}), {} segments, {} labels; wrote {}",
        args.format,
        files,
        sessions.len(),
        view_names.len(),
        view_names.join(", "),
        segs.len(),
        labels.len(),
        written.join(", ")
    );
    let _ = write!(
        summary,
        "\n  next: prep build --manifest {out}/manifest.csv --segments {out}/segments.csv --out CACHE"
    );
    if absolute(&args.out) != ctx.root {
        let _ = write!(summary, " --data-root {}", ctx.root.display());
    }
    Ok(summary)
}

/// Manifest rows, segments and warnings, ready to write.
type Finished = (Vec<ViewRow>, Vec<Seg>, Vec<String>);

/// Checks and fixes shared by all formats: views filter, duplicates, complete sessions,
/// label vocabulary, overlaps, background. Returns sorted rows and warnings.
fn finish(
    imp: Imported,
    args: &ImportArgs,
    ctx: &Ctx,
    vocab: Option<&(PathBuf, Vec<(usize, String)>)>,
) -> Result<Finished, PrepError> {
    let Imported {
        views,
        mut segs,
        mut warnings,
        ..
    } = imp;
    let mut problems = Vec::new();

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

    // One row per (session, view), one subject and split per session.
    let mut seen: HashMap<(&str, &str), &ViewRow> = HashMap::new();
    let mut per_session: HashMap<&str, &ViewRow> = HashMap::new();
    for v in &views {
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
    for s in &session_order {
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
    for g in &segs {
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

    // Label vocabulary.
    if let Some((path, lines)) = vocab {
        let known: HashSet<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        let shown = path.display();
        let mut reported: HashSet<&str> = HashSet::new();
        for g in &segs {
            if !known.contains(g.label.as_str()) && reported.insert(&g.label) {
                problems.push(format!(
                    "{}: label `{}` is not in {shown}{}; add it there or fix the annotation",
                    g.at,
                    g.label,
                    closest(&g.label, &known)
                ));
            }
        }
        if let Some(b) = &args.background {
            if !known.contains(b.as_str()) {
                problems.push(format!(
                    "--background `{b}` is not in {shown}; add it there"
                ));
            }
        }
    }

    // Overlaps within a session and group.
    let pos: HashMap<&str, usize> = session_order
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    segs.sort_by(|a, b| {
        let (sa, _) = a.span.bounds();
        let (sb, _) = b.span.bounds();
        pos.get(a.session.as_str())
            .cmp(&pos.get(b.session.as_str()))
            .then(sa.total_cmp(&sb))
    });
    let mut last: HashMap<(&str, &str, Option<&str>), &Seg> = HashMap::new();
    for g in &segs {
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

    if !problems.is_empty() {
        return Err(PrepError::Invalid(problems));
    }

    // Background: fill gaps from 0 to each session's last end, per group and unit.
    if let Some(bg) = &args.background {
        let mut fill = Vec::new();
        let mut cursor: BTreeMap<(usize, String, Option<String>), (f64, Seg)> = BTreeMap::new();
        for g in &segs {
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
                    label: bg.clone(),
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
        segs.sort_by(|a, b| {
            let (sa, _) = a.span.bounds();
            let (sb, _) = b.span.bounds();
            pos.get(a.session.as_str())
                .cmp(&pos.get(b.session.as_str()))
                .then(sa.total_cmp(&sb))
        });
    }

    // Sessions without segments, and videos not found.
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

    let mut views = views;
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

fn csv_bytes(rows: Vec<Vec<String>>) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(&r).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// Write manifest.csv, segments.csv (and labels.txt) under temporary names, then rename.
fn write_outputs(
    out: &Path,
    views: &[ViewRow],
    segs: &[Seg],
    vocab: Option<&(PathBuf, Vec<(usize, String)>)>,
) -> Result<Vec<String>, PrepError> {
    let with_offset = views.iter().any(|v| v.offset_s.is_some());
    let with_split = views.iter().any(|v| v.split.is_some());
    let mut rows = vec![{
        let mut h: Vec<String> = ["session", "subject", "view", "video"]
            .map(String::from)
            .to_vec();
        if with_offset {
            h.push("offset_s".into());
        }
        if with_split {
            h.push("split".into());
        }
        h
    }];
    for v in views {
        let mut r = vec![
            v.session.clone(),
            v.subject.clone(),
            v.view.clone(),
            v.video.clone(),
        ];
        if with_offset {
            r.push(num(v.offset_s.unwrap_or(0.0)));
        }
        if with_split {
            r.push(v.split.clone().unwrap_or_default());
        }
        rows.push(r);
    }
    let manifest = csv_bytes(rows).map_err(PrepError::Other)?;

    let frames = segs.iter().any(|g| matches!(g.span, Span::Frames { .. }));
    let secs = segs.iter().any(|g| matches!(g.span, Span::Seconds { .. }));
    let mut header: Vec<String> = vec!["session".into()];
    if secs || !frames {
        header.extend(["start_s".into(), "end_s".into()]);
    }
    if frames {
        header.extend(["start_frame".into(), "end_frame".into()]);
    }
    header.push("label".into());
    if frames {
        header.push("frame_view".into());
    }
    let mut rows = vec![header];
    for g in segs {
        let mut r = vec![g.session.clone()];
        match &g.span {
            Span::Seconds { start, end } => {
                r.extend([num(*start), num(*end)]);
                if frames {
                    r.extend([String::new(), String::new()]);
                }
                r.push(g.label.clone());
                if frames {
                    r.push(String::new());
                }
            }
            Span::Frames { start, end, view } => {
                if secs {
                    r.extend([String::new(), String::new()]);
                }
                r.extend([
                    start.to_string(),
                    end.to_string(),
                    g.label.clone(),
                    view.clone(),
                ]);
            }
        }
        rows.push(r);
    }
    let segments = csv_bytes(rows).map_err(PrepError::Other)?;

    let mut files: Vec<(&str, Vec<u8>)> =
        vec![("manifest.csv", manifest), ("segments.csv", segments)];
    if let Some((_, lines)) = vocab {
        let mut text = String::new();
        for (_, l) in lines {
            text.push_str(l);
            text.push('\n');
        }
        files.push(("labels.txt", text.into_bytes()));
    }

    std::fs::create_dir_all(out).map_err(io(out))?;
    let tag = format!(".tmp-import-{}", std::process::id());
    let mut temps = Vec::new();
    for (name, bytes) in &files {
        let tmp = out.join(format!("{name}{tag}"));
        if let Err(e) = std::fs::write(&tmp, bytes) {
            for t in &temps {
                let _ = std::fs::remove_file(t);
            }
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        temps.push(tmp);
    }
    for ((name, _), tmp) in files.iter().zip(&temps) {
        let dest = out.join(name);
        std::fs::rename(tmp, &dest).map_err(io(&dest))?;
    }
    Ok(files
        .iter()
        .map(|(n, _)| out.join(n).display().to_string())
        .collect())
}

/// Fill a `{name}` pattern; unknown placeholders are an error.
pub(crate) fn fill_pattern(pattern: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(format!("--video-pattern `{pattern}`: a `{{` is not closed"));
        };
        let key = &after[..j];
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => out.push_str(v),
            None => {
                return Err(format!(
                    "--video-pattern `{pattern}`: unknown placeholder {{{key}}}; use {}",
                    values
                        .iter()
                        .map(|(k, _)| format!("{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The deepest folder that holds all `paths` (for a `--data-root` suggestion).
pub(crate) fn common_folder(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut it = paths.iter();
    let first = absolute(it.next()?);
    let mut common: PathBuf = first.parent()?.to_path_buf();
    for p in it {
        let p = absolute(p);
        while !p.starts_with(&common) {
            if !common.pop() {
                return None;
            }
        }
    }
    Some(common)
}

/// One error for all videos outside the data root (`(at, error)` each), suggesting a
/// --data-root that holds `all_videos`.
pub(crate) fn outside_root_problem(
    outside: &[(String, String)],
    all_videos: &[PathBuf],
) -> Option<String> {
    let (at, err) = outside.first()?;
    let hint = common_folder(all_videos)
        .map(|c| format!("--data-root {}", c.display()))
        .unwrap_or_else(|| "--data-root DIR".into());
    let more = match outside.len() {
        1 => String::new(),
        n => format!(" (and {} more video(s))", n - 1),
    };
    Some(format!(
        "{at}: {err}{more}; pass {hint} (a folder holding all videos; give prep build the same --data-root), or put --out there"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_short() {
        assert_eq!(num(7.0), "7");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(1.0 / 29.76), "0.033602");
        assert_eq!(num(-0.0000001), "0");
    }

    #[test]
    fn view_maps_parse_in_order() {
        let m = parse_view_map("kinect_color=front, inner_mirror=mirror").unwrap();
        assert_eq!(
            m,
            vec![
                ("kinect_color".to_string(), "front".to_string()),
                ("inner_mirror".to_string(), "mirror".to_string())
            ]
        );
        assert!(parse_view_map("a").unwrap_err().contains("SOURCE=NAME"));
        assert!(parse_view_map("a=b,a=c").unwrap_err().contains("twice"));
    }

    #[test]
    fn patterns_fill_and_reject_unknown_placeholders() {
        let v = [
            ("view", "kinect_color"),
            ("file_id", "vp1/run1.kinect_color"),
        ];
        assert_eq!(
            fill_pattern("{view}/{file_id}.mp4", &v).unwrap(),
            "kinect_color/vp1/run1.kinect_color.mp4"
        );
        assert!(fill_pattern("{nope}.mp4", &v)
            .unwrap_err()
            .contains("unknown placeholder {nope}"));
        assert!(fill_pattern("{view.mp4", &v)
            .unwrap_err()
            .contains("not closed"));
    }

    #[test]
    fn video_paths_are_relative_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Ctx {
            root: absolute(dir.path()),
            keep: None,
        };
        assert_eq!(
            ctx.video_rel(&dir.path().join("a/../b/c.mp4")).unwrap(),
            "b/c.mp4"
        );
        assert!(ctx
            .video_rel(Path::new("/elsewhere/c.mp4"))
            .unwrap_err()
            .contains("not inside the data root"));
    }

    #[test]
    fn common_folder_of_paths() {
        let c = common_folder(&[PathBuf::from("/d/a/x.mp4"), PathBuf::from("/d/b/y.mp4")]);
        assert_eq!(c, Some(PathBuf::from("/d")));
    }
}
