//! Plain float types (block size 1): F32, F16, BF16.
//!
//! gguf-py: F32 is a reinterpretation (`view(np.float32)`), F16 is numpy's exact widening,
//! BF16 is `int16 << 16` reinterpreted as `f32`. All three are exact, NaN payloads included
//! (F16 NaNs stay NaN; their payload may be quieted by hardware conversion).

/// F32: 4 little-endian bytes, bits kept as they are.
#[inline(always)]
pub(super) fn f32_le(b: &[u8; 4], y: &mut [f32; 1]) {
    y[0] = f32::from_le_bytes(*b);
}

/// F16: 2 little-endian bytes, widened exactly.
#[inline(always)]
pub(super) fn f16_le(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = super::f16_le(b[0], b[1]);
}

/// BF16: 2 little-endian bytes are the upper half of the `f32` bits.
#[inline(always)]
pub(super) fn bf16_le(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f32::from_bits((u16::from_le_bytes(*b) as u32) << 16);
}
