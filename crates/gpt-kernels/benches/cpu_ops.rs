//! CPU benchmarks of the MXFP4 kernels at GPT-OSS-20B decode sizes.
//!
//! Throughput is reported in weight bytes read per call, so criterion's GB/s can be compared
//! with the machine's memory bandwidth. Run briefly with
//! `cargo bench -p gpt-kernels --bench cpu_ops -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt_kernels::{moe_mxfp4_matmul, mxfp4_matmul};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Hidden size and expert width of GPT-OSS-20B.
const HIDDEN: usize = 2880;
/// Experts and experts per token of GPT-OSS-20B.
const EXPERTS: usize = 32;
const TOP_K: usize = 4;
/// Bytes of one MXFP4 row of HIDDEN elements.
const ROW_BYTES: usize = HIDDEN / 32 * 17;

/// Random MXFP4 bytes with exponents in 115..130 (finite, realistic scales).
fn mxfp4_bytes(rng: &mut StdRng, rows: usize) -> Vec<u8> {
    let mut v = vec![0u8; rows * ROW_BYTES];
    rng.fill(&mut v[..]);
    for b in v.chunks_exact_mut(17) {
        b[0] = rng.random_range(115..130);
    }
    v
}

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn bench_gemv(c: &mut Criterion) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(1);
    let w = Tensor::from_vec(mxfp4_bytes(&mut rng, HIDDEN), (HIDDEN, ROW_BYTES), &dev)?;
    let x = Tensor::from_vec(random_f32(&mut rng, HIDDEN), (1, HIDDEN), &dev)?;
    let b = Tensor::from_vec(random_f32(&mut rng, HIDDEN), HIDDEN, &dev)?;
    let mut g = c.benchmark_group("mxfp4_matmul");
    g.throughput(Throughput::Bytes((HIDDEN * ROW_BYTES) as u64));
    g.bench_function("gemv_1x2880_2880x2880", |bench| {
        bench.iter(|| mxfp4_matmul(black_box(&x), black_box(&w), Some(&b)))
    });
    g.finish();
    Ok(())
}

fn bench_moe_decode(c: &mut Criterion) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(2);
    let w = Tensor::from_vec(
        mxfp4_bytes(&mut rng, EXPERTS * HIDDEN),
        (EXPERTS, HIDDEN, ROW_BYTES),
        &dev,
    )?;
    let bias = Tensor::from_vec(
        random_f32(&mut rng, EXPERTS * HIDDEN),
        (EXPERTS, HIDDEN),
        &dev,
    )?;
    let x = Tensor::from_vec(random_f32(&mut rng, HIDDEN), (1, HIDDEN), &dev)?;
    let ids = Tensor::from_vec(vec![3u32, 17, 8, 30], (1, TOP_K), &dev)?;
    let mut g = c.benchmark_group("moe_mxfp4_matmul");
    g.throughput(Throughput::Bytes((TOP_K * HIDDEN * ROW_BYTES) as u64));
    g.bench_function("decode_t1_top4_of_32_2880x2880", |bench| {
        bench.iter(|| moe_mxfp4_matmul(black_box(&x), black_box(&w), Some(&bias), &ids))
    });
    g.finish();
    Ok(())
}

fn benches(c: &mut Criterion) {
    if let Err(e) = bench_gemv(c) {
        eprintln!("mxfp4_matmul bench failed: {e}");
    }
    if let Err(e) = bench_moe_decode(c) {
        eprintln!("moe bench failed: {e}");
    }
}

criterion_group!(cpu_ops, benches);
criterion_main!(cpu_ops);
