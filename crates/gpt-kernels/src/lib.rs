//! Custom candle ops for GPT-OSS inference.
//!
//! Every op is a checking public function, a `CustomOp` struct that holds the validated shapes
//! and whose `cpu_fwd` is a plain rayon-parallel loop, and a slow twin in [`mod@reference`] built
//! from candle tensor ops that serves as the test oracle:
//!
//! | function | inputs → output | op struct |
//! |---|---|---|
//! | [`mxfp4_dequant`] | U8 `(.., rows, cols/32·17)` → f32 `(.., rows, cols)` | [`Mxfp4Dequant`] |
//! | [`mxfp4_matmul`] | f32 `(m, k)`, U8 `(n, k/32·17)`, bias `(n)` → `(m, n)` | [`Mxfp4Matmul`] |
//! | [`moe_mxfp4_matmul`] | f32 `(t, k)`/`(t, top_k, k)`, U8 `(e, n, k/32·17)`, bias `(e, n)`, U32 ids `(t, top_k)` → `(t, top_k, n)` | [`MoeMxfp4Matmul`] |
//! | [`q8_0_matmul`] | f32 `(m, k)`, U8 `(n, k/32·34)`, bias `(n)` → `(m, n)` | [`Q8Matmul`] |
//! | [`swiglu_oai`] | gate, up (same shape) → same shape | [`SwigluOai`] |
//! | [`attention_with_sinks`] | q `(b, t, hq, d)`, k/v `(b, s, hkv, d)`, sinks `(hq)` → `(b, t, hq, d)` | [`AttentionWithSinks`] |
//! | [`paged_decode_attention`] | q `(rows, hq, d)`, pool k/v `(blocks·bs, hkv, d)`, sinks `(hq)`, [`PagedRows`] → `(rows, hq, d)` | [`PagedDecodeAttention`] |
//! | [`router_topk_softmax`] | logits `(t, e)` → ids U32 `(t, k)`, weights `(t, k)` | [`RouterTopK`] |
//!
//! MXFP4 and Q8_0 weights stay in their GGUF bytes (`DType::U8`, ggml block layouts, see
//! [`mxfp4::block`]). On the CPU the quantized matmuls run the vectorized kernels of [`simd`]
//! at a [`Precision`]: exact (f32 activations, the default) or fast (activations quantized to
//! int8 per 32-block, as llama.cpp does); the `*_with` entry points take a [`CpuKernels`].
//! [`attention_with_sinks`] on the CPU runs prefill-sized calls over query tiles (queries ×
//! heads of one KV head sharing each transposed 64-key block) and one-query calls row by row.
//! The crate knows nothing of GGUF files or the GPT-OSS config.
//!
//! With the `cuda` feature, `cuda::decode` also holds the fused kernels of the batch-1 decode
//! step, launched on raw device pointers (no allocation, so a step can be captured in a CUDA
//! graph). They read repacked weights (Q8_0 split into int8 + f32 scales, MXFP4 split into
//! nibble and exponent planes) and quantize each input vector to two int8 planes per 32-block
//! (15 bits) for `dp4a` dot products; `tests/cuda_decode.rs` checks each against CPU loops.
//! The CUDA prefill has its own tensor-core entry points on tensors: `cuda::prefill` (grouped
//! GEMMs: MXFP4 experts on bf16 MMAs, Q8 dense matrices on int8 MMAs, bias and SwiGLU fused),
//! `cuda::routing` (expert groups built on the device, the weighted combine) and
//! `cuda::attention::attention_prefill_tf32`; `tests/cuda_prefill.rs` checks them against f64
//! CPU loops.
//! On CPU only f32 activations are supported; other dtypes fail with an error naming the op.
//! Errors are `candle_core::Error` messages that name the op and the offending shapes.
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use gpt_kernels::{mxfp4_matmul, swiglu_oai};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! // One weight row of 32 elements: exponent 127 (scale 2^-1 with the doubled table) and all
//! // nibbles = 2 (value 2 · 0.5 = 1.0).
//! let mut row = vec![127u8];
//! row.extend([0x22u8; 16]);
//! let w = Tensor::from_vec(row, (1, 17), &dev)?; // (n = 1, k/32·17)
//! let x = Tensor::ones((2, 32), candle_core::DType::F32, &dev)?; // (m = 2, k = 32)
//! let y = mxfp4_matmul(&x, &w, None)?; // (2, 1)
//! assert_eq!(y.to_vec2::<f32>()?, vec![vec![32.0], vec![32.0]]);
//!
//! let act = swiglu_oai(&y, &y, 1.702, 7.0)?; // min(32, 7) · σ(1.702·7) · (7 + 1)
//! assert!((act.to_vec2::<f32>()?[0][0] - 56.0).abs() < 1e-3);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod attention;
mod cpu_storage;
mod dot;
pub mod moe;
pub mod mxfp4;
pub mod q8;
pub mod reference;
pub mod router;
pub mod simd;
pub mod swiglu;

pub use attention::paged::{paged_decode_attention, PagedDecodeAttention, PagedRow, PagedRows};
pub use attention::{attention_with_sinks, AttentionWithSinks};
pub use moe::{moe_combine, moe_mxfp4_matmul, moe_mxfp4_matmul_with, MoeMxfp4Matmul};
pub use mxfp4::{mxfp4_dequant, mxfp4_matmul, mxfp4_matmul_with, Mxfp4Dequant, Mxfp4Matmul};
pub use q8::{q8_0_matmul, q8_0_matmul_with, Q8Matmul};
pub use router::{moe_router, router_topk_softmax, RouterTopK};
pub use simd::{CpuKernels, Isa, Precision};
pub use swiglu::{swiglu_oai, SwigluOai};

#[cfg(feature = "cuda")]
pub mod cuda;
