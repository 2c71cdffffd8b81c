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

/// How dense matrices are held on `dev`: the file's quantized types on CUDA (what the fused
/// decode kernels read), exact f32 on the CPU; `f32_dense` forces f32.
pub fn dense_mode(dev: &Device, f32_dense: bool) -> gpt_weights::plan::DenseMode {
    use gpt_weights::plan::DenseMode;
    if dev.is_cuda() && !f32_dense {
        DenseMode::Quantized
    } else {
        DenseMode::F32
    }
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
}

/// Writes a synthetic model.
pub fn gen_model(a: &GenModelArgs) -> Result<()> {
    let mut spec = SynthSpec::preset(&a.preset)
        .with_context(|| format!("unknown preset {:?} (tiny, 20b, 120b)", a.preset))?;
    if let Some(s) = a.seed {
        spec.seed = s;
    }
    spec.f32_values = a.f32_values;
    if let Some(n) = a.layers {
        anyhow::ensure!(n > 0, "--layers must be > 0");
        spec.n_layer = n;
        spec.name = format!("{} ({n} layers)", spec.name);
    }
    model_source::generate_synthetic_vocab(&spec, &a.out, a.vocab_size)?;
    eprintln!("wrote {}", a.out.display());
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

/// `gptoss compare-devices`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Model: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Device checked against the CPU.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Prompt tokens of the prefill comparison.
    #[arg(long, default_value_t = 40)]
    pub prompt_tokens: usize,
    /// Greedy steps whose tokens must agree.
    #[arg(long, default_value_t = 64)]
    pub steps: usize,
    /// Tokens decoded one at a time on the device (the fused decode path on CUDA), whose
    /// logits are compared with one CPU prefill of the same tokens. Over 512 covers a sliding
    /// layer's compaction and a full layer's buffer growth.
    #[arg(long, default_value_t = 600)]
    pub decode_tokens: usize,
    /// Largest relative L2 of the logits accepted.
    #[arg(long, default_value_t = 1e-2)]
    pub max_rel_l2: f64,
    /// Decode through the generic path on the device instead of the fused kernels.
    #[arg(long)]
    pub no_fast_decode: bool,
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Runs the same prefill and greedy decode on the CPU and on `--device`, and compares.
pub fn compare_devices(a: &CompareArgs) -> Result<()> {
    use gpt_engine::generate::{generate, GenerateParams};
    use gpt_engine::sampling::SamplingParams;
    use rand::{Rng, SeedableRng};
    let path = model_source::resolve(&a.model)?;
    let dev = device(&a.device)?;
    let cfg = LoadConfig {
        ctx: a.prompt_tokens.max(a.decode_tokens) + a.steps + 1,
        chunk: 512,
        ..Default::default()
    };
    let (cpu, _) = load_any(&path, &Device::Cpu, &cfg, None)?;
    let gcfg = LoadConfig {
        dense: dense_mode(&dev, false),
        model: ModelOptions {
            no_fast_decode: a.no_fast_decode,
            ..Default::default()
        },
        ..cfg.clone()
    };
    let (gpu, _) = load_any(&path, &dev, &gcfg, None)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|_| rng.random_range(0..199_998u32))
        .collect();
    let lc: Vec<Vec<f32>> = prefill_logits(&cpu, &prompt)?.to_vec2()?;
    let lg: Vec<Vec<f32>> = prefill_logits(&gpu, &prompt)?
        .to_device(&Device::Cpu)?
        .to_vec2()?;
    let worst = lc
        .iter()
        .zip(&lg)
        .map(|(c, g)| rel_l2(g, c))
        .fold(0.0, f64::max);
    // Token-by-token decode on the device against one CPU prefill of the same tokens.
    let dtoks: Vec<u32> = (0..a.decode_tokens)
        .map(|_| rng.random_range(0..199_998u32))
        .collect();
    let mut decode_worst = 0.0f64;
    if !dtoks.is_empty() {
        let mut cache = gpu.new_cache();
        let lcd = prefill_logits(&cpu, &dtoks)?; // (t, vocab)
        for (i, &t) in dtoks.iter().enumerate() {
            let g: Vec<f32> = gpu
                .forward(&[t], &mut cache, gpt_engine::model::Logits::Last)?
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1()?;
            let c: Vec<f32> = lcd.get(i)?.to_vec1()?;
            decode_worst = decode_worst.max(rel_l2(&g, &c));
        }
    }
    let params = GenerateParams {
        max_new_tokens: a.steps,
        stop_tokens: vec![],
        sampling: SamplingParams::greedy(),
        ctx: cfg.ctx,
        chunk: 512,
    };
    let go = |m: &gpt_engine::model::GptOss| -> Result<Vec<u32>> {
        let mut cache = m.new_cache();
        Ok(generate(m, &mut cache, &prompt[..8], &params, |_| {
            std::ops::ControlFlow::Continue(())
        })?
        .0)
    };
    let (tc, tg) = (go(&cpu)?, go(&gpu)?);
    let same = tc.iter().zip(&tg).take_while(|(x, y)| x == y).count();
    println!(
        "{}",
        serde_json::json!({"device": a.device, "fast_decode": gpu.fast_decode(),
            "prefill_tokens": a.prompt_tokens, "worst_rel_l2": worst,
            "decode_tokens": a.decode_tokens, "decode_worst_rel_l2": decode_worst,
            "greedy_steps": a.steps, "greedy_agree": same})
    );
    anyhow::ensure!(
        worst <= a.max_rel_l2,
        "logits differ: relative L2 {worst:.3e} > {}",
        a.max_rel_l2
    );
    anyhow::ensure!(
        decode_worst <= a.max_rel_l2,
        "decode logits differ: relative L2 {decode_worst:.3e} > {}",
        a.max_rel_l2
    );
    anyhow::ensure!(same == a.steps, "greedy tokens diverge at step {same}");
    eprintln!(
        "ok: {} vs cpu: worst relative L2 {worst:.3e} (prefill), {decode_worst:.3e} (decode), {same}/{} greedy tokens equal",
        a.device, a.steps
    );
    Ok(())
}
