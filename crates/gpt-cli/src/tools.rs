//! `gptoss logits` and `gptoss gen-model`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use gpt_engine::loader::{load_any, LoadConfig};
use gpt_engine::model::rope::YarnRounding;
use gpt_engine::model::{prefill_logits, ModelOptions};
use gpt_engine::synth::SynthSpec;

use crate::model_source;

/// Picks the device: `auto` (CUDA when built with it and a GPU is present), `cpu`, `cuda[:N]`.
pub fn device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        s if s.starts_with("cuda") => {
            let n: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().with_context(|| format!("bad device {s:?}"))?,
                None if s == "cuda" => 0,
                None => bail!("bad device {s:?} (expected cpu, cuda or cuda:N)"),
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("--device {s}: this gptoss was built without CUDA (build with `cargo xtask cuda-build`)");
            }
            Device::new_cuda(n).with_context(|| format!("opening CUDA device {n}"))
        }
        s => bail!("bad device {s:?} (expected auto, cpu, cuda or cuda:N)"),
    }
}

/// `--cpu-precision`: how the CPU's quantized matmuls treat activations.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuPrecision {
    /// f32 activations, weights dequantized exactly in registers (the reference).
    #[default]
    Exact,
    /// Activations quantized per 32-block to int8 in the decode products (llama.cpp's numerics).
    Fast,
}

impl From<CpuPrecision> for gpt_engine::model::Precision {
    fn from(p: CpuPrecision) -> Self {
        match p {
            CpuPrecision::Exact => Self::Exact,
            CpuPrecision::Fast => Self::Fast,
        }
    }
}

/// `--kv-type`: the KV cache's element type.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvTypeArg {
    /// f32 (the CPU's default).
    F32,
    /// f16, rounded to nearest (CUDA's default): half the memory.
    F16,
}

impl From<KvTypeArg> for gpt_engine::kv::KvType {
    fn from(k: KvTypeArg) -> Self {
        match k {
            KvTypeArg::F32 => Self::F32,
            KvTypeArg::F16 => Self::F16,
        }
    }
}

/// How dense matrices are held on `dev`: what [`gpt_engine::engine::Engine::load`] picks
/// (the file's quantized types).
pub fn dense_mode(dev: &Device) -> gpt_weights::plan::DenseMode {
    gpt_engine::engine::default_dense_mode(dev)
}

/// `gptoss logits`.
#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    /// Model: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long)]
    pub model: String,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Output .npy, f32 of shape [T, vocab].
    #[arg(long)]
    pub out: PathBuf,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Use llama.cpp's rounded YaRN correction dims instead of the model's own.
    #[arg(long)]
    pub yarn_llamacpp: bool,
}

/// Runs one prefill and saves every position's logits.
pub fn logits(a: &LogitsArgs) -> Result<()> {
    let path = model_source::resolve(&a.model)?;
    let dev = device(&a.device)?;
    let cfg = LoadConfig {
        model: ModelOptions {
            yarn: if a.yarn_llamacpp {
                YarnRounding::LlamaCpp
            } else {
                YarnRounding::Reference
            },
            ..Default::default()
        },
        ctx: a.tokens.len().max(1),
        chunk: a.tokens.len().max(1),
        ..Default::default()
    };
    let (model, _) = load_any(&path, &dev, &cfg, None)?;
    let logits = prefill_logits(&model, &a.tokens)?; // (t, vocab)
    let (t, v) = logits.dims2()?;
    let data: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    crate::npy::write_f32(&a.out, &[t, v], &data)?;
    eprintln!("wrote logits [{t}, {v}] to {}", a.out.display());
    Ok(())
}

/// `gptoss gen-model`.
#[derive(clap::Args, Debug)]
pub struct GenModelArgs {
    /// Shapes: tiny, 20b (ggml-org gpt-oss-20b-mxfp4 shapes and types), 120b.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Output GGUF path.
    #[arg(long)]
    pub out: PathBuf,
    /// Store every quantized tensor as F32 holding exactly the quantized values (for
    /// llama.cpp's reference, whose CPU MXFP4/Q8_0 paths round activations).
    #[arg(long)]
    pub f32_values: bool,
    /// Override the preset's number of layers (e.g. 4 layers of 20B shape for CPU benchmarks).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Keep only the first N tokens of the vocabulary (small embedding tables for fixtures;
    /// the tokenizer of such a file is not usable).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// RNG seed (default: the preset's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Type of the dense matrices (embedding, attention, output), like the published variants:
    /// q8_0 (default), f16, bf16, q4_0, q5_0, q5_1, iq4_nl, q4_k, q5_k, q6_k. K-quants fall back
    /// as llama.cpp's quantizer does for rows not a multiple of 256 (2880-wide: q4_k to q5_0,
    /// q5_k to q5_1, q6_k to q8_0).
    #[arg(long)]
    pub dense_type: Option<String>,
    /// Split into shards of at most this many tensor bytes, named `NAME-00001-of-0000N.gguf`
    /// like the published multi-file models (gguf-split's `--split-max-size`: `500M`, `25G`,
    /// decimal units). Default: `25G` for the 120b preset (three shards), none otherwise; `0`
    /// writes one file.
    #[arg(long)]
    pub split_max_size: Option<String>,
    /// Split after at most this many tensors per shard (gguf-split's `--split-max-tensors`).
    #[arg(long)]
    pub split_max_tensors: Option<usize>,
}

/// A size as gguf-split takes it: a number of bytes with an optional `K`, `M` or `G` (powers
/// of 1000).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1_000,
                'M' => 1_000_000,
                'G' => 1_000_000_000,
                _ => anyhow::bail!("size {s:?}: unknown unit {c:?} (K, M or G)"),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("size {s:?}: not a whole number with K, M or G"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))
}

/// Writes a synthetic model.
pub fn gen_model(a: &GenModelArgs) -> Result<()> {
    let mut spec = SynthSpec::preset(&a.preset)
        .with_context(|| format!("unknown preset {:?} (tiny, 20b, 120b)", a.preset))?;
    if let Some(s) = a.seed {
        spec.seed = s;
    }
    spec.f32_values = a.f32_values;
    if let Some(t) = &a.dense_type {
        let ty = gguf_format::GgmlType::from_name(&t.to_ascii_uppercase())
            .filter(|ty| gpt_engine::synth::DENSE_TYPES.contains(ty))
            .with_context(|| {
                let names: Vec<String> = gpt_engine::synth::DENSE_TYPES
                    .iter()
                    .map(|t| t.to_string().to_ascii_lowercase())
                    .collect();
                format!("unknown --dense-type {t:?} (one of {})", names.join(", "))
            })?;
        spec.dense_type = ty;
    }
    if let Some(n) = a.layers {
        anyhow::ensure!(n > 0, "--layers must be > 0");
        spec.n_layer = n;
        spec.name = format!("{} ({n} layers)", spec.name);
    }
    let default_size = (a.preset == "120b").then(|| "25G".to_string());
    let max_bytes = match a.split_max_size.clone().or(default_size) {
        Some(s) => Some(parse_size(&s)?).filter(|&n| n > 0),
        None => None,
    };
    let split = gguf_format::SplitPolicy {
        max_tensors: a.split_max_tensors,
        max_bytes,
    };
    for p in model_source::generate_synthetic_vocab(&spec, &a.out, a.vocab_size, split)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// `gptoss tokenize`.
#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Model whose tokenizer to use: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Text to encode.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub text: Option<String>,
    /// File whose contents to encode.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Parse special tokens (`<|start|>` ...) in the text.
    #[arg(long)]
    pub special: bool,
    /// Print `{"ids": [...]}`.
    #[arg(long)]
    pub json: bool,
}

fn tokenizer_of(model: &str) -> Result<gpt_engine::tokenizer::Tokenizer> {
    let path = model_source::resolve(model)?;
    let file = gguf_format::GgufModel::open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(gpt_engine::tokenizer::Tokenizer::from_gguf_metadata(
        file.metadata(),
    )?)
}

/// Encodes text and prints the ids.
pub fn tokenize(a: &TokenizeArgs) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => bail!("give --text or --file"),
    };
    let tok = tokenizer_of(&a.model)?;
    let ids = tok.encode(&text, a.special)?;
    if a.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("{}", s.join(" "));
    }
    Ok(())
}

/// `gptoss render`.
#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Model whose tokenizer to use: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// An OpenAI chat-completions request body (JSON).
    #[arg(long)]
    pub request: PathBuf,
    /// Current date for the system message (default: today).
    #[arg(long)]
    pub date: Option<String>,
    /// Print `{"ids": [...], "text": "..."}`.
    #[arg(long)]
    pub json: bool,
}

/// Renders a chat request into harmony prompt tokens.
pub fn render(a: &RenderArgs) -> Result<()> {
    let body = std::fs::read_to_string(&a.request)
        .with_context(|| format!("reading {}", a.request.display()))?;
    let req: gpt_engine::harmony::ChatRequest = serde_json::from_str(&body).with_context(|| {
        format!(
            "parsing {} as a chat-completions request",
            a.request.display()
        )
    })?;
    let tok = tokenizer_of(&a.model)?;
    let date = a.date.clone().unwrap_or_else(crate::chat::today);
    let ids = gpt_engine::harmony::render_chat_prompt(
        &tok,
        &req,
        &gpt_engine::harmony::PromptOptions::with_date(date),
    )?;
    let text = tok.decode(&ids)?;
    if a.json {
        println!("{}", serde_json::json!({ "ids": ids, "text": text }));
    } else {
        println!("{text}");
    }
    Ok(())
}
