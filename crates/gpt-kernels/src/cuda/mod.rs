//! CUDA launchers for the hand-written kernels in `kernels/*.cu` (feature `cuda`).
//!
//! Each launcher takes [`CudaStorage`] + [`Layout`] pairs (what a candle `CustomOp`'s
//! `cuda_fwd` receives), checks dtypes, shapes and contiguity, launches one kernel on the
//! storage's device stream and returns a new dense (contiguous, row-major) storage.
//!
//! The PTX is compiled by `build.rs` (cudaforge, `sm_90a` when `CUDA_COMPUTE_CAP=90`) and
//! loaded once per device through `CudaDevice::get_or_load_custom_func`, under module keys
//! prefixed `gpt_kernels::` so that they never collide with other crates' modules.

pub mod attention;
pub mod decode;
pub mod moe;
pub mod moe_rows;
pub mod mxfp4;
pub(crate) mod ops;
pub mod prefill;
pub mod rope_kv;
pub mod router;
pub mod routing;
pub mod swiglu;

pub use attention::{attention_sinks_cuda, AttentionParams};
pub use moe::mxfp4_moe_matmul_cuda;
pub use mxfp4::{mxfp4_dequant_cuda, mxfp4_matmul_cuda};
pub use router::router_topk_softmax_cuda;
pub use swiglu::swiglu_oai_cuda;

use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaStorage, Layout, Result};

/// The PTX text of each kernel file, e.g. `ptx::MXFP4` for `kernels/mxfp4.cu`.
#[allow(dead_code)]
pub(crate) mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

pub(crate) use crate::mxfp4::block::{
    BLOCK_BYTES as MXFP4_BLOCK_BYTES, BLOCK_ELEMS as MXFP4_BLOCK_ELEMS,
};

/// A view of the contiguous elements of `storage` described by `layout`, after checking
/// that the layout is contiguous and has the `expected` dims.
pub(crate) fn contiguous_view<'a, T: CudaDType + DeviceRepr>(
    op: &str,
    what: &str,
    storage: &'a CudaStorage,
    layout: &Layout,
    expected: &[usize],
) -> Result<CudaView<'a, T>> {
    if layout.dims() != expected {
        candle_core::bail!(
            "{op}: {what} has shape {:?}, expected {expected:?}",
            layout.dims()
        );
    }
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::msg(format!("{op}: {what} must be contiguous")))?;
    let slice = storage
        .as_cuda_slice::<T>()
        .map_err(|e| candle_core::Error::msg(format!("{op}: {what} has the wrong dtype: {e}")))?;
    Ok(slice.slice(start..end))
}

/// `n` as a `u32` kernel argument, or an error naming the op and quantity.
pub(crate) fn to_u32(op: &str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| candle_core::Error::msg(format!("{op}: {what} = {n} does not fit in u32")))
}

/// Blocks of `threads` threads covering `n` work items.
pub(crate) fn grid_for(op: &str, n: usize, threads: usize) -> Result<u32> {
    to_u32(op, "grid size", n.div_ceil(threads).max(1))
}
