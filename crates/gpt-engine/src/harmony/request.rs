//! The subset of an OpenAI chat-completions request that shapes the prompt.

use serde::{Deserialize, Serialize};

/// `reasoning_effort` of the request (harmony's `Reasoning: …` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// `low`
    Low,
    /// `medium` (the default)
    #[default]
    Medium,
    /// `high`
    High,
}

impl ReasoningEffort {
    /// The word rendered into the system message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// Chat roles of the OpenAI API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions; becomes harmony's developer message.
    System,
    /// Instructions; becomes harmony's developer message.
    Developer,
    /// The user.
    User,
    /// An earlier model answer and/or tool calls.
    Assistant,
    /// A tool result.
    Tool,
}

/// One part of an array-valued `content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text` for the parts rendered; other types are rejected.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// `content`: a string or an array of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain string.
    Text(String),
    /// Typed parts; text parts are concatenated.
    Parts(Vec<ContentPart>),
}

/// `function` of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name (without the `functions.` namespace).
    pub name: String,
    /// JSON arguments as a string, rendered verbatim.
    #[serde(default)]
    pub arguments: String,
}

/// An assistant tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, matched by a later tool message's `tool_call_id`.
    #[serde(default)]
    pub id: Option<String>,
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The call.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_string()
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: ChatRole,
    /// Text (absent for pure tool-call messages).
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Assistant tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `tool` messages: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `tool` messages: the function name (else found via `tool_call_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assistant chain of thought (`reasoning_content`, also read as
    /// `reasoning` or `thinking`); rendered on the analysis channel only for
    /// assistant messages after the last user message.
    #[serde(
        default,
        alias = "reasoning",
        alias = "thinking",
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    /// A message of `role` with plain `text` and nothing else.
    pub fn text(role: ChatRole, text: &str) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(text.to_string())),
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
            reasoning_content: None,
        }
    }
}

/// Function definition of a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// Name, called as `functions.NAME`.
    pub name: String,
    /// Description, rendered as `// ` comment lines.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON schema of the arguments (key order is kept).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

/// A tool of the request (`type: "function"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Must be `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// A chat-completions request (fields that do not affect the prompt are ignored).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Function tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Reasoning effort; `medium` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
}
