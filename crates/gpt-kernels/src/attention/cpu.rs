//! CPU loop for attention with sinks: one online-softmax (flash-style) pass per (batch, query,
//! head) row, f32 throughout.

use rayon::prelude::*;

use crate::dot::{axpy, dot};

/// Shapes of one attention call: q (b, t, hq, d), k and v (b, s, hkv, d).
#[derive(Debug)]
pub(crate) struct AttnDims {
    pub b: usize,
    pub t: usize,
    pub s: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
}

/// Scalars of one attention call (see [`super::attention_with_sinks`]).
pub(crate) struct AttnParams {
    pub scale: f32,
    pub window: Option<usize>,
    pub q_offset: usize,
    pub kv_offset: usize,
}

/// The half-open range of key indices `j` visible to the query at absolute position `p`, for
/// `s` keys whose absolute positions are `kv_offset + j`: causal `kv_offset + j <= p` and, with
/// a window `w`, `p - (kv_offset + j) < w`.
pub(crate) fn visible_keys(
    p: usize,
    s: usize,
    window: Option<usize>,
    kv_offset: usize,
) -> (usize, usize) {
    let end = if p >= kv_offset {
        s.min(p - kv_offset + 1)
    } else {
        0
    };
    let start = window.map_or(0, |w| (p + 1).saturating_sub(w).saturating_sub(kv_offset));
    (start.min(end), end)
}

/// Keys scored, exponentiated and accumulated together: one max update per block and a loop
/// over plain arrays that the compiler vectorizes.
const KEY_BLOCK: usize = 64;

/// Calls whose query tiles would hold at least this many rows (queries × query heads per KV
/// head) run [`super::tiled`]; fewer (decode) run one row at a time here, where a tile would
/// not repay transposing each key block.
pub(crate) const TILED_MIN_ROWS: usize = 16;

/// Attention with per-head sink logits → (b, t, hq, d).
///
/// `q` (b, t, hq, d), `k`/`v` (b, s, hkv, d), `sinks` (hq), all contiguous f32. Prefill-sized
/// calls take the query tiles of [`super::tiled`]; otherwise each (batch, query, head) row is
/// an online softmax over blocks of [`KEY_BLOCK`] keys; on AVX2 machines the row runs compiled
/// for AVX2 + FMA.
pub(crate) fn attention(
    dims: &AttnDims,
    params: &AttnParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    sinks: &[f32],
) -> Vec<f32> {
    let AttnDims { b, t, hq, d, .. } = *dims;
    let mut out = vec![0f32; b * t * hq * d];
    if d == 0 || out.is_empty() {
        return out;
    }
    let io = Io { q, k, v, sinks };
    if dims.t * (dims.hq / dims.hkv.max(1)) >= TILED_MIN_ROWS {
        super::tiled::attention(dims, params, &io, &mut out);
        return out;
    }
    let avx2 =
        cfg!(target_arch = "x86_64") && crate::simd::Isa::detected() >= crate::simd::Isa::Avx2;
    out.par_chunks_mut(d)
        .with_min_len(4)
        .enumerate()
        .for_each(|(row, o)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: AVX2 and FMA were detected.
                return unsafe { attend_row_avx2(dims, params, &io, row, o) };
            }
            let _ = avx2;
            attend_row(dims, params, &io, row, o, Portable)
        });
    out
}

/// The inputs of one call.
pub(crate) struct Io<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub sinks: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_row_avx2(
    dims: &AttnDims,
    params: &AttnParams,
    io: &Io<'_>,
    row: usize,
    o: &mut [f32],
) {
    // SAFETY: this function runs only where AVX2 and FMA were detected.
    attend_row(dims, params, io, row, o, Avx2)
}

/// The two inner loops of a row: a key's score and the probability-weighted sum of values.
trait RowKernels: Copy {
    /// `Σ a·b`.
    fn dot(self, a: &[f32], b: &[f32]) -> f32;
    /// `o += Σ_j p[j] · v[offs[j]..][..o.len()]`.
    fn pv(self, p: &[f32], offs: &[usize], v: &[f32], o: &mut [f32]);
}

/// Plain loops (vectorized by the compiler for the build's baseline).
#[derive(Clone, Copy)]
struct Portable;

impl RowKernels for Portable {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }
    #[inline(always)]
    fn pv(self, p: &[f32], offs: &[usize], v: &[f32], o: &mut [f32]) {
        let d = o.len();
        for (&pj, &off) in p.iter().zip(offs) {
            axpy(pj, &v[off..off + d], o);
        }
    }
}

/// AVX2 + FMA intrinsics; constructed only where they were detected.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl RowKernels for Avx2 {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: `Avx2` exists only where AVX2 and FMA were detected.
        unsafe { dot_avx2(a, b) }
    }
    #[inline(always)]
    fn pv(self, p: &[f32], offs: &[usize], v: &[f32], o: &mut [f32]) {
        let d = o.len();
        assert!(offs.iter().all(|&off| off + d <= v.len()) && p.len() == offs.len());
        // SAFETY: as in `dot`; every row read is in bounds (checked above).
        unsafe { pv_avx2(p, offs, v, o) }
    }
}

/// `o += Σ_j p[j] · v[offs[j]..]`, eight output columns at a time held in a register across
/// all the block's keys.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pv_avx2(p: &[f32], offs: &[usize], v: &[f32], o: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = o.len();
    let mut c = 0;
    // SAFETY: the caller checked every `offs[j] + d <= v.len()`.
    unsafe {
        while c + 8 <= d {
            let mut acc = _mm256_loadu_ps(o.as_ptr().add(c));
            for (&pj, &off) in p.iter().zip(offs) {
                let vr = _mm256_loadu_ps(v.as_ptr().add(off + c));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(pj), vr, acc);
            }
            _mm256_storeu_ps(o.as_mut_ptr().add(c), acc);
            c += 8;
        }
    }
    for (&pj, &off) in p.iter().zip(offs) {
        for j in c..d {
            o[j] += pj * v[off + j];
        }
    }
}

/// `Σ a·b` with FMA, four 8-lane accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 values below `n`.
    unsafe {
        while i + 32 <= n {
            for (j, aj) in acc.iter_mut().enumerate() {
                let o = i + 8 * j;
                *aj = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *aj);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let mut s = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// One output row `o (d)`: `row = (bb·t + i)·hq + h`, the same flat index as in q.
#[inline(always)]
fn attend_row(
    dims: &AttnDims,
    params: &AttnParams,
    io: &Io<'_>,
    row: usize,
    o: &mut [f32],
    k: impl RowKernels,
) {
    let AttnDims {
        t, s, hq, hkv, d, ..
    } = *dims;
    let h = row % hq;
    let i = (row / hq) % t;
    let bb = row / (hq * t);
    let g = h / (hq / hkv);
    let qr = &io.q[row * d..(row + 1) * d];
    let p = params.q_offset + i;
    let (j0, j1) = visible_keys(p, s, params.window, params.kv_offset);
    // Running max starts at the sink logit, whose exp(S − m) contributes to the sum.
    let mut m = io.sinks[h];
    let mut l = 1f32;
    let mut e = [0f32; KEY_BLOCK];
    let mut start = j0;
    while start < j1 {
        let n = KEY_BLOCK.min(j1 - start);
        let key = |j: usize| ((bb * s + j) * hkv + g) * d;
        let mut bm = f32::NEG_INFINITY;
        for (jj, ej) in e[..n].iter_mut().enumerate() {
            let off = key(start + jj);
            *ej = params.scale * k.dot(qr, &io.k[off..off + d]);
            bm = bm.max(*ej);
        }
        if bm > m {
            let c = exp_neg(m - bm);
            l *= c;
            o.iter_mut().for_each(|x| *x *= c);
            m = bm;
        }
        for ej in &mut e[..n] {
            *ej = exp_neg(*ej - m);
        }
        l += e[..n].iter().sum::<f32>();
        let mut offs = [0usize; KEY_BLOCK];
        for (jj, of) in offs[..n].iter_mut().enumerate() {
            *of = key(start + jj);
        }
        k.pv(&e[..n], &offs[..n], io.v, o);
        start += n;
    }
    let inv = 1.0 / l;
    o.iter_mut().for_each(|x| *x *= inv);
}

/// `exp(x)` for `x <= 0` (Cephes `expf`: `x = n ln 2 + r`, |r| <= ln 2 / 2, a degree-6
/// polynomial in r, then 2^n by the exponent bits; relative error ~2e-7), clamped at
/// exp(−87.3) ≈ 1.2e-38, the smallest normal range. Branch-free, so loops of it vectorize.
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: rounds to the nearest integer
    let x = x.max(-87.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::{attend_row, attention, exp_neg, visible_keys, AttnDims, AttnParams, Io};

    /// Several key blocks (s = 150 > 2 · 64), a window, GQA and sinks; the dispatched path
    /// (AVX2 here) and the portable row both against an f64 softmax.
    #[test]
    fn blocked_rows_equal_an_f64_softmax() {
        let (t, s, hq, hkv, d) = (3usize, 150usize, 4usize, 2usize, 16usize);
        let f = |i: usize, m: f32| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * m;
        let q: Vec<f32> = (0..t * hq * d).map(|i| f(i, 2.0)).collect();
        let k: Vec<f32> = (0..s * hkv * d).map(|i| f(i + 13, 2.0)).collect();
        let v: Vec<f32> = (0..s * hkv * d).map(|i| f(i + 29, 1.0)).collect();
        let sinks = vec![0.5f32, -1.0, 2.0, 0.0];
        let dims = AttnDims {
            b: 1,
            t,
            s,
            hq,
            hkv,
            d,
        };
        for window in [None, Some(100)] {
            let params = AttnParams {
                scale: 0.25,
                window,
                q_offset: s - t,
                kv_offset: 0,
            };
            let got = attention(&dims, &params, &q, &k, &v, &sinks);
            let io = Io {
                q: &q,
                k: &k,
                v: &v,
                sinks: &sinks,
            };
            for row in 0..t * hq {
                let (h, i) = (row % hq, row / hq);
                let g = h / (hq / hkv);
                let (j0, j1) = visible_keys(s - t + i, s, window, 0);
                let sc: Vec<f64> = (j0..j1)
                    .map(|j| {
                        let kr = &k[(j * hkv + g) * d..][..d];
                        0.25 * q[row * d..][..d]
                            .iter()
                            .zip(kr)
                            .map(|(a, b)| f64::from(a * b))
                            .sum::<f64>()
                    })
                    .collect();
                let mx = sc.iter().copied().fold(f64::from(sinks[h]), f64::max);
                let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum::<f64>()
                    + (f64::from(sinks[h]) - mx).exp();
                let mut portable = vec![0f32; d];
                attend_row(&dims, &params, &io, row, &mut portable, super::Portable);
                for c in 0..d {
                    let want: f64 = (j0..j1)
                        .zip(&sc)
                        .map(|(j, x)| (x - mx).exp() / z * f64::from(v[(j * hkv + g) * d + c]))
                        .sum();
                    for (name, y) in [("dispatched", got[row * d + c]), ("portable", portable[c])] {
                        assert!(
                            (f64::from(y) - want).abs() < 2e-6,
                            "{name} {window:?} row {row} col {c}: {y} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exp_neg_is_within_a_few_ulp_of_exp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = f64::from(x).exp();
            let got = f64::from(exp_neg(x));
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-1e30) >= 0.0 && exp_neg(-1e30) < 1e-37);
    }

    #[test]
    fn visible_keys_matches_brute_force() {
        for s in 0..7 {
            for kv_offset in 0..5 {
                for p in 0..12 {
                    for window in [None, Some(1), Some(2), Some(3), Some(20)] {
                        let want: Vec<usize> = (0..s)
                            .filter(|&j| {
                                let pk = kv_offset + j;
                                pk <= p && window.is_none_or(|w| p - pk < w)
                            })
                            .collect();
                        let (a, b) = visible_keys(p, s, window, kv_offset);
                        let got: Vec<usize> = (a..b).collect();
                        assert_eq!(got, want, "p={p} s={s} kv_offset={kv_offset} w={window:?}");
                    }
                }
            }
        }
    }
}
