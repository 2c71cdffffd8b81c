//! Attention with sinks vs the candle-ops reference (explicit mask + sink column + softmax).

use candle_core::{Result, Tensor};
use gpt_kernels::attention_with_sinks;
use gpt_kernels::reference::attention_with_sinks_slow;

use crate::common::{assert_close, rng, uniform, Tol};

/// Outputs are convex combinations of v rows (weights sum to <= 1), so the error is measured
/// relative to `max |v|`: online vs two-pass softmax and different dot orders stay ~1e-6.
const ATTN_TOL: Tol = Tol {
    abs: 1e-6,
    rel: 1e-5,
};

/// One attention configuration.
#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    t: usize,
    s: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    window: Option<usize>,
    q_offset: usize,
    kv_offset: usize,
}

/// Random q, k, v, sinks for `c`.
fn inputs(seed: u64, c: Case) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let mut r = rng(seed);
    let q = uniform(&mut r, &[c.b, c.t, c.hq, c.d], -2.0, 2.0)?;
    let k = uniform(&mut r, &[c.b, c.s, c.hkv, c.d], -2.0, 2.0)?;
    let v = uniform(&mut r, &[c.b, c.s, c.hkv, c.d], -3.0, 3.0)?;
    let sinks = uniform(&mut r, &[c.hq], -3.0, 3.0)?;
    Ok((q, k, v, sinks))
}

fn run(c: Case, q: &Tensor, k: &Tensor, v: &Tensor, sinks: &Tensor) -> Result<Tensor> {
    let scale = 1.0 / (c.d as f32).sqrt();
    attention_with_sinks(q, k, v, sinks, scale, c.window, c.q_offset, c.kv_offset)
}

fn check(seed: u64, c: Case) -> Result<()> {
    let (q, k, v, sinks) = inputs(seed, c)?;
    let scale = 1.0 / (c.d as f32).sqrt();
    let got = run(c, &q, &k, &v, &sinks)?;
    let want =
        attention_with_sinks_slow(&q, &k, &v, &sinks, scale, c.window, c.q_offset, c.kv_offset)?;
    let vmax = v.abs()?.flatten_all()?.max(0)?;
    assert_close(&format!("{c:?}"), &got, &want, &vmax, ATTN_TOL);
    Ok(())
}

const BASE: Case = Case {
    b: 1,
    t: 7,
    s: 7,
    hq: 4,
    hkv: 2,
    d: 16,
    window: None,
    q_offset: 0,
    kv_offset: 0,
};

#[test]
fn prefill_full_and_windowed() -> Result<()> {
    check(41, BASE)?;
    check(
        42,
        Case {
            b: 2,
            t: 13,
            s: 13,
            window: Some(4),
            ..BASE
        },
    )?; // window < sequence
    check(
        43,
        Case {
            t: 13,
            s: 13,
            window: Some(50),
            ..BASE
        },
    )?; // window > sequence
    check(
        44,
        Case {
            t: 9,
            s: 9,
            hq: 8,
            hkv: 1,
            d: 64,
            window: Some(3),
            ..BASE
        },
    )?; // GQA 8:1
    check(
        45,
        Case {
            t: 5,
            s: 5,
            hq: 3,
            hkv: 3,
            d: 7,
            ..BASE
        },
    )?; // MHA, odd d
    Ok(())
}

#[test]
fn decode_and_chunked_prefill_with_cache() -> Result<()> {
    // The cache holds positions 0..s with s = q_offset + t.
    check(
        51,
        Case {
            t: 1,
            s: 10,
            q_offset: 9,
            ..BASE
        },
    )?;
    check(
        52,
        Case {
            t: 1,
            s: 10,
            q_offset: 9,
            window: Some(4),
            ..BASE
        },
    )?;
    check(
        53,
        Case {
            b: 2,
            t: 5,
            s: 11,
            q_offset: 6,
            window: Some(3),
            ..BASE
        },
    )?;
    check(
        54,
        Case {
            t: 3,
            s: 23,
            q_offset: 20,
            hq: 8,
            hkv: 2,
            d: 64,
            window: Some(8),
            ..BASE
        },
    )?;
    Ok(())
}

#[test]
fn ring_cache_with_kv_offset() -> Result<()> {
    // Keys are positions kv_offset..kv_offset + s of a sliding-window cache.
    check(
        61,
        Case {
            t: 1,
            s: 4,
            q_offset: 12,
            kv_offset: 9,
            window: Some(4),
            ..BASE
        },
    )?;
    check(
        62,
        Case {
            t: 3,
            s: 10,
            q_offset: 20,
            kv_offset: 13,
            window: Some(8),
            ..BASE
        },
    )?;
    // Queries 0..4 see no key at all (only the sink): output 0.
    check(
        63,
        Case {
            t: 8,
            s: 6,
            q_offset: 0,
            kv_offset: 5,
            ..BASE
        },
    )?;
    Ok(())
}

#[test]
fn truncated_cache_equals_full_cache() -> Result<()> {
    // Full cache of positions 0..23, queries 20..22, window 8: the oldest visible key is
    // position 20 + 1 − 8 = 13, so dropping keys 0..off for off <= 13 must not change anything.
    let full = Case {
        t: 3,
        s: 23,
        q_offset: 20,
        hq: 8,
        hkv: 2,
        d: 32,
        window: Some(8),
        ..BASE
    };
    let (q, k, v, sinks) = inputs(71, full)?;
    let want = run(full, &q, &k, &v, &sinks)?;
    for off in [1usize, 10, 13] {
        let c = Case {
            s: full.s - off,
            kv_offset: off,
            ..full
        };
        let kt = k.narrow(1, off, c.s)?;
        let vt = v.narrow(1, off, c.s)?;
        let got = run(c, &q, &kt, &vt, &sinks)?;
        let vmax = v.abs()?.flatten_all()?.max(0)?;
        assert_close(
            &format!("truncated off {off}"),
            &got,
            &want,
            &vmax,
            ATTN_TOL,
        );
    }
    // Dropping one visible key (off = 14) must change the first query's output.
    let c = Case {
        s: full.s - 14,
        kv_offset: 14,
        ..full
    };
    let got = run(
        c,
        &q,
        &k.narrow(1, 14, c.s)?,
        &v.narrow(1, 14, c.s)?,
        &sinks,
    )?;
    let diff = (got - &want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(
        diff > 1e-3,
        "dropping a visible key changed nothing ({diff})"
    );
    Ok(())
}

#[test]
fn strided_q_and_errors() -> Result<()> {
    let c = Case {
        t: 6,
        s: 6,
        window: Some(5),
        ..BASE
    };
    let (q, k, v, sinks) = inputs(81, c)?;
    // q as a (b, t, hq, d) view of a (b, hq, t, d) buffer.
    let q_strided = q.transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
    assert!(!q_strided.is_contiguous());
    let got = run(c, &q_strided, &k, &v, &sinks)?;
    let want = run(c, &q, &k, &v, &sinks)?;
    let vmax = v.abs()?.flatten_all()?.max(0)?;
    assert_close("strided q", &got, &want, &vmax, ATTN_TOL);

    let err = |res: Result<Tensor>| res.expect_err("must fail").to_string();
    let bad_sinks = sinks.narrow(0, 0, 3)?;
    assert!(err(run(c, &q, &k, &v, &bad_sinks)).contains("sinks"));
    let k3 = k.narrow(2, 0, 1)?.broadcast_as((1, 6, 3, 16))?; // 4 query heads, 3 kv heads
    assert!(err(run(c, &q, &k3, &k3, &sinks)).contains("multiple of kv heads"));
    let zero_window = Case {
        window: Some(0),
        ..c
    };
    assert!(err(run(zero_window, &q, &k, &v, &sinks)).contains("window"));
    Ok(())
}
