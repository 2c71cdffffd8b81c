//! The error type of the crate: every variant names the key, tensor, offset or path involved and,
//! where there is one, what was expected versus what was found.

use std::path::PathBuf;

/// Everything that can go wrong reading, checking or writing a GGUF file.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`"open"`, `"mmap"`, `"write"`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An I/O error while writing to a caller-supplied writer.
    #[error("write error at output byte {offset}: {source}")]
    Write {
        /// Bytes written before the error.
        offset: u64,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("bad magic: expected \"GGUF\" (47 47 55 46), found {found:02x?}")]
    BadMagic {
        /// The first (up to) four bytes of the file.
        found: Vec<u8>,
    },

    /// The file is big-endian (its version field reads as a byte-swapped 2 or 3).
    #[error("big-endian GGUF (version field reads {raw:#010x}, byte-swapped {swapped}) is not supported; only little-endian files are")]
    BigEndian {
        /// The version field read as little-endian.
        raw: u32,
        /// The byte-swapped value (the real version).
        swapped: u32,
    },

    /// A version other than 2 or 3 (v1 used 32-bit counts and is refused).
    #[error("unsupported GGUF version {version}: only versions 2 and 3 are supported{hint}")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
        /// Extra explanation (empty or `" (v1 ...)"`).
        hint: &'static str,
    },

    /// A read would run past the end of the file (truncated file, or a count/length that is larger
    /// than what remains).
    #[error(
        "{what} at offset {offset}: needs {needed} bytes but only {available} remain in the file"
    )]
    Truncated {
        /// What was being read (`"kv 3 key"`, `"tensor info 7 dims"`, ...).
        what: String,
        /// Offset of the item in the file.
        offset: u64,
        /// Bytes needed (saturated at `u64::MAX` for absurd counts).
        needed: u64,
        /// Bytes that remain from `offset` to the end of the file.
        available: u64,
    },

    /// A metadata value type id outside 0..=12.
    #[error("{what} at offset {offset}: invalid metadata value type id {id} (valid: 0..=12)")]
    BadValueType {
        /// Where (`"kv `general.name` value"`, ...).
        what: String,
        /// Offset of the type id.
        offset: u64,
        /// The id found.
        id: u32,
    },

    /// A bool byte other than 0 or 1.
    #[error("{what} at offset {offset}: invalid bool byte {byte} (expected 0 or 1)")]
    InvalidBool {
        /// Where.
        what: String,
        /// Offset of the byte.
        offset: u64,
        /// The byte found.
        byte: u8,
    },

    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("{what} at offset {offset}: arrays nested deeper than {limit} levels")]
    NestingTooDeep {
        /// Where.
        what: String,
        /// Offset of the too-deep array.
        offset: u64,
        /// The depth limit.
        limit: usize,
    },

    /// A key, string value or tensor name that is not valid UTF-8.
    #[error("{what} at offset {offset}: invalid UTF-8 ({source})")]
    InvalidUtf8 {
        /// Where.
        what: String,
        /// Offset of the string bytes.
        offset: u64,
        /// The decoding error.
        source: std::str::Utf8Error,
    },

    /// The same metadata key twice.
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey {
        /// The key.
        key: String,
    },

    /// The same tensor name twice (in one file, a split set, or a writer).
    #[error("duplicate tensor name `{name}`{context}")]
    DuplicateTensor {
        /// The tensor name.
        name: String,
        /// Extra context (which shards), may be empty.
        context: String,
    },

    /// `general.alignment` is not a nonzero power of two, or not a u32.
    #[error(
        "invalid `general.alignment`: {found} (expected a u32 that is a nonzero power of two)"
    )]
    BadAlignment {
        /// The value (and type) found.
        found: String,
    },

    /// More than [`crate::MAX_DIMS`] dimensions.
    #[error("tensor `{tensor}`: {n_dims} dimensions, at most {max} allowed")]
    TooManyDims {
        /// Tensor name.
        tensor: String,
        /// Number of dims found.
        n_dims: u64,
        /// The limit (ggml's `GGML_MAX_DIMS`).
        max: usize,
    },

    /// A dimension of zero.
    #[error("tensor `{tensor}`: zero-length dimension in dims {dims:?}")]
    ZeroDim {
        /// Tensor name.
        tensor: String,
        /// Its dims (GGUF order).
        dims: Vec<u64>,
    },

    /// The element count (or byte size) overflows.
    #[error("tensor `{tensor}`: element count of dims {dims:?} overflows (must fit in i64)")]
    ElementCountOverflow {
        /// Tensor name.
        tensor: String,
        /// Its dims (GGUF order).
        dims: Vec<u64>,
    },

    /// `ne0` is not a multiple of the type's block size.
    #[error(
        "tensor `{tensor}`: ne0 = {ne0} is not a multiple of the {ty} block size {block_size}"
    )]
    NotWholeBlocks {
        /// Tensor name.
        tensor: String,
        /// First dimension.
        ne0: u64,
        /// The type.
        ty: crate::GgmlType,
        /// Its block size.
        block_size: u64,
    },

    /// A tensor offset not a multiple of the alignment.
    #[error(
        "tensor `{tensor}`: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// Tensor name.
        tensor: String,
        /// Its offset (relative to the data section).
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// A tensor's bytes extend past the end of the file.
    #[error("tensor `{tensor}`: data bytes {start}..{end} (absolute) lie outside the file of {file_len} bytes")]
    TensorOutOfBounds {
        /// Tensor name.
        tensor: String,
        /// Absolute start offset (saturating).
        start: u64,
        /// Absolute end offset (saturating).
        end: u64,
        /// File length.
        file_len: u64,
    },

    /// Two tensors' byte ranges overlap.
    #[error("tensors `{first}` (data {first_start}..{first_end}) and `{second}` (data {second_start}..{second_end}) overlap")]
    TensorOverlap {
        /// The one that starts first.
        first: String,
        /// Its relative start.
        first_start: u64,
        /// Its relative end.
        first_end: u64,
        /// The other one.
        second: String,
        /// Its relative start.
        second_start: u64,
        /// Its relative end.
        second_end: u64,
    },

    /// A tensor type id this crate does not know (listing works, bytes do not).
    #[error("tensor `{tensor}`: unknown ggml type id {id}; its byte size is unknown")]
    UnknownType {
        /// Tensor name.
        tensor: String,
        /// The type id.
        id: u32,
    },

    /// A tensor name not present.
    #[error("no tensor named `{name}`")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },

    /// A metadata key that is not present.
    #[error("missing metadata key `{key}`")]
    MissingKey {
        /// The key.
        key: String,
    },

    /// A metadata value of the wrong type.
    #[error("metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The type(s) accepted.
        expected: String,
        /// The type (and value) found.
        found: String,
    },

    /// An integer value that does not fit the requested type.
    #[error("metadata key `{key}`: value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value found.
        value: String,
        /// The requested type.
        expected: &'static str,
    },

    /// A problem with a split set (`name-00001-of-00003.gguf`).
    #[error("split set {path}: {reason}")]
    Split {
        /// The shard concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A tensor's data given to the writer has the wrong size.
    #[error("tensor `{tensor}`: {what} {found} bytes, expected {expected} ({ty} dims {dims:?})")]
    TensorSize {
        /// Tensor name.
        tensor: String,
        /// `"data has"` or `"fill wrote"`.
        what: &'static str,
        /// Bytes expected.
        expected: u64,
        /// Bytes given.
        found: u64,
        /// The type.
        ty: crate::GgmlType,
        /// Dims (GGUF order).
        dims: Vec<u64>,
    },
}
