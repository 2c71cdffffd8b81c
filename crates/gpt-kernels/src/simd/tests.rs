//! Every instruction set this CPU runs (AVX-512, AVX2 and portable on a Zen 4), each format and
//! precision, against f64 sums of independently dequantized weights, on fresh random inputs
//! with ragged sizes (blocks per row odd and even, activation rows not multiples of 4, weight
//! rows not multiples of the task sizes).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::matmul::{dequant_rows, matmul, GEMV_MAX_M, Q8_MAX_M};
use super::quant::QuantRows;
use super::{dot_f32, dot_q8, CpuKernels, Format, Isa, Precision};
use crate::mxfp4::block::decode_block;

/// Random rows of `fmt`: MXFP4 exponents 118..=130, Q8_0 scales in [0.001, 0.05), int8 in
/// -127..=127 (ggml's quantizer never writes -128).
fn weights(rng: &mut StdRng, fmt: Format, n: usize, k: usize) -> Vec<u8> {
    let mut w = vec![0u8; n * fmt.row_bytes(k)];
    rng.fill(&mut w[..]);
    for b in w.chunks_exact_mut(fmt.block_bytes()) {
        match fmt {
            Format::Mxfp4 => b[0] = rng.random_range(118..=130),
            Format::Q8_0 => {
                let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
                b[..2].copy_from_slice(&d.to_le_bytes());
                for q in &mut b[2..] {
                    *q = rng.random_range(-127i8..=127) as u8;
                }
            }
        }
    }
    w
}

/// Row `r` dequantized independently of the kernels (MXFP4: the scalar block decoder; Q8_0:
/// `f16 · i8`).
fn reference_row(fmt: Format, w: &[u8], k: usize, r: usize) -> Vec<f32> {
    let row = &w[r * fmt.row_bytes(k)..(r + 1) * fmt.row_bytes(k)];
    let mut out = vec![0f32; k];
    for (b, o) in row
        .chunks_exact(fmt.block_bytes())
        .zip(out.chunks_exact_mut(32))
    {
        match fmt {
            Format::Mxfp4 => decode_block(b, o),
            Format::Q8_0 => {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (v, q) in o.iter_mut().zip(&b[2..]) {
                    *v = d * f32::from(*q as i8);
                }
            }
        }
    }
    out
}

fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn kernels(isa: Isa, precision: Precision) -> CpuKernels {
    CpuKernels::new(isa, precision).expect("Isa::runnable lists only runnable sets")
}

#[test]
fn the_row_kernels_equal_f64_sums_on_every_isa() {
    let mut rng = StdRng::seed_from_u64(7);
    for fmt in [Format::Mxfp4, Format::Q8_0] {
        for k in [32usize, 96, 160, 2880] {
            let w = weights(&mut rng, fmt, 3, k);
            for m in [1usize, 2, 3, 4, 5, 7, 8, 9, 13, 16] {
                let x = randn(&mut rng, m * k);
                let xq = QuantRows::new(&x, k, fmt);
                for r in 0..3 {
                    let wr = reference_row(fmt, &w, k, r);
                    let row = &w[r * fmt.row_bytes(k)..(r + 1) * fmt.row_bytes(k)];
                    for isa in Isa::runnable() {
                        let mut exact = vec![0f32; m];
                        dot_f32(kernels(isa, Precision::Exact), fmt, row, &x, k, &mut exact);
                        let mut fast = vec![0f32; m];
                        dot_q8(
                            kernels(isa, Precision::Fast),
                            fmt,
                            row,
                            xq.slice(0, m),
                            &mut fast,
                        );
                        for i in 0..m {
                            let xi = &x[i * k..(i + 1) * k];
                            let want: f64 = wr.iter().zip(xi).map(|(a, b)| f64::from(a * b)).sum();
                            let mag: f64 = wr
                                .iter()
                                .zip(xi)
                                .map(|(a, b)| f64::from((a * b).abs()))
                                .sum();
                            let err = (f64::from(exact[i]) - want).abs();
                            assert!(
                                err <= 1e-6 * mag + 1e-30,
                                "{isa:?} {fmt:?} exact k {k} m {m} row {i}: {} vs {want} (|.| sum {mag})",
                                exact[i]
                            );
                            // Rounding each activation moves it by at most half its block's step.
                            let (_, d) = xq.row(i);
                            let bound: f64 = wr
                                .chunks_exact(32)
                                .zip(d)
                                .map(|(wb, &db)| {
                                    0.5 * f64::from(db)
                                        * wb.iter().map(|v| f64::from(v.abs())).sum::<f64>()
                                })
                                .sum();
                            let err = (f64::from(fast[i]) - want).abs();
                            assert!(
                                err <= 1.01 * bound + 1e-5 * mag,
                                "{isa:?} {fmt:?} fast k {k} m {m} row {i}: {} vs {want} (bound {bound})",
                                fast[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dequantized_rows_equal_the_reference_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(8);
    for fmt in [Format::Mxfp4, Format::Q8_0] {
        let (n, k) = (5, 224);
        let w = weights(&mut rng, fmt, n, k);
        let want: Vec<f32> = (0..n).flat_map(|r| reference_row(fmt, &w, k, r)).collect();
        for isa in Isa::runnable() {
            let got = dequant_rows(kernels(isa, Precision::Exact), fmt, &w, (n, k));
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?} {fmt:?}"
            );
        }
    }
}

/// Both matmul paths (GEMV up to `GEMV_MAX_M` rows, int8 activations in fast precision up to
/// `Q8_MAX_M`, tiled GEMM above), with a bias, weight rows not a multiple of either task size.
#[test]
fn matmul_equals_f64_on_both_paths_and_every_isa() {
    let mut rng = StdRng::seed_from_u64(9);
    // n odd: the exact kernels' weight-row pairs leave one row.
    let (n, k) = (151, 96);
    for fmt in [Format::Mxfp4, Format::Q8_0] {
        let w = weights(&mut rng, fmt, n, k);
        let bias = randn(&mut rng, n);
        let rows: Vec<Vec<f32>> = (0..n).map(|r| reference_row(fmt, &w, k, r)).collect();
        for m in [
            1usize,
            2,
            3,
            5,
            8,
            9,
            12,
            Q8_MAX_M,
            Q8_MAX_M + 1,
            37,
            GEMV_MAX_M + 1,
        ] {
            let x = randn(&mut rng, m * k);
            for isa in Isa::runnable() {
                for precision in [Precision::Exact, Precision::Fast] {
                    let y = matmul(kernels(isa, precision), fmt, &x, (m, k, n), &w, Some(&bias));
                    let fast = precision == Precision::Fast && m <= Q8_MAX_M;
                    for i in 0..m {
                        for (j, wr) in rows.iter().enumerate() {
                            let xi = &x[i * k..(i + 1) * k];
                            let dot: f64 = wr.iter().zip(xi).map(|(a, b)| f64::from(a * b)).sum();
                            let mag: f64 = wr
                                .iter()
                                .zip(xi)
                                .map(|(a, b)| f64::from((a * b).abs()))
                                .sum();
                            let want = dot + f64::from(bias[j]);
                            let tol = if fast { 2e-2 * mag } else { 1e-5 * mag + 1e-6 };
                            let got = f64::from(y[i * n + j]);
                            assert!(
                                (got - want).abs() <= tol,
                                "{isa:?} {fmt:?} {precision:?} m {m} ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_detected_isa_is_runnable() {
    assert!(Isa::runnable().contains(&Isa::detected()));
    assert!(Isa::runnable().contains(&Isa::Portable));
}

/// A narrow matrix (k = 64) tall enough for two GEMM tiles (up to 4096 rows each).
#[test]
fn the_tiled_gemm_covers_every_row_of_a_tall_narrow_matrix() {
    let mut rng = StdRng::seed_from_u64(10);
    let (m, n, k) = (GEMV_MAX_M + 3, 4100, 64);
    let w = weights(&mut rng, Format::Q8_0, n, k);
    let x = randn(&mut rng, m * k);
    let y = matmul(
        kernels(Isa::detected(), Precision::Exact),
        Format::Q8_0,
        &x,
        (m, k, n),
        &w,
        None,
    );
    for j in [0, 1, 4095, 4096, 4099] {
        let wr = reference_row(Format::Q8_0, &w, k, j);
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            let want: f64 = wr.iter().zip(xi).map(|(a, b)| f64::from(a * b)).sum();
            let mag: f64 = wr
                .iter()
                .zip(xi)
                .map(|(a, b)| f64::from((a * b).abs()))
                .sum();
            assert!(
                (f64::from(y[i * n + j]) - want).abs() <= 1e-5 * mag + 1e-6,
                "({i}, {j})"
            );
        }
    }
}
