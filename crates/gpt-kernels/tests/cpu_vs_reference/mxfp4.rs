//! MXFP4 dequant and matmul vs the candle-ops reference and the spec §4.4 worked example.

use candle_core::{DType, Device, Result, Tensor};
use gpt_kernels::reference::{mxfp4_dequant_slow, mxfp4_matmul_slow};
use gpt_kernels::{mxfp4_dequant, mxfp4_matmul};

use crate::common::{assert_bits_eq, assert_close, mxfp4_abs, mxfp4_blocks, rng, uniform, Tol};

/// `Σ_k x·w` in f32 vs candle's matmul: error relative to `Σ_k |x||w|`, the dot's condition
/// scale. Typical error is ~√k·2^-24 ≈ 3e-6 for k = 2880.
const MATMUL_TOL: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
};

#[test]
fn spec_worked_example_block() -> Result<()> {
    // Spec §4.4: GGUF block `7E F0 E1 D2 C3 B4 A5 96 87 78 69 5A 4B 3C 2D 1E 0F`.
    let block: Vec<u8> = vec![
        0x7E, 0xF0, 0xE1, 0xD2, 0xC3, 0xB4, 0xA5, 0x96, 0x87, 0x78, 0x69, 0x5A, 0x4B, 0x3C, 0x2D,
        0x1E, 0x0F,
    ];
    // Spec §4.4 "Full result".
    let want: [f32; 32] = [
        0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0, -3.0,
        -3.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 3.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25, 0.0,
    ];
    let t = Tensor::from_vec(block, (1, 17), &Device::Cpu)?;
    let got = mxfp4_dequant(&t, 32)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(got, want.to_vec());
    let slow = mxfp4_dequant_slow(&t, 32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(slow, want.to_vec(), "reference disagrees with the spec");
    Ok(())
}

#[test]
fn dequant_bit_exact_vs_reference() -> Result<()> {
    let mut r = rng(11);
    for (lead, cols) in [
        (vec![1usize], 32usize),
        (vec![3], 64),
        (vec![2, 5], 96),
        (vec![7], 2880),
        (vec![2, 3, 4], 160),
    ] {
        let b = mxfp4_blocks(&mut r, &lead, cols)?;
        let got = mxfp4_dequant(&b, cols)?;
        let want = mxfp4_dequant_slow(&b, cols)?;
        assert_bits_eq(&format!("dequant {lead:?}x{cols}"), &got, &want);
    }
    Ok(())
}

#[test]
fn dequant_extreme_exponents_bit_exact() -> Result<()> {
    // e = 0, 1 are f32 subnormal scales (2^-128, 2^-127); e = 254, 255 the largest.
    let mut r = rng(12);
    let b = mxfp4_blocks(&mut r, &[4], 64)?;
    let mut bytes = b.flatten_all()?.to_vec1::<u8>()?;
    for (blk, e) in bytes
        .chunks_exact_mut(17)
        .zip([0u8, 1, 2, 127, 128, 200, 254, 255])
    {
        blk[0] = e;
    }
    let b = Tensor::from_vec(bytes, (4, 34), &Device::Cpu)?;
    assert_bits_eq(
        "dequant extreme e",
        &mxfp4_dequant(&b, 64)?,
        &mxfp4_dequant_slow(&b, 64)?,
    );
    Ok(())
}

#[test]
fn dequant_strided_blocks() -> Result<()> {
    let mut r = rng(13);
    let b = mxfp4_blocks(&mut r, &[6], 64)?; // (6, 34)
    let strided = b.t()?.contiguous()?.t()?; // same values, column-major layout
    assert!(!strided.is_contiguous());
    assert_bits_eq(
        "dequant strided",
        &mxfp4_dequant(&strided, 64)?,
        &mxfp4_dequant_slow(&b, 64)?,
    );
    Ok(())
}

/// Runs the matmul and its reference, with the magnitude `|x|·|W|ᵀ + |b|` for the bound.
fn check_matmul(name: &str, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    let got = mxfp4_matmul(x, w, bias)?;
    let want = mxfp4_matmul_slow(x, w, bias)?;
    let abs_bias = bias.map(|b| b.abs()).transpose()?;
    let mag = mxfp4_matmul_slow(&x.abs()?, &mxfp4_abs(w)?, abs_bias.as_ref())?;
    assert_close(name, &got, &want, &mag, MATMUL_TOL);
    Ok(())
}

#[test]
fn matmul_vs_reference() -> Result<()> {
    let mut r = rng(21);
    // (m, k, n): GEMV (m <= 2, fused decode) and GEMM paths, n not a multiple of 16.
    for (m, k, n) in [
        (1usize, 64usize, 5usize),
        (2, 96, 17),
        (3, 96, 40),
        (1, 2880, 37),
        (7, 2880, 33),
        (13, 320, 64),
    ] {
        let x = uniform(&mut r, &[m, k], -2.0, 2.0)?;
        let w = mxfp4_blocks(&mut r, &[n], k)?;
        let b = uniform(&mut r, &[n], -1.0, 1.0)?;
        check_matmul(&format!("matmul m{m} k{k} n{n}"), &x, &w, Some(&b))?;
        check_matmul(&format!("matmul m{m} k{k} n{n} no bias"), &x, &w, None)?;
    }
    Ok(())
}

#[test]
fn matmul_batched_and_strided_x() -> Result<()> {
    let mut r = rng(22);
    let (k, n) = (128, 19);
    let w = mxfp4_blocks(&mut r, &[n], k)?;
    let b = uniform(&mut r, &[n], -1.0, 1.0)?;
    let x3 = uniform(&mut r, &[2, 3, k], -1.0, 1.0)?; // (2, 3, k)
    let got = mxfp4_matmul(&x3, &w, Some(&b))?;
    assert_eq!(got.dims(), [2, 3, n]);
    check_matmul("matmul (2, 3, k)", &x3, &w, Some(&b))?;
    let xt = uniform(&mut r, &[k, 5], -1.0, 1.0)?.t()?; // (5, k) strided
    assert!(!xt.is_contiguous());
    check_matmul("matmul strided x", &xt, &w, Some(&b))?;
    Ok(())
}

#[test]
fn matmul_rejects_bad_inputs() -> Result<()> {
    let mut r = rng(23);
    let x = uniform(&mut r, &[2, 64], -1.0, 1.0)?;
    let w = mxfp4_blocks(&mut r, &[3], 64)?;
    let err = |res: Result<Tensor>| res.expect_err("must fail").to_string();
    let w_bad = mxfp4_blocks(&mut r, &[3], 96)?;
    assert!(err(mxfp4_matmul(&x, &w_bad, None)).contains("mxfp4_matmul"));
    let x_odd = uniform(&mut r, &[2, 48], -1.0, 1.0)?;
    assert!(err(mxfp4_matmul(&x_odd, &w, None)).contains("multiple of 32"));
    let b_bad = uniform(&mut r, &[4], -1.0, 1.0)?;
    assert!(err(mxfp4_matmul(&x, &w, Some(&b_bad))).contains("bias"));
    let w_f32 = w.to_dtype(DType::F32)?;
    assert!(err(mxfp4_matmul(&x, &w_f32, None)).contains("u8"));
    let x_f16 = x.to_dtype(DType::F16)?;
    assert!(err(mxfp4_matmul(&x_f16, &w, None)).contains("F32"));
    assert!(err(mxfp4_dequant(&w, 96)).contains("mxfp4_dequant"));
    Ok(())
}
