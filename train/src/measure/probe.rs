//! Measured memory: run real training steps of a configuration and report its peak memory
//! and step time. `train plan` and `make bench-memory` are built on it.
//!
//! - [`probe`] runs **in this process**: it builds the [`Trainer`] exactly as `train fit`
//!   does (`trainer.precision`, `model.use_gradient_checkpointing`,
//!   `train.accumulate_grad_batches`, `train.seed`), loads one accumulation window of real
//!   training batches from the cache, runs one warm-up optimizer step and then `steps` timed
//!   optimizer steps, and reports the process's peak resident memory (VmHWM, reset just
//!   before the model is built so that earlier transients do not count), the resident
//!   memory before the model was built (so "training memory above baseline" can be shown),
//!   the mean seconds per optimizer step, and on CUDA the device memory in use.
//! - [`probe_in_child`] runs `train probe` (the hidden subcommand around [`probe`]) as a
//!   child process and watches it: the child's peak RSS is the CPU measure, and a child that
//!   grows past a RAM limit is killed early ([`ProbeOutcome::OverBudget`]); a child that
//!   dies of memory (kernel OOM killer, a CUDA or CPU allocator "out of memory") is reported
//!   as [`ProbeOutcome::OutOfMemory`]. Each candidate gets a fresh process, so one setting's
//!   allocator caches never inflate another's figure.
//!
//! **CUDA figures** are the device memory in use (`cudaMemGetInfo`: total - free, so the
//! CUDA context and any other process on the GPU count too), sampled every millisecond by a
//! background thread during the steps; the maximum is reported. A short spike between two
//! samples can be missed, and the caching allocator keeps what it once reserved, so the
//! figure is the reserved peak rather than the live-tensor peak. The sampling thread reads
//! the current device of a new thread (device 0): on `cuda:N`, N > 0, the figure is not
//! that device's. This path has not been run on a GPU by its author.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mvdrive_common::sys::{peak_rss_bytes, rss_bytes};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::{Settings, TrainConfig, KEYS};
use crate::data::loader::ClipPick;
use crate::data::sampler::{Item, Sampler};
use crate::error::{Result, TrainError};
use crate::optim::precision::Precision;
use crate::run::session::Session;
use crate::run::trainer::Trainer;

/// Internal: run real steps of one setting and print its memory/time report as JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Cache folder.
    #[arg(long)]
    pub cache: PathBuf,
    /// Timed optimizer steps, after one warm-up step.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// key.sub=value settings.
    pub overrides: Vec<String>,
}

/// Runs `train probe`: the report as one line of JSON on stdout.
pub fn run(args: &ProbeArgs) -> Result<()> {
    let r = probe(
        &args.cache,
        &Settings::load(None, &args.overrides)?,
        args.steps,
    )?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// This executable, which runs the probes. If it was rebuilt while running, Linux names the
/// old file `... (deleted)`; the path itself then holds the new build, which is used.
pub fn train_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// What one [`probe`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Device trained on (`Cpu`, `Cuda(0)`).
    pub device: String,
    /// `model.backbone`.
    pub backbone: String,
    /// `data.batch_size`.
    pub batch_size: usize,
    /// `train.accumulate_grad_batches`.
    pub accumulate_grad_batches: usize,
    /// `trainer.precision`, canonical (`32`, `16-mixed`, `bf16-mixed`).
    pub precision: String,
    /// `model.use_gradient_checkpointing`.
    pub checkpointing: bool,
    /// Model input height and width.
    pub img_size: (i64, i64),
    /// Frames per clip (T).
    pub frames: i64,
    /// Views per clip.
    pub views: usize,
    /// Timed optimizer steps (after one warm-up step).
    pub steps: usize,
    /// Resident memory of the process before the model was built, bytes (libtorch, the
    /// opened cache).
    pub baseline_rss_bytes: u64,
    /// Peak resident memory of the process (VmHWM) over model building, the warm-up step
    /// and the timed steps, bytes.
    pub peak_rss_bytes: u64,
    /// CUDA only: device memory in use before the model was built, bytes.
    pub device_baseline_bytes: Option<u64>,
    /// CUDA only: the largest device memory in use sampled during the steps, bytes.
    pub peak_device_bytes: Option<u64>,
    /// Estimated bytes of the model state: float32 weights, gradients and the two AdamW
    /// moments (16 bytes per trainable parameter, 4 per buffer), plus under bf16-mixed the
    /// bfloat16 copy (2 + 2 bytes per parameter) and its float32 gradient accumulators.
    pub model_state_bytes: u64,
    /// Trainable parameters of the model.
    #[serde(default)]
    pub parameters: i64,
    /// The caching CPU allocator's counters at the end (`None` when it is not installed:
    /// `MVDRIVE_CPU_ALLOCATOR=glibc`, or a library caller that did not install it).
    #[serde(default)]
    pub cpu_allocator: Option<crate::run::allocator::CachingStats>,
    /// Mean wall time of one timed optimizer step (all its micro-batches), seconds.
    pub seconds_per_step: f64,
    /// Wall time of the warm-up step, seconds.
    pub warmup_seconds: f64,
    /// Mean training loss of the timed steps (a sanity figure).
    pub loss: f64,
}

impl ProbeReport {
    /// Peak resident memory above the baseline: what training itself added, bytes.
    pub fn training_rss_bytes(&self) -> u64 {
        self.peak_rss_bytes.saturating_sub(self.baseline_rss_bytes)
    }

    /// CUDA only: peak device memory above the device baseline, bytes.
    pub fn training_device_bytes(&self) -> Option<u64> {
        Some(
            self.peak_device_bytes?
                .saturating_sub(self.device_baseline_bytes.unwrap_or(0)),
        )
    }
}

/// Samples `cudaMemGetInfo` in a background thread and keeps the maximum.
struct DevicePeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl DevicePeak {
    fn start(on: bool) -> DevicePeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let handle = on.then(|| {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(b) = crate::measure::cuda_memory::used_bytes() {
                        peak.fetch_max(b, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        DevicePeak { stop, peak, handle }
    }

    fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take()?;
        let _ = h.join();
        // One last sample: the steady state after the last step.
        if let Some(b) = crate::measure::cuda_memory::used_bytes() {
            self.peak.fetch_max(b, Ordering::Relaxed);
        }
        Some(self.peak.load(Ordering::Relaxed))
    }
}

/// Reset this process's VmHWM to its current RSS (Linux `clear_refs` 5); best effort.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn model_state_bytes(tr: &Trainer) -> u64 {
    let bf16 = tr.precision == Precision::Bf16Mixed;
    tr.vs
        .variables()
        .values()
        .map(|t| {
            let n = t.numel() as u64;
            match (t.requires_grad(), bf16) {
                (true, false) => 16 * n,
                (true, true) => 16 * n + 8 * n,
                (false, false) => 4 * n,
                (false, true) => 6 * n,
            }
        })
        .sum()
}

/// Run one warm-up optimizer step and `steps` timed ones of the configuration `cfg` on real
/// batches of the cache, in this process, and report memory and time (see the module
/// documentation). Every optimizer step runs `train.accumulate_grad_batches` micro-batches
/// of `data.batch_size` clips, exactly as `train fit` would.
pub fn probe(cache: &Path, settings: &Settings, steps: usize) -> Result<ProbeReport> {
    let s = Session::open(cache, TrainConfig::new(settings)?)?;
    let c = &s.config;
    let device = s.device;
    let items = s.items(&s.train_selection())?;
    if items.is_empty() {
        return Err(TrainError::Other(format!(
            "{}: the training selection has no segments to probe with",
            cache.display()
        )));
    }
    let bs = c.data.batch_size.max(1);
    let accum = c.train.accumulate_grad_batches.max(1);
    let seed = c.train.seed;
    let loader = s.loader()?;
    // Plain shuffled order (never class-balanced): every probe sees the same clips.
    let sampler = Sampler {
        items,
        batch_size: bs,
        seed,
        balanced: false,
        shuffle: true,
        shard: crate::data::sampler::Shard::WHOLE,
    };
    let order = sampler.epoch_order(0);
    let cuda = matches!(device, Device::Cuda(_));
    let device_baseline = if cuda {
        crate::measure::cuda_memory::used_bytes()
    } else {
        None
    };
    let baseline_rss = rss_bytes();
    reset_peak_rss();

    // One accumulation window of real batches (full batches: the items are cycled when the
    // split has fewer than batch_size x accumulate_grad_batches clips). Loaded once and
    // reused by every step, as the prefetch threads of `train fit` would have them ready.
    let mut window = Vec::with_capacity(accum);
    for k in 0..accum {
        let its: Vec<Item> = (0..bs).map(|i| order[(k * bs + i) % order.len()]).collect();
        let frames = loader.frames_for(&sampler, &its, 0, k * bs, ClipPick::Jittered);
        window.push(loader.load(k, &its, &frames)?);
    }

    tch::manual_seed(seed as i64);
    let precision = s.precision;
    let checkpointing = c.model.use_gradient_checkpointing;
    let mut tr = Trainer::new(
        &s.model,
        device,
        precision,
        checkpointing,
        c.train.weight_decay,
    )?;
    tr.segments = c.model.checkpoint_segments;
    let (lr, clip, smoothing) = (c.train.lr, c.train.grad_clip, c.train.label_smoothing);
    let sampler_thread = DevicePeak::start(cuda);
    let mut one_step = |n: usize| -> Result<f64> {
        let mut loss = 0.0;
        for (k, batch) in window.iter().enumerate() {
            let x = s.input(batch)?;
            let y = Tensor::from_slice(&batch.labels).to_device(device);
            let micro_seed = (seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(n as i64)
                .wrapping_mul(31)
                .wrapping_add(k as i64);
            loss += tr.micro_batch(&x, &y, smoothing, accum, micro_seed)?;
        }
        tr.step(lr, clip);
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(loss / accum as f64)
    };
    let started = Instant::now();
    one_step(0)?;
    let warmup_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut loss = 0.0;
    for n in 1..=steps {
        loss += one_step(n)?;
    }
    let seconds_per_step = started.elapsed().as_secs_f64() / steps.max(1) as f64;
    let peak_device = sampler_thread.finish();
    Ok(ProbeReport {
        device: format!("{device:?}"),
        backbone: c.settings().raw("model.backbone").to_string(),
        batch_size: bs,
        accumulate_grad_batches: accum,
        precision: precision.name().to_string(),
        checkpointing,
        img_size: (s.clip().h, s.clip().w),
        frames: s.clip().t,
        views: s.views.len(),
        steps,
        baseline_rss_bytes: baseline_rss,
        peak_rss_bytes: peak_rss_bytes(),
        device_baseline_bytes: device_baseline,
        peak_device_bytes: peak_device,
        cpu_allocator: crate::run::allocator::caching_stats(),
        model_state_bytes: model_state_bytes(&tr),
        parameters: tr.opt.params.iter().map(|(_, p)| p.numel() as i64).sum(),
        seconds_per_step: if steps == 0 {
            warmup_seconds
        } else {
            seconds_per_step
        },
        warmup_seconds,
        loss: if steps == 0 {
            f64::NAN
        } else {
            loss / steps as f64
        },
    })
}

/// How a probe in a child process ended.
// One value per probe, moved a few times: the size of `Measured` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// It ran to the end.
    Measured {
        /// The child's own report.
        report: ProbeReport,
        /// The largest VmRSS the parent saw while polling, bytes (at most the report's
        /// peak, which the child reads from its VmHWM).
        polled_peak_rss: u64,
    },
    /// Its resident memory went past the RAM limit, and it was stopped there.
    OverBudget {
        /// The VmRSS seen when it was stopped: a lower bound of what it needs, bytes.
        seen_bytes: u64,
    },
    /// It died of memory: the kernel's OOM killer, or an allocator's "out of memory"
    /// (CUDA or CPU).
    OutOfMemory {
        /// What showed it (signal or the error line).
        reason: String,
        /// The largest VmRSS the parent saw, bytes.
        seen_bytes: u64,
    },
}

impl ProbeOutcome {
    /// Peak resident memory of the child: the report's VmHWM or the polled maximum.
    pub fn peak_rss(&self) -> u64 {
        match self {
            ProbeOutcome::Measured {
                report,
                polled_peak_rss,
            } => report.peak_rss_bytes.max(*polled_peak_rss),
            ProbeOutcome::OverBudget { seen_bytes } => *seen_bytes,
            ProbeOutcome::OutOfMemory { seen_bytes, .. } => *seen_bytes,
        }
    }
}

/// The resolved configuration as `key=value` overrides (every key of [`KEYS`]), so that a
/// child process resolves exactly the same settings.
pub fn config_overrides(cfg: &Settings) -> Vec<String> {
    KEYS.iter()
        .map(|k| format!("{}={}", k.name, cfg.raw(k.name)))
        .collect()
}

fn child_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Error lines that mean "out of memory", from libtorch (CPU and CUDA) and the C++ runtime.
fn oom_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("out of memory")
                || l.contains("can't allocate memory")
                || l.contains("cannot allocate memory")
                || l.contains("bad_alloc")
        })
        .map(|l| l.trim().chars().take(300).collect())
}

/// Run `train_exe probe --cache CACHE --steps STEPS OVERRIDES...` as a child process and
/// watch it: its VmRSS is polled every 20 ms, and once it exceeds `ram_limit` the child is
/// killed and [`ProbeOutcome::OverBudget`] returned. A child that dies of memory gives
/// [`ProbeOutcome::OutOfMemory`]; any other failure (a bad setting, a broken cache) is an
/// error with the child's message.
pub fn probe_in_child(
    train_exe: &Path,
    cache: &Path,
    overrides: &[String],
    steps: usize,
    ram_limit: Option<u64>,
) -> Result<ProbeOutcome> {
    let mut child = Command::new(train_exe)
        .arg("probe")
        .arg("--cache")
        .arg(cache)
        .arg("--steps")
        .arg(steps.to_string())
        .args(overrides)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {} probe: {e}", train_exe.display()))?;
    let pid = child.id();
    let out = drain(child.stdout.take().ok_or("no stdout")?);
    let err = drain(child.stderr.take().ok_or("no stderr")?);
    let mut seen = 0u64;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("probe child: {e}"))? {
            break st;
        }
        if let Some(rss) = child_rss(pid) {
            seen = seen.max(rss);
            if ram_limit.is_some_and(|limit| rss > limit) {
                let _ = child.kill();
                let _ = child.wait();
                let _ = (out.join(), err.join());
                return Ok(ProbeOutcome::OverBudget { seen_bytes: seen });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| format!("`train probe` printed no report; its stderr:\n{stderr}"))?;
        let report: ProbeReport = serde_json::from_str(line)
            .map_err(|e| format!("`train probe` printed an unreadable report ({e}): {line}"))?;
        return Ok(ProbeOutcome::Measured {
            polled_peak_rss: seen,
            report,
        });
    }
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(libc::SIGKILL) {
            return Ok(ProbeOutcome::OutOfMemory {
                reason: "killed by SIGKILL (the kernel's out-of-memory killer?)".into(),
                seen_bytes: seen,
            });
        }
    }
    if let Some(reason) = oom_line(&stderr) {
        return Ok(ProbeOutcome::OutOfMemory {
            reason,
            seen_bytes: seen,
        });
    }
    // The child's own error (`error: ...`, from `train`'s main), or the end of its stderr.
    let message = match stderr.rfind("error: ") {
        Some(i) => stderr[i + "error: ".len()..].trim().to_string(),
        None => {
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "`train probe` failed ({status}): {}",
                tail.join("\n").trim()
            )
        }
    };
    Err(TrainError::Other(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_lines_are_recognised() {
        assert!(oom_line("error: CUDA out of memory. Tried to allocate 2.00 GiB").is_some());
        assert!(oom_line("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes").is_some());
        assert!(oom_line("error: unknown config key `x`").is_none());
    }
}
