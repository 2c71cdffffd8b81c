//! `y (m, n) = x (m, k) · W (n, k)ᵀ + b` over quantized weight rows ([`Format`]), on both cores.
//!
//! * Up to [`GEMV_MAX_M`] activation rows (decode, expert groups, short prefills): a streaming
//!   GEMV — each task takes a slab of weight rows and runs the row kernels
//!   ([`super::dot_f32`], or [`super::dot_q8`] on activations quantized once per call in
//!   [`Precision::Fast`] up to [`Q8_MAX_M`] rows) against all `m` rows, so each weight byte is
//!   read from memory once and decoded in registers once per eight activation rows.
//! * More rows (long prefills): a cache-blocked GEMM — each task dequantizes a tile of weight
//!   rows into a per-thread f32 buffer that stays in L2 and multiplies it with all activation
//!   rows with the `gemm` crate's kernel (single-threaded inside the task), in f32 at either
//!   precision.

use std::cell::RefCell;

use rayon::prelude::*;

use super::quant::QuantRows;
use super::{CpuKernels, Format, Precision};

/// Up to this many activation rows the GEMV path runs; more take the tiled GEMM. Measured on
/// 4 layers of 20B shape (2 Zen 4 cores, alternating runs): with the exact kernels' weight-row
/// pairs, the GEMV beats dequantize-and-`gemm` at the 64-token prefill's dense matrices (m = 64:
/// 112–113 → 132–134 tok/s at 64 rows against 16) and the 512-token prefill's expert groups
/// (~64 rows each: 111–116 → 128–130 tok/s at 128 against 64).
pub(crate) const GEMV_MAX_M: usize = 128;

/// Up to this many activation rows [`Precision::Fast`] quantizes them to int8 (llama.cpp's
/// CPU path); more run in f32 at either precision. One: the int8 kernels win at a single row
/// (the Q8_0 decode GEMV 24 → 34 GiB/s from memory), but from two rows on the exact kernels'
/// weight-row pairs beat them (4 layers of 20B shape, fast 64-token prefill, alternating runs:
/// 88–93 tok/s with int8 up to 16 rows, 111–115 with f32 from two rows).
pub(crate) const Q8_MAX_M: usize = 1;

/// Weight rows per GEMV task, at least.
const GEMV_ROWS: usize = 16;

/// Weight bytes per GEMV task, at least.
const GEMV_BYTES: usize = 16 << 10;

/// Work under this many bytes runs on the calling thread alone.
const PAR_MIN_BYTES: usize = 64 << 10;

/// f32 bytes of one GEMM weight tile per thread (128 rows at k = 2880); narrow matrices take
/// more rows per tile (up to 4096), so a tile is never a tiny `gemm` call.
const GEMM_TILE_BYTES: usize = 128 * 2880 * 4;

/// Weight rows of one GEMM tile, at least (smaller tiles are `gemm` calls too small to pay).
const GEMM_MIN_TILE_ROWS: usize = 16;

thread_local! {
    /// The dequantized weight tile of the GEMM path, reused across calls.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y (m, n) = x (m, k) · W (n, k)ᵀ + bias (n)`; `w` is `n` rows of `fmt.row_bytes(k)` bytes.
pub(crate) fn matmul(
    cpu: CpuKernels,
    fmt: Format,
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    w: &[u8],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    debug_assert!(x.len() == m * k && w.len() == n * fmt.row_bytes(k));
    if m == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    let rb = fmt.row_bytes(k);
    // Transposed output (n, m): each task owns the rows of its weight slab.
    let mut yt = vec![0f32; n * m];
    if m <= GEMV_MAX_M {
        let xq = (cpu.precision() == Precision::Fast && m <= Q8_MAX_M)
            .then(|| QuantRows::new(x, k, fmt));
        // At least GEMV_BYTES of weights per task: narrow rows (small k) come in longer runs;
        // a matrix under PAR_MIN_BYTES is one task (waking the other core costs more).
        let task = if n * rb < PAR_MIN_BYTES {
            n
        } else {
            (GEMV_BYTES / rb).max(GEMV_ROWS)
        };
        yt.par_chunks_mut(task * m).enumerate().for_each(|(c, yt)| {
            let r0 = c * task;
            let wr = &w[r0 * rb..(r0 + yt.len() / m) * rb];
            match &xq {
                Some(q) => super::dot_q8(cpu, fmt, wr, q.slice(0, m), yt),
                None => super::dot_f32(cpu, fmt, wr, x, k, yt),
            }
            add_bias(yt, m, r0, bias);
        });
    } else {
        // Tiles of up to GEMM_TILE_BYTES of f32 weights, but at least two per thread where
        // the matrix allows (a narrow matrix, 128 rows of the tiny model's q, would otherwise be
        // one tile on one core), and never under GEMM_MIN_TILE_ROWS rows.
        let per_thread = n
            .div_ceil(2 * rayon::current_num_threads())
            .max(GEMM_MIN_TILE_ROWS);
        let tile_rows = (GEMM_TILE_BYTES / (4 * k)).clamp(128, 4096).min(per_thread);
        yt.par_chunks_mut(tile_rows * m)
            .enumerate()
            .for_each(|(c, yt)| {
                let r0 = c * tile_rows;
                let rows = yt.len() / m;
                TILE.with_borrow_mut(|tile| {
                    tile.resize(rows * k, 0.0);
                    for (r, t) in tile.chunks_exact_mut(k).enumerate() {
                        super::dequant(cpu, fmt, &w[(r0 + r) * rb..(r0 + r + 1) * rb], t);
                    }
                    gemm_tile(&tile[..rows * k], x, (rows, m, k), yt);
                });
                add_bias(yt, m, r0, bias);
            });
    }
    if m == 1 {
        return yt; // (n, 1) and (1, n) share one memory layout
    }
    let mut y = vec![0f32; m * n];
    let transpose = |(i, yr): (usize, &mut [f32])| {
        for (j, v) in yr.iter_mut().enumerate() {
            *v = yt[j * m + i];
        }
    };
    if m * n * 4 < PAR_MIN_BYTES {
        y.chunks_mut(n).enumerate().for_each(transpose);
    } else {
        y.par_chunks_mut(n).enumerate().for_each(transpose);
    }
    y
}

/// `yt (rows, m) = tile (rows, k) · x (m, k)ᵀ`, one thread.
fn gemm_tile(tile: &[f32], x: &[f32], (rows, m, k): (usize, usize, usize), yt: &mut [f32]) {
    assert!(tile.len() >= rows * k && x.len() >= m * k && yt.len() >= rows * m);
    // SAFETY: the three buffers hold the (rows, k), (k, m) and (rows, m) matrices the strides
    // below describe (checked above); `yt` is not aliased.
    unsafe {
        gemm::gemm(
            rows,
            m,
            k,
            yt.as_mut_ptr(),
            1,          // dst column stride
            m as isize, // dst row stride
            false,
            tile.as_ptr(),
            1,
            k as isize,
            x.as_ptr(),
            k as isize, // rhs (k, m): column j is x row j
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn add_bias(yt: &mut [f32], m: usize, r0: usize, bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (r, yr) in yt.chunks_exact_mut(m).enumerate() {
            yr.iter_mut().for_each(|v| *v += b[r0 + r]);
        }
    }
}

/// Dequantizes `rows` rows of `cols` elements → f32 `(rows, cols)`.
pub(crate) fn dequant_rows(
    cpu: CpuKernels,
    fmt: Format,
    w: &[u8],
    (rows, cols): (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    if cols == 0 {
        return out;
    }
    let rb = fmt.row_bytes(cols);
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(rb))
        .with_min_len(8)
        .for_each(|(o, b)| super::dequant(cpu, fmt, b, o));
    out
}
