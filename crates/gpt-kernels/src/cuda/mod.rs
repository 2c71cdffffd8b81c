//! CUDA launchers for the hand-written kernels in `kernels/*.cu` (feature `cuda`).
//!
//! Each launcher takes [`CudaStorage`] + [`Layout`] pairs (what a candle `CustomOp`'s
//! `cuda_fwd` receives), checks dtypes, shapes and contiguity, launches one kernel on the
//! storage's device stream and returns a new dense (contiguous, row-major) storage.
//!
//! The PTX is compiled by `build.rs` once per target architecture (`compute_80` ...
//! `compute_120`, see `cargo xtask cuda-build --arch`); [`ptx::for_device`] picks the highest one
//! the device runs and loads it once per device through `CudaDevice::get_or_load_custom_func`,
//! under module keys prefixed `gpt_kernels::` so that they never collide with other crates'
//! modules. No kernel uses an architecture-specific (`sm_90a`) feature: tensor cores through
//! `mma.sync` (bf16, tf32, int8), `cp.async` and `ldmatrix`, all from Ampere on.

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

/// The PTX of each kernel file, e.g. `ptx::MXFP4` for `kernels/mxfp4.cu`, one text per
/// architecture the build targeted, and [`ptx::for_device`], which picks the one for a device.
pub(crate) mod ptx {
    use std::sync::atomic::{AtomicU64, Ordering};

    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as Attr;
    use candle_core::{CudaDevice, Result};

    /// One kernel file's PTX: `(compute capability × 10, PTX text)` pairs, ascending.
    #[derive(Clone, Copy)]
    pub(crate) struct Kernel {
        pub file: &'static str,
        pub targets: &'static [(u32, &'static str)],
    }

    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));

    /// The target and PTX for a device of compute capability `cc` (e.g. 90): the highest
    /// target `<= cc`, which the driver JIT-compiles for the device; `None` if every target is
    /// newer.
    pub(crate) fn pick(kernel: Kernel, cc: u32) -> Option<(u32, &'static str)> {
        kernel
            .targets
            .iter()
            .rev()
            .find(|(arch, _)| *arch <= cc)
            .copied()
    }

    /// What the launchers ask of a device: compute capability × 10 (H200: 90) and the most
    /// dynamic shared memory a block may opt in to.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct DeviceInfo {
        pub cc: u32,
        pub smem_optin: usize,
    }

    /// [`DeviceInfo`] of the first devices by ordinal, packed `cc << 32 | smem_optin` (0: not
    /// asked yet): launchers ask on every launch, the driver once per device.
    static INFO: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

    /// The [`DeviceInfo`] of `dev`.
    pub(crate) fn device_info(dev: &CudaDevice) -> Result<DeviceInfo> {
        let ctx = dev.cuda_stream().context().clone();
        let slot = INFO.get(ctx.ordinal());
        if let Some(v) = slot.map(|s| s.load(Ordering::Relaxed)).filter(|&v| v != 0) {
            return Ok(DeviceInfo {
                cc: (v >> 32) as u32,
                smem_optin: (v & 0xffff_ffff) as usize,
            });
        }
        let attr = |a| {
            ctx.attribute(a)
                .map(|v| v.max(0) as u32)
                .map_err(|e| candle_core::Error::Cuda(Box::new(e)))
        };
        let cc = attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? * 10
            + attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let smem_optin = attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        if let Some(s) = slot {
            s.store((cc as u64) << 32 | smem_optin as u64, Ordering::Relaxed);
        }
        Ok(DeviceInfo {
            cc,
            smem_optin: smem_optin as usize,
        })
    }

    /// The target (compute capability × 10) whose PTX [`for_device`] loads for `kernel` on
    /// `dev`, if any: what a launcher asks before it uses a feature of later architectures.
    pub(crate) fn target_for(dev: &CudaDevice, kernel: Kernel) -> Result<Option<u32>> {
        Ok(pick(kernel, device_info(dev)?.cc).map(|(arch, _)| arch))
    }

    /// The PTX of `kernel` for `dev`: the highest target the device runs, or an error naming
    /// the kernel file, the device and the targets built.
    pub(crate) fn for_device(dev: &CudaDevice, kernel: Kernel) -> Result<&'static str> {
        let cc = device_info(dev)?.cc;
        match pick(kernel, cc) {
            Some((_, text)) => Ok(text),
            None => {
                let built: Vec<u32> = kernel.targets.iter().map(|(a, _)| *a).collect();
                candle_core::bail!(
                    "{}: this device has compute capability {}.{}, but the kernels were built \
                     for {built:?} only (rebuild with `cargo xtask cuda-build --arch {cc}`)",
                    kernel.file,
                    cc / 10,
                    cc % 10
                )
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{pick, Kernel};

        #[test]
        fn picks_the_highest_target_the_device_runs() {
            let k = Kernel {
                file: "k.cu",
                targets: &[(80, "a"), (86, "b"), (90, "c"), (120, "d")],
            };
            assert_eq!(pick(k, 80), Some((80, "a")));
            assert_eq!(pick(k, 87), Some((86, "b")));
            assert_eq!(pick(k, 89), Some((86, "b")));
            assert_eq!(pick(k, 90), Some((90, "c")));
            assert_eq!(pick(k, 103), Some((90, "c")));
            assert_eq!(pick(k, 121), Some((120, "d")));
            assert_eq!(pick(k, 75), None);
        }
    }
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
