//! `cargo xtask <task>`: project automation (matklad's xtask convention).
//!
//! Tasks:
//! - `cuda-build`: build the CUDA binaries (`gptoss`, the gpt-kernels CUDA tests) on a machine
//!   without a GPU, installing a pinned CUDA 13.0 toolkit from PyPI wheels if needed.
//!
//! Add a task by adding a variant to [`Task`] and a module that implements it.

mod cuda;
mod cuda_toolkit;

use clap::{Parser, Subcommand};

/// Project automation tasks; run `cargo xtask <task> --help` for details.
#[derive(Debug, Parser)]
#[command(name = "xtask", arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// One variant per task.
#[derive(Debug, Subcommand)]
enum Task {
    /// Build `gptoss` and the gpt-kernels CUDA test binaries with `--features cuda` (release),
    /// strip them and copy them into a folder; prints the stripped `gptoss` path last.
    CudaBuild(cuda::CudaBuildArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::CudaBuild(args) => cuda::cuda_build(&args),
    }
}
