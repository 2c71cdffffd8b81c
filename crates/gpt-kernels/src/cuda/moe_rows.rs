//! The MoE experts for few slots per expert — a batched decode step's B tokens × top-k — over
//! the grouped plan [`route`](super::routing::route) builds, reading each expert's weights once
//! for all of its slots. The tensor-core GEMMs of [`super::prefill`] pad each expert's group to
//! a 64-slot tile of MMAs, which costs the same whether a group has 1 slot or 64. Two kernel
//! pairs ([`RowsKernel`]), same contract and quantization:
//! - `dec_moe_rows_*` (`kernels/decode.cu`): each warp reads one row of its tile's expert into
//!   registers and multiplies it with every slot by the decode kernels' `dp4a` MXFP4 dots (the
//!   row's nibbles decoded again per slot);
//! - `mm_moe_*` (`kernels/moe_mma.cu`): int8 MMAs with the weights as the 16-row side and the
//!   slots as the 8-column side, each 32-block of 16 rows decoded once for 8 slots per MMA.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Result, Tensor};

use super::decode::{tensor_ptr, DEC_WARPS, MODULE};
use super::prefill::{bail, cuda_dev, u32_of, PgWeights, QRows};
use super::ptx;
use super::routing::Routing;

/// Largest inner dimension (`d` and the experts' `ff`) the row kernels take (`DEC_ROWS_MAXB`
/// blocks of 32 on 16 lanes).
pub const MOE_ROWS_MAX_K: usize = 4096;

/// Warps per block of the MMA kernels (`MM_WARPS`), 16 weight rows each.
const MM_WARPS: u32 = 4;

/// Which kernels [`moe_rows`] launches (chosen once, with the model's device form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowsKernel {
    /// `dec_moe_rows_gate_up` / `dec_moe_rows_down`: `dp4a` dots, one warp per weight row.
    #[default]
    Dp4a,
    /// `mm_moe_gate_up` / `mm_moe_down`: int8 MMAs, 16 weight rows × 8 slots each.
    Mma,
}

impl RowsKernel {
    /// `GPTOSS_MOE_MMA=1` selects [`RowsKernel::Mma`] (opt-in until measured on a GPU).
    pub fn from_env() -> Self {
        if std::env::var("GPTOSS_MOE_MMA").is_ok_and(|v| v == "1") {
            Self::Mma
        } else {
            Self::Dp4a
        }
    }

    /// `(gate/up kernel, down kernel, module key, PTX)`.
    fn kernels(self) -> (&'static str, &'static str, &'static str, ptx::Kernel) {
        match self {
            Self::Dp4a => (
                "dec_moe_rows_gate_up",
                "dec_moe_rows_down",
                MODULE,
                ptx::DECODE,
            ),
            Self::Mma => (
                "mm_moe_gate_up",
                "mm_moe_down",
                "gpt_kernels::moe_mma",
                ptx::MOE_MMA,
            ),
        }
    }

    /// Weight rows per block and threads per block.
    fn block(self) -> (u32, u32) {
        match self {
            Self::Dp4a => (DEC_WARPS, 32 * DEC_WARPS),
            Self::Mma => (16 * MM_WARPS, 32 * MM_WARPS),
        }
    }
}

fn mxfp4<'a>(w: &PgWeights<'a>, what: &str) -> Result<(&'a Tensor, &'a Tensor)> {
    match w {
        PgWeights::Mxfp4 { qs, e8 } => Ok((qs, e8)),
        PgWeights::Q8 { .. } => bail("moe_rows", format!("{what} must be planar MXFP4")),
    }
}

/// The chosen experts' outputs `(slots, d)`, slot order of `r` (before the routing-weighted
/// combine, [`super::routing::combine_slots`]): `down_e(swiglu(gate_e m_t + gb_e, up_e m_t +
/// ub_e)) + db_e` for each slot's expert `e` and token `t`, activations quantized as the decode
/// kernels quantize them. `m` F32 `(t, d)`; gate, up planar MXFP4 `(e, ff, d)`, down `(e, d,
/// ff)`, biases `(e, ff)`, `(e, ff)`, `(e, d)`; `d, ff <= MOE_ROWS_MAX_K`.
#[allow(clippy::too_many_arguments)]
pub fn moe_rows(
    m: &Tensor,
    r: &Routing,
    (gate, up, down): (PgWeights, PgWeights, PgWeights),
    (gb, ub, db): (&Tensor, &Tensor, &Tensor),
    (alpha, limit): (f32, f32),
    kernel: RowsKernel,
) -> Result<Tensor> {
    const OP: &str = "moe_rows";
    let (t, d) = m.dims2()?;
    let ((gq, ge), (uq, ue), (dq, de)) = (
        mxfp4(&gate, "gate")?,
        mxfp4(&up, "up")?,
        mxfp4(&down, "down")?,
    );
    let (e, ff, half) = gq.dims3()?;
    let ok = m.dtype() == DType::F32
        && half * 2 == d
        && d % 32 == 0
        && ff % 32 == 0
        && d <= MOE_ROWS_MAX_K
        && ff <= MOE_ROWS_MAX_K
        && uq.dims() == gq.dims()
        && ge.dims() == [e, ff, d / 32]
        && ue.dims() == ge.dims()
        && dq.dims() == [e, d, ff / 2]
        && de.dims() == [e, d, ff / 32]
        && gb.dims() == [e, ff]
        && ub.dims() == [e, ff]
        && db.dims() == [e, d]
        && r.up.rows_read <= t
        && r.up.experts <= e;
    if !ok {
        return bail(
            OP,
            format!(
                "m {:?} {:?}, gate {:?}/{:?}, down {:?}/{:?}, biases {:?} {:?} {:?}, plan over {} rows and {} experts (d, ff <= {MOE_ROWS_MAX_K}, multiples of 32)",
                m.dtype(),
                m.dims(),
                gq.dims(),
                ge.dims(),
                dq.dims(),
                de.dims(),
                gb.dims(),
                ub.dims(),
                db.dims(),
                r.up.rows_read,
                r.up.experts
            ),
        );
    }
    let slots = r.up.slots;
    let (Some(tiles), Some(row_map)) = (&r.up.tiles, &r.up.row_map) else {
        return Tensor::zeros((slots, d), DType::F32, m.device());
    };
    let dev = cuda_dev(OP, m)?;
    let ntiles = u32_of(OP, "tiles", r.up.ntiles)?;
    let xq = QRows::quantize_in(m, true)?;
    // SAFETY: every slot of every non-empty tile is written; the plan covers all slots.
    let act = unsafe { Tensor::empty((slots, ff), DType::F32, m.device())? };
    let (gb, ub, db) = (gb.contiguous()?, ub.contiguous()?, db.contiguous()?);
    let (n_ff, k_d) = (u32_of(OP, "ff", ff)?, u32_of(OP, "d", d)?);
    let (gate_up_fn, down_fn, module, code) = kernel.kernels();
    let (rows_per_block, threads) = kernel.block();
    let grid = |n: u32| LaunchConfig {
        grid_dim: (n.div_ceil(rows_per_block), ntiles, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    {
        let f = dev.get_or_load_custom_func(gate_up_fn, module, ptx::for_device(dev, code)?)?;
        let p = [
            tensor_ptr(gq)?,
            tensor_ptr(ge)?,
            tensor_ptr(&gb)?,
            tensor_ptr(uq)?,
            tensor_ptr(ue)?,
            tensor_ptr(&ub)?,
            tensor_ptr(&xq.hi)?,
            tensor_ptr(&xq.lo)?,
            tensor_ptr(&xq.d)?,
            tensor_ptr(row_map)?,
            tensor_ptr(tiles)?,
        ];
        let out = tensor_ptr(&act)?;
        let mut b = f.builder();
        for a in &p {
            b.arg(a);
        }
        b.arg(&n_ff).arg(&k_d).arg(&alpha).arg(&limit).arg(&out);
        // SAFETY: the arguments follow the parameter list that `dec_moe_rows_gate_up` and
        // `mm_moe_gate_up` share; the shapes were checked above and the plan's rows and
        // experts are within m and the weights.
        unsafe { b.launch(grid(n_ff)) }.w()?;
    }
    let aq = QRows::quantize_in(&act, true)?;
    // SAFETY: as for `act`.
    let y = unsafe { Tensor::empty((slots, d), DType::F32, m.device())? };
    {
        let f = dev.get_or_load_custom_func(down_fn, module, ptx::for_device(dev, code)?)?;
        let p = [
            tensor_ptr(dq)?,
            tensor_ptr(de)?,
            tensor_ptr(&db)?,
            tensor_ptr(&aq.hi)?,
            tensor_ptr(&aq.lo)?,
            tensor_ptr(&aq.d)?,
            tensor_ptr(tiles)?,
        ];
        let out = tensor_ptr(&y)?;
        let mut b = f.builder();
        for a in &p {
            b.arg(a);
        }
        b.arg(&k_d).arg(&n_ff).arg(&out);
        // SAFETY: the arguments follow the parameter list that `dec_moe_rows_down` and
        // `mm_moe_down` share (n = d, k = ff); act holds `slots` rows of ff.
        unsafe { b.launch(grid(k_d)) }.w()?;
    }
    Ok(y)
}
