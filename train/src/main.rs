//! `train`: the command line. Parsing only; the work is in the `mvdrive_train` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use mvdrive_train::config::{keys_help, Config};
use mvdrive_train::fit::{eval, fit, FitArgs};

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
    /// NOT BUILT YET (issue #5): measure memory of candidate settings and recommend one.
    Plan {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
        Command::Plan { .. } => {
            bail!("`train plan` is not built yet (open issue #5: measured memory planning)")
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
