//! `POST /v1/completions`: a raw text prompt, no chat template.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::{Stop, StreamOptions};
use crate::params::SamplingKnobs;

/// The prompt: a string, one string in an array, or token ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PromptWire {
    /// Text.
    Text(String),
    /// Token ids.
    Ids(Vec<u32>),
    /// Texts (only one is supported).
    Texts(Vec<String>),
}

/// The request body.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// Model name (ignored).
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt.
    pub prompt: PromptWire,
    /// Stream.
    #[serde(default)]
    pub stream: bool,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most new tokens (OpenAI's default is 16).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Sampling knobs (`temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, the
    /// penalties, `seed`).
    #[serde(flatten)]
    pub sampling: SamplingKnobs,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Choices.
    #[serde(default)]
    pub n: Option<u64>,
    /// Alternatives per position (legacy integer form).
    #[serde(default)]
    pub logprobs: Option<u64>,
    /// Everything else (ignored).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
