//! `train fit`: the loop. Batches stream from the cache as `u8`, become float on the
//! device, go through the multi-view model; AdamW with warm-up + cosine, gradient clipping,
//! accumulation; per-epoch validation metrics, plots, checkpoints, early stopping; exact
//! resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use mvdrive_common::progress;
use mvdrive_common::sys::{peak_rss_bytes, rss_bytes};
use tch::Device;

use mvdrive_dist::Launch;

use crate::config::{DeviceChoice, Monitor, TrainConfig};
use crate::data::loader::{ClipPick, Loader, Prefetch};
use crate::data::sampler::{Sampler, Shard};
use crate::error::{IoAt, Result};
use crate::model::pretrained::load_pretrained;
use crate::model::summary;
use crate::model::ModelError;
use crate::optim::adamw::lr_at;
use crate::optim::loss_scale::GradScaler;
use crate::optim::precision::Precision;
use crate::report::metrics::{EpochMetrics, MetricsCsv};
use crate::report::plot;
use crate::report::run_dir::RunDir;
use crate::run::checkpoint::{self, TrainerState};
use crate::run::eval::evaluate;
use crate::run::launcher;
use crate::run::ranks::Ranks;
use crate::run::resume;
use crate::run::session::{resolve_device, Session};
use crate::run::trainer::{CommStats, Trainer};

/// Train a model: `train fit --cache C [--config F] [key.sub=value ...]`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Settings: `train keys` lists every key with its default.")]
pub struct FitArgs {
    /// Cache folder (from `prep build`).
    #[arg(long)]
    pub cache: PathBuf,
    /// YAML config (configs/config.yaml layout, e.g. a preset); overrides win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from a checkpoint (`.../checkpoints/epoch=E-step=S.safetensors`): same
    /// batches, same losses as an uninterrupted run. --config and the overrides apply over
    /// the checkpoint's settings.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start N ranks on this machine (c10d gloo on CPU, NCCL on CUDA), each with a disjoint
    /// share of every epoch; rank 0 writes the run. Their rendezvous is served on
    /// MASTER_PORT, or on a free port when it is unset. Under torchrun or srun, leave it
    /// out: the launcher starts the ranks (docs/distributed.md).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub nproc: Option<u16>,
    /// key.sub=value settings, e.g. data.batch_size=2 train.max_epochs=5.
    pub overrides: Vec<String>,
}

/// What `train fit` did.
pub struct FitSummary {
    /// `logs/<experiment>/version_N`.
    pub run_dir: PathBuf,
    /// One row per finished epoch of this run.
    pub epochs: Vec<EpochMetrics>,
    /// Best monitored value and its epoch.
    pub best: Option<(f64, u64)>,
    /// Last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// True if early stopping ended the run.
    pub stopped_early: bool,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss: u64,
    /// The metric `best` is of (`train.monitor`).
    pub monitor: Monitor,
    /// Ranks of the run (1 alone) and this process's rank.
    pub world: usize,
    /// This process's rank (only rank 0 writes the run folder).
    pub rank: usize,
    /// Gradient all-reduce time and bytes (multi-process runs).
    pub comm: CommStats,
}

/// The loop's fixed quantities, worked out once.
struct Plan {
    batches: usize,
    accum: usize,
    total_steps: u64,
    warmup: u64,
}

/// What rank 0 writes: the run folder and its metrics file.
struct Output {
    dir: RunDir,
    csv: MetricsCsv,
}

/// A run in progress: what the loop reads and what it updates.
struct Run {
    s: Session,
    tr: Trainer,
    loader: Arc<Loader>,
    train: Arc<Sampler>,
    val: Option<Arc<Sampler>>,
    plan: Plan,
    /// Rank 0 only.
    out: Option<Output>,
    /// The run folder (rank 0's, on every rank).
    run_dir: PathBuf,
    ranks: Ranks,
    st: TrainerState,
    quiet: bool,
}

/// Runs `train fit` and prints its summary on stdout.
pub fn run(args: &FitArgs, quiet: bool) -> Result<()> {
    if let Some(n) = args.nproc.filter(|&n| n > 1) {
        if Launch::from_env()?.is_some() {
            return Err("--nproc starts its own ranks; under torchrun or srun leave it out".into());
        }
        return launcher::run_local(n as usize, quiet);
    }
    let s = fit(args, quiet)?;
    if s.rank != 0 {
        return Ok(());
    }
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
    if let Some(r) = s.epochs.last() {
        println!(
            "  last epoch: train loss {:.4}, val top1 {:.3}, mean class acc {:.3}, macro-F1 {:.3}",
            r.train_loss, r.top1, r.mean_class_acc, r.macro_f1
        );
    }
    if let Some((v, e)) = s.best {
        println!("  best {}: {v:.4} at epoch {}", s.monitor, e + 1);
    }
    if let Some(c) = s.last_checkpoint {
        println!("  checkpoint: {}", c.display());
    }
    let dir = s.run_dir.display();
    println!("  metrics: {dir}/metrics.csv, {dir}/metrics.png");
    println!("  peak RSS: {:.1} MiB", s.peak_rss as f64 / 1048576.0);
    if s.world > 1 {
        let c = s.comm;
        println!(
            "  {} ranks: gradient all-reduce {:.1} ms per step ({:.1} MiB of gradients; waiting for the slowest rank included), {:.1} s in all",
            s.world,
            1e3 * c.seconds / c.syncs.max(1) as f64,
            c.bytes as f64 / 1048576.0,
            c.seconds
        );
    }
    Ok(())
}

/// Trains a model (`train fit`).
pub fn fit(args: &FitArgs, quiet: bool) -> Result<FitSummary> {
    let resume_state = match &args.resume {
        Some(ckpt) => Some(checkpoint::load_state(ckpt)?),
        None => None,
    };
    let mut config = match &resume_state {
        Some(st) => resume::resumed_config(st, args.config.as_deref(), &args.overrides)?,
        None => TrainConfig::load(args.config.as_deref(), &args.overrides)?,
    };
    let launch = Launch::from_env()?;
    let settings = config.to_yaml();
    if let Some(l) = &launch {
        // Each rank of a CUDA run takes the GPU of its LOCAL_RANK.
        if let Device::Cuda(_) = resolve_device(config.trainer.device)? {
            config.trainer.device = DeviceChoice::Cuda(l.local_rank);
        }
    }
    let device = resolve_device(config.trainer.device)?;
    let ranks = Ranks::join(launch, device, config.trainer.dist_timeout_s)?;
    ranks.check_same_settings(&settings)?;
    let s = Session::open(&args.cache, config)?;
    if let Some(st) = &resume_state {
        resume::check(st, &s)?;
    }
    let resume = args.resume.as_deref().zip(resume_state);
    let quiet = quiet || !ranks.is_main();
    let run = Run::start(s, resume, quiet, ranks)?;
    let dir = run.out.as_ref().map(|o| o.dir.clone());
    run.all_epochs().inspect_err(|_| {
        if let Some(d) = &dir {
            d.remove_if_no_checkpoint()
        }
    })
}

/// Loads the checkpoint's weights, optimizer moments and (matching) loss scaler.
fn restore(tr: &mut Trainer, ckpt: &Path, st: &TrainerState) -> Result<()> {
    checkpoint::load_weights(ckpt, &mut tr.vs)?;
    checkpoint::load_optimizer(ckpt, &mut tr.opt, st.global_step)?;
    // The saved scaler only if it is of this precision's kind (a bf16 checker must not
    // become an fp16 run's scaler, nor an fp16 scale an fp32 run's).
    if let Some(sc) = &st.scaler {
        let kind = |g: &GradScaler| (g.enabled, g.growth_factor == 1.0);
        if kind(sc) == kind(&tr.scaler) {
            tr.scaler = sc.clone();
        }
    }
    Ok(())
}

impl Run {
    /// Builds the trainer (restored from the checkpoint when resuming), the data and the
    /// run folder.
    fn start(
        s: Session,
        resume: Option<(&Path, TrainerState)>,
        quiet: bool,
        ranks: Ranks,
    ) -> Result<Run> {
        let c = &s.config;
        tch::manual_seed(c.train.seed as i64);
        let mut tr = Trainer::new(
            &s.model,
            s.device,
            s.precision,
            c.model.use_gradient_checkpointing,
            c.train.weight_decay,
        )?;
        tr.segments = c.model.checkpoint_segments;
        tr.dist = ranks.group().cloned();
        if let Some((ckpt, st)) = &resume {
            restore(&mut tr, ckpt, st)?;
        } else if let Some(file) = &c.model.pretrained {
            let report = load_pretrained(&mut tr.vs, file, s.model.token_grid())
                .map_err(ModelError::from)?;
            if !quiet {
                eprintln!("{report}");
            }
        }
        // Every rank starts from rank 0's weights (fresh, pretrained or resumed).
        ranks.broadcast_model(&tr.vs)?;
        let mut resumed = resume.map(|(_, st)| st);
        let (rank, world) = (ranks.rank(), ranks.world());
        let shard = Shard { rank, world };
        let train = s.train_sampler(s.items(&s.train_selection())?, shard);
        // Validation: every segment once, on one rank; the metrics are summed after.
        let val = match s.val_selection() {
            Some(sel) => {
                let items = s.items(&sel)?.into_iter().enumerate();
                let mine = items.filter(|(i, _)| i % world == rank).map(|(_, it)| it);
                Some(s.eval_sampler(mine.collect()))
            }
            None => None,
        };
        let accum = c.train.accumulate_grad_batches.max(1);
        let batches = train.batches();
        if batches == 0 {
            return Err(format!(
                "{} training segments cannot be shared by {world} ranks (each needs at least one); use fewer ranks",
                train.items.len()
            )
            .into());
        }
        let steps_per_epoch = batches.div_ceil(accum) as u64;
        let plan = Plan {
            batches,
            accum,
            total_steps: steps_per_epoch * c.train.max_epochs,
            warmup: (c.train.warmup_epochs * steps_per_epoch as f64).round() as u64,
        };
        if let Some(st) = &mut resumed {
            resume::for_rank(st, rank, world, accum, quiet);
            resume::follow_monitor(st, c.settings(), quiet)?;
            if st.next_batch > batches {
                return Err(format!(
                    "--resume: the checkpoint's next batch {} is past the {batches} batches of an epoch; the checkpoint does not belong to this cache and settings",
                    st.next_batch
                )
                .into());
            }
        }
        let out = if ranks.is_main() {
            let dir = RunDir::create(&c.trainer.log_dir, &c.trainer.experiment, &c.to_yaml())?;
            let csv_path = dir.file("metrics.csv");
            let csv =
                MetricsCsv::open(&csv_path).map_err(|e| format!("{}: {e}", csv_path.display()))?;
            Some(Output { dir, csv })
        } else {
            None
        };
        let main_dir = out.as_ref().map(|o| o.dir.dir.display().to_string());
        let run_dir = PathBuf::from(ranks.broadcast_text(&main_dir.unwrap_or_default())?);
        let mut st = resumed.unwrap_or_else(|| TrainerState::fresh(&s));
        st.config_yaml = c.to_yaml();
        st.world_size = world;
        if !quiet {
            eprintln!("{}", summary(&tr.vs));
            let ranks_note = match world {
                1 => String::new(),
                w => format!(
                    " ({w} ranks: {batches} per rank, global batch {})",
                    w * c.data.batch_size
                ),
            };
            eprintln!(
                "train fit: {} training segments, {} validation, views {:?}, {} classes, {} batches/epoch{ranks_note}, device {:?} -> {}",
                train.items.len(),
                val.as_ref().map_or(0, |v| v.items.len() * world),
                s.views,
                s.classes.len(),
                batches,
                s.device,
                run_dir.display()
            );
        }
        let loader = s.loader()?;
        Ok(Run {
            s,
            tr,
            loader,
            train,
            val,
            plan,
            out,
            run_dir,
            ranks,
            st,
            quiet,
        })
    }

    fn all_epochs(mut self) -> Result<FitSummary> {
        let (mut rows, mut last_ckpt, mut stopped_early) = (Vec::new(), None, false);
        let c = &self.s.config.train;
        let (max_epochs, patience, monitor) = (c.max_epochs, c.early_stopping_patience, c.monitor);
        let (lr_mult, freeze) = (c.backbone_lr_mult, c.freeze_backbone_epochs);
        while self.st.epoch < max_epochs {
            let started = Instant::now();
            self.tr.set_backbone(lr_mult, self.st.epoch < freeze);
            let lr = self.one_epoch()?;
            let (row, improved) = self.end_epoch(lr, started)?;
            rows.push(row);
            last_ckpt = self.save_epoch_checkpoint(improved)?.or(last_ckpt);
            if patience > 0 && self.st.bad_epochs >= patience {
                stopped_early = true;
                if !self.quiet {
                    eprintln!("early stopping: {monitor} has not improved for {patience} epoch(s)");
                }
                break;
            }
        }
        // Rank 0 serves the rendezvous store: nobody leaves while another still needs it.
        self.ranks.barrier()?;
        Ok(FitSummary {
            run_dir: self.run_dir.clone(),
            epochs: rows,
            best: self.st.best,
            last_checkpoint: last_ckpt,
            stopped_early,
            peak_rss: peak_rss_bytes(),
            monitor,
            world: self.ranks.world(),
            rank: self.ranks.rank(),
            comm: self.tr.comm,
        })
    }

    fn progress_bar(&self) -> ProgressBar {
        let pb = progress::bar_with(
            self.plan.batches as u64,
            progress::EPOCH_TEMPLATE,
            self.quiet,
        );
        pb.set_prefix(format!(
            "{}/{}",
            self.st.epoch + 1,
            self.s.config.train.max_epochs
        ));
        pb.set_position(self.st.next_batch as u64);
        pb
    }

    /// The rest of the current epoch; returns the learning rate of its last step.
    fn one_epoch(&mut self) -> Result<f64> {
        let pb = self.progress_bar();
        let c = self.s.config.train.clone();
        let Plan {
            batches,
            accum,
            total_steps,
            warmup,
        } = self.plan;
        let epoch = self.st.epoch;
        let mut lr = lr_at(self.st.global_step, total_steps, warmup, c.lr);
        let workers = self.s.config.data.num_workers;
        let prefetch = Prefetch::start(
            self.loader.clone(),
            self.train.clone(),
            epoch,
            self.st.next_batch,
            ClipPick::Jittered,
            workers,
        );
        for batch in prefetch {
            let batch = batch?;
            self.s.check_cache()?;
            let b = batch.index;
            let (x, y) = self.s.train_input(&batch, epoch)?;
            let window_start = (b / accum) * accum;
            // Each accumulation window averages its batches; the last window of an epoch
            // may be shorter (it steps with what it has, see `crate::run::trainer`).
            let window = accum.min(batches - window_start);
            // Unique per micro-batch: (step, position in its window).
            // Unique per rank too, so ranks draw different dropout masks.
            let micro_seed = (c.seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(
                    (self.st.global_step as i64)
                        .wrapping_mul(accum as i64)
                        .wrapping_add((b - window_start) as i64),
                )
                .wrapping_add((self.ranks.rank() as i64) << 40);
            let lv = self
                .tr
                .micro_batch(&x, &y, c.label_smoothing, window, micro_seed)?;
            // Under fp16 an overflowing forward pass is the loss scaler's business: its
            // gradients are inf, the step is skipped and the scale backs off.
            let fp16_overflow = !lv.is_finite() && self.tr.precision == Precision::Fp16Mixed;
            if !lv.is_finite() && !fp16_overflow {
                return Err(format!(
                    "the training loss is {lv} at epoch {epoch}, batch {b} (optimizer step {}): stopping without saving a checkpoint of this state; lower train.lr (now {}) or check the data (segments {:?})",
                    self.st.global_step, c.lr, batch.segments
                )
                .into());
            }
            if !fp16_overflow {
                self.st.epoch_loss_sum += lv;
                self.st.epoch_batches += 1;
            }
            self.st.next_batch = b + 1;
            if b + 1 == window_start + window {
                lr = lr_at(self.st.global_step, total_steps, warmup, c.lr);
                self.optimizer_step(lr, &pb, b + 1 < batches)?;
            }
            let gpu = match (self.s.device, crate::measure::cuda_memory::used_bytes()) {
                (Device::Cuda(_), Some(b)) => format!(" cuda {:.0} MiB", b as f64 / 1048576.0),
                _ => String::new(),
            };
            pb.set_message(format!(
                "step {}/{total_steps} loss {lv:.4} lr {lr:.2e} rss {:.0} MiB{gpu}",
                self.st.global_step,
                rss_bytes() as f64 / 1048576.0
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
        Ok(lr)
    }

    /// An optimizer step at the end of an accumulation window, and the mid-epoch
    /// checkpoint of `train.checkpoint_every_n_steps`.
    fn optimizer_step(&mut self, lr: f64, pb: &ProgressBar, mid_epoch: bool) -> Result<()> {
        let before = self.tr.scaler.scale;
        self.tr.sync_gradients()?;
        let out = self.tr.step(lr, self.s.config.train.grad_clip);
        if !out.applied && !self.quiet {
            pb.println(format!(
                "step {}: inf/NaN gradients, step skipped, loss scale {before} -> {}",
                self.st.global_step, out.scale
            ));
        }
        self.st.scaler = self.tr.scaler.enabled.then(|| self.tr.scaler.clone());
        self.st.global_step += 1;
        let every = self.s.config.train.checkpoint_every_n_steps;
        if every > 0 && self.st.global_step.is_multiple_of(every) && mid_epoch {
            let path = self.save(&format!(
                "epoch={}-step={}",
                self.st.epoch, self.st.global_step
            ))?;
            if let (Some(path), false) = (path, self.quiet) {
                pb.println(format!("checkpoint {}", path.display()));
            }
        }
        Ok(())
    }

    /// Writes a checkpoint (rank 0; `None` on the others, which still take part in
    /// summing the epoch's loss so far, so every rank must call it).
    fn save(&self, name: &str) -> Result<Option<PathBuf>> {
        let mut st = self.st.clone();
        let mut loss = [st.epoch_loss_sum, st.epoch_batches as f64];
        self.ranks.sum(&mut loss)?;
        (st.epoch_loss_sum, st.epoch_batches) = (loss[0], loss[1].round() as u64);
        let Some(out) = &self.out else {
            return Ok(None);
        };
        let path = out.dir.checkpoints().join(format!("{name}.safetensors"));
        checkpoint::save(&path, &self.tr.vs, &self.tr.opt, &st)?;
        Ok(Some(path))
    }

    /// Validation, metrics row, plots and the best/patience bookkeeping of the epoch that
    /// just ended. Returns the row and whether the monitored value improved.
    fn end_epoch(&mut self, lr: f64, started: Instant) -> Result<(EpochMetrics, bool)> {
        let epoch = self.st.epoch;
        let mut loss = [self.st.epoch_loss_sum, self.st.epoch_batches as f64];
        self.ranks.sum(&mut loss)?;
        let mut row = EpochMetrics {
            epoch: epoch as u32,
            step: self.st.global_step,
            train_loss: loss[0] / loss[1].max(1.0),
            val_loss: f64::NAN,
            top1: f64::NAN,
            mean_class_acc: f64::NAN,
            macro_f1: f64::NAN,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut improved = false;
        if let Some(val) = &self.val {
            // The model evaluated (and saved) is rank 0's, BatchNorm statistics included.
            self.ranks.broadcast_model(&self.tr.vs)?;
            let ev = evaluate(&self.tr.model, &self.loader, val, &self.s)?;
            let (confusion, val_loss) = self.ranks.sum_evaluation(&ev)?;
            row = row.with_confusion(&confusion);
            row.val_loss = val_loss;
            if let Some(out) = &self.out {
                let cm_csv = out.dir.file("confusion.csv");
                std::fs::write(&cm_csv, confusion.to_csv(&self.s.classes)).at(&cm_csv)?;
                plot::plot_confusion(&confusion, &self.s.classes, &out.dir.file("confusion.png"))?;
            }
            let monitor = self.s.config.train.monitor;
            let value = match monitor {
                Monitor::ValTop1 => row.top1,
                Monitor::ValMeanClassAcc => row.mean_class_acc,
                Monitor::ValLoss => row.val_loss,
                Monitor::ValMacroF1 => row.macro_f1,
            };
            let best = self.st.best.map(|(b, _)| (b, self.st.best_val_loss));
            improved = monitor.improves((value, row.val_loss), best);
            if improved {
                self.st.best = Some((value, epoch));
                self.st.best_val_loss = Some(row.val_loss);
                self.st.bad_epochs = 0;
            } else {
                self.st.bad_epochs += 1;
            }
        }
        row.seconds = started.elapsed().as_secs_f64();
        if let Some(out) = &mut self.out {
            out.csv.append(&row)?;
            let all = MetricsCsv::read(out.dir.file("metrics.csv"))?;
            plot::plot_metrics(&all, &out.dir.file("metrics.png"))?;
        }
        if !self.quiet {
            eprintln!(
                "epoch {}/{}: train loss {:.4}, val loss {:.4}, top1 {:.3}, mean class acc {:.3}, macro-F1 {:.3} ({:.1} s)",
                epoch + 1,
                self.s.config.train.max_epochs,
                row.train_loss,
                row.val_loss,
                row.top1,
                row.mean_class_acc,
                row.macro_f1,
                row.seconds
            );
        }
        Ok((row, improved))
    }

    /// The epoch-end checkpoint, then its `last` (and `best`) copies (rank 0).
    fn save_epoch_checkpoint(&mut self, improved: bool) -> Result<Option<PathBuf>> {
        let epoch = self.st.epoch;
        self.st.epoch += 1;
        self.st.next_batch = 0;
        self.st.epoch_loss_sum = 0.0;
        self.st.epoch_batches = 0;
        let Some(path) = self.save(&format!("epoch={epoch}-step={}", self.st.global_step))? else {
            return Ok(None);
        };
        checkpoint::copy_as(&path, "last")?;
        if improved {
            checkpoint::copy_as(&path, "best")?;
        }
        Ok(Some(path))
    }
}
