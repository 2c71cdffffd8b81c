//! Which attention kernel a forward runs, chosen once with the weights' form: the generic
//! kernel (CPU, or CUDA's generic path), or on CUDA's fast path the TF32 tensor-core kernel for
//! chunks of two or more queries.

use candle_core::{Result, Tensor};
use gpt_kernels as k;

/// An attention kernel.
pub(crate) enum AttnKernel {
    /// `gpt_kernels::attention_with_sinks`.
    Generic,
    /// TF32 flash attention (chunks of at least 2 queries), generic otherwise.
    #[cfg(feature = "cuda")]
    Tf32,
}

/// One chunk's attention inputs: q `(1, t, hq, d)`, k and v `(1, s, hkv, d)`.
pub(crate) struct AttnInput<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    /// `(hq)`.
    pub sinks: &'a Tensor,
    pub scale: f32,
    pub window: Option<usize>,
    /// Absolute position of query 0 and of key 0.
    pub q_offset: usize,
    pub kv_offset: usize,
}

impl AttnKernel {
    /// The kernel for a model with these heads whose matmuls run on tensor cores or not.
    pub(crate) fn choose(tensor_cores: bool, (hq, hkv, hd): (usize, usize, usize)) -> Self {
        #[cfg(feature = "cuda")]
        if tensor_cores && k::cuda::attention::tf32_prefill_fits(hq, hkv, hd) {
            return AttnKernel::Tf32;
        }
        let _ = (tensor_cores, hq, hkv, hd);
        AttnKernel::Generic
    }

    /// Attention with sinks: `(1, t, hq, d)`.
    pub(crate) fn run(&self, a: &AttnInput) -> Result<Tensor> {
        match self {
            #[cfg(feature = "cuda")]
            AttnKernel::Tf32 if a.q.dim(1)? >= 2 => {
                let params = k::cuda::AttentionParams {
                    scale: a.scale,
                    window: a.window.unwrap_or(0),
                    q_offset: a.q_offset,
                    kv_offset: a.kv_offset,
                };
                k::cuda::attention::attention_prefill_tf32(a.q, a.k, a.v, a.sinks, &params)
            }
            _ => k::attention_with_sinks(
                a.q,
                a.k,
                a.v,
                a.sinks,
                a.scale,
                a.window,
                a.q_offset,
                a.kv_offset,
            ),
        }
    }
}
