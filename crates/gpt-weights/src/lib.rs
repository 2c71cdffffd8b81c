//! gpt-weights: the GPT-OSS weight map on top of [`gguf_format`].
//!
//! - [`GptOssConfig`]: hyperparameters from `gpt-oss.*` metadata, with llama.cpp's defaults;
//! - [`names`]: every GGUF tensor name, built in one place;
//! - [`spec`]: expected dims and allowed types per tensor, and [`spec::validate`], which reports
//!   every problem of a file at once, before anything is allocated;
//! - [`dequant`]: CPU dequantization of ggml block types to f32, bit-identical to gguf-py;
//! - [`plan`]: the memory plan (weights, KV cache, buffers) from metadata alone;
//! - [`load`]: the tensors as Candle tensors on a device ([`Weights`]);
//! - [`hf`]: the original Hugging Face checkpoint (safetensors) into the same [`Weights`].
//!
//! ```no_run
//! use gguf_format::GgufModel;
//! use gpt_weights::{GptOssConfig, Weights, load::LoadOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = GgufModel::open("gpt-oss-20b-mxfp4.gguf")?;
//! let cfg = GptOssConfig::from_metadata(model.metadata())?;
//! gpt_weights::spec::validate(&model, &cfg)?;
//! let w = Weights::load(&model, &cfg, &candle_core::Device::Cpu, LoadOptions::default())?;
//! assert_eq!(w.layers.len(), cfg.n_layer);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod dequant;
pub mod error;
pub mod hf;
pub mod load;
pub mod names;
pub mod plan;
pub mod spec;

pub use config::GptOssConfig;
pub use error::{Error, Result};
pub use load::Weights;
