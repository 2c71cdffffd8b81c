//! Request pieces shared by the endpoints: stop sequences, tools, tool choice, response
//! format, stream options, and the usage object.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A function a tool describes (chat's nested shape).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FunctionSpec {
    /// The name, called as `functions.NAME`.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Arguments must validate against `parameters`.
    #[serde(default)]
    pub strict: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A chat tool: `{"type": "function", "function": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatTool {
    /// `function`.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function (absent for built-in tool types).
    #[serde(default)]
    pub function: Option<FunctionSpec>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn function_kind() -> String {
    "function".into()
}

/// `tool_choice` as sent: a word or an object naming a function.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ToolChoiceWire {
    /// `auto`, `none`, `required`.
    Mode(String),
    /// `{"type":"function","function":{"name":..}}` (chat) or `{"type":"function","name":..}`
    /// (responses).
    Named(Value),
}

/// What the model may do about tools.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Answer or call, as it likes.
    #[default]
    Auto,
    /// Never call.
    None,
    /// Must call some function.
    Required,
    /// Must call this function.
    Function(String),
}

impl ToolChoiceWire {
    /// The choice, or what is wrong with it.
    pub fn resolve(&self) -> Result<ToolChoice, String> {
        match self {
            Self::Mode(m) => match m.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" | "any" => Ok(ToolChoice::Required),
                other => Err(format!(
                    "{other:?} is not one of \"auto\", \"none\", \"required\" or an object naming a function"
                )),
            },
            Self::Named(v) => {
                let name = v
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .or_else(|| v.get("name"))
                    .and_then(Value::as_str);
                match name {
                    Some(n) if !n.is_empty() => Ok(ToolChoice::Function(n.to_string())),
                    _ => Err("an object tool_choice needs function.name".into()),
                }
            }
        }
    }
}

/// `response_format` (chat) / `text.format` (responses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseFormatWire {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Chat: `{"name", "schema", "strict"}`.
    #[serde(default)]
    pub json_schema: Option<JsonSchemaSpec>,
    /// Responses: the schema is inline.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `json_schema` of a response format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonSchemaSpec {
    /// A name for it.
    #[serde(default)]
    pub name: Option<String>,
    /// The schema.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Whether to follow it exactly (we always do).
    #[serde(default)]
    pub strict: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What shape the final answer must have.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AnswerFormat {
    /// Any text.
    #[default]
    Text,
    /// A JSON value matching this schema (`json_object`: any object).
    Json(Value),
}

impl ResponseFormatWire {
    /// The format, or what is wrong with it.
    pub fn resolve(&self) -> Result<AnswerFormat, String> {
        match self.kind.as_str() {
            "text" => Ok(AnswerFormat::Text),
            "json_object" => Ok(AnswerFormat::Json(serde_json::json!({"type": "object"}))),
            "json_schema" => {
                let schema = self
                    .json_schema
                    .as_ref()
                    .and_then(|s| s.schema.clone())
                    .or_else(|| self.schema.clone())
                    .ok_or("json_schema needs a schema")?;
                if !schema.is_object() && !schema.is_boolean() {
                    return Err("the schema must be a JSON object".into());
                }
                Ok(AnswerFormat::Json(schema))
            }
            other => Err(format!(
                "{other:?} is not one of \"text\", \"json_object\", \"json_schema\""
            )),
        }
    }
}

/// `prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PromptDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// `completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CompletionDetails {
    /// Tokens of the analysis channel.
    pub reasoning_tokens: usize,
}

/// The usage object of chat and completions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct UsageWire {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
    /// Cache hits.
    pub prompt_tokens_details: PromptDetails,
    /// Reasoning.
    pub completion_tokens_details: CompletionDetails,
}

impl UsageWire {
    /// From the counts of the generations of one request.
    pub fn new(prompt: usize, cached: usize, completion: usize, reasoning: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: cached,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: reasoning,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_choice_forms() {
        let w: ToolChoiceWire = serde_json::from_str("\"required\"").unwrap();
        assert_eq!(w.resolve(), Ok(ToolChoice::Required));
        let w: ToolChoiceWire =
            serde_json::from_str(r#"{"type":"function","function":{"name":"f"}}"#).unwrap();
        assert_eq!(w.resolve(), Ok(ToolChoice::Function("f".into())));
        let w: ToolChoiceWire = serde_json::from_str(r#"{"type":"function","name":"g"}"#).unwrap();
        assert_eq!(w.resolve(), Ok(ToolChoice::Function("g".into())));
        let w: ToolChoiceWire = serde_json::from_str("\"sometimes\"").unwrap();
        assert!(w.resolve().is_err());
    }

    #[test]
    fn response_formats() {
        let f: ResponseFormatWire = serde_json::from_str(
            r#"{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"},"strict":true}}"#,
        )
        .unwrap();
        assert!(matches!(f.resolve(), Ok(AnswerFormat::Json(_))));
        let f: ResponseFormatWire = serde_json::from_str(r#"{"type":"json_schema"}"#).unwrap();
        assert!(f.resolve().is_err());
        let f: ResponseFormatWire = serde_json::from_str(r#"{"type":"yaml"}"#).unwrap();
        assert!(f.resolve().is_err());
    }
}
