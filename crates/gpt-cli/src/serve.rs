//! `gptoss serve`: the OpenAI-compatible HTTP server (crate `gpt-server`).

use anyhow::{Context, Result};
use gpt_engine::engine::{Engine, EngineOptions};
use gpt_server::ServerConfig;

use crate::model_source;
use crate::tools::device;

/// `gptoss serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// GGUF path, `tiny`, or a Hugging Face `repo[:file]`.
    #[arg(long, default_value = "ggml-org/gpt-oss-20b-GGUF")]
    pub model: String,
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (all endpoints but /health).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Allow this browser origin (repeatable; `*` for any). CORS is closed without it.
    #[arg(long = "cors-origin")]
    pub cors_origin: Vec<String>,
    /// Most sequences decoding at once.
    #[arg(long, default_value_t = 16)]
    pub max_seqs: usize,
    /// Most requests waiting for a sequence (more get 429).
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// KV memory, e.g. 4G (default: enough for max-seqs full contexts).
    #[arg(long)]
    pub kv_memory: Option<String>,
    /// Longest sequence (prompt + completion).
    #[arg(long, default_value_t = 8192)]
    pub ctx: usize,
    /// On a GPU, keep the MoE blocks (router, experts) of the first N layers in host memory
    /// and run them on the CPU (llama.cpp's `--n-cpu-moe`); `inspect --check --vram SIZE`
    /// suggests the N that fits a card.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cpu_moe: usize,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU matmul precision: exact (f32 activations) or fast (int8 activations, as llama.cpp).
    #[arg(long, value_enum, default_value_t)]
    pub cpu_precision: crate::tools::CpuPrecision,
    /// Element type of the KV cache (default: f16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum)]
    pub kv_type: Option<crate::tools::KvTypeArg>,
    /// Most analysis tokens per answer (then the final answer is forced).
    #[arg(long)]
    pub reasoning_budget: Option<usize>,
    /// Name of the model in /v1/models and answers.
    #[arg(long, default_value = "gpt-oss")]
    pub model_name: String,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub body_limit: usize,
}

/// Runs the server until Ctrl-C.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let path = model_source::resolve(&args.model)?;
    let kv_memory = args
        .kv_memory
        .as_deref()
        .map(gpt_server::parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--kv-memory")?;
    let opts = EngineOptions {
        device: device(&args.device)?,
        ctx: Some(args.ctx),
        kv_memory,
        max_seqs: args.max_seqs,
        max_queue: args.max_queue,
        model: gpt_engine::model::ModelOptions {
            cpu_precision: args.cpu_precision.into(),
            kv_type: args.kv_type.map(Into::into),
            ..Default::default()
        },
        cpu_moe: args.cpu_moe,
        ..Default::default()
    };
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        cors_origins: args.cors_origin.clone(),
        reasoning_budget: args.reasoning_budget,
        body_limit: args.body_limit,
        model_name: args.model_name.clone(),
        ..ServerConfig::default()
    };
    let load = move || {
        let mut progress = model_source::load_progress();
        Engine::load_with_progress(&path, opts, Some(&mut progress))
            .map_err(|e| format!("loading {}: {e}", path.display()))
    };
    gpt_server::serve_blocking(config, load, |addr| {
        eprintln!("gptoss serve: listening on http://{addr} (loading the model; /health is 503 until ready)");
    })
    .context("gptoss serve")
}
