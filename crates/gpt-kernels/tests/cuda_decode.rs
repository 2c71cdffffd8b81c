//! Device tests of the fused decode kernels (`gpt_kernels::cuda::decode`), each against a plain
//! CPU loop written here (f64), on fresh random inputs with ragged sizes.
//!
//! Needs a GPU: `cargo xtask cuda-build` builds this binary (`cuda_decode`) for the H100 machine.
//! The seed is printed; replay with `GPTOSS_TEST_SEED=<seed>`.
//!
//! Tolerances: repacking is bit-exact. A quantized vector must reconstruct every element within
//! half a quantization step (d/2, d = block amax / 16256), plus 1% of a step for the f32
//! rounding of the scale and its reciprocal. Dot products must lie within `sum_j |w_j| * e_j`
//! (`e_j` that bound on the input's error, propagated exactly) plus 1e-5 × the sum of the
//! absolute values of the summed terms (a reordered f32 sum). Outputs behind a nonlinearity or
//! a normalization (RMSNorm, SwiGLU through its slope bound, attention's softmax) get 1e-4 ×
//! that sum instead.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::SplitWeights;
use gpt_kernels::cuda::decode::{
    planar_to_blocks, tensor_ptr, AttnRows, CombineOut, DecodeKernels, KvPtrs, MxPtrs, Q8Ptrs, QVec,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

type R<T> = Result<T, Box<dyn std::error::Error>>;

const KVALUES: [f64; 16] = [
    0., 1., 2., 3., 4., 6., 8., 12., 0., -1., -2., -3., -4., -6., -8., -12.,
];

fn setup(test: &str) -> R<(Device, DecodeKernels, StdRng)> {
    let seed = std::env::var("GPTOSS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed}");
    let dev = Device::new_cuda(0)?;
    let k = DecodeKernels::new(dev.as_cuda_device()?)?;
    Ok((dev, k, StdRng::seed_from_u64(seed)))
}

fn p(t: &Tensor) -> u64 {
    tensor_ptr(t).expect("device pointer")
}

fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn f32s(t: &Tensor) -> R<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Position of element `i` of a 32-block in the MXFP4-facing order (`perm_pos` in decode.cu).
fn perm_pos(i: usize) -> usize {
    let (hi, j) = (i >> 4, i & 15);
    8 * (j >> 2) + 2 * (j & 3) + hi
}

/// A quantized-vector buffer on the device.
struct QBuf {
    hi: Tensor,
    lo: Tensor,
    d: Tensor,
}

impl QBuf {
    fn new(dev: &Device, k: usize) -> R<Self> {
        Ok(Self {
            hi: Tensor::zeros(k, DType::U8, dev)?,
            lo: Tensor::zeros(k, DType::U8, dev)?,
            d: Tensor::zeros(k / 32, DType::F32, dev)?,
        })
    }
    fn ptrs(&self) -> QVec {
        QVec {
            hi: p(&self.hi),
            lo: p(&self.lo),
            d: p(&self.d),
        }
    }
    /// The represented values in natural order and each one's error bound (0.51 step).
    fn values(&self, perm: bool) -> R<(Vec<f64>, Vec<f64>)> {
        let hi = self.hi.to_vec1::<u8>()?;
        let lo = self.lo.to_vec1::<u8>()?;
        let d = self.d.to_vec1::<f32>()?;
        let mut v = vec![0.0; hi.len()];
        let mut half = vec![0.0; hi.len()];
        for (i, (vi, hi_i)) in v.iter_mut().zip(half.iter_mut()).enumerate() {
            let (b, e) = (i / 32, i % 32);
            let at = b * 32 + if perm { perm_pos(e) } else { e };
            let q = 128 * i64::from(hi[at] as i8) + i64::from(lo[at] as i8);
            assert!(
                (hi[at] as i8) >= -127 && (-64..=63).contains(&(lo[at] as i8)),
                "planes out of range at {i}"
            );
            *vi = f64::from(d[b]) * q as f64;
            *hi_i = f64::from(d[b]) * 0.51;
        }
        Ok((v, half))
    }
}

/// Checks that `q` holds `x` (natural order) within half a step.
fn check_quant(what: &str, q: &QBuf, x: &[f32], perm: bool) -> R<Vec<f64>> {
    let (v, half) = q.values(perm)?;
    for (i, (a, b)) in v.iter().zip(x).enumerate() {
        let err = (a - f64::from(*b)).abs();
        assert!(
            err <= half[i] * 1.0001 + 1e-30,
            "{what}[{i}]: {a} vs {b} (half step {})",
            half[i]
        );
    }
    Ok(v)
}

/// `|got - want| <= quant + 1e-5 * abs` elementwise.
fn check_close(what: &str, got: &[f32], want: &[f64], quant: &[f64], abs: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (f64::from(got[i]) - want[i]).abs();
        let tol = quant[i] * 1.0001 + 1e-5 * abs[i] + 1e-30;
        assert!(
            err <= tol,
            "{what}[{i}]: gpu {} vs ref {} (err {err:e}, tol {tol:e})",
            got[i],
            want[i]
        );
    }
}

/// Dot of weights `w` with the quantized input (`xv`, half steps `xh`): (value, quant bound,
/// sum of |terms|).
fn qdot(w: &[f64], xv: &[f64], xh: &[f64]) -> (f64, f64, f64) {
    let mut s = (0.0, 0.0, 0.0);
    for ((a, b), h) in w.iter().zip(xv).zip(xh) {
        s.0 += a * b;
        s.1 += a.abs() * h;
        s.2 += (a * b).abs();
    }
    s
}

#[test]
fn q8_split_quant_and_gemv_match_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("q8_gemv")?;
    let (n, kk) = (37, 2880);
    let nb = n * kk / 32;
    let mut raw = vec![0u8; nb * 34];
    let mut w = vec![0f64; n * kk];
    for b in 0..nb {
        let d = half::f16::from_f32(rng.random_range(0.001f32..0.02));
        raw[b * 34..b * 34 + 2].copy_from_slice(&d.to_le_bytes());
        for i in 0..32 {
            let q: i8 = rng.random_range(-127..=127);
            raw[b * 34 + 2 + i] = q as u8;
            w[b * 32 + i] = d.to_f64() * f64::from(q);
        }
    }
    let src = Tensor::from_vec(raw.clone(), raw.len(), &dev)?;
    let qs = Tensor::zeros((n, kk), DType::U8, &dev)?;
    let dd = Tensor::zeros((n, kk / 32), DType::F32, &dev)?;
    let wp = Q8Ptrs {
        qs: p(&qs),
        lo: 0,
        d: p(&dd),
    };
    k.q8_0_split(p(&src), nb, wp)?;
    let (got_qs, got_d) = (qs.flatten_all()?.to_vec1::<u8>()?, f32s(&dd)?);
    for b in 0..nb {
        assert_eq!(&got_qs[b * 32..b * 32 + 32], &raw[b * 34 + 2..b * 34 + 34]);
        let d = half::f16::from_le_bytes([raw[b * 34], raw[b * 34 + 1]]).to_f32();
        assert_eq!(got_d[b].to_bits(), d.to_bits(), "scale of block {b}");
    }
    // Inputs with block magnitudes spread over 6 decades.
    let mut x = uniform(&mut rng, kk, -1.0, 1.0);
    for (b, blk) in x.chunks_mut(32).enumerate() {
        let s = 10f32.powi((b % 7) as i32 - 3);
        blk.iter_mut().for_each(|v| *v *= s);
    }
    let xt = Tensor::from_vec(x.clone(), kk, &dev)?;
    let q = QBuf::new(&dev, kk)?;
    k.quant(p(&xt), kk / 32, q.ptrs(), false)?;
    check_quant("x", &q, &x, false)?;
    let (xv, xh) = q.values(false)?;
    let bias = uniform(&mut rng, n, -1.0, 1.0);
    let y0 = uniform(&mut rng, n, -1.0, 1.0);
    let bt = Tensor::from_vec(bias.clone(), n, &dev)?;
    for accumulate in [false, true] {
        let yt = Tensor::from_vec(y0.clone(), n, &dev)?;
        k.q8_gemv(wp, p(&bt), q.ptrs(), p(&yt), n, kk, accumulate)?;
        let (mut want, mut quant, mut abs) = (vec![], vec![], vec![]);
        for r in 0..n {
            let (v, qb, ab) = qdot(&w[r * kk..(r + 1) * kk], &xv, &xh);
            let base = if accumulate { f64::from(y0[r]) } else { 0.0 };
            want.push(v + f64::from(bias[r]) + base);
            quant.push(qb);
            abs.push(ab + f64::from(bias[r]).abs() + base.abs());
        }
        check_close("q8 gemv", &f32s(&yt)?, &want, &quant, &abs);
    }
    Ok(())
}

/// A two-plane (15-bit) matrix, each weight `d * (128 * hi + lo)`, as `dec_quant` writes it
/// from f32 weights, against the same input: the gemv within the input's quantization bound.
#[test]
fn two_plane_quant_and_gemv_match_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("two-plane gemv")?;
    let (n, kk) = (45, 4096 + 96);
    let wf = uniform(&mut rng, n * kk, -0.05, 0.05);
    let wt = Tensor::from_vec(wf.clone(), n * kk, &dev)?;
    let wq = QBuf::new(&dev, n * kk)?;
    k.quant(p(&wt), n * kk / 32, wq.ptrs(), false)?;
    // Within half a step of the f32 weights (the engine's conversion of other dense types).
    let w = check_quant("w", &wq, &wf, false)?;
    let wp = Q8Ptrs {
        qs: p(&wq.hi),
        lo: p(&wq.lo),
        d: p(&wq.d),
    };
    let x = uniform(&mut rng, kk, -3.0, 3.0);
    let xt = Tensor::from_vec(x.clone(), kk, &dev)?;
    let q = QBuf::new(&dev, kk)?;
    k.quant(p(&xt), kk / 32, q.ptrs(), false)?;
    let (xv, xh) = q.values(false)?;
    let bias = uniform(&mut rng, n, -1.0, 1.0);
    let bt = Tensor::from_vec(bias.clone(), n, &dev)?;
    let yt = Tensor::zeros(n, DType::F32, &dev)?;
    k.q8_gemv(wp, p(&bt), q.ptrs(), p(&yt), n, kk, false)?;
    let (mut want, mut quant, mut abs) = (vec![], vec![], vec![]);
    for r in 0..n {
        let (v, qb, ab) = qdot(&w[r * kk..(r + 1) * kk], &xv, &xh);
        want.push(v + f64::from(bias[r]));
        quant.push(qb);
        abs.push(ab + f64::from(bias[r]).abs());
    }
    check_close("two-plane gemv", &f32s(&yt)?, &want, &quant, &abs);
    Ok(())
}

#[test]
fn rmsnorm_quant_matches_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("rmsnorm_quant")?;
    let kk = 2880;
    let x = uniform(&mut rng, kk, -4.0, 4.0);
    let w = uniform(&mut rng, kk, 0.5, 1.5);
    let (xt, wt) = (
        Tensor::from_vec(x.clone(), kk, &dev)?,
        Tensor::from_vec(w.clone(), kk, &dev)?,
    );
    let ms: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / kk as f64;
    let r = 1.0 / (ms + 1e-5).sqrt();
    let want: Vec<f64> = x
        .iter()
        .zip(&w)
        .map(|(a, b)| f64::from(*a) * r * f64::from(*b))
        .collect();
    for perm in [false, true] {
        let xn = Tensor::zeros(kk, DType::F32, &dev)?;
        let q = QBuf::new(&dev, kk)?;
        k.rmsnorm_quant(p(&xt), p(&wt), 1e-5, kk, p(&xn), q.ptrs(), perm)?;
        let got = f32s(&xn)?;
        let abs: Vec<f64> = want.iter().map(|v| v.abs() * 10.0).collect();
        check_close("rmsnorm", &got, &want, &vec![0.0; kk], &abs);
        check_quant("rmsnorm q", &q, &got, perm)?;
    }
    Ok(())
}

/// Random MXFP4 rows (ggml blocks) with exponents 118..=122 and their f64 values.
fn random_mxfp4(rng: &mut StdRng, rows: usize, cols: usize) -> (Vec<u8>, Vec<f64>) {
    let mut bytes = vec![0u8; rows * cols / 32 * 17];
    rng.fill(&mut bytes[..]);
    let mut vals = vec![0.0; rows * cols];
    for (b, blk) in bytes.chunks_exact_mut(17).enumerate() {
        blk[0] = rng.random_range(118..=122);
        let s = 2f64.powi(i32::from(blk[0]) - 128);
        for j in 0..16 {
            vals[b * 32 + j] = KVALUES[usize::from(blk[1 + j] & 15)] * s;
            vals[b * 32 + j + 16] = KVALUES[usize::from(blk[1 + j] >> 4)] * s;
        }
    }
    (bytes, vals)
}

/// Planar device copy of ggml MXFP4 `bytes` ((e, n, k) logical), checked byte for byte.
fn planar(dev: &Device, k: &DecodeKernels, bytes: &[u8]) -> R<(Tensor, Tensor, MxPtrs)> {
    let nb = bytes.len() / 17;
    let src = Tensor::from_vec(bytes.to_vec(), bytes.len(), dev)?;
    let qs = Tensor::zeros(nb * 16, DType::U8, dev)?;
    let e8 = Tensor::zeros(nb, DType::U8, dev)?;
    let mp = MxPtrs {
        qs: p(&qs),
        e8: p(&e8),
    };
    k.mxfp4_planar(p(&src), nb, mp)?;
    let (gq, ge) = (qs.to_vec1::<u8>()?, e8.to_vec1::<u8>()?);
    for b in 0..nb {
        assert_eq!(ge[b], bytes[b * 17], "exponent of block {b}");
        assert_eq!(&gq[b * 16..b * 16 + 16], &bytes[b * 17 + 1..b * 17 + 17]);
    }
    Ok((qs, e8, mp))
}

fn swiglu(g: f64, u: f64) -> f64 {
    let g = g.min(7.0);
    let u = u.clamp(-7.0, 7.0);
    g / (1.0 + (-1.702 * g).exp()) * (u + 1.0)
}

#[test]
fn moe_gate_up_and_down_match_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("moe")?;
    // Ragged: 160 = 5 blocks (a partial lane pass), 96 = 3 blocks; e=5 experts, 3 chosen.
    let (ne, topk, nff, d) = (5, 3, 96, 160);
    let (gb_raw, gw) = random_mxfp4(&mut rng, ne * nff, d);
    let (ub_raw, uw) = random_mxfp4(&mut rng, ne * nff, d);
    let (db_raw, dw) = random_mxfp4(&mut rng, ne * d, nff);
    let (g1, g2, gp) = planar(&dev, &k, &gb_raw)?;
    // And back: one expert's planes to ggml blocks, byte for byte.
    let e1 = planar_to_blocks(
        &g1.reshape((ne, nff, d / 2))?.get(1)?,
        &g2.reshape((ne, nff, d / 32))?.get(1)?,
    )?;
    let rb = nff * d / 32 * 17;
    assert_eq!(
        e1.flatten_all()?.to_vec1::<u8>()?,
        gb_raw[rb..2 * rb].to_vec(),
        "planar_to_blocks of expert 1"
    );
    let (_u1, _u2, up) = planar(&dev, &k, &ub_raw)?;
    let (_d1, _d2, dp) = planar(&dev, &k, &db_raw)?;
    let gbias = uniform(&mut rng, ne * nff, -1.0, 1.0);
    let ubias = uniform(&mut rng, ne * nff, -1.0, 1.0);
    let dbias = uniform(&mut rng, ne * d, -1.0, 1.0);
    let (gbt, ubt, dbt) = (
        Tensor::from_vec(gbias.clone(), ne * nff, &dev)?,
        Tensor::from_vec(ubias.clone(), ne * nff, &dev)?,
        Tensor::from_vec(dbias.clone(), ne * d, &dev)?,
    );
    let ids: Vec<u32> = vec![4, 0, 3];
    let wts: Vec<f32> = vec![0.5, 0.3, 0.2];
    let (idt, wtt) = (
        Tensor::from_vec(ids.clone(), topk, &dev)?,
        Tensor::from_vec(wts.clone(), topk, &dev)?,
    );
    let x = uniform(&mut rng, d, -2.0, 2.0);
    let xt = Tensor::from_vec(x.clone(), d, &dev)?;
    let xq = QBuf::new(&dev, d)?;
    k.quant(p(&xt), d / 32, xq.ptrs(), true)?;
    let xv = check_quant("x perm", &xq, &x, true)?;
    let xh = xq.values(true)?.1;

    let act = Tensor::zeros(topk * nff, DType::F32, &dev)?;
    k.moe_gate_up(
        (gp, p(&gbt)),
        (up, p(&ubt)),
        xq.ptrs(),
        p(&idt),
        (topk, nff, d),
        (1.702, 7.0),
        p(&act),
    )?;
    let got = f32s(&act)?;
    let (mut want, mut quant, mut abs) = (vec![], vec![], vec![]);
    for &e in &ids {
        for j in 0..nff {
            let row = e as usize * nff + j;
            let (g, gq, ga) = qdot(&gw[row * d..(row + 1) * d], &xv, &xh);
            let (u, uq, ua) = qdot(&uw[row * d..(row + 1) * d], &xv, &xh);
            let (g, u) = (g + f64::from(gbias[row]), u + f64::from(ubias[row]));
            want.push(swiglu(g, u));
            // swiglu's slope in g and u is at most ~1.1 * (|u| + 1) and |g| + 1 here.
            let lip = 1.2 * (u.abs().min(7.0) + 1.0) + g.abs().min(7.0) + 1.0;
            quant.push(lip * (gq + uq));
            abs.push(lip * (ga + ua + 1.0) * 10.0);
        }
    }
    check_close("gate_up", &got, &want, &quant, &abs);

    let aq = QBuf::new(&dev, topk * nff)?;
    k.quant(p(&act), topk * nff / 32, aq.ptrs(), true)?;
    let av = check_quant("act perm", &aq, &got, true)?;
    let ah = aq.values(true)?.1;
    let h0 = uniform(&mut rng, d, -1.0, 1.0);
    let ht = Tensor::from_vec(h0.clone(), d, &dev)?;
    k.moe_down(
        (dp, p(&dbt)),
        aq.ptrs(),
        (p(&idt), p(&wtt)),
        (topk, d, nff),
        p(&ht),
    )?;
    let (mut want, mut quant, mut abs) = (vec![], vec![], vec![]);
    for (j, &h0j) in h0.iter().enumerate() {
        let (mut v, mut qb, mut ab) = (f64::from(h0j), 0.0, f64::from(h0j).abs());
        for (s, &e) in ids.iter().enumerate() {
            let row = e as usize * d + j;
            let wts_s = f64::from(wts[s]);
            let xs = s * nff..(s + 1) * nff;
            let (y, yq, ya) = qdot(&dw[row * nff..(row + 1) * nff], &av[xs.clone()], &ah[xs]);
            let w = wts_s;
            v += w * (y + f64::from(dbias[row]));
            qb += w * yq;
            ab += w * (ya + f64::from(dbias[row]).abs());
        }
        want.push(v);
        quant.push(qb);
        abs.push(ab);
    }
    check_close("down", &f32s(&ht)?, &want, &quant, &abs);
    Ok(())
}

/// Router weights `(e, kk)` and biases for a router test: experts 9 and 5 get identical rows
/// and biases far above the rest (|w . y| stays below ~10 here), a tie that 5 must win.
fn router_weights(rng: &mut StdRng, e: usize, kk: usize) -> (Vec<f32>, Vec<f32>) {
    let mut w = uniform(rng, e * kk, -0.05, 0.05);
    let row9 = w[9 * kk..10 * kk].to_vec();
    w[5 * kk..6 * kk].copy_from_slice(&row9);
    let mut b = uniform(rng, e, -0.5, 0.5);
    b[5] = 50.0;
    b[9] = 50.0;
    (w, b)
}

/// Zeroed router outputs on `dev`: logits `(e)`, ids and weights `(topk)`, the block counter.
fn router_outputs(dev: &Device, e: usize, topk: usize) -> R<(Tensor, Tensor, Tensor, Tensor)> {
    Ok((
        Tensor::zeros(e, DType::F32, dev)?,
        Tensor::zeros(topk, DType::U32, dev)?,
        Tensor::zeros(topk, DType::F32, dev)?,
        Tensor::zeros(1, DType::U32, dev)?,
    ))
}

/// The device's router outputs for input `y` (f64): logits within 1e-5 of their magnitude,
/// the top-k ids with ties to the lower index (the tie first), the softmax weights, the
/// finished-blocks counter back at 0.
fn check_router(
    run: usize,
    (w, b, y): (&[f32], &[f32], &[f64]),
    (lt, ids, wts, count): (&Tensor, &Tensor, &Tensor, &Tensor),
) -> R<()> {
    let (e, kk, topk) = (b.len(), y.len(), ids.elem_count());
    let (mut want, mut abs) = (vec![], vec![]);
    for r in 0..e {
        let terms = (0..kk).map(|c| f64::from(w[r * kk + c]) * y[c]);
        want.push(terms.clone().sum::<f64>() + f64::from(b[r]));
        abs.push(terms.map(f64::abs).sum::<f64>() + f64::from(b[r]).abs());
    }
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by(|a, c| want[*c].total_cmp(&want[*a]).then(a.cmp(c)));
    let want_ids: Vec<u32> = order[..topk].iter().map(|&i| i as u32).collect();
    assert_eq!(&want_ids[..2], &[5, 9], "the tie leads");
    let mx = want[order[0]];
    let z: f64 = order[..topk].iter().map(|&i| (want[i] - mx).exp()).sum();
    let want_w: Vec<f64> = order[..topk]
        .iter()
        .map(|&i| (want[i] - mx).exp() / z)
        .collect();
    check_close("router logits", &f32s(lt)?, &want, &vec![0.0; e], &abs);
    assert_eq!(
        ids.to_vec1::<u32>()?,
        want_ids,
        "run {run}: top-{topk} experts"
    );
    let ones = vec![1.0; topk];
    check_close(
        "router weights",
        &f32s(wts)?,
        &want_w,
        &vec![0.0; topk],
        &ones,
    );
    assert_eq!(count.to_vec1::<u32>()?, vec![0], "run {run}: counter reset");
    Ok(())
}

/// Logits, then top-k with ties to the lower index and softmax; run twice to check that the
/// kernel leaves its block counter at 0.
#[test]
fn router_matches_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("router")?;
    let (e, kk, topk) = (32, 2880, 4);
    let x = uniform(&mut rng, kk, -1.0, 1.0);
    let (w, b) = router_weights(&mut rng, e, kk);
    let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), v.len(), &dev);
    let (xt, wt, bt) = (t(&x)?, t(&w)?, t(&b)?);
    let (lt, ids, wts, count) = router_outputs(&dev, e, topk)?;
    let y: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    for run in 0..2 {
        let out = (p(&lt), (p(&ids), p(&wts)), p(&count));
        k.router(p(&xt), (p(&wt), p(&bt)), (e, kk, topk), out.0, out.1, out.2)?;
        check_router(run, (&w, &b, &y), (&lt, &ids, &wts, &count))?;
    }
    Ok(())
}

/// The MLP's RMSNorm fused with the router, on 128 experts (120b's router, so every block has
/// quantization work too): the normalized vector and its permuted quantization as
/// `rmsnorm_quant` gives them, then the router's outputs from it as `router_matches_cpu`
/// checks them, twice.
#[test]
fn rmsnorm_router_matches_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("rmsnorm_router")?;
    let (e, kk, topk) = (128, 2880, 4);
    let x = uniform(&mut rng, kk, -4.0, 4.0);
    let nw = uniform(&mut rng, kk, 0.5, 1.5);
    let (w, b) = router_weights(&mut rng, e, kk);
    let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), v.len(), &dev);
    let (xt, nwt, wt, bt) = (t(&x)?, t(&nw)?, t(&w)?, t(&b)?);
    let xn = Tensor::zeros(kk, DType::F32, &dev)?;
    let q = QBuf::new(&dev, kk)?;
    let (lt, ids, wts, count) = router_outputs(&dev, e, topk)?;
    let ms: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / kk as f64;
    let rs = 1.0 / (ms + 1e-5).sqrt();
    let y: Vec<f64> = x
        .iter()
        .zip(&nw)
        .map(|(a, c)| f64::from(*a) * rs * f64::from(*c))
        .collect();
    let yabs: Vec<f64> = y.iter().map(|v| v.abs() * 10.0).collect();
    for run in 0..2 {
        k.rmsnorm_router(
            (p(&xt), p(&nwt), 1e-5),
            (p(&wt), p(&bt)),
            (e, kk, topk),
            (p(&xn), q.ptrs()),
            p(&lt),
            (p(&ids), p(&wts)),
            p(&count),
        )?;
        let got = f32s(&xn)?;
        check_close("rmsnorm", &got, &y, &vec![0.0; kk], &yabs);
        check_quant("rmsnorm q", &q, &got, true)?;
        check_router(run, (&w, &b, &y), (&lt, &ids, &wts, &count))?;
    }
    Ok(())
}

/// QKV projection with RoPE into a cache row, then split attention with sinks, for head dims
/// 64 and 32, with and without a window, over 1, 3 and 7 splits.
#[test]
fn qkv_rope_and_split_attention_match_cpu() -> R<()> {
    let (dev, k, mut rng) = setup("attention")?;
    let (hq, hkv, dm, cap) = (8, 2, 128, 200);
    for hd in [64usize, 32] {
        for window in [0usize, 40] {
            let rows = (hq + 2 * hkv) * hd;
            // The windowed runs take a two-plane (15-bit) matrix: d * (128 * qs + lo).
            let two = window > 0;
            let SplitWeights {
                qs,
                lo,
                d: sc,
                w: wv,
            } = SplitWeights::random(&mut rng, rows * dm, two, (0.001, 0.01));
            let bias = uniform(&mut rng, rows, -0.5, 0.5);
            let (qst, lot, sct, bt) = (
                Tensor::from_vec(qs, rows * dm, &dev)?,
                Tensor::from_vec(lo, rows * dm, &dev)?,
                Tensor::from_vec(sc, rows * dm / 32, &dev)?,
                Tensor::from_vec(bias.clone(), rows, &dev)?,
            );
            let x = uniform(&mut rng, dm, -2.0, 2.0);
            let xt = Tensor::from_vec(x.clone(), dm, &dev)?;
            let xq = QBuf::new(&dev, dm)?;
            k.quant(p(&xt), dm / 32, xq.ptrs(), false)?;
            let (xv, xh) = xq.values(false)?;
            let kc0 = uniform(&mut rng, cap * hkv * hd, -1.0, 1.0);
            let vc0 = uniform(&mut rng, cap * hkv * hd, -1.0, 1.0);
            let kct = Tensor::from_vec(kc0.clone(), cap * hkv * hd, &dev)?;
            let vct = Tensor::from_vec(vc0.clone(), cap * hkv * hd, &dev)?;
            // Layer 1; layer 0's slots hold garbage. Token at 170 writes row 150 (offset 20).
            let (pos, row) = (170i32, 150i32);
            let params = [pos, 7, 9, 11, row, row + 1, pos - row];
            let pt = Tensor::from_vec(
                params.iter().map(|&v| v as u32).collect::<Vec<_>>(),
                params.len(),
                &dev,
            )?;
            let inv: Vec<f32> = uniform(&mut rng, hd / 2, 0.001, 1.0);
            let it = Tensor::from_vec(inv.clone(), hd / 2, &dev)?;
            let mscale = 1.2f32;
            let q_out = Tensor::zeros(hq * hd, DType::F32, &dev)?;
            k.qkv_rope(
                Q8Ptrs {
                    qs: p(&qst),
                    lo: if two { p(&lot) } else { 0 },
                    d: p(&sct),
                },
                p(&bt),
                xq.ptrs(),
                dm,
                (hq, hkv, hd),
                p(&it),
                mscale,
                p(&pt),
                1,
                p(&q_out),
                KvPtrs::of(&kct, &vct)?,
            )?;
            // Reference projection + RoPE (theta in f32 as the kernel forms it).
            let mut y = vec![(0.0, 0.0, 0.0); rows];
            for (r, yr) in y.iter_mut().enumerate() {
                let (v, qb, ab) = qdot(&wv[r * dm..(r + 1) * dm], &xv, &xh);
                *yr = (v + f64::from(bias[r]), qb, ab + f64::from(bias[r]).abs());
            }
            let half = hd / 2;
            let mut want = y.clone();
            for head in 0..hq + hkv {
                for i in 0..half {
                    let theta = f64::from(pos as f32 * inv[i]);
                    let (c, s) = (
                        theta.cos() * f64::from(mscale),
                        theta.sin() * f64::from(mscale),
                    );
                    let (a, b) = (y[head * hd + i], y[head * hd + i + half]);
                    let bound = |u: (f64, f64, f64), w: (f64, f64, f64)| {
                        (
                            u.1 * c.abs() + w.1 * s.abs(),
                            u.2 * c.abs() + w.2 * s.abs() + 1.0,
                        )
                    };
                    let (qa, aa) = bound(a, b);
                    want[head * hd + i] = (a.0 * c - b.0 * s, qa, aa);
                    want[head * hd + i + half] = (b.0 * c + a.0 * s, qa, aa);
                }
            }
            let split = |r: std::ops::Range<usize>| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
                (
                    want[r.clone()].iter().map(|t| t.0).collect(),
                    want[r.clone()].iter().map(|t| t.1).collect(),
                    want[r].iter().map(|t| t.2).collect(),
                )
            };
            let (wq, qq, aq) = split(0..hq * hd);
            check_close("q", &f32s(&q_out)?, &wq, &qq, &aq);
            let at = row as usize * hkv * hd;
            let (wk, qk, ak) = split(hq * hd..(hq + hkv) * hd);
            check_close("k row", &f32s(&kct)?[at..at + hkv * hd], &wk, &qk, &ak);
            let (wvv, qv, av) = split((hq + hkv) * hd..rows);
            check_close("v row", &f32s(&vct)?[at..at + hkv * hd], &wvv, &qv, &av);

            // Attention over rows 0..=150 at absolute positions 20..=170.
            let (qg, kg, vg) = (f32s(&q_out)?, f32s(&kct)?, f32s(&vct)?);
            let sinks = uniform(&mut rng, hq, -1.0, 2.0);
            let st = Tensor::from_vec(sinks.clone(), hq, &dev)?;
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want = vec![0.0; hq * hd];
            let mut abs = vec![0.0; hq * hd];
            for h in 0..hq {
                let kvh = h / (hq / hkv);
                let mut sc = vec![];
                for j in 0..=row as usize {
                    let ja = j as i64 + i64::from(pos - row);
                    if window > 0 && i64::from(pos) - ja >= window as i64 {
                        continue;
                    }
                    let kr = &kg[(j * hkv + kvh) * hd..][..hd];
                    let dot: f64 = (0..hd)
                        .map(|c| f64::from(qg[h * hd + c]) * f64::from(kr[c]))
                        .sum();
                    sc.push((j, dot * f64::from(scale)));
                }
                let sink = f64::from(sinks[h]);
                let mx = sc.iter().map(|t| t.1).fold(sink, f64::max);
                let den: f64 = sc.iter().map(|t| (t.1 - mx).exp()).sum::<f64>() + (sink - mx).exp();
                for (j, s) in &sc {
                    let wgt = (s - mx).exp() / den;
                    let vr = &vg[(j * hkv + kvh) * hd..][..hd];
                    for c in 0..hd {
                        want[h * hd + c] += wgt * f64::from(vr[c]);
                        abs[h * hd + c] += wgt * f64::from(vr[c]).abs() * 10.0;
                    }
                }
            }
            for nsplit in [1usize, 3, 7, 200] {
                let pm = Tensor::zeros(hq * nsplit, DType::F32, &dev)?;
                let pl = Tensor::zeros(hq * nsplit, DType::F32, &dev)?;
                let pa = Tensor::zeros(hq * nsplit * hd, DType::F32, &dev)?;
                let parts = (p(&pm), p(&pl), p(&pa));
                k.attn_split(
                    p(&q_out),
                    KvPtrs::of(&kct, &vct)?,
                    (0, 0),
                    p(&pt),
                    AttnRows::fused(1),
                    (hq, hkv, hd),
                    window,
                    scale,
                    nsplit,
                    parts,
                )?;
                let oq = QBuf::new(&dev, hq * hd)?;
                k.attn_combine(
                    parts,
                    p(&st),
                    (hq, hd),
                    nsplit,
                    1,
                    CombineOut::Quant(oq.ptrs()),
                )?;
                let (ov, oh) = oq.values(false)?;
                let ov: Vec<f32> = ov.iter().map(|v| *v as f32).collect();
                let what = format!("attention hd {hd} window {window} splits {nsplit}");
                check_close(&what, &ov, &want, &oh, &abs);

                // The same rows in a paged pool (blocks of 16 in a shuffled order, one spare
                // block) read through a block table: the same result, bit for bit.
                let bs = 16usize;
                let nb = cap.div_ceil(bs) + 1;
                let mut perm: Vec<u32> = (0..nb as u32).collect();
                perm.shuffle(&mut rng);
                let kp = common::paged_pool(&kg, hkv * hd, bs, &perm);
                let vp = common::paged_pool(&vg, hkv * hd, bs, &perm);
                let (kpt, vpt) = (
                    Tensor::from_vec(kp, nb * bs * hkv * hd, &dev)?,
                    Tensor::from_vec(vp, nb * bs * hkv * hd, &dev)?,
                );
                let table = Tensor::from_vec(perm, nb, &dev)?;
                k.attn_split(
                    p(&q_out),
                    KvPtrs::of(&kpt, &vpt)?,
                    (p(&table), bs),
                    p(&pt),
                    AttnRows::fused(1),
                    (hq, hkv, hd),
                    window,
                    scale,
                    nsplit,
                    parts,
                )?;
                let oqp = QBuf::new(&dev, hq * hd)?;
                k.attn_combine(
                    parts,
                    p(&st),
                    (hq, hd),
                    nsplit,
                    1,
                    CombineOut::Quant(oqp.ptrs()),
                )?;
                let (ovp, _) = oqp.values(false)?;
                let ovp: Vec<f32> = ovp.iter().map(|v| *v as f32).collect();
                assert_eq!(ovp, ov, "{what}: paged pool");
            }
        }
    }
    Ok(())
}

/// The batched decode's paged attention on the GPU (the split kernels, one launch for every
/// row) against the op's CPU loop (itself checked against the gathered reference in
/// `cpu_vs_reference`): ragged row counts, positions and key offsets, shuffled blocks, with and
/// without a window. Error bound: 1e-5 × max |v| (the outputs are convex combinations of v
/// rows; the two sum in different orders).
#[test]
fn paged_decode_attention_matches_the_cpu_op() -> R<()> {
    use gpt_kernels::{paged_decode_attention, PagedRow, PagedRows};
    let (dev, _k, mut rng) = setup("paged attention")?;
    let cpu = Device::Cpu;
    let bs = 16usize;
    let blocks = 80usize;
    for (n, hq, hkv, hd, window) in [
        (1usize, 64usize, 8usize, 64usize, None),
        (37, 64, 8, 64, Some(128usize)),
        (70, 8, 2, 32, None),
        (5, 8, 8, 64, Some(3)),
        (129, 16, 2, 64, None),
    ] {
        let rows: Vec<PagedRow> = (0..n)
            .map(|_| {
                let pos = rng.random_range(0..blocks * bs - 1);
                let first = if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(0..=pos / bs)
                };
                let need = (pos + 1 - first * bs).div_ceil(bs);
                let mut ids: Vec<u32> = (0..blocks as u32).collect();
                ids.shuffle(&mut rng);
                PagedRow {
                    pos,
                    kv_offset: first * bs,
                    blocks: ids[..need].to_vec(),
                }
            })
            .collect();
        let pool = blocks * bs * hkv * hd;
        let q = uniform(&mut rng, n * hq * hd, -2.0, 2.0);
        let kk = uniform(&mut rng, pool, -2.0, 2.0);
        let vv = uniform(&mut rng, pool, -3.0, 3.0);
        let sinks = uniform(&mut rng, hq, -3.0, 3.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let run = |d: &Device| -> R<Vec<f32>> {
            let q = Tensor::from_vec(q.clone(), (n, hq, hd), d)?;
            let k = Tensor::from_vec(kk.clone(), (blocks * bs, hkv, hd), d)?;
            let v = Tensor::from_vec(vv.clone(), (blocks * bs, hkv, hd), d)?;
            let s = Tensor::from_vec(sinks.clone(), hq, d)?;
            let pr = PagedRows::new(&rows, bs, d)?;
            let o = paged_decode_attention(&q, &k, &v, &s, &pr, scale, window)?;
            f32s(&o.to_device(&Device::Cpu)?)
        };
        let (got, want) = (run(&dev)?, run(&cpu)?);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 3e-5,
            "{n} rows, heads {hq}/{hkv}, hd {hd}, window {window:?}: max |gpu - cpu| {worst}"
        );
        assert!(want.iter().any(|&x| x != 0.0));
    }
    Ok(())
}

/// The fused RoPE and KV-pool write against a CPU loop (f64): q rotated at each row's
/// position, k rotated and v copied into each row's pool row, every other pool row untouched.
/// Bound: 1e-6 × (|a| + |b|) of each rotated pair (one f32 product and sum each).
#[test]
fn rope_kv_rows_match_cpu() -> R<()> {
    use gpt_kernels::cuda::rope_kv::{rope_kv_rows, KvRows};
    let (dev, _k, mut rng) = setup("rope kv")?;
    for (t, hq, hkv, hd) in [
        (1usize, 8usize, 2usize, 64usize),
        (37, 64, 8, 64),
        (70, 4, 4, 32),
    ] {
        let (len, n) = (300usize, 400usize);
        let width = (hq + 2 * hkv) * hd;
        let qkv = uniform(&mut rng, t * width, -2.0, 2.0);
        let (cos, sin) = (
            uniform(&mut rng, len * hd / 2, -1.2, 1.2),
            uniform(&mut rng, len * hd / 2, -1.2, 1.2),
        );
        let pos: Vec<u32> = (0..t).map(|_| rng.random_range(0..len as u32)).collect();
        let mut all: Vec<u32> = (0..n as u32).collect();
        all.shuffle(&mut rng);
        let dst = all[..t].to_vec();
        let pool0 = uniform(&mut rng, n * hkv * hd, -9.0, -8.0);
        let kp = Tensor::from_vec(pool0.clone(), (n, hkv, hd), &dev)?;
        let vp = Tensor::from_vec(pool0.clone(), (n, hkv, hd), &dev)?;
        let rows = KvRows::new(&pos, &dst, &dev)?;
        let q = rope_kv_rows(
            &Tensor::from_vec(qkv.clone(), (t, width), &dev)?,
            (
                &Tensor::from_vec(cos.clone(), (len, hd / 2), &dev)?,
                &Tensor::from_vec(sin.clone(), (len, hd / 2), &dev)?,
            ),
            &rows,
            (&kp, &vp),
            (hq, hkv, hd),
        )?;
        let (qg, kg, vg) = (f32s(&q)?, f32s(&kp)?, f32s(&vp)?);
        let half = hd / 2;
        for r in 0..t {
            let x = &qkv[r * width..(r + 1) * width];
            let (c, s) = (
                &cos[pos[r] as usize * half..],
                &sin[pos[r] as usize * half..],
            );
            for head in 0..hq + 2 * hkv {
                for i in 0..half {
                    let (a, b) = (
                        f64::from(x[head * hd + i]),
                        f64::from(x[head * hd + i + half]),
                    );
                    let (ci, si) = (f64::from(c[i]), f64::from(s[i]));
                    let (ra, rb) = if head < hq + hkv {
                        (a * ci - b * si, b * ci + a * si)
                    } else {
                        (a, b)
                    };
                    let tol = 1e-6 * (a.abs() + b.abs()) * 2.0;
                    let got = if head < hq {
                        let o = (r * hq + head) * hd;
                        (qg[o + i], qg[o + i + half])
                    } else {
                        let kvh = if head < hq + hkv {
                            head - hq
                        } else {
                            head - hq - hkv
                        };
                        let o = (dst[r] as usize * hkv + kvh) * hd;
                        let g = if head < hq + hkv { &kg } else { &vg };
                        (g[o + i], g[o + i + half])
                    };
                    assert!(
                        (f64::from(got.0) - ra).abs() <= tol
                            && (f64::from(got.1) - rb).abs() <= tol,
                        "row {r} head {head} pair {i}: got {got:?}, want ({ra}, {rb})"
                    );
                }
            }
        }
        // Every pool element outside the written rows is as it was.
        for (i, ((a, b), w)) in kg.iter().zip(&vg).zip(&pool0).enumerate() {
            if !dst.contains(&((i / (hkv * hd)) as u32)) {
                assert!(a == w && b == w, "pool element {i} changed");
            }
        }
        assert!(KvRows::new(&pos, &dst[..t.saturating_sub(1)], &dev).is_err() || t == 0);
    }
    Ok(())
}
