//! `prep build`: validate -> probe -> plan timelines -> decode/resize/write jobs in
//! parallel -> commit the index -> collect garbage.
//!
//! Crash safety: shards and `job.json` files are written under temporary names and
//! renamed; the index tables are renamed into place next and `meta.json` (which holds
//! their checksums) last. Nothing an index references is ever overwritten, so a `kill -9`
//! at any point leaves either the previous cache or the new one, and a re-run redoes only
//! the jobs that did not finish.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mvdrive_schemas::commit::{commit, CacheLock};
use mvdrive_schemas::index::{LabelRow, SegmentRow, SessionRow};
use mvdrive_schemas::meta::{Meta, Skipped, SourceFile, Totals};
use mvdrive_schemas::{FORMAT_VERSION, META_FILE};
use rayon::prelude::*;

use crate::config::{Fps, PrepConfig};
use crate::error::{io, PrepError};
use crate::job::{Job, JobFile};
use crate::manifest::Manifest;
use crate::segments::{map_segments, overlap_warnings, Segments};
use crate::sweep::{collect_garbage, remove_tmp_files};
use crate::timeline::{Timeline, ViewSpan};
use crate::video::{self, VideoInfo};
use mvdrive_common::progress;

/// Inputs of `prep build`.
#[derive(Debug, Clone, Default)]
pub struct BuildArgs {
    /// manifest.csv / .parquet.
    pub manifest: PathBuf,
    /// segments.csv / .parquet (`None`: a cache without labels, e.g. of recordings to run
    /// `train predict` over).
    pub segments: Option<PathBuf>,
    /// Cache folder.
    pub out: PathBuf,
    /// Root that video paths are relative to (default: the manifest's folder).
    pub data_root: Option<PathBuf>,
    /// labels.txt fixing the class order.
    pub labels: Option<PathBuf>,
    /// Settings.
    pub config: PrepConfig,
    /// No progress bar.
    pub quiet: bool,
    /// `--part k/n`: build only the sessions whose position in the manifest's sorted
    /// session ids is `k` modulo `n` (0-based `k`), into a partial cache for `prep merge`.
    pub part: Option<(u32, u32)>,
    /// Check the checksums of reused records and redo views whose shards are damaged.
    pub rehash: bool,
    /// Cache the views each session has when some sessions lack a camera (recorded as
    /// `partial_views` in `meta.json`); without it such a manifest is refused.
    pub allow_missing_views: bool,
}

/// What `prep build` did.
#[derive(Debug, Clone, Default)]
pub struct BuildSummary {
    /// Sessions in the committed index.
    pub sessions: usize,
    /// (session, view) jobs decoded in this run.
    pub jobs_run: usize,
    /// Jobs reused from an earlier run.
    pub jobs_reused: usize,
    /// Timeline frames written in this run (all views).
    pub frames_written: u64,
    /// Source frames decoded in this run.
    pub frames_decoded: u64,
    /// Sessions left out, with reasons.
    pub skipped: Vec<Skipped>,
    /// Segments in the index.
    pub segments: usize,
    /// Bytes of RGB records in the index.
    pub rgb_bytes: u64,
    /// Bytes of keypoint records in the index.
    pub kpt_bytes: u64,
    /// Shard files in the index.
    pub shards: usize,
    /// Wall time.
    pub seconds: f64,
    /// Warnings worth repeating at the end.
    pub warnings: Vec<String>,
    /// Peak resident memory of this process, bytes (Linux; 0 elsewhere).
    pub peak_rss: u64,
}

pub use mvdrive_common::sys::peak_rss_bytes;

/// A session's timeline and the jobs of its views.
pub(crate) struct SessionPlan {
    pub(crate) timeline: Timeline,
    pub(crate) jobs: Vec<Job>,
}

/// Run `prep build`.
pub fn build(args: &BuildArgs) -> Result<BuildSummary, PrepError> {
    let started = Instant::now();
    let cfg = &args.config;
    let manifest = Manifest::load(
        &args.manifest,
        args.data_root.as_deref(),
        args.allow_missing_views,
    )
    .map_err(PrepError::Invalid)?;
    let segments = match &args.segments {
        Some(path) => {
            Segments::load(path, &manifest, args.labels.as_deref()).map_err(PrepError::Invalid)?
        }
        None => Segments::none(),
    };
    let views_total: usize = manifest.sessions.iter().map(|s| s.views.len()).sum();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads().clamp(1, views_total.max(1)))
        .build()
        .map_err(|e| PrepError::Other(format!("cannot start worker threads: {e}")))?;
    let mut summary = BuildSummary::default();
    let mut manifest = manifest;
    if let Some((k, n)) = args.part {
        manifest.sessions = select_part(&manifest.sessions, k, n);
    }

    // Probe every video (headers only) in parallel.
    let entries: Vec<_> = manifest
        .sessions
        .iter()
        .flat_map(|s| s.views.iter())
        .collect();
    let probes: Vec<Result<VideoInfo, String>> = pool.install(|| {
        entries
            .par_iter()
            .map(|e| video::probe(&e.path, e.fps))
            .collect()
    });
    let probe: HashMap<(&str, &str), &Result<VideoInfo, String>> = entries
        .iter()
        .zip(&probes)
        .map(|(e, p)| ((e.session.as_str(), e.view.as_str()), p))
        .collect();

    let mut problems = Vec::new();
    let plans = plan_sessions(&manifest, &probe, cfg, &mut summary, &mut problems)?;
    let skipped_sessions: HashSet<String> =
        summary.skipped.iter().map(|s| s.session.clone()).collect();
    let mut seg_rows = map_segments(&segments, &manifest, &plans, &mut summary, &mut problems);
    let seg_file = segments.path.display().to_string();
    if !problems.is_empty() {
        return Err(PrepError::Invalid(problems));
    }
    summary
        .warnings
        .extend(overlap_warnings(&seg_rows, &seg_file));

    let out = &args.out;
    let lock = open_cache(out)?;
    let done = run_jobs(&plans, out, args, &pool, &mut summary);
    let skipped_sessions: HashSet<String> = skipped_sessions
        .into_iter()
        .chain(summary.skipped.iter().map(|s| s.session.clone()))
        .collect();

    let by_key: HashMap<(String, String), JobFile> = done
        .into_iter()
        .map(|jf| ((jf.view.session.clone(), jf.view.view.clone()), jf))
        .collect();
    let IndexRows {
        sessions: session_rows,
        views: view_rows,
        records: record_rows,
        sources,
    } = assemble(&manifest, &plans, &by_key, &skipped_sessions);
    seg_rows.retain(|r| !skipped_sessions.contains(&r.session));
    for (i, r) in seg_rows.iter_mut().enumerate() {
        r.segment_id = i as u64;
    }
    let label_rows = label_rows(&segments.labels, &seg_rows);
    let totals = Totals::compute(&session_rows, &view_rows, &record_rows, &seg_rows);

    summary.sessions = session_rows.len();
    summary.segments = seg_rows.len();
    summary.rgb_bytes = totals.rgb_bytes;
    summary.kpt_bytes = totals.kpt_bytes;
    summary.shards = record_rows
        .iter()
        .map(|r| r.shard.as_str())
        .collect::<HashSet<_>>()
        .len();
    // Finished jobs of skipped sessions stay on disk (unreferenced) so that a re-run after
    // fixing the failed view reuses them.
    let referenced: HashSet<PathBuf> = by_key
        .values()
        .flat_map(|jf| jf.records.iter().map(|r| out.join(&r.shard)))
        .collect();
    let meta = build_meta(args, &manifest, sources, summary.skipped.clone(), totals);
    commit(
        out,
        meta,
        &session_rows,
        &view_rows,
        &record_rows,
        &seg_rows,
        &label_rows,
    )?;
    let kept_dirs: HashSet<PathBuf> = plans
        .values()
        .flat_map(|p| p.jobs.iter())
        .filter(|j| by_key.contains_key(&(j.entry.session.clone(), j.entry.view.clone())))
        .map(|j| j.dir(out))
        .collect();
    collect_garbage(out, &referenced, &kept_dirs);
    drop(lock);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.peak_rss = peak_rss_bytes();
    Ok(summary)
}

/// Plan each session's timeline and jobs. A view whose header cannot be read skips its
/// session (listed in `summary.skipped`); other problems are added to `problems`.
fn plan_sessions(
    manifest: &Manifest,
    probe: &HashMap<(&str, &str), &Result<VideoInfo, String>>,
    cfg: &PrepConfig,
    summary: &mut BuildSummary,
    problems: &mut Vec<String>,
) -> Result<BTreeMap<String, SessionPlan>, PrepError> {
    let mut plans: BTreeMap<String, SessionPlan> = BTreeMap::new();
    for s in &manifest.sessions {
        let mut infos = Vec::new();
        for v in &s.views {
            match probe[&(s.name.as_str(), v.view.as_str())] {
                Ok(info) => infos.push(info.clone()),
                Err(e) => summary.skipped.push(Skipped {
                    session: s.name.clone(),
                    view: v.view.clone(),
                    reason: format!("{}: {e}", v.path.display()),
                }),
            }
        }
        if infos.len() != s.views.len() {
            continue;
        }
        // A single picture (an image, or a video of one frame) has no time to align.
        let stills: Vec<String> = s
            .views
            .iter()
            .zip(&infos)
            .filter(|(_, i)| i.duration_s * i.fps < 1.5)
            .map(|(v, i)| {
                format!(
                    "{} line {}: {} ({}) holds a single frame ({:.3} s at {:.3} fps), not a video; give a video file",
                    manifest.path.display(),
                    v.line,
                    v.path.display(),
                    i.codec,
                    i.duration_s,
                    i.fps
                )
            })
            .collect();
        if !stills.is_empty() {
            problems.extend(stills);
            continue;
        }
        let spans: Vec<ViewSpan> = s
            .views
            .iter()
            .zip(&infos)
            .map(|(v, i)| ViewSpan {
                offset_s: v.offset_s,
                duration_s: i.duration_s,
            })
            .collect();
        let fps = match cfg.fps {
            Fps::Fixed(f) => f,
            Fps::Source => infos[0].fps,
        };
        let timeline = match Timeline::for_views(&spans, fps) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!(
                    "{} line {}: session `{}`: {e}",
                    manifest.path.display(),
                    s.views[0].line,
                    s.name
                ));
                continue;
            }
        };
        for (v, info) in s.views.iter().zip(&infos) {
            let (Some(kp), Some(layout)) = (&v.keypoints_path, &v.keypoint_layout) else {
                continue;
            };
            match crate::keypoints::load(kp, layout, info.width, info.height) {
                Err(e) => problems.push(format!("{} line {}: {e}", manifest.path.display(), v.line)),
                Ok(t) if !t.pixels && cfg.kpt_normalize == crate::keypoints::KptNormalize::Image => problems.push(format!(
                    "{} line {}: prep.kpt_normalize=image needs pixel coordinates, but {} ({layout}) holds 3-D world coordinates; use none or center_scale",
                    manifest.path.display(),
                    v.line,
                    kp.display()
                )),
                Ok(_) => {}
            }
        }
        let mut jobs = Vec::new();
        for (v, info) in s.views.iter().zip(infos) {
            jobs.push(Job::new(v.clone(), info, timeline, cfg).map_err(io(&v.path))?);
        }
        plans.insert(s.name.clone(), SessionPlan { timeline, jobs });
    }

    Ok(plans)
}

/// Check that `out` is a cache (or empty, or new), take its lock and sweep temporary
/// files of a crashed run. From here on `prep build` writes.
fn open_cache(out: &Path) -> Result<CacheLock, PrepError> {
    if out.is_dir()
        && !out.join(META_FILE).exists()
        && !out.join("shards").exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(PrepError::Other(format!(
            "{}: is a folder with other files, not a cache; give --out an empty or new folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let Some(lock) = CacheLock::try_acquire(out)? else {
        return Err(PrepError::Other(format!(
            "{}: another `prep build` is writing this cache; wait for it to finish",
            out.display()
        )));
    };
    remove_tmp_files(out);
    Ok(lock)
}

/// Reuse the finished jobs and run the others in parallel on `pool`, with a progress bar;
/// returns every finished job (failed views are listed in `summary.skipped`).
fn run_jobs(
    plans: &BTreeMap<String, SessionPlan>,
    out: &Path,
    args: &BuildArgs,
    pool: &rayon::ThreadPool,
    summary: &mut BuildSummary,
) -> Vec<JobFile> {
    let cfg = &args.config;
    let mut done: Vec<JobFile> = Vec::new();
    let mut todo: Vec<&Job> = Vec::new();
    for plan in plans.values() {
        for job in &plan.jobs {
            match job.reusable(out, args.rehash) {
                Some(jf) => done.push(jf),
                None => todo.push(job),
            }
        }
    }
    summary.jobs_reused = done.len();
    summary.jobs_run = todo.len();
    let total: u64 = todo.iter().map(|j| j.timeline.frames).sum();
    let pb = progress::bar(total, "frames", args.quiet);
    pb.set_message(format!("{} views", todo.len()));
    let tick = |n: u64| pb.inc(n);
    let results: Vec<(&Job, Result<JobFile, String>)> = pool.install(|| {
        todo.par_iter()
            .map(|j| (*j, j.run(out, cfg, &tick)))
            .collect()
    });
    pb.finish_and_clear();
    for (job, r) in results {
        match r {
            Ok(jf) => {
                summary.warnings.extend(jf.warnings.iter().cloned());
                summary.frames_written += job.timeline.frames;
                summary.frames_decoded += jf.view.decoded_frames;
                done.push(jf);
            }
            Err(e) => summary.skipped.push(Skipped {
                session: job.entry.session.clone(),
                view: job.entry.view.clone(),
                reason: format!("{}: {e}", job.entry.path.display()),
            }),
        }
    }
    done
}

/// The index rows of the sessions whose every view is cached.
struct IndexRows {
    sessions: Vec<SessionRow>,
    views: Vec<mvdrive_schemas::index::ViewRow>,
    records: Vec<mvdrive_schemas::index::RecordRow>,
    sources: Vec<SourceFile>,
}

/// Assemble the index rows of the sessions of `manifest` that are planned, not skipped,
/// and whose jobs are in `by_key`.
fn assemble(
    manifest: &Manifest,
    plans: &BTreeMap<String, SessionPlan>,
    by_key: &HashMap<(String, String), JobFile>,
    skipped_sessions: &HashSet<String>,
) -> IndexRows {
    let mut session_rows = Vec::new();
    let mut view_rows = Vec::new();
    let mut record_rows = Vec::new();
    let mut sources = Vec::new();
    for s in &manifest.sessions {
        let Some(plan) = plans.get(&s.name) else {
            continue;
        };
        if skipped_sessions.contains(&s.name) {
            continue;
        }
        session_rows.push(SessionRow {
            session: s.name.clone(),
            subject: s.subject.clone(),
            split: s.split.clone(),
            fps: plan.timeline.fps,
            timeline_start_s: plan.timeline.start_s,
            timeline_frames: plan.timeline.frames,
            fold: s.fold,
        });
        for job in &plan.jobs {
            let jf = &by_key[&(s.name.clone(), job.entry.view.clone())];
            view_rows.push(jf.view.clone());
            record_rows.extend(jf.records.iter().cloned());
            sources.push(SourceFile {
                session: s.name.clone(),
                view: job.entry.view.clone(),
                path: job.entry.video.clone(),
                size: job.size,
                mtime_ns: job.mtime_ns,
            });
        }
    }
    IndexRows {
        sessions: session_rows,
        views: view_rows,
        records: record_rows,
        sources,
    }
}

/// The labels table: every class, with its number of segments.
fn label_rows(labels: &[String], seg_rows: &[SegmentRow]) -> Vec<LabelRow> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| LabelRow {
            label_id: i as u32,
            label: l.clone(),
            segments: seg_rows.iter().filter(|r| r.label_id == i as u32).count() as u64,
        })
        .collect()
}

/// The `meta.json` of a build (its index files are filled in by [`commit`]).
fn build_meta(
    args: &BuildArgs,
    manifest: &Manifest,
    sources: Vec<SourceFile>,
    skipped: Vec<Skipped>,
    totals: Totals,
) -> Meta {
    Meta {
        format_version: FORMAT_VERSION,
        created_by: format!("mvdrive-prep {}", env!("CARGO_PKG_VERSION")),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        params: args.config.params(),
        views: manifest.views.clone(),
        sources,
        index_files: Vec::new(),
        skipped,
        totals,
        part: args.part,
        merged_from: Vec::new(),
        partial_views: manifest
            .sessions
            .iter()
            .any(|s| s.views.len() < manifest.views.len()),
    }
}

/// The sessions of part `k` of `n`: every `n`-th session in sorted id order, from the
/// `k`-th. Deterministic for a given manifest, whatever its row order.
pub fn select_part(
    sessions: &[crate::manifest::SessionEntry],
    k: u32,
    n: u32,
) -> Vec<crate::manifest::SessionEntry> {
    let mut ids: Vec<&str> = sessions.iter().map(|s| s.name.as_str()).collect();
    ids.sort_unstable();
    let mine: HashSet<&str> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 % n == k)
        .map(|(_, s)| *s)
        .collect();
    sessions
        .iter()
        .filter(|s| mine.contains(s.name.as_str()))
        .cloned()
        .collect()
}
