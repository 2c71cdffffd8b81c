//! The fast (int8) AVX-512 kernels' block pairs: two blocks of a weight row as 64 int8 in one
//! register with their scales, the activations in the same lane order, and one `vpdpbusd`
//! product of the two into 16 f32 lanes.
//!
//! Safety: as [`super::avx512`].

use std::arch::x86_64::*;

use super::quant::QuantView;
use crate::mxfp4::block::{e8m0_to_f32_half, KVALUES};

/// Blocks `b` and `b + 1` as 64 int8 in one register and their two scales `[d_b, d_b+1]`.
/// Q8_0: block b's 32 values, then block b+1's. MXFP4: 128-bit lanes `[b lo, b+1 lo, b hi,
/// b+1 hi]` (elements 0..16 and 16..32 of each block), the order [`pair_x`] gives activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn pair_weights<const MX: bool>(w: *const u8, b: usize) -> (__m512i, __m128) {
    unsafe {
        if MX {
            let p = w.add(b * 17);
            let q = mx_pair_values(p);
            let d = _mm_setr_ps(e8m0_to_f32_half(*p), e8m0_to_f32_half(*p.add(17)), 0.0, 0.0);
            (q, d)
        } else {
            let p = w.add(b * 34);
            let q = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256(p.add(2).cast())),
                _mm256_loadu_si256(p.add(36).cast()),
                1,
            );
            let h = _mm_insert_epi16(
                _mm_cvtsi32_si128(i32::from(u16::from_le_bytes([*p, *p.add(1)]))),
                i32::from(u16::from_le_bytes([*p.add(34), *p.add(35)])),
                1,
            );
            (q, _mm_cvtph_ps(h))
        }
    }
}

/// The MXFP4 block pair at `p` (blocks `b`, `b + 1`: 17 bytes each) as 64 int8 values (twice
/// the e2m1 values, [`KVALUES`]), 128-bit lanes `[b lo, b+1 lo, b hi, b+1 hi]`. The lanes
/// `[b, b+1, b, b+1]` come from two broadcast loads and a blend, the upper two are shifted by a
/// nibble (a per-element shift count): one shuffle-unit instruction (the table lookup) where
/// two inserts and a lookup were (the 2880-wide fast MXFP4 GEMV cache-resident 20.7–21.6 →
/// 22.1–22.7 GiB/s on the Zen 4, criterion, three alternating runs).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn mx_pair_values(p: *const u8) -> __m512i {
    unsafe {
        let both = _mm512_mask_blend_epi32(
            0xf0f0,
            _mm512_broadcast_i32x4(_mm_loadu_si128(p.add(1).cast())),
            _mm512_broadcast_i32x4(_mm_loadu_si128(p.add(18).cast())),
        );
        let shift = _mm512_setr_epi64(0, 0, 0, 0, NIBBLE4, NIBBLE4, NIBBLE4, NIBBLE4);
        let idx = _mm512_and_si512(_mm512_srlv_epi16(both, shift), _mm512_set1_epi8(0x0f));
        let lut = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES.as_ptr().cast()));
        _mm512_shuffle_epi8(lut, idx)
    }
}

/// Four 16-bit shift counts of 4 in one 64-bit element.
const NIBBLE4: i64 = 0x0004_0004_0004_0004;

/// 64 activations of blocks `b`, `b + 1` in the lane order of [`pair_weights`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[inline]
unsafe fn pair_x<const MX: bool>(x: *const i8) -> __m512i {
    unsafe {
        let v = _mm512_loadu_si512(x.cast());
        if MX {
            _mm512_shuffle_i64x2(v, v, 0b11_01_10_00)
        } else {
            v
        }
    }
}

/// Activation blocks `b`, `b + 1` of a quantized row prepared once for every weight row of a
/// pass: their magnitudes, sign mask and two scales.
#[derive(Clone, Copy)]
pub(super) struct XPair {
    ax: __m512i,
    neg: __mmask64,
    dx: __m128,
}

/// [`XPair`] of blocks `b`, `b + 1` of row `r` of `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn x_pair<const MX: bool>(x: QuantView<'_>, r: usize, b: usize) -> XPair {
    unsafe {
        let xv = pair_x::<MX>(x.qs.as_ptr().add(r * x.k + b * 32));
        XPair {
            ax: _mm512_abs_epi8(xv),
            neg: _mm512_movepi8_mask(xv),
            dx: _mm_castpd_ps(_mm_load_sd(x.d.as_ptr().add(r * (x.k / 32) + b).cast())),
        }
    }
}

/// `acc` plus weight row `wr`'s blocks `b`, `b + 1` against `xp`, in 16 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn pair_dot<const MX: bool>(
    wr: *const u8,
    b: usize,
    xp: XPair,
    acc: __m512,
) -> __m512 {
    // SAFETY: as this function's (the same target features).
    unsafe { pair_dot_with::<MX>(pair_weights::<MX>(wr, b), xp, acc) }
}

/// `acc` plus a weight block pair `(q, d)` as [`pair_weights`] gives it against `xp`, in 16
/// lanes (Σ x·w = Σ |x| · (w with x's sign): unsigned × signed bytes for `vpdpbusd`, then each
/// lane's two scales). For one weight pair against several activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[inline]
pub(super) fn pair_dot_with<const MX: bool>(
    (q, d): (__m512i, __m128),
    xp: XPair,
    acc: __m512,
) -> __m512 {
    // The two blocks' scales to the lanes their dot products land in.
    let lanes = if MX {
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1)
    } else {
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
    };
    let sw = _mm512_mask_sub_epi8(q, xp.neg, _mm512_setzero_si512(), q);
    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), xp.ax, sw);
    let scale = _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(_mm_mul_ps(d, xp.dx)));
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc)
}
