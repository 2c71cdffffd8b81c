//! Device tests of the f16 KV cache. Every kernel that reads or writes a KV cache has an f16
//! instance beside its f32 one (`kernels/kv.cuh`); each is checked against the f32 instance on
//! the same values rounded to f16, **bit for bit**: the f16 kernels round what they write to
//! nearest (as `half::f16::from_f32`) and widen what they read to exactly the f32 values the
//! f32 kernels read, and do the same arithmetic after that. The f32 instances are checked
//! against CPU loops in `cuda_decode`. The paged attention op is also run on f16 buffers on the
//! CPU (which widens them) and compared within `cuda_decode`'s bound.
//!
//! Needs a GPU: `cargo xtask cuda-build` builds this binary (`cuda_kv`). The seed is printed;
//! replay with `GPTOSS_TEST_SEED=<seed>`.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{paged_pool, seeded_rng as rng, SplitWeights};
use gpt_kernels::cuda::decode::{
    tensor_ptr, AttnRows, CombineOut, DecodeKernels, KvPtrs, Q8Ptrs, QVec,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn p(t: &Tensor) -> u64 {
    tensor_ptr(t).expect("device pointer")
}

fn random(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `v` rounded to f16 and widened back.
fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
}

/// A tensor's elements (F32 or F16) as f32.
fn host(t: &Tensor) -> R<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// The same values as an f32 and as an f16 device buffer of `shape`.
fn both(v: &[f32], shape: &[usize], dev: &Device) -> R<(Tensor, Tensor)> {
    let f = Tensor::from_vec(v.to_vec(), shape, dev)?;
    Ok((f.clone(), f.to_dtype(DType::F16)?))
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}: element {i}: {a} vs {b}");
    }
}

/// The fused QKV + RoPE writes its k and v rows into f16 caches as the f32 caches' rows
/// rounded (q unchanged); the split attention with its combine reads f16 caches, flat and
/// through a shuffled block table, as the f32 instance reads the rounded values. Head dims 64
/// and 32, with and without a window (a two-plane matrix then), 1, 3 and 7 splits.
#[test]
fn f16_caches_written_and_read_as_rounded_f32() -> R<()> {
    let mut rng = rng("f16 decode caches");
    let dev = Device::new_cuda(0)?;
    let k = DecodeKernels::new(dev.as_cuda_device()?)?;
    let (hq, hkv, dm, cap) = (8, 2, 128, 200);
    for hd in [64usize, 32] {
        for window in [0usize, 40] {
            let rows = (hq + 2 * hkv) * hd;
            let w = SplitWeights::random(&mut rng, rows * dm, window > 0, (0.001, 0.01));
            let (qst, lot, sct) = (
                Tensor::from_vec(w.qs, rows * dm, &dev)?,
                Tensor::from_vec(w.lo, rows * dm, &dev)?,
                Tensor::from_vec(w.d, rows * dm / 32, &dev)?,
            );
            let bias = Tensor::from_vec(random(&mut rng, rows, -0.5, 0.5), rows, &dev)?;
            let xt = Tensor::from_vec(random(&mut rng, dm, -2.0, 2.0), dm, &dev)?;
            let (xh, xl, xd) = (
                Tensor::zeros(dm, DType::U8, &dev)?,
                Tensor::zeros(dm, DType::U8, &dev)?,
                Tensor::zeros(dm / 32, DType::F32, &dev)?,
            );
            let xq = QVec {
                hi: p(&xh),
                lo: p(&xl),
                d: p(&xd),
            };
            k.quant(p(&xt), dm / 32, xq, false)?;
            // Earlier rows: the same (rounded) values in both caches.
            let n = cap * hkv * hd;
            let (k32, k16) = both(&round16(&random(&mut rng, n, -1.0, 1.0)), &[n], &dev)?;
            let (v32, v16) = both(&round16(&random(&mut rng, n, -1.0, 1.0)), &[n], &dev)?;
            // Layer 1; the token at 170 writes row 150 (key offset 20).
            let (pos, row) = (170i32, 150i32);
            let params: Vec<u32> = [pos, 7, 9, 11, row, row + 1, pos - row]
                .iter()
                .map(|&v| v as u32)
                .collect();
            let pt = Tensor::from_vec(params.clone(), params.len(), &dev)?;
            let inv = Tensor::from_vec(random(&mut rng, hd / 2, 0.001, 1.0), hd / 2, &dev)?;
            let qkv = |kv: KvPtrs, q: &Tensor| {
                let wp = Q8Ptrs {
                    qs: p(&qst),
                    lo: if window > 0 { p(&lot) } else { 0 },
                    d: p(&sct),
                };
                let dims = (hq, hkv, hd);
                k.qkv_rope(
                    wp,
                    p(&bias),
                    xq,
                    dm,
                    dims,
                    p(&inv),
                    1.2,
                    p(&pt),
                    1,
                    p(q),
                    kv,
                )
            };
            let (q32, q16) = (
                Tensor::zeros(hq * hd, DType::F32, &dev)?,
                Tensor::zeros(hq * hd, DType::F32, &dev)?,
            );
            qkv(KvPtrs::of(&k32, &v32)?, &q32)?;
            qkv(KvPtrs::of(&k16, &v16)?, &q16)?;
            let what = format!("hd {hd} window {window}");
            assert_bits(&format!("{what}: q"), &host(&q16)?, &host(&q32)?);
            let (kr, vr) = (round16(&host(&k32)?), round16(&host(&v32)?));
            assert_bits(&format!("{what}: k cache"), &host(&k16)?, &kr);
            assert_bits(&format!("{what}: v cache"), &host(&v16)?, &vr);
            let at = row as usize * hkv * hd;
            assert!(
                kr[at..at + hkv * hd].iter().any(|x| x.fract() != 0.0),
                "{what}: the new row was written"
            );

            // The split attention on the f16 caches against the f32 instance on the rounded
            // values; then both through a block table over a shuffled pool.
            let (k32r, v32r) = (
                Tensor::from_vec(kr.clone(), n, &dev)?,
                Tensor::from_vec(vr.clone(), n, &dev)?,
            );
            let bs = 16usize;
            let nb = cap.div_ceil(bs) + 1;
            let mut perm: Vec<u32> = (0..nb as u32).collect();
            perm.shuffle(&mut rng);
            let kp = paged_pool(&kr, hkv * hd, bs, &perm);
            let vp = paged_pool(&vr, hkv * hd, bs, &perm);
            let (kp32, kp16) = both(&kp, &[kp.len()], &dev)?;
            let (vp32, vp16) = both(&vp, &[vp.len()], &dev)?;
            let table = Tensor::from_vec(perm, nb, &dev)?;
            let sinks = Tensor::from_vec(random(&mut rng, hq, -1.0, 2.0), hq, &dev)?;
            let scale = 1.0 / (hd as f32).sqrt();
            for nsplit in [1usize, 3, 7] {
                let attend = |kv: KvPtrs, tab: (u64, usize)| -> R<Vec<f32>> {
                    let pm = Tensor::zeros(hq * nsplit, DType::F32, &dev)?;
                    let pl = Tensor::zeros(hq * nsplit, DType::F32, &dev)?;
                    let pa = Tensor::zeros(hq * nsplit * hd, DType::F32, &dev)?;
                    let parts = (p(&pm), p(&pl), p(&pa));
                    let rows = AttnRows::fused(1);
                    k.attn_split(
                        p(&q32),
                        kv,
                        tab,
                        p(&pt),
                        rows,
                        (hq, hkv, hd),
                        window,
                        scale,
                        nsplit,
                        parts,
                    )?;
                    let out = Tensor::zeros(hq * hd, DType::F32, &dev)?;
                    k.attn_combine(
                        parts,
                        p(&sinks),
                        (hq, hd),
                        nsplit,
                        1,
                        CombineOut::F32(p(&out)),
                    )?;
                    host(&out)
                };
                let flat32 = attend(KvPtrs::of(&k32r, &v32r)?, (0, 0))?;
                let what = format!("{what}, {nsplit} splits");
                assert!(flat32.iter().any(|&x| x != 0.0), "{what}: output");
                let flat16 = attend(KvPtrs::of(&k16, &v16)?, (0, 0))?;
                assert_bits(&format!("{what}: flat f16"), &flat16, &flat32);
                let paged16 = attend(KvPtrs::of(&kp16, &vp16)?, (p(&table), bs))?;
                assert_bits(&format!("{what}: paged f16"), &paged16, &flat32);
                let paged32 = attend(KvPtrs::of(&kp32, &vp32)?, (p(&table), bs))?;
                assert_bits(&format!("{what}: paged f32"), &paged32, &flat32);
            }
        }
    }
    Ok(())
}

/// The batched forward's RoPE + pool write into an f16 pool holds the f32 pool's result
/// rounded, every row (written or not), and q is unchanged. Mixed KV dtypes are refused.
#[test]
fn rope_kv_rows_into_an_f16_pool() -> R<()> {
    use gpt_kernels::cuda::rope_kv::{rope_kv_rows, KvRows};
    let mut rng = rng("f16 rope kv");
    let dev = Device::new_cuda(0)?;
    for (t, hq, hkv, hd) in [
        (1usize, 8usize, 2usize, 64usize),
        (37, 64, 8, 64),
        (70, 4, 4, 32),
    ] {
        let (len, n) = (300usize, 400usize);
        let width = (hq + 2 * hkv) * hd;
        let qkv = Tensor::from_vec(random(&mut rng, t * width, -2.0, 2.0), (t, width), &dev)?;
        let table = |rng: &mut StdRng| {
            Tensor::from_vec(random(rng, len * hd / 2, -1.2, 1.2), (len, hd / 2), &dev)
        };
        let (cos, sin) = (table(&mut rng)?, table(&mut rng)?);
        let pos: Vec<u32> = (0..t).map(|_| rng.random_range(0..len as u32)).collect();
        let mut all: Vec<u32> = (0..n as u32).collect();
        all.shuffle(&mut rng);
        let rows = KvRows::new(&pos, &all[..t], &dev)?;
        let pool0 = round16(&random(&mut rng, n * hkv * hd, -9.0, -8.0));
        let shape = [n, hkv, hd];
        let (k32, k16) = both(&pool0, &shape, &dev)?;
        let (v32, v16) = both(&pool0, &shape, &dev)?;
        let q32 = rope_kv_rows(&qkv, (&cos, &sin), &rows, (&k32, &v32), (hq, hkv, hd))?;
        let q16 = rope_kv_rows(&qkv, (&cos, &sin), &rows, (&k16, &v16), (hq, hkv, hd))?;
        let what = format!("{t} rows, heads {hq}/{hkv}/{hd}");
        assert_bits(&format!("{what}: q"), &host(&q16)?, &host(&q32)?);
        assert_bits(
            &format!("{what}: k pool"),
            &host(&k16)?,
            &round16(&host(&k32)?),
        );
        assert_bits(
            &format!("{what}: v pool"),
            &host(&v16)?,
            &round16(&host(&v32)?),
        );
        assert_ne!(host(&k32)?, pool0, "{what}: rows were written");
        let mixed = rope_kv_rows(&qkv, (&cos, &sin), &rows, (&k16, &v32), (hq, hkv, hd));
        assert!(mixed.is_err(), "{what}: an f16 k pool with an f32 v pool");
    }
    Ok(())
}

/// The paged decode attention op on f16 pool buffers: on the GPU bit for bit the f32 run on
/// the rounded values, and within 3e-5 of the CPU op on the same f16 buffers (as
/// `cuda_decode`'s f32 comparison).
#[test]
fn paged_decode_attention_on_an_f16_pool() -> R<()> {
    use gpt_kernels::{paged_decode_attention, PagedRow, PagedRows};
    let mut rng = rng("f16 paged attention");
    let dev = Device::new_cuda(0)?;
    let (bs, blocks) = (16usize, 80usize);
    for (n, hq, hkv, hd, window) in [
        (1usize, 64usize, 8usize, 64usize, None),
        (37, 64, 8, 64, Some(128usize)),
        (70, 8, 2, 32, None),
    ] {
        let rows: Vec<PagedRow> = (0..n)
            .map(|_| {
                let pos = rng.random_range(0..blocks * bs - 1);
                let mut ids: Vec<u32> = (0..blocks as u32).collect();
                ids.shuffle(&mut rng);
                PagedRow {
                    pos,
                    kv_offset: 0,
                    blocks: ids[..(pos + 1).div_ceil(bs)].to_vec(),
                }
            })
            .collect();
        let len = blocks * bs * hkv * hd;
        let q = random(&mut rng, n * hq * hd, -2.0, 2.0);
        let kk = round16(&random(&mut rng, len, -2.0, 2.0));
        let vv = round16(&random(&mut rng, len, -3.0, 3.0));
        let sinks = random(&mut rng, hq, -3.0, 3.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let run = |d: &Device, dt: DType| -> R<Vec<f32>> {
            let shape = (blocks * bs, hkv, hd);
            let k = Tensor::from_vec(kk.clone(), shape, d)?.to_dtype(dt)?;
            let v = Tensor::from_vec(vv.clone(), shape, d)?.to_dtype(dt)?;
            let q = Tensor::from_vec(q.clone(), (n, hq, hd), d)?;
            let s = Tensor::from_vec(sinks.clone(), hq, d)?;
            let pr = PagedRows::new(&rows, bs, d)?;
            host(
                &paged_decode_attention(&q, &k, &v, &s, &pr, scale, window)?
                    .to_device(&Device::Cpu)?,
            )
        };
        let what = format!("{n} rows, heads {hq}/{hkv}, hd {hd}, window {window:?}");
        let g16 = run(&dev, DType::F16)?;
        assert_bits(&what, &g16, &run(&dev, DType::F32)?);
        let c16 = run(&Device::Cpu, DType::F16)?;
        let worst = g16
            .iter()
            .zip(&c16)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 3e-5, "{what}: max |gpu - cpu| {worst}");
        assert!(c16.iter().any(|&x| x != 0.0));
    }
    Ok(())
}
