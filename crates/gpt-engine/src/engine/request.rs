//! What a caller submits to the [`Engine`](super::Engine) and what comes back: a request with
//! its generation parameters (validated once, for every caller), and the stream of events.

use crate::error::{EngineError, Result};
use crate::sampling::SamplingParams;

/// Most stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;
/// Most alternatives a request may ask log-probabilities for (as the OpenAI API).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Constrained decoding: masks the next token's logits and follows what was sampled
/// (the server implements it with llguidance; a reasoning budget forces tokens with it).
pub trait TokenGuide: Send {
    /// Sets the logits of tokens not allowed next to `-inf`.
    fn mask(&mut self, logits: &mut [f32]);
    /// Records the sampled token.
    fn accept(&mut self, token: u32);
}

/// One generation request.
pub struct Request {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate (at least 1; clamped to what the context leaves).
    pub max_tokens: usize,
    /// Sampling controls (seed included).
    pub sampling: SamplingParams,
    /// Tokens that end generation (reported, not part of the text).
    pub stop_tokens: Vec<u32>,
    /// Strings that end generation (the text stops before them).
    pub stop_strings: Vec<String>,
    /// Log-probabilities of each sampled token and of this many alternatives.
    pub logprobs: Option<usize>,
    /// The completion is harmony after `<|start|>assistant`: report channel changes and count
    /// reasoning tokens.
    pub harmony: bool,
    /// Constrained decoding.
    pub guide: Option<Box<dyn TokenGuide>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("prompt_tokens", &self.prompt.len())
            .field("max_tokens", &self.max_tokens)
            .field("sampling", &self.sampling)
            .field("stop_tokens", &self.stop_tokens)
            .field("stop_strings", &self.stop_strings)
            .field("logprobs", &self.logprobs)
            .field("harmony", &self.harmony)
            .field("guided", &self.guide.is_some())
            .finish()
    }
}

impl Request {
    /// A request for up to `max_tokens` after `prompt`, with default sampling.
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            sampling: SamplingParams::default(),
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            logprobs: None,
            harmony: false,
            guide: None,
        }
    }

    /// Checks every parameter against its range and every prompt id against `vocab`.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let bad = |param: &'static str, message: String| {
            Err(EngineError::InvalidRequest { param, message })
        };
        let s = &self.sampling;
        if self.prompt.is_empty() {
            return bad("prompt", "the prompt is empty".into());
        }
        if let Some(&id) = self.prompt.iter().find(|&&id| id as usize >= vocab) {
            return bad(
                "prompt",
                format!("token id {id} is outside the vocabulary of {vocab}"),
            );
        }
        if self.max_tokens == 0 {
            return bad("max_tokens", "must be at least 1".into());
        }
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            return bad(
                "temperature",
                format!("{} is not a number >= 0", s.temperature),
            );
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return bad("top_p", format!("{} is not in (0, 1]", s.top_p));
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return bad("min_p", format!("{} is not in [0, 1]", s.min_p));
        }
        if !(s.repeat_penalty.is_finite() && s.repeat_penalty > 0.0) {
            return bad(
                "repeat_penalty",
                format!("{} is not a number > 0", s.repeat_penalty),
            );
        }
        for (param, v) in [
            ("presence_penalty", s.presence_penalty),
            ("frequency_penalty", s.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(param, format!("{v} is not in [-2, 2]"));
            }
        }
        if self.stop_strings.len() > MAX_STOP_STRINGS {
            return bad(
                "stop",
                format!(
                    "{} stop strings; at most {MAX_STOP_STRINGS}",
                    self.stop_strings.len()
                ),
            );
        }
        if self.stop_strings.iter().any(|s| s.is_empty()) {
            return bad("stop", "a stop string is empty".into());
        }
        if let Some(&id) = self.stop_tokens.iter().find(|&&id| id as usize >= vocab) {
            return bad(
                "stop_tokens",
                format!("token id {id} is outside the vocabulary of {vocab}"),
            );
        }
        if self.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return bad(
                "top_logprobs",
                format!("at most {MAX_TOP_LOGPROBS} alternatives"),
            );
        }
        Ok(())
    }
}

/// Why a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
    /// The caller cancelled (or dropped its handle).
    Cancelled,
    /// The engine failed on this request; the message says why.
    Error(String),
}

/// Token counts of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    /// Generated tokens (the stop token included).
    pub completion_tokens: usize,
    /// Generated tokens inside harmony `analysis` messages.
    pub reasoning_tokens: usize,
}

/// One sampled token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// Its id.
    pub id: u32,
    /// The text it completes (may be empty: a partial UTF-8 character, a special token, or
    /// text held back while it may still begin a stop string).
    pub text: String,
    /// Its log-probability, when asked for.
    pub logprob: Option<f32>,
    /// The most probable alternatives `(id, logprob)`, when asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// What a request's stream carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The request got its sequence: how many prompt tokens came from the prefix cache.
    Started {
        /// Cached prompt tokens.
        cached_tokens: usize,
    },
    /// A sampled token.
    Token(TokenEvent),
    /// Text with no new token: what was held back (an unfinished character, or text that
    /// might have begun a stop string), sent before [`Event::Finished`].
    Text(String),
    /// A harmony message began (requests with `harmony`).
    Channel {
        /// `analysis`, `commentary`, `final`, or none.
        channel: Option<String>,
        /// `to=` recipient, e.g. `functions.get_weather`.
        recipient: Option<String>,
    },
    /// The last event.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Counts.
        usage: Usage,
    },
}
