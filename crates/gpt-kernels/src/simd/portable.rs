//! Scalar kernels for any target; the reference order of the vector ones (per-block sums,
//! then the block scale).

use super::quant::QuantView;
use super::Format;
use crate::mxfp4::block::{e8m0_to_f32_half, KVALUES};

/// Block `b` of a row: its 32 weights as integers and its scale.
#[inline]
pub(super) fn block(fmt: Format, w: &[u8], b: usize) -> ([i8; 32], f32) {
    let mut q = [0i8; 32];
    match fmt {
        Format::Mxfp4 => {
            let p = &w[b * 17..(b + 1) * 17];
            for j in 0..16 {
                q[j] = KVALUES[usize::from(p[1 + j] & 15)];
                q[j + 16] = KVALUES[usize::from(p[1 + j] >> 4)];
            }
            (q, e8m0_to_f32_half(p[0]))
        }
        Format::Q8_0 => {
            let p = &w[b * 34..(b + 1) * 34];
            for (qj, &v) in q.iter_mut().zip(&p[2..34]) {
                *qj = v as i8;
            }
            (q, half::f16::from_le_bytes([p[0], p[1]]).to_f32())
        }
    }
}

/// `out (rows, m)`: every weight row of `w` against every activation row of `x (m, k)`.
pub(super) fn dot_f32(fmt: Format, w: &[u8], x: &[f32], (k, m): (usize, usize), out: &mut [f32]) {
    let rb = fmt.row_bytes(k);
    for (wr, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(m)) {
        dot_f32_row(fmt, wr, x, k, o);
    }
}

fn dot_f32_row(fmt: Format, w: &[u8], x: &[f32], k: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let xr = &x[i * k..(i + 1) * k];
        let mut acc = 0f32;
        for (b, xs) in xr.chunks_exact(32).enumerate() {
            let (q, d) = block(fmt, w, b);
            let mut s = 0f32;
            for (qj, xj) in q.iter().zip(xs) {
                s += (f32::from(*qj) * d) * xj;
            }
            acc += s;
        }
        *o = acc;
    }
}

/// `out (rows, m)`: every weight row of `w` against every quantized row of `x`.
pub(super) fn dot_q8(fmt: Format, w: &[u8], x: QuantView<'_>, out: &mut [f32]) {
    let rb = fmt.row_bytes(x.k);
    for (wr, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(x.rows)) {
        dot_q8_row(fmt, wr, x, o);
    }
}

fn dot_q8_row(fmt: Format, w: &[u8], x: QuantView<'_>, out: &mut [f32]) {
    let k = x.k;
    for (i, o) in out.iter_mut().enumerate() {
        let (xq, xd) = (&x.qs[i * k..(i + 1) * k], &x.d[i * k / 32..]);
        let mut acc = 0f32;
        for (b, xs) in xq.chunks_exact(32).enumerate() {
            let (q, d) = block(fmt, w, b);
            let s: i32 = q
                .iter()
                .zip(xs)
                .map(|(a, b)| i32::from(*a) * i32::from(*b))
                .sum();
            acc += s as f32 * (d * xd[b]);
        }
        *o = acc;
    }
}

pub(super) fn dequant(fmt: Format, w: &[u8], out: &mut [f32]) {
    for (b, o) in out.chunks_exact_mut(32).enumerate() {
        let (q, d) = block(fmt, w, b);
        for (oj, qj) in o.iter_mut().zip(q) {
            *oj = f32::from(qj) * d;
        }
    }
}
