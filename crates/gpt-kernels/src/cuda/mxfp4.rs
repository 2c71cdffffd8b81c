//! MXFP4 launchers: dequantization to f32 and the dense f32 x MXFP4 matmul (decode GEMV).
//!
//! MXFP4 weights are ggml `block_mxfp4` bytes stored as `DType::U8`, a row of `cols` weights
//! taking `cols / 32 * 17` bytes (see `kernels/mxfp4.cuh`).

use super::{contiguous_view, grid_for, ptx, to_u32, MXFP4_BLOCK_BYTES, MXFP4_BLOCK_ELEMS};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result};

const MODULE_DEQUANT: &str = "gpt_kernels::mxfp4";
const MODULE_MATMUL: &str = "gpt_kernels::mxfp4_matmul";
/// Warps (output elements) per thread block of the matmul kernels; matches
/// `WARPS_PER_BLOCK` in `kernels/mxfp4_matmul.cu`.
pub(crate) const MATMUL_WARPS: usize = 4;
/// The largest grid y dimension; the kernels loop over rows beyond it.
pub(crate) const MAX_GRID_Y: usize = 65_535;

/// Checks `cols` and returns the bytes per weight row.
pub(crate) fn row_bytes(op: &str, cols: usize) -> Result<usize> {
    if cols == 0 || cols % MXFP4_BLOCK_ELEMS != 0 {
        candle_core::bail!("{op}: cols = {cols} must be a positive multiple of 32");
    }
    Ok(cols / MXFP4_BLOCK_ELEMS * MXFP4_BLOCK_BYTES)
}

/// Dequantizes MXFP4 weights to f32.
///
/// `blocks`: U8 `(rows, cols / 32 * 17)`, contiguous. Returns f32 `(rows, cols)`, dense.
/// `cols` must be a multiple of 32. The result is bit-exact (every MXFP4 value is an f32).
pub fn mxfp4_dequant_cuda(
    blocks: &CudaStorage,
    layout: &Layout,
    rows: usize,
    cols: usize,
) -> Result<CudaStorage> {
    const OP: &str = "mxfp4_dequant_cuda";
    let rb = row_bytes(OP, cols)?;
    let src = contiguous_view::<u8>(OP, "blocks", blocks, layout, &[rows, rb])?;
    let dev = &blocks.device;
    let n_blocks = rows * (cols / MXFP4_BLOCK_ELEMS);
    // SAFETY: every element is written by the kernel (16 threads per block, 2 values each).
    let mut dst = unsafe { dev.alloc::<f32>(rows * cols) }?;
    if n_blocks == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(dst, dev.clone()));
    }
    let threads = 256;
    let grid = grid_for(OP, n_blocks * 16, threads)?;
    let n_blocks_arg = to_u32(OP, "number of blocks", n_blocks)?;
    let func = dev.get_or_load_custom_func(
        "mxfp4_dequant_f32",
        MODULE_DEQUANT,
        ptx::for_device(dev, ptx::MXFP4)?,
    )?;
    let mut b = func.builder();
    b.arg(&src).arg(&mut dst).arg(&n_blocks_arg);
    let cfg = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match `mxfp4_dequant_f32`; `src` holds
    // `n_blocks * 17` bytes and `dst` holds `n_blocks * 32` floats.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(dst, dev.clone()))
}

/// `y = x . W^T + bias` with f32 activations and MXFP4 weights.
///
/// - `x`: f32 `(m, k)`, contiguous.
/// - `w`: U8 `(n, k / 32 * 17)`, contiguous (`k` a multiple of 32).
/// - `bias`: optional f32 `(n)`, contiguous.
///
/// Returns f32 `(m, n)`, dense. One warp per output element; weights are read with aligned
/// 16-byte loads. Built for decode (small `m`): each of the `m` rows re-reads the weights.
pub fn mxfp4_matmul_cuda(
    x: &CudaStorage,
    x_l: &Layout,
    w: &CudaStorage,
    w_l: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    const OP: &str = "mxfp4_matmul_cuda";
    let (m, k) = x_l
        .shape()
        .dims2()
        .map_err(|e| candle_core::Error::msg(format!("{OP}: x must be (m, k): {e}")))?;
    let n = w_l.dims().first().copied().unwrap_or(0);
    let rb = row_bytes(OP, k)?;
    let x_v = contiguous_view::<f32>(OP, "x", x, x_l, &[m, k])?;
    let w_v = contiguous_view::<u8>(OP, "w", w, w_l, &[n, rb])?;
    let bias_v = match bias {
        Some((s, l)) => Some(contiguous_view::<f32>(OP, "bias", s, l, &[n])?),
        None => None,
    };
    let dev = &x.device;
    // SAFETY: the kernel writes every (row, col) of the (m, n) output.
    let mut y = unsafe { dev.alloc::<f32>(m * n) }?;
    if m == 0 || n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    }
    let (m_a, n_a, k_a) = (
        to_u32(OP, "m", m)?,
        to_u32(OP, "n", n)?,
        to_u32(OP, "k", k)?,
    );
    let w_len = w_v.len() as u64;
    let null_ptr: u64 = 0;
    let func = dev.get_or_load_custom_func(
        "mxfp4_matmul_f32",
        MODULE_MATMUL,
        ptx::for_device(dev, ptx::MXFP4_MATMUL)?,
    )?;
    let mut b = func.builder();
    b.arg(&x_v).arg(&w_v).arg(&w_len);
    match &bias_v {
        Some(v) => b.arg(v),
        None => b.arg(&null_ptr),
    };
    b.arg(&mut y).arg(&m_a).arg(&n_a).arg(&k_a);
    let cfg = LaunchConfig {
        grid_dim: (
            grid_for(OP, n, MATMUL_WARPS)?,
            to_u32(OP, "grid y", m.min(MAX_GRID_Y))?,
            1,
        ),
        block_dim: ((32 * MATMUL_WARPS) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match `mxfp4_matmul_f32`; the views hold exactly the
    // (m, k), (n, k/32*17) and (n) elements the kernel reads; a null bias pointer is allowed.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}
