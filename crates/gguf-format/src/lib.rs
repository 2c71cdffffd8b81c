//! gguf-format: read, check and write GGUF files (versions 2 and 3, little-endian).
//!
//! - [`GgufFile`]: one file, memory-mapped (or an owned buffer); the header is parsed and checked
//!   completely at open: every count and length against the bytes that remain (before anything
//!   is allocated), UTF-8 of keys, strings and names, duplicate keys and tensor names, array
//!   nesting depth ([`MAX_ARRAY_DEPTH`]), `general.alignment`, and every tensor's dims (at most
//!   [`MAX_DIMS`], nonzero, no element-count overflow, ne0 a multiple of the block size), offset
//!   alignment, bounds and overlap. Tensor bytes are then borrowed zero-copy.
//! - [`GgufModel`]: one file or a split set `name-00001-of-00003.gguf` opened as one model.
//! - [`Metadata`]: the key/value pairs in file order with typed getters ([`Value`], [`Array`]).
//! - [`GgufWriter`]: writes v3 files with gguf-py's `GGUFWriter` byte layout, with tensor data
//!   given up front or streamed at write time, as one file or a split set
//!   ([`GgufWriter::write_split`], [`SplitPolicy`]).
//!
//! Tensor dims are in GGUF order (`dims[0]` = ne0, contiguous); [`TensorInfo::logical_shape`]
//! gives the row-major shape (dims reversed). Tensor types are [`GgmlType`]; unknown type ids are
//! listed and only [`GgufFile::tensor_data`] on them fails.
#![warn(missing_docs)]

mod cursor;
mod error;
mod file;
mod ggml_type;
mod metadata;
mod model;
mod parse;
mod split;
mod tensor;
mod value;
mod writer;

pub use error::Error;
pub use file::GgufFile;
pub use ggml_type::GgmlType;
pub use metadata::Metadata;
pub use model::{
    parse_split_name, split_path, GgufModel, SPLIT_COUNT_KEY, SPLIT_NO_KEY, SPLIT_TENSORS_COUNT_KEY,
};
pub use parse::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH};
pub use split::SplitPolicy;
pub use tensor::{TensorInfo, MAX_DIMS};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
