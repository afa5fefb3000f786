//! `train`: the command line. Parsing only; each command's arguments and its `run` live
//! in the `mvdrive_train` library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mvdrive_train::measure::{bench_loader, bench_memory, plan, probe};
use mvdrive_train::run::{eval, export, fit, predict, ranks, score};

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

/// Each command's help is the doc comment of its `Args` struct in the library.
#[derive(Subcommand)]
enum Command {
    Fit(fit::FitArgs),
    Eval(eval::EvalArgs),
    Predict(predict::PredictArgs),
    Score(score::ScoreArgs),
    Export(export::ExportArgs),
    Plan(plan::PlanArgs),
    #[command(hide = true)]
    Probe(probe::ProbeArgs),
    BenchMemory(bench_memory::BenchMemoryArgs),
    /// List every setting with its default and meaning.
    Keys,
    BenchLoader(bench_loader::BenchLoaderArgs),
    /// Print the libtorch build this binary links and the devices it can see.
    Info,
}

impl Command {
    /// The name of a command that must not run as one of several ranks (all but `fit`,
    /// which joins them, and the ones that only print).
    fn single_process_name(&self) -> Option<&'static str> {
        match self {
            Command::Eval(_) => Some("eval"),
            Command::Predict(_) => Some("predict"),
            Command::Score(_) => Some("score"),
            Command::Export(_) => Some("export"),
            Command::Plan(_) => Some("plan"),
            Command::Probe(_) => Some("probe"),
            Command::BenchMemory(_) => Some("bench-memory"),
            Command::BenchLoader(_) => Some("bench-loader"),
            Command::Fit(_) | Command::Keys | Command::Info => None,
        }
    }
}

fn main() -> ExitCode {
    // Like other Unix tools: a closed pipe (`train keys | head`) ends us quietly. A rank of
    // a distributed `fit` ignores it again (mvdrive_dist::ProcessGroup::connect).
    // SAFETY: resetting a signal disposition at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = mvdrive_train::run::allocator::tune()
        .and_then(|_| mvdrive_train::optim::autograd::tune_conv_backward())
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
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
    let quiet = cli.quiet;
    if let Some(name) = cli.command.single_process_name() {
        ranks::single_process(name)?;
    }
    match &cli.command {
        Command::Fit(a) => fit::run(a, quiet).context("train fit")?,
        Command::Eval(a) => eval::run(a).context("train eval")?,
        Command::Predict(a) => predict::run(a, quiet).context("train predict")?,
        Command::Export(a) => export::run(a).context("train export")?,
        Command::Score(a) => score::run(a).context("train score")?,
        Command::Plan(a) => plan::run(a, quiet).context("train plan")?,
        Command::Probe(a) => probe::run(a).context("train probe")?,
        Command::BenchMemory(a) => bench_memory::run(a, quiet).context("train bench-memory")?,
        Command::Keys => print!("{}", mvdrive_train::config::keys_help()),
        Command::BenchLoader(a) => bench_loader::run(a).context("train bench-loader")?,
        Command::Info => mvdrive_train::measure::info(),
    }
    Ok(())
}
