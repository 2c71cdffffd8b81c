//! CPU loop for attention with sinks: one online-softmax (flash-style) pass per (batch, query,
//! head) row, f32 throughout.

use rayon::prelude::*;

use crate::dot::{axpy, dot};

/// Shapes of one attention call: q (b, t, hq, d), k and v (b, s, hkv, d).
pub(crate) struct AttnDims {
    pub b: usize,
    pub t: usize,
    pub s: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
}

/// Scalars of one attention call (see [`super::attention_with_sinks`]).
pub(crate) struct AttnParams {
    pub scale: f32,
    pub window: Option<usize>,
    pub q_offset: usize,
    pub kv_offset: usize,
}

/// The half-open range of key indices `j` visible to the query at absolute position `p`, for
/// `s` keys whose absolute positions are `kv_offset + j`: causal `kv_offset + j <= p` and, with
/// a window `w`, `p - (kv_offset + j) < w`.
pub(crate) fn visible_keys(
    p: usize,
    s: usize,
    window: Option<usize>,
    kv_offset: usize,
) -> (usize, usize) {
    let end = if p >= kv_offset {
        s.min(p - kv_offset + 1)
    } else {
        0
    };
    let start = window.map_or(0, |w| (p + 1).saturating_sub(w).saturating_sub(kv_offset));
    (start.min(end), end)
}

/// Attention with per-head sink logits → (b, t, hq, d).
///
/// `q` (b, t, hq, d), `k`/`v` (b, s, hkv, d), `sinks` (hq), all contiguous f32.
pub(crate) fn attention(
    dims: &AttnDims,
    params: &AttnParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    sinks: &[f32],
) -> Vec<f32> {
    let AttnDims {
        b,
        t,
        s,
        hq,
        hkv,
        d,
    } = *dims;
    let mut out = vec![0f32; b * t * hq * d];
    if d == 0 || out.is_empty() {
        return out;
    }
    let group = hq / hkv;
    out.par_chunks_mut(d)
        .with_min_len(4)
        .enumerate()
        .for_each(|(row, o)| {
            // row = (bb·t + i)·hq + h, the same flat index as in q.
            let h = row % hq;
            let i = (row / hq) % t;
            let bb = row / (hq * t);
            let g = h / group;
            let qr = &q[row * d..(row + 1) * d];
            let p = params.q_offset + i;
            let (j0, j1) = visible_keys(p, s, params.window, params.kv_offset);
            // Running max starts at the sink logit, whose exp(S − m) contributes to the sum.
            let mut m = sinks[h];
            let mut l = 1f32;
            for j in j0..j1 {
                let off = ((bb * s + j) * hkv + g) * d;
                let score = params.scale * dot(qr, &k[off..off + d]);
                let vr = &v[off..off + d];
                if score > m {
                    let c = (m - score).exp();
                    l = l * c + 1.0;
                    o.iter_mut().for_each(|x| *x *= c);
                    axpy(1.0, vr, o);
                    m = score;
                } else {
                    let pj = (score - m).exp();
                    l += pj;
                    axpy(pj, vr, o);
                }
            }
            let inv = 1.0 / l;
            o.iter_mut().for_each(|x| *x *= inv);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::visible_keys;

    #[test]
    fn visible_keys_matches_brute_force() {
        for s in 0..7 {
            for kv_offset in 0..5 {
                for p in 0..12 {
                    for window in [None, Some(1), Some(2), Some(3), Some(20)] {
                        let want: Vec<usize> = (0..s)
                            .filter(|&j| {
                                let pk = kv_offset + j;
                                pk <= p && window.is_none_or(|w| p - pk < w)
                            })
                            .collect();
                        let (a, b) = visible_keys(p, s, window, kv_offset);
                        let got: Vec<usize> = (a..b).collect();
                        assert_eq!(got, want, "p={p} s={s} kv_offset={kv_offset} w={window:?}");
                    }
                }
            }
        }
    }
}
