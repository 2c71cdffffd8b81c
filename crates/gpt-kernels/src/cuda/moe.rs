//! MoE expert matmul launcher: each (token, choice) slot multiplies by its expert's MXFP4
//! weights and adds the expert's bias.

use super::mxfp4::{row_bytes, MATMUL_WARPS, MAX_GRID_Y};
use super::{contiguous_view, grid_for, ptx, to_u32};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result};

const MODULE: &str = "gpt_kernels::mxfp4_matmul";

/// `y[t, j, :] = x_row . W[ids[t, j]]^T + bias[ids[t, j]]`.
///
/// - `x`: f32 `(t, k)` (every choice reads the token's row) or `(t, top_k, k)` (one row per
///   slot, e.g. the SwiGLU output going into the down projection); contiguous.
/// - `w`: U8 `(e, n, k / 32 * 17)` MXFP4 expert weights, contiguous.
/// - `bias`: optional f32 `(e, n)`, contiguous.
/// - `ids`: u32 `(t, top_k)` expert ids, contiguous.
///
/// Returns f32 `(t, top_k, n)`, dense. The ids are not copied to the host: a slot whose id
/// is `>= e` gets NaN outputs instead of an error.
pub fn mxfp4_moe_matmul_cuda(
    x: &CudaStorage,
    x_l: &Layout,
    w: &CudaStorage,
    w_l: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    ids: &CudaStorage,
    ids_l: &Layout,
) -> Result<CudaStorage> {
    const OP: &str = "mxfp4_moe_matmul_cuda";
    let (t, top_k) = ids_l
        .shape()
        .dims2()
        .map_err(|e| candle_core::Error::msg(format!("{OP}: ids must be (t, top_k): {e}")))?;
    let (k, x_per_slot, x_dims) = match *x_l.dims() {
        [_, k] => (k, 0u32, vec![t, k]),
        [_, _, k] => (k, 1u32, vec![t, top_k, k]),
        ref other => candle_core::bail!("{OP}: x must be (t, k) or (t, top_k, k), got {other:?}"),
    };
    let (n_experts, n) = match *w_l.dims() {
        [e, n, _] => (e, n),
        ref other => candle_core::bail!("{OP}: w must be (e, n, k/32*17), got {other:?}"),
    };
    let rb = row_bytes(OP, k)?;
    let x_v = contiguous_view::<f32>(OP, "x", x, x_l, &x_dims)?;
    let w_v = contiguous_view::<u8>(OP, "w", w, w_l, &[n_experts, n, rb])?;
    let ids_v = contiguous_view::<u32>(OP, "ids", ids, ids_l, &[t, top_k])?;
    let bias_v = match bias {
        Some((s, l)) => Some(contiguous_view::<f32>(OP, "bias", s, l, &[n_experts, n])?),
        None => None,
    };
    let slots = t * top_k;
    let dev = &x.device;
    // SAFETY: the kernel writes every (slot, col) of the output.
    let mut y = unsafe { dev.alloc::<f32>(slots * n) }?;
    if slots == 0 || n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    }
    let (slots_a, top_k_a, e_a, n_a, k_a) = (
        to_u32(OP, "t * top_k", slots)?,
        to_u32(OP, "top_k", top_k)?,
        to_u32(OP, "e", n_experts)?,
        to_u32(OP, "n", n)?,
        to_u32(OP, "k", k)?,
    );
    let w_len = w_v.len() as u64;
    let null_ptr: u64 = 0;
    let func = dev.get_or_load_custom_func(
        "mxfp4_moe_matmul_f32",
        MODULE,
        ptx::for_device(dev, ptx::MXFP4_MATMUL)?,
    )?;
    let mut b = func.builder();
    b.arg(&x_v).arg(&w_v).arg(&w_len);
    match &bias_v {
        Some(v) => b.arg(v),
        None => b.arg(&null_ptr),
    };
    b.arg(&ids_v)
        .arg(&mut y)
        .arg(&slots_a)
        .arg(&top_k_a)
        .arg(&x_per_slot)
        .arg(&e_a)
        .arg(&n_a)
        .arg(&k_a);
    let cfg = LaunchConfig {
        grid_dim: (
            grid_for(OP, n, MATMUL_WARPS)?,
            to_u32(OP, "grid y", slots.min(MAX_GRID_Y))?,
            1,
        ),
        block_dim: ((32 * MATMUL_WARPS) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match `mxfp4_moe_matmul_f32`; the views hold the
    // shapes checked above; out-of-range ids are handled in the kernel.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}
