//! CPU benchmarks of the quantized matmul kernels at GPT-OSS-20B sizes, next to this machine's
//! own ceilings.
//!
//! * `memory/read`: a 1 GiB buffer summed on every core (rayon) — the bandwidth a decode GEMV
//!   can reach; criterion's GB/s.
//! * `gemv/*`: one activation row against weight matrices far larger than the caches (the
//!   decode case), throughput in weight bytes read: compare with `memory/read`.
//! * `gemm/f32_peak`: the `gemm` crate on cache-resident f32 matrices — the FMA rate the
//!   prefill can reach; `gemm/*` prefill-sized products, throughput in FLOP (criterion's
//!   "elem/s" = FLOP/s).
//!
//! Run briefly with
//! `cargo bench -p gpt-kernels --bench cpu_ops -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt_kernels::{moe_mxfp4_matmul_with, mxfp4_matmul_with, q8_0_matmul_with};
use gpt_kernels::{CpuKernels, Precision};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Hidden size of GPT-OSS-20B.
const HIDDEN: usize = 2880;
/// Weight rows of the GEMV benchmarks: 64 Ki rows (100 MiB of MXFP4, 200 MiB of Q8_0).
const GEMV_ROWS: usize = 65536;

fn mxfp4_bytes(rng: &mut StdRng, rows: usize, k: usize) -> Vec<u8> {
    let mut v = vec![0u8; rows * k / 32 * 17];
    rng.fill(&mut v[..]);
    for b in v.chunks_exact_mut(17) {
        b[0] = rng.random_range(115..130);
    }
    v
}

fn q8_bytes(rng: &mut StdRng, rows: usize, k: usize) -> Vec<u8> {
    let mut v = vec![0u8; rows * k / 32 * 34];
    rng.fill(&mut v[..]);
    for b in v.chunks_exact_mut(34) {
        let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
        b[..2].copy_from_slice(&d.to_le_bytes());
    }
    v
}

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn bench_memory(c: &mut Criterion) {
    let buf = vec![1f32; 1 << 28];
    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Bytes((buf.len() * 4) as u64));
    g.bench_function("read", |b| {
        b.iter(|| {
            buf.par_chunks(1 << 16)
                .map(|c| {
                    // 16 independent lanes: vectorized, not bound by one add chain.
                    let mut acc = [0f32; 16];
                    for v in c.chunks_exact(16) {
                        for (a, x) in acc.iter_mut().zip(v) {
                            *a += x;
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum::<f32>()
        })
    });
    g.finish();
}

fn bench_gemv(c: &mut Criterion) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(1);
    let x = Tensor::from_vec(random_f32(&mut rng, HIDDEN), (1, HIDDEN), &dev)?;
    let mx = mxfp4_bytes(&mut rng, GEMV_ROWS, HIDDEN);
    let q8 = q8_bytes(&mut rng, GEMV_ROWS, HIDDEN);
    let mut g = c.benchmark_group("gemv");
    for (name, bytes) in [("mxfp4", mx), ("q8_0", q8)] {
        let row = bytes.len() / GEMV_ROWS;
        let w = Tensor::from_vec(bytes, (GEMV_ROWS, row), &dev)?;
        g.throughput(Throughput::Bytes((GEMV_ROWS * row) as u64));
        for precision in [Precision::Exact, Precision::Fast] {
            let cpu = CpuKernels::detected(precision);
            let id = format!("{name}_{precision:?}_1x{HIDDEN}_{GEMV_ROWS}x{HIDDEN}");
            g.bench_function(id, |b| {
                b.iter(|| match name {
                    "mxfp4" => mxfp4_matmul_with(black_box(&x), &w, None, cpu),
                    _ => q8_0_matmul_with(black_box(&x), &w, None, cpu),
                })
            });
        }
    }
    // Cache-resident (1024 rows, 1.5 / 3 MiB): the kernels' compute rate with the memory
    // ceiling mostly lifted.
    const CACHED: usize = 1024;
    for (name, bytes) in [
        ("mxfp4", mxfp4_bytes(&mut rng, CACHED, HIDDEN)),
        ("q8_0", q8_bytes(&mut rng, CACHED, HIDDEN)),
    ] {
        let row = bytes.len() / CACHED;
        let w = Tensor::from_vec(bytes, (CACHED, row), &dev)?;
        // 16 calls per iteration from inside the pool, as the engine's forward makes them: no
        // thread hand-off per call.
        g.throughput(Throughput::Bytes((16 * CACHED * row) as u64));
        for precision in [Precision::Exact, Precision::Fast] {
            let cpu = CpuKernels::detected(precision);
            g.bench_function(
                format!("{name}_{precision:?}_cached_1x{HIDDEN}_{CACHED}x{HIDDEN}"),
                |b| {
                    b.iter(|| {
                        rayon::scope(|_| {
                            for _ in 0..16 {
                                let y = match name {
                                    "mxfp4" => mxfp4_matmul_with(black_box(&x), &w, None, cpu),
                                    _ => q8_0_matmul_with(black_box(&x), &w, None, cpu),
                                };
                                black_box(y).ok();
                            }
                        })
                    })
                },
            );
        }
    }
    // The tiny model's output head (201,088 rows of 64, Q8_0: 13.1 MiB of 68-byte rows), one
    // activation row, called from inside the pool: the four-row kernels' narrow case, most of a
    // tiny-model decode step and ~40% of its 64-token prefill.
    const VOCAB: usize = 201_088;
    const NARROW: usize = 64;
    let xn = Tensor::from_vec(random_f32(&mut rng, NARROW), (1, NARROW), &dev)?;
    let bytes = q8_bytes(&mut rng, VOCAB, NARROW);
    let row = bytes.len() / VOCAB;
    let w = Tensor::from_vec(bytes, (VOCAB, row), &dev)?;
    g.throughput(Throughput::Bytes((VOCAB * row) as u64));
    for precision in [Precision::Exact, Precision::Fast] {
        let cpu = CpuKernels::detected(precision);
        g.bench_function(
            format!("q8_0_{precision:?}_head_1x{NARROW}_{VOCAB}x{NARROW}"),
            |b| b.iter(|| rayon::scope(|_| q8_0_matmul_with(black_box(&xn), &w, None, cpu))),
        );
    }
    // The MoE decode: 4 of 32 experts (2880 x 2880 each) for one token.
    let (e, top_k) = (32, 4);
    let w = Tensor::from_vec(
        mxfp4_bytes(&mut rng, e * HIDDEN, HIDDEN),
        (e, HIDDEN, HIDDEN / 32 * 17),
        &dev,
    )?;
    let ids = Tensor::from_vec(vec![3u32, 17, 8, 30], (1, top_k), &dev)?;
    g.throughput(Throughput::Bytes(
        (top_k * HIDDEN * HIDDEN / 32 * 17) as u64,
    ));
    for precision in [Precision::Exact, Precision::Fast] {
        let cpu = CpuKernels::detected(precision);
        g.bench_function(format!("moe_{precision:?}_top4_of_32_2880x2880"), |b| {
            b.iter(|| moe_mxfp4_matmul_with(black_box(&x), &w, None, &ids, cpu))
        });
    }
    g.finish();
    Ok(())
}

fn bench_gemm(c: &mut Criterion) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = c.benchmark_group("gemm");
    let n = 512;
    let a = Tensor::from_vec(random_f32(&mut rng, n * n), (n, n), &dev)?;
    let bt = Tensor::from_vec(random_f32(&mut rng, n * n), (n, n), &dev)?;
    g.throughput(Throughput::Elements((2 * n * n * n) as u64));
    g.bench_function("f32_peak_512", |b| b.iter(|| black_box(&a).matmul(&bt)));
    let (m, rows) = (512, 2880);
    let x = Tensor::from_vec(random_f32(&mut rng, m * HIDDEN), (m, HIDDEN), &dev)?;
    g.throughput(Throughput::Elements((2 * m * rows * HIDDEN) as u64));
    for (name, bytes) in [
        ("mxfp4", mxfp4_bytes(&mut rng, rows, HIDDEN)),
        ("q8_0", q8_bytes(&mut rng, rows, HIDDEN)),
    ] {
        let row = bytes.len() / rows;
        let w = Tensor::from_vec(bytes, (rows, row), &dev)?;
        let cpu = CpuKernels::detected(Precision::Exact);
        g.bench_function(format!("{name}_{m}x{HIDDEN}_{rows}x{HIDDEN}"), |b| {
            b.iter(|| match name {
                "mxfp4" => mxfp4_matmul_with(black_box(&x), &w, None, cpu),
                _ => q8_0_matmul_with(black_box(&x), &w, None, cpu),
            })
        });
    }
    g.finish();
    Ok(())
}

fn benches(c: &mut Criterion) {
    bench_memory(c);
    if let Err(e) = bench_gemv(c) {
        eprintln!("gemv benches failed: {e}");
    }
    if let Err(e) = bench_gemm(c) {
        eprintln!("gemm benches failed: {e}");
    }
}

criterion_group!(cpu_ops, benches);
criterion_main!(cpu_ops);
