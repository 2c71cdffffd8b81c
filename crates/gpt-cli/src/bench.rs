//! `gptoss bench`: prefill and decode speed, time to first token, peak memory.

use std::time::Instant;

use anyhow::{Context, Result};
use gpt_engine::loader::{load_any, LoadConfig};
use gpt_engine::model::Logits;
use gpt_weights::plan::DenseMode;
use rand::{Rng, SeedableRng};

use crate::model_source;
use crate::tools::device;

/// `gptoss bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long)]
    pub model: String,
    /// Prompt tokens for the prefill measurement (0 = skip).
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated for the decode measurement (0 = skip).
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Tokens already in the cache before decoding.
    #[arg(long, default_value_t = 0)]
    pub depth: usize,
    /// Prefill chunk size.
    #[arg(long, default_value_t = 2048)]
    pub chunk: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU matmul precision: exact (f32 activations) or fast (int8 activations, as llama.cpp).
    #[arg(long, value_enum, default_value_t)]
    pub cpu_precision: crate::tools::CpuPrecision,
    /// Element type of the KV cache (default: f16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum)]
    pub kv_type: Option<crate::tools::KvTypeArg>,
    /// Keep dense matrices quantized (Candle QMatMul) instead of f32 (the default on CUDA).
    #[arg(long)]
    pub quantized_dense: bool,
    /// Dequantize dense matrices to f32 even on CUDA (no fused decode).
    #[arg(long, conflicts_with = "quantized_dense")]
    pub f32_dense: bool,
    /// On CUDA, run the generic Candle path instead of the fused decode kernels and the
    /// tensor-core prefill.
    #[arg(long)]
    pub no_fast_decode: bool,
    /// On a GPU, keep the MoE blocks (router, experts) of the first N layers in host memory
    /// and run them on the CPU (llama.cpp's `--n-cpu-moe`); `inspect --check --vram SIZE`
    /// suggests the N that fits a card.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cpu_moe: usize,
    /// Launch the fused decode step kernel by kernel instead of as a CUDA graph.
    #[arg(long)]
    pub no_cuda_graph: bool,
    /// MoE layers of at least this many (token, expert) slots run grouped GEMMs, fewer the
    /// kernels that read each expert once and loop over its tokens (default: the engine's).
    #[arg(long)]
    pub moe_grouped_min_slots: Option<usize>,
    /// Let cuBLAS run f32 matmuls (prefill) on TF32 tensor cores (10-bit mantissa inputs).
    #[arg(long)]
    pub tf32: bool,
    /// Time each stage of the forward (synchronizes the device between stages) and print
    /// the breakdown. Decode then runs the generic path, not the fused CUDA step.
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON object (with `--concurrency`, one per line and concurrency).
    #[arg(long)]
    pub json: bool,
    /// Sequences decoding together, e.g. `1,4,16,64` (like llama-batched-bench): each level
    /// submits that many requests of `--prompt-tokens` to the engine at once and generates
    /// `--gen-tokens` for each.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
}

/// The dense matrices' form the flags ask for.
pub(crate) fn dense(a: &BenchArgs, dev: &candle_core::Device) -> DenseMode {
    if a.quantized_dense {
        DenseMode::Quantized
    } else if a.f32_dense {
        DenseMode::F32
    } else {
        crate::tools::dense_mode(dev)
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Peak resident memory of this process (VmHWM), bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Device memory in use (total − free, all processes) on a CUDA device, when built with CUDA.
pub(crate) fn vram_used(dev: &candle_core::Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if dev.is_cuda() {
        dev.synchronize().ok()?;
        let (free, total) =
            candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
        return Some((total - free) as u64);
    }
    let _ = dev;
    None
}

/// Peak bytes held by live allocations in the CUDA device's default stream-ordered memory pool
/// (where Candle's allocations go when the driver supports it): the high-water mark since the
/// process started, read from the driver (`CU_MEMPOOL_ATTR_USED_MEM_HIGH`). Excludes the CUDA
/// context and libraries' own workspaces.
fn pool_peak(dev: &candle_core::Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(cd) = dev {
        use candle_core::cuda_backend::cudarc::driver::sys;
        dev.synchronize().ok()?;
        let ctx = cd.cuda_stream().context().clone();
        ctx.bind_to_thread().ok()?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut peak: u64 = 0;
        // SAFETY: plain driver queries on the device of a live context; `peak` is the u64 (cuuint64_t)
        // the attribute is documented to write.
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                .result()
                .ok()?;
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut peak as *mut u64).cast(),
            )
            .result()
            .ok()?;
        }
        return Some(peak);
    }
    let _ = dev;
    None
}

/// The device total of the memory plan the loader checked for the loaded `file` (`None` for a
/// checkpoint folder).
fn planned_device_bytes(
    file: Option<&gguf_format::GgufModel>,
    config: &gpt_weights::GptOssConfig,
    dev: &candle_core::Device,
    cfg: &LoadConfig,
) -> Option<u64> {
    let p = gpt_engine::loader::memory_plan(file?, config, dev, cfg).ok()?;
    Some(p.device_total())
}

/// Runs the benchmark.
pub fn bench(a: &BenchArgs) -> Result<()> {
    if !a.concurrency.is_empty() {
        return crate::bench_batch::bench_concurrency(a);
    }
    let path = model_source::resolve(&a.model)?;
    let dev = device(&a.device)?;
    let ctx = (a.prompt_tokens.max(a.depth) + a.gen_tokens + 1).max(16);
    let cfg = LoadConfig {
        dense: dense(a, &dev),
        ctx,
        chunk: a.chunk,
        model: gpt_engine::model::ModelOptions {
            profile: a.profile,
            no_fast_decode: a.no_fast_decode,
            no_cuda_graph: a.no_cuda_graph,
            cpu_precision: a.cpu_precision.into(),
            kv_type: a.kv_type.map(Into::into),
            moe_grouped_min_slots: a.moe_grouped_min_slots,
            ..Default::default()
        },
        seqs: 1,
        cpu_moe: a.cpu_moe,
    };
    candle_core::cuda::set_gemm_reduced_precision_f32(a.tf32);
    let t0 = Instant::now();
    let (model, file) = load_any(&path, &dev, &cfg, Some(&mut model_source::load_progress()))
        .with_context(|| format!("loading {}", path.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let plan_device = planned_device_bytes(file.as_ref(), model.config(), &dev, &cfg);
    let vocab = model.vocab_size() as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(0..vocab.min(199_998)))
            .collect()
    };
    let sync = |t: &candle_core::Tensor| -> Result<()> {
        t.device().synchronize()?;
        Ok(())
    };

    // One untimed pass first, as llama-bench does: CUDA loads (and JIT-compiles) each kernel
    // module at its first launch, and the decode graph is captured on the second step.
    {
        let n = a.prompt_tokens.clamp(2, a.chunk.max(2));
        let mut cache = model.new_cache(n + 4, n)?;
        let mut l = model.forward_seq(&tokens(n), &mut cache, Logits::Last)?;
        for _ in 0..a.gen_tokens.min(3) {
            l = model.forward_seq(&tokens(1), &mut cache, Logits::Last)?;
        }
        sync(&l)?;
        model.take_profile();
    }

    let (mut pp, mut ttft) = (Vec::new(), Vec::new());
    if a.prompt_tokens > 0 {
        for _ in 0..a.reps.max(1) {
            let prompt = tokens(a.prompt_tokens);
            let mut cache = model.new_cache(ctx, a.chunk)?;
            let t = Instant::now();
            let mut last = None;
            for piece in prompt.chunks(a.chunk.max(1)) {
                last = Some(model.forward_seq(piece, &mut cache, Logits::Last)?);
            }
            if let Some(l) = &last {
                sync(l)?;
                let _ = gpt_engine::sampling::argmax_rows(l)?;
            }
            let s = t.elapsed().as_secs_f64();
            pp.push(a.prompt_tokens as f64 / s);
            ttft.push(s * 1e3);
        }
    }
    let prefill_profile = model.take_profile();
    let vram_after_prefill = vram_used(&dev);
    let mut tg = Vec::new();
    if a.gen_tokens > 0 {
        for _ in 0..a.reps.max(1) {
            let mut cache = model.new_cache(ctx, a.chunk)?;
            if a.depth > 0 {
                let mut last = None;
                for piece in tokens(a.depth).chunks(a.chunk.max(1)) {
                    last = Some(model.forward_seq(piece, &mut cache, Logits::Last)?);
                }
                // The prefill runs asynchronously on a GPU: let it finish before the clock starts.
                if let Some(l) = &last {
                    sync(l)?;
                }
            }
            let mut next = tokens(1)[0];
            let t = Instant::now();
            for _ in 0..a.gen_tokens {
                let l = model.forward_seq(&[next], &mut cache, Logits::Last)?;
                next = gpt_engine::sampling::argmax_rows(&l)?[0];
            }
            tg.push(a.gen_tokens as f64 / t.elapsed().as_secs_f64());
        }
    }
    let decode_profile = model.take_profile();
    let vram_end = vram_used(&dev);
    let fmt_profile =
        |p: &[(gpt_engine::model::profile::Stage, std::time::Duration)]| -> serde_json::Value {
            p.iter()
                .map(|(s, d)| (format!("{s:?}"), serde_json::json!(d.as_secs_f64() * 1e3)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
    let out = serde_json::json!({
        "model": path.display().to_string(),
        "device": a.device,
        "load_s": load_s,
        "fast_decode": model.fast_decode(),
        "tensor_cores": model.tensor_cores(),
        "weights_device_bytes": model.weight_bytes(),
        "cuda_graph": model.fast_decode() && !a.no_cuda_graph,
        "tf32": a.tf32,
        "chunk": a.chunk,
        "prompt_tokens": a.prompt_tokens,
        "prefill_tok_s": median(pp),
        "time_to_first_token_ms": median(ttft),
        "gen_tokens": a.gen_tokens,
        "depth": a.depth,
        "decode_tok_s": median(tg),
        "peak_host_rss_bytes": peak_rss(),
        "device_mem_used_bytes": vram_after_prefill.max(vram_end),
        "device_pool_peak_bytes": pool_peak(&dev),
        "plan_device_total_bytes": plan_device,
        "profile_prefill_ms": if a.profile { fmt_profile(&prefill_profile) } else { serde_json::Value::Null },
        "profile_decode_ms": if a.profile { fmt_profile(&decode_profile) } else { serde_json::Value::Null },
    });
    if a.json {
        println!("{out}");
    } else {
        println!("model      {}", out["model"]);
        println!("load       {load_s:.2} s");
        println!(
            "prefill    {:.1} tok/s ({} tokens, TTFT {:.1} ms)",
            out["prefill_tok_s"].as_f64().unwrap_or(0.0),
            a.prompt_tokens,
            out["time_to_first_token_ms"].as_f64().unwrap_or(0.0)
        );
        println!(
            "decode     {:.1} tok/s ({} tokens at depth {})",
            out["decode_tok_s"].as_f64().unwrap_or(0.0),
            a.gen_tokens,
            a.depth
        );
        if let Some(p) = peak_rss() {
            println!("peak RSS   {:.2} GiB", p as f64 / (1u64 << 30) as f64);
        }
        if let Some(p) = pool_peak(&dev) {
            println!(
                "peak VRAM  {:.2} GiB (allocations)",
                p as f64 / (1u64 << 30) as f64
            );
        }
    }
    Ok(())
}
