//! MoE expert matmul vs the candle-ops reference (gather one dequantized matrix per slot).

use candle_core::{Device, Result, Tensor};
use gpt_kernels::moe_mxfp4_matmul;
use gpt_kernels::reference::moe_mxfp4_matmul_slow;
use rand::rngs::StdRng;
use rand::seq::index::sample;

use crate::common::{assert_close, mxfp4_abs, mxfp4_blocks, rng, uniform, Tol};

/// Same bound as the dense matmul: error relative to `Σ_k |x||w| + |b|`.
const MOE_TOL: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
};

/// Router-like ids: `top_k` distinct experts per token.
fn distinct_ids(rng: &mut StdRng, t: usize, top_k: usize, e: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity(t * top_k);
    for _ in 0..t {
        v.extend(sample(rng, e, top_k).into_iter().map(|i| i as u32));
    }
    Tensor::from_vec(v, (t, top_k), &Device::Cpu)
}

fn check_moe(
    name: &str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    ids: &Tensor,
) -> Result<()> {
    let got = moe_mxfp4_matmul(x, w, bias, ids)?;
    let want = moe_mxfp4_matmul_slow(x, w, bias, ids)?;
    let abs_bias = bias.map(|b| b.abs()).transpose()?;
    let mag = moe_mxfp4_matmul_slow(&x.abs()?, &mxfp4_abs(w)?, abs_bias.as_ref(), ids)?;
    assert_close(name, &got, &want, &mag, MOE_TOL);
    Ok(())
}

#[test]
fn moe_vs_reference() -> Result<()> {
    let mut r = rng(31);
    // (t, top_k, e, n, k): decode (t = 1), prefill with ragged t, GPT-OSS-like k = 2880.
    for (t, top_k, e, n, k) in [
        (1usize, 4usize, 8usize, 40usize, 64usize),
        (9, 4, 8, 33, 96),
        (5, 2, 3, 16, 2880),
        (1, 4, 32, 24, 2880),
        (17, 4, 32, 20, 160),
    ] {
        let w = mxfp4_blocks(&mut r, &[e, n], k)?;
        let b = uniform(&mut r, &[e, n], -1.0, 1.0)?;
        let ids = distinct_ids(&mut r, t, top_k, e)?;
        let x = uniform(&mut r, &[t, k], -2.0, 2.0)?; // shared by all slots
        check_moe(
            &format!("moe (t{t}, k{k}) t{t} top{top_k} e{e} n{n}"),
            &x,
            &w,
            Some(&b),
            &ids,
        )?;
        let xs = uniform(&mut r, &[t, top_k, k], -2.0, 2.0)?; // one row per slot
        check_moe(
            &format!("moe (t{t}, top{top_k}, k{k}) e{e} n{n}"),
            &xs,
            &w,
            None,
            &ids,
        )?;
    }
    Ok(())
}

#[test]
fn moe_repeated_ids_and_strided_x() -> Result<()> {
    let mut r = rng(32);
    let (t, top_k, e, n, k) = (6, 3, 4, 18, 64);
    let w = mxfp4_blocks(&mut r, &[e, n], k)?;
    let b = uniform(&mut r, &[e, n], -1.0, 1.0)?;
    // Every slot uses expert 2 or 0, some tokens twice the same expert.
    let ids: Vec<u32> = (0..t * top_k)
        .map(|i| if i % 4 == 1 { 0 } else { 2 })
        .collect();
    let ids = Tensor::from_vec(ids, (t, top_k), &Device::Cpu)?;
    let x = uniform(&mut r, &[k, t], -1.0, 1.0)?.t()?; // (t, k) strided
    assert!(!x.is_contiguous());
    check_moe("moe repeated ids, strided x", &x, &w, Some(&b), &ids)
}

#[test]
fn moe_rejects_bad_inputs() -> Result<()> {
    let mut r = rng(33);
    let (t, top_k, e, n, k) = (2, 2, 3, 8, 64);
    let w = mxfp4_blocks(&mut r, &[e, n], k)?;
    let x = uniform(&mut r, &[t, k], -1.0, 1.0)?;
    let err = |res: Result<Tensor>| res.expect_err("must fail").to_string();
    let ids_oob = Tensor::from_vec(vec![0u32, 1, 2, 3], (t, top_k), &Device::Cpu)?;
    let msg = err(moe_mxfp4_matmul(&x, &w, None, &ids_oob));
    assert!(
        msg.contains("out of range") && msg.contains("3 experts"),
        "{msg}"
    );
    let ids = Tensor::from_vec(vec![0u32, 1, 2, 0], (t, top_k), &Device::Cpu)?;
    let x_bad = uniform(&mut r, &[t + 1, k], -1.0, 1.0)?;
    assert!(err(moe_mxfp4_matmul(&x_bad, &w, None, &ids)).contains("moe_mxfp4_matmul"));
    let b_bad = uniform(&mut r, &[e, n + 1], -1.0, 1.0)?;
    assert!(err(moe_mxfp4_matmul(&x, &w, Some(&b_bad), &ids)).contains("bias"));
    let ids_f32 = ids.to_dtype(candle_core::DType::F32)?;
    assert!(err(moe_mxfp4_matmul(&x, &w, None, &ids_f32)).contains("u32"));
    Ok(())
}
