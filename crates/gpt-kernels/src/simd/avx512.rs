//! AVX-512 (F, BW, VL, VNNI) kernels (x86-64): 16 f32 lanes for the exact dot products,
//! `vpdpbusd` for the int8 ones. Blocks are loaded by [`super::avx2::load`].
//!
//! Safety: every function here requires a CPU with the features above plus AVX2, FMA and F16C
//! (see [`super::avx2`]).

use std::arch::x86_64::*;

use super::avx2::{by_rows, load};
use super::pairs::{mx_pair_values, pair_dot, pair_dot_with, pair_weights, x_pair};
use super::quant::QuantView;
use super::Format;
use crate::mxfp4::block::MX_SCALED;

/// Q8_0 block `b`: its 32 int8 as two f32 vectors of 16 (unscaled) and its scale broadcast.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q8_f32(w: *const u8, b: usize) -> ([__m512; 2], __m512) {
    unsafe {
        // The f16 scale broadcast as loaded (`vpbroadcastw`) and converted in the vector unit:
        // the scalar conversion and its broadcast were two more instructions per block on the
        // shuffle port (the tiny model's head GEMV 23.7 → 26.9 GiB/s).
        let p = w.add(b * 34);
        let d = _mm512_cvtph_ps(_mm256_set1_epi16(p.cast::<i16>().read_unaligned()));
        let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2).cast())));
        let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18).cast())));
        ([lo, hi], d)
    }
}

/// Block `b` of a row as two f32 vectors of 16 (elements 0..16, 16..32), dequantized exactly.
/// MXFP4: the byte values index the 16-entry value table scaled by the block's power of two
/// ([`MX_SCALED`]'s row for its exponent; `vpermps` reads the low 4 bits, so the low nibble
/// needs no mask), no int → float step.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn weights_f32<const MX: bool>(w: *const u8, b: usize) -> [__m512; 2] {
    unsafe {
        if MX {
            let p = w.add(b * 17);
            let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(1).cast()));
            // The block's scaled value table, one aligned load.
            let lut = _mm512_load_ps(MX_SCALED.0.get_unchecked(usize::from(*p)).as_ptr());
            [
                _mm512_permutexvar_ps(idx, lut),
                _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), lut),
            ]
        } else {
            let ([lo, hi], d) = q8_f32(w, b);
            [_mm512_mul_ps(lo, d), _mm512_mul_ps(hi, d)]
        }
    }
}

/// Adds block `b` of the weight row times each of the `R` activation rows into `acc`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn f32_block<const MX: bool, const R: usize>(
    acc: &mut [[__m512; 2]; R],
    w: *const u8,
    x: *const f32,
    k: usize,
    b: usize,
) {
    unsafe {
        if !MX {
            // Q8_0: Σ d·q·x = d · Σ q·x, the int8 values converted once and the block's scale
            // applied once per row (one multiply fewer per 16 weights than scaling them).
            let (q, d) = q8_f32(w, b);
            for (r, a) in acc.iter_mut().enumerate() {
                let xp = x.add(r * k + b * 32);
                let t = _mm512_mul_ps(q[0], _mm512_loadu_ps(xp));
                let t = _mm512_fmadd_ps(q[1], _mm512_loadu_ps(xp.add(16)), t);
                a[0] = _mm512_fmadd_ps(t, d, a[0]);
            }
            return;
        }
        let [w0, w1] = weights_f32::<MX>(w, b);
        for (r, a) in acc.iter_mut().enumerate() {
            let xp = x.add(r * k + b * 32);
            a[0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xp), a[0]);
            a[1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp.add(16)), a[1]);
        }
    }
}

/// Adds the int8 dot of block `b` with each of the `R` quantized rows, scaled, into `acc`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q8_block<const MX: bool, const R: usize>(
    acc: &mut [__m256; R],
    w: *const u8,
    x: QuantView<'_>,
    b: usize,
) {
    unsafe {
        let k = x.k;
        let (q, d) = load::<MX>(w, b);
        for (r, a) in acc.iter_mut().enumerate() {
            let xq = _mm256_loadu_si256(x.qs.as_ptr().add(r * k + b * 32).cast());
            // Σ x·w = Σ |x| · sign(w, x): unsigned × signed bytes for vpdpbusd.
            let ax = _mm256_sign_epi8(xq, xq);
            let sw = _mm256_sign_epi8(q, xq);
            let s = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw));
            let sc = _mm256_set1_ps(d * *x.d.get_unchecked(r * k / 32 + b));
            *a = _mm256_fmadd_ps(s, sc, *a);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn f32_rows<const MX: bool, const R: usize>(
    w: *const u8,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    unsafe {
        // Even and odd blocks into separate accumulators: four FMA chains per row in flight
        // (with more than four rows, the rows' own chains are enough and one set fits the
        // registers).
        let mut even = [[_mm512_setzero_ps(); 2]; R];
        let mut odd = [[_mm512_setzero_ps(); 2]; R];
        let nb = k / 32;
        let mut b = 0;
        let bb = if MX { 17 } else { 34 };
        while b + 1 < nb {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(b * bb + PREFETCH).cast());
            f32_block::<MX, R>(&mut even, w, x, k, b);
            if R > 4 {
                f32_block::<MX, R>(&mut even, w, x, k, b + 1);
            } else {
                f32_block::<MX, R>(&mut odd, w, x, k, b + 1);
            }
            b += 2;
        }
        if b < nb {
            f32_block::<MX, R>(&mut even, w, x, k, b);
        }
        for r in 0..R {
            let (e, o) = (even[r], odd[r]);
            let s = _mm512_add_ps(_mm512_add_ps(e[0], e[1]), _mm512_add_ps(o[0], o[1]));
            *out.add(r) = _mm512_reduce_add_ps(s);
        }
    }
}

/// Two consecutive weight rows (`rb` bytes apart) against `R` activation rows, exact: rows 0
/// and 1 of `out (ptr, stride)`, columns 0..R. Each block's activations are loaded once for
/// both rows, so a pass issues two FMAs per activation load (one in [`f32_rows`]): small expert
/// groups of a prefill were bound by those loads, from L2 once `R` rows of k = 2880 outgrow L1.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn f32_rows2<const MX: bool, const R: usize>(
    w: *const u8,
    rb: usize,
    x: *const f32,
    k: usize,
    (out, m): (*mut f32, usize),
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); R]; 2];
        let bb = if MX { 17 } else { 34 };
        let w1 = w.add(rb);
        for b in 0..k / 32 {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(b * bb + PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(w1.wrapping_add(b * bb + PREFETCH).cast());
            let wa = weights_f32::<MX>(w, b);
            let wb = weights_f32::<MX>(w1, b);
            let [a0, a1] = &mut acc;
            for (r, (c0, c1)) in a0.iter_mut().zip(a1.iter_mut()).enumerate() {
                let xp = x.add(r * k + b * 32);
                let (x0, x1) = (_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)));
                *c0 = _mm512_fmadd_ps(wa[1], x1, _mm512_fmadd_ps(wa[0], x0, *c0));
                *c1 = _mm512_fmadd_ps(wb[1], x1, _mm512_fmadd_ps(wb[0], x0, *c1));
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (r, v) in a.iter().enumerate() {
                *out.add(i * m + r) = _mm512_reduce_add_ps(*v);
            }
        }
    }
}

/// Bytes ahead of the current block that the streaming kernels prefetch. The address may lie
/// past the weights (a prefetch never faults), so it is formed with `wrapping_add`: `add` out of
/// bounds would be undefined behaviour.
pub(super) const PREFETCH: usize = 4096;

/// The cache level [`f32_rows4`] prefetches into for rows over [`ROWS4_L1_MAX_BYTES`]: L2. Its
/// four interleaved row streams ran faster that way (criterion, the 65,536 × 2880 MXFP4 exact
/// decode GEMV from memory, alternating builds: 18.3 / 19.9 → 25.0 / 25.1 GiB/s; the 20B-shaped
/// decode's experts 11.1–11.9 → 8.6–9.8 ms per token), while the single-stream kernels lose with
/// it (Q8_0 exact 28.9 → 17.6, Q8_0 fast 41 → 24 GiB/s) and keep L1 (`_MM_HINT_T0`).
const ROWS4_PF_HINT: i32 = _MM_HINT_T1;

/// Rows up to this many bytes: [`f32_rows4`] prefetches into L1 as the single-stream kernels do
/// (four adjacent narrow rows are one stream). The tiny model (68-byte Q8_0 output head rows,
/// 34- to 51-byte MXFP4 expert rows) against L2 prefetch for every row width, `bench`, eight
/// alternating rounds: 64-token prefill median 18.2k → 21.6k tok/s, decode 1,134 → 1,244.
const ROWS4_L1_MAX_BYTES: usize = 512;

/// How far ahead the four-row kernels prefetch: the same row and block of a later group of four
/// rows (`rb` bytes each), at least [`PREFETCH`] bytes of the stream on. A plain
/// `PREFETCH` from each row lands in another row of the same group: for 1,530-byte rows the
/// fourth row's blocks were fetched after their use.
fn rows4_ahead(rb: usize) -> usize {
    let group = 4 * rb;
    (PREFETCH / group.max(1) + 1) * group
}

/// Weight rows up to this many bytes take the four-row kernels at one activation row.
const ROWS4_MAX_BYTES: usize = 1024;

/// MXFP4 rows up to this many bytes take the exact four-row kernel too (the experts' 2880-wide
/// rows, 1,530 bytes: the MoE decode GEMV 17.7–18.6 → 22.4–23.0 GiB/s in one alternating run of
/// the criterion bench; wide Q8_0 rows were twice as slow that way, and the fast kernels no
/// faster).
const MX_ROWS4_MAX_BYTES: usize = 2048;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn q8_rows<const MX: bool, const R: usize>(w: *const u8, x: QuantView<'_>, out: *mut f32) {
    unsafe {
        let nb = x.k / 32;
        let mut acc = [_mm512_setzero_ps(); R];
        let mut b = 0;
        let bb = if MX { 17 } else { 34 };
        while b + 1 < nb {
            // Ahead of the hardware prefetcher: the weights stream once, from DRAM.
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(b * bb + PREFETCH).cast());
            // One decode of the weight pair for every activation row.
            let wq = pair_weights::<MX>(w, b);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = pair_dot_with::<MX>(wq, x_pair::<MX>(x, r, b), *a);
            }
            b += 2;
        }
        let mut tail = [_mm256_setzero_ps(); R];
        if b < nb {
            q8_block::<MX, R>(&mut tail, w, x, b);
        }
        for r in 0..R {
            *out.add(r) = sum_with_tail(acc[r], tail[r]);
        }
    }
}

/// The sum of the 16 lanes of `a` and the 8 of `tail`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[inline]
fn sum_with_tail(a: __m512, tail: __m256) -> f32 {
    let s = _mm256_add_ps(
        _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)),
        tail,
    );
    let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// One MXFP4 weight row against one quantized activation row (its [`MxPair`]s), int8: the
/// decode GEMV of [`Precision::Fast`](crate::Precision). Per block pair the activations' order,
/// magnitudes, signs and scales come precomputed, the weights' two scales are broadcast from
/// [`MX_SCALED`] (entry 1 is the halved scale itself) and blended, so a pair costs about a dozen
/// vector instructions ([`q8_rows`] spends ~20 on the same work).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn mx_q8_row(w: *const u8, x: QuantView<'_>, out: *mut f32) {
    unsafe {
        let nb = x.k / 32;
        let zero = _mm512_setzero_si512();
        // Pair `i` of the row into `acc`.
        let pair = |i: usize, acc: __m512| {
            let (p, pr) = (w.add(i * 34), x.pairs.get_unchecked(i));
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(i * 34 + PREFETCH).cast());
            let q = mx_pair_values(p);
            // Σ x·w = Σ |x| · (w negated where x < 0): unsigned × signed for vpdpbusd.
            let sw = _mm512_mask_sub_epi8(q, pr.neg, zero, q);
            let ax = _mm512_load_si512(pr.ax.as_ptr().cast());
            let dot = _mm512_dpbusd_epi32(zero, ax, sw);
            let dw = _mm512_mask_blend_ps(
                0xf0f0,
                _mm512_set1_ps(MX_SCALED.0.get_unchecked(usize::from(*p))[1]),
                _mm512_set1_ps(MX_SCALED.0.get_unchecked(usize::from(*p.add(17)))[1]),
            );
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), dw);
            _mm512_fmadd_ps(t, _mm512_load_ps(pr.dx.as_ptr()), acc)
        };
        // Two accumulators in registers (a runtime index into an array of them sends it
        // through the stack, one store-to-load chain per pair).
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let np = nb / 2; // `x.pairs` holds them (checked in `super::dot_q8`)
        let mut i = 0;
        while i + 1 < np {
            a0 = pair(i, a0);
            a1 = pair(i + 1, a1);
            i += 2;
        }
        if i < np {
            a0 = pair(i, a0);
        }
        let mut tail = [_mm256_setzero_ps(); 1];
        if nb % 2 == 1 {
            q8_block::<true, 1>(&mut tail, w, x, nb - 1);
        }
        *out = sum_with_tail(_mm512_add_ps(a0, a1), tail[0]);
    }
}

/// The 16-lane sums of four accumulators as `[Σ a0, Σ a1, Σ a2, Σ a3]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
fn sum4(a: [__m512; 4]) -> __m128 {
    let (s0, s1, s2, s3) = (quarter(a[0]), quarter(a[1]), quarter(a[2]), quarter(a[3]));
    _mm_hadd_ps(_mm_hadd_ps(s0, s1), _mm_hadd_ps(s2, s3))
}

/// `v`'s four lanes to `out.0[0]`, `out.0[m]`, `out.0[2m]`, `out.0[3m]` (`out = (ptr, m)`).
#[inline]
unsafe fn store4(v: __m128, (out, m): (*mut f32, usize)) {
    let mut a = [0f32; 4];
    unsafe {
        _mm_storeu_ps(a.as_mut_ptr(), v);
        for (r, x) in a.into_iter().enumerate() {
            *out.add(r * m) = x;
        }
    }
}

/// The four 128-bit quarters of `v` added.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
fn quarter(v: __m512) -> __m128 {
    let h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1))
}

/// Four consecutive weight rows (`rb` bytes apart) against one activation row, exact: rows
/// 0..4 of `out (ptr, stride)`. Decode's common case; one reduction for the four and eight FMA chains.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn f32_rows4<const MX: bool>(
    w: *const u8,
    rb: usize,
    x: *const f32,
    k: usize,
    out: (*mut f32, usize),
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        let bb = if MX { 17 } else { 34 };
        let ahead = rows4_ahead(rb);
        for b in 0..k / 32 {
            let x0 = _mm512_loadu_ps(x.add(b * 32));
            let x1 = _mm512_loadu_ps(x.add(b * 32 + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let wr = w.add(r * rb);
                if b % 2 == 0 {
                    let at = wr.wrapping_add(ahead + b * bb).cast();
                    if rb <= ROWS4_L1_MAX_BYTES {
                        _mm_prefetch::<_MM_HINT_T0>(at);
                    } else {
                        _mm_prefetch::<ROWS4_PF_HINT>(at);
                    }
                }
                if MX {
                    let [w0, w1] = weights_f32::<MX>(wr, b);
                    a[0] = _mm512_fmadd_ps(w0, x0, a[0]);
                    a[1] = _mm512_fmadd_ps(w1, x1, a[1]);
                } else {
                    // Q8_0: the block's scale once per row, as in `f32_block`.
                    let (q, d) = q8_f32(wr, b);
                    let t = _mm512_fmadd_ps(q[1], x1, _mm512_mul_ps(q[0], x0));
                    a[0] = _mm512_fmadd_ps(t, d, a[0]);
                }
            }
        }
        let v = acc.map(|a| _mm512_add_ps(a[0], a[1]));
        store4(sum4(v), out);
    }
}

/// Four consecutive weight rows against one quantized activation row: rows 0..4 of `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn q8_rows4<const MX: bool>(
    w: *const u8,
    rb: usize,
    x: QuantView<'_>,
    out: (*mut f32, usize),
) {
    unsafe {
        let nb = x.k / 32;
        let bb = if MX { 17 } else { 34 };
        let ahead = rows4_ahead(rb);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut b = 0;
        while b + 1 < nb {
            let xp = x_pair::<MX>(x, 0, b);
            for (r, a) in acc.iter_mut().enumerate() {
                let wr = w.add(r * rb);
                _mm_prefetch::<_MM_HINT_T0>(wr.wrapping_add(ahead + b * bb).cast());
                *a = pair_dot::<MX>(wr, b, xp, *a);
            }
            b += 2;
        }
        let mut s = sum4(acc);
        if b < nb {
            let mut tail = [0f32; 4];
            for (r, t) in tail.iter_mut().enumerate() {
                let mut one = [_mm256_setzero_ps(); 1];
                q8_block::<MX, 1>(&mut one, w.add(r * rb), x, b);
                let h = _mm_add_ps(
                    _mm256_castps256_ps128(one[0]),
                    _mm256_extractf128_ps(one[0], 1),
                );
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                *t = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
            }
            s = _mm_add_ps(s, _mm_loadu_ps(tail.as_ptr()));
        }
        store4(s, out);
    }
}

/// `f32_rows` over `rows` weight rows of `rb` bytes; `out (rows, m)`, columns from `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn f32_slab<const MX: bool, const R: usize>(
    w: *const u8,
    (rb, rows): (usize, usize),
    x: *const f32,
    k: usize,
    (out, m): (*mut f32, usize),
) {
    unsafe {
        let mut r = 0;
        // Narrow rows: sixteen, then four at a time share one reduction (the per-row cost
        // dominates); wide rows stream one at a time (one sequential stream prefetches best),
        // but for MXFP4 rows up to MX_ROWS4_MAX_BYTES.
        let rows4_max = if MX {
            MX_ROWS4_MAX_BYTES
        } else {
            ROWS4_MAX_BYTES
        };
        if R == 1 && rb <= super::narrow::ROWS16_MAX_BYTES {
            while r + 16 <= rows {
                super::narrow::f32_rows16::<MX>(w.add(r * rb), rb, x, k, (out.add(r * m), m));
                r += 16;
            }
        }
        if R == 1 && rb <= rows4_max {
            while r + 4 <= rows {
                f32_rows4::<MX>(w.add(r * rb), rb, x, k, (out.add(r * m), m));
                r += 4;
            }
        }
        // Several activation rows: weight rows in pairs, sharing the activations' loads.
        if R > 1 {
            while r + 2 <= rows {
                f32_rows2::<MX, R>(w.add(r * rb), rb, x, k, (out.add(r * m), m));
                r += 2;
            }
        }
        for r in r..rows {
            f32_rows::<MX, R>(w.add(r * rb), x, k, out.add(r * m));
        }
    }
}

/// `q8_rows` over `rows` weight rows of `rb` bytes; `out (rows, m)`, columns from `out`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_slab<const MX: bool, const R: usize>(
    w: *const u8,
    (rb, rows): (usize, usize),
    x: QuantView<'_>,
    (out, m): (*mut f32, usize),
) {
    unsafe {
        let mut r = 0;
        // Narrow rows: sixteen, then four at a time share one reduction (the per-row cost
        // dominates); wide rows stream one at a time (one sequential stream prefetches best).
        if R == 1 && rb <= super::narrow::ROWS16_MAX_BYTES {
            while r + 16 <= rows {
                super::narrow::q8_rows16::<MX>(w.add(r * rb), rb, x, (out.add(r * m), m));
                r += 16;
            }
        }
        if R == 1 && rb <= ROWS4_MAX_BYTES {
            while r + 4 <= rows {
                q8_rows4::<MX>(w.add(r * rb), rb, x, (out.add(r * m), m));
                r += 4;
            }
        }
        for r in r..rows {
            if MX && R == 1 {
                mx_q8_row(w.add(r * rb), x, out.add(r * m));
            } else {
                q8_rows::<MX, R>(w.add(r * rb), x, out.add(r * m));
            }
        }
    }
}

pub(super) unsafe fn dot_f32(
    fmt: Format,
    w: &[u8],
    x: &[f32],
    (k, m): (usize, usize),
    out: &mut [f32],
) {
    let dims = (fmt.row_bytes(k), out.len() / m);
    // Eight activation rows per pass over the weights first: each block is decoded once for
    // eight rows (prefill's small expert groups are bound by that decoding at four).
    let m8 = m / WIDE_ROWS * WIDE_ROWS;
    unsafe {
        for i in (0..m8).step_by(WIDE_ROWS) {
            let (xi, oi) = (x.as_ptr().add(i * k), (out.as_mut_ptr().add(i), m));
            match fmt {
                Format::Mxfp4 => f32_slab::<true, WIDE_ROWS>(w.as_ptr(), dims, xi, k, oi),
                Format::Q8_0 => f32_slab::<false, WIDE_ROWS>(w.as_ptr(), dims, xi, k, oi),
            }
        }
        by_rows!(fmt, m - m8, |MX, R, j| f32_slab::<MX, R>(
            w.as_ptr(),
            dims,
            x.as_ptr().add((m8 + j) * k),
            k,
            (out.as_mut_ptr().add(m8 + j), m)
        ));
    }
}

/// Activation rows of the exact kernels' widest pass.
const WIDE_ROWS: usize = 8;

pub(super) unsafe fn dot_q8(fmt: Format, w: &[u8], x: QuantView<'_>, out: &mut [f32]) {
    let (k, m) = (x.k, x.rows);
    let dims = (fmt.row_bytes(k), out.len() / m);
    unsafe {
        by_rows!(fmt, m, |MX, R, i| {
            q8_slab::<MX, R>(
                w.as_ptr(),
                dims,
                x.rows_at(i, R),
                (out.as_mut_ptr().add(i), m),
            )
        });
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dequant_g<const MX: bool>(w: *const u8, out: &mut [f32]) {
    unsafe {
        for (b, o) in out.chunks_exact_mut(32).enumerate() {
            let [w0, w1] = weights_f32::<MX>(w, b);
            _mm512_storeu_ps(o.as_mut_ptr(), w0);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), w1);
        }
    }
}

pub(super) unsafe fn dequant(fmt: Format, w: &[u8], out: &mut [f32]) {
    unsafe {
        match fmt {
            Format::Mxfp4 => dequant_g::<true>(w.as_ptr(), out),
            Format::Q8_0 => dequant_g::<false>(w.as_ptr(), out),
        }
    }
}
