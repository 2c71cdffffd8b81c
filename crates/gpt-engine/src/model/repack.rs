//! The CUDA fast form of the weights (see [`super::prepare`]): each Q8_0, Q4_0 or Q5_0 matrix
//! split into int8 values `(n, k)` and f32 scales `(n, k/32)` for 16-byte loads (Q, K and V stacked into one
//! matrix), each MXFP4 expert tensor split into its nibble and exponent planes. Built by
//! gpt-kernels' repack kernels on the device, one layer at a time, dropping what it replaces.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Result, Tensor};
use gpt_kernels::cuda::decode::{
    tensor_ptr as dptr, DecodeKernels, DevPtr, MxPtrs, Q8Ptrs, DEC_ATT_D, DEC_ATT_MAX_G, DEC_MAX_D,
};
use gpt_weights::dequant::split_int8;
use gpt_weights::load::{Experts, Matrix};
use gpt_weights::Weights;

use super::experts::{ExpertsForm, Planar};
use super::linear::{Linear, Qkv};
use super::prepare::{moe, moe_on_host, Layer, Prepared};

/// The file type of a dense matrix the Q8 split form holds exactly: the one of
/// [`super::FAST_DENSE_TYPES`] Candle stores as `dt`.
fn int8_type(dt: GgmlDType) -> Option<gguf_format::GgmlType> {
    super::FAST_DENSE_TYPES
        .into_iter()
        .find(|&t| gpt_weights::load::to_candle_qtype(t) == Some(dt))
}

fn q8_of<'a>(
    m: &'a Matrix,
    what: &str,
) -> std::result::Result<&'a std::sync::Arc<QTensor>, String> {
    let fast = || {
        let names: Vec<String> = super::FAST_DENSE_TYPES
            .iter()
            .map(|t| t.to_string())
            .collect();
        names.join(", ")
    };
    match m {
        Matrix::Quant(QMatMul::QTensor(q)) if int8_type(q.dtype()).is_some() => Ok(q),
        Matrix::Quant(QMatMul::QTensor(q)) => Err(format!(
            "{what} is {:?} (the fast path takes dense {})",
            q.dtype(),
            fast()
        )),
        _ => Err(format!(
            "{what} is not a quantized matrix of a type the fast path takes ({})",
            fast()
        )),
    }
}

fn mx_of(e: &Experts, what: &str) -> std::result::Result<(), String> {
    match e {
        Experts::Mxfp4 { .. } => Ok(()),
        _ => Err(format!("{what} experts are not MXFP4")),
    }
}

/// Whether the fast kernels take `w`: their shapes, Q8_0 / Q4_0 / Q5_0 dense matrices, MXFP4
/// experts.
pub(crate) fn fast_form_supported(w: &Weights) -> std::result::Result<(), String> {
    let cfg = &w.config;
    let (d, hq, hkv, hd) = (cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim);
    let checks = [
        (
            hd == 32 || hd == DEC_ATT_D,
            format!("head dim {hd} (32 or {DEC_ATT_D} supported)"),
        ),
        (
            hkv > 0 && hq % hkv == 0 && hq / hkv <= DEC_ATT_MAX_G,
            format!("{hq} query heads over {hkv} KV heads"),
        ),
        (
            d % 32 == 0 && d <= DEC_MAX_D,
            format!("embedding width {d}"),
        ),
        (
            cfg.n_ff_exp % 32 == 0,
            format!("expert width {}", cfg.n_ff_exp),
        ),
        (
            cfg.n_expert <= 256 && cfg.n_expert_used <= 32,
            format!("{} experts, {} used", cfg.n_expert, cfg.n_expert_used),
        ),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(format!("unsupported shape: {why}"));
    }
    for lw in &w.layers {
        mx_of(&lw.ffn_gate_exps, "ffn_gate")?;
        mx_of(&lw.ffn_up_exps, "ffn_up")?;
        mx_of(&lw.ffn_down_exps, "ffn_down")?;
        for (m, what) in [
            (&lw.attn_q, "attn_q"),
            (&lw.attn_k, "attn_k"),
            (&lw.attn_v, "attn_v"),
            (&lw.attn_output, "attn_output"),
        ] {
            q8_of(m, what)?;
        }
    }
    q8_of(&w.output, "output")?;
    Ok(())
}

fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(format!("repack: {msg}"))
}

/// `mats` (Q8_0, Q4_0 or Q5_0, same width) stacked into one Q8 split matrix with bias `b`:
/// all-Q8_0 stacks are split on the device; others on the host ([`split_int8`], exact), then
/// uploaded.
fn q8_split(k: &DecodeKernels, mats: &[&Matrix], b: Tensor, device: &Device) -> Result<Linear> {
    let qs_: Vec<_> = mats
        .iter()
        .map(|m| q8_of(m, "matrix").map_err(err))
        .collect::<Result<_>>()?;
    let cols = qs_[0].shape().dims2()?.1;
    let mut rows = 0;
    for q in &qs_ {
        let (n, kk) = q.shape().dims2()?;
        if kk != cols || kk % 32 != 0 {
            return Err(err(format!("matrices of {kk} and {cols} columns")));
        }
        rows += n;
    }
    if qs_.iter().any(|q| q.dtype() != GgmlDType::Q8_0) {
        let (mut qs, mut d) = (vec![0i8; rows * cols], vec![0f32; rows * cols / 32]);
        let (mut at, mut atd) = (0, 0);
        for q in &qs_ {
            let ty = int8_type(q.dtype()).ok_or_else(|| err("not an int8 type".into()))?;
            let n = q.shape().elem_count();
            split_int8(
                ty,
                &q.data()?,
                &mut qs[at..at + n],
                &mut d[atd..atd + n / 32],
            )
            .map_err(|e| err(e.to_string()))?;
            (at, atd) = (at + n, atd + n / 32);
        }
        let qs: Vec<u8> = qs.into_iter().map(|v| v as u8).collect();
        let qs = Tensor::from_vec(qs, (rows, cols), device)?; // (n, k) int8
        let d = Tensor::from_vec(d, (rows, cols / 32), device)?; // (n, k/32)
        return Ok(Linear::Q8Split { qs, d, b });
    }
    let qs = Tensor::zeros((rows, cols), DType::U8, device)?; // (n, k) int8
    let d = Tensor::zeros((rows, cols / 32), DType::F32, device)?; // (n, k/32)
    let p = Q8Ptrs {
        qs: dptr(&qs)?,
        d: dptr(&d)?,
    };
    let mut r0 = 0;
    for q in &qs_ {
        let n = q.shape().dims2()?.0;
        let src = q.device_ptr()? as DevPtr;
        let dst = Q8Ptrs {
            qs: p.qs + (r0 * cols) as u64,
            d: p.d + (r0 * cols / 32 * 4) as u64,
        };
        k.q8_0_split(src, n * cols / 32, dst)?;
        r0 += n;
    }
    Ok(Linear::Q8Split { qs, d, b })
}

/// MXFP4 expert blocks `(e, n, k/32*17)` as planes.
fn planar(k: &DecodeKernels, e: &Experts, device: &Device) -> Result<Planar> {
    let Experts::Mxfp4 { blocks, k: kk } = e else {
        return Err(err("experts are not MXFP4".into()));
    };
    let (ne, n, _) = blocks.dims3()?;
    let qs = Tensor::zeros((ne, n, kk / 2), DType::U8, device)?; // (e, n, k/2)
    let e8 = Tensor::zeros((ne, n, kk / 32), DType::U8, device)?; // (e, n, k/32)
    let p = MxPtrs {
        qs: dptr(&qs)?,
        e8: dptr(&e8)?,
    };
    k.mxfp4_planar(dptr(&blocks.contiguous()?)?, ne * n * kk / 32, p)?;
    Ok(Planar { qs, e8 })
}

/// The fast form of `w` ([`fast_form_supported`] must hold).
pub(crate) fn prepare_fast(
    w: Weights,
    device: &Device,
    experts_cfg: (usize, gpt_kernels::CpuKernels),
) -> Result<Prepared> {
    let Device::Cuda(dev) = device else {
        return Err(err("not a CUDA device".into()));
    };
    let k = DecodeKernels::new(dev)?;
    let cfg = w.config.clone();
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for lw in w.layers {
        let qkv_b = Tensor::cat(&[&lw.attn_q_b, &lw.attn_k_b, &lw.attn_v_b], 0)?; // ((hq + 2 hkv) hd)
        let qkv = q8_split(&k, &[&lw.attn_q, &lw.attn_k, &lw.attn_v], qkv_b, device)?;
        let attn_out = q8_split(&k, &[&lw.attn_output], lw.attn_output_b.clone(), device)?;
        // A MoE block kept on the host (`--cpu-moe`) stays as loaded, for the CPU kernels.
        let experts = if moe_on_host(&lw, device) {
            ExpertsForm::Generic {
                gate: lw.ffn_gate_exps.clone(),
                up: lw.ffn_up_exps.clone(),
                down: lw.ffn_down_exps.clone(),
            }
        } else {
            ExpertsForm::Planar {
                gate: planar(&k, &lw.ffn_gate_exps, device)?,
                up: planar(&k, &lw.ffn_up_exps, device)?,
                down: planar(&k, &lw.ffn_down_exps, device)?,
            }
        };
        let m = moe(&lw, &cfg, experts, experts_cfg, device);
        // The repack kernels run on the stream: finish them before this layer's loaded
        // tensors are freed at the end of the iteration.
        device.synchronize()?;
        layers.push(Layer {
            attn_norm: lw.attn_norm.contiguous()?,
            qkv: Qkv::Fused(qkv),
            attn_out,
            sinks: lw.attn_sinks.contiguous()?,
            post_norm: lw.post_attention_norm.contiguous()?,
            moe: m,
        });
    }
    let vocab = w.token_embd.vocab();
    let zeros = Tensor::zeros(vocab, DType::F32, device)?; // the output matrix has no bias
    let output = q8_split(&k, &[&w.output], zeros, device)?;
    device.synchronize()?;
    Ok(Prepared {
        embd: w.token_embd,
        layers,
        output_norm: w.output_norm.contiguous()?,
        output,
    })
}
