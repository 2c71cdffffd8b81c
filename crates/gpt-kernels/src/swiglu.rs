//! SwiGLU as used by GPT-OSS experts (ggml `swiglu_oai`, OpenAI `swiglu`; spec §6.4).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::attention::cpu::exp_neg;
use crate::cpu_storage::contiguous_slice;

const OP: &str = "swiglu_oai";

/// Elements per rayon task.
const CHUNK: usize = 4096;

/// `CustomOp2` behind [`swiglu_oai`], applied to `gate` and `up` of one shape.
#[derive(Debug, Clone, Copy)]
pub struct SwigluOai {
    /// Sigmoid slope (1.702 in GPT-OSS).
    pub alpha: f32,
    /// Clamp limit (7.0 in GPT-OSS).
    pub limit: f32,
}

impl SwigluOai {
    /// One element: `g = min(gate, limit)`, `u = clamp(up, −limit, limit)`,
    /// `g · sigmoid(alpha · g) · (u + 1)`. Branch-free, so loops of it vectorize: the sigmoid
    /// from `e = exp(−|z|)` (the attention's polynomial `exp_neg`, ~2e-7 relative) as
    /// `1 / (1 + e)` for `z ≥ 0` and `e / (1 + e)` below, not a libm `expf` call per element.
    #[inline(always)]
    pub fn apply(&self, gate: f32, up: f32) -> f32 {
        let g = gate.min(self.limit);
        let u = up.clamp(-self.limit, self.limit);
        let z = self.alpha * g;
        let e = exp_neg(-z.abs());
        let num = if z >= 0.0 { 1.0 } else { e };
        g * (num / (1.0 + e)) * (u + 1.0)
    }

    /// `out[i] = apply(gate[i], up[i])` over one chunk, compiled for AVX-512 where the
    /// instruction set in use ([`crate::Isa::detected`], `GPTOSS_CPU_ISA` caps it) has it.
    fn chunk(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::Isa::detected() == crate::simd::Isa::Avx512 {
            // SAFETY: the detected set includes AVX-512 F.
            unsafe { self.chunk_avx512(gate, up, out) };
            return;
        }
        self.chunk_portable(gate, up, out);
    }

    #[inline(always)]
    fn chunk_portable(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = self.apply(g, u);
        }
    }

    /// The same loop compiled for 16 lanes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn chunk_avx512(&self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        self.chunk_portable(gate, up, out);
    }
}

impl CustomOp2 for SwigluOai {
    fn name(&self) -> &'static str {
        "gpt-kernels/swiglu-oai"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gate = contiguous_slice::<f32>(s1, l1, OP, "gate")?;
        let up = contiguous_slice::<f32>(s2, l2, OP, "up")?;
        if l1.dims() != l2.dims() {
            bail!("{OP}: gate {:?} and up {:?} differ", l1.dims(), l2.dims());
        }
        let mut out = vec![0f32; gate.len()];
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| self.chunk(g, u, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::swiglu(self, s1, l1, s2, l2)
    }
}

/// GPT-OSS SwiGLU: `g = min(gate, limit)`, `u = clamp(up, −limit, limit)`,
/// `out = g · sigmoid(alpha · g) · (u + 1)`.
///
/// * `gate`, `up`: f32, any one shape (e.g. `(t, top_k, n)`); may be strided.
///
/// Returns the same shape. NaN inputs propagate (`min`/`clamp` follow `f32` semantics).
pub fn swiglu_oai(gate: &Tensor, up: &Tensor, alpha: f32, limit: f32) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        bail!(
            "{OP}: gate {:?} and up {:?} must have one shape",
            gate.dims(),
            up.dims()
        );
    }
    if !gate.dtype().is_float() || up.dtype() != gate.dtype() {
        bail!(
            "{OP}: gate and up must share one float dtype, got {:?} and {:?}",
            gate.dtype(),
            up.dtype()
        );
    }
    if !gate.device().same_device(up.device()) {
        bail!("{OP}: gate and up are on different devices");
    }
    if limit.is_nan() || limit < 0.0 {
        bail!("{OP}: limit must be >= 0, got {limit}");
    }
    gate.contiguous()?
        .apply_op2_no_bwd(&up.contiguous()?, &SwigluOai { alpha, limit })
}
