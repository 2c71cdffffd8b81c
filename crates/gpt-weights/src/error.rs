//! The crate's error type.

use crate::dequant::DequantError;
use crate::spec::Problem;

/// Errors of gpt-weights; each names the key, tensor or shapes involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A GGUF-level problem (missing key, wrong type, bad file).
    #[error(transparent)]
    Gguf(#[from] gguf_format::Error),
    /// The file is not a GPT-OSS GGUF.
    #[error("general.architecture is {found:?}, expected \"gpt-oss\"")]
    WrongArchitecture {
        /// The architecture the file declares.
        found: String,
    },
    /// Metadata values that do not make a valid model.
    #[error("invalid GPT-OSS config: {what}")]
    InvalidConfig {
        /// What is wrong.
        what: String,
    },
    /// Something valid in GGUF that this engine does not run.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is unsupported.
        what: String,
    },
    /// The tensors do not match the GPT-OSS spec; every problem is listed.
    #[error("{} tensor problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Validation {
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// Dequantization failed for a tensor.
    #[error("tensor {tensor}: {source}")]
    Dequant {
        /// The tensor's GGUF name.
        tensor: String,
        /// The cause.
        source: DequantError,
    },
    /// The model does not fit in memory.
    #[error("not enough memory on {device}: need {need} bytes, {available} available\n{plan}")]
    OutOfMemory {
        /// The device (`cpu`, `cuda:0`).
        device: String,
        /// Bytes the plan needs.
        need: u64,
        /// Bytes available.
        available: u64,
        /// The plan, rendered.
        plan: String,
    },
    /// A Candle error while building tensors.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
