//! The non-linear 4-bit types IQ4_NL (32-element blocks) and IQ4_XS (256-element
//! super-blocks); both map each nibble through [`KVALUES`] (spec §5).

use super::f16_le;

/// The IQ4_NL code book (ggml `kvalues_iq4nl`).
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL (18 bytes): `f16 d; u8 qs[16]`, split-half nibbles; `x = d * KVALUES[nibble]`.
#[inline(always)]
pub(super) fn iq4_nl(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_le(b[0], b[1]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * KVALUES[(q & 15) as usize] as f32;
        y[j + 16] = d * KVALUES[(q >> 4) as usize] as f32;
    }
}

/// IQ4_XS (136 bytes): `f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]`.
///
/// Sub-block `j` (32 elements) has the 6-bit scale `(nibble j%2 of scales_l[j/2]) |
/// ((scales_h >> 2j) & 3) << 4`, minus 32, and its 16 bytes `qs[16j..16j+16]` in split-half
/// order; `x = (d * scale) * KVALUES[nibble]`.
#[inline(always)]
pub(super) fn iq4_xs(b: &[u8; 136], y: &mut [f32; 256]) {
    let d = f16_le(b[0], b[1]);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let (scales_l, qs) = (&b[4..8], &b[8..136]);
    for j in 0..8 {
        let lo = (scales_l[j / 2] >> (4 * (j % 2))) & 15;
        let hi = ((scales_h >> (2 * j)) & 3) as u8;
        let dl = d * ((lo | (hi << 4)) as i32 - 32) as f32;
        for l in 0..16 {
            let q = qs[16 * j + l];
            y[32 * j + l] = dl * KVALUES[(q & 15) as usize] as f32;
            y[32 * j + 16 + l] = dl * KVALUES[(q >> 4) as usize] as f32;
        }
    }
}
