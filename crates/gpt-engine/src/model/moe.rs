//! The expert matmuls of the generic (Candle) forward: the fused MXFP4 MoE kernel for a few
//! tokens, and the grouped path for prefill (of ggml MXFP4 blocks; the planar experts of the
//! CUDA fast form take `prefill.rs`'s tensor-core kernels): the slots routed to each expert gathered into one
//! padded batch `(experts, m_max, k)`, the experts' weights dequantized once into
//! `(experts, n, k)`, one batched GEMM, then every slot's row gathered back.

use candle_core::{Result, Tensor};
use gpt_kernels as k;
use gpt_weights::load::Experts;

/// Most bytes of f32 expert weights one batched GEMM dequantizes (all 32 experts of a
/// 20B-shaped matrix, 1.06e9 bytes, fit; larger models go in several batches). The memory plan
/// counts the same batch.
const EXPERT_BATCH_BYTES: usize = gpt_weights::plan::EXPERT_BATCH_BYTES as usize;

/// The slots routed to each expert (a slot is `token * top_k + choice`): built once per MoE
/// layer from the router's ids (one small copy to the host) and shared by the gate, up and down
/// matmuls of the grouped path.
pub(super) struct ExpertGroups {
    /// Tokens.
    t: usize,
    /// Experts per token.
    top_k: usize,
    /// `(expert, slots)` for every expert with work, in expert order.
    groups: Vec<(u32, Vec<u32>)>,
}

impl ExpertGroups {
    /// Groups the router's `ids (t, top_k)` by expert; an id `>= n_exp` is an error.
    pub(super) fn new(ids: &Tensor, n_exp: usize) -> Result<Self> {
        let (t, top_k) = ids.dims2()?;
        let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?; // (t*top_k) ids
        let mut slots: Vec<Vec<u32>> = vec![Vec::new(); n_exp];
        for (p, &e) in flat.iter().enumerate() {
            let g = slots.get_mut(e as usize).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "moe: expert id {e} out of range ({n_exp} experts)"
                ))
            })?;
            g.push(p as u32);
        }
        let groups = slots
            .into_iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(e, s)| (e as u32, s))
            .collect();
        Ok(Self { t, top_k, groups })
    }
}

/// Experts `ids (c)` of `w` as f32 `(c, n, k)`.
fn experts_f32(w: &Experts, ids: &Tensor) -> Result<Tensor> {
    match w {
        Experts::Mxfp4 { blocks, k } => k::mxfp4_dequant(&blocks.index_select(ids, 0)?, *k),
        Experts::Dense(t) => t.index_select(ids, 0),
    }
}

/// The grouped expert matmul. `x (t, k)` (every choice reads its token's row) or
/// `(t, top_k, k)` (one row per slot), experts `(e, n, k)`, `b (e, n)` → `(t, top_k, n)`.
/// Experts go in batches of at most `batch_bytes` of f32 weights; within a batch each
/// expert's rows are padded to the batch's largest count (padding rows repeat a real row and
/// are never read back).
fn experts_grouped(
    x: &Tensor,
    w: &Experts,
    (n, k_in): (usize, usize),
    b: &Tensor,
    g: &ExpertGroups,
    batch_bytes: usize,
) -> Result<Tensor> {
    let dev = x.device();
    let per_slot = x.rank() == 3;
    let x2 = x.reshape(((), k_in))?; // (t or t*top_k, k)
    let row_of = |slot: u32| {
        if per_slot {
            slot
        } else {
            slot / g.top_k as u32
        }
    };
    let per_batch = (batch_bytes / (n * k_in * 4).max(1)).max(1);
    let mut parts = Vec::new(); // (c*m_max, n) each
    let mut at = vec![0u32; g.t * g.top_k]; // row of each slot in the concatenated parts
    let mut base = 0usize;
    for batch in g.groups.chunks(per_batch) {
        let m_max = batch.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let mut rows = Vec::with_capacity(batch.len() * m_max);
        for (i, (_, slots)) in batch.iter().enumerate() {
            for (r, &slot) in slots.iter().enumerate() {
                rows.push(row_of(slot));
                at[slot as usize] = (base + i * m_max + r) as u32;
            }
            rows.extend(std::iter::repeat_n(row_of(slots[0]), m_max - slots.len()));
        }
        let ids: Vec<u32> = batch.iter().map(|(e, _)| *e).collect();
        let ids = Tensor::new(ids.as_slice(), dev)?; // (c)
        let c = batch.len();
        let xs = x2
            .index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?
            .reshape((c, m_max, k_in))?; // (c, m_max, k)
        let ws = experts_f32(w, &ids)?; // (c, n, k)
        let bs = b.index_select(&ids, 0)?.unsqueeze(1)?; // (c, 1, n)
        let y = xs.matmul(&ws.transpose(1, 2)?)?.broadcast_add(&bs)?; // (c, m_max, n)
        parts.push(y.reshape((c * m_max, n))?);
        base += c * m_max;
    }
    let all = Tensor::cat(&parts, 0)?; // (sum c*m_max, n)
    all.index_select(&Tensor::new(at.as_slice(), dev)?, 0)?
        .reshape((g.t, g.top_k, n))
}

/// `x (t, k) -> (t, top_k, n)` for the experts `ids (t, top_k)`, bias `(e, n)` included;
/// with `groups`, MXFP4 experts take the grouped (prefill) path.
pub(super) fn experts_forward(
    x: &Tensor,
    w: &Experts,
    b: &Tensor,
    ids: &Tensor,
    groups: Option<&ExpertGroups>,
    cpu: k::CpuKernels,
) -> Result<Tensor> {
    let n = b.dim(1)?;
    match (w, groups) {
        (Experts::Mxfp4 { k: k_in, .. }, Some(g)) => {
            experts_grouped(x, w, (n, *k_in), b, g, EXPERT_BATCH_BYTES)
        }
        (Experts::Mxfp4 { blocks, .. }, None) => {
            k::moe_mxfp4_matmul_with(x, blocks, Some(b), ids, cpu)
        }
        (Experts::Dense(w), _) => {
            // (e, n, k) gathered per (token, slot): a slow path for float expert weights.
            let (t, top_k) = ids.dims2()?;
            let (_, n, kk) = w.dims3()?;
            let flat = ids.flatten_all()?;
            let wsel = w.index_select(&flat, 0)?; // (t*top_k, n, k)
            let bsel = b.index_select(&flat, 0)?; // (t*top_k, n)
            let xs = match x.rank() {
                2 => x.unsqueeze(1)?.broadcast_as((t, top_k, kk))?.contiguous()?,
                _ => x.contiguous()?,
            }
            .reshape((t * top_k, 1, kk))?;
            let y = xs.matmul(&wsel.transpose(1, 2)?)?.squeeze(1)?; // (t*top_k, n)
            (y + bsel)?.reshape((t, top_k, n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The grouped path against the plain per-slot path (each slot multiplied by its own
    /// expert's gathered matrix), with the experts split over several batches, for both input
    /// shapes, on fresh random float experts; one expert gets no slot.
    #[test]
    fn grouped_batches_equal_the_per_slot_path() {
        let dev = Device::Cpu;
        let (t, top_k, e, n, k) = (7, 3, 5, 6, 8);
        let w = Tensor::randn(0f32, 1., (e, n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., (e, n), &dev).unwrap();
        let choices = [0u32, 1, 3, 4]; // expert 2 is never chosen
        let ids: Vec<u32> = (0..t * top_k)
            .map(|p| choices[(p / top_k + p % top_k) % choices.len()])
            .collect();
        let ids = Tensor::from_vec(ids, (t, top_k), &dev).unwrap();
        let g = ExpertGroups::new(&ids, e).unwrap();
        assert_eq!(g.groups.len(), 4, "experts with work");
        let ws = Experts::Dense(w);
        for x in [
            Tensor::randn(0f32, 1., (t, k), &dev).unwrap(),
            Tensor::randn(0f32, 1., (t, top_k, k), &dev).unwrap(),
        ] {
            let want = experts_forward(&x, &ws, &b, &ids, None, k::CpuKernels::default()).unwrap(); // (t, top_k, n)
            for per_batch in [1, 2, 5] {
                let got = experts_grouped(&x, &ws, (n, k), &b, &g, per_batch * n * k * 4).unwrap();
                let diff = max_abs(&(&got - &want).unwrap());
                let scale = max_abs(&want);
                assert!(
                    diff <= 1e-5 * scale,
                    "rank {}, {per_batch} experts per batch: max diff {diff} (scale {scale})",
                    x.rank()
                );
            }
        }
    }

    #[test]
    fn an_expert_id_out_of_range_is_an_error() {
        let ids = Tensor::new(&[[0u32, 9]], &Device::Cpu).unwrap();
        let e = ExpertGroups::new(&ids, 4).err().expect("id 9 of 4 experts");
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
