//! CPU attention over query tiles (prefill): the rows of up to [`TILE_ROWS`] queries — a run of
//! consecutive positions times the query heads of one KV head — share each block of
//! [`KEY_BLOCK`] keys. The block is transposed once into `kt (d, KEY_BLOCK)`, so a row's scores
//! are `d` broadcast FMAs over whole vectors of keys (no per-key horizontal sums), and the
//! probability-weighted values add into the row with the output held in registers across the
//! block's keys. Online softmax per row, f32 throughout, the sink in the running max and sum as
//! in [`super::cpu`]'s row kernel (which one-query calls keep).

use rayon::prelude::*;

use super::cpu::{exp_neg, visible_keys, AttnDims, AttnParams, Io};

/// Keys per block.
const KEY_BLOCK: usize = 64;

/// Rows (queries × heads of one group) per tile, at most.
pub(crate) const TILE_ROWS: usize = 32;

/// The output buffer, written by tiles that own disjoint rows.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each tile writes only the rows it owns (see `attention`), so sharing the pointer
// across threads never makes two writers of one element.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Attention with sinks over query tiles → `out (b, t, hq, d)`, as [`super::cpu::attention`].
pub(crate) fn attention(dims: &AttnDims, params: &AttnParams, io: &Io<'_>, out: &mut [f32]) {
    attention_isa(crate::simd::Isa::detected(), dims, params, io, out)
}

/// [`attention`] compiled for `isa` (at most what this CPU runs).
fn attention_isa(
    isa: crate::simd::Isa,
    dims: &AttnDims,
    params: &AttnParams,
    io: &Io<'_>,
    out: &mut [f32],
) {
    let AttnDims {
        b, t, hq, hkv, d, ..
    } = *dims;
    assert!(out.len() == b * t * hq * d && hkv > 0 && hq.is_multiple_of(hkv));
    assert!(io.q.len() == out.len() && io.sinks.len() == hq);
    assert!(io.k.len() == b * dims.s * hkv * d && io.v.len() == io.k.len());
    let group = hq / hkv;
    let tq = (TILE_ROWS / group).max(1);
    let tiles = t.div_ceil(tq);
    let o = Out(out.as_mut_ptr());
    (0..b * hkv * tiles).into_par_iter().for_each(|task| {
        let (bb, rest) = (task / (hkv * tiles), task % (hkv * tiles));
        let (g, tile) = (rest / tiles, rest % tiles);
        let pos = tile * tq..((tile + 1) * tq).min(t);
        let tile = Tile { bb, g, pos, group };
        // SAFETY: the tile writes rows (bb, i, g·group + r) for its own i and r only: tasks
        // differ in (bb, g, tile), so no two write the same row; every row is in bounds
        // (asserted above).
        let out = o;
        #[cfg(target_arch = "x86_64")]
        {
            use crate::simd::Isa;
            if isa >= Isa::Avx512 {
                return unsafe { tile_avx512(dims, params, io, &tile, out) };
            }
            if isa >= Isa::Avx2 {
                return unsafe { tile_avx2(dims, params, io, &tile, out) };
            }
        }
        let _ = isa;
        unsafe { run_tile(dims, params, io, &tile, out, Plain) }
    });
}

/// The rows one task owns: positions `pos` of sequence `bb`, heads of group `g`.
struct Tile {
    bb: usize,
    g: usize,
    pos: std::ops::Range<usize>,
    group: usize,
}

/// The two inner loops of a tile row: its scores against a transposed key block, and the
/// probability-weighted sum of values.
trait TileKernels: Copy {
    /// `sc[j] = Σ_c q[c] · kt[c][j]` over a block `kt (q.len(), KEY_BLOCK)`.
    fn scores(self, q: &[f32], kt: &[f32], sc: &mut [f32; KEY_BLOCK]);
    /// `o += Σ_j p[j] · v(j)`, each `v(j)` at least `o.len()` long.
    fn add_values<'v>(self, p: &[f32], v: impl Fn(usize) -> &'v [f32], o: &mut [f32]);
}

/// Plain loops (vectorized by the compiler), with `a · b + c` as two operations (`Plain`) or
/// fused (`Fused`: only where the target has FMA, else it is a libm call per element).
#[derive(Clone, Copy)]
struct Plain;
#[derive(Clone, Copy)]
struct Fused;

macro_rules! generic_kernels {
    ($ty:ty, |$a:ident, $b:ident, $c:ident| $fma:expr) => {
        impl TileKernels for $ty {
            #[inline(always)]
            fn scores(self, q: &[f32], kt: &[f32], sc: &mut [f32; KEY_BLOCK]) {
                let fma = |$a: f32, $b: f32, $c: f32| $fma;
                for (jc, out) in sc.chunks_exact_mut(LANES).enumerate() {
                    let mut acc = [0f32; LANES];
                    for (c, &qc) in q.iter().enumerate() {
                        let kc = &kt[c * KEY_BLOCK + jc * LANES..][..LANES];
                        for (a, &k) in acc.iter_mut().zip(kc) {
                            *a = fma(qc, k, *a);
                        }
                    }
                    out.copy_from_slice(&acc);
                }
            }
            #[inline(always)]
            fn add_values<'v>(self, p: &[f32], v: impl Fn(usize) -> &'v [f32], o: &mut [f32]) {
                let fma = |$a: f32, $b: f32, $c: f32| $fma;
                for (j, &pj) in p.iter().enumerate() {
                    for (y, &x) in o.iter_mut().zip(v(j)) {
                        *y = fma(pj, x, *y);
                    }
                }
            }
        }
    };
}
generic_kernels!(Plain, |a, b, c| a * b + c);
generic_kernels!(Fused, |a, b, c| a.mul_add(b, c));

/// AVX-512 intrinsics: four independent FMA chains in both loops; constructed only where
/// AVX-512 was detected.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl TileKernels for Avx512 {
    #[inline(always)]
    fn scores(self, q: &[f32], kt: &[f32], sc: &mut [f32; KEY_BLOCK]) {
        use std::arch::x86_64::*;
        assert!(kt.len() >= q.len() * KEY_BLOCK);
        // SAFETY: `Avx512` exists only where AVX-512 F was detected; every load reads row `c`
        // of `kt`, in bounds (asserted), and the stores write `sc`'s 64 lanes.
        unsafe {
            let mut a = [_mm512_setzero_ps(); KEY_BLOCK / LANES];
            for (c, &qc) in q.iter().enumerate() {
                let qv = _mm512_set1_ps(qc);
                let kr = kt.as_ptr().add(c * KEY_BLOCK);
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kr.add(i * LANES)), *ai);
                }
            }
            for (i, ai) in a.iter().enumerate() {
                _mm512_storeu_ps(sc.as_mut_ptr().add(i * LANES), *ai);
            }
        }
    }

    #[inline(always)]
    fn add_values<'v>(self, p: &[f32], v: impl Fn(usize) -> &'v [f32], o: &mut [f32]) {
        use std::arch::x86_64::*;
        let d = o.len();
        let mut c = 0;
        // Up to four 16-column chunks at once, even and odd keys in separate chains: eight
        // independent FMA chains for d = 64, four for d = 32.
        while c + LANES <= d {
            let w = ((d - c) / LANES).min(4);
            // SAFETY: as in `scores`; each `v(j)` holds at least `d` values (the trait's
            // contract, asserted per key), so lanes `c..c + 16 w <= d` are in bounds, as are
            // `o`'s.
            unsafe {
                let mut e = [_mm512_setzero_ps(); 4];
                let mut od = [_mm512_setzero_ps(); 4];
                for (i, ei) in e.iter_mut().enumerate().take(w) {
                    *ei = _mm512_loadu_ps(o.as_ptr().add(c + i * LANES));
                }
                let mut j = 0;
                while j < p.len() {
                    let (v0, p0) = (v(j), _mm512_set1_ps(p[j]));
                    assert!(v0.len() >= d);
                    for (i, ei) in e.iter_mut().enumerate().take(w) {
                        let x = _mm512_loadu_ps(v0.as_ptr().add(c + i * LANES));
                        *ei = _mm512_fmadd_ps(p0, x, *ei);
                    }
                    if j + 1 < p.len() {
                        let (v1, p1) = (v(j + 1), _mm512_set1_ps(p[j + 1]));
                        assert!(v1.len() >= d);
                        for (i, oi) in od.iter_mut().enumerate().take(w) {
                            let x = _mm512_loadu_ps(v1.as_ptr().add(c + i * LANES));
                            *oi = _mm512_fmadd_ps(p1, x, *oi);
                        }
                    }
                    j += 2;
                }
                for i in 0..w {
                    let y = _mm512_add_ps(e[i], od[i]);
                    _mm512_storeu_ps(o.as_mut_ptr().add(c + i * LANES), y);
                }
            }
            c += w * LANES;
        }
        if c < d {
            Fused.add_values(p, |j| &v(j)[c..], &mut o[c..]);
        }
    }
}

/// [`run_tile`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn tile_avx512(dims: &AttnDims, params: &AttnParams, io: &Io<'_>, tile: &Tile, out: Out) {
    // SAFETY: forwarded from the caller; this CPU runs AVX-512 (checked by the caller).
    unsafe { run_tile(dims, params, io, tile, out, Avx512) }
}

/// [`run_tile`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(dims: &AttnDims, params: &AttnParams, io: &Io<'_>, tile: &Tile, out: Out) {
    // SAFETY: as in `tile_avx512`, for AVX2 and FMA.
    unsafe { run_tile(dims, params, io, tile, out, Fused) }
}

/// One tile: every row's online softmax over the tile's key blocks, then its normalized
/// output written to `out`.
///
/// # Safety
/// `out` points to the `(b, t, hq, d)` output, and no other thread writes the tile's rows.
#[inline(always)]
unsafe fn run_tile<K: TileKernels>(
    dims: &AttnDims,
    params: &AttnParams,
    io: &Io<'_>,
    tile: &Tile,
    out: Out,
    f: K,
) {
    let AttnDims {
        t, s, hq, hkv, d, ..
    } = *dims;
    let Tile { bb, g, group, .. } = *tile;
    let pos = tile.pos.clone();
    let rows = pos.len() * group;
    // Row r = (position pos.start + r / group, head g·group + r % group).
    let row_of = |r: usize| (bb * t + pos.start + r / group) * hq + g * group + r % group;
    let vis = |r: usize| {
        let p = params.q_offset + pos.start + r / group;
        visible_keys(p, s, params.window, params.kv_offset)
    };
    let mut m: Vec<f32> = (0..rows).map(|r| io.sinks[g * group + r % group]).collect();
    let mut l = vec![1f32; rows];
    let mut o = vec![0f32; rows * d];
    let mut kt = vec![0f32; d * KEY_BLOCK];
    // Visible ranges only grow with the position: the tile's keys run from its first row's
    // start to its last row's end.
    let (j_lo, _) = vis(0);
    let (_, j_hi) = vis(rows - 1);
    let key = |j: usize| ((bb * s + j) * hkv + g) * d;
    let mut start = j_lo;
    while start < j_hi {
        let n = KEY_BLOCK.min(j_hi - start);
        for jj in 0..KEY_BLOCK {
            let kr = (jj < n).then(|| &io.k[key(start + jj)..][..d]);
            for c in 0..d {
                kt[c * KEY_BLOCK + jj] = kr.map_or(0.0, |kr| kr[c]);
            }
        }
        for r in 0..rows {
            let (a, z) = vis(r);
            let (a, z) = (a.max(start), z.min(start + n));
            if a >= z {
                continue;
            }
            let qr = &io.q[row_of(r) * d..][..d];
            let mut sc = [0f32; KEY_BLOCK];
            f.scores(qr, &kt, &mut sc);
            let (lo, hi) = (a - start, z - start);
            for (j, x) in sc.iter_mut().enumerate() {
                *x = if j >= lo && j < hi {
                    *x * params.scale
                } else {
                    f32::NEG_INFINITY
                };
            }
            let bm = lanes_max(&sc);
            let or = &mut o[r * d..][..d];
            if bm > m[r] {
                let c = exp_neg(m[r] - bm);
                l[r] *= c;
                or.iter_mut().for_each(|x| *x *= c);
                m[r] = bm;
            }
            let mr = m[r];
            for x in sc.iter_mut() {
                *x = exp_neg(*x - mr); // exp(-inf) clamps to ~1e-38; masked keys add no value
            }
            // The masked lanes' clamped exp (≤ 1.2e-38 each) is below f32 resolution of l ≥ 1.
            l[r] += lanes_sum(&sc);
            f.add_values(&sc[lo..hi], |j| &io.v[key(start + lo + j)..][..d], or);
        }
        start += n;
    }
    for r in 0..rows {
        let inv = 1.0 / l[r];
        // SAFETY: row `row_of(r)` is this tile's own and in bounds (see `attention`).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(row_of(r) * d), d) };
        for (y, x) in dst.iter_mut().zip(&o[r * d..][..d]) {
            *y = x * inv;
        }
    }
}

/// Lanes the block loops are written in (one AVX-512 register; two AVX2 ones).
const LANES: usize = 16;

/// The largest of `x` (lane-wise maxima, then across lanes; no NaN handling: scores are
/// finite or -inf).
#[inline(always)]
fn lanes_max(x: &[f32; KEY_BLOCK]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    for ch in x.chunks_exact(LANES) {
        for (a, &v) in m.iter_mut().zip(ch) {
            *a = if v > *a { v } else { *a };
        }
    }
    m.into_iter()
        .fold(f32::NEG_INFINITY, |a, v| if v > a { v } else { a })
}

/// `Σ x` in [`LANES`] partial sums.
#[inline(always)]
fn lanes_sum(x: &[f32; KEY_BLOCK]) -> f32 {
    let mut s = [0f32; LANES];
    for ch in x.chunks_exact(LANES) {
        for (a, &v) in s.iter_mut().zip(ch) {
            *a += v;
        }
    }
    s.into_iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;
    use rand::{Rng, SeedableRng};

    /// The f64 softmax with sinks of one row `(bb, i, h)`.
    fn reference_row(
        dims: &AttnDims,
        params: &AttnParams,
        io: &Io<'_>,
        (bb, i, h): (usize, usize, usize),
    ) -> Vec<f64> {
        let AttnDims {
            t, s, hq, hkv, d, ..
        } = *dims;
        let g = h / (hq / hkv);
        let qr = &io.q[((bb * t + i) * hq + h) * d..][..d];
        let (j0, j1) = visible_keys(params.q_offset + i, s, params.window, params.kv_offset);
        let key = |j: usize| ((bb * s + j) * hkv + g) * d;
        let sc: Vec<f64> = (j0..j1)
            .map(|j| {
                let dot: f64 = (0..d)
                    .map(|c| f64::from(qr[c]) * f64::from(io.k[key(j) + c]))
                    .sum();
                f64::from(params.scale) * dot
            })
            .collect();
        let sink = f64::from(io.sinks[h]);
        let mx = sc.iter().copied().fold(sink, f64::max);
        let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum::<f64>() + (sink - mx).exp();
        (0..d)
            .map(|c| {
                (j0..j1)
                    .zip(&sc)
                    .map(|(j, x)| (x - mx).exp() / z * f64::from(io.v[key(j) + c]))
                    .sum()
            })
            .collect()
    }

    /// Every instruction set's tiles against the f64 softmax on fresh random inputs: ragged
    /// tiles (t not a multiple of the tile), two sequences, GQA groups of 1, 3 and 8, head
    /// sizes off the vector width, several key blocks, windows, keys that start after 0 and
    /// queries whose whole key range is masked but for the sink.
    #[test]
    fn tiles_equal_an_f64_softmax_on_every_isa() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::rng().random());
        let cases = [
            // (b, t, s, hq, hkv, d, window, q_offset, kv_offset)
            (2, 37, 150, 6, 2, 24, None, 113, 0),
            (1, 70, 70, 8, 8, 32, Some(9), 0, 0),
            (1, 19, 200, 16, 2, 64, Some(100), 190, 5),
            (1, 20, 40, 8, 1, 7, Some(3), 8, 10),
        ];
        for (b, t, s, hq, hkv, d, window, q_offset, kv_offset) in cases {
            let mut draw = |n: usize, amp: f32| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-amp..amp)).collect()
            };
            let (q, k, v) = (
                draw(b * t * hq * d, 2.0),
                draw(b * s * hkv * d, 2.0),
                draw(b * s * hkv * d, 1.0),
            );
            let sinks = draw(hq, 2.0);
            let dims = AttnDims {
                b,
                t,
                s,
                hq,
                hkv,
                d,
            };
            let params = AttnParams {
                scale: 1.0 / (d as f32).sqrt(),
                window,
                q_offset,
                kv_offset,
            };
            let io = Io {
                q: &q,
                k: &k,
                v: &v,
                sinks: &sinks,
            };
            for isa in Isa::runnable() {
                let mut out = vec![f32::NAN; b * t * hq * d];
                attention_isa(isa, &dims, &params, &io, &mut out);
                for bb in 0..b {
                    for i in 0..t {
                        for h in 0..hq {
                            let want = reference_row(&dims, &params, &io, (bb, i, h));
                            let row = ((bb * t + i) * hq + h) * d;
                            for (c, w) in want.iter().enumerate() {
                                let y = f64::from(out[row + c]);
                                assert!(
                                    (y - w).abs() < 2e-6,
                                    "{isa:?} {dims:?} row ({bb}, {i}, {h}) col {c}: {y} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
