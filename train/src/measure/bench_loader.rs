//! `train bench-loader`: how fast the loader streams clips, against the memcpy bound of the
//! same bytes. (The PyAV comparison, decoding the source videos at train time the way the
//! original project did, is `bench/pyav_loader.py`; `make bench-loader` runs both.)

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::{Settings, TrainConfig};
use crate::data::loader::Prefetch;
use crate::data::sampler::Selection;
use crate::error::Result;
use crate::run::session::Session;

/// Benchmark: loader clips/s against the memcpy bound of the same bytes (prints JSON).
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
    /// key.sub=value settings (data.batch_size, data.num_workers,
    /// data.uniform_temporal_subsample_num, train.view ...).
    pub overrides: Vec<String>,
}

/// Runs `train bench-loader`: the figures as one line of JSON.
pub fn run(args: &BenchLoaderArgs) -> Result<()> {
    let settings = Settings::load(None, &args.overrides)?;
    let b = loader(&args.cache, &settings, &args.split, args.epochs)?;
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
    /// Clips per second through the loader.
    pub loader_clips_per_s: f64,
    /// Clips per second copying the same bytes from memory (memcpy bound).
    pub memcpy_clips_per_s: f64,
    /// Bytes per clip.
    pub bytes_per_clip: u64,
}

/// Time `epochs` passes of the training loader over `split`, then memcpy of the same bytes.
pub fn loader(
    cache_dir: &Path,
    settings: &Settings,
    split: &str,
    epochs: u64,
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
    let sampler = s.train_sampler(items);
    let loader = s.loader()?;
    let workers = s.config.data.num_workers;
    // One untimed pass warms the page cache: both measurements then read from memory.
    for b in Prefetch::start(loader.clone(), sampler.clone(), 0, 0, true, workers) {
        b?;
    }
    let before = loader.counters.rgb_bytes.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut sink = 0u64;
    for e in 1..=epochs {
        for b in Prefetch::start(loader.clone(), sampler.clone(), e, 0, true, workers) {
            let b = b?;
            sink = sink.wrapping_add(b.rgb.as_ref().map_or(0, |r| r[r.len() / 2] as u64));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = loader.counters.rgb_bytes.load(Ordering::Relaxed) - before;
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
        memcpy_clips_per_s: (clips as u64 * epochs) as f64 / mem_secs,
        bytes_per_clip,
    })
}
