//! Which attention kernel a forward runs, chosen once with the weights' form: the generic
//! kernel (CPU, or CUDA's generic path), or on CUDA's fast path the TF32 tensor-core kernel for
//! chunks of two or more queries and paged decode attention for all one-token chunks of a
//! step at once.

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

    /// Whether one-token chunks run together through their block tables
    /// ([`Self::paged`]) instead of each over gathered keys.
    pub(crate) fn pages_decodes(&self) -> bool {
        match self {
            #[cfg(feature = "cuda")]
            AttnKernel::Tf32 => true,
            AttnKernel::Generic => false,
        }
    }

    /// Paged decode attention of `q (rows, hq, d)` over the pool's `k`, `v`
    /// `(blocks * bs, hkv, d)`: `(rows, hq, d)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn paged(
        &self,
        q: &Tensor,
        kp: &Tensor,
        vp: &Tensor,
        sinks: &Tensor,
        rows: &k::PagedRows,
        scale: f32,
        window: Option<usize>,
    ) -> Result<Tensor> {
        k::paged_decode_attention(q, kp, vp, sinks, rows, scale, window)
    }

    /// RoPE on the q and k heads of the stacked QKV output `qkv (t, (hq + 2 hkv) hd)` of
    /// `step`'s rows and their keys and values written into `pool`'s layer `il`, in one
    /// kernel: q `(t, hq, hd)`. Only where [`Self::pages_decodes`] holds.
    pub(crate) fn rope_kv(
        &self,
        qkv: &Tensor,
        rope: &super::rope::Rope,
        pool: &crate::kv::KvPool,
        il: usize,
        step: &crate::kv::Step,
        heads: (usize, usize, usize),
    ) -> crate::error::Result<Tensor> {
        match self {
            #[cfg(feature = "cuda")]
            AttnKernel::Tf32 => {
                let rows = pool.kv_rows(il, step)?;
                let tables = rope.tables_to(rows.end(), qkv.device())?;
                let (kb, vb) = pool.layer_buffers(il);
                let (cos, sin) = (&tables.0, &tables.1);
                Ok(k::cuda::rope_kv::rope_kv_rows(
                    qkv,
                    (cos, sin),
                    rows,
                    (kb, vb),
                    heads,
                )?)
            }
            _ => {
                let _ = (qkv, rope, pool, il, step, heads);
                Err(crate::error::EngineError::Other(
                    "rope_kv: the fused RoPE and pool write run on CUDA's fast path only".into(),
                ))
            }
        }
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
