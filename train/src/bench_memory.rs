//! `train bench-memory` (`make bench-memory`): every memory technique on and off, for each
//! backbone, measured with real training steps.
//!
//! For each backbone the rows are: the baseline (float32, no checkpointing, the configured
//! `data.batch_size` B, no accumulation), `+ checkpointing`, `+ bf16-mixed`, `+ 16-mixed`
//! (CUDA only), `batch 1`, and `batch 1 x accumulate 8`. Each row is one
//! [`crate::probe::probe_in_child`] run in a fresh process: peak memory (resident memory
//! above the process's baseline on CPU, device memory in use above its baseline on CUDA),
//! seconds per optimizer step, and both as a ratio to the row's reference (the baseline;
//! `batch 1` for the accumulation row). Gradient agreement is measured in this process
//! through [`Trainer::gradients`] on one batch: the technique on against off, as
//! `max |grad_on - grad_off| / max |grad_off|` over all parameters. Accumulation compares
//! one batch of 8 clips with 8 micro-batches of 1 clip of the same clips, dropout off: equal
//! only for models without BatchNorm (BatchNorm normalises with the statistics of the batch it sees).

use std::path::PathBuf;
use std::sync::Arc;

use tch::{Device, Tensor};

use crate::backbone::{BackboneKind, BACKBONE_NAMES};
use crate::config::{Config, KEYS};
use crate::fit::{setup, to_input, Setup};
use crate::loader::{Batch, Loader};
use crate::precision::Precision;
use crate::probe::{config_overrides, fmt_bytes, probe_in_child, ProbeOutcome, ProbeReport};
use crate::sampler::{select, Sampler, Selection};
use crate::step::Trainer;

/// Micro-batches of the accumulation row.
pub const ACCUMULATE: usize = 8;

/// Arguments of `train bench-memory`.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Cache folder the batches come from.
    pub cache: PathBuf,
    /// Resolved configuration (input size, frames, views, batch size B, device).
    pub config: Config,
    /// Backbones to measure (empty: every distinct `model.backbone` value).
    pub backbones: Vec<String>,
    /// Timed optimizer steps per row (after one warm-up step).
    pub steps: usize,
    /// Rows to measure besides the baseline (empty: all): `checkpointing`, `bf16-mixed`,
    /// `16-mixed`, `batch1`, `accumulate`.
    pub techniques: Vec<String>,
    /// The `train` executable that runs the probes.
    pub train_exe: PathBuf,
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// Which technique a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Technique {
    /// float32, no checkpointing, batch B.
    Baseline,
    /// Gradient checkpointing.
    Checkpointing,
    /// A mixed precision.
    Precision(Precision),
    /// Batch 1.
    Batch1,
    /// Batch 1, accumulating [`ACCUMULATE`] micro-batches.
    Batch1Accumulate,
}

impl Technique {
    /// The row's label.
    pub fn label(self, batch: usize) -> String {
        match self {
            Technique::Baseline => format!("baseline (fp32, batch {batch})"),
            Technique::Checkpointing => "+ checkpointing".into(),
            Technique::Precision(p) => format!("+ {}", p.name()),
            Technique::Batch1 => "batch 1".into(),
            Technique::Batch1Accumulate => format!("batch 1 x accumulate {ACCUMULATE}"),
        }
    }
}

/// One measured row.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// `model.backbone`.
    pub backbone: String,
    /// The technique.
    pub technique: Technique,
    /// The probe's report, or why it has none (over memory, failed).
    pub report: Result<ProbeReport, String>,
    /// Gradient agreement with the reference (relative), or why it has none.
    pub grad: Option<Result<f64, String>>,
}

impl BenchRow {
    /// Peak training memory: RSS above baseline on CPU, device memory above baseline on
    /// CUDA, bytes.
    pub fn memory(&self) -> Option<u64> {
        let r = self.report.as_ref().ok()?;
        Some(
            r.training_device_bytes()
                .unwrap_or_else(|| r.training_rss_bytes()),
        )
    }

    /// Peak memory less the model state (an estimate of the activations), bytes.
    pub fn activations(&self) -> Option<u64> {
        let r = self.report.as_ref().ok()?;
        Some(self.memory()?.saturating_sub(r.model_state_bytes))
    }

    /// Seconds per optimizer step.
    pub fn seconds(&self) -> Option<f64> {
        Some(self.report.as_ref().ok()?.seconds_per_step)
    }
}

/// The benchmark's rows and settings.
#[derive(Debug, Clone)]
pub struct BenchMemory {
    /// Rows, backbone by backbone.
    pub rows: Vec<BenchRow>,
    /// The device (`Cpu`, `Cuda(0)`).
    pub device: String,
    /// Batch size B of the baseline.
    pub batch: usize,
    /// Model input (H, W, T) and views.
    pub input: (i64, i64, i64, usize),
    /// Timed steps per row.
    pub steps: usize,
}

/// Every distinct backbone (aliases such as `3dcnn` = `r2plus1d_18` once).
pub fn all_backbones() -> Vec<String> {
    let mut seen: Vec<BackboneKind> = Vec::new();
    let mut out = Vec::new();
    for name in BACKBONE_NAMES.iter() {
        match name.parse::<BackboneKind>() {
            Ok(k) if seen.contains(&k) => {}
            Ok(k) => {
                seen.push(k);
                out.push(k.name().to_string());
            }
            Err(_) => out.push(name.to_string()),
        }
    }
    out
}

fn rel_diff(reference: &[Tensor], other: &[Tensor]) -> Result<f64, String> {
    if reference.len() != other.len() {
        return Err("different parameter lists".into());
    }
    let (mut diff, mut scale) = (0f64, 0f64);
    for (a, b) in reference.iter().zip(other) {
        if a.defined() && b.defined() {
            scale = scale.max(a.abs().max().double_value(&[]));
            diff = diff.max((a - b).abs().max().double_value(&[]));
        }
    }
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

struct Grads<'a> {
    s: &'a Setup,
    cfg: &'a Config,
    device: Device,
}

impl Grads<'_> {
    /// Gradients after one accumulation window of `batches` (fresh model, fixed seeds).
    fn of(
        &self,
        precision: Precision,
        checkpointing: bool,
        batches: &[Batch],
    ) -> Result<Vec<Tensor>, String> {
        tch::manual_seed(self.cfg.int("train.seed"));
        let mut tr = Trainer::new(
            &self.s.model,
            self.device,
            precision,
            checkpointing,
            self.cfg.float("train.weight_decay"),
        )?;
        for (k, b) in batches.iter().enumerate() {
            let x = to_input(b, self.s, self.device)?;
            let y = Tensor::from_slice(&b.labels).to_device(self.device);
            tr.micro_batch(
                &x,
                &y,
                self.cfg.float("train.label_smoothing"),
                batches.len(),
                17 + k as i64,
            )?;
        }
        Ok(tr.gradients())
    }
}

/// The gradient agreement of each technique of one backbone with its reference: index by
/// technique, in the order of `techniques`.
fn agreements(
    args: &BenchArgs,
    cfg: &Config,
    techniques: &[Technique],
) -> Result<Vec<Option<Result<f64, String>>>, String> {
    let s = setup(&args.cache, cfg)?;
    let device = crate::fit::device(cfg)?;
    let items = select(
        &s.cache,
        &match cfg.opt_u32("data.fold") {
            Some(fold) => Selection::Folds {
                include: false,
                fold,
            },
            None => Selection::Split(cfg.opt("data.train_split").unwrap_or("train").to_string()),
        },
    )?;
    if items.is_empty() {
        return Err("the training selection is empty".into());
    }
    let loader = Arc::new(Loader::new(
        s.cache.clone(),
        s.views.clone(),
        s.input.2 as usize,
        // What the model reads, nothing more (data.load_* were checked against it).
        s.model.input_type.uses_rgb(),
        s.model.input_type.uses_kpt(),
    )?);
    let sampler = Sampler {
        items: items.clone(),
        batch_size: 1,
        seed: 0,
        balanced: false,
        shuffle: false,
    };
    let pick = |n: usize| -> Vec<crate::sampler::Item> {
        (0..n).map(|i| items[i % items.len()]).collect()
    };
    let load = |its: &[crate::sampler::Item]| -> Result<Batch, String> {
        let frames = loader.frames_for(&sampler, its, 0, 0, false);
        loader.load(0, its, &frames)
    };
    let g = Grads { s: &s, cfg, device };
    let bs = cfg.usize("data.batch_size").max(1);
    let batch = vec![load(&pick(bs))?];
    let mut reference: Option<Vec<Tensor>> = None;
    let mut out = Vec::new();
    for &t in techniques {
        let r = match t {
            Technique::Baseline | Technique::Batch1 => None,
            Technique::Checkpointing | Technique::Precision(_) => {
                if reference.is_none() {
                    reference = Some(g.of(Precision::Fp32, false, &batch)?);
                }
                let (p, ck) = match t {
                    Technique::Precision(p) => (p, false),
                    _ => (Precision::Fp32, true),
                };
                let on = g.of(p, ck, &batch);
                Some(on.and_then(|on| rel_diff(reference.as_deref().unwrap_or(&[]), &on)))
            }
            Technique::Batch1Accumulate => {
                // Dropout off (every `*dropout` key): one batch of 8 and 8 batches of 1
                // would otherwise draw different masks.
                let mut quiet = cfg.clone();
                for k in KEYS.iter().filter(|k| k.name.ends_with("dropout")) {
                    quiet.set(k.name, "0", false).map_err(|e| e.to_string())?;
                }
                let s0 = setup(&args.cache, &quiet)?;
                let g0 = Grads {
                    s: &s0,
                    cfg: &quiet,
                    device,
                };
                let its = pick(ACCUMULATE);
                let whole = vec![load(&its)?];
                let ones: Vec<Batch> = its.chunks(1).map(load).collect::<Result<_, String>>()?;
                let a = g0.of(Precision::Fp32, false, &whole)?;
                Some(
                    g0.of(Precision::Fp32, false, &ones)
                        .and_then(|b| rel_diff(&a, &b)),
                )
            }
        };
        out.push(r);
    }
    Ok(out)
}

/// Run the benchmark (see the module documentation).
pub fn bench_memory(args: &BenchArgs) -> Result<BenchMemory, String> {
    let cfg = &args.config;
    let names = BACKBONE_NAMES.to_vec();
    let backbones = if args.backbones.is_empty() {
        all_backbones()
    } else {
        for b in &args.backbones {
            if !names.contains(&b.as_str()) {
                return Err(format!(
                    "--backbones: `{b}` is not a model.backbone value ({})",
                    names.join(", ")
                ));
            }
        }
        args.backbones.clone()
    };
    let device = crate::fit::device(cfg)?;
    let cuda = matches!(device, Device::Cuda(_));
    let batch = cfg.usize("data.batch_size").max(1);
    let mut techniques = vec![
        Technique::Baseline,
        Technique::Checkpointing,
        Technique::Precision(Precision::Bf16Mixed),
    ];
    if cuda {
        techniques.push(Technique::Precision(Precision::Fp16Mixed));
    }
    techniques.extend([Technique::Batch1, Technique::Batch1Accumulate]);
    if !args.techniques.is_empty() {
        const NAMES: [&str; 5] = [
            "checkpointing",
            "bf16-mixed",
            "16-mixed",
            "batch1",
            "accumulate",
        ];
        for t in &args.techniques {
            if !NAMES.contains(&t.as_str()) && t != "baseline" {
                return Err(format!(
                    "--techniques: `{t}` is not one of baseline, {}",
                    NAMES.join(", ")
                ));
            }
        }
        let wanted = |t: &Technique| {
            let name = match t {
                Technique::Baseline => return true,
                Technique::Checkpointing => "checkpointing",
                Technique::Precision(Precision::Bf16Mixed) => "bf16-mixed",
                Technique::Precision(_) => "16-mixed",
                Technique::Batch1 => "batch1",
                Technique::Batch1Accumulate => "accumulate",
            };
            args.techniques.iter().any(|x| x == name)
        };
        techniques.retain(wanted);
        // The accumulation row is compared with batch 1.
        if techniques.contains(&Technique::Batch1Accumulate)
            && !techniques.contains(&Technique::Batch1)
        {
            let at = techniques.len() - 1;
            techniques.insert(at, Technique::Batch1);
        }
    }
    let mut rows = Vec::new();
    let mut input = (0, 0, cfg.int("data.uniform_temporal_subsample_num"), 0);
    for b in &backbones {
        let mut c = cfg.clone();
        c.set("model.backbone", b, false)
            .map_err(|e| e.to_string())?;
        for (k, v) in [
            ("trainer.precision", "32"),
            ("model.use_gradient_checkpointing", "false"),
            ("train.accumulate_grad_batches", "1"),
        ] {
            c.set(k, v, false).map_err(|e| e.to_string())?;
        }
        // The keypoint backbone reads keypoints, the video ones RGB: adjust the input type
        // of the configuration to the backbone.
        if let Ok(k) = b.parse::<BackboneKind>() {
            let it = c.raw("model.input_type").to_string();
            if !k.is_video() && it != "kpt" {
                c.set("model.input_type", "kpt", false)
                    .map_err(|e| e.to_string())?;
                c.set("data.load_kpt", "true", false)
                    .map_err(|e| e.to_string())?;
            } else if k.is_video() && it == "kpt" {
                c.set("model.input_type", "rgb", false)
                    .map_err(|e| e.to_string())?;
                c.set("data.load_rgb", "true", false)
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut first = true;
        for &t in &techniques {
            let mut ct = c.clone();
            let set =
                |ct: &mut Config, k: &str, v: &str| ct.set(k, v, false).map_err(|e| e.to_string());
            match t {
                Technique::Baseline => {}
                Technique::Checkpointing => {
                    set(&mut ct, "model.use_gradient_checkpointing", "true")?
                }
                Technique::Precision(p) => set(&mut ct, "trainer.precision", p.name())?,
                Technique::Batch1 => set(&mut ct, "data.batch_size", "1")?,
                Technique::Batch1Accumulate => {
                    set(&mut ct, "data.batch_size", "1")?;
                    set(
                        &mut ct,
                        "train.accumulate_grad_batches",
                        &ACCUMULATE.to_string(),
                    )?;
                }
            }
            if !args.quiet {
                eprintln!("bench-memory: {b}: {}", t.label(batch));
            }
            let report = match probe_in_child(
                &args.train_exe,
                &args.cache,
                &config_overrides(&ct),
                // Each step of the accumulation row is already 8 micro-batches.
                if t == Technique::Batch1Accumulate {
                    args.steps.div_ceil(2)
                } else {
                    args.steps
                },
                None,
            ) {
                Ok(ProbeOutcome::Measured {
                    report,
                    polled_peak_rss,
                }) => {
                    let mut r = report;
                    r.peak_rss_bytes = r.peak_rss_bytes.max(polled_peak_rss);
                    Ok(r)
                }
                Ok(ProbeOutcome::OutOfMemory { reason, .. }) => {
                    Err(format!("out of memory: {reason}"))
                }
                Ok(ProbeOutcome::OverBudget { seen_bytes }) => {
                    Err(format!("stopped at {}", fmt_bytes(seen_bytes)))
                }
                Err(e) => Err(e),
            };
            if let Ok(r) = &report {
                input = (r.img_size.0, r.img_size.1, r.frames, r.views);
            }
            let failed_baseline = first && report.is_err();
            rows.push(BenchRow {
                backbone: b.clone(),
                technique: t,
                report,
                grad: None,
            });
            first = false;
            if failed_baseline {
                break;
            }
        }
        let start = rows.len() - rows.iter().rev().take_while(|r| &r.backbone == b).count();
        if rows[start].report.is_err() {
            continue;
        }
        if !args.quiet {
            eprintln!("bench-memory: {b}: gradient agreement");
        }
        let here: Vec<Technique> = rows[start..].iter().map(|r| r.technique).collect();
        match agreements(args, &c, &here) {
            Ok(g) => {
                for (row, g) in rows[start..].iter_mut().zip(g) {
                    row.grad = g;
                }
            }
            Err(e) => {
                for row in rows[start..].iter_mut() {
                    row.grad = Some(Err(e.clone()));
                }
            }
        }
    }
    Ok(BenchMemory {
        rows,
        device: format!("{device:?}"),
        batch,
        input,
        steps: args.steps,
    })
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!("{y}-{m:02}-{d:02}")
}

impl BenchMemory {
    fn reference(&self, i: usize) -> Option<&BenchRow> {
        let row = &self.rows[i];
        let want = match row.technique {
            Technique::Baseline => return None,
            Technique::Batch1Accumulate => Technique::Batch1,
            _ => Technique::Baseline,
        };
        self.rows
            .iter()
            .find(|r| r.backbone == row.backbone && r.technique == want)
    }

    fn find(&self, backbone: &str, t: Technique) -> Option<&BenchRow> {
        self.rows
            .iter()
            .find(|r| r.backbone == backbone && r.technique == t)
    }

    fn cuda(&self) -> bool {
        self.device.starts_with("Cuda")
    }

    /// The Markdown report: the table, notes and the target checks.
    pub fn markdown(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let (h, w, t, v) = self.input;
        let mut s = format!(
            "#### Memory techniques (measured {}, {}, {cpus} CPUs)\n\n",
            today(),
            if self.cuda() {
                format!("device {}", self.device)
            } else {
                "CPU".to_string()
            }
        );
        s += &format!(
            "Input {h}x{w}, T={t}, {v} view(s); baseline batch {}; {} timed optimizer steps per row after one warm-up step (half as many for the accumulation row), each row in a fresh process. Peak memory: {}. \"x ref\": ratio to the baseline (to `batch 1` for the accumulation row). Activations (est.): peak memory less the model state (weights, gradients, AdamW moments, and the bf16 copy).\n\n",
            self.batch,
            self.steps,
            if self.cuda() {
                "device memory in use above its value before the model was built (cudaMemGetInfo, sampled every ms)"
            } else {
                "resident memory (VmHWM) above the process's resident memory before the model was built"
            }
        );
        s += "| backbone | setting | peak memory | x ref | activations (est.) | s/step | x ref | gradient agreement |\n";
        s += "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
        for (i, r) in self.rows.iter().enumerate() {
            let reference = self.reference(i);
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let (mem, act, secs) = match &r.report {
                Ok(_) => (
                    r.memory().map_or("-".into(), fmt_bytes),
                    r.activations().map_or("-".into(), fmt_bytes),
                    r.seconds().map_or("-".into(), |x| format!("{x:.2}")),
                ),
                Err(e) => (
                    format!(
                        "failed: {}",
                        e.lines().next().unwrap_or("").replace('|', "/")
                    ),
                    "-".into(),
                    "-".into(),
                ),
            };
            let grad = match &r.grad {
                None => "(reference)".to_string(),
                Some(Ok(g)) if r.technique == Technique::Batch1Accumulate => {
                    format!("{g:.1e} (8x1 vs 1x8)")
                }
                Some(Ok(g)) => format!("{g:.1e}"),
                Some(Err(e)) => format!(
                    "failed: {}",
                    e.lines().next().unwrap_or("").replace('|', "/")
                ),
            };
            let grad = if r.technique == Technique::Batch1 {
                "-".into()
            } else {
                grad
            };
            let label = match (&r.report, r.technique) {
                (Ok(rep), Technique::Baseline) if rep.parameters > 0 => format!(
                    "{}, {:.2} M parameters",
                    r.technique.label(self.batch),
                    rep.parameters as f64 / 1e6
                ),
                _ => r.technique.label(self.batch),
            };
            s += &format!(
                "| {} | {label} | {mem} | {} | {act} | {secs} | {} | {grad} |\n",
                r.backbone,
                ratio(
                    r.memory().map(|x| x as f64),
                    reference.and_then(|x| x.memory()).map(|x| x as f64)
                ),
                ratio(r.seconds(), reference.and_then(|x| x.seconds())),
            );
        }
        s += "\nGradient agreement: `max |grad_on - grad_off| / max |grad_off|` over all parameters, one batch, same initialisation and dropout seeds. Checkpointing recomputes the same float operations, so it agrees to float32 rounding; mixed precision shows its rounding error. Accumulation (one batch of 8 clips against 8 micro-batches of 1 of the same clips, dropout off) agrees to rounding only for models without BatchNorm: with BatchNorm each micro-batch is normalised with its own statistics.\n\n";
        s += "Targets:\n\n";
        for line in self.targets() {
            s += &format!("- {line}\n");
        }
        s
    }

    /// The target checks, one `PASS`/`FAIL`/`SKIP`/`info` line each.
    pub fn targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let backbones: Vec<&str> = {
            let mut b: Vec<&str> = Vec::new();
            for r in &self.rows {
                if !b.contains(&r.backbone.as_str()) {
                    b.push(&r.backbone);
                }
            }
            b
        };
        let pair = |b: &str, t: Technique, reference: Technique| {
            let on = self.find(b, t)?;
            let off = self.find(b, reference)?;
            Some((
                on.memory()? as f64 / off.memory()?.max(1) as f64,
                on.seconds()? / off.seconds()?,
            ))
        };
        // Checkpointing: >= 40% less memory on the transformer at <= 35% more time.
        let ckpt = |b: &str| pair(b, Technique::Checkpointing, Technique::Baseline);
        match ckpt("transformer") {
            Some((m, t)) => out.push(format!(
                "{}: checkpointing on the transformer: {:+.0}% peak training memory (target <= -40%), {:+.0}% step time (target <= +35%)",
                if m <= 0.60 && t <= 1.35 { "PASS" } else { "FAIL" },
                (m - 1.0) * 100.0,
                (t - 1.0) * 100.0
            )),
            None => out.push(format!(
                "SKIP: checkpointing target (transformer): the transformer was not measured (measured: {})",
                backbones.join(", ")
            )),
        }
        for b in &backbones {
            if *b == "transformer" {
                continue;
            }
            if let Some((m, t)) = ckpt(b) {
                out.push(format!(
                    "info: checkpointing on {b}: {:+.0}% peak training memory, {:+.0}% step time",
                    (m - 1.0) * 100.0,
                    (t - 1.0) * 100.0
                ));
            }
        }
        // Accumulation: batch 1 x 8 peaks within 10% of batch 1.
        for b in &backbones {
            if let Some((m, _)) = pair(b, Technique::Batch1Accumulate, Technique::Batch1) {
                out.push(format!(
                    "{}: {b}: batch 1 x accumulate {ACCUMULATE} peaks at {:.2}x of batch 1 (target within 10%)",
                    if (m - 1.0).abs() <= 0.10 { "PASS" } else { "FAIL" },
                    m
                ));
            }
        }
        // Mixed precision halves activation memory (CUDA).
        for b in &backbones {
            let base = self
                .find(b, Technique::Baseline)
                .and_then(BenchRow::activations);
            for p in [Precision::Fp16Mixed, Precision::Bf16Mixed] {
                let Some(r) = self
                    .find(b, Technique::Precision(p))
                    .and_then(BenchRow::activations)
                else {
                    continue;
                };
                let Some(base) = base else { continue };
                let ratio = r as f64 / base.max(1) as f64;
                if self.cuda() {
                    out.push(format!(
                        "{}: {b}: {} activations (est.) {:.2}x of fp32 (target <= 0.55x, i.e. halved)",
                        if ratio <= 0.55 { "PASS" } else { "FAIL" },
                        p.name(),
                        ratio
                    ));
                } else {
                    out.push(format!(
                        "SKIP: {b}: {} halving activation memory is a CUDA target; on this CPU run, activations (est.) {:.2}x of fp32",
                        p.name(),
                        ratio
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn aliases_are_measured_once() {
        let all = all_backbones();
        assert!(all.contains(&"r3d_18".to_string()));
        assert!(all.contains(&"r2plus1d_18".to_string()));
        assert!(!all.contains(&"3dcnn".to_string()));
    }
}
