//! Paged decode attention vs the reference that gathers each row's keys and runs the
//! candle-ops attention: ragged row counts, positions, key offsets, block sizes and windows,
//! blocks in shuffled order.

use candle_core::{Device, Result, Tensor};
use gpt_kernels::reference::paged_decode_attention_slow;
use gpt_kernels::{paged_decode_attention, PagedRow, PagedRows};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::common::{assert_close, rng, uniform, Tol};

/// As for `attention_with_sinks`: errors relative to `max |v|` (two-pass vs one-pass softmax).
const PAGED_TOL: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
};

/// Random rows over a pool of `blocks` blocks of `bs`: each row's blocks are distinct, in a
/// random order, its key offset a whole number of blocks below its position.
fn random_rows(r: &mut rand::rngs::StdRng, n: usize, bs: usize, blocks: usize) -> Vec<PagedRow> {
    (0..n)
        .map(|_| {
            let pos = r.random_range(0..blocks * bs - 1);
            let first = r.random_range(0..=pos / bs).min(pos / bs);
            let first = if r.random_bool(0.5) { 0 } else { first };
            let need = (pos + 1 - first * bs).div_ceil(bs);
            let mut ids: Vec<u32> = (0..blocks as u32).collect();
            ids.shuffle(r);
            PagedRow {
                pos,
                kv_offset: first * bs,
                blocks: ids[..need].to_vec(),
            }
        })
        .collect()
}

#[test]
fn paged_decode_equals_gathered_reference() -> Result<()> {
    let dev = Device::Cpu;
    for (seed, (n, bs, hq, hkv, d, window)) in [
        (1, 16, 8, 2, 64, None),
        (7, 16, 8, 2, 64, Some(17)),
        (13, 5, 4, 4, 32, None),
        (3, 5, 6, 3, 24, Some(9)),
        (1, 1, 2, 1, 8, None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rng(900 + seed as u64);
        let blocks = 160 / bs;
        let rows = random_rows(&mut r, n, bs, blocks);
        let q = uniform(&mut r, &[n, hq, d], -2.0, 2.0)?;
        let k = uniform(&mut r, &[blocks * bs, hkv, d], -2.0, 2.0)?;
        let v = uniform(&mut r, &[blocks * bs, hkv, d], -3.0, 3.0)?;
        let sinks = uniform(&mut r, &[hq], -3.0, 3.0)?;
        let scale = 1.0 / (d as f32).sqrt();
        let pr = PagedRows::new(&rows, bs, &dev)?;
        let got = paged_decode_attention(&q, &k, &v, &sinks, &pr, scale, window)?;
        let want = paged_decode_attention_slow(&q, &k, &v, &sinks, &rows, bs, scale, window)?;
        let vmax = v.abs()?.flatten_all()?.max(0)?;
        let name = format!("{n} rows, bs {bs}, heads {hq}/{hkv}, d {d}, window {window:?}");
        assert_close(&name, &got, &want, &vmax, PAGED_TOL);
        assert!(got.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? > 0.0);
    }
    Ok(())
}

/// f16 pool buffers (the CUDA default) read as their values widened: bit for bit the f32 run
/// on the rounded values. Mixed k / v dtypes are refused.
#[test]
fn paged_decode_reads_an_f16_pool_as_its_rounded_values() -> Result<()> {
    use candle_core::DType;
    let dev = Device::Cpu;
    let (n, bs, hq, hkv, d) = (9, 16, 8, 2, 64);
    let mut r = rng(950);
    let blocks = 12;
    let rows = random_rows(&mut r, n, bs, blocks);
    let q = uniform(&mut r, &[n, hq, d], -2.0, 2.0)?;
    let round = |t: Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
    let k = round(uniform(&mut r, &[blocks * bs, hkv, d], -2.0, 2.0)?)?;
    let v = round(uniform(&mut r, &[blocks * bs, hkv, d], -3.0, 3.0)?)?;
    let sinks = uniform(&mut r, &[hq], -3.0, 3.0)?;
    let pr = PagedRows::new(&rows, bs, &dev)?;
    let (k16, v16) = (k.to_dtype(DType::F16)?, v.to_dtype(DType::F16)?);
    let want: Vec<f32> = paged_decode_attention(&q, &k, &v, &sinks, &pr, 0.125, Some(40))?
        .flatten_all()?
        .to_vec1()?;
    let got: Vec<f32> = paged_decode_attention(&q, &k16, &v16, &sinks, &pr, 0.125, Some(40))?
        .flatten_all()?
        .to_vec1()?;
    assert_eq!(got, want);
    assert!(got.iter().any(|x| *x != 0.0));
    assert!(paged_decode_attention(&q, &k16, &v, &sinks, &pr, 0.125, None).is_err());
    Ok(())
}

#[test]
fn paged_rows_and_shapes_are_checked() -> Result<()> {
    let dev = Device::Cpu;
    let row = |pos, kv_offset, blocks: &[u32]| PagedRow {
        pos,
        kv_offset,
        blocks: blocks.to_vec(),
    };
    // Too few blocks for the keys, a key offset past the position, no rows.
    assert!(PagedRows::new(&[row(16, 0, &[0])], 16, &dev).is_err());
    assert!(PagedRows::new(&[row(3, 16, &[0])], 16, &dev).is_err());
    assert!(PagedRows::new(&[], 16, &dev).is_err());
    let pr = PagedRows::new(&[row(20, 0, &[1, 5])], 16, &dev)?;
    let q = Tensor::ones((1, 4, 8), candle_core::DType::F32, &dev)?;
    let sinks = Tensor::zeros(4, candle_core::DType::F32, &dev)?;
    // Block 5 is past a pool of 4 blocks; then a pool that holds it, with a wrong head dim.
    let small = Tensor::ones((64, 2, 8), candle_core::DType::F32, &dev)?;
    let e = paged_decode_attention(&q, &small, &small, &sinks, &pr, 1.0, None).unwrap_err();
    assert!(e.to_string().contains("paged_decode_attention"), "{e}");
    let wrong_d = Tensor::ones((96, 2, 4), candle_core::DType::F32, &dev)?;
    assert!(paged_decode_attention(&q, &wrong_d, &wrong_d, &sinks, &pr, 1.0, None).is_err());
    let fine = Tensor::ones((96, 2, 8), candle_core::DType::F32, &dev)?;
    let out = paged_decode_attention(&q, &fine, &fine, &sinks, &pr, 1.0, None)?;
    // All values 1: the output is 21 e^8 / (21 e^8 + e^0) in every element.
    let want = 21.0 * 8f32.exp() / (21.0 * 8f32.exp() + 1.0);
    let got: Vec<f32> = out.flatten_all()?.to_vec1()?;
    assert!(
        got.iter().all(|x| (x - want).abs() < 1e-6),
        "{got:?} vs {want}"
    );
    Ok(())
}
