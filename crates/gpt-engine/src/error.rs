//! The engine's error type.

/// Errors of gpt-engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Loading or validating weights failed.
    #[error(transparent)]
    Weights(#[from] gpt_weights::Error),
    /// A GGUF-level error.
    #[error(transparent)]
    Gguf(#[from] gguf_format::Error),
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A forward pass was asked for no tokens.
    #[error("forward: no input tokens")]
    EmptyInput,
    /// The prompt does not fit the context.
    #[error("prompt of {prompt} tokens does not fit the context of {ctx} tokens{}", if *.max_new > 0 { format!(" (with {} tokens to generate)", .max_new) } else { String::new() })]
    ContextOverflow {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens requested to be generated.
        max_new: usize,
        /// The context size.
        ctx: usize,
    },
    /// A tokenizer error.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The KV pool has too few free blocks for a step.
    #[error("kv pool: {needed:?} blocks needed (full, sliding), {free:?} free")]
    OutOfKvBlocks {
        /// Blocks the step needs, per group.
        needed: [usize; 2],
        /// Free blocks, per group.
        free: [usize; 2],
    },
    /// A sequence id the pool does not hold.
    #[error("kv pool: no sequence {0}")]
    UnknownSequence(u64),
    /// A request parameter is out of its range.
    #[error("invalid {param}: {message}")]
    InvalidRequest {
        /// The parameter.
        param: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The waiting queue is full.
    #[error("the engine's queue is full ({limit} requests waiting); retry later")]
    QueueFull {
        /// The queue's bound.
        limit: usize,
    },
    /// The engine has stopped (its worker ended).
    #[error("the engine has stopped")]
    Stopped,
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
