//! CPU loop for the MoE expert matmul: tokens are grouped per expert so that every selected
//! expert's weights are decoded once per call and reused for all of its tokens.

use candle_core::{bail, Result};
use rayon::prelude::*;

use crate::mxfp4::block::row_bytes;
use crate::simd::matmul::matmul;
use crate::simd::{CpuKernels, Format};

/// Shapes of one MoE call (see [`super::MoeMxfp4Matmul`]).
pub(crate) struct MoeDims {
    pub t: usize,
    pub top_k: usize,
    pub e: usize,
    pub n: usize,
    pub k: usize,
    /// `x` is (t, top_k, k) instead of (t, k).
    pub x_per_slot: bool,
}

/// `y[t, s] = W[ids[t, s]] · x[t or (t, s)] + bias[ids[t, s]]` → (t, top_k, n) f32.
///
/// * `x`: (t, k) or (t, top_k, k); `w`: (e, n, k/32·17) bytes; `bias`: (e, n); `ids`: (t, top_k).
pub(crate) fn moe_matmul(
    cpu: CpuKernels,
    d: &MoeDims,
    x: &[f32],
    w: &[u8],
    bias: Option<&[f32]>,
    ids: &[u32],
) -> Result<Vec<f32>> {
    let (n, k) = (d.n, d.k);
    // slots_of[e] = flat slot indices (t·top_k + s) routed to expert e, in token order.
    let mut slots_of: Vec<Vec<usize>> = vec![Vec::new(); d.e];
    for (slot, &id) in ids.iter().enumerate() {
        let Some(list) = slots_of.get_mut(id as usize) else {
            bail!(
                "moe_mxfp4_matmul: ids[{}, {}] = {id} out of range for {} experts",
                slot / d.top_k.max(1),
                slot % d.top_k.max(1),
                d.e
            );
        };
        list.push(slot);
    }
    let expert_bytes = n * row_bytes(k);
    // The experts with work run in parallel (each matmul parallel inside too): a small model's
    // expert matrices are too narrow to keep both cores busy one expert at a time.
    let work: Vec<(usize, &Vec<usize>)> = slots_of
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let outs: Vec<Vec<f32>> = work
        .par_iter()
        .map(|&(ex, slots)| {
            // The activation rows of this expert's slots: (m_e, k).
            let mut xg = Vec::with_capacity(slots.len() * k);
            for &slot in slots {
                let row = if d.x_per_slot { slot } else { slot / d.top_k };
                xg.extend_from_slice(&x[row * k..(row + 1) * k]);
            }
            let we = &w[ex * expert_bytes..(ex + 1) * expert_bytes];
            let be = bias.map(|b| &b[ex * n..(ex + 1) * n]);
            matmul(cpu, Format::Mxfp4, &xg, (slots.len(), k, n), we, be) // (m_e, n)
        })
        .collect();
    let mut y = vec![0f32; d.t * d.top_k * n];
    for ((_, slots), ye) in work.iter().zip(&outs) {
        for (i, &slot) in slots.iter().enumerate() {
            y[slot * n..(slot + 1) * n].copy_from_slice(&ye[i * n..(i + 1) * n]);
        }
    }
    Ok(y)
}
