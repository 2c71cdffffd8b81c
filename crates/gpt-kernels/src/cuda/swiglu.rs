//! SwiGLU-OAI launcher: `out = min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(u, ±limit) + 1)`.

use super::{contiguous_view, grid_for, ptx};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result};

const MODULE: &str = "gpt_kernels::swiglu";

/// SwiGLU as in GPT-OSS on separate gate and up tensors (GGUF's `ffn_gate_exps` /
/// `ffn_up_exps` outputs), elementwise.
///
/// - `gate`, `up`: f32, same shape (any rank), contiguous.
/// - `alpha`: 1.702 and `limit`: 7.0 in GPT-OSS.
///
/// Returns f32 of the same shape, dense. NaN inputs propagate.
pub fn swiglu_oai_cuda(
    gate: &CudaStorage,
    gate_l: &Layout,
    up: &CudaStorage,
    up_l: &Layout,
    alpha: f32,
    limit: f32,
) -> Result<CudaStorage> {
    const OP: &str = "swiglu_oai_cuda";
    let dims = gate_l.dims();
    let g = contiguous_view::<f32>(OP, "gate", gate, gate_l, dims)?;
    let u = contiguous_view::<f32>(OP, "up", up, up_l, dims)?;
    let n = gate_l.shape().elem_count();
    let dev = &gate.device;
    // SAFETY: the kernel writes all n elements.
    let mut out = unsafe { dev.alloc::<f32>(n) }?;
    if n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()));
    }
    let threads = 256;
    // The kernel loops (grid-stride), so the grid may be capped.
    let grid = grid_for(OP, n.min(threads * 65_535), threads)?;
    let n_arg = n as u64;
    let func =
        dev.get_or_load_custom_func("swiglu_oai_f32", MODULE, ptx::for_device(dev, ptx::SWIGLU)?)?;
    let mut b = func.builder();
    b.arg(&g)
        .arg(&u)
        .arg(&mut out)
        .arg(&n_arg)
        .arg(&alpha)
        .arg(&limit);
    let cfg = LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match `swiglu_oai_f32`; both views hold n floats.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
