//! Reading the tokenizer from GGUF metadata (`tokenizer.ggml.*`).

use gguf_format::Metadata;

use super::{Result, Tokenizer, TokenizerError, Vocab};

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.{model,tokens,token_type,
    /// merges,bos_token_id,eos_token_id,padding_token_id}`; `model` must be
    /// `gpt2` (byte-level BPE).
    pub fn from_gguf_metadata(md: &Metadata) -> Result<Self> {
        Self::from_vocab(&vocab_from_gguf_metadata(md)?)
    }
}

/// Extracts the [`Vocab`] stored in GGUF metadata.
pub fn vocab_from_gguf_metadata(md: &Metadata) -> Result<Vocab> {
    fn key_err(key: &'static str, e: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::GgufKey {
            key,
            reason: e.to_string(),
        }
    }
    const MODEL: &str = "tokenizer.ggml.model";
    let model = md.get_str(MODEL).map_err(|e| key_err(MODEL, e))?;
    if model != "gpt2" {
        return Err(key_err(
            MODEL,
            format!("{model:?} is not a byte-level BPE (`gpt2`) tokenizer"),
        ));
    }
    const TOKENS: &str = "tokenizer.ggml.tokens";
    const TYPES: &str = "tokenizer.ggml.token_type";
    const MERGES: &str = "tokenizer.ggml.merges";
    const BOS: &str = "tokenizer.ggml.bos_token_id";
    const EOS: &str = "tokenizer.ggml.eos_token_id";
    const PAD: &str = "tokenizer.ggml.padding_token_id";
    let tokens = md.get_str_array(TOKENS).map_err(|e| key_err(TOKENS, e))?;
    let token_types = md.get_i32_array(TYPES).map_err(|e| key_err(TYPES, e))?;
    let merges = md.get_str_array(MERGES).map_err(|e| key_err(MERGES, e))?;
    let eos = md.get_u32(EOS).map_err(|e| key_err(EOS, e))?;
    let bos = md
        .get_opt_u32(BOS)
        .map_err(|e| key_err(BOS, e))?
        .unwrap_or(eos);
    let pad = md
        .get_opt_u32(PAD)
        .map_err(|e| key_err(PAD, e))?
        .unwrap_or(eos);
    Ok(Vocab {
        tokens: tokens.to_vec(),
        merges: merges.to_vec(),
        token_types: token_types.to_vec(),
        bos,
        eos,
        pad,
    })
}
