//! Activation rows quantized per 32-block to int8 (ggml Q8_0 numerics: `d = max|x| / 127`,
//! `q = round(x / d)`, ties to even), the input of the fast row kernels.

/// Adding and subtracting 1.5 · 2^23 rounds an f32 below 2^22 in magnitude to the nearest
/// integer, ties to even (the default rounding mode).
const ROUND: f32 = 12_582_912.0;

/// `rows` rows of `k` activations as int8 `qs (rows, k)` and f32 scales `d (rows, k/32)`.
#[derive(Debug, Default)]
pub struct QuantRows {
    qs: Vec<i8>,
    d: Vec<f32>,
    rows: usize,
    k: usize,
}

impl QuantRows {
    /// Quantizes `x (rows, k)`, `k` a multiple of 32.
    pub fn new(x: &[f32], k: usize) -> Self {
        debug_assert!(k.is_multiple_of(32) && (k == 0 || x.len().is_multiple_of(k)));
        let mut q = Self {
            qs: vec![0; x.len()],
            d: vec![0.0; x.len() / 32],
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
    pub rows: usize,
    pub k: usize,
}
