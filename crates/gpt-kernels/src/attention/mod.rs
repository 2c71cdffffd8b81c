//! Grouped-query attention with per-head sink logits, causal and sliding-window masks, and
//! KV caches that start at any absolute position (spec §6.3 steps 4–6).

pub(crate) mod cpu;
pub mod paged;
mod tiled;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use crate::cpu_storage::{contiguous_slice, field_to_vec};
use cpu::{AttnDims, AttnParams};

const OP: &str = "attention_with_sinks";

/// `CustomOp3` behind [`attention_with_sinks`], applied to q (b, t, hq, d), k and v
/// (b, s, hkv, d); returns (b, t, hq, d).
#[derive(Debug, Clone)]
pub struct AttentionWithSinks {
    /// Batch size.
    pub b: usize,
    /// Queries per sequence.
    pub t: usize,
    /// Keys per sequence.
    pub s: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads (divides `hq`).
    pub hkv: usize,
    /// Head dimension.
    pub d: usize,
    /// Multiplier of `q · k` (not applied to the sinks).
    pub scale: f32,
    /// Sliding window: key at distance `>= window` is masked. `None` = full causal.
    pub window: Option<usize>,
    /// Absolute position of query 0.
    pub q_offset: usize,
    /// Absolute position of key 0.
    pub kv_offset: usize,
    /// Contiguous sink logits (hq), on the device of q.
    pub sinks: Tensor,
}

impl CustomOp3 for AttentionWithSinks {
    fn name(&self) -> &'static str {
        "gpt-kernels/attention-with-sinks"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = contiguous_slice::<f32>(s1, l1, OP, "q")?;
        let k = contiguous_slice::<f32>(s2, l2, OP, "k")?;
        let v = contiguous_slice::<f32>(s3, l3, OP, "v")?;
        let q_dims = [self.b, self.t, self.hq, self.d];
        let kv_dims = [self.b, self.s, self.hkv, self.d];
        if l1.dims() != q_dims
            || l2.dims() != kv_dims
            || l3.dims() != kv_dims
            || self.hkv == 0
            || !self.hq.is_multiple_of(self.hkv)
        {
            bail!(
                "{OP}: op built for q {q_dims:?}, k/v {kv_dims:?}; got q {:?}, k {:?}, v {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let sinks = field_to_vec::<f32>(&self.sinks, OP, "sinks")?;
        if sinks.len() != self.hq {
            bail!("{OP}: {} sinks for {} query heads", sinks.len(), self.hq);
        }
        let dims = AttnDims {
            b: self.b,
            t: self.t,
            s: self.s,
            hq: self.hq,
            hkv: self.hkv,
            d: self.d,
        };
        let params = AttnParams {
            scale: self.scale,
            window: self.window,
            q_offset: self.q_offset,
            kv_offset: self.kv_offset,
        };
        let out = cpu::attention(&dims, &params, q, k, v, &sinks);
        Ok((CpuStorage::F32(out), Shape::from(q_dims.to_vec())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::attention(self, (s1, l1), (s2, l2), (s3, l3))
    }
}

/// Attention with sinks (OpenAI `sdpa` semantics).
///
/// * `q`: f32 `(b, t, hq, d)`; query head `h` uses kv head `h / (hq / hkv)`.
/// * `k`, `v`: f32 `(b, s, hkv, d)`; key `j` has absolute position `kv_offset + j`.
/// * `sinks`: f32 `(hq)`, one raw logit per query head (not multiplied by `scale`).
/// * `window`: `Some(w)` keeps keys with `p − pos(j) < w` (sliding layers); `None` = full causal.
/// * `q_offset`: absolute position `p` of query 0 (query `i` is at `q_offset + i`).
/// * `kv_offset`: absolute position of key 0 (0 for a full cache; > 0 for a ring/window cache
///   that dropped the oldest positions).
///
/// Query `i` sees key `j` iff `pos(j) <= p` (and the window holds). With scores
/// `s_j = scale · q·k_j` and `M = max(max_j s_j, S_h)`:
/// `out = Σ_j exp(s_j − M) v_j / (Σ_j exp(s_j − M) + exp(S_h − M))`; a query that sees no key
/// gets 0. Returns `(b, t, hq, d)`.
#[allow(clippy::too_many_arguments)]
pub fn attention_with_sinks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: &Tensor,
    scale: f32,
    window: Option<usize>,
    q_offset: usize,
    kv_offset: usize,
) -> Result<Tensor> {
    let &[b, t, hq, d] = q.dims() else {
        bail!("{OP}: expected q [b, t, hq, d], got {:?}", q.dims());
    };
    let &[kb, s, hkv, kd] = k.dims() else {
        bail!(
            "{OP}: expected k [b, s, hkv, d], got {:?} (q {:?})",
            k.dims(),
            q.dims()
        );
    };
    if kb != b || kd != d || v.dims() != k.dims() {
        bail!(
            "{OP}: expected k and v [{b}, s, hkv, {d}] for q {:?}, got k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if hkv == 0 || hq % hkv != 0 {
        bail!(
            "{OP}: query heads {hq} are not a multiple of kv heads {hkv} (q {:?}, k {:?})",
            q.dims(),
            k.dims()
        );
    }
    if sinks.dims() != [hq] {
        bail!(
            "{OP}: expected sinks [{hq}], got {:?} (q {:?})",
            sinks.dims(),
            q.dims()
        );
    }
    if !q.dtype().is_float() || k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        bail!(
            "{OP}: q, k, v must share one float dtype, got {:?}, {:?}, {:?}",
            q.dtype(),
            k.dtype(),
            v.dtype()
        );
    }
    if !sinks.dtype().is_float() {
        bail!("{OP}: sinks must be float, got {:?}", sinks.dtype());
    }
    let dev = q.device();
    if !dev.same_device(k.device())
        || !dev.same_device(v.device())
        || !dev.same_device(sinks.device())
    {
        bail!("{OP}: q, k, v and sinks must be on the same device");
    }
    if window == Some(0) {
        bail!("{OP}: window must be >= 1 (Some(0) would mask every key)");
    }
    let op = AttentionWithSinks {
        b,
        t,
        s,
        hq,
        hkv,
        d,
        scale,
        window,
        q_offset,
        kv_offset,
        sinks: sinks.contiguous()?,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op) // (b, t, hq, d)
}
