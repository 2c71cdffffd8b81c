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
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
