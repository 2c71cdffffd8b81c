//! MoE router: top-k expert selection on raw logits, then softmax over the k selected logits
//! (spec §6.4; OpenAI `torch.topk(sorted=True)` + `softmax`, ggml `SOFTMAX_WEIGHT` gating).

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu_storage::contiguous_slice;

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
}
