//! Attention-with-sinks launcher (GPT-OSS): causal, optional sliding window, GQA, f32.

use super::{contiguous_view, grid_for, ptx, to_u32};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result};

const MODULE: &str = "gpt_kernels::attention";
/// Warps per thread block (one block per query row); matches `ATT_WARPS` in `kernels/attention.cu`.
const WARPS: usize = 16;
/// The largest supported head dim (`32 * ATT_MAX_REGS` in `kernels/attention.cu`).
pub const MAX_HEAD_DIM: usize = 256;
/// Query positions per block of the prefill kernel (`PF_POS`).
const PREFILL_POS: usize = 8;
/// Most query heads per KV head the prefill kernel takes (`PF_MAX_G`).
pub const PREFILL_MAX_GROUP: usize = 8;

/// Scalar parameters of [`attention_sinks_cuda`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    /// Score scale, usually `1 / sqrt(d)`.
    pub scale: f32,
    /// Sliding window in positions; 0 = none. Key at `j_abs` is visible from query position
    /// `p` iff `j_abs <= p` and (`window == 0` or `p - j_abs < window`).
    pub window: usize,
    /// Absolute position of query row 0.
    pub q_offset: usize,
    /// Absolute position of key/value row 0.
    pub kv_offset: usize,
}

/// Attention with a per-head sink logit in the softmax denominator.
///
/// - `q`: f32 `(b, t, hq, d)`; `k`, `v`: f32 `(b, s, hkv, d)`; `sinks`: f32 `(hq)`; all
///   contiguous; `hq % hkv == 0`, `1 <= d <= 256`.
///
/// For query row `i` (position `p = q_offset + i`) and head `h` (kv head `h / (hq / hkv)`):
/// `out = Σ_j e^(s_j - M) v_j / (Σ_j e^(s_j - M) + e^(S_h - M))` over visible keys `j`, with
/// `s_j = scale · q·k_j` and `M = max(max_j s_j, S_h)`. A row with no visible key is 0.
/// Returns f32 `(b, t, hq, d)`, dense.
///
/// Prefill (`t >= 2`, `d` of 32 or 64, at most [`PREFILL_MAX_GROUP`] query heads per KV head)
/// runs `kernels/attention_prefill.cu`: a block per 8 positions × one KV head, key tiles shared
/// by all of its rows. Otherwise one block per (b, i, h) row; its warps split the keys, each
/// with an online softmax, and combine at the end (decode rows of long contexts).
#[allow(clippy::too_many_arguments)]
pub fn attention_sinks_cuda(
    q: &CudaStorage,
    q_l: &Layout,
    k: &CudaStorage,
    k_l: &Layout,
    v: &CudaStorage,
    v_l: &Layout,
    sinks: &CudaStorage,
    sinks_l: &Layout,
    p: &AttentionParams,
) -> Result<CudaStorage> {
    const OP: &str = "attention_sinks_cuda";
    let (b, t, hq, d) = q_l
        .shape()
        .dims4()
        .map_err(|e| candle_core::Error::msg(format!("{OP}: q must be (b, t, hq, d): {e}")))?;
    let (kb, s, hkv, kd) = k_l
        .shape()
        .dims4()
        .map_err(|e| candle_core::Error::msg(format!("{OP}: k must be (b, s, hkv, d): {e}")))?;
    if kb != b || kd != d || hkv == 0 || hq % hkv != 0 {
        candle_core::bail!(
            "{OP}: q {:?} and k {:?} disagree (need the same b and d, hq % hkv == 0)",
            q_l.dims(),
            k_l.dims()
        );
    }
    if d == 0 || d > MAX_HEAD_DIM {
        candle_core::bail!("{OP}: head dim {d} must be in 1..={MAX_HEAD_DIM}");
    }
    let q_v = contiguous_view::<f32>(OP, "q", q, q_l, &[b, t, hq, d])?;
    let k_v = contiguous_view::<f32>(OP, "k", k, k_l, &[b, s, hkv, d])?;
    let v_v = contiguous_view::<f32>(OP, "v", v, v_l, &[b, s, hkv, d])?;
    let s_v = contiguous_view::<f32>(OP, "sinks", sinks, sinks_l, &[hq])?;
    let rows = b * t * hq;
    let dev = &q.device;
    // SAFETY: the kernel writes all d values of every (b, t, hq) row.
    let mut out = unsafe { dev.alloc::<f32>(rows * d) }?;
    if rows == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()));
    }
    let args = [
        to_u32(OP, "b", b)?,
        to_u32(OP, "t", t)?,
        to_u32(OP, "s", s)?,
        to_u32(OP, "hq", hq)?,
        to_u32(OP, "hkv", hkv)?,
        to_u32(OP, "d", d)?,
    ];
    let window = to_u32(OP, "window", p.window)?;
    let q_offset = to_u32(OP, "q_offset", p.q_offset)?;
    let kv_offset = to_u32(OP, "kv_offset", p.kv_offset)?;
    let prefill = t >= 2 && (d == 32 || d == 64) && hq / hkv <= PREFILL_MAX_GROUP;
    let (func, cfg) = if prefill {
        let f = dev.get_or_load_custom_func(
            "attention_prefill_f32",
            "gpt_kernels::attention_prefill",
            ptx::for_device(dev, ptx::ATTENTION_PREFILL)?,
        )?;
        let cfg = LaunchConfig {
            grid_dim: (
                grid_for(OP, t, PREFILL_POS)?,
                to_u32(OP, "hkv", hkv)?,
                to_u32(OP, "b", b)?,
            ),
            block_dim: ((32 * PREFILL_POS) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        (f, cfg)
    } else {
        let f = dev.get_or_load_custom_func(
            "attention_sinks_f32",
            MODULE,
            ptx::for_device(dev, ptx::ATTENTION)?,
        )?;
        let cfg = LaunchConfig {
            grid_dim: (grid_for(OP, rows, 1)?, 1, 1),
            block_dim: ((32 * WARPS) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        (f, cfg)
    };
    let mut bld = func.builder();
    bld.arg(&q_v).arg(&k_v).arg(&v_v).arg(&s_v).arg(&mut out);
    for a in &args {
        bld.arg(a);
    }
    bld.arg(&p.scale)
        .arg(&window)
        .arg(&q_offset)
        .arg(&kv_offset);
    // SAFETY: argument types and order match `attention_sinks_f32` and
    // `attention_prefill_f32` (the same list); the views hold the shapes checked above;
    // d <= 256, and d is 32 or 64 with at most PF_MAX_G heads per group for the prefill kernel.
    unsafe { bld.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Rows (positions × heads of one KV head) per block of the TF32 prefill kernel (`AT_ROWS`).
const TC_ROWS: usize = 128;

/// Whether [`attention_prefill_tf32`] takes these shapes: head dim 64 and a head group that
/// divides 128.
pub fn tf32_prefill_fits(hq: usize, hkv: usize, d: usize) -> bool {
    d == 64 && hkv > 0 && hq % hkv == 0 && TC_ROWS % (hq / hkv) == 0
}

/// Prefill attention with sinks on TF32 tensor cores (`kernels/attention_tc.cu`): the
/// contract of [`attention_sinks_cuda`] (same masking, sinks and GQA) for `q` f32
/// `(b, t, hq, 64)`, `k`, `v` f32 `(b, s, hkv, 64)`, `sinks` `(hq)`, with the two products
/// taken on TF32-rounded inputs (10-bit mantissas; softmax and accumulation in f32). For the
/// engine's CUDA prefill; the `CustomOp` stays f32. Returns `(b, t, hq, 64)`.
pub fn attention_prefill_tf32(
    q: &candle_core::Tensor,
    k: &candle_core::Tensor,
    v: &candle_core::Tensor,
    sinks: &candle_core::Tensor,
    p: &AttentionParams,
) -> Result<candle_core::Tensor> {
    use super::decode::tensor_ptr;
    use candle_core::{DType, Tensor};
    const OP: &str = "attention_prefill_tf32";
    let (b, t, hq, d) = q.dims4()?;
    let (b2, s, hkv, d2) = k.dims4()?;
    let ok = v.dims() == k.dims()
        && b2 == b
        && d2 == d
        && sinks.dims() == [hq]
        && tf32_prefill_fits(hq, hkv, d)
        && [q, k, v, sinks].iter().all(|x| x.dtype() == DType::F32);
    if !ok {
        candle_core::bail!(
            "{OP}: q {:?}, k {:?}, v {:?}, sinks {:?} (f32, head dim 64, head group dividing {TC_ROWS})",
            q.dims(),
            k.dims(),
            v.dims(),
            sinks.dims()
        );
    }
    let candle_core::Device::Cuda(dev) = q.device() else {
        candle_core::bail!("{OP}: tensors must be on a CUDA device");
    };
    let (q, k, v, sinks) = (
        q.contiguous()?,
        k.contiguous()?,
        v.contiguous()?,
        sinks.contiguous()?,
    );
    if b * t == 0 {
        return Tensor::zeros((b, t, hq, d), DType::F32, q.device());
    }
    // SAFETY: the kernel writes every row of every live position.
    let out = unsafe { Tensor::empty((b, t, hq, d), DType::F32, q.device())? };
    let func = dev.get_or_load_custom_func(
        "attention_prefill_tf32",
        "gpt_kernels::attention_tc",
        ptx::for_device(dev, ptx::ATTENTION_TC)?,
    )?;
    let ptrs = [
        tensor_ptr(&q)?,
        tensor_ptr(&k)?,
        tensor_ptr(&v)?,
        tensor_ptr(&sinks)?,
        tensor_ptr(&out)?,
    ];
    let dims = [
        to_u32(OP, "t", t)?,
        to_u32(OP, "s", s)?,
        to_u32(OP, "hq", hq)?,
        to_u32(OP, "hkv", hkv)?,
    ];
    let tail = [
        to_u32(OP, "window", p.window)?,
        to_u32(OP, "q_offset", p.q_offset)?,
        to_u32(OP, "kv_offset", p.kv_offset)?,
    ];
    let mut bld = func.builder();
    for a in &ptrs {
        bld.arg(a);
    }
    for a in &dims {
        bld.arg(a);
    }
    bld.arg(&p.scale);
    for a in &tail {
        bld.arg(a);
    }
    let cfg = LaunchConfig {
        grid_dim: (
            grid_for(OP, t * (hq / hkv), TC_ROWS)?,
            to_u32(OP, "hkv", hkv)?,
            to_u32(OP, "b", b)?,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments follow `attention_prefill_tf32`'s parameter list; the shapes were
    // checked above and every tensor is contiguous.
    unsafe { bld.launch(cfg) }.w()?;
    Ok(out)
}

/// Thread blocks a paged decode launch aims for (a few per SM).
const PAGED_TARGET_BLOCKS: usize = 512;
/// Keys one split of a long row should take at most.
const PAGED_MAX_KEYS_PER_SPLIT: usize = 512;

/// Key splits of a paged decode over `rows` rows of `hkv` KV heads whose longest sees `keys`:
/// enough thread blocks to fill the GPU, no split under 32 keys or over
/// [`PAGED_MAX_KEYS_PER_SPLIT`] where the limit allows.
pub fn paged_splits(rows: usize, hkv: usize, keys: usize) -> usize {
    use super::decode::DEC_MAX_SPLIT;
    let fill = PAGED_TARGET_BLOCKS.div_ceil((rows * hkv).max(1));
    let long = keys.div_ceil(PAGED_MAX_KEYS_PER_SPLIT);
    fill.max(long)
        .min(keys.div_ceil(32))
        .clamp(1, DEC_MAX_SPLIT)
}

/// `cuda_fwd` of [`crate::attention::paged::PagedDecodeAttention`] (shapes checked by the op):
/// `kernels/decode.cu`'s split attention over every row's blocks in one launch, then the
/// combine with the sinks into f32 `(rows, hq, d)`.
pub(crate) fn paged_decode(
    op: &crate::attention::paged::PagedDecodeAttention,
    (rows, hq, hkv, d): (usize, usize, usize, usize),
    (q, q_l): (&CudaStorage, &Layout),
    (k, k_l): (&CudaStorage, &Layout),
    (v, v_l): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    use super::decode::{
        storage_ptr, tensor_ptr, AttnRows, CombineOut, DecodeKernels, KvPtrs, DEC_ATT_D,
        DEC_ATT_MAX_G,
    };
    const OP: &str = "paged_decode_attention";
    if !(d == 32 || d == DEC_ATT_D) || hq / hkv > DEC_ATT_MAX_G {
        candle_core::bail!(
            "{OP}: CUDA takes head dim 32 or {DEC_ATT_D} and at most {DEC_ATT_MAX_G} query heads per KV head, got d {d}, {hq}/{hkv} heads"
        );
    }
    let dev = &q.device;
    let pr = &op.rows;
    let nsplit = paged_splits(rows, hkv, pr.max_keys(op.window));
    let parts = rows * hq * nsplit;
    // SAFETY: the split kernel writes every (row, head, split) partial (empty splits too) and
    // the combine every output element.
    let (pm, pl, pacc, out) = unsafe {
        (
            dev.alloc::<f32>(parts)?,
            dev.alloc::<f32>(parts)?,
            dev.alloc::<f32>(parts * d)?,
            dev.alloc::<f32>(rows * hq * d)?,
        )
    };
    let ptr = |s: &candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>| {
        use candle_core::cuda_backend::cudarc::driver::DevicePtr;
        s.device_ptr(s.stream()).0
    };
    let parts_p = (ptr(&pm), ptr(&pl), ptr(&pacc));
    let kern = DecodeKernels::attention(dev)?;
    let width = pr.tables().dims()[1];
    kern.attn_split(
        storage_ptr(q, q_l)?,
        KvPtrs::of_storage((k, k_l), (v, v_l))?,
        (tensor_ptr(pr.tables())?, pr.block_size()),
        tensor_ptr(pr.meta())?,
        AttnRows {
            rows,
            p_stride: 2,
            off_at: 1,
            table_stride: width,
        },
        (hq, hkv, d),
        op.window.unwrap_or(0),
        op.scale,
        nsplit,
        parts_p,
    )?;
    kern.attn_combine(
        parts_p,
        tensor_ptr(&op.sinks)?,
        (hq, d),
        nsplit,
        rows,
        CombineOut::F32(ptr(&out)),
    )?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
