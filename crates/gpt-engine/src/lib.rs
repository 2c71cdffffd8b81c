//! gpt-engine: the GPT-OSS transformer on Candle tensors, and what running it needs.
//!
//! - [`loader`]: a GGUF (or Hugging Face checkpoint directory) checked against the memory
//!   plan and loaded as a [`model::GptOss`] on the CPU or a CUDA device;
//! - [`model`]: the forward pass (prefill in chunks, decode); on CUDA single tokens run a fused
//!   decode step replayed as a CUDA graph;
//! - [`kv_cache`]: preallocated per-layer caches (sliding layers keep only their window);
//! - [`generate`]: prefill + sampling loop with cache reuse across turns;
//! - [`tokenizer`], [`harmony`], [`sampling`]: o200k_harmony BPE, the harmony chat format,
//!   greedy / temperature / top-k / top-p / min-p / penalties;
//! - [`synth`]: random-weight GPT-OSS GGUFs (tiny, 20B and 120B shapes) for tests and speed.
//!
//! ```no_run
//! use candle_core::Device;
//! use gpt_engine::generate::{generate, GenerateParams};
//! use gpt_engine::loader::{load_model, LoadConfig};
//! use gpt_engine::sampling::SamplingParams;
//! use gpt_engine::tokenizer::Tokenizer;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (model, file) = load_model(
//!     "gpt-oss-20b-mxfp4.gguf".as_ref(),
//!     &Device::Cpu,
//!     &LoadConfig::default(),
//!     None,
//! )?;
//! let tok = Tokenizer::from_gguf_metadata(file.metadata())?;
//! let prompt = tok.encode("The capital of France is", false)?;
//! let params = GenerateParams {
//!     max_new_tokens: 16,
//!     stop_tokens: vec![],
//!     sampling: SamplingParams::greedy(),
//!     ctx: 4096,
//!     chunk: 512,
//! };
//! let mut cache = model.new_cache();
//! let (ids, _stats) = generate(&model, &mut cache, &prompt, &params, |_| {
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! println!("{}", tok.decode(&ids)?);
//! # Ok(()) }
//! ```
pub mod error;
pub mod generate;
pub mod harmony;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod sampling;
pub mod synth;
pub mod tokenizer;
