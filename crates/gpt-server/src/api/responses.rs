//! `POST /v1/responses`: the request and its conversion into chat messages (input items:
//! messages, function calls and their outputs, reasoning).

use gpt_engine::harmony::{ChatMessage, ChatRole, FunctionCall, MessageContent, ToolCall};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::chat::content_text;
use super::common::{ChatTool, FunctionSpec, ResponseFormatWire, ToolChoiceWire};
use crate::error::ApiError;

/// `reasoning`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReasoningWire {
    /// `none`, `low`, `medium`, `high`.
    #[serde(default)]
    pub effort: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `text`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TextWire {
    /// The answer format.
    #[serde(default)]
    pub format: Option<ResponseFormatWire>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A responses tool: `{"type":"function","name","description","parameters","strict"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesTool {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Parameters schema.
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Strict.
    #[serde(default)]
    pub strict: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The request body.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    /// Model (ignored).
    #[serde(default)]
    pub model: Option<String>,
    /// A string or a list of items.
    pub input: Value,
    /// Developer instructions.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Stream.
    #[serde(default)]
    pub stream: bool,
    /// Most new tokens.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Most analysis tokens (extension).
    #[serde(default)]
    pub max_reasoning_tokens: Option<u64>,
    /// Temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed (extension).
    #[serde(default)]
    pub seed: Option<i64>,
    /// Reasoning control.
    #[serde(default)]
    pub reasoning: Option<ReasoningWire>,
    /// Answer format.
    #[serde(default)]
    pub text: Option<TextWire>,
    /// Tools.
    #[serde(default)]
    pub tools: Option<Vec<ResponsesTool>>,
    /// Tool choice.
    #[serde(default)]
    pub tool_choice: Option<ToolChoiceWire>,
    /// Parallel calls.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Continue this stored response.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Store the response (default true).
    #[serde(default)]
    pub store: Option<bool>,
    /// Metadata, returned as is.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponsesRequest {
    /// The tools in chat's shape (built-in tool types are skipped).
    pub fn chat_tools(&self) -> Result<Vec<ChatTool>, ApiError> {
        let mut out = Vec::new();
        for (i, t) in self.tools.iter().flatten().enumerate() {
            if t.kind != "function" {
                continue;
            }
            let name = t.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::invalid(format!("tools[{i}].name"), "a function tool needs a name")
            })?;
            out.push(ChatTool {
                kind: "function".into(),
                function: Some(FunctionSpec {
                    name,
                    description: t.description.clone(),
                    parameters: t.parameters.clone(),
                    strict: t.strict,
                    extra: Map::new(),
                }),
                extra: Map::new(),
            });
        }
        Ok(out)
    }
}

fn msg(role: ChatRole, text: Option<String>) -> ChatMessage {
    ChatMessage {
        role,
        content: text.map(MessageContent::Text),
        tool_calls: vec![],
        tool_call_id: None,
        name: None,
        reasoning_content: None,
    }
}

/// The input items as chat messages, appended to `out`.
pub fn input_messages(input: &Value, out: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
    let items = match input {
        Value::String(s) => {
            out.push(msg(ChatRole::User, Some(s.clone())));
            return Ok(());
        }
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::invalid(
                "input",
                "input must be a string or an array of items",
            ))
        }
    };
    let mut reasoning: Option<String> = None;
    for (i, it) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let kind = it.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => {
                let role = it.get("role").and_then(Value::as_str).unwrap_or("user");
                let role = match role {
                    "user" => ChatRole::User,
                    "assistant" => ChatRole::Assistant,
                    "system" => ChatRole::System,
                    "developer" => ChatRole::Developer,
                    other => {
                        return Err(ApiError::invalid(
                            format!("{param}.role"),
                            format!("unknown role {other:?}"),
                        ))
                    }
                };
                let text = content_text(it.get("content"), &format!("{param}.content"), false)?;
                let mut m = msg(role, text);
                if role == ChatRole::Assistant {
                    m.reasoning_content = reasoning.take();
                }
                out.push(m);
            }
            "reasoning" => {
                let text: String = it
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect();
                reasoning = Some(text);
            }
            "function_call" => {
                let name = it.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = match it.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => "{}".into(),
                    Some(v) => v.to_string(),
                };
                let call = ToolCall {
                    id: it
                        .get("call_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.to_string(),
                        arguments: args,
                    },
                };
                match out.last_mut() {
                    Some(last)
                        if last.role == ChatRole::Assistant && !last.tool_calls.is_empty() =>
                    {
                        last.tool_calls.push(call)
                    }
                    _ => {
                        let mut m = msg(ChatRole::Assistant, None);
                        m.reasoning_content = reasoning.take();
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let text = match it.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ Value::Array(_)) => {
                        content_text(Some(v), &format!("{param}.output"), true)?.unwrap_or_default()
                    }
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                let mut m = msg(ChatRole::Tool, Some(text));
                m.tool_call_id = it
                    .get("call_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                out.push(m);
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{param}.type"),
                    format!("input items of type {other:?} are not supported"),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_become_messages() {
        let mut out = Vec::new();
        input_messages(
            &json!([
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "call it"}]},
                {"type": "function_call", "name": "w", "arguments": "{}", "call_id": "c1"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].tool_calls[0].function.name, "w");
        assert_eq!(out[1].reasoning_content.as_deref(), Some("call it"));
        assert_eq!(out[2].tool_call_id.as_deref(), Some("c1"));
        let mut out = Vec::new();
        assert!(input_messages(&json!([{"type": "image_generation"}]), &mut out).is_err());
        assert!(input_messages(&json!(5), &mut out).is_err());
    }
}
