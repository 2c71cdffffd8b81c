//! OpenAI chat-completions request → harmony conversation.
//!
//! Mapping (the same one `tests/fixtures/make_harmony_fixtures.py` feeds to
//! openai-harmony):
//! 1. a system message: default identity and cutoff, `Current date`, the
//!    request's reasoning effort (default medium);
//! 2. a developer message when there are instructions or tools: the texts of
//!    all `system`/`developer` chat messages joined by a blank line under
//!    `# Instructions`, and the function tools;
//! 3. `user` → user text;
//! 4. `assistant` → its `reasoning_content` on `analysis` if the message comes
//!    after the last user message (the current turn), then either its tool
//!    calls (optional text preamble on `commentary`, then one
//!    `commentary to=functions.NAME <|constrain|>json` message per call) or
//!    its content on `final`;
//! 5. `tool` → `functions.NAME to=assistant` on `commentary`, NAME from
//!    `name` or from the tool call with the same id.

use super::message::{Content, DeveloperContent, Message, Role, SystemContent, ToolDescription};
use super::request::{ChatMessage, ChatRequest, ChatRole, MessageContent};
use super::{HarmonyError, Result, CONSTRAIN};

/// Inputs of the system message that are not part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptOptions {
    /// `Current date: …`, `YYYY-MM-DD`.
    pub current_date: String,
    /// `Knowledge cutoff: …` (harmony default `2024-06`).
    pub knowledge_cutoff: String,
    /// First line of the system message.
    pub model_identity: String,
}

impl PromptOptions {
    /// Harmony defaults with the given date.
    pub fn with_date(current_date: impl Into<String>) -> Self {
        Self {
            current_date: current_date.into(),
            knowledge_cutoff: "2024-06".to_string(),
            model_identity: "You are ChatGPT, a large language model trained by OpenAI."
                .to_string(),
        }
    }
}

/// Text of a chat message's content (`None` when absent).
fn content_text(m: &ChatMessage, index: usize) -> Result<Option<String>> {
    match &m.content {
        None => Ok(None),
        Some(MessageContent::Text(t)) => Ok(Some(t.clone())),
        Some(MessageContent::Parts(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => s.push_str(t),
                    _ => {
                        return Err(HarmonyError::UnsupportedContent {
                            index,
                            kind: p.kind.clone(),
                        })
                    }
                }
            }
            Ok(Some(s))
        }
    }
}

/// Converts `req` into the harmony conversation to render.
pub fn chat_to_harmony(req: &ChatRequest, opts: &PromptOptions) -> Result<Vec<Message>> {
    let system = SystemContent {
        model_identity: Some(opts.model_identity.clone()),
        knowledge_cutoff: Some(opts.knowledge_cutoff.clone()),
        conversation_start_date: Some(opts.current_date.clone()),
        reasoning_effort: Some(req.reasoning_effort.unwrap_or_default()),
        ..SystemContent::default()
    };
    let mut out = vec![Message::new(Role::System, Content::System(system))];

    let mut instructions: Vec<String> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        if matches!(m.role, ChatRole::System | ChatRole::Developer) {
            if let Some(t) = content_text(m, i)? {
                instructions.push(t);
            }
        }
    }
    let mut function_tools = Vec::with_capacity(req.tools.len());
    for (i, t) in req.tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(HarmonyError::UnsupportedTool {
                index: i,
                kind: t.kind.clone(),
            });
        }
        function_tools.push(ToolDescription {
            name: t.function.name.clone(),
            description: t.function.description.clone().unwrap_or_default(),
            parameters: t.function.parameters.clone(),
        });
    }
    if !instructions.is_empty() || !function_tools.is_empty() {
        let dev = DeveloperContent {
            instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
            function_tools,
        };
        out.push(Message::new(Role::Developer, Content::Developer(dev)));
    }

    let last_user = req.messages.iter().rposition(|m| m.role == ChatRole::User);
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            ChatRole::System | ChatRole::Developer => {}
            ChatRole::User => {
                let text = content_text(m, i)?.unwrap_or_default();
                out.push(Message::text(Role::User, text));
            }
            ChatRole::Assistant => {
                let current_turn = last_user.is_none_or(|u| i > u);
                if let (true, Some(r)) = (current_turn, &m.reasoning_content) {
                    out.push(Message::text(Role::Assistant, r.clone()).with_channel("analysis"));
                }
                let text = content_text(m, i)?;
                if m.tool_calls.is_empty() {
                    if let Some(t) = text {
                        out.push(Message::text(Role::Assistant, t).with_channel("final"));
                    }
                } else {
                    if let Some(t) = text.filter(|t| !t.is_empty()) {
                        out.push(Message::text(Role::Assistant, t).with_channel("commentary"));
                    }
                    for c in &m.tool_calls {
                        out.push(
                            Message::text(Role::Assistant, c.function.arguments.clone())
                                .with_channel("commentary")
                                .with_recipient(format!("functions.{}", c.function.name))
                                .with_content_type(format!("{CONSTRAIN}json")),
                        );
                    }
                }
            }
            ChatRole::Tool => {
                let name = tool_name(req, i)?;
                let text = content_text(m, i)?.unwrap_or_default();
                out.push(
                    Message::text(Role::Tool, text)
                        .with_name(format!("functions.{name}"))
                        .with_recipient("assistant")
                        .with_channel("commentary"),
                );
            }
        }
    }
    Ok(out)
}

/// Function name answered by the tool message at `index`.
fn tool_name(req: &ChatRequest, index: usize) -> Result<String> {
    let m = &req.messages[index];
    if let Some(n) = &m.name {
        return Ok(n.strip_prefix("functions.").unwrap_or(n).to_string());
    }
    let id = m
        .tool_call_id
        .as_deref()
        .ok_or(HarmonyError::UnknownToolCall {
            index,
            id: String::new(),
        })?;
    req.messages[..index]
        .iter()
        .rev()
        .flat_map(|p| p.tool_calls.iter())
        .find(|c| c.id.as_deref() == Some(id))
        .map(|c| c.function.name.clone())
        .ok_or_else(|| HarmonyError::UnknownToolCall {
            index,
            id: id.to_string(),
        })
}
