//! `train`: the mvdrive trainer. Only `train info` is built so far; `fit`, `eval` and
//! `plan` are tracked in the issues and say so plainly when called.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

/// Train driver-behaviour models on an mvdrive cache (written by `prep build`).
#[derive(Parser)]
#[command(name = "train", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch build this binary links and the devices it can see.
    Info,
    /// NOT BUILT YET: train a model on a cache.
    Fit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// NOT BUILT YET: evaluate a checkpoint on a cache split.
    Eval {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// NOT BUILT YET: measure memory of candidate settings and recommend one.
    Plan {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
            Ok(())
        }
        Command::Fit { .. } | Command::Eval { .. } | Command::Plan { .. } => bail!(
            "`train fit`, `train eval` and `train plan` are not built yet (open issues #4 and #5); \
             today mvdrive ships `prep` (build, verify, inspect, export-frames, synth)"
        ),
    }
}
