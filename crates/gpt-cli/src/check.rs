//! `gptoss inspect --check` and `--dump`: GPT-OSS validation, memory plan, tensor dumps.

use std::path::Path;

use anyhow::{Context, Result};
use gguf_format::GgufModel;
use gpt_engine::kv::KvType;
use gpt_weights::plan::{self, DenseMode, PlanRequest};
use gpt_weights::{dequant, GptOssConfig};

/// What `inspect --check` is asked.
pub struct CheckArgs<'a> {
    pub file: &'a Path,
    pub ctx: usize,
    /// Layers whose MoE blocks the plans keep in host memory.
    pub cpu_moe: usize,
    /// GPU memory to fit (`24G`).
    pub vram: Option<&'a str>,
    /// A device whose free memory to fit.
    pub device: Option<&'a str>,
}

/// The GPU memory `inspect --check` fits: `--vram`, the free memory of `--device`, or the
/// smaller of both.
fn target_memory(a: &CheckArgs<'_>) -> Result<Option<u64>> {
    let vram = a
        .vram
        .map(gpt_server::parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--vram")?;
    let free = match a.device {
        None => None,
        Some(d) => {
            let dev = crate::tools::device(d)?;
            anyhow::ensure!(dev.is_cuda(), "--device {d}: the fit is planned for a GPU");
            gpt_engine::engine::free_memory(&dev)
        }
    };
    Ok(match (vram, free) {
        (Some(v), Some(f)) => Some(v.min(f)),
        (v, f) => v.or(f),
    })
}

/// Which CUDA path the file's weight types take: the fast form needs MXFP4 experts; it holds
/// dense matrices of [`gpt_weights::load::INT8_SPLIT_TYPES`] exactly as int8, any other type as
/// 15-bit block integers.
fn fast_path(model: &GgufModel, cfg: &GptOssConfig) -> String {
    use gpt_weights::names::{all, LayerTensor as L, TensorName as N};
    let mut dense = std::collections::BTreeMap::<String, usize>::new();
    let mut why = None;
    for name in all(cfg.n_layer) {
        let is_dense = name.is_dense_matrix();
        let is_expert = matches!(
            name,
            N::Layer(_, L::FfnGateExps | L::FfnUpExps | L::FfnDownExps)
        );
        let Some(info) = model.tensor(&name.to_string()) else {
            continue;
        };
        if is_dense {
            let form = if gpt_weights::load::INT8_SPLIT_TYPES.contains(&info.ty) {
                "int8"
            } else {
                "15-bit"
            };
            *dense.entry(format!("{} ({form})", info.ty)).or_default() += 1;
        } else if is_expert && info.ty != gguf_format::GgmlType::MXFP4 && why.is_none() {
            why = Some(format!("{name} is {} (not MXFP4)", info.ty));
        }
    }
    let types: Vec<String> = dense.iter().map(|(t, n)| format!("{t} x{n}")).collect();
    match why {
        None => format!(
            "CUDA path: fast (fused decode, tensor-core prefill); dense matrices {}",
            types.join(", ")
        ),
        Some(w) => format!(
            "CUDA path: generic, {w} (the fast path takes MXFP4 experts); dense matrices {}",
            types.join(", ")
        ),
    }
}

/// Validates `file` as GPT-OSS and prints the config, the report and the memory plans; with a
/// GPU memory to fit, the `--cpu-moe` that fits it.
pub fn check(a: &CheckArgs<'_>) -> Result<()> {
    let (file, ctx) = (a.file, a.ctx);
    let model = GgufModel::open(file).with_context(|| format!("opening {}", file.display()))?;
    let cfg = GptOssConfig::from_metadata(model.metadata())?;
    println!(
        "config: {} layers, d={}, heads {}/{} x {}, experts {} (top {}), ff {}, window {}",
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.n_head_kv,
        cfg.head_dim,
        cfg.n_expert,
        cfg.n_expert_used,
        cfg.n_ff_exp,
        cfg.sliding_window
    );
    let report = gpt_weights::spec::validate(&model, &cfg)?;
    println!(
        "tensors: {} checked, all as GPT-OSS expects (vocab {})",
        report.tensors, report.vocab_size
    );
    println!("{}", fast_path(&model, &cfg));
    // The KV cache's default element type: f32 on the CPU, f16 on CUDA.
    let kv_bytes = |cuda: bool| KvType::default_for_cuda(cuda).bytes();
    for (name, dense, fused_decode, cpu_blocks) in [
        ("f32 dense", DenseMode::F32, false, false),
        (
            "CPU (Q8_0 blocks, other types f32)",
            DenseMode::Quantized,
            false,
            true,
        ),
        (
            "CUDA, quantized dense (generic)",
            DenseMode::Quantized,
            false,
            false,
        ),
        (
            "CUDA fast form (fused decode, tensor-core prefill)",
            DenseMode::Quantized,
            true,
            false,
        ),
    ] {
        let p = plan::plan(
            &model,
            &cfg,
            &PlanRequest {
                ctx,
                seqs: 1,
                chunk: 2048,
                dense,
                kv_elem_bytes: kv_bytes(name.starts_with("CUDA")),
                fused_decode,
                cpu_blocks,
                host_moe_layers: if cpu_blocks { 0 } else { a.cpu_moe },
            },
        )?;
        println!("memory plan at ctx {ctx}, {name}:\n{p}");
    }
    if let Some(avail) = target_memory(a)? {
        let req = PlanRequest {
            ctx,
            seqs: 1,
            chunk: 2048,
            dense: DenseMode::Quantized,
            kv_elem_bytes: kv_bytes(true),
            fused_decode: true,
            cpu_blocks: false,
            host_moe_layers: 0,
        };
        let gib = avail as f64 / (1u64 << 30) as f64;
        match plan::suggest_host_moe_layers(&cfg, &req, |n| model.tensor(n), avail)? {
            Some(0) => println!("fits {gib:.2} GiB of GPU memory with every layer on the GPU"),
            Some(n) => println!(
                "fits {gib:.2} GiB of GPU memory with --cpu-moe {n} (the MoE blocks of layers 0..{n} in host memory)"
            ),
            None => println!(
                "does not fit {gib:.2} GiB of GPU memory even with every MoE block in host memory"
            ),
        }
    }
    if let Some(avail) = plan::host_available_bytes() {
        println!(
            "host memory available: {:.2} GiB",
            avail as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Dequantizes tensor `name` of `file` to f32 and writes it to `out` as .npy in its logical
/// (row-major, GGUF dims reversed) shape.
pub fn dump(file: &Path, name: &str, out: &Path) -> Result<()> {
    let model = GgufModel::open(file).with_context(|| format!("opening {}", file.display()))?;
    let info = model
        .tensor(name)
        .with_context(|| format!("no tensor named {name:?} in {}", file.display()))?;
    let bytes = model.tensor_data(name)?;
    let values = dequant::dequantize_f32(info.ty, bytes, info.n_elements() as usize)
        .with_context(|| format!("dequantizing {name}"))?;
    crate::npy::write_f32(out, &info.logical_shape(), &values)?;
    eprintln!(
        "wrote {name} ({}, logical shape {:?}) to {}",
        info.ty,
        info.logical_shape(),
        out.display()
    );
    Ok(())
}
