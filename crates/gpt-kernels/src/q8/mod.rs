//! The Q8_0 matmul: dense weights kept in their ggml Q8_0 bytes (`DType::U8 (n, k/32·34)`: per
//! 32 elements an f16 scale and 32 int8) and dequantized in registers, so the CPU reads 1.06
//! bytes per weight instead of the 4 of an f32 copy.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::cpu_storage::{contiguous_slice, field_to_vec, with_cpu_slice};
use crate::simd::{CpuKernels, Format, Precision};

const OP: &str = "q8_0_matmul";

/// Bytes of one Q8_0 row of `k` elements.
pub const fn q8_0_row_bytes(k: usize) -> usize {
    Format::Q8_0.row_bytes(k)
}

/// Whether the int8 ([`Precision::Fast`]) kernels multiply every quant of `w` as written: none
/// is −128. They multiply |x| by `w` with x's sign moved onto the weight (`vpdpbusd` and
/// `vpmaddubsw` take one unsigned operand), and −128 has no positive int8 twin, so its products
/// with negative activations would come out negated. ggml's quantizer writes −127..=127; other
/// writers may not.
///
/// * `w`: U8 `(n, k/32·34)`, Q8_0 rows on the CPU.
pub fn q8_0_fast_safe(w: &Tensor) -> Result<bool> {
    with_cpu_slice::<u8, _>(&w.contiguous()?, "q8_0_fast_safe", "w", |bytes| {
        !bytes
            .chunks(34)
            .any(|b| b.get(2..).is_some_and(|q| q.contains(&0x80)))
    })
}

/// The kernels to run Q8_0 matrix `w` with: `cpu`, or the same instruction set at
/// [`Precision::Exact`] when `cpu` is fast and `w` holds a quant the int8 kernels would
/// mis-sign ([`q8_0_fast_safe`]). Meant for load time: it reads the whole matrix (fast only).
pub fn q8_0_kernels_for(w: &Tensor, cpu: CpuKernels) -> Result<CpuKernels> {
    if cpu.precision() == Precision::Fast && !q8_0_fast_safe(w)? {
        return Ok(cpu.at(Precision::Exact));
    }
    Ok(cpu)
}

/// `CustomOp2` behind [`q8_0_matmul`], applied to `x` f32 (m, k) and `w` U8 (n, k/32·34);
/// returns (m, n).
#[derive(Debug, Clone)]
pub struct Q8Matmul {
    /// Activation rows.
    pub m: usize,
    /// Output features (weight rows).
    pub n: usize,
    /// Input features (a multiple of 32).
    pub k: usize,
    /// Optional contiguous bias (n), f32, on the device of `x`.
    pub bias: Option<Tensor>,
    /// The CPU kernels `cpu_fwd` runs.
    pub cpu: CpuKernels,
}

impl CustomOp2 for Q8Matmul {
    fn name(&self) -> &'static str {
        "gpt-kernels/q8_0-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, n, k) = (self.m, self.n, self.k);
        let x = contiguous_slice::<f32>(s1, l1, OP, "x")?;
        let w = contiguous_slice::<u8>(s2, l2, OP, "w")?;
        if l1.dims() != [m, k] || l2.dims() != [n, q8_0_row_bytes(k)] || k % 32 != 0 {
            bail!(
                "{OP}: op built for x [{m}, {k}], w [{n}, {}], got x {:?}, w {:?}",
                q8_0_row_bytes(k),
                l1.dims(),
                l2.dims()
            );
        }
        let bias = match &self.bias {
            Some(b) => Some(field_to_vec::<f32>(b, OP, "bias")?),
            None => None,
        };
        if bias.as_ref().is_some_and(|b| b.len() != n) {
            bail!("{OP}: bias must have n = {n} elements");
        }
        let y =
            crate::simd::matmul::matmul(self.cpu, Format::Q8_0, x, (m, k, n), w, bias.as_deref());
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    /// On CUDA the engine multiplies Q8_0 matrices in its own split form (the fused decode and
    /// the tensor-core GEMMs); this op runs there through the host, correct but not fast.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::{BackendDevice, BackendStorage};
        let op = Self {
            bias: match &self.bias {
                Some(b) => Some(b.to_device(&candle_core::Device::Cpu)?),
                None => None,
            },
            ..self.clone()
        };
        let (y, shape) = op.cpu_fwd(&s1.to_cpu_storage()?, l1, &s2.to_cpu_storage()?, l2)?;
        Ok((s1.device().storage_from_cpu_storage(&y)?, shape))
    }
}

/// `y = x · Wᵀ + b` with Q8_0 weights, on the CPU with [`CpuKernels::default`] (exact).
///
/// * `x`: f32 `(.., k)`; may be strided.
/// * `w`: U8 `(n, k/32·34)`, ggml Q8_0 rows of `k` elements.
/// * `bias`: optional f32 `(n)`.
///
/// Returns f32 `(.., n)`.
pub fn q8_0_matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    q8_0_matmul_with(x, w, bias, CpuKernels::default())
}

/// [`q8_0_matmul`] with the CPU kernels chosen by the caller (for fast kernels, see
/// [`q8_0_kernels_for`]: a weight of −128 needs the exact ones).
pub fn q8_0_matmul_with(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cpu: CpuKernels,
) -> Result<Tensor> {
    let Some((&k, lead)) = x.dims().split_last() else {
        bail!("{OP}: x must have rank >= 1, got a scalar");
    };
    if x.dtype() != DType::F32 || w.dtype() != DType::U8 {
        bail!(
            "{OP}: expected f32 x and u8 w, got {:?} {:?} and {:?} {:?}",
            x.dtype(),
            x.dims(),
            w.dtype(),
            w.dims()
        );
    }
    if k % 32 != 0 {
        bail!("{OP}: k = {k} (x {:?}) is not a multiple of 32", x.dims());
    }
    let &[n, wb] = w.dims() else {
        bail!(
            "{OP}: expected w [n, {}], got {:?} (x {:?})",
            q8_0_row_bytes(k),
            w.dims(),
            x.dims()
        );
    };
    if wb != q8_0_row_bytes(k) {
        bail!(
            "{OP}: expected w [n, {}] for k = {k}, got {:?} (x {:?})",
            q8_0_row_bytes(k),
            w.dims(),
            x.dims()
        );
    }
    if !x.device().same_device(w.device()) {
        bail!("{OP}: x and w are on different devices");
    }
    let bias = match bias {
        Some(b) => {
            if b.dims() != [n] || b.dtype() != DType::F32 || !b.device().same_device(x.device()) {
                bail!(
                    "{OP}: expected bias [{n}] f32 on the device of x, got {:?} {:?}",
                    b.dims(),
                    b.dtype()
                );
            }
            Some(b.contiguous()?)
        }
        None => None,
    };
    let m = lead.iter().product::<usize>();
    let op = Q8Matmul { m, n, k, bias, cpu };
    let y = x
        .reshape((m, k))? // (m, k)
        .contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &op)?; // (m, n)
    let mut out_dims = lead.to_vec();
    out_dims.push(n);
    y.reshape(out_dims) // (.., n)
}
