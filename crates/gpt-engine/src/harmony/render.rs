//! Harmony messages → prompt token ids, the way openai-harmony 0.0.8's
//! `render_conversation_for_completion(…, Role::Assistant, None)` does it.
//!
//! Text segments are tokenized separately, exactly where harmony splits them
//! (role word, ` to=…`, channel name, content type, body), so token
//! boundaries match too.

use super::message::{Content, DeveloperContent, Message, Role, SystemContent, ToolDescription};
use super::schema::to_typescript;
use super::{FormatTokens, HarmonyError, Result};
use crate::tokenizer::Tokenizer;

/// Renders messages with one tokenizer.
pub struct Renderer<'a> {
    tok: &'a Tokenizer,
    fmt: FormatTokens,
}

impl<'a> Renderer<'a> {
    /// A renderer over `tok`, which must contain harmony's formatting tokens.
    pub fn new(tok: &'a Tokenizer) -> Result<Self> {
        Ok(Self {
            tok,
            fmt: FormatTokens::from_tokenizer(tok)?,
        })
    }

    fn text(&self, s: &str, out: &mut Vec<u32>) -> Result<()> {
        self.tok.encode_ordinary_into(s, out)?;
        Ok(())
    }

    /// Renders a whole conversation followed by `<|start|>{next_role}`.
    pub fn render_for_completion(&self, messages: &[Message], next_role: Role) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.render_conversation_into(messages, &mut out)?;
        out.push(self.fmt.start);
        self.text(next_role.as_str(), &mut out)?;
        Ok(out)
    }

    /// Renders a whole conversation (no analysis dropping, as with `config = None`).
    pub fn render_conversation_into(&self, messages: &[Message], out: &mut Vec<u32>) -> Result<()> {
        let has_function_tools = messages
            .iter()
            .any(|m| matches!(&m.content, Content::Developer(d) if !d.function_tools.is_empty()));
        for m in messages {
            self.render_message_into(m, has_function_tools, out)?;
        }
        Ok(())
    }

    /// Renders one message; `has_function_tools` adds the commentary-channel
    /// line to a system message.
    pub fn render_message_into(
        &self,
        m: &Message,
        has_function_tools: bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.push(self.fmt.start);
        if m.role == Role::Tool {
            let name = m.name.as_deref().ok_or(HarmonyError::ToolWithoutName)?;
            self.text(name, out)?;
        } else {
            self.text(m.role.as_str(), out)?;
            if let Some(name) = &m.name {
                self.text(&format!(":{name}"), out)?;
            }
        }
        if let Some(r) = m.recipient.as_deref().filter(|r| *r != "all") {
            self.text(&format!(" to={r}"), out)?;
        }
        if let Some(ch) = &m.channel {
            out.push(self.fmt.channel);
            self.text(ch, out)?;
        }
        if let Some(ct) = &m.content_type {
            match ct.strip_prefix(super::CONSTRAIN) {
                Some(rest) => {
                    self.text(" ", out)?;
                    out.push(self.fmt.constrain);
                    if !rest.is_empty() {
                        self.text(rest, out)?;
                    }
                }
                None => self.text(&format!(" {ct}"), out)?,
            }
        }
        out.push(self.fmt.message);
        match &m.content {
            Content::Text(t) => self.text(t, out)?,
            Content::System(s) => {
                if m.role != Role::System {
                    return Err(HarmonyError::MisplacedContent {
                        content: "system",
                        role: m.role.as_str(),
                    });
                }
                self.text(&system_text(s, has_function_tools), out)?;
            }
            Content::Developer(d) => {
                if m.role != Role::Developer {
                    return Err(HarmonyError::MisplacedContent {
                        content: "developer",
                        role: m.role.as_str(),
                    });
                }
                self.text(&developer_text(d), out)?;
            }
        }
        if m.role == Role::Assistant && m.recipient.is_some() {
            out.push(self.fmt.call);
        } else {
            out.push(self.fmt.end);
        }
        Ok(())
    }
}

/// Body of the system message.
pub fn system_text(s: &SystemContent, has_function_tools: bool) -> String {
    let mut sections: Vec<String> = Vec::new();
    let mut top: Vec<String> = Vec::new();
    if let Some(id) = &s.model_identity {
        top.push(id.clone());
    }
    if let Some(k) = &s.knowledge_cutoff {
        top.push(format!("Knowledge cutoff: {k}"));
    }
    if let Some(d) = &s.conversation_start_date {
        top.push(format!("Current date: {d}"));
    }
    if !top.is_empty() {
        sections.push(top.join("\n"));
    }
    if let Some(e) = s.reasoning_effort {
        sections.push(format!("Reasoning: {}", e.as_str()));
    }
    if !s.valid_channels.is_empty() {
        let mut ch = format!("# Valid channels: {}.", s.valid_channels.join(", "));
        if s.channel_required {
            ch.push_str(" Channel must be included for every message.");
        }
        if has_function_tools {
            ch.push_str("\nCalls to these tools must go to the commentary channel: 'functions'.");
        }
        sections.push(ch);
    }
    sections.join("\n\n")
}

/// Body of the developer message.
pub fn developer_text(d: &DeveloperContent) -> String {
    let mut sections: Vec<String> = Vec::new();
    if let Some(i) = &d.instructions {
        sections.push("# Instructions".to_string());
        sections.push(i.clone());
    }
    if !d.function_tools.is_empty() {
        sections.push(format!(
            "# Tools\n\n{}",
            functions_namespace(&d.function_tools)
        ));
    }
    sections.join("\n\n")
}

/// The `## functions` section with its `namespace functions { … }` block.
fn functions_namespace(tools: &[ToolDescription]) -> String {
    let mut lines: Vec<String> = vec![
        "## functions\n".to_string(),
        "namespace functions {\n".to_string(),
    ];
    for t in tools {
        for line in t.description.lines() {
            lines.push(format!("// {line}"));
        }
        match &t.parameters {
            Some(p) => lines.push(format!(
                "type {} = (_: {}) => any;\n",
                t.name,
                to_typescript(p, "")
            )),
            None => lines.push(format!("type {} = () => any;\n", t.name)),
        }
    }
    lines.push("} // namespace functions".to_string());
    lines.join("\n")
}
