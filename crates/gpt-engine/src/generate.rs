//! Generation: prefill a prompt (in chunks), then decode token by token with a [`Sampler`],
//! reusing the KV cache across calls when the new prompt extends what is cached.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;
use crate::model::{GptOss, Logits};
use crate::sampling::{Sampler, SamplingParams};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Tokens that end generation (included in the output).
    pub stop_tokens: Vec<u32>,
    /// Sampling controls.
    pub sampling: SamplingParams,
    /// Context size: prompt plus generated tokens must fit.
    pub ctx: usize,
    /// Prefill chunk size (tokens per forward).
    pub chunk: usize,
}

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct GenerateStats {
    /// Prompt tokens actually computed (those not already cached).
    pub prefill_tokens: usize,
    /// Tokens generated.
    pub generated: usize,
    /// Time from the call to the first sampled token.
    pub time_to_first_token: Duration,
    /// Time spent decoding after the first token.
    pub decode_time: Duration,
    /// Why generation ended.
    pub stopped_by: StopReason,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was sampled.
    StopToken,
    /// `max_new_tokens` reached.
    #[default]
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
}

impl GenerateStats {
    /// Decode tokens/s after the first token.
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.generated <= 1 || self.decode_time.is_zero() {
            return 0.0;
        }
        (self.generated - 1) as f64 / self.decode_time.as_secs_f64()
    }
}

/// Runs `prompt` through `model` (only the part not already in `cache`), then samples until a
/// stop token, `max_new_tokens`, a full context, or `on_token` returning `Break`.
pub fn generate(
    model: &GptOss,
    cache: &mut KvCache,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<(Vec<u32>, GenerateStats)> {
    if prompt.is_empty() {
        return Err(EngineError::EmptyInput);
    }
    if prompt.len() >= params.ctx {
        return Err(EngineError::ContextOverflow {
            prompt: prompt.len(),
            max_new: params.max_new_tokens,
            ctx: params.ctx,
        });
    }
    let start = Instant::now();
    // Reuse the cache only when the prompt extends exactly what it holds.
    let reuse = cache.tokens.len() < prompt.len() && prompt.starts_with(&cache.tokens);
    if !reuse {
        cache.reset();
    }
    let todo = prompt[cache.tokens.len()..].to_vec();
    let mut stats = GenerateStats {
        prefill_tokens: todo.len(),
        ..Default::default()
    };
    let chunk = params.chunk.max(1);
    let mut logits = None;
    for piece in todo.chunks(chunk) {
        logits = Some(model.forward(piece, cache, Logits::Last)?);
    }
    let mut logits = logits.ok_or(EngineError::EmptyInput)?;
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut out = Vec::new();
    let mut history: Vec<u32> = prompt.to_vec();
    let mut first_at = None;
    // Plain greedy needs only the argmax: computed where the logits are, one id copied back.
    let sp = &params.sampling;
    let device_argmax = sp.temperature <= 0.0
        && sp.repeat_penalty == 1.0
        && sp.presence_penalty == 0.0
        && sp.frequency_penalty == 0.0;
    loop {
        let next = if device_argmax {
            logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?
        } else {
            let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            sampler.sample(&row, &history)
        };
        if first_at.is_none() {
            first_at = Some(Instant::now());
            stats.time_to_first_token = start.elapsed();
        }
        out.push(next);
        history.push(next);
        stats.generated += 1;
        let flow = on_token(next);
        if params.stop_tokens.contains(&next) {
            stats.stopped_by = StopReason::StopToken;
            break;
        }
        if flow.is_break() {
            stats.stopped_by = StopReason::Cancelled;
            break;
        }
        if out.len() >= params.max_new_tokens {
            stats.stopped_by = StopReason::MaxTokens;
            break;
        }
        if cache.pos + 1 >= params.ctx {
            stats.stopped_by = StopReason::ContextFull;
            break;
        }
        logits = model.forward(&[next], cache, Logits::Last)?;
    }
    if let Some(t) = first_at {
        stats.decode_time = t.elapsed();
    }
    Ok((out, stats))
}
