//! Harmony's own message model (mirrors openai-harmony's `chat::Message`).

/// Author role of a harmony message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system`
    System,
    /// `developer`
    Developer,
    /// `user`
    User,
    /// `assistant`
    Assistant,
    /// A tool; rendered by its name (`functions.get_weather`).
    Tool,
}

impl Role {
    /// The header word of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    /// Parses a header word (tools have no fixed word).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Self::System),
            "developer" => Some(Self::Developer),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }
}

/// One function tool as shown to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDescription {
    /// Function name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Option<serde_json::Value>,
}

/// The system message body.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemContent {
    /// `You are ChatGPT, a large language model trained by OpenAI.`
    pub model_identity: Option<String>,
    /// `2024-06`
    pub knowledge_cutoff: Option<String>,
    /// `YYYY-MM-DD`
    pub conversation_start_date: Option<String>,
    /// `Reasoning: …`
    pub reasoning_effort: Option<super::ReasoningEffort>,
    /// Channels listed in `# Valid channels: …`.
    pub valid_channels: Vec<String>,
    /// Appends ` Channel must be included for every message.`
    pub channel_required: bool,
}

impl Default for SystemContent {
    /// openai-harmony's `SystemContent::default()`.
    fn default() -> Self {
        Self {
            model_identity: Some(
                "You are ChatGPT, a large language model trained by OpenAI.".to_string(),
            ),
            knowledge_cutoff: Some("2024-06".to_string()),
            conversation_start_date: None,
            reasoning_effort: Some(super::ReasoningEffort::Medium),
            valid_channels: vec!["analysis".into(), "commentary".into(), "final".into()],
            channel_required: true,
        }
    }
}

/// The developer message body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeveloperContent {
    /// Rendered under `# Instructions`.
    pub instructions: Option<String>,
    /// The `functions` namespace, rendered under `# Tools` when non-empty.
    pub function_tools: Vec<ToolDescription>,
}

/// Body of a harmony message.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// System message body.
    System(SystemContent),
    /// Developer message body.
    Developer(DeveloperContent),
}

/// A harmony message: `<|start|>{header}<|message|>{content}<|end|>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Author role.
    pub role: Role,
    /// Author name (tools: `functions.NAME`).
    pub name: Option<String>,
    /// `to=…` recipient.
    pub recipient: Option<String>,
    /// `analysis` | `commentary` | `final`.
    pub channel: Option<String>,
    /// Content type, e.g. `<|constrain|>json`.
    pub content_type: Option<String>,
    /// The body.
    pub content: Content,
}

impl Message {
    /// A message of `role` with `content`.
    pub fn new(role: Role, content: Content) -> Self {
        Self {
            role,
            name: None,
            recipient: None,
            channel: None,
            content_type: None,
            content,
        }
    }

    /// A text message of `role`.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self::new(role, Content::Text(text.into()))
    }

    /// Sets the channel.
    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Sets the recipient.
    pub fn with_recipient(mut self, recipient: impl Into<String>) -> Self {
        self.recipient = Some(recipient.into());
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the author name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}
