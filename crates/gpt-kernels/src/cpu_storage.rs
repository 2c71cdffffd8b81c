//! Access to CPU storage from inside `CustomOp::cpu_fwd`.
//!
//! The public wrappers make every input contiguous before applying an op, so the CPU kernels only
//! accept contiguous layouts and report anything else as an error instead of reading wrong data.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor, WithDType};

/// The contiguous element range of `storage` described by `layout`, typed as `T`.
///
/// Fails (naming `op` and `what`) when the dtype differs from `T` or the layout is strided.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [T]> {
    let data = match storage.as_slice::<T>() {
        Ok(d) => d,
        Err(_) => bail!(
            "{op}: {what} must be {:?} on CPU, got {:?} (shape {:?})",
            T::DTYPE,
            storage.dtype(),
            layout.dims()
        ),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!(
            "{op}: {what} must be contiguous, got shape {:?} stride {:?}",
            layout.dims(),
            layout.stride()
        ),
    }
}

/// The contiguous element range of `storage` (F32 or F16) as f32: borrowed when F32, widened
/// when F16 (a KV cache kept in f16).
pub(crate) fn f32_or_f16<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<std::borrow::Cow<'a, [f32]>> {
    use std::borrow::Cow;
    match storage {
        CpuStorage::F16(_) => Ok(Cow::Owned(
            contiguous_slice::<half::f16>(storage, layout, op, what)?
                .iter()
                .map(|x| x.to_f32())
                .collect(),
        )),
        _ => Ok(Cow::Borrowed(contiguous_slice::<f32>(
            storage, layout, op, what,
        )?)),
    }
}

/// Copies the contiguous CPU data of a tensor that an op keeps as a field (bias, sinks).
///
/// Copying keeps the storage read-lock short; these tensors are small (one row per expert/head).
pub(crate) fn field_to_vec<T: WithDType>(t: &Tensor, op: &str, what: &str) -> Result<Vec<T>> {
    with_cpu_slice::<T, _>(t, op, what, <[T]>::to_vec)
}

/// Runs `f` on the contiguous CPU data of `t` (borrowed under its storage's read lock): for
/// ops that read a whole tensor outside a `CustomOp` (several outputs).
pub(crate) fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    op: &str,
    what: &str,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let (guard, layout) = t.storage_and_layout();
    match &*guard {
        Storage::Cpu(cpu) => Ok(f(contiguous_slice::<T>(cpu, layout, op, what)?)),
        _ => bail!(
            "{op}: {what} lives on {:?} but the op runs on the CPU",
            t.device().location()
        ),
    }
}
