//! Device tests of the prefill's tensor-core GEMMs (`gpt_kernels::cuda::prefill`), each against
//! a plain CPU loop written here (f64), on fresh random inputs with ragged sizes: groups over
//! and under one 64-slot tile, an unused expert, widths that are not multiples of the 64-column
//! tile, k with a half stage.
//!
//! Needs a GPU: `cargo xtask cuda-build` builds this binary (`cuda_prefill`) for the H100
//! machine. The seed is printed; replay with `GPTOSS_TEST_SEED=<seed>`.
//!
//! Tolerances, Q8 (int8) kernel: the quantized activations must reconstruct every input within
//! half a step (d/2, d = block amax / 16256) plus 1% of a step. The reference multiplies those
//! quantized values, so the products are exact on both sides and only the f32 accumulation
//! differs: |gpu − cpu| ≤ 1e-5 × Σ|terms| (bias included).
//!
//! MXFP4 (bf16) kernels: the bf16 planes must hold every input within 2^-17 |x| (plus 2^-134
//! for values near bf16's subnormals); the weights are exact in bf16, so against the unrounded
//! inputs |gpu − cpu| ≤ (2^-17 + 1e-5) × Σ|terms|. Behind SwiGLU the bound is multiplied by
//! the function's slope bound. Some weight blocks get exponents 0 or 1 (subnormal scales), the
//! dequantizer's slow path.
//!
//! The TF32 attention rounds q, k, v and the probabilities to 10-bit mantissas (relative error
//! ε = 2^-11 each). A score's error is then at most 2ε·S1 (S1 = scale · Σ|q_i k_i|, the largest
//! over the row's keys), a probability's relative error at most twice that, and the output's
//! error at most max|v| · (4ε·S1 + 2ε); the test allows twice this.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{Device, Tensor};
use common::SplitWeights;
use gpt_kernels::cuda::attention::attention_prefill_tf32;
use gpt_kernels::cuda::prefill::{
    grouped_gemm, grouped_gemm_swiglu, BRows, GroupPlan, PgWeights, QRows,
};
use gpt_kernels::cuda::routing::{combine_slots, route};
use gpt_kernels::cuda::AttentionParams;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

type R<T> = Result<T, Box<dyn std::error::Error>>;

const KVALUES: [f64; 16] = [
    0., 1., 2., 3., 4., 6., 8., 12., 0., -1., -2., -3., -4., -6., -8., -12.,
];

fn setup(test: &str) -> R<(Device, StdRng)> {
    let seed = std::env::var("GPTOSS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed}");
    Ok((Device::new_cuda(0)?, StdRng::seed_from_u64(seed)))
}

fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `(rows, k)` activations whose 32-blocks span 6 decades of magnitude.
fn acts(rng: &mut StdRng, rows: usize, k: usize) -> Vec<f32> {
    let mut x = uniform(rng, rows * k, -1.0, 1.0);
    for (b, blk) in x.chunks_mut(32).enumerate() {
        let s = 10f32.powi((b % 7) as i32 - 3);
        blk.iter_mut().for_each(|v| *v *= s);
    }
    x
}

/// The values `q` holds, in natural order, after checking each against `x` (half a step).
fn quantized_values(q: &QRows, x: &[f32]) -> R<Vec<f64>> {
    let hi = q.hi.flatten_all()?.to_vec1::<u8>()?;
    let lo = q.lo.flatten_all()?.to_vec1::<u8>()?;
    let d = q.d.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(hi.len(), x.len(), "quantized length");
    let mut v = vec![0.0; x.len()];
    for (i, vi) in v.iter_mut().enumerate() {
        let (b, e) = (i / 32, i % 32);
        let at = b * 32 + e;
        let (h, l) = (hi[at] as i8, lo[at] as i8);
        assert!(
            h >= -127 && (-64..=63).contains(&l),
            "planes out of range at {i}"
        );
        *vi = f64::from(d[b]) * (128 * i64::from(h) + i64::from(l)) as f64;
        let err = (*vi - f64::from(x[i])).abs();
        assert!(
            err <= f64::from(d[b]) * 0.51 + 1e-30,
            "x[{i}] = {} quantized to {vi} (step {})",
            x[i],
            d[b]
        );
    }
    Ok(v)
}

/// The unrounded inputs `x` as f64, after checking that the bf16 planes `b` hold each within
/// 2^-17 |x| (plus half of bf16's smallest subnormal, 2^-134, for tiny values).
fn split_values(b: &BRows, x: &[f32]) -> R<Vec<f64>> {
    let hi: Vec<f32> =
        b.hi.flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
    let lo: Vec<f32> =
        b.lo.flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
    for (i, v) in x.iter().enumerate() {
        let err = (f64::from(hi[i]) + f64::from(lo[i]) - f64::from(*v)).abs();
        assert!(
            err <= f64::from(v.abs()) / 131_072.0 + 2f64.powi(-134),
            "x[{i}] = {v} split into {} + {}",
            hi[i],
            lo[i]
        );
    }
    Ok(x.iter().map(|v| f64::from(*v)).collect())
}

/// Random planar MXFP4 experts `(e, n, k)` with exponents 118..=130 (and, one block in 40,
/// 0 or 1, whose scales are subnormal): qs, e8 and f64 values.
fn planar_mx(rng: &mut StdRng, e: usize, n: usize, k: usize) -> (Vec<u8>, Vec<u8>, Vec<f64>) {
    let mut qs = vec![0u8; e * n * k / 2];
    rng.fill(&mut qs[..]);
    let e8: Vec<u8> = (0..e * n * k / 32)
        .map(|_| {
            if rng.random_range(0..40) == 0 {
                rng.random_range(0..=1)
            } else {
                rng.random_range(118..=130)
            }
        })
        .collect();
    let mut w = vec![0.0; e * n * k];
    for (b, &ex) in e8.iter().enumerate() {
        let s = 2f64.powi(i32::from(ex) - 128);
        for j in 0..16 {
            let byte = qs[b * 16 + j];
            w[b * 32 + j] = KVALUES[usize::from(byte & 15)] * s;
            w[b * 32 + j + 16] = KVALUES[usize::from(byte >> 4)] * s;
        }
    }
    (qs, e8, w)
}

/// One planar MXFP4 matrix per expert, on the device and as exact f64 values.
type PlanarMx = (Tensor, Tensor, Vec<f64>);

/// Random experts of one MoE layer: gate and up `(e, ff, d)`, down `(e, d, ff)` (planar MXFP4)
/// and their biases `(e, ff)`, `(e, ff)`, `(e, d)`.
fn random_experts(
    dev: &Device,
    rng: &mut StdRng,
    ne: usize,
    nff: usize,
    d: usize,
) -> R<(PlanarMx, PlanarMx, PlanarMx, [Vec<f32>; 3])> {
    let mut mk = |n: usize, k: usize| -> R<PlanarMx> {
        let (qs, e8, w) = planar_mx(rng, ne, n, k);
        Ok((
            Tensor::from_vec(qs, (ne, n, k / 2), dev)?,
            Tensor::from_vec(e8, (ne, n, k / 32), dev)?,
            w,
        ))
    };
    let (g, u, dn) = (mk(nff, d)?, mk(nff, d)?, mk(d, nff)?);
    let biases = [
        uniform(rng, ne * nff, -1.0, 1.0),
        uniform(rng, ne * nff, -1.0, 1.0),
        uniform(rng, ne * d, -1.0, 1.0),
    ];
    Ok((g, u, dn, biases))
}

/// `(values, Σ|terms|)` of the dot product of `w` and `x`.
fn dot(w: &[f64], x: &[f64]) -> (f64, f64) {
    w.iter()
        .zip(x)
        .fold((0.0, 0.0), |(s, a), (p, q)| (s + p * q, a + (p * q).abs()))
}

fn check(what: &str, got: &[f32], want: &[f64], tol: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (f64::from(got[i]) - want[i]).abs();
        assert!(
            err <= tol[i] + 1e-30,
            "{what}[{i}]: gpu {} vs ref {} (err {err:e}, tol {:e})",
            got[i],
            want[i],
            tol[i]
        );
    }
}

fn swiglu(g: f64, u: f64) -> f64 {
    let g = g.min(7.0);
    let u = u.clamp(-7.0, 7.0);
    g / (1.0 + (-1.702 * g).exp()) * (u + 1.0)
}

/// Routing of `t` tokens over `e` experts, `top_k` each: every token picks expert 0 (a group
/// over one tile when t > 64) and the last expert never. Returns the groups `(expert, slots)`,
/// the token of each slot and the expert of each slot, slots sorted by expert.
fn routing(
    rng: &mut StdRng,
    t: usize,
    top_k: usize,
    e: usize,
) -> (Vec<(u32, usize)>, Vec<u32>, Vec<u32>) {
    let mut chosen = vec![Vec::new(); t];
    for c in chosen.iter_mut() {
        c.push(0usize);
        while c.len() < top_k {
            let x = rng.random_range(1..e - 1);
            if !c.contains(&x) {
                c.push(x);
            }
        }
    }
    let (mut groups, mut rows, mut ex) = (Vec::new(), Vec::new(), Vec::new());
    for x in 0..e {
        let before = rows.len();
        for (tok, c) in chosen.iter().enumerate() {
            if c.contains(&x) {
                rows.push(tok as u32);
                ex.push(x as u32);
            }
        }
        if rows.len() > before {
            groups.push((x as u32, rows.len() - before));
        }
    }
    (groups, rows, ex)
}

#[test]
fn mxfp4_swiglu_and_down_match_cpu() -> R<()> {
    let (dev, mut rng) = setup("mxfp4 grouped")?;
    // (tokens, top_k, experts, ff, d): column tails (96, 160) and half stages (k = 96, 160);
    // then 20B's d = 2880.
    for (t, top_k, ne, nff, d) in [(80, 3, 6, 96, 160), (40, 4, 8, 192, 2880)] {
        let (groups, rows, ex) = routing(&mut rng, t, top_k, ne);
        assert!(groups[0].1 > 64 || t <= 64, "a group over one tile");
        let slots = rows.len();
        let ((gq, ge, gw), (uq, ue, uw), (dq, de, dw), [gb, ub, db]) =
            random_experts(&dev, &mut rng, ne, nff, d)?;
        let bt = |b: &[f32], n: usize| Tensor::from_vec(b.to_vec(), (ne, n), &dev);
        let (gbt, ubt, dbt) = (bt(&gb, nff)?, bt(&ub, nff)?, bt(&db, d)?);

        let x = acts(&mut rng, t, d);
        let xt = Tensor::from_vec(x.clone(), (t, d), &dev)?;
        let plan_up = GroupPlan::new(&groups, Some(&rows), &dev)?;
        let plan_down = GroupPlan::new(&groups, None, &dev)?;

        // Against the unrounded inputs: the planes hold x within 2^-17 |x|, so dot products are
        // within (2^-17 + 1e-5) × Σ|terms|.
        const B16: f64 = 1.0 / 131_072.0 + 1e-5;
        let xb = BRows::split(&xt)?;
        let xs = split_values(&xb, &x)?;
        let act_b = grouped_gemm_swiglu(
            &xb,
            &plan_up,
            PgWeights::Mxfp4 { qs: &gq, e8: &ge },
            PgWeights::Mxfp4 { qs: &uq, e8: &ue },
            &gbt,
            &ubt,
            1.702,
            7.0,
        )?;
        assert_eq!(act_b.dims(), &[slots, nff]);
        let got_b: Vec<f32> = act_b.flatten_all()?.to_vec1()?;
        let (mut want, mut tol) = (vec![], vec![]);
        for s in 0..slots {
            let (tok, e) = (rows[s] as usize, ex[s] as usize);
            let xr = &xs[tok * d..(tok + 1) * d];
            for j in 0..nff {
                let r = (e * nff + j) * d;
                let (g, ga) = dot(&gw[r..r + d], xr);
                let (u, ua) = dot(&uw[r..r + d], xr);
                let (g, u) = (
                    g + f64::from(gb[e * nff + j]),
                    u + f64::from(ub[e * nff + j]),
                );
                want.push(swiglu(g, u));
                let lip = 1.2 * (u.abs().min(7.0) + 1.0) + g.abs().min(7.0) + 1.0;
                tol.push(lip * B16 * (ga + ua + 2.0));
            }
        }
        check(&format!("bf16 gate/up d={d}"), &got_b, &want, &tol);
        let ab = BRows::split(&act_b)?;
        let avb = split_values(&ab, &got_b)?;
        let y = grouped_gemm(&ab, &plan_down, PgWeights::Mxfp4 { qs: &dq, e8: &de }, &dbt)?;
        assert_eq!(y.dims(), &[slots, d]);
        let (mut want, mut tol) = (vec![], vec![]);
        for s in 0..slots {
            let e = ex[s] as usize;
            for j in 0..d {
                let r = (e * d + j) * nff;
                let (v, a) = dot(&dw[r..r + nff], &avb[s * nff..(s + 1) * nff]);
                let b = f64::from(db[e * d + j]);
                want.push(v + b);
                tol.push(B16 * (a + b.abs()));
            }
        }
        let yv: Vec<f32> = y.flatten_all()?.to_vec1()?;
        check(&format!("bf16 down d={d}"), &yv, &want, &tol);

        // The routing-weighted sum of each token's rows (in slot order).
        let mut at = vec![0u32; t * top_k];
        let mut seen = vec![0usize; t];
        for (s, &tok) in rows.iter().enumerate() {
            let tok = tok as usize;
            at[tok * top_k + seen[tok]] = s as u32;
            seen[tok] += 1;
        }
        let w = uniform(&mut rng, t * top_k, 0.0, 1.0);
        let out = combine_slots(
            &y,
            &Tensor::from_vec(at.clone(), t * top_k, &dev)?,
            &Tensor::from_vec(w.clone(), (t, top_k), &dev)?,
        )?;
        assert_eq!(out.dims(), &[t, d]);
        let (mut want, mut tol) = (vec![], vec![]);
        for tok in 0..t {
            for j in 0..d {
                let (mut v, mut a) = (0.0, 0.0);
                for c in 0..top_k {
                    let term = f64::from(w[tok * top_k + c])
                        * f64::from(yv[at[tok * top_k + c] as usize * d + j]);
                    v += term;
                    a += term.abs();
                }
                want.push(v);
                tol.push(1e-6 * a);
            }
        }
        check("combine", &out.flatten_all()?.to_vec1()?, &want, &tol);
    }
    Ok(())
}

#[test]
fn dense_q8_matches_cpu_and_bad_calls_are_errors() -> R<()> {
    let (dev, mut rng) = setup("q8 dense")?;
    // (rows, n, k): tiles of 64, 64 and 2 rows, a column tail, full and half stages.
    // Two-plane (15-bit) weights, d * (128 * qs + lo), on the second and third shapes.
    for (rows, n, k, two) in [
        (130, 200, 2880, false),
        (3, 64, 96, true),
        (70, 130, 4096, true),
    ] {
        let SplitWeights { qs, lo, d, w } =
            SplitWeights::random(&mut rng, n * k, two, (0.001, 0.02));
        let bias = uniform(&mut rng, n, -1.0, 1.0);
        let (qt, lt, dt, bt) = (
            Tensor::from_vec(qs, (n, k), &dev)?,
            Tensor::from_vec(lo, (n, k), &dev)?,
            Tensor::from_vec(d, (n, k / 32), &dev)?,
            Tensor::from_vec(bias.clone(), n, &dev)?,
        );
        let x = acts(&mut rng, rows, k);
        let xt = Tensor::from_vec(x.clone(), (rows, k), &dev)?;
        let xq = QRows::quantize(&xt)?;
        let xv = quantized_values(&xq, &x)?;
        let plan = GroupPlan::dense(rows, &dev)?;
        let wq = PgWeights::Q8 {
            qs: &qt,
            lo: two.then_some(&lt),
            d: &dt,
        };
        let y = grouped_gemm(&xq, &plan, wq, &bt)?;
        assert_eq!(y.dims(), &[rows, n]);
        let (mut want, mut tol) = (vec![], vec![]);
        for r in 0..rows {
            for j in 0..n {
                let (v, a) = dot(&w[j * k..(j + 1) * k], &xv[r * k..(r + 1) * k]);
                let b = f64::from(bias[j]);
                want.push(v + b);
                tol.push(1e-5 * (a + b.abs()));
            }
        }
        check(
            &format!("q8 k={k}"),
            &y.flatten_all()?.to_vec1()?,
            &want,
            &tol,
        );

        // Q8 weights take int8 planes, not bf16 ones; a plan may not read past x.
        let e = grouped_gemm(&BRows::split(&xt)?, &plan, wq, &bt).expect_err("bf16 x");
        assert!(e.to_string().contains("int8 input planes"), "{e}");
        let long = GroupPlan::dense(rows + 1, &dev)?;
        let e = grouped_gemm(&xq, &long, wq, &bt).expect_err("plan past x");
        assert!(e.to_string().contains("plan reads"), "{e}");
        let bad = PgWeights::Q8 {
            qs: &qt,
            lo: Some(&dt),
            d: &dt,
        };
        let e = grouped_gemm(&xq, &plan, bad, &bt).expect_err("low plane of scales");
        assert!(e.to_string().contains("low plane"), "{e}");
        let empty = GroupPlan::new(&[], None, &dev)?;
        assert_eq!(grouped_gemm(&xq, &empty, wq, &bt)?.dims(), &[0, n]);
    }
    Ok(())
}

/// f64 attention with sinks for query rows `(b, t, hq, 64)`: the output and each row's bound.
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    sinks: &[f32],
    (b, t, s, hq, hkv): (usize, usize, usize, usize, usize),
    p: &AttentionParams,
) -> (Vec<f64>, Vec<f64>) {
    const D: usize = 64;
    let eps = 2f64.powi(-11);
    let (mut out, mut tol) = (vec![0.0; b * t * hq * D], vec![0.0; b * t * hq * D]);
    for bi in 0..b {
        for i in 0..t {
            let pos = (p.q_offset + i) as i64;
            for h in 0..hq {
                let kvh = h / (hq / hkv);
                let qr = &q[((bi * t + i) * hq + h) * D..][..D];
                let (mut sc, mut s1, mut vmax) = (vec![], 0f64, 0f64);
                for j in 0..s {
                    let ja = (p.kv_offset + j) as i64;
                    if ja > pos || (p.window > 0 && pos - ja >= p.window as i64) {
                        continue;
                    }
                    let kr = &k[((bi * s + j) * hkv + kvh) * D..][..D];
                    let vr = &v[((bi * s + j) * hkv + kvh) * D..][..D];
                    let dotp: f64 = qr
                        .iter()
                        .zip(kr)
                        .map(|(a, c)| f64::from(*a) * f64::from(*c))
                        .sum();
                    let abs: f64 = qr
                        .iter()
                        .zip(kr)
                        .map(|(a, c)| f64::from(*a * *c).abs())
                        .sum();
                    s1 = s1.max(abs * f64::from(p.scale));
                    vmax = vr.iter().fold(vmax, |m, x| m.max(f64::from(x.abs())));
                    sc.push((dotp * f64::from(p.scale), j));
                }
                let row = ((bi * t + i) * hq + h) * D;
                if sc.is_empty() {
                    continue; // a row with no visible key is 0
                }
                let sink = f64::from(sinks[h]);
                let mx = sc.iter().fold(sink, |m, x| m.max(x.0));
                let l: f64 = sc.iter().map(|x| (x.0 - mx).exp()).sum::<f64>() + (sink - mx).exp();
                for &(sj, j) in &sc {
                    let w = (sj - mx).exp() / l;
                    let vr = &v[((bi * s + j) * hkv + kvh) * D..][..D];
                    for c in 0..D {
                        out[row + c] += w * f64::from(vr[c]);
                    }
                }
                for c in 0..D {
                    tol[row + c] = 2.0 * vmax * (4.0 * eps * s1 + 2.0 * eps) + 1e-6 * vmax;
                }
            }
        }
    }
    (out, tol)
}

#[test]
fn tf32_attention_matches_cpu() -> R<()> {
    let (dev, mut rng) = setup("tf32 attention")?;
    // (b, t, s, hq, hkv, window, q_offset, kv_offset): G = 8 with ragged 16-position tiles, G = 1
    // (128 positions a block) with a window across key tiles and a rolling cache, 20B's heads
    // with its 128-key window, and rows with no visible key.
    let cases = [
        (1, 37, 37, 16, 2, 0, 0, 0),
        (2, 20, 45, 8, 8, 7, 30, 5),
        (1, 300, 300, 64, 8, 128, 0, 0),
        (1, 200, 260, 64, 8, 0, 60, 0),
        (1, 4, 5, 2, 1, 0, 0, 2),
    ];
    for (b, t, s, hq, hkv, window, q_offset, kv_offset) in cases {
        let q = uniform(&mut rng, b * t * hq * 64, -1.0, 1.0);
        let k = uniform(&mut rng, b * s * hkv * 64, -1.0, 1.0);
        let v = uniform(&mut rng, b * s * hkv * 64, -1.0, 1.0);
        let sinks = uniform(&mut rng, hq, -2.0, 2.0);
        let p = AttentionParams {
            scale: 0.125,
            window,
            q_offset,
            kv_offset,
        };
        let out = attention_prefill_tf32(
            &Tensor::from_vec(q.clone(), (b, t, hq, 64), &dev)?,
            &Tensor::from_vec(k.clone(), (b, s, hkv, 64), &dev)?,
            &Tensor::from_vec(v.clone(), (b, s, hkv, 64), &dev)?,
            &Tensor::from_vec(sinks.clone(), hq, &dev)?,
            &p,
        )?;
        let got: Vec<f32> = out.flatten_all()?.to_vec1()?;
        let (want, tol) = attention_ref(&q, &k, &v, &sinks, (b, t, s, hq, hkv), &p);
        check(
            &format!("tf32 attention {p:?} t={t} s={s} hq={hq} hkv={hkv}"),
            &got,
            &want,
            &tol,
        );
        if kv_offset > q_offset {
            let masked = (kv_offset - q_offset) * hq * 64;
            assert!(
                got[..masked].iter().all(|x| *x == 0.0),
                "rows with no key must be 0"
            );
        }
    }
    Ok(())
}

/// The device-built plans (`route`) against the router's ids, then the same GEMMs and combine
/// through them and through host-built plans: equal bit for bit, slot by slot.
#[test]
fn device_routing_matches_host_grouping() -> R<()> {
    let (dev, mut rng) = setup("device routing")?;
    let (t, k, ne, nff, d) = (300, 4, 32, 64, 96);
    // Every token picks expert 0 (a group of 300 slots: 5 tiles), experts 30 and 31 never.
    let mut ids = Vec::with_capacity(t * k);
    for _ in 0..t {
        let mut c = vec![0u32];
        while c.len() < k {
            let x = rng.random_range(1..30u32);
            if !c.contains(&x) {
                c.push(x);
            }
        }
        ids.extend(c);
    }
    let r = route(&Tensor::from_vec(ids.clone(), (t, k), &dev)?, ne)?;
    let (slots, max_tiles) = (t * k, (t * k).div_ceil(64) + ne);
    let rows: Vec<u32> = r.up.row_map_host()?;
    let at: Vec<u32> = r.at.to_vec1()?;
    let tiles: Vec<u32> = r.up.tiles_host()?;
    assert_eq!(tiles.len(), 3 * max_tiles, "padded tile count");
    let mut seen = vec![false; slots];
    for (p, &pos) in at.iter().enumerate() {
        assert!(!seen[pos as usize], "slot position {pos} used twice");
        seen[pos as usize] = true;
        assert_eq!(rows[pos as usize], (p / k) as u32, "row of slot {p}");
    }
    // Expert of each position, grouped in expert order; the tiles cut each group by 64.
    let mut ex_at = vec![0u32; slots];
    for (p, &pos) in at.iter().enumerate() {
        ex_at[pos as usize] = ids[p];
    }
    assert!(
        ex_at.windows(2).all(|w| w[0] <= w[1]),
        "slots in expert order"
    );
    let mut want_tiles = Vec::new();
    let mut s0 = 0;
    while s0 < slots {
        let e = ex_at[s0];
        let end = s0 + ex_at[s0..].iter().take_while(|&&x| x == e).count();
        for m0 in (s0..end).step_by(64) {
            want_tiles.extend([e, m0 as u32, end as u32]);
        }
        s0 = end;
    }
    want_tiles.resize(3 * max_tiles, 0);
    assert_eq!(tiles, want_tiles, "tiles");

    // The same GEMMs through a host-built plan.
    let mut order: Vec<usize> = (0..slots).collect();
    order.sort_by_key(|&p| (ids[p], p));
    let mut host_at = vec![0u32; slots];
    let mut host_rows = Vec::with_capacity(slots);
    for (pos, &p) in order.iter().enumerate() {
        host_at[p] = pos as u32;
        host_rows.push((p / k) as u32);
    }
    let mut groups: Vec<(u32, usize)> = Vec::new();
    for &p in &order {
        match groups.last_mut() {
            Some((e, c)) if *e == ids[p] => *c += 1,
            _ => groups.push((ids[p], 1)),
        }
    }
    let host_up = GroupPlan::new(&groups, Some(&host_rows), &dev)?;
    let host_down = GroupPlan::new(&groups, None, &dev)?;
    let mk = |rng: &mut StdRng, n: usize, kk: usize| -> R<(Tensor, Tensor)> {
        let (qs, e8, _) = planar_mx(rng, ne, n, kk);
        Ok((
            Tensor::from_vec(qs, (ne, n, kk / 2), &dev)?,
            Tensor::from_vec(e8, (ne, n, kk / 32), &dev)?,
        ))
    };
    let ((gq, ge), (uq, ue), (dq, de)) = (
        mk(&mut rng, nff, d)?,
        mk(&mut rng, nff, d)?,
        mk(&mut rng, d, nff)?,
    );
    let bias = |rng: &mut StdRng, n: usize| {
        Tensor::from_vec(uniform(rng, ne * n, -1.0, 1.0), (ne, n), &dev)
    };
    let (gb, ub, db) = (
        bias(&mut rng, nff)?,
        bias(&mut rng, nff)?,
        bias(&mut rng, d)?,
    );
    let x = BRows::split(&Tensor::from_vec(acts(&mut rng, t, d), (t, d), &dev)?)?;
    let w = Tensor::from_vec(uniform(&mut rng, slots, 0.0, 1.0), (t, k), &dev)?;
    let mut outs = Vec::new();
    for (up, down, at_t) in [
        (&r.up, &r.down, r.at.clone()),
        (
            &host_up,
            &host_down,
            Tensor::from_vec(host_at.clone(), slots, &dev)?,
        ),
    ] {
        let act = grouped_gemm_swiglu(
            &x,
            up,
            PgWeights::Mxfp4 { qs: &gq, e8: &ge },
            PgWeights::Mxfp4 { qs: &uq, e8: &ue },
            &gb,
            &ub,
            1.702,
            7.0,
        )?;
        let y = grouped_gemm(
            &BRows::split(&act)?,
            down,
            PgWeights::Mxfp4 { qs: &dq, e8: &de },
            &db,
        )?;
        let act: Vec<f32> = act.flatten_all()?.to_vec1()?;
        let out: Vec<f32> = combine_slots(&y, &at_t, &w)?.flatten_all()?.to_vec1()?;
        outs.push((act, out));
    }
    for p in 0..slots {
        let (a, b) = (at[p] as usize, host_at[p] as usize);
        assert_eq!(
            outs[0].0[a * nff..(a + 1) * nff],
            outs[1].0[b * nff..(b + 1) * nff],
            "gate/up row of slot {p}"
        );
    }
    assert_eq!(outs[0].1, outs[1].1, "combined outputs");
    Ok(())
}

/// Half a quantization step of each element of `x` as the decode kernels quantize it (blocks
/// of 32, step amax / 16256), plus 1% of a step.
fn quant_half_steps(x: &[f64]) -> Vec<f64> {
    x.chunks(32)
        .flat_map(|b| {
            let amax = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            std::iter::repeat_n(amax / 16256.0 * 0.51, b.len())
        })
        .collect()
}

/// The batched decode's expert row kernels (`moe_rows`, both kernel pairs: dp4a dots and int8
/// MMAs, each expert's rows read once for all of its slots) on the device-built routing,
/// against an f64 CPU loop of the whole expert MLP (gate, up, SwiGLU, down, biases).
/// Activations are quantized to 15 bits per 32-block twice (the input, then SwiGLU's output),
/// so the bound propagates half a step of each through the dot products (SwiGLU through its
/// slope bound), plus 1e-5 × Σ|terms| for the f32 sums, doubled. Groups of 1 slot, over one
/// 64-slot tile (expert 0 in the third case: 70 slots, more than the MMA kernels' 32 at once),
/// groups that are not a multiple of 8 slots, unused experts, and 20B's d = 2880.
#[test]
fn moe_row_kernels_match_cpu() -> R<()> {
    use gpt_kernels::cuda::moe_rows::{moe_rows, RowsKernel};
    let (dev, mut rng) = setup("moe rows")?;
    let cases = [
        (1, 4, 8, 96, 160),
        (37, 4, 32, 192, 2880),
        (70, 3, 6, 64, 96),
    ];
    for (kernel, (t, top_k, ne, nff, d)) in [RowsKernel::Dp4a, RowsKernel::Mma]
        .into_iter()
        .flat_map(|k| cases.into_iter().map(move |c| (k, c)))
    {
        let ids: Vec<u32> = (0..t)
            .flat_map(|_| {
                let mut c = vec![0u32];
                while c.len() < top_k {
                    let x = rng.random_range(1..ne as u32);
                    if !c.contains(&x) {
                        c.push(x);
                    }
                }
                c.shuffle(&mut rng);
                c
            })
            .collect();
        let ((gq, ge, gw), (uq, ue, uw), (dq, de, dw), [gb, ub, db]) =
            random_experts(&dev, &mut rng, ne, nff, d)?;
        let bt = |b: &[f32], n: usize| Tensor::from_vec(b.to_vec(), (ne, n), &dev);
        let x = acts(&mut rng, t, d);
        let r = route(&Tensor::from_vec(ids.clone(), (t, top_k), &dev)?, ne)?;
        let y = moe_rows(
            &Tensor::from_vec(x.clone(), (t, d), &dev)?,
            &r,
            (
                PgWeights::Mxfp4 { qs: &gq, e8: &ge },
                PgWeights::Mxfp4 { qs: &uq, e8: &ue },
                PgWeights::Mxfp4 { qs: &dq, e8: &de },
            ),
            (&bt(&gb, nff)?, &bt(&ub, nff)?, &bt(&db, d)?),
            (1.702, 7.0),
            kernel,
        )?;
        assert_eq!(y.dims(), &[t * top_k, d]);
        let yv: Vec<f32> = y.flatten_all()?.to_vec1()?;
        let at: Vec<u32> = r.at.to_vec1()?;
        let xv: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let xq = quant_half_steps(&xv);
        let (mut got, mut want, mut tol) = (vec![], vec![], vec![]);
        for tok in 0..t {
            let xr = &xv[tok * d..(tok + 1) * d];
            let qr = &xq[tok * d..(tok + 1) * d];
            for c in 0..top_k {
                let e = ids[tok * top_k + c] as usize;
                let (mut act, mut act_err) = (vec![0.0; nff], vec![0.0; nff]);
                for j in 0..nff {
                    let row = (e * nff + j) * d;
                    let (g, ga) = dot(&gw[row..row + d], xr);
                    let (u, ua) = dot(&uw[row..row + d], xr);
                    let qe = |w: &[f64]| w.iter().zip(qr).map(|(a, b)| a.abs() * b).sum::<f64>();
                    let (g, u) = (
                        g + f64::from(gb[e * nff + j]),
                        u + f64::from(ub[e * nff + j]),
                    );
                    act[j] = swiglu(g, u);
                    let lip = 1.2 * (u.abs().min(7.0) + 1.0) + g.abs().min(7.0) + 1.0;
                    act_err[j] = lip
                        * (qe(&gw[row..row + d]) + qe(&uw[row..row + d]) + 1e-5 * (ga + ua + 2.0));
                }
                let aq = quant_half_steps(&act);
                let slot = at[tok * top_k + c] as usize;
                for j in 0..d {
                    let row = (e * d + j) * nff;
                    let (v, a) = dot(&dw[row..row + nff], &act);
                    let prop: f64 = dw[row..row + nff]
                        .iter()
                        .zip(act_err.iter().zip(&aq))
                        .map(|(w, (ea, q))| w.abs() * (ea + q + 0.01 * q))
                        .sum();
                    let b = f64::from(db[e * d + j]);
                    want.push(v + b);
                    tol.push(2.0 * (prop + 1e-5 * (a + b.abs())));
                    got.push(yv[slot * d + j]);
                }
            }
        }
        check(
            &format!("moe rows {kernel:?} t={t} d={d}"),
            &got,
            &want,
            &tol,
        );
    }
    Ok(())
}
