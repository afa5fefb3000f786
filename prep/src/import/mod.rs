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
mod output;
mod rules;
mod shared;

pub(crate) use shared::*;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::PrepError;

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
    let (views, segs, warnings) = rules::finish(imported, args, &ctx, vocab.as_ref())?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let written = output::write_outputs(&args.out, &views, &segs, vocab.as_ref())?;

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
