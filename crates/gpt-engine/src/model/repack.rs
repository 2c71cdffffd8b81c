//! The CUDA fast form of the weights (see [`super::prepare`]): each Q8_0, Q4_0 or Q5_0 matrix
//! split into int8 values `(n, k)` and f32 scales `(n, k/32)` for 16-byte loads, every other
//! dense type into two int8 planes of 15-bit block integers (Q, K and V stacked into one
//! matrix), each MXFP4 expert tensor split into its nibble and exponent planes. Built by
//! gpt-kernels' repack kernels on the device, one layer at a time, dropping what it replaces.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Result, Tensor};
use gpt_kernels::cuda::decode::{
    tensor_ptr as dptr, DecodeKernels, DevPtr, MxPtrs, Q8Ptrs, QVec, DEC_ATT_D, DEC_ATT_MAX_G,
    DEC_MAX_D,
};
use gpt_weights::dequant::split_int8;
use gpt_weights::load::{Experts, Matrix, INT8_SPLIT_TYPES};
use gpt_weights::Weights;

use super::experts::{ExpertsForm, Planar};
use super::linear::{Linear, Qkv};
use super::prepare::{moe, moe_on_host, Layer, Prepared};

/// The file type of a dense matrix the Q8 split form holds exactly in one int8 plane: the
/// one of [`INT8_SPLIT_TYPES`] Candle stores as `dt`.
fn int8_type(dt: GgmlDType) -> Option<gguf_format::GgmlType> {
    INT8_SPLIT_TYPES
        .into_iter()
        .find(|&t| gpt_weights::load::to_candle_qtype(t) == Some(dt))
}

fn mx_of(e: &Experts, what: &str) -> std::result::Result<(), String> {
    match e {
        Experts::Mxfp4 { .. } => Ok(()),
        _ => Err(format!("{what} experts are not MXFP4")),
    }
}

/// Whether the fast kernels take `w`: their shapes and MXFP4 experts (dense matrices of any
/// type: [`q8_split`]).
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
    }
    Ok(())
}

fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(format!("repack: {msg}"))
}

/// One matrix in the Q8 split form: int8 `qs (n, k)`, the low plane `lo (n, k)` of a
/// two-plane one, f32 scales `d (n, k/32)`.
struct Split {
    qs: Tensor,
    lo: Option<Tensor>,
    d: Tensor,
}

impl Split {
    /// `m` in the split form: Q8_0 split on the device, Q4_0 / Q5_0 on the host
    /// ([`split_int8`]), both exact; any other type dequantized to f32 on the device and held
    /// as 15-bit block integers, `d · (128·qs + lo)` with `d = amax / 16256` per 32-block (the
    /// decode kernels' quantization of their inputs, error at most `d / 2`).
    fn of(k: &DecodeKernels, m: &Matrix, device: &Device) -> Result<Self> {
        if let Matrix::Quant(QMatMul::QTensor(q)) = m {
            let (n, cols) = q.shape().dims2()?;
            if q.dtype() == GgmlDType::Q8_0 {
                let qs = Tensor::zeros((n, cols), DType::U8, device)?; // (n, k) int8
                let d = Tensor::zeros((n, cols / 32), DType::F32, device)?; // (n, k/32)
                let dst = Q8Ptrs {
                    qs: dptr(&qs)?,
                    lo: 0,
                    d: dptr(&d)?,
                };
                k.q8_0_split(q.device_ptr()? as DevPtr, n * cols / 32, dst)?;
                return Ok(Self { qs, lo: None, d });
            }
            if let Some(ty) = int8_type(q.dtype()) {
                let (mut qs, mut d) = (vec![0i8; n * cols], vec![0f32; n * cols / 32]);
                split_int8(ty, &q.data()?, &mut qs, &mut d).map_err(|e| err(e.to_string()))?;
                let qs: Vec<u8> = qs.into_iter().map(|v| v as u8).collect();
                return Ok(Self {
                    qs: Tensor::from_vec(qs, (n, cols), device)?, // (n, k) int8
                    lo: None,
                    d: Tensor::from_vec(d, (n, cols / 32), device)?, // (n, k/32)
                });
            }
        }
        let f = match m {
            Matrix::Dense(t) => t.to_dtype(DType::F32)?,
            Matrix::Quant(QMatMul::QTensor(q)) => q.dequantize(device)?,
            Matrix::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.to_dtype(DType::F32)?,
        }
        .to_device(device)?
        .contiguous()?; // (n, k)
        let (n, cols) = f.dims2()?;
        if cols % 32 != 0 {
            return Err(err(format!(
                "a matrix of {cols} columns (a multiple of 32 needed)"
            )));
        }
        let qs = Tensor::zeros((n, cols), DType::U8, device)?; // (n, k) int8
        let lo = Tensor::zeros((n, cols), DType::U8, device)?; // (n, k) int8
        let d = Tensor::zeros((n, cols / 32), DType::F32, device)?; // (n, k/32)
        let q = QVec {
            hi: dptr(&qs)?,
            lo: dptr(&lo)?,
            d: dptr(&d)?,
        };
        k.quant(dptr(&f)?, n * cols / 32, q, false)?;
        Ok(Self {
            qs,
            lo: Some(lo),
            d,
        })
    }

    /// The same values with a low plane: `lo = 0`, `d / 128` (exact: a power of two).
    fn two_plane(self) -> Result<Self> {
        if self.lo.is_some() {
            return Ok(self);
        }
        Ok(Self {
            lo: Some(self.qs.zeros_like()?),
            d: (self.d / 128.0)?,
            qs: self.qs,
        })
    }
}

/// `mats` (same width) stacked into one Q8 split matrix with bias `b` ([`Split::of`]); a stack
/// with any two-plane member is two-plane throughout.
fn q8_split(k: &DecodeKernels, mats: &[&Matrix], b: Tensor, device: &Device) -> Result<Linear> {
    let mut parts: Vec<Split> = mats
        .iter()
        .map(|m| Split::of(k, m, device))
        .collect::<Result<_>>()?;
    let cols = parts[0].qs.dims2()?.1;
    if let Some(p) = parts
        .iter()
        .find(|p| p.qs.dims2().map(|d| d.1).ok() != Some(cols))
    {
        return Err(err(format!(
            "stacked matrices of {cols} and {:?} columns",
            p.qs.dims()
        )));
    }
    if parts.iter().any(|p| p.lo.is_some()) {
        parts = parts
            .into_iter()
            .map(Split::two_plane)
            .collect::<Result<_>>()?;
    }
    if parts.len() == 1 {
        let Split { qs, lo, d } = parts.remove(0);
        return Ok(Linear::Q8Split { qs, lo, d, b });
    }
    let cat = |f: &dyn Fn(&Split) -> &Tensor| -> Result<Tensor> {
        Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0) // (Σn, ..)
    };
    // All parts have a low plane, or none has.
    let lo = parts
        .iter()
        .map(|p| p.lo.as_ref())
        .collect::<Option<Vec<_>>>()
        .map(|v| Tensor::cat(&v, 0)) // (Σn, k)
        .transpose()?;
    Ok(Linear::Q8Split {
        qs: cat(&|p| &p.qs)?,
        lo,
        d: cat(&|p| &p.d)?,
        b,
    })
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
    let rows_kernel = gpt_kernels::cuda::moe_rows::RowsKernel::from_env();
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
                rows: rows_kernel,
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
