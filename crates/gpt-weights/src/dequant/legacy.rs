//! The "legacy" 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (spec §5).
//!
//! All use the split-half nibble order: byte `j` of `qs` holds element `j` in its low
//! nibble and element `j + 16` in its high nibble. Operation order follows gguf-py:
//! `d * q` (Q4_0, Q5_0, Q8_0) and `d * q + m` (Q4_1, Q5_1), each rounded separately.

use super::f16_le;

/// Q4_0 (18 bytes): `f16 d; u8 qs[16]`; `x = d * (nibble - 8)`.
#[inline(always)]
pub(super) fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_le(b[0], b[1]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * ((q & 15) as i32 - 8) as f32;
        y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1 (20 bytes): `f16 d; f16 m; u8 qs[16]`; `x = d * nibble + m`.
#[inline(always)]
pub(super) fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_le(b[0], b[1]);
    let m = f16_le(b[2], b[3]);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = d * (q & 15) as f32 + m;
        y[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// The 5-bit values of a Q5 block: nibbles from `qs` (16 bytes), bit 4 of element `i`
/// from bit `i` of the little-endian `u32` `qh`.
#[inline(always)]
fn q5_codes(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 15) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Q5_0 (22 bytes): `f16 d; u8 qh[4]; u8 qs[16]`; `x = d * (q5 - 16)`.
#[inline(always)]
pub(super) fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_le(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let q = q5_codes(qh, &b[6..22]);
    for (y, &q) in y.iter_mut().zip(q.iter()) {
        *y = d * (q as i32 - 16) as f32;
    }
}

/// Q5_1 (24 bytes): `f16 d; f16 m; u8 qh[4]; u8 qs[16]`; `x = d * q5 + m`.
#[inline(always)]
pub(super) fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_le(b[0], b[1]);
    let m = f16_le(b[2], b[3]);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let q = q5_codes(qh, &b[8..24]);
    for (y, &q) in y.iter_mut().zip(q.iter()) {
        *y = d * q as f32 + m;
    }
}

/// Q8_0 (34 bytes): `f16 d; i8 q[32]`; `x = q * d`.
#[inline(always)]
pub(super) fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_le(b[0], b[1]);
    for (y, &q) in y.iter_mut().zip(b[2..].iter()) {
        *y = (q as i8) as f32 * d;
    }
}
