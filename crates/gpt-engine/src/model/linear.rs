//! Dense projections in their device form, chosen once at load ([`super::prepare`]): the
//! loaded matrix (f32 or Candle's quantized `QMatMul`) on the generic path; on the CPU, Q8_0
//! matrices as their file's blocks for the vectorized kernels; or, on CUDA, the
//! Q8 split form the fused decode and the tensor-core prefill read (int8 `(n, k)` and f32
//! scales `(n, k/32)`, plus a low int8 plane for 15-bit types; Q, K and V stacked into one
//! matrix).

use candle_core::{Device, Result, Tensor};
use gpt_weights::load::Matrix;

/// What every matmul of one forward shares: on CUDA, the tensor-core GEMMs' plan of its rows.
pub(crate) struct RowPlan {
    #[cfg(feature = "cuda")]
    plan: Option<gpt_kernels::cuda::prefill::GroupPlan>,
}

impl RowPlan {
    /// The plan of a forward of `rows` rows; `tensor_cores` when the weights are in a form the
    /// tensor-core GEMMs read.
    pub(crate) fn new(rows: usize, device: &Device, tensor_cores: bool) -> Result<Self> {
        #[cfg(feature = "cuda")]
        return Ok(Self {
            plan: if tensor_cores {
                Some(gpt_kernels::cuda::prefill::GroupPlan::dense(rows, device)?)
            } else {
                None
            },
        });
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (rows, device, tensor_cores);
            Ok(Self {})
        }
    }
}

/// A weight matrix `W (n, k)` with an optional bias: `forward(x) = x Wᵀ + b`.
pub(crate) enum Linear {
    /// The matrix as loaded.
    Generic {
        /// `(n, k)`.
        w: Matrix,
        /// `(n)`.
        b: Option<Tensor>,
    },
    /// Q8_0 blocks as in the file, `U8 (n, k/32·34)`, multiplied by the CPU kernels
    /// (dequantized in registers).
    Q8Blocks {
        /// `(n, k/32·34)`.
        w: Tensor,
        /// `(n)`.
        b: Option<Tensor>,
        /// The CPU kernels.
        cpu: gpt_kernels::CpuKernels,
    },
    /// Q8 split on CUDA: int8 `qs (n, k)`, f32 scales `d (n, k/32)`, bias `(n)` (zeros when the
    /// matrix has none). Types that are not an int8 per 32-block scale add a low plane `lo`:
    /// each weight `d · (128·qs + lo)`, a 15-bit integer per block.
    #[cfg(feature = "cuda")]
    Q8Split {
        /// `(n, k)` int8 (stored as u8).
        qs: Tensor,
        /// `(n, k)` int8 low plane (stored as u8), two-plane matrices only.
        lo: Option<Tensor>,
        /// `(n, k/32)`.
        d: Tensor,
        /// `(n)`.
        b: Tensor,
    },
}

impl Linear {
    /// `x (t, k) -> (t, n)`.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn forward(&self, x: &Tensor, rows: &RowPlan) -> Result<Tensor> {
        match self {
            Linear::Generic { w, b } => {
                let y = w.forward(x)?;
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Linear::Q8Blocks { w, b, cpu } => gpt_kernels::q8_0_matmul_with(x, w, b.as_ref(), *cpu),
            #[cfg(feature = "cuda")]
            Linear::Q8Split { qs, lo, d, b } => {
                use gpt_kernels::cuda::prefill::{grouped_gemm, PgWeights, QRows};
                let Some(plan) = &rows.plan else {
                    candle_core::bail!("linear: a Q8 split matrix needs the tensor-core plan");
                };
                let w = PgWeights::Q8 {
                    qs,
                    lo: lo.as_ref(),
                    d,
                };
                grouped_gemm(&QRows::quantize(x)?, plan, w, b)
            }
        }
    }

    /// Whether this matrix is in the tensor-core form.
    pub(crate) fn tensor_cores(&self) -> bool {
        !matches!(self, Linear::Generic { .. } | Linear::Q8Blocks { .. })
    }

    /// Bytes its tensors hold.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Linear::Generic { w, b } => {
                matrix_bytes(w) + b.as_ref().map_or(0, super::prepare::tensor_bytes)
            }
            Linear::Q8Blocks { w, b, .. } => {
                super::prepare::tensor_bytes(w) + b.as_ref().map_or(0, super::prepare::tensor_bytes)
            }
            #[cfg(feature = "cuda")]
            Linear::Q8Split { qs, lo, d, b } => [Some(qs), lo.as_ref(), Some(d), Some(b)]
                .into_iter()
                .flatten()
                .map(super::prepare::tensor_bytes)
                .sum(),
        }
    }
}

fn matrix_bytes(m: &Matrix) -> u64 {
    use candle_core::quantized::QMatMul;
    match m {
        Matrix::Dense(t) => super::prepare::tensor_bytes(t),
        Matrix::Quant(QMatMul::QTensor(q)) => q.storage_size_in_bytes() as u64,
        Matrix::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
            super::prepare::tensor_bytes(t)
        }
    }
}

/// The attention's Q, K and V projections.
pub(crate) enum Qkv {
    /// Three matrices.
    Separate(Linear, Linear, Linear),
    /// One stacked matrix `((hq + 2 hkv) hd, d)` (the CUDA fast form).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Fused(Linear),
}

impl Qkv {
    /// `a (t, d)` → q `(t, hq hd)`, k and v `(t, hkv hd)`.
    pub(crate) fn forward(
        &self,
        a: &Tensor,
        rows: &RowPlan,
        (nq, nkv): (usize, usize),
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self {
            Qkv::Separate(q, k, v) => Ok((
                q.forward(a, rows)?,
                k.forward(a, rows)?,
                v.forward(a, rows)?,
            )),
            Qkv::Fused(l) => {
                let qkv = l.forward(a, rows)?; // (t, nq + 2 nkv)
                Ok((
                    qkv.narrow(1, 0, nq)?.contiguous()?,
                    qkv.narrow(1, nq, nkv)?.contiguous()?,
                    qkv.narrow(1, nq + nkv, nkv)?.contiguous()?,
                ))
            }
        }
    }

    /// Bytes their tensors hold.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Qkv::Separate(q, k, v) => q.bytes() + k.bytes() + v.bytes(),
            Qkv::Fused(l) => l.bytes(),
        }
    }
}
