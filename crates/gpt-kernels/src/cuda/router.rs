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

/// Whether [`crate::router::moe_router`] takes [`moe_router_rows`] for a CUDA step's rows:
/// `GPTOSS_ROWS_ROUTER=1`, read once. Opt-in until the kernel has run on a GPU (written in
/// session 15, compiled, its test not yet run); otherwise the matmul, bias add and
/// [`crate::router::router_topk_softmax`], as before it.
pub fn rows_router_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("GPTOSS_ROWS_ROUTER").is_ok_and(|v| v == "1"))
}

/// The MoE router of token rows in one launch (`rows_router`, block per row): `logits = x · wᵀ
/// + b`, the top `k` (ties to the lower expert) and the softmax over them.
///
/// - `x`: f32 `(t, d)`; `w`: f32 `(e, d)`; `b`: f32 `(e)`; all contiguous on one CUDA device,
///   `d % 4 == 0`, `e <= 256`, `1 <= k <= min(e, 32)`.
///
/// Returns `(ids, weights)`, U32 and f32 `(t, k)`, ordered by descending logit.
pub fn moe_router_rows(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    b: &candle_core::Tensor,
    k: usize,
) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
    use super::decode::{tensor_ptr, MODULE as DECODE};
    use candle_core::op::BackpropOp;
    use candle_core::{DType, Device, Storage, Tensor};
    const OP: &str = "moe_router_rows";
    let (t, d) = x.dims2()?;
    let (e, wd) = w.dims2()?;
    let ok = wd == d
        && b.dims() == [e]
        && d % 4 == 0
        && e <= 256
        && (1..=e.min(ROUTER_MAX_K)).contains(&k)
        && [x, w, b].iter().all(|t| t.dtype() == DType::F32);
    if !ok {
        candle_core::bail!(
            "{OP}: x {:?}, w {:?}, b {:?}, k = {k}: expected f32 x (t, d), w (e, d), b (e), \
             d % 4 == 0, e <= 256, 1 <= k <= min(e, {ROUTER_MAX_K})",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    let Device::Cuda(dev) = x.device() else {
        candle_core::bail!("{OP}: x is not on a CUDA device");
    };
    // float4 rows: a view that starts off a 16-byte boundary is copied to a fresh buffer.
    let aligned = |t: &Tensor| -> Result<Tensor> {
        if t.is_contiguous() && t.layout().start_offset() % 4 == 0 {
            Ok(t.clone())
        } else {
            t.force_contiguous()
        }
    };
    let (x, w, b) = (aligned(x)?, aligned(w)?, b.contiguous()?);
    // SAFETY (the three allocations): `rows_router` writes every element of each before
    // anything reads it.
    let mut logits = unsafe { dev.alloc::<f32>(t * e) }?;
    let mut ids = unsafe { dev.alloc::<u32>(t * k) }?;
    let mut wts = unsafe { dev.alloc::<f32>(t * k) }?;
    if t > 0 {
        let func =
            dev.get_or_load_custom_func("rows_router", DECODE, ptx::for_device(dev, ptx::DECODE)?)?;
        let (px, pw, pb) = (tensor_ptr(&x)?, tensor_ptr(&w)?, tensor_ptr(&b)?);
        let (d_a, e_a, k_a) = (
            to_u32(OP, "d", d)?,
            to_u32(OP, "e", e)?,
            to_u32(OP, "k", k)?,
        );
        let mut bld = func.builder();
        bld.arg(&px)
            .arg(&pw)
            .arg(&pb)
            .arg(&d_a)
            .arg(&e_a)
            .arg(&mut logits)
            .arg(&k_a)
            .arg(&mut ids)
            .arg(&mut wts);
        let cfg = LaunchConfig {
            grid_dim: (to_u32(OP, "t", t)?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types and order match `rows_router`; the buffers hold (t, d), (e, d),
        // (e), (t, e), (t, k) and (t, k) elements (checked and allocated above); Candle's
        // allocations are 256-byte aligned, `aligned` left x and w at a multiple of 4 elements
        // and d % 4 == 0, so every row is 16-byte aligned (`tensor_ptr` adds the offset).
        unsafe { bld.launch(cfg) }.w()?;
    }
    let wrap = |st: CudaStorage| {
        Tensor::from_storage(Storage::Cuda(st), (t, k), BackpropOp::none(), false)
    };
    Ok((
        wrap(CudaStorage::wrap_cuda_slice(ids, dev.clone())),
        wrap(CudaStorage::wrap_cuda_slice(wts, dev.clone())),
    ))
}
