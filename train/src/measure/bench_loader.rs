//! `train bench-loader`: how fast the loader streams clips, against the memcpy bound of the
//! same bytes. (The PyAV comparison, decoding the source videos at train time the way the
//! original project did, is `bench/pyav_loader.py`; `make bench-loader` runs both.)

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Settings, TrainConfig};
use crate::data::loader::{ClipPick, FrameChecks, Loader, Prefetch};
use crate::data::sampler::{Sampler, Selection};
use crate::error::Result;
use crate::optim::precision::Precision;
use crate::run::session::Session;
use crate::run::trainer::Trainer;

/// Benchmark: loader clips/s, with and without the frame checks, against the memcpy bound
/// of the same bytes (prints JSON).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchLoaderArgs {
    /// Cache folder.
    #[arg(long)]
    pub cache: PathBuf,
    /// Split to stream.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Timed epochs (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Leave out the training step next to the augmentation figures (a CPU step on large
    /// clips takes minutes).
    #[arg(long)]
    pub no_step: bool,
    /// key.sub=value settings (data.batch_size, data.num_workers,
    /// data.uniform_temporal_subsample_num, train.view ...).
    pub overrides: Vec<String>,
}

/// Runs `train bench-loader`: the figures as one line of JSON.
pub fn run(args: &BenchLoaderArgs) -> Result<()> {
    let settings = Settings::load(None, &args.overrides)?;
    let b = loader(
        &args.cache,
        &settings,
        &args.split,
        args.epochs,
        !args.no_step,
    )?;
    println!("{}", serde_json::to_string(&b)?);
    Ok(())
}

/// Figures of one loader benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoaderBench {
    /// Clips per epoch.
    pub clips: usize,
    /// Views per clip.
    pub views: usize,
    /// Frames per view.
    pub frames: usize,
    /// Epochs timed.
    pub epochs: u64,
    /// Loader threads.
    pub workers: usize,
    /// Clips per second through the loader as training runs it: each frame checked
    /// against its checksum the first time it is read (the warm-up pass), not again.
    pub loader_clips_per_s: f64,
    /// Clips per second through the loader checking every frame on every read.
    pub every_read_clips_per_s: f64,
    /// Clips per second through the same loader with the frame checks off.
    pub unchecked_clips_per_s: f64,
    /// Frame checksums in the cache's records (false for format 1 and 2 caches).
    pub frame_checksums: bool,
    /// What checking each frame once costs: 1 - (unchecked epoch time / checked epoch
    /// time), the median over the epochs (each epoch times the three loaders back to back,
    /// so the machine's drift between epochs cancels out).
    pub once_cost: f64,
    /// The same for checking every read.
    pub every_read_cost: f64,
    /// Clips per second copying the same bytes from memory (memcpy bound).
    pub memcpy_clips_per_s: f64,
    /// Bytes per clip.
    pub bytes_per_clip: u64,
    /// What training-time augmentation costs on this device, next to a training step.
    pub augment: AugmentCost,
}

/// Milliseconds per batch of turning a `u8` batch into the model's input, plain and with
/// the default augmentation (`data.aug.*`), and seconds of one training step of the
/// session's model on that batch (fp32, after a warm-up step).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AugmentCost {
    /// Plain input (conversion, normalisation), ms per batch.
    pub plain_ms: f64,
    /// Augmented input (crop + resize, flip, jitter, conversion, normalisation), ms.
    pub augmented_ms: f64,
    /// One optimizer step of the session's model (`model.backbone`) on the batch, s
    /// (absent with `--no-step`).
    pub step_s: Option<f64>,
    /// The backbone of that step.
    pub backbone: String,
}

/// Times the input with and without augmentation over a few batches, and one step.
fn augment_cost(
    s: &Session,
    loader: &Arc<Loader>,
    sampler: &Arc<Sampler>,
    with_step: bool,
) -> Result<AugmentCost> {
    let batches: Vec<_> =
        Prefetch::start(loader.clone(), sampler.clone(), 1, 0, ClipPick::Jittered, 0)
            .take(4)
            .collect::<Result<_>>()?;
    let time = |f: &dyn Fn(&crate::data::loader::Batch) -> Result<()>| -> Result<f64> {
        let start = Instant::now();
        for b in &batches {
            f(b)?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e3 / batches.len().max(1) as f64)
    };
    let plain_ms = time(&|b| s.input(b).map(|_| ()))?;
    let augmented_ms = time(&|b| s.train_input(b, 1).map(|_| ()))?;
    let backbone = s.config.settings().raw("model.backbone").to_string();
    if !with_step {
        return Ok(AugmentCost {
            plain_ms,
            augmented_ms,
            step_s: None,
            backbone,
        });
    }
    tch::manual_seed(0);
    let mut tr = Trainer::new(&s.model, s.device, Precision::Fp32, false, 0.0)?;
    let (x, y) = s.train_input(&batches[0], 1)?;
    let mut step = || -> Result<f64> {
        let start = Instant::now();
        tr.micro_batch(&x, &y, 0.0, 1, 0)?;
        tr.step(1e-4, 0.0);
        Ok(start.elapsed().as_secs_f64())
    };
    step()?;
    let step_s = step()?;
    Ok(AugmentCost {
        plain_ms,
        augmented_ms,
        step_s: Some(step_s),
        backbone,
    })
}

/// Time `epochs` passes of the training loader over `split`, then memcpy of the same bytes.
pub fn loader(
    cache_dir: &Path,
    settings: &Settings,
    split: &str,
    epochs: u64,
    with_step: bool,
) -> Result<LoaderBench> {
    // The loader reads RGB at the cache's size: no model input, no resize.
    let mut settings = settings.clone();
    settings.set("data.img_size", "null", false)?;
    settings.set("model.input_type", "rgb", false)?;
    let s = Session::open(cache_dir, TrainConfig::new(&settings)?)?;
    let views = s.views.clone();
    let t = s.clip().t as usize;
    let items = s.items(&Selection::Split(split.to_string()))?;
    let clips = items.len();
    let sampler = s.train_sampler(items, crate::data::sampler::Shard::WHOLE);
    let with = |checks: FrameChecks| -> Result<Arc<Loader>> {
        let mut l = s.new_loader()?;
        l.frame_checks = checks;
        Ok(Arc::new(l))
    };
    let (checked, always, unchecked) = (
        with(FrameChecks::Once)?,
        with(FrameChecks::Always)?,
        with(FrameChecks::Never)?,
    );
    let workers = s.config.data.num_workers;
    let mut sink = 0u64;
    // One untimed pass warms the page cache: every measurement then reads from memory.
    let mut epoch = |loader: &Arc<Loader>, e: u64| -> Result<f64> {
        let start = Instant::now();
        for b in Prefetch::start(
            loader.clone(),
            sampler.clone(),
            e,
            0,
            ClipPick::Jittered,
            workers,
        ) {
            let b = b?;
            sink = sink.wrapping_add(b.rgb.as_ref().map_or(0, |r| r[r.len() / 2] as u64));
        }
        Ok(start.elapsed().as_secs_f64())
    };
    epoch(&checked, 0)?;
    let before = checked.counters.rgb_bytes.load(Ordering::Relaxed);
    // The three loaders' epochs alternate, in a rotating order, so that drift in the
    // machine's speed falls on all alike.
    let mut secs = [0.0f64; 3];
    let loaders = [&checked, &always, &unchecked];
    let (mut once_ratios, mut always_ratios) = (Vec::new(), Vec::new());
    for e in 1..=epochs {
        let mut t = [0.0f64; 3];
        for i in 0..3 {
            let j = (i + e as usize) % 3;
            t[j] = epoch(loaders[j], e)?;
            secs[j] += t[j];
        }
        once_ratios.push(t[2] / t[0]);
        always_ratios.push(t[2] / t[1]);
    }
    let [secs, secs_always, secs_unchecked] = secs;
    let augment = augment_cost(&s, &checked, &sampler, with_step)?;
    let bytes = checked.counters.rgb_bytes.load(Ordering::Relaxed) - before;
    let bytes_per_clip = bytes / (clips as u64 * epochs).max(1);
    // The memcpy bound: the same number of clip-sized copies from a warm buffer, frame by
    // frame as the loader copies them.
    let p = &s.cache.meta.params;
    let fb = (p.img_height * p.img_width * 3) as usize;
    let src = vec![7u8; fb * 64];
    let mut dst = vec![0u8; bytes_per_clip as usize];
    let frames_per_clip = (bytes_per_clip as usize / fb).max(1);
    let start = Instant::now();
    for n in 0..clips as u64 * epochs {
        for f in 0..frames_per_clip {
            let at = ((n as usize + f) % 64) * fb;
            dst[f * fb..(f + 1) * fb].copy_from_slice(&src[at..at + fb]);
        }
        sink = sink.wrapping_add(dst[dst.len() / 2] as u64);
    }
    let mem_secs = start.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(sink);
    Ok(LoaderBench {
        clips,
        views: views.len(),
        frames: t,
        epochs,
        workers,
        loader_clips_per_s: (clips as u64 * epochs) as f64 / secs,
        every_read_clips_per_s: (clips as u64 * epochs) as f64 / secs_always,
        unchecked_clips_per_s: (clips as u64 * epochs) as f64 / secs_unchecked,
        frame_checksums: s.cache.records.iter().all(|r| r.frame_xxh3),
        once_cost: 1.0 - median(&mut once_ratios),
        every_read_cost: 1.0 - median(&mut always_ratios),
        memcpy_clips_per_s: (clips as u64 * epochs) as f64 / mem_secs,
        bytes_per_clip,
        augment,
    })
}

/// The median of `v` (0 when empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
