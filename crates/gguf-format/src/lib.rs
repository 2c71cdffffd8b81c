//! gguf-format: read and write GGUF files (work in progress; see issue 2).
#![warn(missing_docs)]

mod ggml_type;

pub use ggml_type::GgmlType;
