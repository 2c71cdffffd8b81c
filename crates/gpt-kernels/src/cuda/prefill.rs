//! Launchers of `kernels/prefill_gemm.cu`: the prefill's grouped GEMMs on tensor cores.
//!
//! Output slots are grouped by expert, each group reads its own rows of the input
//! ([`GroupPlan`]), and the bias (and, for the experts' gate/up pair, SwiGLU-OAI) is applied
//! in the epilogue:
//!
//! ```text
//! y[s, n] = Σ_k x[row(s), k] · W[e(s), n, k] + b[e(s), n]
//! ```
//!
//! - Dense Q8 split matrices (int8 + f32 scale per 32-block) take the input quantized to the
//!   decode kernels' two-plane 15-bit format ([`QRows`], error ≤ amax/32512 per block): every
//!   product is an exact int8 MMA.
//! - Planar MXFP4 experts (the layout the decode kernels read) take the input split into two
//!   bf16 planes ([`BRows`], error ≤ 2^-17·|x|) against weights dequantized exactly to bf16.
//!
//! Accumulation is f32 in both. `cuda::routing` builds the experts' plans on the device and sums
//! each token's expert outputs.
//! `tests/cuda_prefill.rs` checks each entry point against f64 CPU loops.

use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Device, Result, Tensor};

use super::decode::{quant_config, tensor_ptr, MODULE as DECODE_MODULE};
use super::ptx;

pub(crate) const MODULE: &str = "gpt_kernels::prefill_gemm";

/// Output slots per tile (`PG_BM`): a group is cut into tiles of at most this many slots.
pub const PG_BM: usize = 64;
/// Output columns per block of the Q8 kernel (`PG_BN`).
pub const PG_BN: usize = 64;
const PG_THREADS: u32 = 256;
/// Output columns per block of the bf16 kernels (`PG_BN2`).
const PG_BN2: usize = 128;
/// Dynamic shared memory of the bf16 kernels (`PG_A_BYTES + PG_W_BYTES(mats)`): a ring of 4
/// activation stages (2 planes × 64 rows × 40 bf16) and 2 weight stages (mats × 128 rows × 40).
const fn pg_bf16_smem(mats: usize) -> usize {
    4 * 2 * PG_BM * 40 * 2 + 2 * mats * PG_BN2 * 40 * 2
}

/// The smallest opt-in shared memory per block of the targeted GPUs (sm_86, sm_89, sm_120:
/// 99 KiB); the launch also checks the device's own limit.
const SMALLEST_SMEM_OPTIN: usize = 99 * 1024;
const _: () = assert!(pg_bf16_smem(2) <= SMALLEST_SMEM_OPTIN);

pub(crate) fn bail<T>(op: &str, msg: String) -> Result<T> {
    Err(candle_core::Error::Msg(format!("{op}: {msg}")))
}

pub(crate) fn cuda_dev<'a>(op: &str, t: &'a Tensor) -> Result<&'a candle_core::CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d),
        _ => bail(op, "tensors must be on a CUDA device".into()),
    }
}

pub(crate) fn u32_of(op: &str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).or_else(|_| bail(op, format!("{what} = {n} does not fit in u32")))
}

/// f32 rows `(rows, k)` quantized per 32-block into two int8 planes, `x ≈ d · (128·hi + lo)`
/// (`hi`, `lo` U8 `(rows, k)`, `d` F32 `(rows, k/32)`), the input of the Q8 kernel.
pub struct QRows {
    /// High plane.
    pub hi: Tensor,
    /// Low plane, in [-64, 63].
    pub lo: Tensor,
    /// Scale of each block.
    pub d: Tensor,
}

impl QRows {
    /// Quantizes `x` F32 `(rows, k)`, `k % 32 == 0`, on its CUDA device (natural order).
    pub fn quantize(x: &Tensor) -> Result<Self> {
        Self::quantize_in(x, false)
    }

    /// As [`Self::quantize`], each block's values in the decode kernels' MXFP4-facing order
    /// when `permuted` (the input of their MXFP4 dots).
    pub fn quantize_in(x: &Tensor, permuted: bool) -> Result<Self> {
        const OP: &str = "prefill quantize";
        let (rows, k) = x.dims2()?;
        if x.dtype() != DType::F32 || k % 32 != 0 {
            return bail(
                OP,
                format!(
                    "x must be F32 (rows, k % 32 == 0), got {:?} {:?}",
                    x.dtype(),
                    x.dims()
                ),
            );
        }
        let dev = cuda_dev(OP, x)?;
        let x = x.contiguous()?;
        // SAFETY: every element is written by the kernel below before it is read.
        let (hi, lo, d) = unsafe {
            (
                Tensor::empty((rows, k), DType::U8, x.device())?,
                Tensor::empty((rows, k), DType::U8, x.device())?,
                Tensor::empty((rows, k / 32), DType::F32, x.device())?,
            )
        };
        let nb = u32_of(OP, "blocks", rows * k / 32)?;
        if nb > 0 {
            let func = dev.get_or_load_custom_func(
                "dec_quant",
                DECODE_MODULE,
                ptx::for_device(dev, ptx::DECODE)?,
            )?;
            let (px, ph, pl, pd) = (
                tensor_ptr(&x)?,
                tensor_ptr(&hi)?,
                tensor_ptr(&lo)?,
                tensor_ptr(&d)?,
            );
            let pm = u32::from(permuted);
            let mut b = func.builder();
            b.arg(&px).arg(&nb).arg(&ph).arg(&pl).arg(&pd).arg(&pm);
            // SAFETY: `dec_quant(x, nblocks, hi, lo, d, perm)`; x holds nb·32 f32, the planes
            // nb·32 bytes and d nb f32.
            unsafe { b.launch(quant_config(nb)) }.w()?;
        }
        Ok(Self { hi, lo, d })
    }

    /// `(rows, k)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        self.hi.dims2()
    }
}

/// f32 rows `(rows, k)` as two bf16 planes, `x ≈ hi + lo` (`|x − hi − lo| ≤ 2^-17·|x|`), the
/// input of the bf16 MXFP4 kernels.
pub struct BRows {
    /// `bf16(x)`, BF16 `(rows, k)`.
    pub hi: Tensor,
    /// `bf16(x − hi)`, BF16 `(rows, k)`.
    pub lo: Tensor,
}

impl BRows {
    /// Splits `x` F32 `(rows, k)` on its CUDA device.
    pub fn split(x: &Tensor) -> Result<Self> {
        const OP: &str = "prefill bf16 split";
        let (rows, k) = x.dims2()?;
        if x.dtype() != DType::F32 {
            return bail(OP, format!("x must be F32, got {:?}", x.dtype()));
        }
        let dev = cuda_dev(OP, x)?;
        let x = x.contiguous()?;
        // SAFETY: every element is written by the kernel below before it is read.
        let (hi, lo) = unsafe {
            (
                Tensor::empty((rows, k), DType::BF16, x.device())?,
                Tensor::empty((rows, k), DType::BF16, x.device())?,
            )
        };
        let n = (rows * k) as u64;
        if n > 0 {
            let func = dev.get_or_load_custom_func(
                "pg_split_bf16",
                MODULE,
                ptx::for_device(dev, ptx::PREFILL_GEMM)?,
            )?;
            let (px, ph, pl) = (tensor_ptr(&x)?, tensor_ptr(&hi)?, tensor_ptr(&lo)?);
            let mut b = func.builder();
            b.arg(&px).arg(&ph).arg(&pl).arg(&n);
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(256).min(65_535) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: `pg_split_bf16(x, hi, lo, n)`; x holds n f32, the planes n bf16.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok(Self { hi, lo })
    }
}

/// The input rows of a grouped GEMM: 15-bit int8 planes (any weights) or bf16 planes (MXFP4).
#[derive(Clone, Copy)]
pub enum PgInput<'a> {
    /// For the int8 kernels.
    Q15(&'a QRows),
    /// For the bf16 MXFP4 kernels.
    Bf16(&'a BRows),
}

impl<'a> From<&'a QRows> for PgInput<'a> {
    fn from(x: &'a QRows) -> Self {
        Self::Q15(x)
    }
}

impl<'a> From<&'a BRows> for PgInput<'a> {
    fn from(x: &'a BRows) -> Self {
        Self::Bf16(x)
    }
}

impl PgInput<'_> {
    fn dims(&self) -> Result<(usize, usize)> {
        match self {
            Self::Q15(q) => q.dims(),
            Self::Bf16(b) => b.hi.dims2(),
        }
    }
    fn first(&self) -> &Tensor {
        match self {
            Self::Q15(q) => &q.hi,
            Self::Bf16(b) => &b.hi,
        }
    }
}

/// The weights of one grouped GEMM.
#[derive(Clone, Copy)]
pub enum PgWeights<'a> {
    /// Planar MXFP4 experts: `qs` U8 `(e, n, k/2)`, `e8` U8 `(e, n, k/32)`.
    Mxfp4 {
        /// Nibble bytes.
        qs: &'a Tensor,
        /// Exponent bytes.
        e8: &'a Tensor,
    },
    /// A Q8 split matrix (one "expert"): `qs` U8 (int8) `(n, k)`, `d` F32 `(n, k/32)`; with
    /// `lo` U8 (int8) `(n, k)` each weight is `d * (128 * qs + lo)`.
    Q8 {
        /// int8 weights (the high plane with `lo`).
        qs: &'a Tensor,
        /// The low plane of a two-plane (15-bit) matrix.
        lo: Option<&'a Tensor>,
        /// Scale of each 32-block.
        d: &'a Tensor,
    },
}

impl PgWeights<'_> {
    /// `(experts, n, k)` after checking the pair's dtypes and shapes.
    fn dims(&self, op: &str) -> Result<(usize, usize, usize)> {
        let (q, s, q_div, s_dt) = match self {
            Self::Mxfp4 { qs, e8 } => (qs, e8, 2, DType::U8),
            Self::Q8 { qs, d, .. } => (qs, d, 1, DType::F32),
        };
        let (e, n, kq) = match q.dims() {
            &[n, kq] => (1, n, kq),
            &[e, n, kq] => (e, n, kq),
            other => return bail(op, format!("weights of shape {other:?}")),
        };
        let k = kq * q_div;
        let want: &[usize] = if q.rank() == 2 {
            &[n, k / 32]
        } else {
            &[e, n, k / 32]
        };
        if q.dtype() != DType::U8 || s.dtype() != s_dt || s.dims() != want || k % 32 != 0 {
            return bail(
                op,
                format!(
                    "weights {:?} {:?} and scales {:?} {:?} do not describe one matrix",
                    q.dtype(),
                    q.dims(),
                    s.dtype(),
                    s.dims()
                ),
            );
        }
        if let Self::Q8 { lo: Some(lo), .. } = self {
            if lo.dtype() != DType::U8 || lo.dims() != q.dims() {
                return bail(
                    op,
                    format!(
                        "low plane {:?} {:?} against weights {:?}",
                        lo.dtype(),
                        lo.dims(),
                        q.dims()
                    ),
                );
            }
        }
        Ok((e, n, k))
    }

    fn mx(&self) -> bool {
        matches!(self, Self::Mxfp4 { .. })
    }

    fn ptrs(&self) -> Result<(u64, u64)> {
        let (q, s) = match self {
            Self::Mxfp4 { qs, e8 } => (qs, e8),
            Self::Q8 { qs, d, .. } => (qs, d),
        };
        Ok((tensor_ptr(q)?, tensor_ptr(s)?))
    }

    /// The low plane of two-plane Q8 weights.
    fn lo(&self) -> Option<&Tensor> {
        match self {
            Self::Q8 { lo, .. } => *lo,
            Self::Mxfp4 { .. } => None,
        }
    }
}

/// Which input row each output slot reads and which expert it goes through: groups of slots
/// in output order, cut into tiles of at most [`PG_BM`] slots.
pub struct GroupPlan {
    /// U32 `(tiles, 3)`: expert, first slot, end of the tile's group (`None` with no slot). A
    /// tile whose first slot equals its end is empty (device-built plans pad with them).
    pub(crate) tiles: Option<Tensor>,
    pub(crate) ntiles: usize,
    /// U32 `(slots)`: the input row of each slot; `None` reads row `s` for slot `s`.
    pub(crate) row_map: Option<Tensor>,
    pub(crate) slots: usize,
    /// Input rows the plan reads (largest row + 1).
    pub(crate) rows_read: usize,
    /// Largest expert id + 1.
    pub(crate) experts: usize,
}

impl GroupPlan {
    /// `groups`: `(expert, slots)` in output order; `row_map`: the input row of each slot
    /// (as many as the groups' slots), or `None` for slot `s` reading row `s`.
    pub fn new(groups: &[(u32, usize)], row_map: Option<&[u32]>, dev: &Device) -> Result<Self> {
        const OP: &str = "prefill group plan";
        let slots: usize = groups.iter().map(|g| g.1).sum();
        let mut tiles = Vec::new();
        let mut at = 0usize;
        for &(e, c) in groups {
            let end = u32_of(OP, "slots", at + c)?;
            for m0 in (at..at + c).step_by(PG_BM) {
                tiles.extend([e, m0 as u32, end]);
            }
            at += c;
        }
        let ntiles = tiles.len() / 3;
        if ntiles > 65_535 {
            return bail(OP, format!("{ntiles} tiles (at most 65535)"));
        }
        let rows_read = match row_map {
            Some(r) if r.len() != slots => {
                return bail(OP, format!("{} row ids for {slots} slots", r.len()))
            }
            Some(r) => r.iter().map(|&v| v as usize + 1).max().unwrap_or(0),
            None => slots,
        };
        let experts = groups.iter().map(|g| g.0 as usize + 1).max().unwrap_or(0);
        let tiles = (ntiles > 0)
            .then(|| Tensor::from_vec(tiles, (ntiles, 3), dev))
            .transpose()?;
        let row_map = row_map
            .filter(|r| !r.is_empty())
            .map(|r| Tensor::from_vec(r.to_vec(), slots, dev))
            .transpose()?;
        Ok(Self {
            tiles,
            ntiles,
            row_map,
            slots,
            rows_read,
            experts,
        })
    }

    /// One group of `rows` slots through matrix 0, slot `s` reading row `s` (a dense matmul).
    pub fn dense(rows: usize, dev: &Device) -> Result<Self> {
        Self::new(&[(0, rows)], None, dev)
    }

    /// Output rows.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The tiles as `[expert, first slot, group end]` triples (a copy to the host, for tests).
    pub fn tiles_host(&self) -> Result<Vec<u32>> {
        match &self.tiles {
            Some(t) => t.flatten_all()?.to_vec1(),
            None => Ok(Vec::new()),
        }
    }

    /// The input row of each slot (a copy to the host, for tests).
    pub fn row_map_host(&self) -> Result<Vec<u32>> {
        match &self.row_map {
            Some(r) => r.to_vec1(),
            None => Ok((0..self.slots as u32).collect()),
        }
    }
}

/// `y (slots, n) = x[row(s)] · W[e(s)]ᵀ + b[e(s)]`, `b` F32 `(e, n)` (or `(n)` for one matrix).
/// Q8 weights take int8 input planes ([`QRows`]), MXFP4 experts bf16 planes ([`BRows`]).
pub fn grouped_gemm<'a>(
    x: impl Into<PgInput<'a>>,
    plan: &GroupPlan,
    w: PgWeights,
    b: &Tensor,
) -> Result<Tensor> {
    launch("grouped_gemm", x.into(), plan, w, None, b, None, (0.0, 0.0))
}

/// SwiGLU-OAI of two grouped GEMMs (gate and up, same shapes), as [`grouped_gemm`]:
/// `y = swiglu(x·Gᵀ + bg, x·Uᵀ + bu)` with `alpha` and the clamp `limit`. MXFP4 only.
#[allow(clippy::too_many_arguments)]
pub fn grouped_gemm_swiglu<'a>(
    x: impl Into<PgInput<'a>>,
    plan: &GroupPlan,
    gate: PgWeights,
    up: PgWeights,
    bg: &Tensor,
    bu: &Tensor,
    alpha: f32,
    limit: f32,
) -> Result<Tensor> {
    launch(
        "grouped_gemm_swiglu",
        x.into(),
        plan,
        gate,
        Some(up),
        bg,
        Some(bu),
        (alpha, limit),
    )
}

#[allow(clippy::too_many_arguments)]
fn launch(
    op: &str,
    x: PgInput,
    plan: &GroupPlan,
    w0: PgWeights,
    w1: Option<PgWeights>,
    b0: &Tensor,
    b1: Option<&Tensor>,
    (alpha, limit): (f32, f32),
) -> Result<Tensor> {
    let (rows, kx) = x.dims()?;
    let (e, n, k) = w0.dims(op)?;
    if let Some(w1) = &w1 {
        if w1.dims(op)? != (e, n, k) || w1.mx() != w0.mx() {
            return bail(op, "gate and up weights differ in shape or format".into());
        }
        if !w0.mx() {
            return bail(op, "the SwiGLU pair must be MXFP4 experts".into());
        }
    }
    if k != kx || n % 2 != 0 {
        return bail(
            op,
            format!("x (rows {rows}, k {kx}) against weights (e {e}, n {n}, k {k})"),
        );
    }
    let name = match (x, w0.mx(), w1.is_some()) {
        (PgInput::Bf16(_), true, true) => "pg_mxb_swiglu",
        (PgInput::Bf16(_), true, false) => "pg_mxb",
        (PgInput::Q15(_), false, false) if w0.lo().is_some() => "pg_q8w2",
        (PgInput::Q15(_), false, false) => "pg_q8",
        _ => {
            return bail(
                op,
                "int8 input planes go with Q8 weights, bf16 planes with MXFP4 experts".into(),
            )
        }
    };
    if plan.rows_read > rows || plan.experts > e {
        return bail(
            op,
            format!(
                "the plan reads {} rows of {rows} and {} experts of {e}",
                plan.rows_read, plan.experts
            ),
        );
    }
    for b in std::iter::once(b0).chain(b1) {
        let ok = b.dtype() == DType::F32 && (b.dims() == [e, n] || (e == 1 && b.dims() == [n]));
        if !ok {
            return bail(
                op,
                format!("bias {:?} {:?}, want F32 ({e}, {n})", b.dtype(), b.dims()),
            );
        }
    }
    let dev = cuda_dev(op, x.first())?;
    let Some(tiles) = &plan.tiles else {
        return Tensor::zeros((0, n), DType::F32, x.first().device());
    };
    // SAFETY: every (slot, column) is written by exactly one block's epilogue.
    let y = unsafe { Tensor::empty((plan.slots, n), DType::F32, x.first().device())? };
    let func = dev
        .get_or_load_custom_func(name, MODULE, ptx::for_device(dev, ptx::PREFILL_GEMM)?)?
        .into_cuda_function();
    // Columns per block and dynamic shared memory of the kernel.
    let (bn, smem) = match x {
        PgInput::Q15(_) => (PG_BN, 0),
        PgInput::Bf16(_) => (PG_BN2, pg_bf16_smem(if w1.is_some() { 2 } else { 1 })),
    };
    if smem > 0 {
        // Above 48 KiB a kernel must opt in to dynamic shared memory, up to the device's limit
        // (99 KiB on sm_86/89/120, 163 KiB on sm_80, 227 KiB on sm_90/100).
        let limit = ptx::device_info(dev)?.smem_optin;
        if smem > limit {
            return bail(
                op,
                format!(
                    "{name} needs {smem} B of shared memory per block; this device allows {limit}"
                ),
            );
        }
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .w()?;
    }
    let (b0c, b1c) = (b0.contiguous()?, b1.map(|b| b.contiguous()).transpose()?);
    let (w0q, w0s) = w0.ptrs()?;
    let (w1q, w1s) = match &w1 {
        Some(w) => w.ptrs()?,
        None => (0, 0),
    };
    let row_map = plan
        .row_map
        .as_ref()
        .map(tensor_ptr)
        .transpose()?
        .unwrap_or(0);
    let (nu, ku) = (u32_of(op, "n", n)?, u32_of(op, "k", k)?);
    let args: Vec<u64> = match x {
        // pg_q8(w2)(xh, xl, xd, row_map, tiles, wq, wl, ws, bias, y, n, k)
        PgInput::Q15(q) => vec![
            tensor_ptr(&q.hi)?,
            tensor_ptr(&q.lo)?,
            tensor_ptr(&q.d)?,
            row_map,
            tensor_ptr(tiles)?,
            w0q,
            w0.lo().map(tensor_ptr).transpose()?.unwrap_or(0),
            w0s,
            tensor_ptr(&b0c)?,
            tensor_ptr(&y)?,
        ],
        // pg_mxb(_swiglu)(xh, xl, row_map, tiles, w0, s0, w1, s1, b0, b1, y, n, k, alpha, limit)
        PgInput::Bf16(b) => vec![
            tensor_ptr(&b.hi)?,
            tensor_ptr(&b.lo)?,
            row_map,
            tensor_ptr(tiles)?,
            w0q,
            w0s,
            w1q,
            w1s,
            tensor_ptr(&b0c)?,
            b1c.as_ref().map(tensor_ptr).transpose()?.unwrap_or(0),
            tensor_ptr(&y)?,
        ],
    };
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    for a in &args {
        b.arg(a);
    }
    b.arg(&nu).arg(&ku);
    if matches!(x, PgInput::Bf16(_)) {
        b.arg(&alpha).arg(&limit);
    }
    let cfg = LaunchConfig {
        grid_dim: (
            u32_of(op, "column blocks", n.div_ceil(bn))?,
            plan.ntiles as u32,
            1,
        ),
        block_dim: (PG_THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    // SAFETY: the arguments follow the kernel's parameter list (above) in order and type; the
    // shapes were checked above (x rows cover every row the plan reads, the weights every
    // expert it names, y has `slots` rows of n).
    unsafe { b.launch(cfg) }.w()?;
    Ok(y)
}
