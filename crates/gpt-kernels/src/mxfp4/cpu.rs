//! CPU loops for MXFP4 dequantization and `x · Wᵀ + b` (shared with the MoE op).

use rayon::prelude::*;

use super::block::{decode_row, dot_block, row_bytes, BLOCK_BYTES, BLOCK_ELEMS};
use crate::dot::dot;

/// Weight rows handled by one rayon task: enough work per task, and the decoded rows
/// (`ROWS_PER_TASK · k` f32, 184 KiB for k = 2880) stay in L2 while every activation row visits them.
const ROWS_PER_TASK: usize = 16;

/// Up to this many activation rows, the matmul decodes blocks on the fly inside the dot product
/// instead of dequantizing whole weight rows first (decode-time GEMV).
const FUSED_MAX_M: usize = 2;

/// Dequantizes `rows` rows of `cols` elements: `blocks` (rows, cols/32·17) → (rows, cols) f32.
pub(crate) fn dequant(blocks: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    if cols == 0 {
        return out;
    }
    let rb = row_bytes(cols);
    out.par_chunks_mut(cols)
        .zip(blocks.par_chunks(rb))
        .with_min_len(8)
        .for_each(|(o, b)| decode_row(b, o));
    out
}

/// `y (m, n) = x (m, k) · W (n, k)ᵀ + bias (n)`, with `w` the MXFP4 bytes (n, k/32·17).
///
/// W is dequantized exactly; products and sums are f32. Work is split over chunks of weight
/// rows, so every weight row is decoded once per call and reused for all `m` activation rows.
pub(crate) fn matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    if m == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    let rb = row_bytes(k);
    // Transposed output (n, m): each task owns a contiguous slab of ROWS_PER_TASK weight rows.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(chunk, yt)| {
            let r0 = chunk * ROWS_PER_TASK;
            let rows = yt.len() / m;
            let wrows = &w[r0 * rb..(r0 + rows) * rb];
            if m <= FUSED_MAX_M {
                gemv_rows(x, m, k, wrows, yt);
            } else {
                gemm_rows(x, m, k, wrows, yt);
            }
            if let Some(b) = bias {
                for (r, yr) in yt.chunks_exact_mut(m).enumerate() {
                    yr.iter_mut().for_each(|v| *v += b[r0 + r]);
                }
            }
        });
    if m == 1 {
        return yt; // (n, 1) and (1, n) share one memory layout
    }
    let mut y = vec![0f32; m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(i, yr)| {
        for (j, v) in yr.iter_mut().enumerate() {
            *v = yt[j * m + i];
        }
    });
    y
}

/// `yt (rows, m) = W_rows · xᵀ`, decoding every block inside the dot product (small `m`).
fn gemv_rows(x: &[f32], m: usize, k: usize, wrows: &[u8], yt: &mut [f32]) {
    let rb = row_bytes(k);
    for (wr, yr) in wrows.chunks_exact(rb).zip(yt.chunks_exact_mut(m)) {
        for (i, y) in yr.iter_mut().enumerate() {
            let xr = &x[i * k..(i + 1) * k];
            *y = wr
                .chunks_exact(BLOCK_BYTES)
                .zip(xr.chunks_exact(BLOCK_ELEMS))
                .map(|(b, xs)| dot_block(b, xs))
                .sum();
        }
    }
}

/// `yt (rows, m) = W_rows · xᵀ`, dequantizing the rows once into a buffer (prefill, large `m`).
fn gemm_rows(x: &[f32], m: usize, k: usize, wrows: &[u8], yt: &mut [f32]) {
    let rb = row_bytes(k);
    let rows = wrows.len() / rb.max(1);
    let mut wbuf = vec![0f32; rows * k];
    if k > 0 {
        for (wr, buf) in wrows.chunks_exact(rb).zip(wbuf.chunks_exact_mut(k)) {
            decode_row(wr, buf);
        }
    }
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for r in 0..rows {
            yt[r * m + i] = dot(xr, &wbuf[r * k..(r + 1) * k]);
        }
    }
}
