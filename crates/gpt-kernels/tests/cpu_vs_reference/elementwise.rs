//! SwiGLU-OAI and the router top-k softmax vs their candle-ops references.

use candle_core::{Device, Result, Tensor};
use gpt_kernels::reference::{router_topk_softmax_slow, swiglu_oai_slow};
use gpt_kernels::{router_topk_softmax, swiglu_oai};
use rand::Rng;

use crate::common::{assert_close, rng, uniform, Tol};

/// Elementwise f32: only exp/division rounding differs (a few ulp).
const SWIGLU_TOL: Tol = Tol {
    abs: 1e-6,
    rel: 1e-6,
};
/// k-wide softmax vs full softmax + renormalization: a few ulp of values <= 1.
const ROUTER_TOL: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
};

#[test]
fn swiglu_vs_reference() -> Result<()> {
    let mut r = rng(91);
    for dims in [vec![7usize], vec![3, 5, 33], vec![2, 4, 2880]] {
        // Range ±10 exercises both clamps (limit 7) and the unclamped middle.
        let gate = uniform(&mut r, &dims, -10.0, 10.0)?;
        let up = uniform(&mut r, &dims, -10.0, 10.0)?;
        let got = swiglu_oai(&gate, &up, 1.702, 7.0)?;
        let want = swiglu_oai_slow(&gate, &up, 1.702, 7.0)?;
        assert_close(
            &format!("swiglu {dims:?}"),
            &got,
            &want,
            &want.abs()?,
            SWIGLU_TOL,
        );
    }
    // Other constants, strided gate.
    let gate = uniform(&mut r, &[40, 6], -4.0, 4.0)?.t()?; // (6, 40) strided
    let up = uniform(&mut r, &[6, 40], -4.0, 4.0)?;
    let got = swiglu_oai(&gate, &up, 1.0, 2.5)?;
    let want = swiglu_oai_slow(&gate, &up, 1.0, 2.5)?;
    assert_close("swiglu strided", &got, &want, &want.abs()?, SWIGLU_TOL);
    let err = swiglu_oai(&gate, &up.t()?, 1.0, 2.5).expect_err("shape mismatch");
    assert!(err.to_string().contains("swiglu_oai"));
    Ok(())
}

fn check_router(name: &str, logits: &Tensor, k: usize) -> Result<()> {
    let (ids, w) = router_topk_softmax(logits, k)?;
    let (ids_ref, w_ref) = router_topk_softmax_slow(logits, k)?;
    assert_eq!(
        ids.to_vec2::<u32>()?,
        ids_ref.to_vec2::<u32>()?,
        "{name}: ids"
    );
    assert_close(name, &w, &w_ref, &w_ref.abs()?, ROUTER_TOL);
    Ok(())
}

#[test]
fn router_vs_reference() -> Result<()> {
    let mut r = rng(101);
    check_router(
        "router t9 e32 k4",
        &uniform(&mut r, &[9, 32], -5.0, 5.0)?,
        4,
    )?;
    check_router("router t5 e7 k7", &uniform(&mut r, &[5, 7], -5.0, 5.0)?, 7)?;
    check_router(
        "router t1 e32 k1",
        &uniform(&mut r, &[1, 32], -5.0, 5.0)?,
        1,
    )?;
    // Many ties: integer logits in 0..4; ties must resolve to the lower expert index.
    let v: Vec<f32> = (0..11 * 32).map(|_| r.random_range(0..4) as f32).collect();
    check_router(
        "router ties",
        &Tensor::from_vec(v, (11, 32), &Device::Cpu)?,
        4,
    )?;
    // Strided logits.
    let lt = uniform(&mut r, &[16, 3], -5.0, 5.0)?.t()?; // (3, 16)
    check_router("router strided", &lt, 4)?;
    let l = uniform(&mut r, &[2, 8], -1.0, 1.0)?;
    assert!(router_topk_softmax(&l, 0).is_err());
    assert!(router_topk_softmax(&l, 9).is_err());
    Ok(())
}
