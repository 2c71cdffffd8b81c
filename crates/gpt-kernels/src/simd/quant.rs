//! Activation rows quantized per 32-block to int8 (ggml Q8_0 numerics: `d = max|x| / 127`,
//! `q = round(x / d)`, ties to even), the input of the fast row kernels.

/// Adding and subtracting 1.5 · 2^23 rounds an f32 below 2^22 in magnitude to the nearest
/// integer, ties to even (the default rounding mode).
const ROUND: f32 = 12_582_912.0;

use super::Format;

/// `rows` rows of `k` activations as int8 `qs (rows, k)` and f32 scales `d (rows, k/32)`, and
/// for MXFP4 weights the same values laid out for the AVX-512 kernel (`MxPair`
/// `(rows, k/64)`).
#[derive(Debug, Default)]
pub struct QuantRows {
    qs: Vec<i8>,
    d: Vec<f32>,
    pairs: Vec<MxPair>,
    rows: usize,
    k: usize,
}

/// Two consecutive 32-blocks `b`, `b + 1` of a quantized row in the lane order of the AVX-512
/// MXFP4 kernel, whose nibble lookup yields 128-bit lanes `[b 0..16, b+1 0..16, b 16..32,
/// b+1 16..32]` (elements of each block): the int8 magnitudes, the sign bits (bit `i` for byte
/// `i`) and each i32 lane's activation scale. Built once per row, so the kernel spends no
/// instruction per weight row on the activations' order, signs or scales.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct MxPair {
    pub ax: [u8; 64],
    pub dx: [f32; 16],
    pub neg: u64,
}

impl MxPair {
    /// The pair of blocks `qs (64)` with scales `d (2)`.
    fn new(qs: &[i8], d: &[f32]) -> Self {
        let mut p = Self {
            ax: [0; 64],
            dx: [0.0; 16],
            neg: 0,
        };
        for (lane, (blk, half)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
            for j in 0..16 {
                let (v, i) = (qs[blk * 32 + half * 16 + j], lane * 16 + j);
                p.ax[i] = v.unsigned_abs();
                p.neg |= u64::from(v < 0) << i;
            }
            p.dx[lane * 4..lane * 4 + 4].fill(d[blk]);
        }
        p
    }
}

impl QuantRows {
    /// Quantizes `x (rows, k)`, `k` a multiple of 32, for weights of `fmt`.
    pub fn new(x: &[f32], k: usize, fmt: Format) -> Self {
        debug_assert!(k.is_multiple_of(32) && (k == 0 || x.len().is_multiple_of(k)));
        let mut q = Self {
            qs: vec![0; x.len()],
            d: vec![0.0; x.len() / 32],
            pairs: Vec::new(),
            rows: x.len().checked_div(k).unwrap_or(0),
            k,
        };
        for ((xs, qs), d) in x
            .chunks_exact(32)
            .zip(q.qs.chunks_exact_mut(32))
            .zip(q.d.iter_mut())
        {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (q, v) in qs.iter_mut().zip(xs) {
                // Round half to even by the 1.5·2^23 shift (|v · inv| <= 127): no libm call.
                *q = ((v * inv + ROUND) - ROUND) as i8;
            }
            *d = scale;
        }
        if fmt != Format::Mxfp4 {
            return q;
        }
        let np = k / 64;
        q.pairs = (0..q.rows * np)
            .map(|i| {
                let b = (i / np) * (k / 32) + (i % np) * 2; // first block of the pair
                MxPair::new(&q.qs[b * 32..b * 32 + 64], &q.d[b..b + 2])
            })
            .collect();
        q
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `r` as (int8 `(k)`, scales `(k/32)`).
    pub fn row(&self, r: usize) -> (&[i8], &[f32]) {
        let k = self.k;
        (
            &self.qs[r * k..(r + 1) * k],
            &self.d[r * k / 32..(r + 1) * k / 32],
        )
    }

    /// Rows `r0..r0 + n` as a view sharing the buffers.
    pub(crate) fn slice(&self, r0: usize, n: usize) -> QuantView<'_> {
        let k = self.k;
        QuantView {
            qs: &self.qs[r0 * k..(r0 + n) * k],
            d: &self.d[r0 * k / 32..(r0 + n) * k / 32],
            pairs: self
                .pairs
                .get(r0 * (k / 64)..(r0 + n) * (k / 64))
                .unwrap_or(&[]),
            rows: n,
            k,
        }
    }
}

/// Borrowed rows of a [`QuantRows`].
#[derive(Clone, Copy)]
pub(crate) struct QuantView<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    /// `(rows, k/64)` for MXFP4 weights, else empty.
    pub pairs: &'a [MxPair],
    pub rows: usize,
    pub k: usize,
}

impl<'a> QuantView<'a> {
    /// The `rows` rows from row `i` on.
    pub(crate) fn rows_at(self, i: usize, rows: usize) -> Self {
        let k = self.k;
        Self {
            qs: &self.qs[i * k..],
            d: &self.d[i * k / 32..],
            pairs: self.pairs.get(i * (k / 64)..).unwrap_or(&[]),
            rows,
            k,
        }
    }
}
