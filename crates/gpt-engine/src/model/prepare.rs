//! The weights in their form for one device, chosen once when the model is built and never
//! changed afterwards (as llama.cpp repacks behind a buffer type at load): on the CPU, and on
//! CUDA when the fast kernels do not apply, the tensors as loaded; on CUDA with Q8_0 dense
//! matrices and MXFP4 experts, the Q8 split matrices (Q, K, V stacked) and planar experts that
//! the fused decode and the tensor-core prefill read — built layer by layer from the loaded
//! tensors, which are dropped as they are replaced, so no matrix is held twice.

use candle_core::{Device, Result, Tensor};
use gpt_weights::load::{Embedding, LayerWeights, Matrix};
use gpt_weights::{GptOssConfig, Weights};

use super::experts::{ExpertsForm, Moe};
use super::linear::{Linear, Qkv};
use super::ModelOptions;

/// Bytes `t` holds.
pub(crate) fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

/// One transformer block.
pub(crate) struct Layer {
    pub attn_norm: Tensor,
    pub qkv: Qkv,
    pub attn_out: Linear,
    /// `(hq)`.
    pub sinks: Tensor,
    pub post_norm: Tensor,
    pub moe: Moe,
}

/// The whole model's weights in their device form.
pub(crate) struct Prepared {
    pub embd: Embedding,
    pub layers: Vec<Layer>,
    pub output_norm: Tensor,
    /// `(vocab, d)`, no bias.
    pub output: Linear,
}

impl Prepared {
    /// Builds the device form of `w` on `device`.
    pub(crate) fn new(w: Weights, device: &Device, opts: &ModelOptions) -> Result<Self> {
        let grouped = |default: usize| opts.moe_grouped_min_slots.unwrap_or(default);
        // Candle's CUDA QMatMul quantizes batched activations to 8 bits (q8_1, its MMQ kernels)
        // unless told to dequantize the weights and multiply in f32: ~1e-2 relative error in
        // the logits, enough to flip many near-tie expert choices (measured on 2 layers of
        // 120b / 20B shape, 256-token prefills). Both CUDA paths want f32 (a process-wide
        // switch; the fast path's dense matrices are not Candle's).
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            candle_core::quantized::cuda::set_force_dmmv(true);
        }
        #[cfg(feature = "cuda")]
        if device.is_cuda() && !opts.no_fast_decode {
            match super::repack::fast_form_supported(&w) {
                Ok(()) => {
                    let min = grouped(super::FAST_GROUPED_MIN_SLOTS);
                    let cpu = gpt_kernels::CpuKernels::detected(opts.cpu_precision);
                    return super::repack::prepare_fast(w, device, (min, cpu));
                }
                Err(why) => tracing::warn!("the fast CUDA kernels do not apply: {why}"),
            }
        }
        let grouped_min_slots = grouped(if device.is_cuda() { 64 } else { usize::MAX });
        let cfg = w.config.clone();
        let cpu = gpt_kernels::CpuKernels::detected(opts.cpu_precision);
        let layers = w
            .layers
            .into_iter()
            .map(|lw| generic_layer(lw, &cfg, grouped_min_slots, device, cpu))
            .collect::<Result<_>>()?;
        Ok(Self {
            embd: w.token_embd,
            layers,
            output_norm: w.output_norm,
            output: linear(w.output, None, device, cpu)?,
        })
    }

    /// Whether the matmuls run on the tensor-core form (CUDA fast path).
    pub(crate) fn tensor_cores(&self) -> bool {
        self.output.tensor_cores()
    }

    /// Bytes the device tensors hold (the embedding stays in host memory and is not counted).
    pub(crate) fn device_bytes(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                tensor_bytes(&l.attn_norm)
                    + l.qkv.bytes()
                    + l.attn_out.bytes()
                    + tensor_bytes(&l.sinks)
                    + tensor_bytes(&l.post_norm)
                    + l.moe.device_bytes()
            })
            .sum();
        layers + tensor_bytes(&self.output_norm) + self.output.bytes()
    }
}

/// Whether `lw`'s MoE block was loaded into host memory for a model on another device
/// (`--cpu-moe`, [`gpt_weights::load::LoadOptions::host_moe_layers`]).
pub(crate) fn moe_on_host(lw: &LayerWeights, device: &Device) -> bool {
    !device.is_cpu() && lw.ffn_gate_inp.device().is_cpu()
}

/// The MoE block of `lw` around `experts`: on the host (CPU kernels, never grouped: the CPU
/// kernel groups by expert itself) when [`moe_on_host`].
pub(crate) fn moe(
    lw: &LayerWeights,
    cfg: &GptOssConfig,
    experts: ExpertsForm,
    (grouped_min_slots, cpu): (usize, gpt_kernels::CpuKernels),
    device: &Device,
) -> Moe {
    let on_host = moe_on_host(lw, device);
    let grouped_min_slots = if on_host {
        usize::MAX
    } else {
        grouped_min_slots
    };
    Moe {
        on_host,
        router_w: lw.ffn_gate_inp.clone(),
        router_b: lw.ffn_gate_inp_b.clone(),
        experts,
        gate_b: lw.ffn_gate_exps_b.clone(),
        up_b: lw.ffn_up_exps_b.clone(),
        down_b: lw.ffn_down_exps_b.clone(),
        n_expert: cfg.n_expert,
        top_k: cfg.n_expert_used,
        grouped_min_slots,
        cpu,
    }
}

/// A dense matrix in its device form: on the CPU, Q8_0 as the file's blocks for the
/// vectorized kernels (copied out of Candle's `QTensor`, which is then dropped) and, at exact
/// precision, other quantized types dequantized to f32; elsewhere as loaded.
fn linear(
    w: Matrix,
    b: Option<Tensor>,
    device: &Device,
    cpu: gpt_kernels::CpuKernels,
) -> Result<Linear> {
    use candle_core::quantized::{GgmlDType, QMatMul};
    let Matrix::Quant(QMatMul::QTensor(q)) = &w else {
        return Ok(Linear::Generic { w, b });
    };
    if !device.is_cpu() {
        return Ok(Linear::Generic { w, b });
    }
    if q.dtype() == GgmlDType::Q8_0 {
        let (n, k) = q.shape().dims2()?;
        let bytes = q.data()?.into_owned();
        let w = Tensor::from_vec(bytes, (n, gpt_kernels::q8::q8_0_row_bytes(k)), device)?;
        let chosen = gpt_kernels::q8::q8_0_kernels_for(&w, cpu)?;
        if chosen != cpu {
            tracing::warn!(
                n,
                k,
                "a Q8_0 matrix holds quants of -128: it runs at exact precision"
            );
        }
        return Ok(Linear::Q8Blocks { w, b, cpu: chosen });
    }
    if cpu.precision() == gpt_kernels::Precision::Exact {
        return Ok(Linear::Generic {
            w: Matrix::Dense(q.dequantize(device)?),
            b,
        });
    }
    Ok(Linear::Generic { w, b })
}

fn generic_layer(
    lw: LayerWeights,
    cfg: &GptOssConfig,
    grouped_min_slots: usize,
    device: &Device,
    cpu: gpt_kernels::CpuKernels,
) -> Result<Layer> {
    let lin = |w: Matrix, b: &Tensor| linear(w, Some(b.clone()), device, cpu);
    let m = moe(
        &lw,
        cfg,
        ExpertsForm::Generic {
            gate: lw.ffn_gate_exps.clone(),
            up: lw.ffn_up_exps.clone(),
            down: lw.ffn_down_exps.clone(),
        },
        (grouped_min_slots, cpu),
        device,
    );
    Ok(Layer {
        qkv: Qkv::Separate(
            lin(lw.attn_q, &lw.attn_q_b)?,
            lin(lw.attn_k, &lw.attn_k_b)?,
            lin(lw.attn_v, &lw.attn_v_b)?,
        ),
        attn_out: lin(lw.attn_output, &lw.attn_output_b)?,
        attn_norm: lw.attn_norm,
        sinks: lw.attn_sinks,
        post_norm: lw.post_attention_norm,
        moe: m,
    })
}
