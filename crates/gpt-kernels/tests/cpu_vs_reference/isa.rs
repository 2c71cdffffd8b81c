//! The quantized matmul ops on every instruction set this CPU runs (`Isa::runnable`: AVX-512,
//! AVX2 and portable on an AVX-512 machine), at both precisions, against the slow references,
//! with ragged shapes (rows not multiples of the kernels' 4-row groups or task sizes, odd
//! block counts) on fresh random inputs, through the public `*_with` entry points.

use candle_core::{Device, Result, Tensor};
use gpt_kernels::reference::{moe_mxfp4_matmul_slow, mxfp4_matmul_slow, q8_0_matmul_slow};
use gpt_kernels::{moe_mxfp4_matmul_with, mxfp4_matmul_with, q8_0_matmul_with};
use gpt_kernels::{CpuKernels, Isa, Precision};
use rand::Rng;

use crate::common::{assert_close, mxfp4_abs, mxfp4_blocks, rng, uniform, Tol};

/// Exact: f32 sums in another order than candle's matmul (see `mxfp4::MATMUL_TOL`).
const EXACT: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
};
/// Fast: each activation moves by at most half its block's int8 step, max|x|/254, so the dot
/// moves by at most Σ|w|·max|x|/254; with |x| < 1 that is below Σ|x w| / 254 · (max|x|/|x|).
/// The bound used is 2% of the condition scale Σ|x||w| plus 2e-3 · Σ|w| (inputs in [-1, 1)).
const FAST: Tol = Tol {
    abs: 1e-4,
    rel: 2e-2,
};

fn all() -> Vec<CpuKernels> {
    let mut v = Vec::new();
    for isa in Isa::runnable() {
        for p in [Precision::Exact, Precision::Fast] {
            v.push(CpuKernels::new(isa, p).expect("runnable"));
        }
    }
    v
}

fn tol(cpu: CpuKernels, m: usize) -> Tol {
    // Products of more than one row (`simd::matmul::Q8_MAX_M`) run in f32 at either precision.
    if cpu.precision() == Precision::Fast && m <= 1 {
        FAST
    } else {
        EXACT
    }
}

/// Random Q8_0 rows `(n, k/32·34)`: f16 scales in [0.002, 0.02), int8 in -127..=127.
fn q8_blocks(r: &mut rand::rngs::StdRng, n: usize, k: usize) -> Result<(Tensor, Tensor)> {
    let mut bytes = vec![0u8; n * k / 32 * 34];
    let mut abs = bytes.clone();
    for (b, a) in bytes.chunks_exact_mut(34).zip(abs.chunks_exact_mut(34)) {
        let d = half::f16::from_f32(r.random_range(0.002f32..0.02)).to_le_bytes();
        b[..2].copy_from_slice(&d);
        a[..2].copy_from_slice(&d);
        for (q, qa) in b[2..].iter_mut().zip(&mut a[2..]) {
            let v = r.random_range(-127i8..=127);
            *q = v as u8;
            *qa = v.unsigned_abs();
        }
    }
    let dev = &Device::Cpu;
    Ok((
        Tensor::from_vec(bytes, (n, k / 32 * 34), dev)?,
        Tensor::from_vec(abs, (n, k / 32 * 34), dev)?,
    ))
}

#[test]
fn q8_0_matmul_on_every_isa_vs_candle_dequant() -> Result<()> {
    let mut r = rng(41);
    for (m, n, k) in [
        (1usize, 37usize, 96usize),
        (3, 130, 160),
        (5, 16, 2880),
        (13, 40, 224),
    ] {
        let x = uniform(&mut r, &[m, k], -1.0, 1.0)?;
        let b = uniform(&mut r, &[n], -1.0, 1.0)?;
        let (w, wabs) = q8_blocks(&mut r, n, k)?;
        let want = q8_0_matmul_slow(&x, &w, Some(&b))?;
        let mag = q8_0_matmul_slow(&x.abs()?, &wabs, None)?;
        for cpu in all() {
            let got = q8_0_matmul_with(&x, &w, Some(&b), cpu)?;
            assert_close(
                &format!("q8_0 {cpu:?} {m}x{n}x{k}"),
                &got,
                &want,
                &mag,
                tol(cpu, m),
            );
        }
    }
    Ok(())
}

/// A Q8_0 matrix with quants of −128 (ggml writes −127..=127; other writers may not): the int8
/// kernels move x's sign onto the weight and −128 has no positive twin, so `q8_0_kernels_for`
/// gives such a matrix the exact kernels of the same instruction set, which match the reference;
/// the same matrix without them keeps the kernels as given.
#[test]
fn q8_0_with_minus_128_takes_the_exact_kernels() -> Result<()> {
    use gpt_kernels::q8::{q8_0_fast_safe, q8_0_kernels_for};
    let mut r = rng(43);
    let (m, n, k) = (1usize, 37usize, 2880usize);
    let x = uniform(&mut r, &[m, k], -1.0, 1.0)?;
    let (clean, _) = q8_blocks(&mut r, n, k)?;
    assert!(q8_0_fast_safe(&clean)?, "no quant of -128 yet");
    for cpu in all() {
        assert_eq!(q8_0_kernels_for(&clean, cpu)?, cpu);
    }
    // Every fifth quant to -128; the magnitudes' matrix holds 127 there (as i8 bytes).
    let mut bytes = clean.flatten_all()?.to_vec1::<u8>()?;
    let mut abs = bytes.clone();
    for (i, (b, a)) in bytes
        .chunks_exact_mut(34)
        .zip(abs.chunks_exact_mut(34))
        .enumerate()
    {
        for (j, (q, qa)) in b[2..].iter_mut().zip(&mut a[2..]).enumerate() {
            if (i + j) % 5 == 0 {
                *q = 0x80;
            }
            *qa = (*q as i8).unsigned_abs().min(127);
        }
    }
    let dev = &Device::Cpu;
    let w = Tensor::from_vec(bytes, (n, k / 32 * 34), dev)?;
    let wabs = Tensor::from_vec(abs, (n, k / 32 * 34), dev)?;
    assert!(!q8_0_fast_safe(&w)?, "quants of -128");
    let want = q8_0_matmul_slow(&x, &w, None)?;
    let mag = q8_0_matmul_slow(&x.abs()?, &wabs, None)?;
    for cpu in all() {
        let chosen = q8_0_kernels_for(&w, cpu)?;
        assert_eq!(
            (chosen.isa(), chosen.precision()),
            (cpu.isa(), Precision::Exact)
        );
        let got = q8_0_matmul_with(&x, &w, None, chosen)?;
        assert_close(&format!("q8_0 -128 {cpu:?}"), &got, &want, &mag, EXACT);
    }
    Ok(())
}

#[test]
fn mxfp4_matmul_on_every_isa_vs_reference() -> Result<()> {
    let mut r = rng(42);
    for (m, n, k) in [
        (1usize, 33usize, 64usize),
        (2, 70, 2880),
        (7, 16, 96),
        (11, 48, 160),
    ] {
        let x = uniform(&mut r, &[m, k], -1.0, 1.0)?;
        let b = uniform(&mut r, &[n], -1.0, 1.0)?;
        let w = mxfp4_blocks(&mut r, &[n], k)?;
        let want = mxfp4_matmul_slow(&x, &w, Some(&b))?;
        let mag = mxfp4_matmul_slow(&x.abs()?, &mxfp4_abs(&w)?, None)?;
        for cpu in all() {
            let got = mxfp4_matmul_with(&x, &w, Some(&b), cpu)?;
            assert_close(
                &format!("mxfp4 {cpu:?} {m}x{n}x{k}"),
                &got,
                &want,
                &mag,
                tol(cpu, m),
            );
        }
    }
    Ok(())
}

#[test]
fn moe_matmul_on_every_isa_vs_reference() -> Result<()> {
    let mut r = rng(43);
    let (t, top_k, e, n, k) = (5usize, 3usize, 6usize, 20usize, 96usize);
    let w = mxfp4_blocks(&mut r, &[e, n], k)?;
    let b = uniform(&mut r, &[e, n], -1.0, 1.0)?;
    let ids: Vec<u32> = (0..t * top_k)
        .map(|_| r.random_range(0..e as u32))
        .collect();
    let ids = Tensor::from_vec(ids, (t, top_k), &Device::Cpu)?;
    for x in [
        uniform(&mut r, &[t, k], -1.0, 1.0)?,
        uniform(&mut r, &[t, top_k, k], -1.0, 1.0)?,
    ] {
        let want = moe_mxfp4_matmul_slow(&x, &w, Some(&b), &ids)?;
        let mag = moe_mxfp4_matmul_slow(&x.abs()?, &mxfp4_abs(&w)?, None, &ids)?;
        for cpu in all() {
            let got = moe_mxfp4_matmul_with(&x, &w, Some(&b), &ids, cpu)?;
            // At most t · top_k = 15 rows per expert here: the GEMV path unless all agree.
            assert_close(
                &format!("moe {cpu:?} x {:?}", x.dims()),
                &got,
                &want,
                &mag,
                tol(cpu, 1),
            );
        }
    }
    Ok(())
}
