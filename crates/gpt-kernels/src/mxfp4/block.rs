//! The ggml MXFP4 block (`GGML_TYPE_MXFP4`, type id 39): 32 elements in 17 bytes.
//!
//! Layout (spec §4.1): byte 0 is an E8M0 exponent `e`; bytes 1..17 are `qs[0..16]`. Element `j`
//! (0 ≤ j < 16) is the low nibble of `qs[j]`, element `j + 16` the high nibble. Each nibble indexes
//! [`KVALUES`] (E2M1 values doubled) and is multiplied by `2^(e - 128)` (the halved scale).

/// Elements per MXFP4 block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per MXFP4 block: one exponent byte and 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 17;

/// ggml `kvalues_mxfp4`: E2M1 code → value × 2 (bit 3 sign, bits 2–1 exponent, bit 0 mantissa).
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// [`KVALUES`] as f32, one entry per nibble.
pub(crate) const KVALUES_F32: [f32; 16] = {
    let mut t = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = KVALUES[i] as f32;
        i += 1;
    }
    t
};

/// Bytes of one row of `cols` elements (`cols` must be a multiple of [`BLOCK_ELEMS`]).
pub const fn row_bytes(cols: usize) -> usize {
    cols / BLOCK_ELEMS * BLOCK_BYTES
}

/// `GGML_E8M0_TO_FP32_HALF(e)` = 2^(e − 128), built bit-exactly (ggml `ggml-impl.h`):
/// `bits = e < 2 ? 0x00200000 << e : (e − 1) << 23`. e = 0, 1 give the subnormals 2^-128, 2^-127.
/// e = 255 gives 2^127 (the OCP NaN encoding is not special-cased, as in ggml).
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (u32::from(e) - 1) << 23
    };
    f32::from_bits(bits)
}

/// [`KVALUES_F32`] times [`e8m0_to_f32_half`]`(e)` for every exponent byte `e`: one 64-byte
/// row per exponent (16 KiB), so a kernel loads its block's scaled value table instead of
/// building the scale and multiplying (the same f32 products, computed at compile time).
#[repr(C, align(64))]
pub(crate) struct ScaledTables(pub [[f32; 16]; 256]);

/// The [`ScaledTables`].
pub(crate) static MX_SCALED: ScaledTables = {
    let mut t = [[0f32; 16]; 256];
    let mut e = 0;
    while e < 256 {
        let bits = if e < 2 {
            0x0020_0000u32 << e
        } else {
            (e as u32 - 1) << 23
        };
        let d = f32::from_bits(bits);
        let mut i = 0;
        while i < 16 {
            t[e][i] = KVALUES_F32[i] * d;
            i += 1;
        }
        e += 1;
    }
    ScaledTables(t)
};

/// Dequantizes one 17-byte block into 32 f32 values (`out.len() == 32`).
#[inline]
pub fn decode_block(block: &[u8], out: &mut [f32]) {
    let d = e8m0_to_f32_half(block[0]);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &q) in block[1..BLOCK_BYTES].iter().enumerate() {
        lo[j] = KVALUES_F32[usize::from(q & 15)] * d;
        hi[j] = KVALUES_F32[usize::from(q >> 4)] * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_matches_power_of_two() {
        // 2^(e-128) computed in f64 is exact and representable in f32 for every e.
        for e in 0u8..=255 {
            let want = 2f64.powi(i32::from(e) - 128) as f32;
            assert_eq!(e8m0_to_f32_half(e).to_bits(), want.to_bits(), "e = {e}");
        }
    }

    #[test]
    fn scaled_tables_are_the_products() {
        for e in 0u8..=255 {
            for (i, &k) in KVALUES_F32.iter().enumerate() {
                let want = k * e8m0_to_f32_half(e);
                let got = MX_SCALED.0[usize::from(e)][i];
                assert_eq!(got.to_bits(), want.to_bits(), "e = {e}, code {i}");
            }
        }
    }

    #[test]
    fn kvalues_are_doubled_e2m1() {
        // E2M1: sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0; subnormal when exp = 0.
        for code in 0..16u8 {
            let sign = if code & 8 != 0 { -1.0 } else { 1.0 };
            let exp = i32::from((code >> 1) & 3);
            let man = f64::from(code & 1);
            let mag = if exp == 0 {
                0.5 * man
            } else {
                2f64.powi(exp - 1) * (1.0 + 0.5 * man)
            };
            assert_eq!(f64::from(KVALUES[usize::from(code)]), 2.0 * sign * mag);
        }
    }
}

#[cfg(test)]
mod header_tests {
    use super::{BLOCK_BYTES, BLOCK_ELEMS, KVALUES};

    /// The CUDA header states the block shape once for the kernels; it must be this one, and
    /// its packed E2M1 table (`mxfp4_kv`) must decode to [`KVALUES`].
    #[test]
    fn the_cuda_header_agrees_with_these_constants() {
        let h = include_str!("../../kernels/mxfp4.cuh");
        let define = |name: &str| -> usize {
            h.lines()
                .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no #define {name}"))
        };
        assert_eq!(define("MXFP4_BLOCK_ELEMS"), BLOCK_ELEMS);
        assert_eq!(define("MXFP4_BLOCK_BYTES"), BLOCK_BYTES);
        let packed = 0x0C08_0604_0302_0100u64;
        assert!(
            h.contains("0x0C08060403020100ull"),
            "mxfp4_kv's table changed"
        );
        for (q, &want) in KVALUES.iter().enumerate() {
            let v = ((packed >> ((q as u64 & 7) * 8)) & 0xff) as i8;
            let v = if q & 8 != 0 { -v } else { v };
            assert_eq!(v, want, "code {q}");
        }
    }
}
