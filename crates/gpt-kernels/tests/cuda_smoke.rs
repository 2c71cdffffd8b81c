//! Device smoke tests for the CUDA launchers in `gpt_kernels::cuda`: each kernel against a
//! plain CPU loop written here (f64 accumulation), on fresh random inputs.
//!
//! Needs a GPU: build with `cargo xtask cuda-build` (or `cargo test -p gpt-kernels --features
//! cuda`) and run the `cuda_smoke` binary on the H100 machine. The random seed is printed so a
//! failure can be replayed with `GPTOSS_TEST_SEED=<seed>`.
//!
//! Tolerances: dequantization is bit-exact; dot-product outputs (matmul, MoE, attention) must
//! satisfy |gpu - ref| <= 1e-5 * (sum of the absolute values of the summed terms), the honest
//! bound for a reordered f32 sum; elementwise outputs (SwiGLU, router weights) must be within
//! a relative 1e-5 of the reference.
#![cfg(feature = "cuda")]

mod common;

use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Device, Layout, Storage, Tensor};
use gpt_kernels::cuda::{
    attention_sinks_cuda, mxfp4_dequant_cuda, mxfp4_matmul_cuda, mxfp4_moe_matmul_cuda,
    router_topk_softmax_cuda, swiglu_oai_cuda, AttentionParams,
};
use rand::rngs::StdRng;
use rand::Rng;

type R<T> = Result<T, Box<dyn std::error::Error>>;

const KVALUES: [f64; 16] = [
    0., 1., 2., 3., 4., 6., 8., 12., 0., -1., -2., -3., -4., -6., -8., -12.,
];

use common::seeded_rng as rng;

fn dev() -> R<Device> {
    Ok(Device::new_cuda(0)?)
}

/// Runs `f` on the CUDA storage and layout of `t`.
fn with_cuda<T>(t: &Tensor, f: impl FnOnce(&CudaStorage, &Layout) -> T) -> T {
    let (guard, layout) = t.storage_and_layout();
    match &*guard {
        Storage::Cuda(s) => f(s, layout),
        _ => panic!("tensor is not on CUDA"),
    }
}

fn host_f32(s: &CudaStorage) -> R<Vec<f32>> {
    Ok(s.to_cpu_storage()?.as_slice::<f32>()?.to_vec())
}

fn host_u32(s: &CudaStorage) -> R<Vec<u32>> {
    Ok(s.to_cpu_storage()?.as_slice::<u32>()?.to_vec())
}

/// Plain CPU MXFP4 decode of one row of `cols` weights: 2^(e-128) * KVALUES[nibble].
fn decode_row(bytes: &[u8], cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    for (b, blk) in bytes.chunks_exact(17).take(cols / 32).enumerate() {
        let scale = 2f64.powi(i32::from(blk[0]) - 128);
        for j in 0..16 {
            out[b * 32 + j] = KVALUES[usize::from(blk[1 + j] & 0x0f)] * scale;
            out[b * 32 + j + 16] = KVALUES[usize::from(blk[1 + j] >> 4)] * scale;
        }
    }
    out
}

/// Random MXFP4 rows with realistic exponents (118..=122, as in gpt-oss checkpoints).
fn random_mxfp4(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; rows * cols / 32 * 17];
    rng.fill(&mut bytes[..]);
    for blk in bytes.chunks_exact_mut(17) {
        blk[0] = rng.random_range(118..=122);
    }
    bytes
}

fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Checks |got - want| <= 1e-5 * bound for each element.
fn check_dot(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((g, w), b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= 1e-5 * b.max(f64::MIN_POSITIVE),
            "{what}[{i}]: gpu {g} vs ref {w} (err {err:e}, bound {:e})",
            1e-5 * b
        );
    }
}

#[test]
fn mxfp4_dequant_is_bit_exact() -> R<()> {
    let mut rng = rng("mxfp4_dequant");
    let (rows, cols) = (7, 96);
    let rb = cols / 32 * 17;
    // One spare leading row so the view starts at a non-zero, unaligned offset.
    let mut bytes = vec![0u8; (rows + 1) * rb];
    rng.fill(&mut bytes[..]);
    // Cover the subnormal and extreme exponents explicitly.
    for (i, e) in [0u8, 1, 2, 127, 128, 254, 255].into_iter().enumerate() {
        bytes[rb + i * 17] = e;
    }
    let t = Tensor::from_vec(bytes.clone(), (rows + 1, rb), &dev()?)?.narrow(0, 1, rows)?;
    let out = with_cuda(&t, |s, l| mxfp4_dequant_cuda(s, l, rows, cols))?;
    let got = host_f32(&out)?;
    for r in 0..rows {
        let want = decode_row(&bytes[(r + 1) * rb..(r + 2) * rb], cols);
        for c in 0..cols {
            let (g, w) = (got[r * cols + c], want[c] as f32);
            assert_eq!(g.to_bits(), w.to_bits(), "({r}, {c}): gpu {g} vs ref {w}");
        }
    }
    Ok(())
}

#[test]
fn mxfp4_matmul_matches_cpu() -> R<()> {
    let mut rng = rng("mxfp4_matmul");
    // k = 2240 = 70 blocks: two full 32-block chunks and a partial one; n not a multiple of 4.
    let (m, n, k) = (3, 37, 2240);
    let rb = k / 32 * 17;
    let wbytes = random_mxfp4(&mut rng, n + 1, k);
    let x = uniform(&mut rng, m * k, -1.0, 1.0);
    let bias = uniform(&mut rng, n, -1.0, 1.0);
    let device = dev()?;
    // Skip one weight row: the view starts 1190 bytes in, not 16-byte aligned.
    let wt = Tensor::from_vec(wbytes.clone(), (n + 1, rb), &device)?.narrow(0, 1, n)?;
    let xt = Tensor::from_vec(x.clone(), (m, k), &device)?;
    let bt = Tensor::from_vec(bias.clone(), n, &device)?;
    for with_bias in [false, true] {
        let out = with_cuda(&xt, |xs, xl| {
            with_cuda(&wt, |ws, wl| {
                with_cuda(&bt, |bs, bl| {
                    mxfp4_matmul_cuda(xs, xl, ws, wl, with_bias.then_some((bs, bl)))
                })
            })
        })?;
        let got = host_f32(&out)?;
        let (mut want, mut bound) = (vec![0.0; m * n], vec![0.0; m * n]);
        for c in 0..n {
            let w = decode_row(&wbytes[(c + 1) * rb..(c + 2) * rb], k);
            for r in 0..m {
                let b = if with_bias { f64::from(bias[c]) } else { 0.0 };
                let xr = &x[r * k..(r + 1) * k];
                want[r * n + c] = b + w
                    .iter()
                    .zip(xr)
                    .map(|(a, x)| a * f64::from(*x))
                    .sum::<f64>();
                bound[r * n + c] = b.abs()
                    + w.iter()
                        .zip(xr)
                        .map(|(a, x)| (a * f64::from(*x)).abs())
                        .sum::<f64>();
            }
        }
        check_dot(&format!("matmul (bias {with_bias})"), &got, &want, &bound);
    }
    Ok(())
}

#[test]
fn mxfp4_moe_matmul_matches_cpu() -> R<()> {
    let mut rng = rng("mxfp4_moe_matmul");
    let (t, top_k, e, n, k) = (3, 2, 4, 19, 96);
    let rb = k / 32 * 17;
    let wbytes = random_mxfp4(&mut rng, e * n, k);
    let bias = uniform(&mut rng, e * n, -1.0, 1.0);
    let mut ids = Vec::with_capacity(t * top_k);
    for _ in 0..t {
        let a = rng.random_range(0..e as u32);
        let b = (a + rng.random_range(1..e as u32)) % e as u32;
        ids.extend([a, b]);
    }
    let device = dev()?;
    let wt = Tensor::from_vec(wbytes.clone(), (e, n, rb), &device)?;
    let bt = Tensor::from_vec(bias.clone(), (e, n), &device)?;
    let it = Tensor::from_vec(ids.clone(), (t, top_k), &device)?;
    for per_slot in [false, true] {
        let rows = if per_slot { t * top_k } else { t };
        let x = uniform(&mut rng, rows * k, -1.0, 1.0);
        let xt = if per_slot {
            Tensor::from_vec(x.clone(), (t, top_k, k), &device)?
        } else {
            Tensor::from_vec(x.clone(), (t, k), &device)?
        };
        let out = with_cuda(&xt, |xs, xl| {
            with_cuda(&wt, |ws, wl| {
                with_cuda(&bt, |bs, bl| {
                    with_cuda(&it, |is, il| {
                        mxfp4_moe_matmul_cuda(xs, xl, ws, wl, Some((bs, bl)), is, il)
                    })
                })
            })
        })?;
        let got = host_f32(&out)?;
        let (mut want, mut bound) = (vec![0.0; t * top_k * n], vec![0.0; t * top_k * n]);
        for slot in 0..t * top_k {
            let ex = ids[slot] as usize;
            let xr = if per_slot { slot } else { slot / top_k };
            let xr = &x[xr * k..(xr + 1) * k];
            for c in 0..n {
                let row = ex * n + c;
                let w = decode_row(&wbytes[row * rb..(row + 1) * rb], k);
                let b = f64::from(bias[row]);
                want[slot * n + c] = b + w
                    .iter()
                    .zip(xr)
                    .map(|(a, x)| a * f64::from(*x))
                    .sum::<f64>();
                bound[slot * n + c] = b.abs()
                    + w.iter()
                        .zip(xr)
                        .map(|(a, x)| (a * f64::from(*x)).abs())
                        .sum::<f64>();
            }
        }
        check_dot(&format!("moe (x per slot {per_slot})"), &got, &want, &bound);
    }
    Ok(())
}

#[test]
fn swiglu_oai_matches_cpu() -> R<()> {
    let mut rng = rng("swiglu_oai");
    let n = 4099;
    let (alpha, limit) = (1.702f32, 7.0f32);
    // Wide range so both clamps are exercised.
    let gate = uniform(&mut rng, n, -12.0, 12.0);
    let up = uniform(&mut rng, n, -12.0, 12.0);
    let device = dev()?;
    let gt = Tensor::from_vec(gate.clone(), (n,), &device)?;
    let ut = Tensor::from_vec(up.clone(), (n,), &device)?;
    let out = with_cuda(&gt, |gs, gl| {
        with_cuda(&ut, |us, ul| swiglu_oai_cuda(gs, gl, us, ul, alpha, limit))
    })?;
    let got = host_f32(&out)?;
    for i in 0..n {
        let g = f64::from(gate[i]).min(f64::from(limit));
        let u = f64::from(up[i]).clamp(-f64::from(limit), f64::from(limit));
        let want = g / (1.0 + (-f64::from(alpha) * g).exp()) * (u + 1.0);
        let err = (f64::from(got[i]) - want).abs();
        assert!(
            err <= 1e-5 * want.abs() + 1e-30,
            "swiglu[{i}] (g {}, u {}): gpu {} vs ref {want}",
            gate[i],
            up[i],
            got[i]
        );
    }
    Ok(())
}

/// Plain attention with sinks: returns (out, bound) for q (b,t,hq,d), k/v (b,s,hkv,d).
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    sinks: &[f32],
    (b, t, s, hq, hkv, d): (usize, usize, usize, usize, usize, usize),
    p: &AttentionParams,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; b * t * hq * d];
    let mut bound = vec![0.0; b * t * hq * d];
    for bi in 0..b {
        for i in 0..t {
            let pos = (p.q_offset + i) as i64;
            for h in 0..hq {
                let kvh = h / (hq / hkv);
                let qrow = &q[((bi * t + i) * hq + h) * d..][..d];
                let mut scores = Vec::new();
                for j in 0..s {
                    let ja = (p.kv_offset + j) as i64;
                    if ja > pos || (p.window > 0 && pos - ja >= p.window as i64) {
                        continue;
                    }
                    let krow = &k[((bi * s + j) * hkv + kvh) * d..][..d];
                    let dot: f64 = qrow
                        .iter()
                        .zip(krow)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum();
                    scores.push((j, dot * f64::from(p.scale)));
                }
                let sink = f64::from(sinks[h]);
                let mx = scores.iter().map(|x| x.1).fold(sink, f64::max);
                let denom =
                    scores.iter().map(|x| (x.1 - mx).exp()).sum::<f64>() + (sink - mx).exp();
                let o = ((bi * t + i) * hq + h) * d;
                for (j, sc) in &scores {
                    let w = (sc - mx).exp() / denom;
                    let vrow = &v[((bi * s + j) * hkv + kvh) * d..][..d];
                    for c in 0..d {
                        out[o + c] += w * f64::from(vrow[c]);
                        bound[o + c] += w * f64::from(vrow[c]).abs();
                    }
                }
            }
        }
    }
    (out, bound)
}

#[test]
fn attention_sinks_matches_cpu() -> R<()> {
    let mut rng = rng("attention_sinks");
    let device = dev()?;
    // (b, t, s, hq, hkv, d, window, q_offset, kv_offset)
    let cases = [
        (2, 6, 6, 4, 2, 64, 0, 0, 0),   // prefill, causal
        (2, 6, 6, 4, 2, 64, 3, 0, 0),   // prefill, sliding window
        (1, 1, 9, 8, 2, 64, 0, 8, 0),   // decode
        (1, 1, 9, 8, 2, 64, 4, 8, 0),   // decode with window
        (1, 4, 5, 2, 1, 40, 0, 0, 2),   // d not a multiple of 32; rows 0-1 fully masked
        (1, 3, 7, 4, 4, 128, 5, 10, 6), // rolling cache: keys start at 6
        // The tiled prefill kernel (d 32/64, <= 8 heads per KV head): ragged position tiles,
        // several key tiles, a window across tiles, a rolling cache, masked rows, G = 8 and 1.
        (1, 37, 37, 16, 2, 64, 0, 0, 0),
        (2, 20, 45, 8, 1, 32, 7, 30, 5),
        (1, 70, 100, 8, 8, 64, 16, 30, 0),
        (1, 4, 5, 2, 1, 32, 0, 0, 2),
    ];
    for (b, t, s, hq, hkv, d, window, q_offset, kv_offset) in cases {
        let q = uniform(&mut rng, b * t * hq * d, -1.0, 1.0);
        let k = uniform(&mut rng, b * s * hkv * d, -1.0, 1.0);
        let v = uniform(&mut rng, b * s * hkv * d, -1.0, 1.0);
        let sinks = uniform(&mut rng, hq, -2.0, 2.0);
        let p = AttentionParams {
            scale: 1.0 / (d as f32).sqrt(),
            window,
            q_offset,
            kv_offset,
        };
        let qt = Tensor::from_vec(q.clone(), (b, t, hq, d), &device)?;
        let kt = Tensor::from_vec(k.clone(), (b, s, hkv, d), &device)?;
        let vt = Tensor::from_vec(v.clone(), (b, s, hkv, d), &device)?;
        let st = Tensor::from_vec(sinks.clone(), hq, &device)?;
        let out = with_cuda(&qt, |qs, ql| {
            with_cuda(&kt, |ks, kl| {
                with_cuda(&vt, |vs, vl| {
                    with_cuda(&st, |ss, sl| {
                        attention_sinks_cuda(qs, ql, ks, kl, vs, vl, ss, sl, &p)
                    })
                })
            })
        })?;
        let got = host_f32(&out)?;
        let (want, bound) = attention_ref(&q, &k, &v, &sinks, (b, t, s, hq, hkv, d), &p);
        check_dot(
            &format!("attention {p:?} t={t} s={s} d={d}"),
            &got,
            &want,
            &bound,
        );
        if kv_offset > q_offset {
            let masked = (kv_offset - q_offset) * hq * d;
            assert!(
                got[..masked].iter().all(|x| *x == 0.0),
                "fully masked rows must be 0"
            );
        }
    }
    Ok(())
}

#[test]
fn router_topk_softmax_matches_cpu() -> R<()> {
    let mut rng = rng("router_topk_softmax");
    let (tokens, e, k) = (9, 32, 4);
    let logits = uniform(&mut rng, tokens * e, -4.0, 4.0);
    let lt = Tensor::from_vec(logits.clone(), (tokens, e), &dev()?)?;
    let (w, ids) = with_cuda(&lt, |s, l| router_topk_softmax_cuda(s, l, k))?;
    let (w, ids) = (host_f32(&w)?, host_u32(&ids)?);
    for t in 0..tokens {
        let row = &logits[t * e..(t + 1) * e];
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
        let top = &order[..k];
        let got_ids: Vec<usize> = ids[t * k..(t + 1) * k]
            .iter()
            .map(|i| *i as usize)
            .collect();
        assert_eq!(got_ids, top, "token {t}: ids");
        let mx = f64::from(row[top[0]]);
        let denom: f64 = top.iter().map(|j| (f64::from(row[*j]) - mx).exp()).sum();
        for (c, j) in top.iter().enumerate() {
            let want = (f64::from(row[*j]) - mx).exp() / denom;
            let g = f64::from(w[t * k + c]);
            assert!(
                (g - want).abs() <= 1e-5 * want,
                "token {t} choice {c}: gpu {g} vs ref {want}"
            );
        }
    }
    // The public op on CUDA returns the kernel's ids and weights: the same as its CPU path.
    let (gi, gw) = gpt_kernels::router_topk_softmax(&lt, k)?;
    let (ci, cw) = gpt_kernels::router_topk_softmax(&lt.to_device(&candle_core::Device::Cpu)?, k)?;
    let v32 = |t: &Tensor| t.flatten_all()?.to_vec1::<u32>();
    let vf = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    assert_eq!(v32(&gi)?, v32(&ci)?, "public op: ids");
    for (g, c) in vf(&gw)?.iter().zip(vf(&cw)?) {
        assert!(
            (g - c).abs() <= 1e-5 * c.abs().max(1e-6),
            "public op: {g} vs {c}"
        );
    }
    Ok(())
}

/// `moe_router` on CUDA and `rows_router` (one block per row) against an f64 loop: the same
/// experts in the same order, weights within 1e-5 relative, on ragged row counts and shapes
/// (a row with adjacent ranked logits within 2e-5 may rank either way and is skipped); past
/// 256 rows the op takes the matmul path, checked the same way.
#[test]
fn moe_router_rows_matches_an_f64_loop() -> R<()> {
    let mut rng = rng("moe_router_rows");
    for (case, (t, e, d, k)) in [
        (1, 32, 2880, 4),
        (7, 32, 2880, 4),
        (64, 128, 2880, 4),
        (130, 32, 64, 4),
        (9, 256, 68, 32),
        (300, 32, 64, 4),
    ]
    .into_iter()
    .enumerate()
    {
        let x = uniform(&mut rng, t * d, -1.0, 1.0);
        let w = uniform(&mut rng, e * d, -0.05, 0.05);
        let b = uniform(&mut rng, e, -0.5, 0.5);
        let dv = dev()?;
        // Every other case's x starts one element into its buffer (off a 16-byte boundary).
        let pad = case % 2;
        let padded: Vec<f32> = std::iter::repeat_n(7.0, pad)
            .chain(x.iter().copied())
            .collect();
        let xt = Tensor::from_vec(padded, pad + t * d, &dv)?
            .narrow(0, pad, t * d)?
            .reshape((t, d))?;
        let wt = Tensor::from_vec(w.clone(), (e, d), &dv)?;
        let bt = Tensor::from_vec(b.clone(), e, &dv)?;
        // The public op (the kernel where `GPTOSS_ROWS_ROUTER=1`, else the composition) and,
        // up to 256 rows, the kernel itself.
        let mut outs = vec![("moe_router", gpt_kernels::moe_router(&xt, &wt, &bt, k)?)];
        if t <= 256 {
            let rows = gpt_kernels::cuda::router::moe_router_rows(&xt, &wt, &bt, k)?;
            outs.push(("moe_router_rows", rows));
        }
        let lgs: Vec<Vec<f64>> = (0..t)
            .map(|r| {
                (0..e)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|i| f64::from(x[r * d + i]) * f64::from(w[j * d + i]))
                            .sum();
                        dot + f64::from(b[j])
                    })
                    .collect()
            })
            .collect();
        for (name, (ids, wts)) in outs {
            let ids = ids.flatten_all()?.to_vec1::<u32>()?;
            let wts = wts.flatten_all()?.to_vec1::<f32>()?;
            let mut checked = 0;
            for (r, lg) in lgs.iter().enumerate() {
                let mut order: Vec<usize> = (0..e).collect();
                order.sort_by(|a, b| lg[*b].total_cmp(&lg[*a]).then(a.cmp(b)));
                // Adjacent logits closer than the f32 sum's error may rank either way.
                let last = k.min(e - 1);
                if (0..last).any(|c| (lg[order[c]] - lg[order[c + 1]]).abs() < 2e-5) {
                    continue;
                }
                checked += 1;
                let got: Vec<usize> = ids[r * k..(r + 1) * k]
                    .iter()
                    .map(|i| *i as usize)
                    .collect();
                let top = &order[..k];
                assert_eq!(
                    got, top,
                    "{name} t {t} e {e} d {d} row {r}: experts, in order"
                );
                let denom: f64 = top.iter().map(|j| (lg[*j] - lg[top[0]]).exp()).sum();
                for (c, j) in got.iter().enumerate() {
                    let want = (lg[*j] - lg[top[0]]).exp() / denom;
                    let g = f64::from(wts[r * k + c]);
                    assert!(
                        (g - want).abs() <= 1e-5 * want.max(1e-3),
                        "{name} t {t} e {e} d {d} row {r} choice {c}: gpu {g} vs ref {want}"
                    );
                }
            }
            assert!(
                checked * 2 > t,
                "{name} t {t} e {e}: only {checked} rows without a near-tie"
            );
        }
    }
    Ok(())
}
