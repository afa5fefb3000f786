//! `train bench-memory` (`make bench-memory`): every memory technique on and off, for each
//! backbone, measured with real training steps.
//!
//! For each backbone the rows are: the baseline (float32, no checkpointing, the configured
//! `data.batch_size` B, no accumulation), `+ checkpointing`, `+ bf16-mixed`, `+ 16-mixed`
//! (CUDA only), `batch 1`, and `batch 1 x accumulate 8`. Each row is one
//! [`crate::measure::probe::probe_in_child`] run in a fresh process: peak memory (resident memory
//! above the process's baseline on CPU, device memory in use above its baseline on CUDA),
//! seconds per optimizer step, and both as a ratio to the row's reference (the baseline;
//! `batch 1` for the accumulation row). Gradient agreement is measured in this process
//! through [`Trainer::gradients`] on one batch: the technique on against off, as
//! `max |grad_on - grad_off| / max |grad_off|` over all parameters. Accumulation compares
//! one batch of 8 clips with 8 micro-batches of 1 clip of the same clips, dropout off: equal
//! only for models without BatchNorm (BatchNorm normalises with the statistics of the batch it sees).

use std::path::PathBuf;

use tch::{Device, Tensor};

use crate::config::{Settings, TrainConfig, KEYS};
use crate::data::loader::{Batch, ClipPick};
use crate::data::sampler::{Item, Sampler};
use crate::error::{IoAt, Result, TrainError};
use crate::measure::probe::{config_overrides, probe_in_child, ProbeOutcome, ProbeReport};
use crate::model::backbones::BackboneKind;
use crate::optim::precision::Precision;
use crate::run::session::{resolve_device, Session};
use crate::run::trainer::Trainer;

/// Micro-batches of the accumulation row.
pub const ACCUMULATE: usize = 8;

/// Arguments of `train bench-memory`.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// Cache folder the batches come from.
    pub cache: PathBuf,
    /// Resolved settings (input size, frames, views, batch size B, device).
    pub settings: Settings,
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

/// Benchmark: memory techniques on and off for each backbone (make bench-memory).
///
/// Rows per backbone: the baseline (fp32, configured batch), then with checkpointing, with
/// bf16-mixed, with 16-mixed (CUDA), batch 1, and batch 1 x accumulate 8. Columns: peak
/// training memory, seconds per step, ratios to the reference row, gradient agreement.
/// Prints Markdown and the target checks (PASS/FAIL).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchMemoryArgs {
    /// Cache folder the batches come from.
    #[arg(long)]
    pub cache: PathBuf,
    /// Backbones, comma-separated (default: every model.backbone value).
    #[arg(long, value_delimiter = ',')]
    pub backbones: Vec<String>,
    /// Also write the Markdown table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Timed optimizer steps per row, after one warm-up step.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Rows besides the baseline, comma-separated (default: all): checkpointing,
    /// bf16-mixed, 16-mixed (CUDA), batch1, accumulate.
    #[arg(long, value_delimiter = ',')]
    pub techniques: Vec<String>,
    /// key.sub=value settings (data.img_size, data.uniform_temporal_subsample_num,
    /// data.batch_size, train.view, trainer.device ...).
    pub overrides: Vec<String>,
}

/// Runs `train bench-memory`: prints the Markdown table (and writes it to `--out`).
pub fn run(args: &BenchMemoryArgs, quiet: bool) -> Result<()> {
    let b = bench_memory(&BenchRequest {
        cache: args.cache.clone(),
        settings: Settings::load(None, &args.overrides)?,
        backbones: args.backbones.clone(),
        steps: args.steps,
        techniques: args.techniques.clone(),
        train_exe: crate::measure::probe::train_exe()?,
        quiet,
    })?;
    let md = b.markdown();
    if let Some(path) = &args.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        std::fs::write(path, &md).at(path)?;
    }
    print!("{md}");
    Ok(())
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
    BackboneKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect()
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
    s: &'a Session,
}

impl Grads<'_> {
    /// Gradients after one accumulation window of `batches` (fresh model, fixed seeds).
    fn of(
        &self,
        precision: Precision,
        checkpointing: bool,
        batches: &[Batch],
    ) -> Result<Vec<Tensor>> {
        let (s, c) = (self.s, &self.s.config);
        tch::manual_seed(c.train.seed as i64);
        let mut tr = Trainer::new(
            &s.model,
            s.device,
            precision,
            checkpointing,
            c.train.weight_decay,
        )?;
        for (k, b) in batches.iter().enumerate() {
            let x = s.input(b)?;
            let y = Tensor::from_slice(&b.labels).to_device(s.device);
            tr.micro_batch(
                &x,
                &y,
                c.train.label_smoothing,
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
    args: &BenchRequest,
    cfg: &Settings,
    techniques: &[Technique],
) -> Result<Vec<Option<Result<f64, String>>>> {
    let s = Session::open(&args.cache, TrainConfig::new(cfg)?)?;
    let items = s.items(&s.train_selection())?;
    if items.is_empty() {
        return Err("the training selection is empty".into());
    }
    let loader = s.loader()?;
    let sampler = Sampler {
        items: items.clone(),
        batch_size: 1,
        seed: 0,
        balanced: false,
        shuffle: false,
        shard: crate::data::sampler::Shard::WHOLE,
    };
    let pick = |n: usize| -> Vec<Item> { (0..n).map(|i| items[i % items.len()]).collect() };
    let load = |its: &[Item]| -> Result<Batch> {
        let frames = loader.frames_for(&sampler, its, 0, 0, ClipPick::CENTRE);
        loader.load(0, its, &frames)
    };
    let g = Grads { s: &s };
    let bs = s.config.data.batch_size.max(1);
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
                let on = g.of(p, ck, &batch).map_err(|e| e.to_string());
                Some(on.and_then(|on| rel_diff(reference.as_deref().unwrap_or(&[]), &on)))
            }
            Technique::Batch1Accumulate => {
                // Dropout off (every `*dropout` key): one batch of 8 and 8 batches of 1
                // would otherwise draw different masks.
                let mut quiet = cfg.clone();
                for k in KEYS.iter().filter(|k| k.name.ends_with("dropout")) {
                    quiet.set(k.name, "0", false)?;
                }
                let s0 = Session::open(&args.cache, TrainConfig::new(&quiet)?)?;
                let g0 = Grads { s: &s0 };
                let its = pick(ACCUMULATE);
                let whole = vec![load(&its)?];
                let ones: Vec<Batch> = its.chunks(1).map(load).collect::<Result<_>>()?;
                let a = g0.of(Precision::Fp32, false, &whole)?;
                Some(
                    g0.of(Precision::Fp32, false, &ones)
                        .map_err(|e| e.to_string())
                        .and_then(|b| rel_diff(&a, &b)),
                )
            }
        };
        out.push(r);
    }
    Ok(out)
}

/// The rows of each backbone: the baseline, then the techniques asked for (all by
/// default; 16-mixed on CUDA only).
fn techniques(args: &BenchRequest, cuda: bool) -> Result<Vec<Technique>> {
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
                return Err(TrainError::Other(format!(
                    "--techniques: `{t}` is not one of baseline, {}",
                    NAMES.join(", ")
                )));
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
    Ok(techniques)
}

/// The settings of backbone `b`'s baseline: fp32, no checkpointing, no accumulation, and
/// the input type the backbone reads.
fn backbone_settings(cfg: &Settings, b: &str) -> Result<Settings> {
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
    Ok(c)
}

/// The settings of technique `t` on top of a backbone's baseline settings `c`.
fn technique_settings(c: &Settings, t: Technique) -> Result<Settings> {
    let mut ct = c.clone();
    let set = |ct: &mut Settings, k: &str, v: &str| ct.set(k, v, false).map_err(|e| e.to_string());
    match t {
        Technique::Baseline => {}
        Technique::Checkpointing => set(&mut ct, "model.use_gradient_checkpointing", "true")?,
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
    Ok(ct)
}

/// One row's report: the probe of `ct` in a child process, or why it has none.
fn measure_row(args: &BenchRequest, ct: &Settings, t: Technique) -> Result<ProbeReport, String> {
    match probe_in_child(
        &args.train_exe,
        &args.cache,
        &config_overrides(ct),
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
        Ok(ProbeOutcome::OutOfMemory { reason, .. }) => Err(format!("out of memory: {reason}")),
        Ok(ProbeOutcome::OverBudget { seen_bytes }) => Err(format!(
            "stopped at {}",
            mvdrive_common::bytes::format_bytes(seen_bytes)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Run the benchmark (see the module documentation).
pub fn bench_memory(args: &BenchRequest) -> Result<BenchMemory> {
    let cfg = &args.settings;
    let backbones = if args.backbones.is_empty() {
        all_backbones()
    } else {
        for b in &args.backbones {
            if b.parse::<BackboneKind>().is_err() {
                return Err(TrainError::Other(format!(
                    "--backbones: `{b}` is not a model.backbone value ({})",
                    BackboneKind::NAMES.join(", ")
                )));
            }
        }
        args.backbones.clone()
    };
    let tc = TrainConfig::new(cfg)?;
    let device = resolve_device(tc.trainer.device)?;
    let cuda = matches!(device, Device::Cuda(_));
    let batch = tc.data.batch_size.max(1);
    let techniques = techniques(args, cuda)?;
    let mut rows = Vec::new();
    let mut input = (0, 0, tc.data.uniform_temporal_subsample_num, 0);
    for b in &backbones {
        let c = backbone_settings(cfg, b)?;
        let mut first = true;
        for &t in &techniques {
            let ct = technique_settings(&c, t)?;
            if !args.quiet {
                eprintln!("bench-memory: {b}: {}", t.label(batch));
            }
            let report = measure_row(args, &ct, t);
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
        match agreements(args, &c, &here).map_err(|e| e.to_string()) {
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

mod report;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_measured_once() {
        let all = all_backbones();
        assert!(all.contains(&"r3d_18".to_string()));
        assert!(all.contains(&"r2plus1d_18".to_string()));
        assert!(!all.contains(&"3dcnn".to_string()));
    }
}
