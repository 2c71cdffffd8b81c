//! AVX2 + FMA + F16C kernels (x86-64), 8 f32 lanes; also the block loader the AVX-512 kernels
//! share.
//!
//! Safety: every function here requires a CPU with AVX2, FMA and F16C; the callers in
//! [`super`] dispatch on a [`super::CpuKernels`], which holds an ISA only when it was detected.

use std::arch::x86_64::*;

use super::quant::QuantView;
use super::Format;
use crate::mxfp4::block::{e8m0_to_f32_half, KVALUES};

/// Block `b` of a row: its 32 weights as int8 in element order, and its scale. `MX`: MXFP4
/// (nibbles through [`KVALUES`] with `pshufb`, the E8M0 exponent as 2^(e−128)); else Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn load<const MX: bool>(w: *const u8, b: usize) -> (__m256i, f32) {
    unsafe {
        if MX {
            let p = w.add(b * 17);
            let raw = _mm_loadu_si128(p.add(1).cast());
            let nib = _mm_set1_epi8(0x0f);
            let lut = _mm_loadu_si128(KVALUES.as_ptr().cast());
            let lo = _mm_shuffle_epi8(lut, _mm_and_si128(raw, nib));
            let hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(raw, 4), nib));
            (_mm256_set_m128i(hi, lo), e8m0_to_f32_half(*p))
        } else {
            let p = w.add(b * 34);
            let bits = i32::from(u16::from_le_bytes([*p, *p.add(1)]));
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
            (_mm256_loadu_si256(p.add(2).cast()), d)
        }
    }
}

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 int8 of `q` as four f32 vectors of 8, each multiplied by `d`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn widen(q: __m256i, d: f32) -> [__m256; 4] {
    unsafe {
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256(q, 1);
        [
            widen8(lo, d),
            widen8(_mm_srli_si128(lo, 8), d),
            widen8(hi, d),
            widen8(_mm_srli_si128(hi, 8), d),
        ]
    }
}

/// The low 8 int8 of `v` as f32, times `d`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn widen8(v: __m128i, d: f32) -> __m256 {
    _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)),
        _mm256_set1_ps(d),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f32_rows<const MX: bool, const R: usize>(
    w: *const u8,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let bb = if MX { 17 } else { 34 };
        for b in 0..k / 32 {
            if b % 2 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.wrapping_add(b * bb + super::avx512::PREFETCH).cast(),
                );
            }
            let (q, d) = load::<MX>(w, b);
            let wf = widen(q, d);
            for (r, a) in acc.iter_mut().enumerate() {
                let xp = x.add(r * k + b * 32);
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm256_fmadd_ps(wf[j], _mm256_loadu_ps(xp.add(8 * j)), *aj);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            *out.add(r) = hsum(_mm256_add_ps(
                _mm256_add_ps(a[0], a[1]),
                _mm256_add_ps(a[2], a[3]),
            ));
        }
    }
}

/// `Σ_j x_j w_j` of one block as 8 i32 lanes: `pmaddubsw(|x|, sign(w, x))`, pairs widened.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block_dot(w: __m256i, x: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sw = _mm256_sign_epi8(w, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_rows<const MX: bool, const R: usize>(w: *const u8, x: QuantView<'_>, out: *mut f32) {
    unsafe {
        let k = x.k;
        let mut acc = [_mm256_setzero_ps(); R];
        let bb = if MX { 17 } else { 34 };
        for b in 0..k / 32 {
            if b % 2 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.wrapping_add(b * bb + super::avx512::PREFETCH).cast(),
                );
            }
            let (q, d) = load::<MX>(w, b);
            for (r, a) in acc.iter_mut().enumerate() {
                let xq = _mm256_loadu_si256(x.qs.as_ptr().add(r * k + b * 32).cast());
                let s = _mm256_cvtepi32_ps(block_dot(q, xq));
                let sc = _mm256_set1_ps(d * *x.d.get_unchecked(r * k / 32 + b));
                *a = _mm256_fmadd_ps(s, sc, *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            *out.add(r) = hsum(*a);
        }
    }
}

/// Runs `$call` with the consts `MX` (the format is MXFP4) and `R` (rows in the chunk) for
/// each chunk of up to 4 of the `$m` activation rows, `$i` its first row.
macro_rules! by_rows {
    ($fmt:expr, $m:expr, |$mx:ident, $r:ident, $i:ident| $call:expr) => {{
        let m = $m;
        let mut $i = 0;
        while $i < m {
            let rows = (m - $i).min(4);
            match ($fmt == Format::Mxfp4, rows) {
                (true, 1) => {
                    const $mx: bool = true;
                    const $r: usize = 1;
                    $call
                }
                (true, 2) => {
                    const $mx: bool = true;
                    const $r: usize = 2;
                    $call
                }
                (true, 3) => {
                    const $mx: bool = true;
                    const $r: usize = 3;
                    $call
                }
                (true, _) => {
                    const $mx: bool = true;
                    const $r: usize = 4;
                    $call
                }
                (false, 1) => {
                    const $mx: bool = false;
                    const $r: usize = 1;
                    $call
                }
                (false, 2) => {
                    const $mx: bool = false;
                    const $r: usize = 2;
                    $call
                }
                (false, 3) => {
                    const $mx: bool = false;
                    const $r: usize = 3;
                    $call
                }
                (false, _) => {
                    const $mx: bool = false;
                    const $r: usize = 4;
                    $call
                }
            }
            $i += rows;
        }
    }};
}
pub(super) use by_rows;

/// `f32_rows` over `rows` weight rows of `rb` bytes; `out (rows, m)`, columns from `out`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_slab<const MX: bool, const R: usize>(
    w: *const u8,
    (rb, rows): (usize, usize),
    x: *const f32,
    k: usize,
    (out, m): (*mut f32, usize),
) {
    unsafe {
        for r in 0..rows {
            f32_rows::<MX, R>(w.add(r * rb), x, k, out.add(r * m));
        }
    }
}

/// `q8_rows` over `rows` weight rows of `rb` bytes; `out (rows, m)`, columns from `out`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_slab<const MX: bool, const R: usize>(
    w: *const u8,
    (rb, rows): (usize, usize),
    x: QuantView<'_>,
    (out, m): (*mut f32, usize),
) {
    unsafe {
        for r in 0..rows {
            q8_rows::<MX, R>(w.add(r * rb), x, out.add(r * m));
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
    unsafe {
        by_rows!(fmt, m, |MX, R, i| f32_slab::<MX, R>(
            w.as_ptr(),
            dims,
            x.as_ptr().add(i * k),
            k,
            (out.as_mut_ptr().add(i), m)
        ));
    }
}

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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_g<const MX: bool>(w: *const u8, out: &mut [f32]) {
    unsafe {
        for (b, o) in out.chunks_exact_mut(32).enumerate() {
            let (q, d) = load::<MX>(w, b);
            for (j, v) in widen(q, d).into_iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * j), v);
            }
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
