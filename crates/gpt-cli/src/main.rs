//! `gptoss`: run GPT-OSS models from GGUF files.

mod bench;
mod bench_batch;
mod chat;
mod check;
mod compare;
mod compare_batch;
mod inspect;
mod model_source;
mod npy;
mod parse;
mod serve;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run OpenAI's GPT-OSS models from GGUF files.
#[derive(Parser, Debug)]
#[command(name = "gptoss", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Answer one prompt in the harmony chat format, streamed (or a plain completion with --raw).
    Run(chat::RunArgs),
    /// Interactive multi-turn chat; the KV cache is kept between turns.
    Chat(chat::ChatArgs),
    /// Encode text into token ids.
    Tokenize(tools::TokenizeArgs),
    /// Render an OpenAI chat-completions request into harmony prompt tokens.
    Render(tools::RenderArgs),
    /// Measure prefill and decode speed, time to first token and peak memory.
    Bench(bench::BenchArgs),
    /// Summarize a GGUF file; dump one tensor; or check it as a GPT-OSS model.
    Inspect(InspectCmd),
    /// f32 logits of every position of a token sequence, from one prefill, saved as .npy.
    Logits(tools::LogitsArgs),
    /// Check a device against the CPU: prefill logits and greedy tokens of the same model.
    CompareDevices(compare::CompareArgs),
    /// Check batching on one device: sequences inside a staggered batch against each alone.
    CompareBatch(compare_batch::CompareBatchArgs),
    /// Write a synthetic random-weight GPT-OSS GGUF (tiny, 20b or 120b shapes).
    GenModel(tools::GenModelArgs),
    /// Parse completion token ids into harmony messages and the OpenAI answer.
    Parse(parse::ParseArgs),
    /// Serve the OpenAI-compatible HTTP API (chat completions, completions, responses).
    Serve(serve::ServeArgs),
}

/// `gptoss inspect`.
#[derive(clap::Args, Debug)]
struct InspectCmd {
    /// The GGUF file (the first shard of a split model).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Dequantize the tensor NAME to f32 and save it as .npy (logical row-major shape).
    #[arg(long, value_name = "NAME", requires = "out")]
    dump: Option<String>,
    /// Where --dump writes.
    #[arg(long, value_name = "PATH.npy")]
    out: Option<PathBuf>,
    /// Validate the file as GPT-OSS and print the report and the memory plan.
    #[arg(long)]
    check: bool,
    /// Context length for the memory plan of --check.
    #[arg(long, default_value_t = 8192)]
    ctx: usize,
    /// --check: plan with the MoE blocks of the first N layers in host memory (`--cpu-moe`).
    #[arg(long, default_value_t = 0, value_name = "N")]
    cpu_moe: usize,
    /// --check: the GPU memory to fit (e.g. 24G); `--cpu-moe` is suggested for it.
    #[arg(long, value_name = "SIZE")]
    vram: Option<String>,
    /// --check: fit the free memory of this device (`cuda`, `cuda:N`); with `--vram`, the
    /// smaller of the two.
    #[arg(long)]
    device: Option<String>,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Inspect(a) => {
            if let Some(name) = &a.dump {
                let out = a
                    .out
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("--dump needs --out"))?;
                return check::dump(&a.file, name, out);
            }
            if a.check {
                return check::check(&check::CheckArgs {
                    file: &a.file,
                    ctx: a.ctx,
                    cpu_moe: a.cpu_moe,
                    vram: a.vram.as_deref(),
                    device: a.device.as_deref(),
                });
            }
            inspect::run(&inspect::InspectArgs {
                file: a.file,
                json: a.json,
            })
        }
        Cmd::Run(a) => chat::run(&a),
        Cmd::Chat(a) => chat::chat(&a),
        Cmd::Tokenize(a) => tools::tokenize(&a),
        Cmd::Render(a) => tools::render(&a),
        Cmd::Bench(a) => bench::bench(&a),
        Cmd::Logits(a) => tools::logits(&a),
        Cmd::GenModel(a) => tools::gen_model(&a),
        Cmd::Parse(a) => parse::parse(&a),
        Cmd::Serve(a) => serve::serve(&a),
        Cmd::CompareDevices(a) => compare::compare_devices(&a),
        Cmd::CompareBatch(a) => compare_batch::compare_batch(&a),
    }
}

fn main() -> ExitCode {
    // Like other Unix filters, end quietly when the reader of stdout goes away
    // (`gptoss inspect F | head`) instead of panicking in `println!`.
    #[cfg(unix)]
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Candle's own CPU worker threads (elementwise ops over 64K values) would spin beside the
    // rayon pool that runs every CPU kernel, one more thread than cores; keep Candle's work on
    // the calling thread unless the user asked otherwise. Before any other thread exists.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("GPTOSS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
