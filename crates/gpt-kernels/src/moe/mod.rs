//! MoE expert matmul over MXFP4 expert weights, indexed by router-selected expert ids.

pub(crate) mod cpu;

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::cpu_storage::{contiguous_slice, field_to_vec};
use crate::mxfp4::block::{row_bytes, BLOCK_ELEMS};
use crate::simd::CpuKernels;
use cpu::MoeDims;

const OP: &str = "moe_mxfp4_matmul";

/// `CustomOp3` behind [`moe_mxfp4_matmul`], applied to `x` f32 (t, k) or (t, top_k, k),
/// `w` U8 (e, n, k/32·17) and `ids` U32 (t, top_k); returns f32 (t, top_k, n).
#[derive(Debug, Clone)]
pub struct MoeMxfp4Matmul {
    /// Tokens.
    pub t: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Experts in `w`.
    pub e: usize,
    /// Output features per expert.
    pub n: usize,
    /// Input features (a multiple of 32).
    pub k: usize,
    /// `x` is (t, top_k, k), one activation row per slot, instead of (t, k) shared by all slots.
    pub x_per_slot: bool,
    /// Optional contiguous bias (e, n), same dtype and device as `x`.
    pub bias: Option<Tensor>,
    /// The CPU kernels `cpu_fwd` runs.
    pub cpu: CpuKernels,
}

impl MoeMxfp4Matmul {
    fn x_dims(&self) -> Vec<usize> {
        if self.x_per_slot {
            vec![self.t, self.top_k, self.k]
        } else {
            vec![self.t, self.k]
        }
    }
}

impl CustomOp3 for MoeMxfp4Matmul {
    fn name(&self) -> &'static str {
        "gpt-kernels/moe-mxfp4-matmul"
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
        let x = contiguous_slice::<f32>(s1, l1, OP, "x")?;
        let w = contiguous_slice::<u8>(s2, l2, OP, "w")?;
        let ids = contiguous_slice::<u32>(s3, l3, OP, "ids")?;
        let w_dims = [self.e, self.n, row_bytes(self.k)];
        if l1.dims() != self.x_dims()
            || l2.dims() != w_dims
            || l3.dims() != [self.t, self.top_k]
            || !self.k.is_multiple_of(BLOCK_ELEMS)
        {
            bail!(
                "{OP}: op built for x {:?}, w {w_dims:?}, ids [{}, {}]; got x {:?}, w {:?}, ids {:?}",
                self.x_dims(),
                self.t,
                self.top_k,
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let bias = match &self.bias {
            Some(b) => Some(field_to_vec::<f32>(b, OP, "bias")?),
            None => None,
        };
        if let Some(b) = &bias {
            if b.len() != self.e * self.n {
                bail!(
                    "{OP}: bias has {} elements, expected [e, n] = [{}, {}]",
                    b.len(),
                    self.e,
                    self.n
                );
            }
        }
        let dims = MoeDims {
            t: self.t,
            top_k: self.top_k,
            e: self.e,
            n: self.n,
            k: self.k,
            x_per_slot: self.x_per_slot,
        };
        let y = cpu::moe_matmul(self.cpu, &dims, x, w, bias.as_deref(), ids)?;
        Ok((
            CpuStorage::F32(y),
            Shape::from((self.t, self.top_k, self.n)),
        ))
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
        crate::cuda::ops::moe_matmul(self, (s1, l1), (s2, l2), (s3, l3))
    }
}

/// MoE expert matmul: `y[t, s] = W[ids[t, s]] · x[t or (t, s)] + bias[ids[t, s]]`.
///
/// * `x`: f32 `(t, k)` (every slot of token t uses row t) or `(t, top_k, k)` (one row per slot).
/// * `w`: U8 `(e, n, k/32·17)`, MXFP4 rows of `k` elements for each of `e` experts.
/// * `bias`: optional f32 `(e, n)`.
/// * `ids`: U32 `(t, top_k)`, expert index per slot; every id must be `< e`.
///
/// Returns f32 `(t, top_k, n)`. The CPU path groups slots by expert, so each selected expert's
/// weights are decoded once per call, and it fails with an error naming the slot on an id `>= e`.
/// Ids are checked inside the kernel, not in this wrapper, because reading them here would force
/// a device-to-host copy on GPU. On the CPU it runs [`CpuKernels::default`] (exact); see
/// [`moe_mxfp4_matmul_with`].
pub fn moe_mxfp4_matmul(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    ids: &Tensor,
) -> Result<Tensor> {
    moe_mxfp4_matmul_with(x, w, bias, ids, CpuKernels::default())
}

/// [`moe_mxfp4_matmul`] with the CPU kernels chosen by the caller (ignored on other devices).
pub fn moe_mxfp4_matmul_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    ids: &Tensor,
    cpu: CpuKernels,
) -> Result<Tensor> {
    if !x.dtype().is_float() || w.dtype() != DType::U8 || ids.dtype() != DType::U32 {
        bail!(
            "{OP}: expected float x, u8 w, u32 ids; got {:?}, {:?}, {:?}",
            x.dtype(),
            w.dtype(),
            ids.dtype()
        );
    }
    let &[t, top_k] = ids.dims() else {
        bail!("{OP}: expected ids [t, top_k], got {:?}", ids.dims());
    };
    let (k, x_per_slot) = match *x.dims() {
        [xt, k] if xt == t => (k, false),
        [xt, xs, k] if xt == t && xs == top_k => (k, true),
        _ => bail!(
            "{OP}: expected x [{t}, k] or [{t}, {top_k}, k] for ids {:?}, got {:?}",
            ids.dims(),
            x.dims()
        ),
    };
    if k % BLOCK_ELEMS != 0 {
        bail!("{OP}: k = {k} (x {:?}) is not a multiple of 32", x.dims());
    }
    let &[e, n, wb] = w.dims() else {
        bail!(
            "{OP}: expected w [e, n, {}], got {:?} (x {:?})",
            row_bytes(k),
            w.dims(),
            x.dims()
        );
    };
    if wb != row_bytes(k) {
        bail!(
            "{OP}: expected w [e, n, {}] for k = {k}, got {:?} (x {:?})",
            row_bytes(k),
            w.dims(),
            x.dims()
        );
    }
    if !x.device().same_device(w.device()) || !x.device().same_device(ids.device()) {
        bail!("{OP}: x, w and ids must be on the same device");
    }
    let bias = match bias {
        Some(b) => {
            if b.dims() != [e, n] || b.dtype() != x.dtype() || !b.device().same_device(x.device()) {
                bail!(
                    "{OP}: expected bias [{e}, {n}] {:?} on the device of x, got {:?} {:?}",
                    x.dtype(),
                    b.dims(),
                    b.dtype()
                );
            }
            Some(b.contiguous()?)
        }
        None => None,
    };
    let op = MoeMxfp4Matmul {
        t,
        top_k,
        e,
        n,
        k,
        x_per_slot,
        bias,
        cpu,
    };
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &ids.contiguous()?, &op) // (t, top_k, n)
}

/// The routing-weighted sum of the chosen experts' outputs: `out[i] = Σ_c weights[i, c] ·
/// y[i, c]`.
///
/// * `weights`: f32 `(t, top_k)`; `y`: f32 `(t, top_k, d)`. Returns f32 `(t, d)`.
///
/// On the CPU a direct loop (parallel over rows for prefills); elsewhere one batched matmul
/// `(t, 1, top_k) · (t, top_k, d)`. The summation order is the slots', in f32.
pub fn moe_combine(weights: &Tensor, y: &Tensor) -> Result<Tensor> {
    const OP: &str = "moe_combine";
    let (t, top_k) = weights.dims2()?;
    let &[yt, yk, d] = y.dims() else {
        bail!("{OP}: expected y (t, top_k, d), got {:?}", y.dims());
    };
    if (yt, yk) != (t, top_k) {
        bail!(
            "{OP}: weights {:?} and y {:?} disagree on (t, top_k)",
            weights.dims(),
            y.dims()
        );
    }
    if !y.device().is_cpu() || y.dtype() != DType::F32 || weights.dtype() != DType::F32 {
        return weights.unsqueeze(1)?.matmul(&y.contiguous()?)?.squeeze(1);
    }
    let w: Vec<f32> = field_to_vec(weights, OP, "weights")?;
    let y = y.contiguous()?;
    let out = crate::cpu_storage::with_cpu_slice::<f32, _>(&y, OP, "y", |ys| {
        let mut out = vec![0f32; t * d];
        let row = |(i, o): (usize, &mut [f32])| {
            for (c, &wc) in w[i * top_k..(i + 1) * top_k].iter().enumerate() {
                let yr = &ys[(i * top_k + c) * d..][..d];
                o.iter_mut().zip(yr).for_each(|(o, y)| *o += wc * y);
            }
        };
        // Work under ~64K products stays on the calling thread (a hand-off costs more).
        if t * top_k * d < 1 << 16 {
            out.chunks_exact_mut(d.max(1)).enumerate().for_each(row);
        } else {
            use rayon::prelude::*;
            out.par_chunks_exact_mut(d.max(1)).enumerate().for_each(row);
        }
        out
    })?;
    Tensor::from_vec(out, (t, d), y.device())
}

#[cfg(test)]
mod combine_tests {
    use candle_core::{Device, Tensor};

    /// The CPU loop against an f64 sum on fresh random inputs, from one row to a prefill's
    /// (both sides of the parallel threshold), and a shape mismatch as an error.
    #[test]
    fn moe_combine_equals_an_f64_sum() {
        let dev = Device::Cpu;
        for (t, k, d) in [(1, 4, 2880), (3, 2, 64), (40, 4, 500)] {
            let w = Tensor::rand(0f32, 1.0, (t, k), &dev).unwrap();
            let y = Tensor::randn(0f32, 1.0, (t, k, d), &dev).unwrap();
            let got = super::moe_combine(&w, &y)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let (wv, yv) = (w.to_vec2::<f32>().unwrap(), y.to_vec3::<f32>().unwrap());
            for i in 0..t {
                for j in 0..d {
                    let want: f64 = (0..k)
                        .map(|c| f64::from(wv[i][c]) * f64::from(yv[i][c][j]))
                        .sum();
                    let mag: f64 = (0..k)
                        .map(|c| f64::from((wv[i][c] * yv[i][c][j]).abs()))
                        .sum();
                    assert!(
                        (f64::from(got[i][j]) - want).abs() <= 1e-6 * mag + 1e-30,
                        "({t}, {k}, {d}) at ({i}, {j}): {} vs {want}",
                        got[i][j]
                    );
                }
            }
        }
        let w = Tensor::rand(0f32, 1.0, (2, 4), &dev).unwrap();
        let y = Tensor::rand(0f32, 1.0, (2, 3, 8), &dev).unwrap();
        let e = super::moe_combine(&w, &y).unwrap_err().to_string();
        assert!(e.contains("disagree"), "{e}");
    }
}
