//! AVX-512 kernels for narrow weight rows at one activation row, exact and int8: sixteen rows
//! per pass and one transposing reduction of their sixteen accumulators into one vector of
//! sixteen sums.
//!
//! The four-row kernel spends about as many instructions reducing and storing as multiplying
//! when a row is two or three blocks (the tiny model's 64-wide output head: 201,088 rows of 68
//! bytes, `perf annotate` put ~55% of its samples on the reduction and the scalar stores). Here
//! the reduction costs ~3 instructions a row and the sums leave in one store.
//!
//! Safety: as [`super::avx512`].

use std::arch::x86_64::*;

use super::avx512::{q8_block, q8_f32, weights_f32, PREFETCH};
use super::pairs::{pair_dot, x_pair};
use super::quant::QuantView;

/// Rows up to this many bytes take [`f32_rows16`] (sixteen adjacent rows are one stream of at
/// most 8 KiB, prefetched into L1 as the four-row kernel does narrow rows).
pub(super) const ROWS16_MAX_BYTES: usize = 512;

/// Lane `r` of the result is the sum of the sixteen lanes of `v[r]`.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn reduce16(v: [__m512; 16]) -> __m512 {
    // (A loop, not `array::from_fn`: a closure does not inherit the target features.)
    // Pairs (2i, 2i + 1): 256-bit halves added, source 2i in quarters 0..2, 2i + 1 in 2..4.
    let mut s = [_mm512_setzero_ps(); 8];
    for (i, s) in s.iter_mut().enumerate() {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        *s = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xee>(a, b),
        );
    }
    // Pairs of those: quarter j holds four partial sums of source 4i + j.
    let mut t = [_mm512_setzero_ps(); 4];
    for (i, t) in t.iter_mut().enumerate() {
        let (a, b) = (s[2 * i], s[2 * i + 1]);
        *t = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xdd>(a, b),
        );
    }
    // In each quarter q: [t0, t1, t0, t1] partials of sources q and 4 + q, then of 8 + q, 12 + q.
    let u0 = _mm512_add_ps(
        _mm512_unpacklo_ps(t[0], t[1]),
        _mm512_unpackhi_ps(t[0], t[1]),
    );
    let u1 = _mm512_add_ps(
        _mm512_unpacklo_ps(t[2], t[3]),
        _mm512_unpackhi_ps(t[2], t[3]),
    );
    // Quarter q, lane j: the sum of source 4j + q.
    let w = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(u0, u1),
        _mm512_shuffle_ps::<0xee>(u0, u1),
    );
    // Lane 4q + j → lane 4j + q.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(order, w)
}

/// Sixteen consecutive weight rows (`rb` bytes apart, `rb <= ROWS16_MAX_BYTES`) against one
/// activation row `x (k)`, exact: rows 0..16 of `out (ptr, stride)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn f32_rows16<const MX: bool>(
    w: *const u8,
    rb: usize,
    x: *const f32,
    k: usize,
    (out, m): (*mut f32, usize),
) {
    unsafe {
        prefetch_group(w, 16 * rb);
        let mut acc = [_mm512_setzero_ps(); 16];
        for b in 0..k / 32 {
            let x0 = _mm512_loadu_ps(x.add(b * 32));
            let x1 = _mm512_loadu_ps(x.add(b * 32 + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let wr = w.add(r * rb);
                if MX {
                    let [w0, w1] = weights_f32::<MX>(wr, b);
                    *a = _mm512_fmadd_ps(w1, x1, _mm512_fmadd_ps(w0, x0, *a));
                } else {
                    // Q8_0: the block's scale once per row (Σ d·q·x = d · Σ q·x).
                    let ([q0, q1], d) = q8_f32(wr, b);
                    let t = _mm512_fmadd_ps(q1, x1, _mm512_mul_ps(q0, x0));
                    *a = _mm512_fmadd_ps(t, d, *a);
                }
            }
        }
        store16(reduce16(acc), (out, m));
    }
}

/// The sixteen sums to rows 0..16 of `out (ptr, stride)`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store16(sums: __m512, (out, m): (*mut f32, usize)) {
    unsafe {
        if m == 1 {
            _mm512_storeu_ps(out, sums);
        } else {
            let mut s = [0f32; 16];
            _mm512_storeu_ps(s.as_mut_ptr(), sums);
            for (r, v) in s.into_iter().enumerate() {
                *out.add(r * m) = v;
            }
        }
    }
}

/// Prefetches one group of sixteen rows (`group` bytes) of the stream `ahead` bytes on.
#[inline(always)]
unsafe fn prefetch_group(w: *const u8, group: usize) {
    let ahead = (PREFETCH / group + 1) * group;
    let mut off = 0;
    while off < group {
        // SAFETY: a prefetch never faults; the address is formed with `wrapping_add`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(ahead + off).cast()) };
        off += 64;
    }
}

/// Sixteen consecutive weight rows against one int8-quantized activation row (fast
/// precision), as the four-row `q8_rows4`: block pairs through `vpdpbusd`, an odd last block
/// through `q8_block`. Rows 0..16 of `out (ptr, stride)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q8_rows16<const MX: bool>(
    w: *const u8,
    rb: usize,
    x: QuantView<'_>,
    out: (*mut f32, usize),
) {
    unsafe {
        prefetch_group(w, 16 * rb);
        let nb = x.k / 32;
        let mut acc = [_mm512_setzero_ps(); 16];
        let mut b = 0;
        while b + 1 < nb {
            let xp = x_pair::<MX>(x, 0, b);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = pair_dot::<MX>(w.add(r * rb), b, xp, *a);
            }
            b += 2;
        }
        if b < nb {
            // An odd last block: its 8-lane sums join each row's accumulator.
            for (r, a) in acc.iter_mut().enumerate() {
                let mut one = [_mm256_setzero_ps(); 1];
                q8_block::<MX, 1>(&mut one, w.add(r * rb), x, b);
                *a = _mm512_add_ps(*a, _mm512_zextps256_ps512(one[0]));
            }
        }
        store16(reduce16(acc), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce16_puts_each_rows_sum_in_its_lane() {
        if !std::arch::is_x86_feature_detected!("avx512f")
            || !std::arch::is_x86_feature_detected!("avx512dq")
        {
            return;
        }
        // Distinct per row and lane, exact in f32: row r's lanes sum to 16·(1000r) + 120.
        let rows: [[f32; 16]; 16] =
            std::array::from_fn(|r| std::array::from_fn(|l| (1000 * r + l) as f32));
        // SAFETY: AVX-512 F and DQ were detected above.
        let got = unsafe {
            let v = rows.map(|r| _mm512_loadu_ps(r.as_ptr()));
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), reduce16(v));
            out
        };
        let want: [f32; 16] = std::array::from_fn(|r| rows[r].iter().sum());
        assert_eq!(got, want);
    }
}
