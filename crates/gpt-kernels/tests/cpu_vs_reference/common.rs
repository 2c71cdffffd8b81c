//! Shared helpers: seeded random tensors and a tolerance check that reports max abs error,
//! max relative error and NMSE.

use candle_core::{DType, Device, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeded RNG; `GPT_KERNELS_SEED` shifts every seed to explore other inputs.
pub fn rng(seed: u64) -> StdRng {
    let base = std::env::var("GPT_KERNELS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    StdRng::seed_from_u64(base.wrapping_mul(1_000_003).wrapping_add(seed))
}

/// Uniform f32 in `[lo, hi)` with the given shape.
pub fn uniform(rng: &mut StdRng, dims: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Random MXFP4 rows: U8 `(lead.., cols/32·17)`, exponents in 115..130 (scales 2^-13..2^1),
/// uniformly random nibbles.
pub fn mxfp4_blocks(rng: &mut StdRng, lead: &[usize], cols: usize) -> Result<Tensor> {
    let rows: usize = lead.iter().product();
    let mut bytes = vec![0u8; rows * cols / 32 * 17];
    rng.fill(&mut bytes[..]);
    for b in bytes.chunks_exact_mut(17) {
        b[0] = rng.random_range(115..130);
    }
    let mut dims = lead.to_vec();
    dims.push(cols / 32 * 17);
    Tensor::from_vec(bytes, dims, &Device::Cpu)
}

/// MXFP4 bytes of |W|: clearing bit 3 of every nibble maps code c to c & 7, and
/// KVALUES[c & 7] = |KVALUES[c]|.
pub fn mxfp4_abs(blocks: &Tensor) -> Result<Tensor> {
    let mut bytes = blocks.flatten_all()?.to_vec1::<u8>()?;
    for b in bytes.chunks_exact_mut(17) {
        b[1..].iter_mut().for_each(|q| *q &= 0x77);
    }
    Tensor::from_vec(bytes, blocks.dims(), &Device::Cpu)
}

/// Error bound `|got − want| <= abs + rel · mag` per element.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

/// Checks `got` against `want` elementwise. `mag` is the per-element magnitude the relative
/// bound refers to: `|want|` for elementwise ops, `Σ |x_i w_i|` (the condition scale) for dot
/// products, `max |v|` for attention. Prints max abs error, max relative error and NMSE.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, mag: &Tensor, tol: Tol) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
    let flat = |t: &Tensor| -> Vec<f32> {
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("tensor to vec")
    };
    let (g, w) = (flat(got), flat(want));
    let m = flat(&mag.broadcast_as(want.dims()).expect("mag broadcast"));
    let (mut max_abs, mut max_rel, mut se, mut sw) = (0f64, 0f64, 0f64, 0f64);
    let mut worst = None;
    for i in 0..g.len() {
        assert!(
            g[i].is_finite(),
            "{name}: non-finite output {} at {i}",
            g[i]
        );
        let err = (g[i] - w[i]).abs();
        let bound = tol.abs + tol.rel * m[i].abs();
        if err > bound && worst.is_none() {
            worst = Some((i, g[i], w[i], bound));
        }
        max_abs = max_abs.max(f64::from(err));
        if m[i] != 0.0 {
            max_rel = max_rel.max(f64::from(err / m[i].abs()));
        }
        se += f64::from(err).powi(2);
        sw += f64::from(w[i]).powi(2);
    }
    let nmse = if sw > 0.0 { se / sw } else { se };
    eprintln!("{name}: max_abs {max_abs:.3e} max_rel {max_rel:.3e} nmse {nmse:.3e}");
    if let Some((i, gi, wi, bound)) = worst {
        panic!("{name}: element {i}: got {gi}, want {wi}, |err| > {bound:e} ({tol:?})");
    }
    assert!(
        sw > 0.0,
        "{name}: reference is all zeros; the test would be vacuous"
    );
}

/// Asserts bit equality of two f32 tensors.
pub fn assert_bits_eq(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let g = got
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("got");
    let w = want
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("want");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{name}: element {i}: {a} vs {b}");
    }
    assert!(
        w.iter().any(|&v| v != 0.0),
        "{name}: reference is all zeros"
    );
}
