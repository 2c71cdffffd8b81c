//! Launchers of `kernels/prefill_gemm.cu`: the prefill's grouped GEMMs on int8 tensor cores.
//!
//! One kernel serves the MoE experts (planar MXFP4, the layout the decode kernels read) and the
//! dense Q8 matrices (split int8 + f32 scales): output slots are grouped by expert, each group
//! reads its own rows of the input ([`GroupPlan`]), and the bias (and, for the experts'
//! gate/up pair, SwiGLU-OAI) is applied in the epilogue. Inputs are f32 rows quantized to the
//! decode kernels' two-plane 15-bit format ([`QRows`]), so every product is an exact int8
//! MMA; the only rounding is that quantization (error ≤ amax/32512 per 32-block) and the f32
//! accumulation.
//!
//! ```text
//! y[s, n] = Σ_k x[row(s), k] · W[e(s), n, k] + b[e(s), n]
//! ```
//!
//! `tests/cuda_prefill.rs` checks each entry point against f64 CPU loops.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Device, Result, Tensor};

use super::decode::{tensor_ptr, MODULE as DECODE_MODULE};
use super::ptx;

const MODULE: &str = "gpt_kernels::prefill_gemm";

/// Output slots per tile (`PG_BM`): a group is cut into tiles of at most this many slots.
pub const PG_BM: usize = 64;
/// Output columns per block (`PG_BN`).
pub const PG_BN: usize = 64;
const PG_THREADS: u32 = 256;

fn bail<T>(op: &str, msg: String) -> Result<T> {
    Err(candle_core::Error::Msg(format!("{op}: {msg}")))
}

fn cuda_dev<'a>(op: &str, t: &'a Tensor) -> Result<&'a candle_core::CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d),
        _ => bail(op, "tensors must be on a CUDA device".into()),
    }
}

fn u32_of(op: &str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).or_else(|_| bail(op, format!("{what} = {n} does not fit in u32")))
}

/// f32 rows `(rows, k)` quantized per 32-block into two int8 planes, `x ≈ d · (128·hi + lo)`
/// (`hi`, `lo` U8 `(rows, k)`, `d` F32 `(rows, k/32)`), permuted within each block when they
/// feed MXFP4 weights.
pub struct QRows {
    /// High plane.
    pub hi: Tensor,
    /// Low plane, in [-64, 63].
    pub lo: Tensor,
    /// Scale of each block.
    pub d: Tensor,
    /// Whether the blocks are in the MXFP4-facing order.
    pub perm: bool,
}

impl QRows {
    /// Quantizes `x` F32 `(rows, k)`, `k % 32 == 0`, on its CUDA device.
    pub fn quantize(x: &Tensor, perm: bool) -> Result<Self> {
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
            let func = dev.get_or_load_custom_func("dec_quant", DECODE_MODULE, ptx::DECODE)?;
            let (px, ph, pl, pd) = (
                tensor_ptr(&x)?,
                tensor_ptr(&hi)?,
                tensor_ptr(&lo)?,
                tensor_ptr(&d)?,
            );
            let pm = perm as u32;
            let mut b = func.builder();
            b.arg(&px).arg(&nb).arg(&ph).arg(&pl).arg(&pd).arg(&pm);
            let cfg = LaunchConfig {
                grid_dim: (nb.div_ceil(8), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: `dec_quant(x, nblocks, hi, lo, d, perm)`; x holds nb·32 f32, the planes
            // nb·32 bytes and d nb f32.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok(Self { hi, lo, d, perm })
    }

    /// `(rows, k)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        self.hi.dims2()
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
    /// A Q8 split matrix (one "expert"): `qs` U8 (int8) `(n, k)`, `d` F32 `(n, k/32)`.
    Q8 {
        /// int8 weights.
        qs: &'a Tensor,
        /// Scale of each 32-block.
        d: &'a Tensor,
    },
}

impl PgWeights<'_> {
    /// `(experts, n, k)` after checking the pair's dtypes and shapes.
    fn dims(&self, op: &str) -> Result<(usize, usize, usize)> {
        let (q, s, q_div, s_dt) = match self {
            Self::Mxfp4 { qs, e8 } => (qs, e8, 2, DType::U8),
            Self::Q8 { qs, d } => (qs, d, 1, DType::F32),
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
        Ok((e, n, k))
    }

    fn mx(&self) -> bool {
        matches!(self, Self::Mxfp4 { .. })
    }

    fn ptrs(&self) -> Result<(u64, u64)> {
        let (q, s) = match self {
            Self::Mxfp4 { qs, e8 } => (qs, e8),
            Self::Q8 { qs, d } => (qs, d),
        };
        Ok((tensor_ptr(q)?, tensor_ptr(s)?))
    }
}

/// Which input row each output slot reads and which expert it goes through: groups of slots
/// in output order, cut into tiles of at most [`PG_BM`] slots.
pub struct GroupPlan {
    /// U32 `(tiles, 3)`: expert, first slot, end of the tile's group (`None` with no slot).
    tiles: Option<Tensor>,
    ntiles: usize,
    /// U32 `(slots)`: the input row of each slot; `None` reads row `s` for slot `s`.
    row_map: Option<Tensor>,
    slots: usize,
    /// Input rows the plan reads (largest row + 1).
    rows_read: usize,
    /// Largest expert id + 1.
    experts: usize,
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
}

/// `y (slots, n) = x[row(s)] · W[e(s)]ᵀ + b[e(s)]`, `b` F32 `(e, n)` (or `(n)` for one matrix).
/// MXFP4 weights need `x` quantized with `perm`, Q8 weights without.
pub fn grouped_gemm(x: &QRows, plan: &GroupPlan, w: PgWeights, b: &Tensor) -> Result<Tensor> {
    launch("grouped_gemm", x, plan, w, None, b, None, (0.0, 0.0))
}

/// SwiGLU-OAI of two grouped GEMMs (gate and up, same shapes), as [`grouped_gemm`]:
/// `y = swiglu(x·Gᵀ + bg, x·Uᵀ + bu)` with `alpha` and the clamp `limit`. MXFP4 only.
#[allow(clippy::too_many_arguments)]
pub fn grouped_gemm_swiglu(
    x: &QRows,
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
        x,
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
    x: &QRows,
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
    if x.perm != w0.mx() {
        return bail(
            op,
            format!(
                "x quantized {} for {} weights",
                if x.perm {
                    "permuted"
                } else {
                    "in natural order"
                },
                if w0.mx() { "MXFP4" } else { "Q8" }
            ),
        );
    }
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
    let dev = cuda_dev(op, &x.hi)?;
    let Some(tiles) = &plan.tiles else {
        return Tensor::zeros((0, n), DType::F32, x.hi.device());
    };
    // SAFETY: every (slot, column) is written by exactly one block's epilogue.
    let y = unsafe { Tensor::empty((plan.slots, n), DType::F32, x.hi.device())? };
    let name = match (w0.mx(), w1.is_some()) {
        (true, true) => "pg_mx_swiglu",
        (true, false) => "pg_mx",
        (false, _) => "pg_q8",
    };
    let func = dev.get_or_load_custom_func(name, MODULE, ptx::PREFILL_GEMM)?;
    let (b0c, b1c) = (b0.contiguous()?, b1.map(|b| b.contiguous()).transpose()?);
    let (w0q, w0s) = w0.ptrs()?;
    let (w1q, w1s) = match &w1 {
        Some(w) => w.ptrs()?,
        None => (0, 0),
    };
    let args: [u64; 12] = [
        tensor_ptr(&x.hi)?,
        tensor_ptr(&x.lo)?,
        tensor_ptr(&x.d)?,
        plan.row_map
            .as_ref()
            .map(tensor_ptr)
            .transpose()?
            .unwrap_or(0),
        tensor_ptr(tiles)?,
        w0q,
        w0s,
        w1q,
        w1s,
        tensor_ptr(&b0c)?,
        b1c.as_ref().map(tensor_ptr).transpose()?.unwrap_or(0),
        tensor_ptr(&y)?,
    ];
    let (nu, ku) = (u32_of(op, "n", n)?, u32_of(op, "k", k)?);
    let mut b = func.builder();
    for a in &args {
        b.arg(a);
    }
    b.arg(&nu).arg(&ku).arg(&alpha).arg(&limit);
    let cfg = LaunchConfig {
        grid_dim: (
            u32_of(op, "column blocks", n.div_ceil(PG_BN))?,
            plan.ntiles as u32,
            1,
        ),
        block_dim: (PG_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments follow PG_ARGS in order and type; the shapes were checked above
    // (x rows cover every row the plan reads, the weights every expert it names, y has
    // `slots` rows of n).
    unsafe { b.launch(cfg) }.w()?;
    Ok(y)
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
    let func = dev.get_or_load_custom_func("pg_combine", MODULE, ptx::PREFILL_GEMM)?;
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
