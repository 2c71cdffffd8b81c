//! `cuda_fwd` bodies of the crate's `CustomOp`s: unpack the op's fields (bias, sinks) from
//! their tensors' CUDA storage and call the launchers.

use candle_core::{CudaStorage, Layout, Result, Shape, Storage, Tensor};

use super::{
    attention_sinks_cuda, mxfp4_dequant_cuda, mxfp4_matmul_cuda, mxfp4_moe_matmul_cuda,
    router_topk_softmax_cuda, swiglu_oai_cuda, AttentionParams,
};
use crate::{AttentionWithSinks, MoeMxfp4Matmul, Mxfp4Dequant, Mxfp4Matmul, RouterTopK, SwigluOai};

/// Runs `f` with the CUDA storage and layout of `t` (an op field such as a bias).
fn with_cuda<R>(
    op: &str,
    what: &str,
    t: &Tensor,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (guard, layout) = t.storage_and_layout();
    match &*guard {
        Storage::Cuda(c) => f(c, layout),
        _ => candle_core::bail!("{op}: {what} is not on a CUDA device"),
    }
}

fn with_opt_cuda<R>(
    op: &str,
    what: &str,
    t: Option<&Tensor>,
    f: impl FnOnce(Option<(&CudaStorage, &Layout)>) -> Result<R>,
) -> Result<R> {
    match t {
        Some(t) => with_cuda(op, what, t, |s, l| f(Some((s, l)))),
        None => f(None),
    }
}

/// The same elements seen as `dims`, for launchers that take 2-D views of contiguous data.
fn as_dims(op: &str, l: &Layout, dims: &[usize]) -> Result<Layout> {
    if !l.is_contiguous() {
        candle_core::bail!(
            "{op}: input must be contiguous, got strides {:?}",
            l.stride()
        );
    }
    Ok(Layout::contiguous_with_offset(
        Shape::from(dims),
        l.start_offset(),
    ))
}

pub(crate) fn mxfp4_dequant(
    op: &Mxfp4Dequant,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dims = l.dims();
    let (lead, last) = dims.split_at(dims.len().saturating_sub(1));
    let rows: usize = lead.iter().product();
    let rb = last.first().copied().unwrap_or(0);
    let flat = as_dims("mxfp4_dequant", l, &[rows, rb])?;
    let out = mxfp4_dequant_cuda(s, &flat, rows, op.cols)?;
    let mut shape = lead.to_vec();
    shape.push(op.cols);
    Ok((out, Shape::from(shape)))
}

pub(crate) fn mxfp4_matmul(
    op: &Mxfp4Matmul,
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let out = with_opt_cuda("mxfp4_matmul", "bias", op.bias.as_ref(), |b| {
        mxfp4_matmul_cuda(x, xl, w, wl, b)
    })?;
    Ok((out, Shape::from((op.m, op.n))))
}

pub(crate) fn moe_matmul(
    op: &MoeMxfp4Matmul,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    ids: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let out = with_opt_cuda("moe_mxfp4_matmul", "bias", op.bias.as_ref(), |b| {
        mxfp4_moe_matmul_cuda(x.0, x.1, w.0, w.1, b, ids.0, ids.1)
    })?;
    Ok((out, Shape::from((op.t, op.top_k, op.n))))
}

pub(crate) fn swiglu(
    op: &SwigluOai,
    g: &CudaStorage,
    gl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
) -> Result<(CudaStorage, Shape)> {
    Ok((
        swiglu_oai_cuda(g, gl, u, ul, op.alpha, op.limit)?,
        gl.shape().clone(),
    ))
}

pub(crate) fn attention(
    op: &AttentionWithSinks,
    q: (&CudaStorage, &Layout),
    k: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let p = AttentionParams {
        scale: op.scale,
        window: op.window.unwrap_or(0),
        q_offset: op.q_offset,
        kv_offset: op.kv_offset,
    };
    let out = with_cuda("attention_with_sinks", "sinks", &op.sinks, |s, sl| {
        attention_sinks_cuda(q.0, q.1, k.0, k.1, v.0, v.1, s, sl, &p)
    })?;
    Ok((out, Shape::from((op.b, op.t, op.hq, op.d))))
}

/// Top-k ids `(t, k)` u32 and their softmax weights `(t, k)` f32 of CUDA `logits (t, e)`, both
/// from the router kernel (one launch).
pub(crate) fn router_topk_softmax_tensors(
    logits: &candle_core::Tensor,
    k: usize,
) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
    use candle_core::op::BackpropOp;
    use candle_core::{Storage, Tensor};
    let (t, _) = logits.dims2()?;
    let (weights, ids) = {
        let (s, l) = logits.storage_and_layout();
        let Storage::Cuda(cs) = &*s else {
            candle_core::bail!("router_topk_softmax: logits are not on a CUDA device");
        };
        router_topk_softmax_cuda(cs, l, k)?
    };
    let wrap = |st| Tensor::from_storage(Storage::Cuda(st), (t, k), BackpropOp::none(), false);
    Ok((wrap(ids), wrap(weights)))
}

pub(crate) fn router_ids(
    op: &RouterTopK,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (t, _) = l.shape().dims2()?;
    let (_weights, ids) = router_topk_softmax_cuda(s, l, op.k)?;
    Ok((ids, Shape::from((t, op.k))))
}
