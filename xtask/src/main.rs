//! `cargo xtask <task>`: project automation (matklad's xtask convention).
//!
//! Tasks:
//! - `cuda-build`: build the CUDA binaries (`gptoss`, the gpt-kernels CUDA tests) on a machine
//!   without a GPU, installing a pinned CUDA 13.0 toolkit from PyPI wheels if needed.
//!
//! - `fetch-model [REPO]`: download a GGUF from Hugging Face into its standard cache.
//!
//! Add a task by adding a variant to [`Task`] and a module that implements it.

mod cuda;
mod cuda_arch;
mod cuda_toolkit;
mod fetch;

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
    /// Download a GGUF (default: ggml-org/gpt-oss-20b-GGUF, gpt-oss-20b-mxfp4.gguf) into the
    /// Hugging Face cache; prints its path.
    FetchModel(fetch::FetchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::CudaBuild(args) => cuda::cuda_build(&args),
        Task::FetchModel(args) => fetch::fetch_model(&args),
    }
}
