//! Incremental parser of generated harmony tokens (after a prompt that ends
//! in `<|start|>assistant`), following openai-harmony's `StreamableParser`
//! in strict mode.

use super::message::Role;
use super::{FormatTokens, HarmonyError, Result};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// A parsed message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Author role.
    pub role: Role,
    /// Author name (tools: `functions.NAME`).
    pub name: Option<String>,
    /// `to=` recipient, e.g. `functions.get_weather`.
    pub recipient: Option<String>,
    /// `analysis` | `commentary` | `final`.
    pub channel: Option<String>,
    /// Content type, e.g. `<|constrain|>json`.
    pub content_type: Option<String>,
}

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage {
    /// Its header.
    pub header: Header,
    /// Its text.
    pub content: String,
}

/// A function call extracted from a message to `functions.NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToolCall {
    /// Function name without the namespace.
    pub name: String,
    /// Arguments as generated (JSON text when the content type is json).
    pub arguments: String,
}

impl ParsedMessage {
    /// The function call this message makes, if it is an assistant message to `functions.*`.
    pub fn tool_call(&self) -> Option<ParsedToolCall> {
        if self.header.role != Role::Assistant {
            return None;
        }
        let name = self
            .header
            .recipient
            .as_deref()?
            .strip_prefix("functions.")?;
        Some(ParsedToolCall {
            name: name.to_string(),
            arguments: self.content.clone(),
        })
    }
}

/// What one token changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarmonyEvent {
    /// `<|message|>` closed a header.
    MessageStart(Header),
    /// New complete text of the current message.
    ContentDelta(String),
    /// `<|end|>`, `<|return|>`, `<|call|>` or end of stream closed a message.
    MessageEnd(ParsedMessage),
}

enum State {
    ExpectStart,
    Header(Vec<u32>),
    Content(Header, String),
}

/// Streaming harmony parser; feed it sampled ids with [`HarmonyParser::push`].
pub struct HarmonyParser<'a> {
    tok: &'a Tokenizer,
    fmt: FormatTokens,
    state: State,
    next_role: Option<Role>,
    decoder: StreamDecoder<'a>,
    messages: Vec<ParsedMessage>,
    last_stop: Option<u32>,
}

impl<'a> HarmonyParser<'a> {
    /// A parser for a completion whose prompt ended in `<|start|>assistant`:
    /// the first header is read without `<|start|>` and role.
    pub fn for_completion(tok: &'a Tokenizer) -> Result<Self> {
        let mut p = Self::new(tok)?;
        p.state = State::Header(Vec::new());
        p.next_role = Some(Role::Assistant);
        Ok(p)
    }

    /// A parser that expects `<|start|>` first.
    pub fn new(tok: &'a Tokenizer) -> Result<Self> {
        Ok(Self {
            tok,
            fmt: FormatTokens::from_tokenizer(tok)?,
            state: State::ExpectStart,
            next_role: None,
            decoder: tok.stream_decoder(),
            messages: Vec::new(),
            last_stop: None,
        })
    }

    /// Feeds one id.
    pub fn push(&mut self, id: u32) -> Result<Vec<HarmonyEvent>> {
        let mut events = Vec::new();
        match &mut self.state {
            State::ExpectStart => {
                if id != self.fmt.start {
                    return Err(HarmonyError::UnexpectedToken {
                        id,
                        expected: "<|start|>",
                    });
                }
                self.state = State::Header(Vec::new());
            }
            State::Header(tokens) => {
                if id == self.fmt.message {
                    let text = self.tok.decode(tokens)?;
                    let header = parse_header(&text, self.next_role.take())?;
                    events.push(HarmonyEvent::MessageStart(header.clone()));
                    self.state = State::Content(header, String::new());
                } else if self.fmt.ends_message(id) {
                    return Err(HarmonyError::UnexpectedToken {
                        id,
                        expected: "<|message|> to close the header",
                    });
                } else {
                    tokens.push(id);
                }
            }
            State::Content(_, text) => {
                if self.fmt.ends_message(id) {
                    self.last_stop = Some(id);
                    self.close(&mut events);
                } else if let Some(delta) = self.decoder.push(id)? {
                    text.push_str(&delta);
                    events.push(HarmonyEvent::ContentDelta(delta));
                }
            }
        }
        Ok(events)
    }

    /// End of stream: closes a message whose end token was never generated.
    pub fn finish(&mut self) -> Result<Vec<HarmonyEvent>> {
        let mut events = Vec::new();
        match &self.state {
            State::ExpectStart => {}
            State::Header(_) => return Err(HarmonyError::TruncatedHeader),
            State::Content(..) => self.close(&mut events),
        }
        Ok(events)
    }

    fn close(&mut self, events: &mut Vec<HarmonyEvent>) {
        let state = std::mem::replace(&mut self.state, State::ExpectStart);
        if let State::Content(header, mut text) = state {
            if let Some(rest) = self.decoder.flush() {
                text.push_str(&rest);
                events.push(HarmonyEvent::ContentDelta(rest));
            }
            let msg = ParsedMessage {
                header,
                content: text,
            };
            events.push(HarmonyEvent::MessageEnd(msg.clone()));
            self.messages.push(msg);
        }
    }

    /// Messages completed so far.
    pub fn messages(&self) -> &[ParsedMessage] {
        &self.messages
    }

    /// The header of the message being generated, if its `<|message|>` was seen.
    pub fn current_header(&self) -> Option<&Header> {
        match &self.state {
            State::Content(h, _) => Some(h),
            _ => None,
        }
    }

    /// Text of the message being generated so far.
    pub fn current_content(&self) -> Option<&str> {
        match &self.state {
            State::Content(_, t) => Some(t),
            _ => None,
        }
    }

    /// The last message-ending token seen (`<|end|>`, `<|return|>` or `<|call|>`).
    pub fn last_stop(&self) -> Option<u32> {
        self.last_stop
    }
}

/// Parses a decoded header such as `assistant<|channel|>commentary to=functions.f <|constrain|>json`.
/// `role` is the already known role (the first completion message).
pub fn parse_header(text: &str, role: Option<Role>) -> Result<Header> {
    let bad = |reason: &'static str| HarmonyError::BadHeader {
        header: text.to_string(),
        reason,
    };
    let mut s = text.to_string();
    let mut channel = None;
    if let Some(idx) = s.find(super::CHANNEL) {
        let after = &s[idx + super::CHANNEL.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '<')
            .unwrap_or(after.len());
        if end == 0 {
            return Err(bad("channel marker without a channel name"));
        }
        channel = Some(after[..end].to_string());
        s = format!("{}{}", &s[..idx], &after[end..]);
    }
    let mut s = s.trim().to_string();
    if s.contains(super::CONSTRAIN) {
        s = s
            .replace(super::CONSTRAIN, &format!(" {}", super::CONSTRAIN))
            .trim()
            .to_string();
    }
    let mut parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let mut name = None;
    let role = match role {
        Some(r) => r,
        None => {
            let first = *parts.first().ok_or_else(|| bad("no role"))?;
            match Role::parse(first) {
                Some(r) => r,
                None if parts.len() > 1 || first.starts_with("to=") => {
                    parts.remove(0);
                    name = Some(first.to_string());
                    Role::Tool
                }
                None => return Err(bad("unknown role")),
            }
        }
    };
    if parts.first() == Some(&role.as_str()) {
        parts.remove(0);
    }
    let mut recipient = None;
    let mut content_type = None;
    let n = parts.len();
    if let Some(last) = parts.pop() {
        if let Some(r) = last.strip_prefix("to=") {
            recipient = Some(r.to_string());
        } else if n == 1 {
            recipient = Some(last.to_string());
        } else {
            content_type = Some(last.to_string());
            if let Some(r) = parts.pop() {
                recipient = Some(r.strip_prefix("to=").unwrap_or(r).to_string());
            }
        }
    }
    if !parts.is_empty() {
        return Err(bad("unexpected words in the header"));
    }
    Ok(Header {
        role,
        name,
        recipient,
        channel,
        content_type,
    })
}
