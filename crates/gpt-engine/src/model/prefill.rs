//! The CUDA prefill's matmuls on tensor cores (gpt-kernels' `cuda::prefill`): the fused QKV,
//! the attention output and the output head on the fast decoder's Q8 split matrices (int8
//! MMAs on activations quantized to the decode kernels' 15-bit format), and the MoE experts as
//! grouped GEMMs on the planar MXFP4 experts (bf16 MMAs on activations split into bf16 hi + lo;
//! gate/up with SwiGLU in one kernel, then down), biases fused.

use candle_core::{Result, Tensor};
use gpt_kernels::cuda::prefill::{
    grouped_gemm, grouped_gemm_swiglu, BRows, GroupPlan, PgWeights, QRows,
};
use gpt_kernels::cuda::routing::{combine_slots, route};
use gpt_weights::load::{Experts, LayerWeights};

use super::{SWIGLU_ALPHA, SWIGLU_LIMIT};

/// One layer's dense matrices as Q8 split pairs (int8 `(n, k)`, f32 scales `(n, k/32)`).
pub(crate) struct DenseSplit {
    /// Q, K and V stacked: `((hq + 2 hkv) hd, d)`.
    pub qkv: (Tensor, Tensor),
    /// `((hq + 2 hkv) hd)`.
    pub qkv_b: Tensor,
    /// `(d, hq hd)`.
    pub o: (Tensor, Tensor),
    /// `(d)`.
    pub o_b: Tensor,
}

/// The prefill's dense matrices: each layer's, then the output matrix.
pub(crate) struct CudaPrefill {
    pub layers: Vec<DenseSplit>,
    /// `(vocab, d)` as a Q8 split pair.
    pub output: (Tensor, Tensor),
    /// Zeros `(vocab)`: the output matrix has no bias.
    pub output_b: Tensor,
}

fn q8(m: &(Tensor, Tensor)) -> PgWeights<'_> {
    PgWeights::Q8 { qs: &m.0, d: &m.1 }
}

impl CudaPrefill {
    /// `a (t, d)` → `(t, (hq + 2 hkv) hd)`: Q, K, V with their biases, side by side.
    pub fn qkv(&self, il: usize, a: &Tensor, plan: &GroupPlan) -> Result<Tensor> {
        let l = &self.layers[il];
        grouped_gemm(&QRows::quantize(a)?, plan, q8(&l.qkv), &l.qkv_b)
    }

    /// Logits `(t, vocab)` of the normalized hidden states `h (t, d)`.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let plan = GroupPlan::dense(h.dim(0)?, h.device())?;
        grouped_gemm(
            &QRows::quantize(h)?,
            &plan,
            q8(&self.output),
            &self.output_b,
        )
    }

    /// `o (t, hq hd)` → `(t, d)`, bias included.
    pub fn out(&self, il: usize, o: &Tensor, plan: &GroupPlan) -> Result<Tensor> {
        let l = &self.layers[il];
        grouped_gemm(&QRows::quantize(o)?, plan, q8(&l.o), &l.o_b)
    }
}

fn planar(e: &Experts) -> Result<PgWeights<'_>> {
    match e {
        Experts::Mxfp4Planar { qs, e8, .. } => Ok(PgWeights::Mxfp4 { qs, e8 }),
        _ => candle_core::bail!("prefill moe: experts are not planar MXFP4"),
    }
}

/// The MoE experts of layer `lw` on `m (t, d)` for the router's `ids (t, top_k)` and
/// `weights (t, top_k)`: `(t, d)`, the routing-weighted sum of the chosen experts' outputs.
/// The expert groups are built on the device: nothing is copied to the host.
pub(crate) fn moe_experts(
    lw: &LayerWeights,
    m: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
    n_expert: usize,
) -> Result<Tensor> {
    let r = route(ids, n_expert)?;
    let xb = BRows::split(m)?; // (t, d) as bf16 hi + lo
    let act = grouped_gemm_swiglu(
        &xb,
        &r.up,
        planar(&lw.ffn_gate_exps)?,
        planar(&lw.ffn_up_exps)?,
        &lw.ffn_gate_exps_b,
        &lw.ffn_up_exps_b,
        SWIGLU_ALPHA,
        SWIGLU_LIMIT,
    )?; // (slots, ff), grouped by expert
    let ab = BRows::split(&act)?;
    let y = grouped_gemm(
        &ab,
        &r.down,
        planar(&lw.ffn_down_exps)?,
        &lw.ffn_down_exps_b,
    )?; // (slots, d)
    combine_slots(&y, &r.at, weights) // (t, d)
}
