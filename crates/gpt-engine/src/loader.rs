//! Opening a GGUF as a runnable [`GptOss`]: config, validation, memory plan, load.

use std::path::Path;

use candle_core::Device;
use gguf_format::GgufModel;
use gpt_weights::load::LoadOptions;
use gpt_weights::plan::{self, DenseMode, PlanRequest};
use gpt_weights::{GptOssConfig, Weights};

use crate::error::Result;
use crate::model::{GptOss, ModelOptions};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// How dense matrices are held.
    pub dense: DenseMode,
    /// Forward options (YaRN rounding).
    pub model: ModelOptions,
    /// Context the KV cache must hold (for the memory plan).
    pub ctx: usize,
    /// Prefill chunk (for the memory plan).
    pub chunk: usize,
    /// Most sequences per forward (for the memory plan: rows of logits).
    pub seqs: usize,
    /// On a GPU, the MoE blocks (router, experts) of the first this many layers stay in host
    /// memory and run on the CPU kernels (`--cpu-moe N`, llama.cpp's `--n-cpu-moe`); ignored
    /// on the CPU.
    pub cpu_moe: usize,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            dense: DenseMode::Quantized,
            model: ModelOptions::default(),
            ctx: 4096,
            chunk: 512,
            seqs: 1,
            cpu_moe: 0,
        }
    }
}

/// The layers whose MoE blocks stay in host memory: `cfg.cpu_moe` on a GPU, none on the CPU.
fn host_moe_layers_of(config: &GptOssConfig, device: &Device, cfg: &LoadConfig) -> usize {
    if device.is_cpu() {
        0
    } else {
        cfg.cpu_moe.min(config.n_layer)
    }
}

/// The memory plan [`load_model`] checks before loading `file` onto `device` with `cfg`.
pub fn memory_plan(
    file: &GgufModel,
    config: &GptOssConfig,
    device: &Device,
    cfg: &LoadConfig,
) -> Result<plan::MemoryPlan> {
    let req = PlanRequest {
        ctx: cfg.ctx,
        chunk: cfg.chunk,
        seqs: cfg.seqs,
        dense: cfg.dense,
        kv_elem_bytes: cfg.model.kv_type_on(device).bytes(),
        fused_decode: device.is_cuda() && !cfg.model.no_fast_decode,
        cpu_blocks: device.is_cpu(),
        host_moe_layers: host_moe_layers_of(config, device, cfg),
    };
    Ok(plan::plan(file, config, &req)?)
}

/// Opens `path`, checks it fits in memory, and loads it onto `device`.
/// `progress(done, total)` reports bytes loaded.
pub fn load_model(
    path: &Path,
    device: &Device,
    cfg: &LoadConfig,
    progress: Option<&mut dyn FnMut(u64, u64)>,
) -> Result<(GptOss, GgufModel)> {
    let file = GgufModel::open(path)?;
    let config = GptOssConfig::from_metadata(file.metadata())?;
    gpt_weights::spec::validate(&file, &config)?;
    let p = memory_plan(&file, &config, device, cfg)?;
    let host_moe_layers = host_moe_layers_of(&config, device, cfg);
    tracing::info!("memory plan:\n{p}");
    if device.is_cpu() {
        if let Some(avail) = plan::host_available_bytes() {
            p.check_fits("cpu", avail, true)?;
        }
    }
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        // Free memory as the driver reports it (the device's context is current after creation).
        if let Ok((free, _total)) =
            candle_core::cuda_backend::cudarc::driver::result::mem_get_info()
        {
            p.check_fits("cuda", free as u64, false)?;
        }
        if let (true, Some(avail)) = (host_moe_layers > 0, plan::host_available_bytes()) {
            p.check_host_fits(avail)?;
        }
    }
    let w = Weights::load_validated(
        &file,
        &config,
        device,
        LoadOptions {
            dense: cfg.dense,
            progress,
            host_moe_layers,
        },
    )?;
    Ok((GptOss::new(w, device.clone(), cfg.model)?, file))
}

/// [`load_model`] for a GGUF file, or, for a directory, the original Hugging Face checkpoint in
/// it (`config.json` + `*.safetensors`, [`gpt_weights::hf::load_hf`]); the GGUF is returned
/// when there is one (its metadata holds the tokenizer).
pub fn load_any(
    path: &Path,
    device: &Device,
    cfg: &LoadConfig,
    progress: Option<&mut dyn FnMut(u64, u64)>,
) -> Result<(GptOss, Option<GgufModel>)> {
    if path.is_dir() {
        let w = gpt_weights::hf::load_hf(path, device)?;
        return Ok((GptOss::new(w, device.clone(), cfg.model)?, None));
    }
    let (m, f) = load_model(path, device, cfg, progress)?;
    Ok((m, Some(f)))
}
