//! `train plan`: which settings fit a RAM (and VRAM) budget, measured rather than looked up.
//!
//! The effective batch `E = data.batch_size x train.accumulate_grad_batches` of the
//! configuration is kept; the candidates are every `batch_size` dividing `E` (with
//! `accumulate_grad_batches = E / batch_size`), every precision of the device (`32` and
//! `bf16-mixed` on CPU; `16-mixed` too on CUDA), gradient checkpointing off and on, and the
//! `data.img_size` / `data.uniform_temporal_subsample_num` values asked for (default: the
//! configuration's). Each candidate runs real optimizer steps in a child process
//! ([`crate::probe::probe_in_child`]) that is stopped as soon as its resident memory passes
//! the RAM budget. Memory grows with the batch size, so for each (precision, checkpointing,
//! size, frames) the batch sizes are tried from small to large and the larger ones are
//! skipped once one is over budget.
//!
//! The recommendation is the fastest fitting setting (seconds per optimizer step, which
//! cover the same effective batch for every candidate) at the configured input size; a
//! smaller image or fewer frames change what the model sees, so they are recommended only
//! when nothing at the configured size fits, and the recommendation says so.

use std::path::{Path, PathBuf};

use tch::Device;

use crate::config::Config;
use crate::precision::Precision;
use crate::probe::{config_overrides, fmt_bytes, probe_in_child, ProbeOutcome};

/// Parse a memory size for the flag `flag`: `512M`, `8G`, `8GiB`, `1.5G`, `300MB`, `64K` or
/// plain bytes. Suffixes are binary (1G = 1 GiB = 2^30 bytes), with or without `B`/`iB`.
pub fn parse_size(flag: &str, text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{flag}: `{text}` is not a memory size (examples: 512M, 8G, 8GiB, 1.5G, or plain bytes)"
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// One setting tried by the planner.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `data.batch_size`.
    pub batch_size: usize,
    /// `train.accumulate_grad_batches`.
    pub accumulate: usize,
    /// `trainer.precision`.
    pub precision: Precision,
    /// `model.use_gradient_checkpointing`.
    pub checkpointing: bool,
    /// `data.img_size` as given (`112`, `96x128`, `null`).
    pub img_size: String,
    /// `data.uniform_temporal_subsample_num`.
    pub frames: i64,
}

impl Candidate {
    /// The `key=value` overrides that select this setting (memory keys only).
    pub fn memory_overrides(&self) -> Vec<String> {
        vec![
            format!("data.batch_size={}", self.batch_size),
            format!("train.accumulate_grad_batches={}", self.accumulate),
            format!("trainer.precision={}", self.precision.name()),
            format!("model.use_gradient_checkpointing={}", self.checkpointing),
        ]
    }

    /// Every override of this setting, input size and frames included.
    pub fn overrides(&self) -> Vec<String> {
        let mut o = self.memory_overrides();
        o.push(format!("data.img_size={}", self.img_size));
        o.push(format!(
            "data.uniform_temporal_subsample_num={}",
            self.frames
        ));
        o
    }

    /// A short label: `bs=2 acc=4 bf16-mixed ckpt 112 T=8`.
    pub fn label(&self) -> String {
        format!(
            "bs={} acc={} {} {} img={} T={}",
            self.batch_size,
            self.accumulate,
            self.precision.name(),
            if self.checkpointing {
                "ckpt"
            } else {
                "no-ckpt"
            },
            self.img_size,
            self.frames
        )
    }
}

/// Whether a candidate fits, and if not, why.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within every budget.
    Fits,
    /// Over the RAM budget (measured, or stopped when it passed it).
    OverRam,
    /// Over the VRAM budget.
    OverVram,
    /// Died of memory.
    OutOfMemory(String),
    /// Failed for another reason (the message).
    Failed(String),
}

/// One row of the plan: a candidate and what it measured.
#[derive(Debug, Clone)]
pub struct Row {
    /// The setting.
    pub candidate: Candidate,
    /// Peak RSS of the child, bytes; with `complete` false a lower bound (it was stopped).
    pub peak_ram: Option<u64>,
    /// True when the child ran to the end, so `peak_ram` is its real peak.
    pub complete: bool,
    /// CUDA: peak device memory in use, bytes.
    pub peak_vram: Option<u64>,
    /// Seconds per optimizer step (same effective batch for every row).
    pub seconds_per_step: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Arguments of `train plan`.
#[derive(Debug, Clone)]
pub struct PlanArgs {
    /// Cache folder.
    pub cache: PathBuf,
    /// Resolved configuration.
    pub config: Config,
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

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn measure(
    args: &PlanArgs,
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
        Err(e) => row.verdict = Verdict::Failed(e),
    }
    row
}

/// Run the planner (see the module documentation). Nothing fitting is not an error here:
/// [`Plan::no_fit_error`] phrases it, so the caller can print the table first.
pub fn plan(args: &PlanArgs) -> Result<Plan, String> {
    if args.budget_ram.is_none() && args.budget_vram.is_none() {
        return Err("give a budget: --budget-ram SIZE (peak RAM of training) and/or --budget-vram SIZE (CUDA)".into());
    }
    let cfg = &args.config;
    cfg.check_supported().map_err(|e| e.to_string())?;
    let device = crate::fit::device(cfg)?;
    let cuda = matches!(device, Device::Cuda(_));
    let budget_vram = if cuda { args.budget_vram } else { None };
    if !cuda && args.budget_ram.is_none() {
        return Err(
            "--budget-vram applies to CUDA runs, and this one is on the CPU: give --budget-ram"
                .into(),
        );
    }
    let effective_batch =
        cfg.usize("data.batch_size").max(1) * cfg.usize("train.accumulate_grad_batches").max(1);
    let configured = (
        cfg.raw("data.img_size").to_string(),
        cfg.int("data.uniform_temporal_subsample_num"),
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
            return Err(format!(
                "--frames: `{t}` is not a frame count (a whole number >= 1)"
            ));
        }
    }
    let precisions: Vec<Precision> = if cuda {
        vec![Precision::Fp32, Precision::Fp16Mixed, Precision::Bf16Mixed]
    } else {
        vec![Precision::Fp32, Precision::Bf16Mixed]
    };
    let sizes = divisors(effective_batch);
    let base = config_overrides(cfg);

    // Groups: configured input first, then the others in the order given.
    let mut inputs: Vec<(String, i64)> = Vec::new();
    for img in &img_sizes {
        for &t in &frames {
            inputs.push((img.clone(), t));
        }
    }
    inputs.sort_by_key(|i| *i != configured);
    let groups: Vec<(String, i64, Precision, bool)> = inputs
        .iter()
        .flat_map(|(img, t)| {
            precisions
                .iter()
                .flat_map(move |&p| [false, true].map(|ck| (img.clone(), *t, p, ck)))
        })
        .collect();
    let total = (groups.len() * sizes.len()) as u64;
    let pb = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "plan [{elapsed_precise}] [{wide_bar}] {pos}/{len} settings {msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    };
    let mut rows = Vec::new();
    let mut pruned = 0;
    let mut all_failed_first: Option<String> = None;
    for (img, t, p, ck) in &groups {
        for (i, &bs) in sizes.iter().enumerate() {
            let c = Candidate {
                batch_size: bs,
                accumulate: effective_batch / bs,
                precision: *p,
                checkpointing: *ck,
                img_size: img.clone(),
                frames: *t,
            };
            pb.set_message(c.label());
            let row = measure(
                args,
                &base,
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
        return Err(all_failed_first.unwrap_or_else(|| "no setting could be measured".into()));
    }

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
            let mut c = cfg.clone();
            let _ = c.set("data.img_size", &r.candidate.img_size, false);
            let (h, w) = c.img_size().unwrap_or((1 << 20, 1 << 20));
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

    // Nothing fits and no candidate ran to the end: measure the leanest settings without
    // the budget (up to the memory this machine has available), so the error can say
    // what is needed.
    let mut needed = None;
    let ram_binding = rows
        .iter()
        .all(|r| matches!(r.verdict, Verdict::OverRam | Verdict::Failed(_)));
    if recommended.is_none() && ram_binding && !rows.iter().any(|r| r.complete) {
        let limit = mem_available().map(|m| m / 10 * 9);
        let smallest_input = inputs
            .iter()
            .min_by_key(|(img, t)| {
                let mut c = cfg.clone();
                let _ = c.set("data.img_size", img, false);
                let (h, w) = c.img_size().unwrap_or((1 << 20, 1 << 20));
                h * w * t
            })
            .cloned()
            .unwrap_or_else(|| configured.clone());
        if !args.quiet {
            eprintln!(
                "plan: nothing fits; measuring the leanest settings without the budget to say what is needed"
            );
        }
        for &p in &precisions {
            let c = Candidate {
                batch_size: 1,
                accumulate: effective_batch,
                precision: p,
                checkpointing: true,
                img_size: smallest_input.0.clone(),
                frames: smallest_input.1,
            };
            let row = measure(args, &base, &c, limit, args.budget_ram, budget_vram);
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

const SHRINK: &str = "lower data.img_size / data.uniform_temporal_subsample_num";

impl Plan {
    /// The table of every candidate run (plain text, one row per setting).
    pub fn table(&self) -> String {
        let mut lines = vec![{
            let mut h = vec![
                "batch_size".to_string(),
                "accum".into(),
                "precision".into(),
                "ckpt".into(),
                "img_size".into(),
                "T".into(),
                "peak RAM".into(),
            ];
            if self.cuda {
                h.push("peak VRAM".into());
            }
            h.push("s/step".into());
            h.push("fits".into());
            h
        }];
        for (i, r) in self.rows.iter().enumerate() {
            let c = &r.candidate;
            let ram = match (r.peak_ram, r.complete) {
                (Some(b), true) => fmt_bytes(b),
                (Some(b), false) => format!("> {}", fmt_bytes(b)),
                (None, _) => "-".into(),
            };
            let mut cells = vec![
                c.batch_size.to_string(),
                c.accumulate.to_string(),
                c.precision.name().to_string(),
                c.checkpointing.to_string(),
                c.img_size.clone(),
                c.frames.to_string(),
                ram,
            ];
            if self.cuda {
                cells.push(r.peak_vram.map_or("-".into(), fmt_bytes));
            }
            cells.push(r.seconds_per_step.map_or("-".into(), |s| format!("{s:.3}")));
            let verdict = match &r.verdict {
                Verdict::Fits if Some(i) == self.recommended => "yes  <- recommended".into(),
                Verdict::Fits => "yes".to_string(),
                Verdict::OverRam if r.complete => "no: over --budget-ram".into(),
                Verdict::OverRam => "no: over --budget-ram (stopped)".into(),
                Verdict::OverVram => "no: over --budget-vram".into(),
                Verdict::OutOfMemory(why) => format!("no: out of memory ({why})"),
                Verdict::Failed(e) => format!("error: {}", e.lines().next().unwrap_or("")),
            };
            cells.push(verdict);
            lines.push(cells);
        }
        let n = lines[0].len();
        let widths: Vec<usize> = (0..n)
            .map(|j| {
                lines
                    .iter()
                    .map(|l| l[j].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (k, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    if j + 1 == n {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[j])
                    }
                })
                .collect();
            out += cells.join("  ").trim_end();
            out.push('\n');
            if k == 0 {
                let w = widths[..n - 1].iter().sum::<usize>() + 2 * (n - 1) + "fits".len();
                out += &"-".repeat(w);
                out.push('\n');
            }
        }
        out
    }

    /// The recommendation, ready to paste (or `None` when nothing fits).
    pub fn recommendation(&self, cache: &Path, user_overrides: &[String]) -> Option<String> {
        let r = &self.rows[self.recommended?];
        let c = &r.candidate;
        let mut keys = c.memory_overrides();
        if (c.img_size.clone(), c.frames) != self.configured {
            keys.push(format!("data.img_size={}", c.img_size));
            keys.push(format!("data.uniform_temporal_subsample_num={}", c.frames));
        }
        let mut s = format!(
            "recommended (fastest that fits, effective batch {} = {} x {}): {:.3} s/step, peak RAM {}{}\n",
            self.effective_batch,
            c.batch_size,
            c.accumulate,
            r.seconds_per_step.unwrap_or(f64::NAN),
            r.peak_ram.map_or("-".into(), fmt_bytes),
            r.peak_vram
                .map_or(String::new(), |v| format!(", peak VRAM {}", fmt_bytes(v)))
        );
        if let Some(n) = &self.note {
            s += &format!("note: {n}\n");
        }
        s += &format!("  {}\n", keys.join(" "));
        let mut cmd = vec![format!("train fit --cache {}", cache.display())];
        // The user's own settings, without the ones the plan decides.
        let decided: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.split_once('=').map(|(k, _)| k))
            .collect();
        cmd.extend(
            user_overrides
                .iter()
                .filter(|o| {
                    !o.split_once('=')
                        .is_some_and(|(k, _)| decided.contains(&k.trim()))
                })
                .cloned(),
        );
        cmd.extend(keys);
        s += &format!("  {}\n", cmd.join(" "));
        Some(s)
    }

    /// When nothing fits: the error, naming the budget and what is needed.
    pub fn no_fit_error(&self) -> Option<String> {
        if self.recommended.is_some() {
            return None;
        }
        let over_vram = self.rows.iter().any(|r| r.verdict == Verdict::OverVram);
        if over_vram {
            if let (Some(b), Some(r)) = (
                self.budget_vram,
                self.rows
                    .iter()
                    .filter(|r| r.peak_vram.is_some())
                    .min_by_key(|r| r.peak_vram),
            ) {
                let need = r.peak_vram.unwrap_or(0);
                return Some(format!(
                    "no setting fits --budget-vram {}: the smallest measured device peak was {} ({}); raise the budget to at least {}, or {SHRINK}",
                    fmt_bytes(b),
                    fmt_bytes(need),
                    r.candidate.memory_overrides().join(" "),
                    fmt_bytes(need)
                ));
            }
        }
        let budget = self.budget_ram.map_or("the budget".to_string(), |b| {
            format!("--budget-ram {}", fmt_bytes(b))
        });
        let complete = self
            .rows
            .iter()
            .chain(self.needed.as_ref().map(|(r, _)| r))
            .filter(|r| r.complete)
            .min_by_key(|r| r.peak_ram);
        if let Some(r) = complete {
            let need = r.peak_ram.unwrap_or(0);
            return Some(format!(
                "no setting fits {budget}: the smallest measured peak was {} ({}{}); raise the budget to at least {}, or {SHRINK}",
                fmt_bytes(need),
                r.candidate.memory_overrides().join(" "),
                if (r.candidate.img_size.clone(), r.candidate.frames) != self.configured {
                    format!(
                        " data.img_size={} data.uniform_temporal_subsample_num={}",
                        r.candidate.img_size, r.candidate.frames
                    )
                } else {
                    String::new()
                },
                fmt_bytes(need)
            ));
        }
        let seen = self
            .rows
            .iter()
            .chain(self.needed.as_ref().map(|(r, _)| r))
            .filter_map(|r| r.peak_ram)
            .max()
            .unwrap_or(0);
        if let Some(r) = self
            .rows
            .iter()
            .find(|r| matches!(r.verdict, Verdict::OutOfMemory(_)))
        {
            if let Verdict::OutOfMemory(why) = &r.verdict {
                return Some(format!(
                    "no setting fits {budget}: every setting ran out of memory (e.g. {}: {why}); {SHRINK}",
                    r.candidate.memory_overrides().join(" ")
                ));
            }
        }
        Some(format!(
            "no setting fits {budget}: even the leanest setting needs more than {} (more than this machine has available); {SHRINK}",
            fmt_bytes(seen)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_bad_ones_name_the_flag() {
        let g = 1u64 << 30;
        assert_eq!(parse_size("--budget-ram", "8G").unwrap(), 8 * g);
        assert_eq!(parse_size("--budget-ram", "8GiB").unwrap(), 8 * g);
        assert_eq!(parse_size("--budget-ram", "8gb").unwrap(), 8 * g);
        assert_eq!(parse_size("--budget-ram", "1.5G").unwrap(), 3 * g / 2);
        assert_eq!(parse_size("--budget-ram", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("--budget-ram", "300 MiB").unwrap(), 300 << 20);
        assert_eq!(parse_size("--budget-ram", "123456").unwrap(), 123456);
        for bad in ["", "G", "8X", "-1G", "1.2.3G", "0", "eight"] {
            let e = parse_size("--budget-vram", bad).unwrap_err();
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
