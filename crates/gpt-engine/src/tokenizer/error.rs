//! Typed errors of the tokenizer.

/// Everything that can go wrong while building or using a [`super::Tokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The vocabulary arrays disagree in length.
    #[error("vocab: {what} has {got} entries but tokenizer.ggml.tokens has {expected}")]
    LengthMismatch {
        /// Which array is off.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The number of tokens.
        expected: usize,
    },
    /// A byte-level token contains a character outside the GPT-2 byte→unicode table.
    #[error("vocab: token {id} {token:?} is not a GPT-2 byte-level string (char {ch:?})")]
    NotByteLevel {
        /// Token id.
        id: u32,
        /// Token text.
        token: String,
        /// The offending character.
        ch: char,
    },
    /// Two normal tokens decode to the same bytes.
    #[error("vocab: tokens {first} and {second} both encode the bytes {bytes:?}")]
    DuplicateToken {
        /// First id.
        first: u32,
        /// Second id.
        second: u32,
        /// Their byte string.
        bytes: Vec<u8>,
    },
    /// A merge line is malformed or names unknown tokens.
    #[error("vocab: merge #{index} {merge:?} is invalid: {reason}")]
    BadMerge {
        /// Index in the merges array.
        index: usize,
        /// The merge text.
        merge: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A special id (bos/eos/pad) is outside the vocabulary.
    #[error("vocab: {which} id {id} is outside the vocabulary of {vocab_size}")]
    SpecialOutOfRange {
        /// `bos`, `eos` or `pad`.
        which: &'static str,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// A byte has no single-byte token, so some text cannot be encoded.
    #[error("encode: byte 0x{byte:02x} has no single-byte token in the vocabulary")]
    MissingByte {
        /// The byte.
        byte: u8,
    },
    /// A token id is not in the vocabulary.
    #[error("decode: token id {id} is outside the vocabulary of {vocab_size}")]
    UnknownId {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// The vocabulary is too large for `u32` ids.
    #[error("vocab: {len} tokens do not fit u32 ids")]
    TooLarge {
        /// Number of tokens.
        len: usize,
    },
    /// Reading or parsing a `tokenizer.json`.
    #[error("tokenizer.json {path}: {reason}")]
    TokenizerJson {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A required GGUF metadata key is missing or has the wrong type.
    #[error("gguf metadata key {key}: {reason}")]
    GgufKey {
        /// The key.
        key: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Building the o200k_harmony vocabulary from tiktoken-rs failed.
    #[error("o200k_harmony: {0}")]
    O200k(String),
    /// The pre-tokenizer regex failed to compile (a bug, not an input error).
    #[error("pre-tokenizer regex: {0}")]
    Regex(#[from] regex::Error),
}
