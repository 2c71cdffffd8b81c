//! gpt-engine (work in progress).
pub mod error;
pub mod generate;
pub mod harmony;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod sampling;
pub mod synth;
pub mod tokenizer;
