//! The 32-element block types whose values are exactly `d * q`, with an int8 `q` per element
//! and one f16 scale `d` per block (Q8_0, Q4_0, Q5_0, IQ4_NL), split into an int8 plane and
//! an f32 scale plane: the "Q8 split" form the CUDA fast decode and tensor-core prefill read
//! (`qs (n, k)` int8, `d (n, k/32)` f32). The split is exact: `d[b] * qs[i]` is, bit for bit,
//! what [`super::dequantize_into`] gives for element `i` of block `b`.
//!
//! ```
//! use gguf_format::GgmlType;
//! use gpt_weights::dequant::{dequantize_f32, split_int8};
//! let mut block = [0u8; 18]; // one Q4_0 block: f16 d = 0.5, then 16 nibble bytes
//! block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
//! block[2] = 0x1f; // element 0: 15 - 8 = 7; element 16: 1 - 8 = -7
//! let (mut qs, mut d) = ([0i8; 32], [0f32; 1]);
//! split_int8(GgmlType::Q4_0, &block, &mut qs, &mut d).unwrap();
//! let y = dequantize_f32(GgmlType::Q4_0, &block, 32).unwrap();
//! assert_eq!((qs[0], qs[16], d[0]), (7, -7, 0.5));
//! assert!((0..32).all(|i| d[0] * qs[i] as f32 == y[i]));
//! ```

use gguf_format::GgmlType;

use super::iq4::KVALUES;
use super::{f16_le, DequantError};

/// Whether [`split_int8`] takes `ty`.
pub fn is_int8_exact(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL
    )
}

/// Block bytes of an [`is_int8_exact`] type (32 elements each).
fn block_bytes(ty: GgmlType) -> Option<usize> {
    match ty.block_layout() {
        Some((32, bytes)) if is_int8_exact(ty) => Some(bytes as usize),
        _ => None,
    }
}

/// Splits the blocks in `bytes` (type `ty`, `d.len()` blocks) into `qs` (32 values per block,
/// in element order) and `d` (one scale per block).
pub fn split_int8(
    ty: GgmlType,
    bytes: &[u8],
    qs: &mut [i8],
    d: &mut [f32],
) -> Result<(), DequantError> {
    let bb = block_bytes(ty).ok_or(DequantError::UnsupportedType { ty })?;
    let n_elements = d.len() * 32;
    if bytes.len() != d.len() * bb || qs.len() != n_elements {
        return Err(DequantError::SizeMismatch {
            ty,
            n_elements,
            expected_bytes: d.len() * bb,
            got_bytes: bytes.len(),
        });
    }
    for ((b, q), d) in bytes
        .chunks_exact(bb)
        .zip(qs.chunks_exact_mut(32))
        .zip(d.iter_mut())
    {
        *d = f16_le(b[0], b[1]);
        match ty {
            GgmlType::Q8_0 => {
                for (q, &v) in q.iter_mut().zip(&b[2..34]) {
                    *q = v as i8;
                }
            }
            GgmlType::Q4_0 | GgmlType::IQ4_NL => {
                let code = |n: u8| match ty {
                    GgmlType::Q4_0 => n as i8 - 8,
                    _ => KVALUES[n as usize],
                };
                for j in 0..16 {
                    q[j] = code(b[2 + j] & 15);
                    q[j + 16] = code(b[2 + j] >> 4);
                }
            }
            _ => {
                // Q5_0: bit 4 of element i is bit i of the little-endian u32 after d.
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let hi = |i: usize| ((((qh >> i) & 1) as u8) << 4) as i8;
                    q[j] = ((b[6 + j] & 15) as i8 | hi(j)) - 16;
                    q[j + 16] = ((b[6 + j] >> 4) as i8 | hi(j + 16)) - 16;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    /// Random blocks of `ty` with sane f16 scales (random bytes elsewhere).
    fn blocks(ty: GgmlType, n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<u8> {
        let bb = block_bytes(ty).unwrap();
        let mut v = vec![0u8; n * bb];
        rng.fill_bytes(&mut v);
        for b in v.chunks_exact_mut(bb) {
            let d = half::f16::from_f32(rng.random_range(-0.1f32..0.1));
            b[..2].copy_from_slice(&d.to_le_bytes());
        }
        v
    }

    #[test]
    fn split_is_the_dequantization_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_0016);
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::IQ4_NL,
        ] {
            let n = 97;
            let bytes = blocks(ty, n, &mut rng);
            let (mut qs, mut d) = (vec![0i8; n * 32], vec![0f32; n]);
            split_int8(ty, &bytes, &mut qs, &mut d).unwrap();
            let y = super::super::dequantize_f32(ty, &bytes, n * 32).unwrap();
            let nonzero = y.iter().filter(|v| **v != 0.0).count();
            assert!(nonzero > n * 16, "{ty}: the blocks are mostly non-zero");
            for (i, y) in y.iter().enumerate() {
                let got = d[i / 32] * qs[i] as f32;
                assert_eq!(got.to_bits(), y.to_bits(), "{ty} element {i}");
            }
        }
    }

    #[test]
    fn split_rejects_other_types_and_wrong_sizes() {
        let (mut qs, mut d) = (vec![0i8; 32], vec![0f32; 1]);
        assert!(matches!(
            split_int8(GgmlType::Q4_K, &[0u8; 144], &mut qs, &mut d),
            Err(DequantError::UnsupportedType { .. })
        ));
        assert!(matches!(
            split_int8(GgmlType::Q4_0, &[0u8; 17], &mut qs, &mut d),
            Err(DequantError::SizeMismatch { .. })
        ));
        assert!(!is_int8_exact(GgmlType::F16));
    }
}
