//! `train plan`: which settings fit a RAM (and VRAM) budget, measured rather than looked up.
//!
//! The effective batch `E = data.batch_size x train.accumulate_grad_batches` of the
//! configuration is kept; the candidates are every `batch_size` dividing `E` (with
//! `accumulate_grad_batches = E / batch_size`), every precision of the device (`32`, and
//! `bf16-mixed` on a CPU with AVX-512; `16-mixed` and `bf16-mixed` on CUDA), gradient
//! checkpointing off and on, and the `data.img_size` / `data.uniform_temporal_subsample_num`
//! values asked for (default: the configuration's). Each candidate runs real optimizer
//! steps in a child process ([`crate::measure::probe::probe_in_child`]) that is stopped as
//! soon as its resident memory passes the RAM budget. Memory grows with the batch size,
//! so for each (precision, checkpointing, size, frames) the batch sizes are tried from
//! small to large and the larger ones are skipped once one is over budget.
//!
//! The recommendation is the fastest fitting setting (seconds per optimizer step, which
//! cover the same effective batch for every candidate) at the configured input size; a
//! smaller image or fewer frames change what the model sees, so they are recommended only
//! when nothing at the configured size fits, and the recommendation says so.

use std::path::PathBuf;

use tch::Device;

use mvdrive_common::bytes::parse_bytes;

use crate::config::{img_size_of, Settings, TrainConfig};
use crate::error::{Result, TrainError};
use crate::measure::probe::{config_overrides, probe_in_child, ProbeOutcome};
use crate::optim::precision::Precision;
use crate::optim::recompute::CheckpointSegments;
use crate::run::session::resolve_device;

/// A `--budget-*` flag's size (binary units: `8G` = 8 GiB); errors name the flag.
fn budget(flag: &str, text: Option<&str>) -> Result<Option<u64>, String> {
    text.map(|t| parse_bytes(t).map_err(|e| format!("{flag}: {e}")))
        .transpose()
}

/// Measure which settings fit a memory budget, and recommend the fastest one.
///
/// Keeps the effective batch (data.batch_size x train.accumulate_grad_batches) of the
/// configuration and tries, with real training steps on the cache, every batch_size
/// dividing it, each precision of the device (32; bf16-mixed on CUDA or an AVX-512 CPU;
/// 16-mixed on CUDA), gradient checkpointing off and on, and the --img-sizes / --frames
/// given. Each setting runs in a child process that is stopped once its resident memory
/// passes --budget-ram. Prints a table (peak RAM, peak VRAM on CUDA, seconds per optimizer
/// step) and the fastest setting that fits, as key=value overrides for `train fit`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Sizes: 512M, 8G, 8GiB, 1.5G or plain bytes (binary: 1G = 2^30 bytes).\nExample: train plan --cache C --budget-ram 8G data.batch_size=4 train.accumulate_grad_batches=2"
)]
pub struct PlanArgs {
    /// Cache folder (from `prep build`): the probes train on its batches.
    #[arg(long)]
    pub cache: PathBuf,
    /// YAML config (configs/config.yaml layout, e.g. a preset); overrides win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Peak RAM allowed for training (resident memory of the whole process).
    #[arg(long, value_name = "SIZE")]
    pub budget_ram: Option<String>,
    /// Peak GPU memory allowed (CUDA runs only).
    #[arg(long, value_name = "SIZE")]
    pub budget_vram: Option<String>,
    /// data.img_size values to try, comma-separated (default: the configured one).
    /// Smaller ones are recommended only when nothing fits at the configured size.
    #[arg(long, value_delimiter = ',', value_name = "N|HxW,...")]
    pub img_sizes: Vec<String>,
    /// Frame counts (T) to try, comma-separated (default: the configured one).
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    pub frames: Vec<i64>,
    /// Timed optimizer steps per setting, after one warm-up step.
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// key.sub=value settings, e.g. data.batch_size=4 train.accumulate_grad_batches=2.
    pub overrides: Vec<String>,
}

/// Runs `train plan`: prints the table and the recommendation; nothing fitting is an error
/// (after the table).
pub fn run(args: &PlanArgs, quiet: bool) -> Result<()> {
    let req = PlanRequest {
        cache: args.cache.clone(),
        settings: Settings::load(args.config.as_deref(), &args.overrides)?,
        user_overrides: args.overrides.clone(),
        budget_ram: budget("--budget-ram", args.budget_ram.as_deref())?,
        budget_vram: budget("--budget-vram", args.budget_vram.as_deref())?,
        img_sizes: args.img_sizes.clone(),
        frames: args.frames.clone(),
        steps: args.steps,
        train_exe: crate::measure::probe::train_exe()?,
        quiet,
    };
    let p = plan(&req)?;
    print!("{}", p.table());
    if p.pruned > 0 {
        println!(
            "({} larger batch sizes not run: a smaller batch of the same setting was over budget or failed)",
            p.pruned
        );
    }
    if let Some(e) = p.no_fit_error() {
        return Err(TrainError::Other(e));
    }
    if let Some(r) = p.recommendation(&args.cache, &args.overrides) {
        print!("{r}");
    }
    Ok(())
}

/// What [`plan`] is asked: the settings and budgets of a `train plan` command.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Cache folder.
    pub cache: PathBuf,
    /// Resolved settings.
    pub settings: Settings,
    /// The overrides the user gave (repeated in the printed `train fit` command).
    pub user_overrides: Vec<String>,
    /// RAM budget, bytes (peak RSS of the training process).
    pub budget_ram: Option<u64>,
    /// VRAM budget, bytes (CUDA only).
    pub budget_vram: Option<u64>,
    /// `data.img_size` values to try (empty: the configuration's).
    pub img_sizes: Vec<String>,
    /// Frame counts to try (empty: the configuration's).
    pub frames: Vec<i64>,
    /// Timed optimizer steps per candidate (after one warm-up step).
    pub steps: usize,
    /// The `train` executable that runs the probes.
    pub train_exe: PathBuf,
    /// No progress bar.
    pub quiet: bool,
}

/// What `train plan` found.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The device probed on.
    pub cuda: bool,
    /// Effective batch kept by every candidate.
    pub effective_batch: usize,
    /// Budgets, bytes.
    pub budget_ram: Option<u64>,
    /// VRAM budget, bytes.
    pub budget_vram: Option<u64>,
    /// Every candidate run, in order.
    pub rows: Vec<Row>,
    /// Candidates not run because a smaller batch of the same setting did not fit (or
    /// failed).
    pub pruned: usize,
    /// Index into `rows` of the recommended setting.
    pub recommended: Option<usize>,
    /// Remark on the recommendation (a smaller input than configured).
    pub note: Option<String>,
    /// The configured `data.img_size` and frames.
    pub configured: (String, i64),
    /// Re-measurements of the smallest settings without the budget, when nothing fit and
    /// every candidate was stopped early: (row, limit it ran under).
    pub needed: Option<(Row, u64)>,
}

fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}

fn measure(
    args: &PlanRequest,
    base: &[String],
    c: &Candidate,
    ram_limit: Option<u64>,
    budget_ram: Option<u64>,
    budget_vram: Option<u64>,
) -> Row {
    let mut overrides = base.to_vec();
    overrides.extend(c.overrides());
    let outcome = probe_in_child(
        &args.train_exe,
        &args.cache,
        &overrides,
        args.steps,
        ram_limit,
    );
    let mut row = Row {
        candidate: c.clone(),
        peak_ram: None,
        complete: false,
        peak_vram: None,
        seconds_per_step: None,
        verdict: Verdict::Fits,
    };
    match outcome {
        Ok(o @ ProbeOutcome::Measured { .. }) => {
            row.peak_ram = Some(o.peak_rss());
            row.complete = true;
            if let ProbeOutcome::Measured { report, .. } = o {
                row.peak_vram = report.peak_device_bytes;
                row.seconds_per_step = Some(report.seconds_per_step);
            }
            row.verdict = if budget_ram.is_some_and(|b| row.peak_ram.unwrap_or(0) > b) {
                Verdict::OverRam
            } else if budget_vram.is_some_and(|b| row.peak_vram.unwrap_or(0) > b) {
                Verdict::OverVram
            } else {
                Verdict::Fits
            };
        }
        Ok(ProbeOutcome::OverBudget { seen_bytes }) => {
            row.peak_ram = Some(seen_bytes);
            row.verdict = Verdict::OverRam;
        }
        Ok(ProbeOutcome::OutOfMemory { reason, seen_bytes }) => {
            row.peak_ram = Some(seen_bytes);
            row.verdict = Verdict::OutOfMemory(reason);
        }
        Err(e) => row.verdict = Verdict::Failed(e.to_string()),
    }
    row
}

/// What the planner tries: every candidate's ingredients, worked out once.
struct Space {
    cuda: bool,
    budget_vram: Option<u64>,
    effective_batch: usize,
    configured: (String, i64),
    /// (data.img_size, frames), the configured one first.
    inputs: Vec<(String, i64)>,
    precisions: Vec<Precision>,
    /// Batch sizes dividing the effective batch, small to large.
    sizes: Vec<usize>,
    /// Checkpointing settings besides off: every segment, and the configured
    /// `model.checkpoint_segments` when it is another.
    segments: Vec<CheckpointSegments>,
    /// The settings every probe starts from, as overrides.
    base: Vec<String>,
}

/// Checks the request and lists what to try.
fn space(args: &PlanRequest) -> Result<Space> {
    if args.budget_ram.is_none() && args.budget_vram.is_none() {
        return Err("give a budget: --budget-ram SIZE (peak RAM of training) and/or --budget-vram SIZE (CUDA)".into());
    }
    let cfg = &args.settings;
    let tc = TrainConfig::new(cfg)?;
    let device = resolve_device(tc.trainer.device)?;
    let cuda = matches!(device, Device::Cuda(_));
    let budget_vram = if cuda { args.budget_vram } else { None };
    if !cuda && args.budget_ram.is_none() {
        return Err(
            "--budget-vram applies to CUDA runs, and this one is on the CPU: give --budget-ram"
                .into(),
        );
    }
    let effective_batch = tc.data.batch_size.max(1) * tc.train.accumulate_grad_batches.max(1);
    let configured = (
        cfg.raw("data.img_size").to_string(),
        tc.data.uniform_temporal_subsample_num,
    );
    let mut img_sizes = args.img_sizes.clone();
    if img_sizes.is_empty() {
        img_sizes.push(configured.0.clone());
    }
    for v in &img_sizes {
        let mut c = cfg.clone();
        c.set("data.img_size", v, false)
            .map_err(|e| format!("--img-sizes: {e}"))?;
    }
    let mut frames = args.frames.clone();
    if frames.is_empty() {
        frames.push(configured.1);
    }
    for &t in &frames {
        if t < 1 {
            return Err(TrainError::Other(format!(
                "--frames: `{t}` is not a frame count (a whole number >= 1)"
            )));
        }
    }
    let precisions: Vec<Precision> = if cuda {
        vec![Precision::Fp32, Precision::Fp16Mixed, Precision::Bf16Mixed]
    } else if let Some(note) = Precision::Bf16Mixed.slow_note(device) {
        // A bf16 probe would take minutes per step, and never be the one to recommend.
        if !args.quiet {
            eprintln!("plan: bf16-mixed is not tried: {note}");
        }
        vec![Precision::Fp32]
    } else {
        vec![Precision::Fp32, Precision::Bf16Mixed]
    };
    let sizes = divisors(effective_batch);
    let base = config_overrides(cfg);
    let mut segments = vec![CheckpointSegments::All];
    if tc.model.checkpoint_segments != CheckpointSegments::All {
        segments.push(tc.model.checkpoint_segments);
    }

    // Groups: configured input first, then the others in the order given.
    let mut inputs: Vec<(String, i64)> = Vec::new();
    for img in &img_sizes {
        for &t in &frames {
            inputs.push((img.clone(), t));
        }
    }
    inputs.sort_by_key(|i| *i != configured);
    Ok(Space {
        cuda,
        budget_vram,
        effective_batch,
        configured,
        inputs,
        precisions,
        sizes,
        segments,
        base,
    })
}

/// Measures the candidates, group by group (input, precision, checkpointing), each group's
/// batch sizes from small to large, skipping the larger ones once one does not fit.
/// Returns the rows and the number of candidates skipped.
fn search(args: &PlanRequest, sp: &Space) -> Result<(Vec<Row>, usize)> {
    let (sizes, base, budget_vram) = (&sp.sizes, &sp.base, sp.budget_vram);
    let effective_batch = sp.effective_batch;
    // Checkpointing off, then each checkpointing setting.
    let dial: Vec<Option<CheckpointSegments>> = std::iter::once(None)
        .chain(sp.segments.iter().copied().map(Some))
        .collect();
    let groups: Vec<(String, i64, Precision, Option<CheckpointSegments>)> = sp
        .inputs
        .iter()
        .flat_map(|(img, t)| {
            let dial = &dial;
            sp.precisions
                .iter()
                .flat_map(move |&p| dial.iter().map(move |ck| (img.clone(), *t, p, *ck)))
        })
        .collect();
    let total = (groups.len() * sizes.len()) as u64;
    let pb = mvdrive_common::progress::bar_with(
        total,
        "plan [{elapsed_precise}] [{wide_bar}] {pos}/{len} settings {msg}",
        args.quiet,
    );
    let mut rows = Vec::new();
    let mut pruned = 0;
    let mut all_failed_first: Option<String> = None;
    for (img, t, p, ck) in &groups {
        for (i, &bs) in sizes.iter().enumerate() {
            let c = Candidate {
                batch_size: bs,
                accumulate: effective_batch / bs,
                precision: *p,
                checkpointing: ck.is_some(),
                segments: ck.unwrap_or_default(),
                img_size: img.clone(),
                frames: *t,
            };
            pb.set_message(c.label());
            let row = measure(
                args,
                base,
                &c,
                args.budget_ram,
                args.budget_ram,
                budget_vram,
            );
            pb.inc(1);
            // Memory grows with the batch: larger batches of a setting that is over budget
            // (or fails, e.g. an input too small for the model) are not run.
            let over = row.verdict != Verdict::Fits;
            if let Verdict::Failed(e) = &row.verdict {
                all_failed_first.get_or_insert_with(|| e.clone());
            }
            rows.push(row);
            if over {
                let left = sizes.len() - i - 1;
                pruned += left;
                pb.inc(left as u64);
                break;
            }
        }
    }
    pb.finish_and_clear();
    if rows.iter().all(|r| matches!(r.verdict, Verdict::Failed(_))) {
        return Err(TrainError::Other(
            all_failed_first.unwrap_or_else(|| "no setting could be measured".into()),
        ));
    }

    Ok((rows, pruned))
}

/// The fastest fitting row at the configured input; else the fastest at the largest input
/// that fits, with a note saying the input is smaller.
fn recommend(rows: &[Row], configured: &(String, i64)) -> (Option<usize>, Option<String>) {
    let fits = |r: &Row| r.verdict == Verdict::Fits;
    let fastest = |want: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .enumerate()
            .filter(|(_, r)| fits(r) && want(r))
            .min_by(|a, b| {
                let (x, y) = (a.1.seconds_per_step, b.1.seconds_per_step);
                x.unwrap_or(f64::INFINITY)
                    .total_cmp(&y.unwrap_or(f64::INFINITY))
            })
            .map(|(i, _)| i)
    };
    let at_configured =
        |r: &Row| r.candidate.img_size == configured.0 && r.candidate.frames == configured.1;
    let mut recommended = fastest(&at_configured);
    let mut note = None;
    if recommended.is_none() {
        // The largest input that fits (pixels x frames), then the fastest there.
        let volume = |r: &Row| {
            let (h, w) = img_size_of(&r.candidate.img_size).unwrap_or((1 << 20, 1 << 20));
            h * w * r.candidate.frames
        };
        if let Some(best) = rows.iter().filter(|r| fits(r)).map(volume).max() {
            recommended = fastest(&|r: &Row| volume(r) == best);
            if let Some(i) = recommended {
                let c = &rows[i].candidate;
                note = Some(format!(
                    "nothing fits at the configured input (data.img_size={} data.uniform_temporal_subsample_num={}); this setting trains on a smaller input (data.img_size={} data.uniform_temporal_subsample_num={}), which changes what the model sees",
                    configured.0, configured.1, c.img_size, c.frames
                ));
            }
        }
    }

    (recommended, note)
}

/// When nothing fits and no candidate ran to the end, measures the leanest settings without
/// the budget (up to the memory this machine has available), so the error can say what is
/// needed.
fn measure_needed(args: &PlanRequest, sp: &Space, rows: &[Row]) -> Option<(Row, u64)> {
    let (inputs, configured, budget_vram) = (&sp.inputs, &sp.configured, sp.budget_vram);
    let (base, effective_batch) = (&sp.base, sp.effective_batch);
    let mut needed = None;
    let ram_binding = rows
        .iter()
        .all(|r| matches!(r.verdict, Verdict::OverRam | Verdict::Failed(_)));
    if ram_binding && !rows.iter().any(|r| r.complete) {
        let limit = mvdrive_common::sys::mem_available_bytes().map(|m| m / 10 * 9);
        let smallest_input = inputs
            .iter()
            .min_by_key(|(img, t)| {
                let (h, w) = img_size_of(img).unwrap_or((1 << 20, 1 << 20));
                h * w * t
            })
            .cloned()
            .unwrap_or_else(|| configured.clone());
        if !args.quiet {
            eprintln!(
                "plan: nothing fits; measuring the leanest settings without the budget to say what is needed"
            );
        }
        for &p in &sp.precisions {
            let c = Candidate {
                batch_size: 1,
                accumulate: effective_batch,
                precision: p,
                checkpointing: true,
                segments: CheckpointSegments::All,
                img_size: smallest_input.0.clone(),
                frames: smallest_input.1,
            };
            let row = measure(args, base, &c, limit, args.budget_ram, budget_vram);
            let replace = match &needed {
                None => true,
                Some((n, _)) => {
                    let n: &Row = n;
                    row.complete && (!n.complete || row.peak_ram < n.peak_ram)
                }
            };
            if replace {
                needed = Some((row, limit.unwrap_or(0)));
            }
        }
    }
    needed
}

/// Run the planner (see the module documentation). Nothing fitting is not an error here:
/// [`Plan::no_fit_error`] phrases it, so the caller can print the table first.
pub fn plan(args: &PlanRequest) -> Result<Plan> {
    let sp = space(args)?;
    let (rows, pruned) = search(args, &sp)?;
    let (recommended, note) = recommend(&rows, &sp.configured);
    let needed = if recommended.is_none() {
        measure_needed(args, &sp, &rows)
    } else {
        None
    };
    let (cuda, effective_batch, budget_vram) = (sp.cuda, sp.effective_batch, sp.budget_vram);
    let configured = sp.configured;
    Ok(Plan {
        cuda,
        effective_batch,
        budget_ram: args.budget_ram,
        budget_vram,
        rows,
        pruned,
        recommended,
        note,
        configured,
        needed,
    })
}

mod candidate;
mod report;

pub use candidate::{Candidate, Row, Verdict};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_binary_sizes_and_bad_ones_name_the_flag() {
        let g = 1u64 << 30;
        assert_eq!(budget("--budget-ram", Some("8G")), Ok(Some(8 * g)));
        assert_eq!(budget("--budget-ram", Some("1.5GiB")), Ok(Some(3 * g / 2)));
        assert_eq!(budget("--budget-ram", None), Ok(None));
        for bad in ["", "G", "8X", "-1G", "1.2.3G", "0", "eight"] {
            let e = budget("--budget-vram", Some(bad)).unwrap_err();
            assert!(e.starts_with("--budget-vram:"), "{bad}: {e}");
        }
    }

    #[test]
    fn batch_sizes_are_the_divisors_of_the_effective_batch() {
        assert_eq!(divisors(8), vec![1, 2, 4, 8]);
        assert_eq!(divisors(6), vec![1, 2, 3, 6]);
        assert_eq!(divisors(1), vec![1]);
    }
}
