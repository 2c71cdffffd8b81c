//! The memory plan: bytes a model needs on a device before anything is loaded, computed from
//! metadata and tensor infos alone.

use std::fmt;

use gguf_format::{GgmlType, GgufModel, TensorInfo};

use crate::config::GptOssConfig;
use crate::error::{Error, Result};
use crate::names::{LayerTensor, TensorName};

/// How dense matrices are held once loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenseMode {
    /// Dequantized to f32 (exact weights, f32 matmuls).
    F32,
    /// Kept in their ggml block type where Candle's `QMatMul` runs it: what the CUDA fused
    /// decode path needs, and on the CPU the Q8_0 blocks the vectorized kernels read in place
    /// (the engine dequantizes other types to f32 there unless asked for fast precision).
    #[default]
    Quantized,
}

/// Inputs of a plan besides the file.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// Context length the KV cache must hold.
    pub ctx: usize,
    /// Largest number of tokens in one forward (prefill chunk).
    pub chunk: usize,
    /// Most sequences in one forward: the rows of logits it makes (one per sequence).
    pub seqs: usize,
    /// How dense matrices are held.
    pub dense: DenseMode,
    /// Bytes per KV-cache element (4 for f32).
    pub kv_elem_bytes: usize,
    /// The weights take the CUDA fast form (fused decode, tensor-core prefill): each Q8_0 dense
    /// matrix is replaced by its int8 + f32-scale split (36 bytes per 34-byte block), the
    /// output matrix gets a zero bias, and while a matrix is being split both forms exist.
    pub fused_decode: bool,
    /// The weights take the CPU kernels' form: each Q8_0 dense matrix is copied into a block
    /// tensor the kernels read (same bytes), so while one is copied both exist.
    pub cpu_blocks: bool,
    /// The MoE blocks (router and experts) of the first this many layers stay in host memory
    /// and run on the CPU (`--cpu-moe N`, llama.cpp's `--n-cpu-moe`); see [`host_moe_tensor`].
    pub host_moe_layers: usize,
}

/// Whether `name` stays in host memory when the MoE blocks of the first `host_moe_layers`
/// layers run on the CPU: the router, the experts and their biases of those layers.
pub fn host_moe_tensor(name: &TensorName, host_moe_layers: usize) -> bool {
    use LayerTensor::*;
    matches!(
        name,
        TensorName::Layer(il, FfnGateInp | FfnGateInpBias | FfnGateExps | FfnGateExpsBias
            | FfnUpExps | FfnUpExpsBias | FfnDownExps | FfnDownExpsBias)
            if *il < host_moe_layers
    )
}

/// Most bytes of f32 expert weights the generic grouped prefill dequantizes at once (the
/// engine's batch limit).
pub const EXPERT_BATCH_BYTES: u64 = 1 << 30;

/// Bytes a model needs, by purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Weights resident on the compute device.
    pub weights_device: u64,
    /// Weights kept in host memory (the embedding table, read by row, and the MoE blocks of
    /// [`PlanRequest::host_moe_layers`]).
    pub weights_host: u64,
    /// KV cache of full-attention layers (grows to `ctx`).
    pub kv_full: u64,
    /// KV cache of sliding layers (holds the window plus one chunk).
    pub kv_sliding: u64,
    /// Activations for one chunk, its logits (one row per sequence), and on the generic path
    /// one attention tile of scores.
    pub working: u64,
    /// What the CUDA fast form holds beyond the file's bytes (0 unless
    /// [`PlanRequest::fused_decode`]): the split matrices' wider scales and the output bias.
    pub fast_form_extra: u64,
    /// Held only while the model is built: the largest Q8_0 matrix in both forms at once, or
    /// for other dense types what their loaded forms hold beyond the fast form plus the largest
    /// one's conversion.
    pub load_transient: u64,
}

impl MemoryPlan {
    /// Total bytes on the compute device.
    pub fn device_total(&self) -> u64 {
        self.weights_device + self.kv_full + self.kv_sliding + self.working + self.fast_form_extra
    }

    /// Checks the plan against `available` bytes on `device`.
    pub fn check_fits(&self, device: &str, available: u64, host_is_device: bool) -> Result<()> {
        let need = self.device_total()
            + self.load_transient
            + if host_is_device { self.weights_host } else { 0 };
        if need > available {
            return Err(Error::OutOfMemory {
                device: device.to_string(),
                need,
                available,
                plan: self.to_string(),
            });
        }
        Ok(())
    }

    /// Checks the host-resident weights against `available` host bytes (a GPU device with MoE
    /// blocks on the host).
    pub fn check_host_fits(&self, available: u64) -> Result<()> {
        if self.weights_host > available {
            return Err(Error::OutOfMemory {
                device: "cpu (host-resident weights)".to_string(),
                need: self.weights_host,
                available,
                plan: self.to_string(),
            });
        }
        Ok(())
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  weights on device   {:>12} B  {}",
            self.weights_device,
            gib(self.weights_device)
        )?;
        writeln!(
            f,
            "  weights in host RAM {:>12} B  {}",
            self.weights_host,
            gib(self.weights_host)
        )?;
        writeln!(
            f,
            "  KV cache (full)     {:>12} B  {}",
            self.kv_full,
            gib(self.kv_full)
        )?;
        writeln!(
            f,
            "  KV cache (sliding)  {:>12} B  {}",
            self.kv_sliding,
            gib(self.kv_sliding)
        )?;
        writeln!(
            f,
            "  working buffers     {:>12} B  {}",
            self.working,
            gib(self.working)
        )?;
        if self.fast_form_extra > 0 {
            writeln!(
                f,
                "  CUDA fast form      {:>12} B  {}",
                self.fast_form_extra,
                gib(self.fast_form_extra)
            )?;
            writeln!(
                f,
                "  while loading       {:>12} B  {}",
                self.load_transient,
                gib(self.load_transient)
            )?;
        }
        write!(
            f,
            "  device total        {:>12} B  {}",
            self.device_total(),
            gib(self.device_total())
        )
    }
}

/// Whether Candle's `QMatMul` runs this type directly.
pub fn qmatmul_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | F16 | F32
    )
}

/// Bytes one tensor takes once loaded.
fn loaded_bytes(
    name: &TensorName,
    ty: GgmlType,
    n_elem: u64,
    file_bytes: u64,
    req: &PlanRequest,
) -> u64 {
    let experts = matches!(
        name,
        TensorName::Layer(
            _,
            LayerTensor::FfnGateExps | LayerTensor::FfnUpExps | LayerTensor::FfnDownExps
        )
    );
    if experts && ty == GgmlType::MXFP4 {
        return file_bytes;
    }
    // On the CPU only Q8_0 stays in blocks at exact precision; the rest becomes f32.
    let cpu_f32 = req.cpu_blocks && ty != GgmlType::Q8_0;
    if req.dense == DenseMode::Quantized && qmatmul_supported(ty) && ty.is_quantized() && !cpu_f32 {
        return file_bytes;
    }
    n_elem * 4
}

/// Computes the plan for `model` with `cfg`, from tensor infos alone.
pub fn plan(model: &GgufModel, cfg: &GptOssConfig, req: &PlanRequest) -> Result<MemoryPlan> {
    plan_from_infos(cfg, req, |name| model.tensor(name))
}

/// Computes the plan from tensor infos found by `lookup` (no tensor data is needed).
pub fn plan_from_infos<'a>(
    cfg: &GptOssConfig,
    req: &PlanRequest,
    lookup: impl Fn(&str) -> Option<&'a TensorInfo>,
) -> Result<MemoryPlan> {
    let mut weights_device = 0u64;
    let mut weights_host = 0u64;
    let mut q8_dense = 0u64; // Q8_0 dense bytes on the device
    let mut q8_largest = 0u64; // the largest Q8_0 dense matrix
    let mut output_rows = 0u64; // rows of the output head (the vocabulary)
    let fast = req.fused_decode && req.dense == DenseMode::Quantized;
    let mut conv_surplus = 0u64; // loaded bytes beyond the fast form, freed layer by layer
    let mut conv_largest = 0u64; // the largest other dense matrix's conversion
    for name in crate::names::all(cfg.n_layer) {
        let s = name.to_string();
        let info = lookup(&s).ok_or_else(|| Error::Validation {
            problems: vec![crate::spec::Problem::Missing { name: s.clone() }],
        })?;
        let file_bytes = info.n_bytes().unwrap_or(0);
        if name == TensorName::TokenEmbd {
            weights_host += file_bytes;
            continue;
        }
        if host_moe_tensor(&name, req.host_moe_layers) {
            weights_host += loaded_bytes(&name, info.ty, info.n_elements(), file_bytes, req);
            continue;
        }
        if name == TensorName::Output {
            // ggml dims are (in, out): the output head has `out` = vocab rows.
            output_rows = info.dims.get(1).copied().unwrap_or(0);
        }
        let loaded = loaded_bytes(&name, info.ty, info.n_elements(), file_bytes, req);
        if fast && name.is_dense_matrix() && info.ty != GgmlType::Q8_0 {
            // Held in the split form (see gpt-engine's repack): one int8 plane for the types it
            // splits exactly, two (15-bit) for the rest, and f32 scales per 32-block.
            let n = info.n_elements();
            let planes = if crate::load::INT8_SPLIT_TYPES.contains(&info.ty) {
                1
            } else {
                2
            };
            let held = n * planes + n / 32 * 4;
            weights_device += held;
            conv_surplus += loaded.saturating_sub(held);
            // Its loaded form, its f32 values (two-plane forms of a packed loaded form) and its
            // new form at once.
            let f32_copy = if planes == 2 && loaded < n * 4 {
                n * 4
            } else {
                0
            };
            conv_largest = conv_largest.max(loaded + held + f32_copy);
            continue;
        }
        weights_device += loaded;
        if info.ty == GgmlType::Q8_0 {
            q8_dense += file_bytes;
            q8_largest = q8_largest.max(file_bytes);
        }
    }
    let (fast_form_extra, load_transient) = if fast {
        (
            q8_dense / 34 * 2 + output_rows * 4,
            q8_largest.max(conv_surplus + conv_largest),
        )
    } else if req.cpu_blocks && req.dense == DenseMode::Quantized {
        (0, q8_largest)
    } else {
        (0, 0)
    };
    let kv_row = (cfg.kv_dim() * 2 * req.kv_elem_bytes) as u64; // K and V, one position
    let n_sliding = (0..cfg.n_layer).filter(|&il| cfg.is_sliding(il)).count() as u64;
    let n_full = cfg.n_layer as u64 - n_sliding;
    let slide_len = (cfg.sliding_window + req.chunk).min(req.ctx.max(1)) as u64;
    let vocab = cfg.vocab_size.unwrap_or(0) as u64;
    let chunk = req.chunk as u64;
    let widest = (cfg.q_dim() + 2 * cfg.kv_dim())
        .max(cfg.n_ff_exp * cfg.n_expert_used * 3)
        .max(cfg.n_embd * 4) as u64;
    // One attention tile of scores; the fast path's prefill attention keeps its tiles on chip.
    let scores = if fast {
        0
    } else {
        (cfg.n_head * req.chunk * req.ctx.min(4096)) as u64
    };
    let logit_rows = req.seqs.clamp(1, req.chunk.max(1)) as u64;
    Ok(MemoryPlan {
        weights_device,
        weights_host,
        kv_full: n_full * req.ctx as u64 * kv_row,
        kv_sliding: n_sliding * slide_len * kv_row,
        working: 4 * (chunk * 4 * widest + logit_rows * vocab + scores),
        fast_form_extra,
        load_transient,
    })
}

/// The fewest layers whose MoE blocks must stay in host memory (`--cpu-moe N`) for the plan
/// of `req` to fit in `available` device bytes (with what loading holds for a moment); `None`
/// if even all of them on the host do not fit.
pub fn suggest_host_moe_layers<'a>(
    cfg: &GptOssConfig,
    req: &PlanRequest,
    lookup: impl Fn(&str) -> Option<&'a TensorInfo> + Copy,
    available: u64,
) -> Result<Option<usize>> {
    for n in 0..=cfg.n_layer {
        let r = PlanRequest {
            host_moe_layers: n,
            ..req.clone()
        };
        let p = plan_from_infos(cfg, &r, lookup)?;
        if p.device_total() + p.load_transient <= available {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Memory the OS reports available (`MemAvailable` in /proc/meminfo), when it can be read.
pub fn host_available_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
