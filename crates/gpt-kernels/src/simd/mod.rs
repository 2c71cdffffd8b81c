//! Vectorized CPU kernels of the quantized matmuls: one weight row (MXFP4 or Q8_0 blocks, kept
//! in the file's bytes) against a few activation rows, decoded in registers.
//!
//! The instruction set is picked at run time ([`Isa::detected`]): AVX-512 (F, BW, VL, VNNI)
//! where present, else AVX2 + FMA, else a portable scalar path; `GPTOSS_CPU_ISA=portable|avx2`
//! caps it (to run the narrower paths on a wide machine). Each ISA module has the same three
//! kernels per format:
//!
//! * `dot_f32`: exact — the weights dequantized exactly as gguf-py does (`d · q`), f32
//!   products and sums against f32 activations;
//! * `dot_q8`: fast — activations quantized per 32-block to int8 ([`quant::QuantRows`], as
//!   llama.cpp's CPU path does), integer block dot products (VNNI `vpdpbusd` on AVX-512,
//!   `vpmaddubsw` on AVX2), one f32 scale per block;
//! * `dequant`: a row to f32 (the prefill GEMM's weight tiles).
//!
//! `matmul` drives them over rows and threads.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod matmul;
#[cfg(target_arch = "x86_64")]
mod narrow;
#[cfg(target_arch = "x86_64")]
mod pairs;
mod portable;
pub mod quant;

use std::sync::OnceLock;

use quant::QuantView;

/// The vector instruction set a CPU kernel runs with, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Scalar Rust (any target).
    Portable,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 F, BW, DQ, VL and VNNI, with AVX2, FMA and F16C.
    Avx512,
}

impl Isa {
    /// The widest set this CPU runs, capped by `GPTOSS_CPU_ISA` (`portable`, `avx2`, `avx512`);
    /// read once per process.
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let hw = Self::hardware();
            match std::env::var("GPTOSS_CPU_ISA").ok().as_deref() {
                Some("portable") => Isa::Portable,
                Some("avx2") => hw.min(Isa::Avx2),
                _ => hw,
            }
        })
    }

    /// Every set this CPU can run, narrowest first (for tests that force each path).
    pub fn runnable() -> Vec<Isa> {
        let hw = Self::hardware();
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| *i <= hw)
            .collect()
    }

    fn hardware() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            let avx512 =
                has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni");
            if avx2 && avx512 {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

/// How the quantized matmuls treat activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 activations, weights dequantized exactly in registers, f32 sums: the reference.
    #[default]
    Exact,
    /// Activations quantized per 32-block to int8 for the row dot products (llama.cpp's
    /// numerics); prefill-sized products still run in f32.
    Fast,
}

/// The CPU kernels one op runs with: an instruction set this CPU has and a [`Precision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuKernels {
    isa: Isa,
    precision: Precision,
}

impl Default for CpuKernels {
    fn default() -> Self {
        Self::detected(Precision::Exact)
    }
}

impl CpuKernels {
    /// The detected instruction set ([`Isa::detected`]) at `precision`.
    pub fn detected(precision: Precision) -> Self {
        Self {
            isa: Isa::detected(),
            precision,
        }
    }

    /// `isa` at `precision`, or `None` when this CPU cannot run `isa`.
    pub fn new(isa: Isa, precision: Precision) -> Option<Self> {
        (isa <= Isa::hardware()).then_some(Self { isa, precision })
    }

    /// The instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The same instruction set at `precision`.
    pub fn at(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }
}

/// A quantized weight-row format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// ggml MXFP4: an E8M0 byte and 16 nibble bytes per 32 elements.
    Mxfp4,
    /// ggml Q8_0: an f16 scale and 32 int8 per 32 elements.
    Q8_0,
}

impl Format {
    /// Elements per block.
    pub const BLOCK: usize = 32;

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Mxfp4 => 17,
            Format::Q8_0 => 34,
        }
    }

    /// Bytes of a row of `k` elements (`k` a multiple of 32).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / Self::BLOCK * self.block_bytes()
    }
}

/// `out (rows, m)[r, i] = W[r] · x[i]`, exact: `w` holds `rows = out.len() / m` weight rows,
/// `x` is f32 `(m, k)`.
pub(crate) fn dot_f32(
    cpu: CpuKernels,
    fmt: Format,
    w: &[u8],
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let m = x.len() / k.max(1);
    assert!(m > 0 && out.len().is_multiple_of(m) && w.len() == out.len() / m * fmt.row_bytes(k));
    match cpu.isa {
        // SAFETY: `CpuKernels` holds an ISA only when this CPU runs it; the slices are checked
        // above and the kernels read `rows` weight rows of `k / 32` blocks and `m` rows of `x`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::dot_f32(fmt, w, x, (k, m), out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot_f32(fmt, w, x, (k, m), out) },
        _ => portable::dot_f32(fmt, w, x, (k, m), out),
    }
}

/// [`dot_f32`] with the activations quantized: `out (rows, x.rows)`.
pub(crate) fn dot_q8(cpu: CpuKernels, fmt: Format, w: &[u8], x: QuantView<'_>, out: &mut [f32]) {
    let m = x.rows;
    assert!(m > 0 && out.len().is_multiple_of(m) && w.len() == out.len() / m * fmt.row_bytes(x.k));
    assert!(
        fmt != Format::Mxfp4 || x.pairs.len() == m * (x.k / 64),
        "dot_q8: activations quantized for another weight format"
    );
    match cpu.isa {
        // SAFETY: as in `dot_f32`; `QuantRows` holds `k` int8, `k / 32` scales and, for MXFP4,
        // `k / 64` pairs per row (checked above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::dot_q8(fmt, w, x, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot_q8(fmt, w, x, out) },
        _ => portable::dot_q8(fmt, w, x, out),
    }
}

/// Dequantizes one row of `out.len()` elements.
pub(crate) fn dequant(cpu: CpuKernels, fmt: Format, w: &[u8], out: &mut [f32]) {
    debug_assert!(w.len() >= fmt.row_bytes(out.len()));
    match cpu.isa {
        // SAFETY: as in `dot_f32`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::dequant(fmt, w, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dequant(fmt, w, out) },
        _ => portable::dequant(fmt, w, out),
    }
}

#[cfg(test)]
mod tests;
