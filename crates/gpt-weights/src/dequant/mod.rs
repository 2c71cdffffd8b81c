//! CPU dequantization of ggml block types to `f32`, bit-identical to gguf-py
//! (`gguf.quants.dequantize`, PyPI `gguf` 0.19).
//!
//! A tensor of `n` elements of type `ty` is `n / block_size` consecutive blocks of
//! `type_size` bytes each (spec §4.1, §5). Every family decodes one block at a time into
//! `block_size` `f32`s with the same operation order as gguf-py's numpy code (no fused
//! multiply-add), so results match to the bit:
//!
//! - `float`: F32, F16, BF16 (block size 1);
//! - `legacy`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32 elements per block);
//! - `kquants`: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256 elements per block);
//! - `iq4`: IQ4_NL (32) and IQ4_XS (256), the non-linear 4-bit table;
//! - [`mxfp4`]: MXFP4 (32), plus helpers for the OpenAI/HF safetensors layout.
//!
//! Large inputs (at least [`PAR_MIN_ELEMS`] elements) are split over the rayon pool.

mod float;
mod int8;
mod iq4;
mod kquants;
mod legacy;
pub mod mxfp4;

pub use int8::{is_int8_exact, split_int8};

use gguf_format::GgmlType;
use rayon::prelude::*;

/// Inputs with at least this many elements are dequantized in parallel.
pub const PAR_MIN_ELEMS: usize = 1 << 16;

/// Elements per parallel task (a multiple of every supported block size).
const PAR_CHUNK_ELEMS: usize = 1 << 15;

/// Why a dequantization could not run.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DequantError {
    /// This module has no decoder for the type.
    #[error("dequantize: ggml type {ty} is not supported")]
    UnsupportedType {
        /// The type asked for.
        ty: GgmlType,
    },
    /// The byte buffer does not hold exactly `n_elements` elements of the type.
    #[error(
        "dequantize {ty}: {n_elements} elements take {expected_bytes} bytes, got {got_bytes} bytes"
    )]
    SizeMismatch {
        /// The type.
        ty: GgmlType,
        /// The element count asked for.
        n_elements: usize,
        /// The bytes `n_elements` elements take.
        expected_bytes: usize,
        /// The bytes given.
        got_bytes: usize,
    },
    /// The element count is not a multiple of the type's block size.
    #[error("dequantize {ty}: {n_elements} elements is not a whole number of {block_size}-element blocks")]
    NotWholeBlocks {
        /// The type.
        ty: GgmlType,
        /// The element count asked for.
        n_elements: usize,
        /// Elements per block of the type.
        block_size: usize,
    },
    /// OpenAI/HF MXFP4 `blocks` and `scales` disagree: `blocks` must hold 16 bytes per scale.
    #[error(
        "MXFP4 HF layout: blocks has {blocks_bytes} bytes but scales has {scales_bytes} \
         (expected blocks = 16 x scales)"
    )]
    HfLayoutMismatch {
        /// Bytes in `*_blocks` (`[..., G, 16]`).
        blocks_bytes: usize,
        /// Bytes in `*_scales` (`[..., G]`).
        scales_bytes: usize,
    },
}

/// Whether [`dequantize_into`] can decode `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType as T;
    matches!(
        ty,
        T::F32
            | T::F16
            | T::BF16
            | T::Q4_0
            | T::Q4_1
            | T::Q5_0
            | T::Q5_1
            | T::Q8_0
            | T::Q2_K
            | T::Q3_K
            | T::Q4_K
            | T::Q5_K
            | T::Q6_K
            | T::IQ4_NL
            | T::IQ4_XS
            | T::MXFP4
    )
}

/// Checks that `got_bytes` bytes of `ty` hold exactly `n_elements` elements.
///
/// Runs before any allocation, so a bogus `n_elements` cannot trigger a huge one.
fn check(ty: GgmlType, got_bytes: usize, n_elements: usize) -> Result<(), DequantError> {
    let (blck, size) = match ty.block_layout() {
        Some((b, s)) if is_supported(ty) => (b as usize, s as usize),
        _ => return Err(DequantError::UnsupportedType { ty }),
    };
    if !n_elements.is_multiple_of(blck) {
        return Err(DequantError::NotWholeBlocks {
            ty,
            n_elements,
            block_size: blck,
        });
    }
    let expected_bytes = (n_elements / blck).saturating_mul(size);
    if expected_bytes != got_bytes {
        return Err(DequantError::SizeMismatch {
            ty,
            n_elements,
            expected_bytes,
            got_bytes,
        });
    }
    Ok(())
}

/// Decodes `bytes` (whole blocks of `B` bytes) into `out` (whole blocks of `E` values) with
/// the per-block decoder `f`, in parallel when `out` is large.
///
/// The caller has checked `bytes.len() / B == out.len() / E`.
fn run_blocks<const B: usize, const E: usize, F>(bytes: &[u8], out: &mut [f32], f: F)
where
    F: Fn(&[u8; B], &mut [f32; E]) + Sync,
{
    let serial = |bytes: &[u8], out: &mut [f32]| {
        for (b, y) in bytes.chunks_exact(B).zip(out.chunks_exact_mut(E)) {
            // Always Ok: `chunks_exact` yields slices of exactly B and E items.
            if let (Ok(b), Ok(y)) = (b.try_into(), y.try_into()) {
                f(b, y);
            }
        }
    };
    if out.len() < PAR_MIN_ELEMS {
        serial(bytes, out);
    } else {
        let blocks_per_task = PAR_CHUNK_ELEMS / E;
        out.par_chunks_mut(blocks_per_task * E)
            .zip(bytes.par_chunks(blocks_per_task * B))
            .for_each(|(y, b)| serial(b, y));
    }
}

/// Dequantizes `bytes` of type `ty` into `out`, one `f32` per element (`out.len()` elements).
///
/// Bit-identical to gguf-py's `gguf.quants.dequantize(bytes, ty)`. Uses the rayon pool when
/// `out.len() >= PAR_MIN_ELEMS`.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    check(ty, bytes.len(), out.len())?;
    use GgmlType as T;
    match ty {
        T::F32 => run_blocks(bytes, out, float::f32_le),
        T::F16 => run_blocks(bytes, out, float::f16_le),
        T::BF16 => run_blocks(bytes, out, float::bf16_le),
        T::Q4_0 => run_blocks(bytes, out, legacy::q4_0),
        T::Q4_1 => run_blocks(bytes, out, legacy::q4_1),
        T::Q5_0 => run_blocks(bytes, out, legacy::q5_0),
        T::Q5_1 => run_blocks(bytes, out, legacy::q5_1),
        T::Q8_0 => run_blocks(bytes, out, legacy::q8_0),
        T::Q2_K => run_blocks(bytes, out, kquants::q2_k),
        T::Q3_K => run_blocks(bytes, out, kquants::q3_k),
        T::Q4_K => run_blocks(bytes, out, kquants::q4_k),
        T::Q5_K => run_blocks(bytes, out, kquants::q5_k),
        T::Q6_K => run_blocks(bytes, out, kquants::q6_k),
        T::IQ4_NL => run_blocks(bytes, out, iq4::iq4_nl),
        T::IQ4_XS => run_blocks(bytes, out, iq4::iq4_xs),
        T::MXFP4 => run_blocks(bytes, out, mxfp4::block),
        _ => return Err(DequantError::UnsupportedType { ty }),
    }
    Ok(())
}

/// Dequantizes `n_elements` elements of type `ty` from `bytes` into a new `Vec<f32>`.
///
/// Sizes are checked before allocating.
pub fn dequantize_f32(
    ty: GgmlType,
    bytes: &[u8],
    n_elements: usize,
) -> Result<Vec<f32>, DequantError> {
    check(ty, bytes.len(), n_elements)?;
    let mut out = vec![0f32; n_elements];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes to `f32` (as [`dequantize_f32`]), then rounds each value to `f16`
/// (round-to-nearest-even; out-of-range values become ±inf).
pub fn dequantize_f16(
    ty: GgmlType,
    bytes: &[u8],
    n_elements: usize,
) -> Result<Vec<half::f16>, DequantError> {
    Ok(convert(
        &dequantize_f32(ty, bytes, n_elements)?,
        half::f16::from_f32,
    ))
}

/// Dequantizes to `f32` (as [`dequantize_f32`]), then rounds each value to `bf16`
/// (round-to-nearest-even).
pub fn dequantize_bf16(
    ty: GgmlType,
    bytes: &[u8],
    n_elements: usize,
) -> Result<Vec<half::bf16>, DequantError> {
    Ok(convert(
        &dequantize_f32(ty, bytes, n_elements)?,
        half::bf16::from_f32,
    ))
}

/// Element-wise conversion, parallel for large inputs.
fn convert<T: Send>(xs: &[f32], f: fn(f32) -> T) -> Vec<T> {
    if xs.len() < PAR_MIN_ELEMS {
        xs.iter().map(|&x| f(x)).collect()
    } else {
        xs.par_iter().map(|&x| f(x)).collect()
    }
}

/// The `f16` stored little-endian in `b0, b1`, widened exactly to `f32`.
#[inline(always)]
fn f16_le(b0: u8, b1: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b0, b1])).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_have_layouts_dividing_the_parallel_chunk() {
        for &t in GgmlType::ALL {
            if is_supported(t) {
                let b = t.block_size().unwrap() as usize;
                assert_eq!(PAR_CHUNK_ELEMS % b, 0, "{t}");
            }
        }
    }

    #[test]
    fn parallel_and_serial_paths_agree() {
        // Q8_0 with d = 1.0 (0x3C00) and q = 1..=32: values are exact, so any reordering bug
        // between the parallel chunks shows.
        let n_blocks = PAR_MIN_ELEMS / 32 * 3 + 5;
        let mut bytes = Vec::with_capacity(n_blocks * 34);
        for i in 0..n_blocks {
            bytes.extend_from_slice(&[0x00, 0x3C]);
            bytes.extend((0..32).map(|j| ((i * 7 + j) % 251) as u8));
        }
        let big = dequantize_f32(GgmlType::Q8_0, &bytes, n_blocks * 32).unwrap();
        for (i, blk) in bytes.chunks(34).enumerate() {
            let small = dequantize_f32(GgmlType::Q8_0, blk, 32).unwrap();
            assert_eq!(&big[i * 32..(i + 1) * 32], &small[..], "block {i}");
        }
    }
}
