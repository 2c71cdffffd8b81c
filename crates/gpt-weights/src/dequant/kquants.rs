//! The 256-element "K-quant" super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (spec §5).
//!
//! Each super-block has sub-blocks of 16 or 32 elements with their own small integer scale
//! (and for Q2_K/Q4_K/Q5_K a min), multiplied by f16 super-scales `d` / `dmin`. The value is
//! computed as gguf-py does it: `(d * sc) * q - (dmin * m)` or `(d * sc) * q`, every product
//! rounded to `f32` separately.

use super::f16_le;

/// Q2_K (84 bytes): `u8 scales[16]; u8 qs[64]; f16 d; f16 dmin`.
///
/// Element `e = 128c + 32s + l` (c in 0..2, s in 0..4, l in 0..32) is bits `2s..2s+2` of
/// `qs[32c + l]`; scale byte `scales[e / 16]` holds the scale (low nibble) and min (high).
#[inline(always)]
pub(super) fn q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let d = f16_le(b[80], b[81]);
    let dmin = f16_le(b[82], b[83]);
    for c in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let e = 128 * c + 32 * s + l;
                let sc = scales[e / 16];
                let dl = d * (sc & 15) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = (qs[32 * c + l] >> (2 * s)) & 3;
                y[e] = dl * q as f32 - ml;
            }
        }
    }
}

/// Q3_K (110 bytes): `u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d`.
///
/// 16 signed 6-bit scales: low 4 bits from `scales[i]` (i < 8) or `scales[i - 8] >> 4`,
/// high 2 bits from `scales[8 + i % 4] >> (2 * (i / 4))`; minus 32. Element
/// `e = 128c + 32s + l`: low 2 bits from `qs[32c + l] >> 2s`; 4 is subtracted when bit
/// `4c + s` of `hmask[l]` is clear.
#[inline(always)]
pub(super) fn q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let (hmask, qs, sb) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_le(b[108], b[109]);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let lo = if i < 8 { sb[i] & 15 } else { sb[i - 8] >> 4 };
        let hi = (sb[8 + i % 4] >> (2 * (i / 4))) & 3;
        let sc = (lo | (hi << 4)) as i32 - 32;
        *dl = d * sc as f32;
    }
    for c in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let e = 128 * c + 32 * s + l;
                let low = ((qs[32 * c + l] >> (2 * s)) & 3) as i32;
                let hbit = (hmask[l] >> (4 * c + s)) & 1;
                let q = if hbit == 0 { low - 4 } else { low };
                y[e] = dl[e / 16] * q as f32;
            }
        }
    }
}

/// The 8 (scale, min) pairs of Q4_K/Q5_K, 6 bits each, packed in 12 bytes
/// (GGML `get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(s: &[u8]) -> [(u8, u8); 8] {
    let mut out = [(0u8, 0u8); 8];
    for (j, o) in out.iter_mut().enumerate() {
        *o = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            (
                (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
                (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
            )
        };
    }
    out
}

/// Per-sub-block `(d * sc, dmin * m)` for Q4_K/Q5_K.
#[inline(always)]
fn k4_factors(d: f32, dmin: f32, scales: &[u8]) -> [(f32, f32); 8] {
    scale_min_k4(scales).map(|(sc, m)| (d * sc as f32, dmin * m as f32))
}

/// Q4_K (144 bytes): `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`.
///
/// Element `e = 64c + 32s + l` is nibble `s` of `qs[32c + l]`, in sub-block `2c + s`.
#[inline(always)]
pub(super) fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16_le(b[0], b[1]);
    let dmin = f16_le(b[2], b[3]);
    let f = k4_factors(d, dmin, &b[4..16]);
    let qs = &b[16..144];
    for c in 0..4 {
        for s in 0..2 {
            let (dl, ml) = f[2 * c + s];
            for l in 0..32 {
                let q = (qs[32 * c + l] >> (4 * s)) & 15;
                y[64 * c + 32 * s + l] = dl * q as f32 - ml;
            }
        }
    }
}

/// Q5_K (176 bytes): `f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]`.
///
/// As Q4_K, plus bit 4 of element `e = 64c + 32s + l` = bit `2c + s` of `qh[l]`.
#[inline(always)]
pub(super) fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16_le(b[0], b[1]);
    let dmin = f16_le(b[2], b[3]);
    let f = k4_factors(d, dmin, &b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for c in 0..4 {
        for s in 0..2 {
            let sub = 2 * c + s;
            let (dl, ml) = f[sub];
            for l in 0..32 {
                let q = ((qs[32 * c + l] >> (4 * s)) & 15) | (((qh[l] >> sub) & 1) << 4);
                y[64 * c + 32 * s + l] = dl * q as f32 - ml;
            }
        }
    }
}

/// Q6_K (210 bytes): `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d` (d last).
///
/// Two halves `h` of 128 elements. Element `e = 128h + 64s + m` (m in 0..64) takes nibble
/// `s` of `ql[64h + m]`; element `e = 128h + 32t + l` (l in 0..32) takes bits `2t..2t+2` of
/// `qh[32h + l]` as bits 4–5. Value `(d * scales[e / 16]) * (q6 - 32)`.
#[inline(always)]
pub(super) fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_le(b[208], b[209]);
    let mut dl = [0f32; 16];
    for (dl, &s) in dl.iter_mut().zip(sc.iter()) {
        *dl = d * (s as i8) as f32;
    }
    for h in 0..2 {
        for t in 0..4 {
            for l in 0..32 {
                let r = 32 * t + l; // 0..128 within the half
                let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 15;
                let high = (qh[32 * h + l] >> (2 * t)) & 3;
                let q = (low | (high << 4)) as i32 - 32;
                let e = 128 * h + r;
                y[e] = dl[e / 16] * q as f32;
            }
        }
    }
}
