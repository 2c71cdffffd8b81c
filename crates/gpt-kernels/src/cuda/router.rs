//! MoE router launcher: top-k experts per token and a softmax over the selected logits.

use super::{contiguous_view, grid_for, ptx, to_u32};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result};

const MODULE: &str = "gpt_kernels::router";
/// The largest supported `k` (`ROUTER_MAX_K` in `kernels/router.cu`).
pub const ROUTER_MAX_K: usize = 32;

/// Selects the `k` largest logits of each token and softmaxes them.
///
/// - `logits`: f32 `(tokens, n_experts)`, contiguous.
/// - `k`: `1 ..= min(n_experts, 32)`.
///
/// Returns `(weights, ids)`: f32 `(tokens, k)` and u32 `(tokens, k)`, dense, ordered by
/// descending logit (ties: lower expert index first); each weights row sums to 1.
pub fn router_topk_softmax_cuda(
    logits: &CudaStorage,
    layout: &Layout,
    k: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    const OP: &str = "router_topk_softmax_cuda";
    let (tokens, n_experts) = layout.shape().dims2().map_err(|e| {
        candle_core::Error::msg(format!("{OP}: logits must be (tokens, n_experts): {e}"))
    })?;
    if k == 0 || k > n_experts || k > ROUTER_MAX_K {
        candle_core::bail!(
            "{OP}: k = {k} must be in 1..={} (n_experts = {n_experts})",
            n_experts.min(ROUTER_MAX_K)
        );
    }
    let src = contiguous_view::<f32>(OP, "logits", logits, layout, &[tokens, n_experts])?;
    let dev = &logits.device;
    // SAFETY: the kernel writes every (token, c) of both outputs.
    let mut weights = unsafe { dev.alloc::<f32>(tokens * k) }?;
    // SAFETY: as above.
    let mut ids = unsafe { dev.alloc::<u32>(tokens * k) }?;
    if tokens > 0 {
        let threads = 128;
        let grid = grid_for(OP, tokens, threads)?;
        let (t_a, e_a, k_a) = (
            to_u32(OP, "tokens", tokens)?,
            to_u32(OP, "n_experts", n_experts)?,
            to_u32(OP, "k", k)?,
        );
        let func = dev.get_or_load_custom_func(
            "router_topk_softmax_f32",
            MODULE,
            ptx::for_device(dev, ptx::ROUTER)?,
        )?;
        let mut b = func.builder();
        b.arg(&src)
            .arg(&mut weights)
            .arg(&mut ids)
            .arg(&t_a)
            .arg(&e_a)
            .arg(&k_a);
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types and order match `router_topk_softmax_f32`; 1 <= k <= 32.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(weights, dev.clone()),
        CudaStorage::wrap_cuda_slice(ids, dev.clone()),
    ))
}
