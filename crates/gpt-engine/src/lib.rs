//! gpt-engine: the GPT-OSS transformer on Candle tensors, and what serving it needs.
//!
//! - [`engine`]: the [`engine::Engine`] — load a model, [`engine::Engine::submit`] requests,
//!   read their events; many sequences run together (continuous batching);
//! - [`loader`]: a GGUF (or Hugging Face checkpoint directory) checked against the memory
//!   plan and loaded as a [`model::GptOss`] on the CPU or a CUDA device;
//! - [`model`]: the forward pass over a [`batch::Batch`] of rows from several sequences; on
//!   CUDA a single decoding sequence runs a fused step replayed as a CUDA graph;
//! - [`kv`]: paged KV memory with block tables and a prefix cache;
//! - [`scheduler`]: which rows each step computes, within a token budget and the free blocks;
//! - [`tokenizer`], [`harmony`], [`sampling`]: o200k_harmony BPE, the harmony chat format,
//!   greedy / temperature / top-k / top-p / min-p / penalties;
//! - [`synth`]: random-weight GPT-OSS GGUFs (tiny, 20B and 120B shapes) for tests and speed.
//!
//! ```no_run
//! use gpt_engine::engine::{Engine, EngineOptions, Request};
//! use gpt_engine::sampling::SamplingParams;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::load("gpt-oss-20b-mxfp4.gguf".as_ref(), EngineOptions::default())?;
//! let tok = engine.tokenizer().expect("the GGUF has a tokenizer");
//! let mut req = Request::new(tok.encode("The capital of France is", false)?, 16);
//! req.sampling = SamplingParams::greedy();
//! let out = engine.submit(req)?.collect();
//! println!("{} ({:?})", out.text, out.usage);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
pub mod batch;
pub mod engine;
pub mod error;
pub mod harmony;
pub mod kv;
pub mod loader;
pub mod model;
pub mod sampling;
pub mod scheduler;
pub mod synth;
pub mod tokenizer;
