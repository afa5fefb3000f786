//! `prep`: the command line. Parsing only; the work is in the `mvdrive_prep` library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mvdrive_common::bytes::format_bytes;
use mvdrive_common::progress;
use mvdrive_prep::config::{PrepConfig, PREP_KEYS};
use mvdrive_prep::pipeline::{build, BuildArgs};
use mvdrive_prep::{export, inspect, synth};

/// Turn multi-view driver recordings into a verified, memory-mapped, sharded frame cache.
#[derive(Parser)]
#[command(name = "prep", version, about, long_about = None)]
struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

fn keys_help() -> String {
    let mut s = String::from("Settings (key=value after the options):\n");
    for (k, d) in PREP_KEYS {
        s += &format!("  {k:<24} {d}\n");
    }
    s
}

#[derive(Subcommand)]
enum Command {
    /// Write a small learnable synthetic multi-view dataset (videos, manifest, segments, keypoints).
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of sessions (each has 3 views).
        #[arg(long, default_value_t = 12)]
        sessions: usize,
        /// Random seed: the dataset is a pure function of it.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Labelled segments per session (2-3.2 s each; at least one per class): longer
        /// recordings with more.
        #[arg(long, default_value_t = synth::SEGMENTS_PER_SESSION)]
        segments_per_session: usize,
    },
    /// Decode, align, resize and chunk every view into a cache (re-runs redo only what changed).
    #[command(after_help = keys_help())]
    Build {
        /// manifest.csv or .parquet: session, subject, view, video [, fps, offset_s, keypoints, keypoint_layout, split].
        #[arg(long)]
        manifest: PathBuf,
        /// segments.csv or .parquet: session, start_s, end_s, label [, split] (or start_frame, end_frame [, frame_view]).
        /// Without it the cache has no labels: for `train predict` on new recordings.
        #[arg(long)]
        segments: Option<PathBuf>,
        /// Cache folder to create or update.
        #[arg(long)]
        out: PathBuf,
        /// Folder that video paths are relative to (default: the manifest's folder).
        #[arg(long)]
        data_root: Option<PathBuf>,
        /// labels.txt: one label per line, fixing the class order (default: labels.txt next to
        /// the segments file if present, else sorted labels).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// YAML config (configs/config.yaml layout); key=value overrides win.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Exit 0 even if some videos failed to decode (their sessions are left out).
        #[arg(long)]
        allow_skips: bool,
        /// Build only part K of N (0-based K: every N-th session in sorted id order, from
        /// the K-th) into a partial cache; join the parts with `prep merge`.
        #[arg(long, value_name = "K/N", value_parser = parse_part)]
        part: Option<(u32, u32)>,
        /// Also check the checksums of views reused from an earlier run, and redo damaged
        /// ones (after `prep verify` reported a checksum mismatch).
        #[arg(long)]
        rehash: bool,
        /// Cache the views each session has when some sessions lack a camera (recorded in
        /// meta.json as partial_views; `train` fuses over the views present). Without it,
        /// a session missing a view is an error.
        #[arg(long)]
        allow_missing_views: bool,
        /// key=value settings, e.g. data.img_size=112 prep.fps=8.
        overrides: Vec<String>,
    },
    /// Check checksums, offsets and index consistency; exit 1 on any problem.
    Verify {
        /// Cache folder.
        cache: PathBuf,
    },
    /// Show sessions, views, frames, segments, classes and bytes of a cache.
    Inspect {
        /// Cache folder.
        cache: PathBuf,
        /// Print JSON (keys: sessions, views, timeline_frames, segments, classes, rgb_bytes, kpt_bytes, bytes_by_codec, img_size, fps, compress).
        #[arg(long)]
        json: bool,
    },
    /// Write cached frames as PNG files.
    ExportFrames {
        /// Cache folder.
        cache: PathBuf,
        /// Session id.
        #[arg(long)]
        session: String,
        /// View name.
        #[arg(long)]
        view: String,
        /// First timeline frame.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Number of frames.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Convert Label Studio / Drive&Act / AI City / DMD annotations to manifest.csv + segments.csv.
    Import(mvdrive_prep::import::ImportArgs),
    /// Assign sessions to K folds grouped by subject (no subject in two folds) and write
    /// the manifest with a `fold` column.
    Split {
        /// Manifest to read.
        #[arg(long)]
        manifest: PathBuf,
        /// Number of folds.
        #[arg(long)]
        folds: usize,
        /// Group by subject (default) or session.
        #[arg(long, value_enum, default_value = "subject")]
        by: mvdrive_prep::split::GroupBy,
        /// Random seed of the assignment.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output manifest (default: <manifest>.folds.csv next to it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Join partial caches built with `prep build --part K/N` into one index, without copying shards.
    Merge {
        /// Merged cache folder (new).
        #[arg(long)]
        out: PathBuf,
        /// Partial caches.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
    },
}

fn parse_part(s: &str) -> Result<(u32, u32), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 0/4")?;
    let (k, n): (u32, u32) = (
        k.trim().parse().map_err(|_| "K is not a number")?,
        n.trim().parse().map_err(|_| "N is not a number")?,
    );
    if n == 0 {
        return Err("N must be at least 1".into());
    }
    if k >= n {
        return Err(format!(
            "part {k}/{n}: K counts from 0 and must be below N (parts 0/{n} .. {}/{n})",
            n.max(1) - 1
        ));
    }
    Ok((k, n))
}

fn main() -> ExitCode {
    // Like other Unix tools: a closed pipe (`prep inspect --json | head`) ends us quietly.
    // SAFETY: resetting a signal disposition at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .without_time()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--out` must be a folder (new or existing), never a file.
fn out_folder(out: &Path, what: &str) -> Result<()> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!(
            "{}: is a file, not a folder; --out must be {what}",
            out.display()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let quiet = cli.quiet;
    match &cli.command {
        Command::Synth { out, .. } => out_folder(out, "the folder of the synthetic dataset")?,
        Command::Build { out, .. } | Command::Merge { out, .. } => {
            out_folder(out, "a cache folder (new, or from an earlier prep build)")?
        }
        Command::ExportFrames { out, .. } => out_folder(out, "the folder of the PNG files")?,
        Command::Import(args) => {
            out_folder(&args.out, "the folder of manifest.csv and segments.csv")?
        }
        _ => {}
    }
    match cli.command {
        Command::Synth {
            out,
            sessions,
            seed,
            segments_per_session,
        } => {
            let s = synth::synth_with(&out, sessions, seed, segments_per_session, quiet)?;
            println!(
                "synth: wrote {} sessions, {} videos, {} segments to {} (manifest.csv, segments.csv, labels.txt, keypoints/)",
                s.sessions,
                s.videos,
                s.segments,
                s.out.display()
            );
        }
        Command::Build {
            manifest,
            segments,
            out,
            data_root,
            labels,
            config,
            allow_skips,
            part,
            rehash,
            allow_missing_views,
            overrides,
        } => {
            let mut cfg = PrepConfig::default();
            if let Some(f) = &config {
                cfg.apply_yaml_file(f)?;
            }
            cfg.apply_overrides(&overrides)?;
            if segments.is_none() && labels.is_some() {
                anyhow::bail!(
                    "--labels fixes the class order of --segments; without a segments file the cache has no classes (leave --labels out)"
                );
            }
            let labels = labels.or_else(|| {
                let p = segments.as_ref()?.parent()?.join("labels.txt");
                p.is_file().then_some(p)
            });
            let args = BuildArgs {
                manifest,
                segments,
                out,
                data_root,
                labels,
                config: cfg,
                quiet,
                part,
                rehash,
                allow_missing_views,
            };
            return run_build(&args, allow_skips);
        }
        Command::Verify { cache } => return run_verify(&cache, quiet),
        Command::Inspect { cache, json } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspect::summary(&cache)?)?
                );
            } else {
                print!("{}", inspect::text(&cache)?);
            }
        }
        Command::ExportFrames {
            cache,
            session,
            view,
            start,
            count,
            out,
        } => {
            let files = export::export_frames(&cache, &session, &view, start, count, &out)
                .with_context(|| format!("export-frames from {}", cache.display()))?;
            println!("wrote {} PNG file(s) to {}", files.len(), out.display());
        }
        Command::Import(args) => println!("{}", mvdrive_prep::import::run(&args)?),
        Command::Split {
            manifest,
            folds,
            by,
            seed,
            out,
        } => {
            let out = out.unwrap_or_else(|| manifest.with_extension("folds.csv"));
            let s = mvdrive_prep::split::split(&manifest, &out, folds, by, seed)?;
            for (i, (groups, sessions)) in s.folds.iter().enumerate() {
                println!("fold {i}: {sessions} sessions, {}", groups.join(" "));
            }
            println!("wrote {}", s.out.display());
        }
        Command::Merge { out, parts } => {
            let s = mvdrive_prep::merge::merge(&out, &parts)?;
            println!(
                "merged {} parts: {} sessions, {} records -> {}",
                s.parts,
                s.sessions,
                s.records,
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `prep build` and print its summary; failure when views were skipped and
/// `allow_skips` is off.
fn run_build(args: &BuildArgs, allow_skips: bool) -> Result<ExitCode> {
    let s = build(args)?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "prep build: {} sessions, {} segments, {} RGB + {} keypoints in {} shards -> {}",
        s.sessions,
        s.segments,
        format_bytes(s.rgb_bytes),
        format_bytes(s.kpt_bytes),
        s.shards,
        args.out.display()
    );
    println!(
        "  {} views decoded ({} source frames -> {} timeline frames, {:.0} frames/s), {} reused, {:.1} s, peak RSS {}",
        s.jobs_run,
        s.frames_decoded,
        s.frames_written,
        s.frames_decoded as f64 / s.seconds.max(1e-9),
        s.jobs_reused,
        s.seconds,
        format_bytes(s.peak_rss)
    );
    if !s.skipped.is_empty() {
        eprintln!(
            "skipped {} view(s); their sessions are not in the cache:",
            s.skipped.len()
        );
        for k in &s.skipped {
            eprintln!("  session `{}` view `{}`: {}", k.session, k.view, k.reason);
        }
        if !allow_skips {
            eprintln!("error: some videos could not be decoded; fix or remove them, or pass --allow-skips to accept the cache without them");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `prep verify` with a progress bar and print the report.
fn run_verify(cache: &Path, quiet: bool) -> Result<ExitCode> {
    let total = mvdrive_schemas::meta::Meta::load(cache)
        .map(|m| m.totals.rgb_bytes + m.totals.kpt_bytes)
        .unwrap_or(0);
    let pb = progress::bar(total, "bytes", quiet);
    let report = mvdrive_schemas::verify::verify(cache, |n| pb.inc(n));
    pb.finish_and_clear();
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.ok() {
        println!(
            "ok: {} records, {} checked in {}",
            report.records_checked,
            format_bytes(report.bytes_checked),
            cache.display()
        );
    } else {
        for p in &report.problems {
            eprintln!("{p}");
        }
        eprintln!(
            "error: {} problem(s) in {}; re-run `prep build` to repair it",
            report.problems.len(),
            cache.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
