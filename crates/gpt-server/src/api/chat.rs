//! `POST /v1/chat/completions`: the request, lenient where real clients are sloppy, and its
//! conversion into the harmony [`ChatRequest`] the prompt is rendered from.

use gpt_engine::harmony::{
    ChatMessage, ChatRequest, ChatRole, FunctionCall, FunctionDef, MessageContent, Tool, ToolCall,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::{ChatTool, ResponseFormatWire, Stop, StreamOptions, ToolChoiceWire};
use crate::error::ApiError;
use crate::params::SamplingKnobs;

/// The request body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name (any; there is one model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// Stream chunks as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Stream options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (legacy name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Most analysis-channel tokens (then the final answer is forced).
    #[serde(default)]
    pub max_reasoning_tokens: Option<u64>,
    /// Sampling knobs (`temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, the
    /// penalties, `seed`).
    #[serde(flatten)]
    pub sampling: SamplingKnobs,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Number of choices.
    #[serde(default)]
    pub n: Option<u64>,
    /// Return log-probabilities.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Alternatives per position.
    #[serde(default)]
    pub top_logprobs: Option<u64>,
    /// Tools.
    #[serde(default)]
    pub tools: Option<Vec<ChatTool>>,
    /// Tool choice.
    #[serde(default)]
    pub tool_choice: Option<ToolChoiceWire>,
    /// Several calls at once (harmony ends a completion at its first call anyway).
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `low`, `medium`, `high`, or `none` (no analysis channel).
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Answer format.
    #[serde(default)]
    pub response_format: Option<ResponseFormatWire>,
    /// Everything else (ignored).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One message as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool` (or legacy `function`).
    pub role: String,
    /// A string, an array of parts, or null.
    #[serde(default)]
    pub content: Option<Value>,
    /// The author's name (tool results: the function).
    #[serde(default)]
    pub name: Option<String>,
    /// Assistant calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// The call a tool message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Earlier reasoning (`reasoning_content`).
    #[serde(default)]
    pub reasoning_content: Option<String>,
    /// Earlier reasoning (`reasoning`, as codex sends it).
    #[serde(default)]
    pub reasoning: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An earlier tool call on an assistant message.
#[derive(Debug, Clone, Deserialize)]
pub struct WireToolCall {
    /// Its id.
    #[serde(default)]
    pub id: Option<String>,
    /// The call.
    pub function: WireFunctionCall,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `function` of an earlier tool call.
#[derive(Debug, Clone, Deserialize)]
pub struct WireFunctionCall {
    /// The function.
    pub name: String,
    /// A JSON string, an object (sloppy clients), or null.
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// The text of a `content` value: a string, or the text parts of an array (parts without
/// `type` but with `text` count as text). Non-text parts are an error, except where
/// `skip_other` (tool results), where they are skipped.
pub fn content_text(
    content: Option<&Value>,
    param: &str,
    skip_other: bool,
) -> Result<Option<String>, ApiError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(ApiError::invalid(
                param,
                "content must be a string, an array of content parts, or null",
            ))
        }
    };
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        let (kind, text) = match p {
            Value::String(s) => (None, Some(s.as_str())),
            Value::Object(o) => (
                o.get("type").and_then(Value::as_str),
                o.get("text").and_then(Value::as_str),
            ),
            _ => (Some("?"), None),
        };
        match (kind, text) {
            (None | Some("text" | "input_text" | "output_text"), Some(t)) => out.push_str(t),
            _ if skip_other => {}
            (k, _) => {
                return Err(ApiError::invalid(
                    format!("{param}[{i}]"),
                    format!(
                        "content parts of type {:?} are not supported; only text",
                        k.unwrap_or("(none)")
                    ),
                ))
            }
        }
    }
    Ok(Some(out))
}

fn role(s: &str, index: usize) -> Result<ChatRole, ApiError> {
    Ok(match s {
        "system" => ChatRole::System,
        "developer" => ChatRole::Developer,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        "tool" | "function" => ChatRole::Tool,
        other => {
            return Err(ApiError::invalid(
                format!("messages[{index}].role"),
                format!(
                    "unknown role {other:?}; expected system, developer, user, assistant or tool"
                ),
            ))
        }
    })
}

/// Arguments of an earlier call as the string harmony renders.
fn arguments_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Function tools of a request, as harmony renders them (built-in tool types are an error).
pub fn harmony_tools(tools: &[ChatTool]) -> Result<Vec<Tool>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| match (&t.kind[..], &t.function) {
            ("function", Some(f)) if !f.name.is_empty() => Ok(Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: f.name.clone(),
                    description: f.description.clone(),
                    parameters: f.parameters.clone(),
                },
            }),
            ("function", _) => Err(ApiError::invalid(
                format!("tools[{i}].function"),
                "a function tool needs function.name",
            )),
            (k, _) => Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("tool type {k:?} is not supported; only function"),
            )),
        })
        .collect()
}

impl ChatCompletionRequest {
    /// The conversation as the harmony renderer takes it.
    pub fn to_harmony(&self) -> Result<ChatRequest, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let role = role(&m.role, i)?;
            let param = format!("messages[{i}].content");
            let text = content_text(m.content.as_ref(), &param, role == ChatRole::Tool)?;
            let tool_calls = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| ToolCall {
                    id: c.id.clone(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: c.function.name.clone(),
                        arguments: arguments_text(c.function.arguments.as_ref()),
                    },
                })
                .collect();
            let tool_call_id = m.tool_call_id.clone();
            messages.push(ChatMessage {
                role,
                content: text.map(MessageContent::Text),
                tool_calls,
                tool_call_id,
                name: m.name.clone(),
                reasoning_content: m.reasoning_content.clone().or_else(|| m.reasoning.clone()),
            });
        }
        Ok(ChatRequest {
            messages,
            tools: harmony_tools(self.tools.as_deref().unwrap_or_default())?,
            reasoning_effort: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sloppy_clients_are_accepted() {
        let r = req(json!({
            "model": "x", "unknown_field": {"a": 1},
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [{"text": "hi "}, {"type": "input_text", "text": "there"}]},
                {"role": "assistant", "content": null, "reasoning": "think",
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": null}}]},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "image_url", "image_url": {}}, {"type": "text", "text": "42"}]}
            ]
        }));
        let h = r.to_harmony().unwrap();
        assert_eq!(h.messages.len(), 4);
        assert_eq!(
            h.messages[1].content,
            Some(MessageContent::Text("hi there".into()))
        );
        assert_eq!(h.messages[2].tool_calls[0].function.arguments, "{}");
        assert_eq!(h.messages[2].reasoning_content.as_deref(), Some("think"));
        assert_eq!(
            h.messages[3].content,
            Some(MessageContent::Text("42".into()))
        );
    }

    #[test]
    fn unknown_roles_and_images_are_400s() {
        let r = req(json!({"messages": [{"role": "wizard", "content": "x"}]}));
        let e = r.to_harmony().unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let r = req(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}));
        let e = r.to_harmony().unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        let r = req(json!({"messages": []}));
        assert!(r.to_harmony().is_err());
    }

    #[test]
    fn wrong_types_fail_to_parse() {
        let e =
            crate::api::parse_json::<ChatCompletionRequest>(br#"{"messages": "hi"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        let e = crate::api::parse_json::<ChatCompletionRequest>(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"));
        let e = crate::api::parse_json::<ChatCompletionRequest>(
            br#"{"messages": [], "temperature": "hot"}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("invalid request"));
    }
}
