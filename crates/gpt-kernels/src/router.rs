//! MoE router: top-k expert selection on raw logits, then softmax over the k selected logits
//! (spec §6.4; OpenAI `torch.topk(sorted=True)` + `softmax`, ggml `SOFTMAX_WEIGHT` gating).

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu_storage::{contiguous_slice, with_cpu_slice};

const OP: &str = "router_topk_softmax";

/// `CustomOp1` behind [`router_topk_softmax`]: logits (t, e) → U32 ids (t, k), sorted by
/// descending logit, ties broken towards the lower expert index.
#[derive(Debug, Clone, Copy)]
pub struct RouterTopK {
    /// Experts selected per token (`<= e`).
    pub k: usize,
}

/// Indices of the `k = ids.len()` largest values of `row`, descending; on equal values the lower
/// index wins. NaN never beats a number; a row of NaN selects the lowest free indices.
/// O(k² · e), which is nothing for GPT-OSS (k = 4, e = 32).
fn topk_row(row: &[f32], ids: &mut [u32]) {
    for slot in 0..ids.len() {
        let mut best: Option<usize> = None;
        for (j, &v) in row.iter().enumerate() {
            if ids[..slot].contains(&(j as u32)) {
                continue;
            }
            match best {
                None => best = Some(j),
                Some(b) if v > row[b] || (row[b].is_nan() && !v.is_nan()) => best = Some(j),
                _ => {}
            }
        }
        ids[slot] = best.unwrap_or(0) as u32;
    }
}

impl CustomOp1 for RouterTopK {
    fn name(&self) -> &'static str {
        "gpt-kernels/router-topk"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let logits = contiguous_slice::<f32>(s, l, OP, "logits")?;
        let &[t, e] = l.dims() else {
            bail!("{OP}: expected logits [t, e], got {:?}", l.dims());
        };
        if self.k == 0 || self.k > e {
            bail!(
                "{OP}: k = {} must be in 1..={e} (logits {:?})",
                self.k,
                l.dims()
            );
        }
        let mut ids = vec![0u32; t * self.k];
        ids.par_chunks_mut(self.k)
            .zip(logits.par_chunks(e))
            .for_each(|(ids, row)| topk_row(row, ids));
        Ok((CpuStorage::U32(ids), Shape::from((t, self.k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::router_ids(self, s, l)
    }
}

/// Router top-k + softmax.
///
/// * `logits`: f32 `(t, e)`, raw (biased) router logits; may be strided.
/// * `k`: experts per token, `1..=e`.
///
/// Returns `(ids, weights)`: `ids` U32 `(t, k)` sorted by descending logit (ties → lower index
/// first) and `weights` `(t, k)`, the softmax over the k selected logits. On CUDA one kernel
/// computes both; elsewhere the selection is the custom op and the k-wide softmax candle ops.
pub fn router_topk_softmax(logits: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let &[_, e] = logits.dims() else {
        bail!("{OP}: expected logits [t, e], got {:?}", logits.dims());
    };
    if !logits.dtype().is_float() {
        bail!("{OP}: logits must be float, got {:?}", logits.dtype());
    }
    if k == 0 || k > e {
        bail!(
            "{OP}: k = {k} must be in 1..={e} (logits {:?})",
            logits.dims()
        );
    }
    let logits = logits.contiguous()?;
    // On CUDA the kernel computes the weights with the ids: both are used.
    #[cfg(feature = "cuda")]
    if logits.device().is_cuda() && logits.dtype() == DType::F32 {
        return crate::cuda::ops::router_topk_softmax_tensors(&logits, k);
    }
    let ids = logits.apply_op1_no_bwd(&RouterTopK { k })?; // (t, k) u32
    debug_assert_eq!(ids.dtype(), DType::U32);
    let sel = logits.gather(&ids, 1)?; // (t, k), sorted descending
    let max = sel.max_keepdim(D::Minus1)?; // (t, 1)
    let exp = sel.broadcast_sub(&max)?.exp()?; // (t, k)
    let weights = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?; // (t, k)
    Ok((ids, weights))
}

/// The MoE router on token rows: `logits = x · wᵀ + b`, the `k` largest (as
/// [`router_topk_softmax`]), softmax over them.
///
/// * `x`: f32 `(t, d)`; `w`: f32 `(e, d)`; `b`: f32 `(e)`; `k`: `1..=e`.
///
/// Returns `(ids, weights)`, U32 and f32 `(t, k)`. On the CPU the logits are dot products (a
/// decode step's rows) or one matmul, then the bias, the selection and the softmax are one pass
/// over the rows (the composition's seven small ops cost ~40 µs a layer in a decode step); on
/// CUDA with `GPTOSS_ROWS_ROUTER=1` up to 256 rows are one kernel (`rows_router`, opt-in until
/// run on a GPU); elsewhere the matmul, the bias add and [`router_topk_softmax`].
pub fn moe_router(x: &Tensor, w: &Tensor, b: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "moe_router";
    let (t, d) = x.dims2()?;
    let (e, wd) = w.dims2()?;
    if wd != d || b.dims() != [e] || k == 0 || k > e {
        bail!(
            "{OP}: x {:?}, w {:?}, b {:?}, k = {k}: expected x (t, d), w (e, d), b (e), 1 <= k <= e",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    let cpu_f32 = [x, w, b]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    #[cfg(feature = "cuda")]
    if x.device().is_cuda()
        && crate::cuda::router::rows_router_enabled()
        && t <= ROWS_ROUTER_MAX_T
        && d % 4 == 0
        && e <= 256
        && k <= crate::cuda::router::ROUTER_MAX_K
        && [x, w, b].iter().all(|t| t.dtype() == DType::F32)
    {
        return crate::cuda::router::moe_router_rows(x, w, b, k);
    }
    if !cpu_f32 {
        let logits = x.matmul(&w.t()?)?.broadcast_add(b)?; // (t, e)
        return router_topk_softmax(&logits, k);
    }
    let bias: Vec<f32> = crate::cpu_storage::field_to_vec(b, OP, "b")?;
    // Bias, top-k and the softmax over the selection, row by row of logits (t, e).
    let select = |logits: &[f32]| {
        let mut ids = vec![0u32; t * k];
        let mut weights = vec![0f32; t * k];
        let mut row = vec![0f32; e];
        for ((lr, ir), out) in logits
            .chunks_exact(e)
            .zip(ids.chunks_exact_mut(k))
            .zip(weights.chunks_exact_mut(k))
        {
            row.iter_mut()
                .zip(lr.iter().zip(&bias))
                .for_each(|(r, (l, b))| *r = l + b);
            topk_row(&row, ir);
            softmax_selected(&row, ir, out);
        }
        (ids, weights)
    };
    // A decode step's few rows: the logits as dot products here (Candle's matmul costs ~30 µs
    // a call at one row), over both cores for a 20B-shaped row; a prefill's: one matmul.
    let (ids, weights) = if t * e * d <= ROUTER_DIRECT_MACS {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let logits = with_cpu_slice::<f32, _>(&x, OP, "x", |xs| {
            with_cpu_slice::<f32, _>(&w, OP, "w", |ws| {
                let mut lg = vec![0f32; t * e];
                let one = |(i, v): (usize, &mut f32)| {
                    let (r, j) = (i / e, i % e);
                    *v = crate::dot::dot(&xs[r * d..(r + 1) * d], &ws[j * d..(j + 1) * d]);
                };
                if t * e * d >= ROUTER_PAR_MACS {
                    lg.par_iter_mut().enumerate().for_each(one);
                } else {
                    lg.iter_mut().enumerate().for_each(one);
                }
                lg
            })
        })??;
        select(&logits)
    } else {
        let lg = x.matmul(&w.t()?)?.contiguous()?; // (t, e)
        with_cpu_slice::<f32, _>(&lg, OP, "logits", select)?
    };
    let dev = x.device();
    Ok((
        Tensor::from_vec(ids, (t, k), dev)?,
        Tensor::from_vec(weights, (t, k), dev)?,
    ))
}

/// Most multiply-adds [`moe_router`] does as plain dot products on the CPU (a 20B-shaped
/// decode row: 92,160); more go through one matmul.
const ROUTER_DIRECT_MACS: usize = 1 << 20;

/// Most token rows [`moe_router`] routes on CUDA with one launch (`rows_router`, a block per
/// row reading the whole router matrix from L2); a prefill's rows go through the matmul.
#[cfg(feature = "cuda")]
const ROWS_ROUTER_MAX_T: usize = 256;

/// From this many multiply-adds the direct logits run on both cores.
const ROUTER_PAR_MACS: usize = 1 << 16;

/// `out[c] = softmax(row[ids])[c]`, the selection sorted descending (its first is the max).
fn softmax_selected(row: &[f32], ids: &[u32], out: &mut [f32]) {
    let max = ids.first().map_or(0.0, |&i| row[i as usize]);
    for (o, &i) in out.iter_mut().zip(ids) {
        *o = (row[i as usize] - max).exp();
    }
    let sum: f32 = out.iter().sum();
    out.iter_mut().for_each(|o| *o /= sum);
}

#[cfg(test)]
mod tests {
    use super::topk_row;

    #[test]
    fn ties_prefer_lower_index() {
        let row = [1.0, 3.0, 3.0, f32::NAN, 2.0, 3.0];
        let mut ids = [0u32; 5];
        topk_row(&row, &mut ids);
        assert_eq!(ids, [1, 2, 5, 4, 0]);
    }

    #[test]
    fn wide_rows_sort_descending() {
        let row: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32).collect();
        let mut ids = [0u32; 3];
        topk_row(&row, &mut ids);
        let mut want: Vec<u32> = (0..100u32).collect();
        want.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
        assert_eq!(ids[..], want[..3]);
    }

    /// The fused CPU router against the composition it replaces (matmul, bias add, top-k op,
    /// gather and softmax ops) on fresh random rows, `t` from one (decode) to a prefill's
    /// chunk: equal ids, weights within 1e-5 (the direct dot products sum in another order
    /// than Candle's matmul: logits of 2,880 products differ by ~1e-6).
    #[test]
    fn the_fused_router_equals_the_composition() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        for (t, d, e, k) in [
            (1, 64, 4, 2),
            (3, 2880, 32, 4),
            (17, 96, 128, 4),
            (64, 32, 8, 8),
            (300, 64, 64, 4), // past ROUTER_DIRECT_MACS: the matmul
        ] {
            let x = Tensor::randn(0f32, 1.0, (t, d), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.1, (e, d), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.5, e, &dev).unwrap();
            let (ids, weights) = super::moe_router(&x, &w, &b, k).unwrap();
            let logits = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let (want_ids, want_w) = super::router_topk_softmax(&logits, k).unwrap();
            assert_eq!(
                ids.to_vec2::<u32>().unwrap(),
                want_ids.to_vec2::<u32>().unwrap(),
                "t {t} e {e} k {k}"
            );
            let (a, b) = (
                weights.to_vec2::<f32>().unwrap(),
                want_w.to_vec2::<f32>().unwrap(),
            );
            for (ra, rb) in a.iter().zip(&b) {
                assert!((ra.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                for (x, y) in ra.iter().zip(rb) {
                    assert!((x - y).abs() <= 1e-5, "t {t} e {e} k {k}: {ra:?} vs {rb:?}");
                }
            }
        }
    }
}
