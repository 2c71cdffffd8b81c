//! MXFP4 (ggml block layout) dequantization and matmul ops.
//!
//! Weights stay in their GGUF bytes as a `DType::U8` tensor (rows, cols/32·17); see [`block`]
//! for the format. At `Precision::Exact` W is dequantized exactly and the dot
//! products accumulate in f32.

pub mod block;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::cpu_storage::{contiguous_slice, field_to_vec};
use crate::simd::{CpuKernels, Format};
use block::{row_bytes, BLOCK_ELEMS};

/// `CustomOp1` behind [`mxfp4_dequant`]: U8 blocks (.., rows, cols/32·17) → f32 (.., rows, cols).
#[derive(Debug, Clone)]
pub struct Mxfp4Dequant {
    /// Elements per row (a multiple of 32).
    pub cols: usize,
}

impl CustomOp1 for Mxfp4Dequant {
    fn name(&self) -> &'static str {
        "gpt-kernels/mxfp4-dequant"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let blocks = contiguous_slice::<u8>(s, l, "mxfp4_dequant", "blocks")?;
        let out_dims = check_blocks_dims(l.dims(), self.cols)?;
        let rows = out_dims[..out_dims.len() - 1].iter().product::<usize>();
        let out = crate::simd::matmul::dequant_rows(
            CpuKernels::default(),
            Format::Mxfp4,
            blocks,
            (rows, self.cols),
        );
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::mxfp4_dequant(self, s, l)
    }
}

/// Dequantizes ggml MXFP4 blocks.
///
/// * `blocks`: U8 `(.., rows, cols/32·17)`, the raw GGUF bytes of each row.
/// * `cols`: logical elements per row, a multiple of 32.
///
/// Returns f32 `(.., rows, cols)`; every value is bit-exact `KVALUES[nibble] · 2^(e−128)`.
pub fn mxfp4_dequant(blocks: &Tensor, cols: usize) -> Result<Tensor> {
    if blocks.dtype() != DType::U8 {
        bail!(
            "mxfp4_dequant: blocks must be u8, got {:?} (shape {:?})",
            blocks.dtype(),
            blocks.dims()
        );
    }
    check_blocks_dims(blocks.dims(), cols)?;
    blocks
        .contiguous()?
        .apply_op1_no_bwd(&Mxfp4Dequant { cols })
}

/// Validates `(.., rows, cols/32·17)` and returns the dequantized dims `(.., rows, cols)`.
fn check_blocks_dims(dims: &[usize], cols: usize) -> Result<Vec<usize>> {
    let Some((&last, lead)) = dims.split_last() else {
        bail!("mxfp4_dequant: blocks must have rank >= 1, got a scalar");
    };
    if !cols.is_multiple_of(BLOCK_ELEMS) {
        bail!("mxfp4_dequant: cols = {cols} is not a multiple of {BLOCK_ELEMS}");
    }
    if last != row_bytes(cols) {
        bail!(
            "mxfp4_dequant: expected blocks [.., rows, {}] for cols = {cols}, got {dims:?}",
            row_bytes(cols)
        );
    }
    let mut out = lead.to_vec();
    out.push(cols);
    Ok(out)
}

/// `CustomOp2` behind [`mxfp4_matmul`], applied to `x` f32 (m, k) and `w` U8 (n, k/32·17);
/// returns (m, n).
#[derive(Debug, Clone)]
pub struct Mxfp4Matmul {
    /// Activation rows.
    pub m: usize,
    /// Output features (weight rows).
    pub n: usize,
    /// Input features (a multiple of 32).
    pub k: usize,
    /// Optional contiguous bias (n), same dtype and device as `x`.
    pub bias: Option<Tensor>,
    /// The CPU kernels `cpu_fwd` runs.
    pub cpu: CpuKernels,
}

impl CustomOp2 for Mxfp4Matmul {
    fn name(&self) -> &'static str {
        "gpt-kernels/mxfp4-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "mxfp4_matmul";
        let (m, n, k) = (self.m, self.n, self.k);
        let x = contiguous_slice::<f32>(s1, l1, OP, "x")?;
        let w = contiguous_slice::<u8>(s2, l2, OP, "w")?;
        if l1.dims() != [m, k] || l2.dims() != [n, row_bytes(k)] || k % BLOCK_ELEMS != 0 {
            bail!(
                "{OP}: op built for x [{m}, {k}], w [{n}, {}], got x {:?}, w {:?}",
                row_bytes(k),
                l1.dims(),
                l2.dims()
            );
        }
        let bias = match &self.bias {
            Some(b) => Some(field_to_vec::<f32>(b, OP, "bias")?),
            None => None,
        };
        if let Some(b) = &bias {
            if b.len() != n {
                bail!("{OP}: bias has {} elements, expected n = {n}", b.len());
            }
        }
        let y =
            crate::simd::matmul::matmul(self.cpu, Format::Mxfp4, x, (m, k, n), w, bias.as_deref());
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::mxfp4_matmul(self, s1, l1, s2, l2)
    }
}

/// `y = x · Wᵀ + b` with MXFP4 weights.
///
/// * `x`: f32 `(.., k)` (typically `(m, k)`); may be strided.
/// * `w`: U8 `(n, k/32·17)`, GGUF MXFP4 rows of `k` elements.
/// * `bias`: optional f32 `(n)`.
///
/// Returns `(.., n)`, f32 accumulation, no activation quantization (on the CPU,
/// [`CpuKernels::default`]; see [`mxfp4_matmul_with`]).
pub fn mxfp4_matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    mxfp4_matmul_with(x, w, bias, CpuKernels::default())
}

/// [`mxfp4_matmul`] with the CPU kernels chosen by the caller (ignored on other devices).
pub fn mxfp4_matmul_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cpu: CpuKernels,
) -> Result<Tensor> {
    const OP: &str = "mxfp4_matmul";
    let Some((&k, lead)) = x.dims().split_last() else {
        bail!("{OP}: x must have rank >= 1, got a scalar");
    };
    if !x.dtype().is_float() {
        bail!("{OP}: x must be a float tensor, got {:?}", x.dtype());
    }
    if w.dtype() != DType::U8 {
        bail!("{OP}: w must be u8 MXFP4 blocks, got {:?}", w.dtype());
    }
    if k % BLOCK_ELEMS != 0 {
        bail!("{OP}: k = {k} (x {:?}) is not a multiple of 32", x.dims());
    }
    let &[n, wb] = w.dims() else {
        bail!(
            "{OP}: expected w [n, {}], got {:?} (x {:?})",
            row_bytes(k),
            w.dims(),
            x.dims()
        );
    };
    if wb != row_bytes(k) {
        bail!(
            "{OP}: expected w [n, {}] for k = {k}, got {:?} (x {:?})",
            row_bytes(k),
            w.dims(),
            x.dims()
        );
    }
    if !x.device().same_device(w.device()) {
        bail!("{OP}: x and w are on different devices");
    }
    let bias = match bias {
        Some(b) => {
            if b.dims() != [n] || b.dtype() != x.dtype() || !b.device().same_device(x.device()) {
                bail!(
                    "{OP}: expected bias [{n}] {:?} on the device of x, got {:?} {:?}",
                    x.dtype(),
                    b.dims(),
                    b.dtype()
                );
            }
            Some(b.contiguous()?)
        }
        None => None,
    };
    let m = lead.iter().product::<usize>();
    let op = Mxfp4Matmul { m, n, k, bias, cpu };
    let y = x
        .reshape((m, k))? // (m, k)
        .contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &op)?; // (m, n)
    let mut out_dims = lead.to_vec();
    out_dims.push(n);
    y.reshape(out_dims) // (.., n)
}
