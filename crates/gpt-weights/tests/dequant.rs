//! Dequantization against gguf-py (`gguf.quants.dequantize`, PyPI `gguf` 0.19.0).
//!
//! Fixtures in `tests/fixtures/` come from `make_dequant_fixtures.py` (random blocks with a
//! fixed seed, gguf-py's f32 output). Comparison is bit for bit; where gguf-py gives NaN we
//! only require NaN (payloads may be quieted differently by f16 hardware conversion).

use std::path::PathBuf;

use gguf_format::GgmlType;
use gpt_weights::dequant::{self, mxfp4, DequantError};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `dequant_<TYPE>.bin`: (type, raw bytes, gguf-py f32 values).
fn load_dq(ty: GgmlType) -> (Vec<u8>, Vec<f32>) {
    let b = fixture(&format!("dequant_{ty}.bin"));
    assert_eq!(&b[0..4], b"DQF1");
    assert_eq!(u32_at(&b, 4), ty.id());
    let (n, nb) = (u32_at(&b, 8) as usize, u32_at(&b, 12) as usize);
    assert_eq!(b.len(), 16 + nb + 4 * n);
    (b[16..16 + nb].to_vec(), f32s(&b[16 + nb..]))
}

/// Bit-exact comparison; NaN expected means NaN required.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            g.to_bits() == w.to_bits()
        };
        if !ok {
            if bad < 8 {
                eprintln!(
                    "{what}[{i}]: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
                    g.to_bits(),
                    w.to_bits()
                );
            }
            bad += 1;
        }
    }
    assert_eq!(bad, 0, "{what}: {bad} of {} values differ", want.len());
}

const TYPES: [GgmlType; 16] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::MXFP4,
];

#[test]
fn every_type_matches_gguf_py_bit_for_bit() {
    for ty in TYPES {
        assert!(dequant::is_supported(ty), "{ty}");
        let (raw, want) = load_dq(ty);
        // The fixtures must exercise real values, not zeros.
        assert!(
            want.iter().filter(|v| **v != 0.0).count() > want.len() / 2,
            "{ty}"
        );
        let got = dequant::dequantize_f32(ty, &raw, want.len()).unwrap();
        assert_bits_eq(&format!("{ty}"), &got, &want);

        // dequantize_into on a block-aligned sub-range gives the same values.
        let blck = ty.block_size().unwrap() as usize;
        let tsz = ty.type_size().unwrap() as usize;
        let (b0, nblk) = (1, 3.min(want.len() / blck - 1));
        let mut part = vec![f32::NAN; nblk * blck];
        dequant::dequantize_into(ty, &raw[b0 * tsz..(b0 + nblk) * tsz], &mut part).unwrap();
        assert_bits_eq(
            &format!("{ty} sub-range"),
            &part,
            &want[b0 * blck..(b0 + nblk) * blck],
        );
    }
}

#[test]
fn large_inputs_take_the_parallel_path_and_still_match() {
    // Tile each fixture until it is above the parallel threshold.
    for ty in TYPES {
        let (raw, want) = load_dq(ty);
        let reps = dequant::PAR_MIN_ELEMS / want.len() + 2;
        let raw_big = raw.repeat(reps);
        let want_big = want.repeat(reps);
        let got = dequant::dequantize_f32(ty, &raw_big, want_big.len()).unwrap();
        assert_bits_eq(&format!("{ty} x{reps}"), &got, &want_big);
    }
}

#[test]
fn f16_and_bf16_outputs_round_the_f32_values() {
    for ty in [
        GgmlType::Q4_K,
        GgmlType::MXFP4,
        GgmlType::Q8_0,
        GgmlType::F32,
    ] {
        let (raw, want) = load_dq(ty);
        let h = dequant::dequantize_f16(ty, &raw, want.len()).unwrap();
        let b = dequant::dequantize_bf16(ty, &raw, want.len()).unwrap();
        for i in 0..want.len() {
            let w = want[i];
            // half's from_f32 is IEEE round-to-nearest-even; check against the f64 value
            // bracket: the result is one of the two neighbours and the nearer one.
            let hv = h[i].to_f32();
            let bv = b[i].to_f32();
            if w.is_nan() {
                assert!(hv.is_nan() && bv.is_nan(), "{ty}[{i}]");
                continue;
            }
            for (name, v, eps) in [("f16", hv, 2f32.powi(-11)), ("bf16", bv, 2f32.powi(-8))] {
                if v.is_finite() && w.is_finite() && w.abs() > 1e-3 && w.abs() < 6e4 {
                    assert!(((v - w) / w).abs() <= eps, "{ty}[{i}] {name}: {v} vs {w}");
                }
            }
        }
    }
}

/// Spec §4.4 worked example, written out in the spec (independent of gguf-py).
#[test]
fn mxfp4_spec_worked_example() {
    let ggml = [
        0x7E, 0xF0, 0xE1, 0xD2, 0xC3, 0xB4, 0xA5, 0x96, 0x87, 0x78, 0x69, 0x5A, 0x4B, 0x3C, 0x2D,
        0x1E, 0x0F,
    ];
    let hf = [
        0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE, 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23,
        0x01,
    ];
    let want: [f32; 32] = [
        0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0, -3.0,
        -3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 3.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25, 0.0,
    ];
    assert_eq!(
        dequant::dequantize_f32(GgmlType::MXFP4, &ggml, 32).unwrap(),
        want
    );
    assert_eq!(mxfp4::repack_hf_to_ggml(&hf, &[0x7E]).unwrap(), ggml);
    assert_eq!(mxfp4::dequantize_hf(&hf, &[0x7E]).unwrap(), want);
    assert_eq!(mxfp4::e8m0_to_f32_half(0x7E), 0.25);
}

#[test]
fn mxfp4_hf_repack_matches_gguf_py_quantize() {
    let b = fixture("mxfp4_hf.bin");
    assert_eq!(&b[0..4], b"MXH1");
    let n = u32_at(&b, 4) as usize;
    let mut off = 8;
    let mut take = |len: usize| {
        let s = &b[off..off + len];
        off += len;
        s
    };
    let ggml = take(n * mxfp4::BLOCK_BYTES);
    let hf_blocks = take(n * 16);
    let hf_scales = take(n);
    let oai = f32s(take(n * 32 * 4));
    let gguf_py = f32s(take(n * 32 * 4));

    let repacked = mxfp4::repack_hf_to_ggml(hf_blocks, hf_scales).unwrap();
    assert_eq!(repacked.len(), ggml.len());
    let first_bad = repacked.iter().zip(ggml).position(|(a, b)| a != b);
    assert_eq!(
        first_bad, None,
        "repacked bytes differ from gguf-py's quantize()"
    );

    // OpenAI reference decode: bit-exact against numpy's ldexp(FP4_VALUES[code], s - 127).
    let hf_vals = mxfp4::dequantize_hf(hf_blocks, hf_scales).unwrap();
    assert_bits_eq("dequantize_hf vs numpy", &hf_vals, &oai);

    // ggml decode of the repacked bytes: bit-exact against gguf-py, and equal (==, so the
    // ggml +0 for code 8 matches OpenAI's -0) to the OpenAI decode.
    let ggml_vals = dequant::dequantize_f32(GgmlType::MXFP4, &repacked, n * 32).unwrap();
    assert_bits_eq("MXFP4 of repacked vs gguf-py", &ggml_vals, &gguf_py);
    for (i, (g, h)) in ggml_vals.iter().zip(&hf_vals).enumerate() {
        assert!(g == h, "[{i}]: ggml {g:e} vs hf {h:e}");
    }
    assert!(
        hf_vals.iter().any(|v| v.is_infinite()),
        "exponent 255 overflow covered"
    );
    assert!(
        hf_vals.iter().any(|v| v.is_subnormal()),
        "subnormal scales covered"
    );
}

#[test]
fn error_cases_are_typed() {
    // Wrong byte length for a whole number of blocks.
    assert_eq!(
        dequant::dequantize_f32(GgmlType::Q8_0, &[0u8; 33], 32).unwrap_err(),
        DequantError::SizeMismatch {
            ty: GgmlType::Q8_0,
            n_elements: 32,
            expected_bytes: 34,
            got_bytes: 33,
        }
    );
    let mut out = vec![0f32; 64];
    assert_eq!(
        dequant::dequantize_into(GgmlType::MXFP4, &[0u8; 17], &mut out).unwrap_err(),
        DequantError::SizeMismatch {
            ty: GgmlType::MXFP4,
            n_elements: 64,
            expected_bytes: 34,
            got_bytes: 17,
        }
    );
    // Not whole blocks.
    assert_eq!(
        dequant::dequantize_f32(GgmlType::Q4_K, &[0u8; 144], 250).unwrap_err(),
        DequantError::NotWholeBlocks {
            ty: GgmlType::Q4_K,
            n_elements: 250,
            block_size: 256,
        }
    );
    // A huge bogus element count fails on size, before any allocation.
    assert!(matches!(
        dequant::dequantize_f32(GgmlType::F32, &[0u8; 8], usize::MAX / 2).unwrap_err(),
        DequantError::SizeMismatch { .. }
    ));
    // Unsupported types, known and unknown.
    for ty in [GgmlType::IQ2_XXS, GgmlType::Q8_K, GgmlType::Unknown(99)] {
        assert!(!dequant::is_supported(ty));
        assert_eq!(
            dequant::dequantize_f32(ty, &[0u8; 66], 256).unwrap_err(),
            DequantError::UnsupportedType { ty }
        );
    }
    let msg = dequant::dequantize_f32(GgmlType::Q8_0, &[0u8; 33], 32)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Q8_0") && msg.contains("34") && msg.contains("33"),
        "{msg}"
    );
    // HF layout: blocks must be 16 bytes per scale.
    assert_eq!(
        mxfp4::repack_hf_to_ggml(&[0u8; 40], &[1, 2]).unwrap_err(),
        DequantError::HfLayoutMismatch {
            blocks_bytes: 40,
            scales_bytes: 2
        }
    );
}
