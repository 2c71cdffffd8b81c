//! Request parameters → engine settings: sampling, token limits, reasoning control and the
//! constrained-decoding plan, shared by the chat, completions and responses endpoints.

use std::sync::Arc;

use gpt_engine::engine::MAX_TOP_LOGPROBS;
use gpt_engine::harmony::ReasoningEffort;
use gpt_engine::sampling::SamplingParams;
use serde_json::{json, Value};

use crate::api::common::{AnswerFormat, ChatTool, ToolChoice};
use crate::error::{ApiError, ApiResult};
use crate::guide::{CallSpec, GuideEnv, GuidePlan};

/// Sampling knobs as requests give them (flattened into the request bodies).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SamplingKnobs {
    /// `temperature` (default 1).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// `top_p`.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// `top_k`.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// `min_p`.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// `repetition_penalty`.
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// `presence_penalty`.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// `frequency_penalty`.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// `seed`.
    #[serde(default)]
    pub seed: Option<i64>,
}

impl SamplingKnobs {
    /// The engine's parameters for choice `index` (seeds differ per choice); the engine
    /// checks the ranges.
    pub fn params(&self, index: usize) -> ApiResult<SamplingParams> {
        let mut p = SamplingParams::default();
        if let Some(t) = self.temperature {
            p.temperature = t;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(k) = self.top_k {
            p.top_k = usize::try_from(k.max(0)).unwrap_or(0);
        }
        if let Some(v) = self.min_p {
            p.min_p = v;
        }
        if let Some(v) = self.repetition_penalty {
            p.repeat_penalty = v;
        }
        if let Some(v) = self.presence_penalty {
            p.presence_penalty = v;
        }
        if let Some(v) = self.frequency_penalty {
            p.frequency_penalty = v;
        }
        p.seed = self.seed.map(|s| (s as u64).wrapping_add(index as u64));
        Ok(p)
    }
}

/// `n`, checked.
pub fn choices(n: Option<u64>, max: usize) -> ApiResult<usize> {
    match n {
        None => Ok(1),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(n) => Err(ApiError::invalid(
            "n",
            format!("n = {n} is not in 1..={max}"),
        )),
    }
}

/// Most new tokens: what was asked (at least 1), clamped to what the context leaves.
pub fn max_tokens(asked: Option<u64>, param: &str, prompt: usize, ctx: usize) -> ApiResult<usize> {
    if prompt >= ctx {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt has {prompt} tokens but the context holds {ctx} \
                 (prompt and completion together); shorten the prompt"
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let room = ctx - prompt;
    match asked {
        Some(0) => Err(ApiError::invalid(param, "must be at least 1")),
        Some(n) => Ok((n.min(room as u64)) as usize),
        None => Ok(room),
    }
}

/// Alternatives asked for: `logprobs` (bool) with `top_logprobs`.
pub fn logprobs(on: Option<bool>, top: Option<u64>) -> ApiResult<Option<usize>> {
    let top = top.unwrap_or(0);
    if top > MAX_TOP_LOGPROBS as u64 {
        return Err(ApiError::invalid(
            "top_logprobs",
            format!("{top} is more than {MAX_TOP_LOGPROBS}"),
        ));
    }
    if top > 0 && on != Some(true) {
        return Err(ApiError::invalid("top_logprobs", "needs logprobs: true"));
    }
    Ok((on == Some(true)).then_some(top as usize))
}

/// Reasoning control: the effort written into the system message, and whether the
/// analysis channel is allowed at all (`none` skips it).
pub fn effort(s: Option<&str>, param: &str) -> ApiResult<(Option<ReasoningEffort>, bool)> {
    Ok(match s {
        None => (None, true),
        Some("low") => (Some(ReasoningEffort::Low), true),
        Some("medium") => (Some(ReasoningEffort::Medium), true),
        Some("high") => (Some(ReasoningEffort::High), true),
        Some("none" | "minimal") => (Some(ReasoningEffort::Low), false),
        Some(other) => {
            return Err(ApiError::invalid(
                param,
                format!("{other:?} is not one of none, low, medium, high"),
            ))
        }
    })
}

/// What a request constrains.
pub struct Constraints<'a> {
    /// Function tools (chat shape).
    pub tools: &'a [ChatTool],
    /// Tool choice.
    pub choice: ToolChoice,
    /// Answer format.
    pub format: AnswerFormat,
    /// The analysis channel is allowed.
    pub reasoning: bool,
    /// Most analysis tokens asked for (request or server).
    pub budget: Option<usize>,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Where the format came from (`response_format` or `text.format`).
    pub format_param: &'a str,
}

/// The plan, or `None` when nothing is constrained.
pub fn plan(env: &Arc<GuideEnv>, c: Constraints<'_>) -> ApiResult<Option<GuidePlan>> {
    let named = match &c.choice {
        ToolChoice::Function(n) => Some(n.as_str()),
        _ => None,
    };
    if matches!(c.choice, ToolChoice::Required | ToolChoice::Function(_)) && c.tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice",
            "a tool call is required but no tools were given",
        ));
    }
    let mut calls = Vec::new();
    if c.choice != ToolChoice::None {
        for (i, t) in c.tools.iter().enumerate() {
            let Some(f) = &t.function else { continue };
            if named.is_some_and(|n| n != f.name) {
                continue;
            }
            let schema = f
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            let strict = f.strict.unwrap_or(false);
            let grammar = match env.json_grammar(&schema, strict) {
                Ok(g) => g,
                Err(e) if strict => {
                    return Err(ApiError::invalid(
                        format!("tools[{i}].function.parameters"),
                        e.to_string(),
                    ))
                }
                Err(_) => env
                    .json_grammar(&json!({"type": "object"}), false)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            };
            calls.push(CallSpec {
                name: f.name.clone(),
                grammar,
            });
        }
        if let (Some(n), true) = (named, calls.is_empty()) {
            return Err(ApiError::invalid(
                "tool_choice",
                format!("no tool is named {n:?}"),
            ));
        }
    }
    let final_allowed = !matches!(c.choice, ToolChoice::Required | ToolChoice::Function(_));
    let final_grammar = match &c.format {
        AnswerFormat::Text => None,
        AnswerFormat::Json(schema) => Some(
            env.json_grammar(schema, true)
                .map_err(|e| ApiError::invalid(c.format_param, e.to_string()))?,
        ),
    };
    let constrained = !calls.is_empty() || final_grammar.is_some() || !c.tools.is_empty();
    let budget = if constrained {
        // Leave room for the answer: a small max_tokens never ends inside the reasoning.
        let reserve = (c.max_tokens / 2).clamp(1, 1024);
        let auto = c.max_tokens.saturating_sub(reserve);
        Some(c.budget.map_or(auto, |b| b.min(auto)))
    } else {
        c.budget.map(|b| b.min(c.max_tokens - c.max_tokens / 4))
    };
    if !constrained && c.reasoning && budget.is_none() {
        return Ok(None);
    }
    Ok(Some(GuidePlan {
        env: env.clone(),
        reasoning: c.reasoning,
        budget,
        constrain_headers: constrained || !c.reasoning,
        final_allowed,
        final_grammar,
        preamble: c.choice == ToolChoice::Auto,
        calls,
    }))
}

/// The ids that open a final answer right after `<|start|>assistant` (reasoning `none`).
pub fn final_prefill(env: &GuideEnv) -> ApiResult<Vec<u32>> {
    env.encode("<|channel|>final<|message|>")
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `Value` of a schema for messages (a tool's parameters, or `{}`).
pub fn schema_or_empty(v: Option<&Value>) -> Value {
    v.cloned().unwrap_or_else(|| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(max_tokens(None, "max_tokens", 10, 100).unwrap(), 90);
        assert_eq!(max_tokens(Some(500), "max_tokens", 10, 100).unwrap(), 90);
        assert!(max_tokens(Some(0), "max_tokens", 10, 100).is_err());
        let e = max_tokens(Some(5), "max_tokens", 100, 100).unwrap_err();
        assert!(e.message.contains("100"));
        assert_eq!(choices(Some(3), 8).unwrap(), 3);
        assert!(choices(Some(0), 8).is_err());
        assert!(choices(Some(9), 8).is_err());
        assert_eq!(logprobs(Some(true), Some(3)).unwrap(), Some(3));
        assert!(logprobs(None, Some(3)).is_err());
        assert!(logprobs(Some(true), Some(99)).is_err());
        assert!(!effort(Some("none"), "x").unwrap().1);
        assert!(effort(Some("max"), "x").is_err());
    }

    #[test]
    fn seeds_differ_per_choice() {
        let k = SamplingKnobs {
            seed: Some(7),
            ..Default::default()
        };
        assert_eq!(k.params(0).unwrap().seed, Some(7));
        assert_eq!(k.params(2).unwrap().seed, Some(9));
    }
}
