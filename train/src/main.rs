//! `train`: the command line. Parsing only; the work is in the `mvdrive_train` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use mvdrive_train::bench_memory::{bench_memory, BenchArgs};
use mvdrive_train::config::{keys_help, Config};
use mvdrive_train::fit::{eval, fit, FitArgs};
use mvdrive_train::plan::{parse_size, plan, PlanArgs};
use mvdrive_train::probe::probe;

/// Train driver-behaviour models on an mvdrive cache (written by `prep build`).
#[derive(Parser)]
#[command(name = "train", version, about, long_about = None)]
struct Cli {
    /// No progress bars or summaries on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model: `train fit --cache C [--config F] [key.sub=value ...]`.
    #[command(after_help = "Settings: `train keys` lists every key with its default.")]
    Fit {
        /// Cache folder (from `prep build`).
        #[arg(long)]
        cache: PathBuf,
        /// YAML config (configs/config.yaml layout, e.g. a preset); overrides win.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Continue from a checkpoint (`.../checkpoints/epoch=E-step=S.safetensors`):
        /// same batches, same losses as an uninterrupted run.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// key.sub=value settings, e.g. data.batch_size=2 train.max_epochs=5.
        overrides: Vec<String>,
    },
    /// Evaluate a checkpoint on a split: writes predictions.csv and metrics.json.
    Eval {
        /// Checkpoint (`.safetensors`).
        #[arg(long)]
        ckpt: PathBuf,
        /// Cache folder.
        #[arg(long)]
        cache: PathBuf,
        /// Split to evaluate.
        #[arg(long, default_value = "test")]
        split: String,
        /// Output folder (default: eval-<split> next to the checkpoint).
        #[arg(long)]
        out: Option<PathBuf>,
        /// auto | cpu | cuda:N
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Measure which settings fit a memory budget, and recommend the fastest one.
    ///
    /// Keeps the effective batch (data.batch_size x train.accumulate_grad_batches) of the
    /// configuration and tries, with real training steps on the cache, every batch_size
    /// dividing it, each precision of the device (32, bf16-mixed; 16-mixed on CUDA),
    /// gradient checkpointing off and on, and the --img-sizes / --frames given. Each setting
    /// runs in a child process that is stopped once its resident memory passes --budget-ram.
    /// Prints a table (peak RAM, peak VRAM on CUDA, seconds per optimizer step) and the
    /// fastest setting that fits, as key=value overrides for `train fit`.
    #[command(
        after_help = "Sizes: 512M, 8G, 8GiB, 1.5G or plain bytes (binary: 1G = 2^30 bytes).\nExample: train plan --cache C --budget-ram 8G data.batch_size=4 train.accumulate_grad_batches=2"
    )]
    Plan {
        /// Cache folder (from `prep build`): the probes train on its batches.
        #[arg(long)]
        cache: PathBuf,
        /// YAML config (configs/config.yaml layout, e.g. a preset); overrides win.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Peak RAM allowed for training (resident memory of the whole process).
        #[arg(long, value_name = "SIZE")]
        budget_ram: Option<String>,
        /// Peak GPU memory allowed (CUDA runs only).
        #[arg(long, value_name = "SIZE")]
        budget_vram: Option<String>,
        /// data.img_size values to try, comma-separated (default: the configured one).
        /// Smaller ones are recommended only when nothing fits at the configured size.
        #[arg(long, value_delimiter = ',', value_name = "N|HxW,...")]
        img_sizes: Vec<String>,
        /// Frame counts (T) to try, comma-separated (default: the configured one).
        #[arg(long, value_delimiter = ',', value_name = "T,...")]
        frames: Vec<i64>,
        /// Timed optimizer steps per setting, after one warm-up step.
        #[arg(long, default_value_t = 2)]
        steps: usize,
        /// key.sub=value settings, e.g. data.batch_size=4 train.accumulate_grad_batches=2.
        overrides: Vec<String>,
    },
    /// Internal: run real steps of one setting and print its memory/time report as JSON.
    #[command(hide = true)]
    Probe {
        /// Cache folder.
        #[arg(long)]
        cache: PathBuf,
        /// Timed optimizer steps, after one warm-up step.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// key.sub=value settings.
        overrides: Vec<String>,
    },
    /// Benchmark: memory techniques on and off for each backbone (make bench-memory).
    ///
    /// Rows per backbone: the baseline (fp32, configured batch), then with checkpointing,
    /// with bf16-mixed, with 16-mixed (CUDA), batch 1, and batch 1 x accumulate 8. Columns:
    /// peak training memory, seconds per step, ratios to the reference row, gradient
    /// agreement. Prints Markdown and the target checks (PASS/FAIL).
    BenchMemory {
        /// Cache folder the batches come from.
        #[arg(long)]
        cache: PathBuf,
        /// Backbones, comma-separated (default: every model.backbone value).
        #[arg(long, value_delimiter = ',')]
        backbones: Vec<String>,
        /// Also write the Markdown table to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Timed optimizer steps per row, after one warm-up step.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Rows besides the baseline, comma-separated (default: all): checkpointing,
        /// bf16-mixed, 16-mixed (CUDA), batch1, accumulate.
        #[arg(long, value_delimiter = ',')]
        techniques: Vec<String>,
        /// key.sub=value settings (data.img_size, data.uniform_temporal_subsample_num,
        /// data.batch_size, train.view, trainer.device ...).
        overrides: Vec<String>,
    },
    /// List every setting with its default and meaning.
    Keys,
    /// Benchmark: loader clips/s against the memcpy bound of the same bytes (prints JSON).
    BenchLoader {
        /// Cache folder.
        #[arg(long)]
        cache: PathBuf,
        /// Split to stream.
        #[arg(long, default_value = "train")]
        split: String,
        /// Timed epochs (after one warm-up pass).
        #[arg(long, default_value_t = 3)]
        epochs: u64,
        /// key.sub=value settings (data.batch_size, data.num_workers, data.uniform_temporal_subsample_num, train.view ...).
        overrides: Vec<String>,
    },
    /// Print the libtorch build this binary links and the devices it can see.
    Info,
}

fn main() -> ExitCode {
    // Like other Unix tools: a closed pipe (`train keys | head`) ends us quietly.
    // SAFETY: resetting a signal disposition at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This executable, which runs the probes. If it was rebuilt while running, Linux names the
/// old file `... (deleted)`; the path itself then holds the new build, which is used.
fn train_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fit {
            cache,
            config,
            resume,
            overrides,
        } => {
            let mut cfg = Config::default();
            if let Some(f) = &config {
                cfg.apply_yaml_file(f)?;
            }
            cfg.apply_overrides(&overrides)?;
            let s = fit(FitArgs {
                cache,
                config: cfg,
                overrides,
                config_file: config,
                resume,
                quiet: cli.quiet,
            })
            .map_err(|e| anyhow!(e))?;
            let last = s.epochs.last();
            println!(
                "train fit: {} epoch(s) -> {}{}",
                s.epochs.len(),
                s.run_dir.display(),
                if s.stopped_early {
                    " (stopped early)"
                } else {
                    ""
                }
            );
            if let Some(r) = last {
                println!(
                    "  last epoch: train loss {:.4}, val top1 {:.3}, mean class acc {:.3}, macro-F1 {:.3}",
                    r.train_loss, r.top1, r.mean_class_acc, r.macro_f1
                );
            }
            if let Some((v, e)) = s.best {
                println!("  best: {v:.4} at epoch {}", e + 1);
            }
            if let Some(c) = s.last_checkpoint {
                println!("  checkpoint: {}", c.display());
            }
            println!(
                "  metrics: {}/metrics.csv, {}/metrics.png",
                s.run_dir.display(),
                s.run_dir.display()
            );
            println!("  peak RSS: {:.1} MiB", s.peak_rss as f64 / 1048576.0);
        }
        Command::Eval {
            ckpt,
            cache,
            split,
            out,
            device,
        } => {
            let s = eval(&ckpt, &cache, &split, out.as_deref(), &device).map_err(|e| anyhow!(e))?;
            println!(
                "train eval: {} segments of split `{split}`: top1 {:.3}, macro-F1 {:.3} -> {}, {}",
                s.segments,
                s.top1,
                s.macro_f1,
                s.predictions.display(),
                s.metrics.display()
            );
        }
        Command::Plan {
            cache,
            config,
            budget_ram,
            budget_vram,
            img_sizes,
            frames,
            steps,
            overrides,
        } => {
            let mut cfg = Config::default();
            if let Some(f) = &config {
                cfg.apply_yaml_file(f)?;
            }
            cfg.apply_overrides(&overrides)?;
            let size = |flag: &str, v: Option<String>| {
                v.map(|v| parse_size(flag, &v))
                    .transpose()
                    .map_err(|e| anyhow!(e))
            };
            let args = PlanArgs {
                cache: cache.clone(),
                config: cfg,
                user_overrides: overrides.clone(),
                budget_ram: size("--budget-ram", budget_ram)?,
                budget_vram: size("--budget-vram", budget_vram)?,
                img_sizes,
                frames,
                steps,
                train_exe: train_exe()?,
                quiet: cli.quiet,
            };
            let p = plan(&args).map_err(|e| anyhow!(e))?;
            print!("{}", p.table());
            if p.pruned > 0 {
                println!(
                    "({} larger batch sizes not run: a smaller batch of the same setting was over budget or failed)",
                    p.pruned
                );
            }
            if let Some(e) = p.no_fit_error() {
                bail!(e);
            }
            if let Some(r) = p.recommendation(&cache, &overrides) {
                print!("{r}");
            }
        }
        Command::Probe {
            cache,
            steps,
            overrides,
        } => {
            let mut cfg = Config::default();
            cfg.apply_overrides(&overrides)?;
            let r = probe(&cache, &cfg, steps).map_err(|e| anyhow!(e))?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::BenchMemory {
            cache,
            backbones,
            out,
            steps,
            techniques,
            overrides,
        } => {
            let mut cfg = Config::default();
            cfg.apply_overrides(&overrides)?;
            let b = bench_memory(&BenchArgs {
                cache,
                config: cfg,
                backbones,
                steps,
                techniques,
                train_exe: train_exe()?,
                quiet: cli.quiet,
            })
            .map_err(|e| anyhow!(e))?;
            let md = b.markdown();
            if let Some(path) = &out {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(path, &md).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            }
            print!("{md}");
        }
        Command::Keys => print!("{}", keys_help()),
        Command::BenchLoader {
            cache,
            split,
            epochs,
            overrides,
        } => {
            let mut cfg = Config::default();
            cfg.apply_overrides(&overrides)?;
            let b = mvdrive_train::bench::loader(&cache, &cfg, &split, epochs)
                .map_err(|e| anyhow!(e))?;
            println!("{}", serde_json::to_string(&b)?);
        }
        Command::Info => {
            println!("mvdrive train {}", env!("CARGO_PKG_VERSION"));
            println!("tch 0.24.0 (libtorch 2.11.0)");
            println!("cuda available: {}", tch::Cuda::is_available());
            println!("cuda devices:   {}", tch::Cuda::device_count());
            let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
            println!(
                "cpu tensor check: sum([1,2,3]) = {}",
                t.sum(tch::Kind::Float).double_value(&[])
            );
        }
    }
    Ok(())
}
