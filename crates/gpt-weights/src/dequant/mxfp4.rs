//! MXFP4 (ggml type 39): 32 E2M1 values sharing one E8M0 exponent (spec §4).
//!
//! ggml block (17 bytes): `u8 e; u8 qs[16]`, split-half nibbles (element `j` = low nibble of
//! `qs[j]`, element `j + 16` = high nibble); `x = KVALUES[code] * 2^(e - 128)` with the
//! doubled E2M1 table [`KVALUES`] and the halved scale [`e8m0_to_f32_half`].
//!
//! OpenAI/HF safetensors keep the same codes and exponents as `*_blocks` u8 `[..., G, 16]`
//! with interleaved nibbles (byte `i` = element `2i` low, `2i + 1` high) and `*_scales` u8
//! `[..., G]` (spec §4.2). [`repack_hf_to_ggml`] converts, [`dequantize_hf`] is the OpenAI
//! reference decode `FP4_VALUES[code] * 2^(scale - 127)`.

use super::DequantError;

/// Elements per MXFP4 block.
pub const BLOCK_ELEMS: usize = 32;

/// Bytes per ggml MXFP4 block (1 exponent byte + 16 nibble bytes).
pub const BLOCK_BYTES: usize = 17;

/// Bytes of nibbles per block in the HF layout (`*_blocks` last dim).
pub const HF_BLOCK_BYTES: usize = 16;

/// E2M1 values times two, indexed by the 4-bit code (bit 3 sign, bits 2–1 exponent,
/// bit 0 mantissa); ggml `kvalues_mxfp4`.
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// OpenAI's E2M1 table (`FP4_VALUES`); code 8 is `-0.0` here but `+0` in ggml.
const FP4_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// `2^(e - 128)` built bit-exactly as ggml's `GGML_E8M0_TO_FP32_HALF`:
/// bits `0x00200000 << e` for `e < 2` (subnormals `2^-128`, `2^-127`), else `(e - 1) << 23`.
///
/// `e = 255` gives `2^127` (ggml and gguf-py do not treat it as NaN).
#[inline(always)]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e as u32) - 1) << 23
    };
    f32::from_bits(bits)
}

/// One ggml MXFP4 block (17 bytes) to 32 values: `d * KVALUES[code]`.
#[inline(always)]
pub(super) fn block(b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]) {
    let d = e8m0_to_f32_half(b[0]);
    // The 16 products `d * KVALUES[code]` once per block (same roundings as per element).
    let t = KVALUES.map(|k| d * k as f32);
    for j in 0..16 {
        let q = b[1 + j];
        y[j] = t[(q & 15) as usize];
        y[j + 16] = t[(q >> 4) as usize];
    }
}

/// Checks that `blocks` holds 16 bytes per scale byte.
fn check_hf(blocks: &[u8], scales: &[u8]) -> Result<(), DequantError> {
    if scales.len().checked_mul(HF_BLOCK_BYTES) != Some(blocks.len()) {
        return Err(DequantError::HfLayoutMismatch {
            blocks_bytes: blocks.len(),
            scales_bytes: scales.len(),
        });
    }
    Ok(())
}

/// Repacks OpenAI/HF-layout MXFP4 into ggml MXFP4 bytes.
///
/// `blocks`: u8 `[rows, G, 16]` (interleaved nibbles), `scales`: u8 `[rows, G]`, both
/// row-major and flattened; returns u8 `[rows, G * 17]`: per block the scale byte, then
/// `qs[j] = code[j] | code[j + 16] << 4`. Element `k` of every block keeps its code, so
/// both layouts decode to the same values (up to the sign of zero, see [`dequantize_hf`]).
pub fn repack_hf_to_ggml(blocks: &[u8], scales: &[u8]) -> Result<Vec<u8>, DequantError> {
    check_hf(blocks, scales)?;
    let mut out = Vec::with_capacity(scales.len() * BLOCK_BYTES);
    for (hf, &e) in blocks.chunks_exact(HF_BLOCK_BYTES).zip(scales) {
        // code k sits in byte k / 2, low nibble for even k.
        let code = |k: usize| (hf[k / 2] >> (4 * (k % 2))) & 15;
        out.push(e);
        out.extend((0..16).map(|j| code(j) | (code(j + 16) << 4)));
    }
    Ok(out)
}

/// The OpenAI reference decode of HF-layout MXFP4: `FP4_VALUES[code] * 2^(scale - 127)`,
/// computed exactly (`ldexp`) and rounded once to `f32`.
///
/// `blocks`: u8 `[rows, G, 16]`, `scales`: u8 `[rows, G]`; returns f32 `[rows, G * 32]`.
/// Equal (`==`) to [`super::dequantize_f32`] of the [`repack_hf_to_ggml`] bytes; the bits
/// differ only for code 8, which is `-0.0` here and `+0.0` in ggml.
pub fn dequantize_hf(blocks: &[u8], scales: &[u8]) -> Result<Vec<f32>, DequantError> {
    check_hf(blocks, scales)?;
    let mut out = Vec::with_capacity(scales.len() * BLOCK_ELEMS);
    for (hf, &e) in blocks.chunks_exact(HF_BLOCK_BYTES).zip(scales) {
        // Exact in f64 (|value| <= 6 * 2^128); the cast rounds once (overflow -> inf).
        let scale = 2f64.powi(e as i32 - 127);
        for &byte in hf {
            for code in [byte & 15, byte >> 4] {
                out.push((FP4_VALUES[code as usize] as f64 * scale) as f32);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_two_to_the_e_minus_128() {
        assert_eq!(e8m0_to_f32_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_to_f32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(254), 2f32.powi(126));
        assert_eq!(e8m0_to_f32_half(255), 2f32.powi(127));
        for e in 0..=255u8 {
            let want = 2f64.powi(e as i32 - 128) as f32;
            assert_eq!(e8m0_to_f32_half(e).to_bits(), want.to_bits(), "e = {e}");
        }
    }

    #[test]
    fn hf_length_mismatch_is_an_error() {
        let err = repack_hf_to_ggml(&[0u8; 31], &[1, 2]).unwrap_err();
        assert_eq!(
            err,
            DequantError::HfLayoutMismatch {
                blocks_bytes: 31,
                scales_bytes: 2
            }
        );
        assert!(dequantize_hf(&[0u8; 16], &[]).is_err());
    }
}
