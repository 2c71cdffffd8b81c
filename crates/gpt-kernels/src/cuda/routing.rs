//! The MoE's routing on the device for the prefill's grouped GEMMs (`kernels/prefill_gemm.cu`):
//! [`route`] turns the router's choices into the expert plans without a copy to the host (the
//! host-built [`GroupPlan::new`] needs the ids on the host, a synchronization per layer), and
//! [`combine_slots`] sums each token's expert outputs with its routing weights.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Result, Tensor};

use super::decode::tensor_ptr;
use super::prefill::{bail, cuda_dev, u32_of, GroupPlan, MODULE, PG_BM};
use super::ptx;

/// Most experts [`route`] takes (`PG_MAX_EXP`).
pub const ROUTE_MAX_EXPERTS: usize = 256;

/// The plans of one MoE layer's grouped GEMMs.
pub struct Routing {
    /// Slots grouped by expert, each reading its token's row: the gate/up GEMM.
    pub up: GroupPlan,
    /// The same groups, slot `s` reading row `s` (of the gate/up output): the down GEMM.
    pub down: GroupPlan,
    /// U32 `(t·k)`: the slot of each (token, choice), for [`combine_slots`].
    pub at: Tensor,
}

/// Groups the router's `ids` U32 `(t, k)` (each `< n_exp`, as the router kernel makes them)
/// by expert on their CUDA device: slots in expert order (within an expert in no set order:
/// each slot's output depends only on its own row), tiles of [`PG_BM`] slots, padded with empty
/// tiles to the bound `⌈t·k / PG_BM⌉ + min(n_exp, t·k)`.
pub fn route(ids: &Tensor, n_exp: usize) -> Result<Routing> {
    const OP: &str = "route";
    let (t, k) = ids.dims2()?;
    if ids.dtype() != DType::U32 || n_exp == 0 || n_exp > ROUTE_MAX_EXPERTS {
        return bail(
            OP,
            format!(
                "ids must be U32 (t, k) over 1..={ROUTE_MAX_EXPERTS} experts, got {:?} over {n_exp}",
                ids.dtype()
            ),
        );
    }
    let dev = cuda_dev(OP, ids)?;
    let slots = t * k;
    let max_tiles = slots.div_ceil(PG_BM) + n_exp.min(slots);
    if slots == 0 {
        let at = Tensor::zeros(0, DType::U32, ids.device())?;
        let empty = || GroupPlan::new(&[], None, ids.device());
        return Ok(Routing {
            up: empty()?,
            down: empty()?,
            at,
        });
    }
    if max_tiles > 65_535 {
        return bail(OP, format!("{max_tiles} tiles (at most 65535)"));
    }
    let ids = ids.contiguous()?;
    // SAFETY: the kernel writes every element of the three outputs.
    let (rows, at, tiles) = unsafe {
        (
            Tensor::empty(slots, DType::U32, ids.device())?,
            Tensor::empty(slots, DType::U32, ids.device())?,
            Tensor::empty((max_tiles, 3), DType::U32, ids.device())?,
        )
    };
    let func =
        dev.get_or_load_custom_func("pg_route", MODULE, ptx::for_device(dev, ptx::PREFILL_GEMM)?)?;
    let ptrs = [
        tensor_ptr(&ids)?,
        tensor_ptr(&rows)?,
        tensor_ptr(&at)?,
        tensor_ptr(&tiles)?,
    ];
    let dims = [
        u32_of(OP, "slots", slots)?,
        u32_of(OP, "k", k)?,
        u32_of(OP, "experts", n_exp)?,
        u32_of(OP, "tiles", max_tiles)?,
    ];
    let mut b = func.builder();
    for p in &ptrs {
        b.arg(p);
    }
    for d in &dims {
        b.arg(d);
    }
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: `pg_route(ids, rows, at, tiles, slots, top_k, n_exp, max_tiles)`: ids holds
    // `slots` ids below n_exp <= PG_MAX_EXP, rows and at `slots` u32, tiles `max_tiles * 3`.
    unsafe { b.launch(cfg) }.w()?;
    let up = GroupPlan {
        tiles: Some(tiles.clone()),
        ntiles: max_tiles,
        row_map: Some(rows),
        slots,
        rows_read: t,
        experts: n_exp,
    };
    let down = GroupPlan {
        tiles: Some(tiles),
        ntiles: max_tiles,
        row_map: None,
        slots,
        rows_read: slots,
        experts: n_exp,
    };
    Ok(Routing { up, down, at })
}

/// The routing-weighted sum of each token's expert outputs: `out[t] = Σ_c w[t, c] · y[at[t·k + c]]`
/// for `y` F32 `(slots, d)` (rows in a grouped GEMM's slot order), `at` U32 `(t·k)` and `w`
/// F32 `(t, k)`; summed in choice order. Returns `(t, d)`. Every `at` must be `< slots`.
pub fn combine_slots(y: &Tensor, at: &Tensor, w: &Tensor) -> Result<Tensor> {
    const OP: &str = "combine_slots";
    let (slots, d) = y.dims2()?;
    let (t, k) = w.dims2()?;
    if y.dtype() != DType::F32 || w.dtype() != DType::F32 || at.dtype() != DType::U32 {
        return bail(OP, "y and w must be F32, at U32".into());
    }
    if at.dims() != [t * k] || (t * k > 0 && slots == 0) {
        return bail(
            OP,
            format!(
                "at {:?} for w {:?} and y {:?}",
                at.dims(),
                w.dims(),
                y.dims()
            ),
        );
    }
    let dev = cuda_dev(OP, y)?;
    if t == 0 || d == 0 {
        return Tensor::zeros((t, d), DType::F32, y.device());
    }
    let (y, at, w) = (y.contiguous()?, at.contiguous()?, w.contiguous()?);
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { Tensor::empty((t, d), DType::F32, y.device())? };
    let func = dev.get_or_load_custom_func(
        "pg_combine",
        MODULE,
        ptx::for_device(dev, ptx::PREFILL_GEMM)?,
    )?;
    let ptrs = [
        tensor_ptr(&y)?,
        tensor_ptr(&at)?,
        tensor_ptr(&w)?,
        tensor_ptr(&out)?,
    ];
    let (ku, du) = (u32_of(OP, "k", k)?, u32_of(OP, "d", d)?);
    let mut b = func.builder();
    for p in &ptrs {
        b.arg(p);
    }
    b.arg(&ku).arg(&du);
    let cfg = LaunchConfig {
        grid_dim: (du.div_ceil(256), u32_of(OP, "tokens", t)?, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: `pg_combine(y, at, w, out, top_k, d)` with the shapes checked above; the kernel
    // reads rows `at[..]` of y, which the caller guarantees are below `slots`.
    unsafe { b.launch(cfg) }.w()?;
    Ok(out)
}
