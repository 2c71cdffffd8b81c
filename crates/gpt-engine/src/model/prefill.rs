//! The CUDA MoE experts (gpt-kernels' `cuda::prefill`, `cuda::moe_rows`): for many slots,
//! grouped GEMMs on tensor cores over the planar MXFP4 experts (bf16 MMAs on activations split
//! into bf16 hi + lo; gate/up with SwiGLU in one kernel, then down); for few, the row kernels
//! (`dp4a` dots or int8 MMAs); biases fused, the expert groups built on the device.
//! The dense Q8 split matrices go through [`super::linear::Linear::Q8Split`].

use candle_core::{Result, Tensor};
use gpt_kernels::cuda::moe_rows::{moe_rows, RowsKernel};
use gpt_kernels::cuda::prefill::{grouped_gemm, grouped_gemm_swiglu, BRows, PgWeights};
use gpt_kernels::cuda::routing::{combine_slots, route};

use super::experts::Planar;
use super::{SWIGLU_ALPHA, SWIGLU_LIMIT};

fn planar(p: &Planar) -> PgWeights<'_> {
    PgWeights::Mxfp4 {
        qs: &p.qs,
        e8: &p.e8,
    }
}

/// The experts `(gate, up, down)` with biases on `m (t, d)` for the router's `ids (t, top_k)`
/// and `weights (t, top_k)`: `(t, d)`, the routing-weighted sum of the chosen experts'
/// outputs. `few` (a batched decode's handful of slots per expert) names the row kernels,
/// which read each expert's weights once; `None` runs the tensor-core GEMMs. Nothing is copied
/// to the host.
pub(crate) fn planar_experts(
    (gate, up, down): (&Planar, &Planar, &Planar),
    (gate_b, up_b, down_b): (&Tensor, &Tensor, &Tensor),
    m: &Tensor,
    (ids, weights): (&Tensor, &Tensor),
    n_expert: usize,
    few: Option<RowsKernel>,
) -> Result<Tensor> {
    let r = route(ids, n_expert)?;
    let y = if let Some(kernel) = few {
        moe_rows(
            m,
            &r,
            (planar(gate), planar(up), planar(down)),
            (gate_b, up_b, down_b),
            (SWIGLU_ALPHA, SWIGLU_LIMIT),
            kernel,
        )? // (slots, d), grouped by expert
    } else {
        let xb = BRows::split(m)?; // (t, d) as bf16 hi + lo
        let act = grouped_gemm_swiglu(
            &xb,
            &r.up,
            planar(gate),
            planar(up),
            gate_b,
            up_b,
            SWIGLU_ALPHA,
            SWIGLU_LIMIT,
        )?; // (slots, ff), grouped by expert
        let ab = BRows::split(&act)?;
        grouped_gemm(&ab, &r.down, planar(down), down_b)? // (slots, d)
    };
    combine_slots(&y, &r.at, weights) // (t, d)
}
