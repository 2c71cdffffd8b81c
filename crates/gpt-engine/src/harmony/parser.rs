//! Incremental parser of harmony tokens, following openai-harmony 0.0.8's `StreamableParser`
//! in its strict and non-strict modes, plus a lenient mode for serving (never an error).
//!
//! The grammar is `(<|start|> HEADER <|message|> CONTENT (<|end|> | <|return|> | <|call|>))*`,
//! where a parser for a completion (after a prompt ending in `<|start|>assistant`) begins
//! inside the first header with the role already known.
//!
//! * [`ParseMode::Strict`] is openai-harmony's default: a token other than `<|start|>` between
//!   messages, a header that does not parse and the end of the stream inside a header are
//!   errors; a stop token inside a header is kept as header text (and so usually makes the
//!   header fail at `<|message|>`); special tokens inside content decode as their text; an id
//!   outside the vocabulary inside content swallows the rest of it, which ends in U+FFFD.
//! * [`ParseMode::NonStrict`] is openai-harmony's `strict=False`: additionally, a stop token
//!   that closes the *first* header (role known) before any `<|message|>` ends a message whose
//!   channel is read from the header and whose content is the header's other words.
//! * [`ParseMode::Lenient`] never fails and never puts the text of a special token into content:
//!   stray tokens between messages are dropped; `<|start|>` (or `<|channel|>`) inside a header
//!   or content begins a new message; other special tokens inside a message are dropped; a
//!   header that does not parse is read best-effort; a header that a stop token or the end of
//!   the stream closes becomes a message as in non-strict mode (for any role); unknown ids are
//!   dropped. Each such repair is recorded as a [`Recovery`].

use super::header::{parse_header, recover_header, salvage_header, Header};
use super::message::Role;
use super::{FormatTokens, HarmonyError, Result};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// How the parser treats input outside the harmony grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseMode {
    /// openai-harmony's default (`strict=True`).
    #[default]
    Strict,
    /// openai-harmony's `strict=False`.
    NonStrict,
    /// Never fails; what the model wrote degrades to what parsed (for serving).
    Lenient,
}

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage {
    /// Its header.
    pub header: Header,
    /// Its text.
    pub content: String,
    /// Tokens fed to the parser that belong to it: `<|start|>`, header, `<|message|>`,
    /// content and the closing stop token, each where present.
    pub token_count: usize,
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
    /// A header was read (normally at `<|message|>`).
    MessageStart(Header),
    /// New text of the current message.
    ContentDelta(String),
    /// A stop token, the end of the stream or (lenient) a new message closed a message.
    MessageEnd(ParsedMessage),
}

/// A repair made by a non-strict or lenient parser (for logs; the output never depends on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// A token between messages was dropped (a stray stop token, text after the end).
    SkippedToken {
        /// Position of the token in the input.
        index: usize,
        /// The token.
        id: u32,
    },
    /// An id outside the vocabulary was dropped.
    UnknownToken {
        /// Position of the token in the input.
        index: usize,
        /// The token.
        id: u32,
    },
    /// A special token inside a header or content was dropped.
    DroppedSpecial {
        /// Position of the token in the input.
        index: usize,
        /// The token.
        id: u32,
    },
    /// `<|start|>` or `<|channel|>` where it cannot be began a new message.
    NewMessage {
        /// Position of the token in the input.
        index: usize,
        /// The token.
        id: u32,
    },
    /// A header closed without `<|message|>`; its words became the content.
    HeaderWithoutMessage {
        /// Position of the token (or end of stream) that closed it.
        index: usize,
    },
    /// A header that does not parse was read best-effort.
    BadHeader {
        /// Position of its `<|message|>`.
        index: usize,
        /// Why the strict reading failed.
        reason: String,
    },
    /// An internal error was turned into a reset (see [`super::LenientParser`]).
    Reset {
        /// Position of the token.
        index: usize,
        /// The error.
        error: String,
    },
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
    endoftext: Option<u32>,
    mode: ParseMode,
    state: State,
    next_role: Option<Role>,
    decoder: StreamDecoder<'a>,
    messages: Vec<ParsedMessage>,
    last_stop: Option<u32>,
    pushed: usize,
    msg_tokens: usize,
    poisoned: bool,
    recoveries: Vec<Recovery>,
}

impl<'a> HarmonyParser<'a> {
    /// A strict parser for a completion whose prompt ended in `<|start|>assistant`:
    /// the first header is read without `<|start|>` and role.
    pub fn for_completion(tok: &'a Tokenizer) -> Result<Self> {
        Self::with_mode(tok, Some(Role::Assistant), ParseMode::Strict)
    }

    /// A strict parser that expects `<|start|>` first (a whole transcript).
    pub fn new(tok: &'a Tokenizer) -> Result<Self> {
        Self::with_mode(tok, None, ParseMode::Strict)
    }

    /// A parser in `mode`; with `role`, the input begins inside the first header, whose
    /// role is `role` (openai-harmony's `StreamableParser(encoding, role, strict)`).
    /// Fails only if the tokenizer lacks the harmony formatting tokens.
    pub fn with_mode(tok: &'a Tokenizer, role: Option<Role>, mode: ParseMode) -> Result<Self> {
        Ok(Self {
            tok,
            fmt: FormatTokens::from_tokenizer(tok)?,
            endoftext: tok.token_to_id("<|endoftext|>"),
            mode,
            state: match role {
                Some(_) => State::Header(Vec::new()),
                None => State::ExpectStart,
            },
            next_role: role,
            decoder: tok.stream_decoder(),
            messages: Vec::new(),
            last_stop: None,
            pushed: 0,
            msg_tokens: 0,
            poisoned: false,
            recoveries: Vec::new(),
        })
    }

    /// Feeds one id. Never an error in [`ParseMode::Lenient`].
    pub fn push(&mut self, id: u32) -> Result<Vec<HarmonyEvent>> {
        let index = self.pushed;
        self.pushed += 1;
        let mut events = Vec::new();
        if self.mode == ParseMode::Lenient && self.tok.token_bytes(id).is_err() {
            self.recoveries.push(Recovery::UnknownToken { index, id });
            return Ok(events);
        }
        let state = std::mem::replace(&mut self.state, State::ExpectStart);
        let next = match state {
            State::ExpectStart => self.on_between(id, index),
            State::Header(tokens) => self.on_header(tokens, id, index, &mut events),
            State::Content(header, text) => self.on_content(header, text, id, index, &mut events),
        };
        match next {
            Ok(state) => {
                self.state = state;
                Ok(events)
            }
            Err(e) => {
                // The state is ExpectStart: drop whatever the decoder held.
                self.decoder.flush();
                self.poisoned = false;
                self.next_role = None;
                Err(e)
            }
        }
    }

    /// End of stream: closes a message whose stop token was never generated.
    /// Strict and non-strict: an error inside a header (openai-harmony's `process_eos`).
    pub fn finish(&mut self) -> Result<Vec<HarmonyEvent>> {
        let mut events = Vec::new();
        match std::mem::replace(&mut self.state, State::ExpectStart) {
            State::ExpectStart => {}
            State::Header(tokens) if self.mode == ParseMode::Lenient => {
                self.salvage(tokens, self.pushed, &mut events);
            }
            State::Header(tokens) => {
                self.state = State::Header(tokens);
                return Err(HarmonyError::TruncatedHeader);
            }
            State::Content(header, text) => self.close(header, text, &mut events),
        }
        Ok(events)
    }

    fn lenient(&self) -> bool {
        self.mode == ParseMode::Lenient
    }

    fn is_stop(&self, id: u32) -> bool {
        self.fmt.ends_message(id) || (self.lenient() && Some(id) == self.endoftext)
    }

    fn on_between(&mut self, id: u32, index: usize) -> Result<State> {
        if id == self.fmt.start {
            self.msg_tokens = 1;
            return Ok(State::Header(Vec::new()));
        }
        if !self.lenient() {
            return Err(HarmonyError::UnexpectedToken {
                id,
                expected: "<|start|>",
            });
        }
        if id == self.fmt.channel {
            // `<|end|><|channel|>final<|message|>…`: the model left out `<|start|>assistant`.
            self.recoveries.push(Recovery::NewMessage { index, id });
            self.msg_tokens = 1;
            self.next_role = Some(Role::Assistant);
            return Ok(State::Header(vec![id]));
        }
        self.recoveries.push(Recovery::SkippedToken { index, id });
        Ok(State::ExpectStart)
    }

    fn on_header(
        &mut self,
        mut tokens: Vec<u32>,
        id: u32,
        index: usize,
        events: &mut Vec<HarmonyEvent>,
    ) -> Result<State> {
        self.msg_tokens += 1;
        if id == self.fmt.message {
            let role = self.next_role.take();
            let header = if self.lenient() {
                let text = self.tok.decode(&tokens).unwrap_or_default();
                parse_header(&text, role).unwrap_or_else(|e| {
                    self.recoveries.push(Recovery::BadHeader {
                        index,
                        reason: e.to_string(),
                    });
                    salvage_header(&text, role).0
                })
            } else {
                parse_header(&self.decode_header(&tokens)?, role)?
            };
            events.push(HarmonyEvent::MessageStart(header.clone()));
            return Ok(State::Content(header, String::new()));
        }
        let stop = self.is_stop(id);
        match self.mode {
            ParseMode::Strict => {}
            ParseMode::NonStrict if stop => {
                self.last_stop = Some(id);
                if let Some(role) = self.next_role.take() {
                    if !tokens.is_empty() {
                        let text = self.decode_header(&tokens)?;
                        let (header, content) = recover_header(&text, Some(role))?;
                        self.recoveries
                            .push(Recovery::HeaderWithoutMessage { index });
                        self.emit_whole(header, content, events);
                    }
                }
                self.msg_tokens = 0;
                return Ok(State::ExpectStart);
            }
            ParseMode::NonStrict => {}
            ParseMode::Lenient if stop => {
                self.last_stop = Some(id);
                self.salvage(tokens, index, events);
                return Ok(State::ExpectStart);
            }
            ParseMode::Lenient if id == self.fmt.start => {
                // A header restarted: what came before it is dropped.
                self.recoveries.push(Recovery::NewMessage { index, id });
                self.next_role = None;
                self.msg_tokens = 1;
                return Ok(State::Header(Vec::new()));
            }
            ParseMode::Lenient
                if self.tok.is_special(id)
                    && id != self.fmt.channel
                    && id != self.fmt.constrain =>
            {
                self.recoveries.push(Recovery::DroppedSpecial { index, id });
                return Ok(State::Header(tokens));
            }
            ParseMode::Lenient => {}
        }
        tokens.push(id);
        Ok(State::Header(tokens))
    }

    fn on_content(
        &mut self,
        header: Header,
        mut text: String,
        id: u32,
        index: usize,
        events: &mut Vec<HarmonyEvent>,
    ) -> Result<State> {
        if self.is_stop(id) {
            self.msg_tokens += 1;
            self.last_stop = Some(id);
            self.close(header, text, events);
            return Ok(State::ExpectStart);
        }
        if self.lenient() && self.tok.is_special(id) {
            if id == self.fmt.start || id == self.fmt.channel {
                let role = header.role;
                self.close(header, text, events);
                self.recoveries.push(Recovery::NewMessage { index, id });
                self.msg_tokens = 1;
                return Ok(if id == self.fmt.start {
                    self.next_role = None;
                    State::Header(Vec::new())
                } else {
                    self.next_role = Some(role);
                    State::Header(vec![id])
                });
            }
            self.msg_tokens += 1;
            self.recoveries.push(Recovery::DroppedSpecial { index, id });
            return Ok(State::Content(header, text));
        }
        self.msg_tokens += 1;
        if self.poisoned || self.tok.token_bytes(id).is_err() {
            // openai-harmony: an id outside the vocabulary swallows the rest of the body,
            // which ends in one U+FFFD.
            self.poisoned = true;
            return Ok(State::Content(header, text));
        }
        if let Some(delta) = self.decoder.push(id)? {
            text.push_str(&delta);
            events.push(HarmonyEvent::ContentDelta(delta));
        }
        Ok(State::Content(header, text))
    }

    /// openai-harmony decodes headers strictly: invalid UTF-8 is an error.
    fn decode_header(&self, tokens: &[u32]) -> Result<String> {
        let bytes = self.tok.decode_bytes(tokens)?;
        String::from_utf8(bytes).map_err(|e| HarmonyError::BadHeader {
            header: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            reason: "header is not valid UTF-8",
        })
    }

    /// Lenient: a header without `<|message|>` becomes a message of its words.
    fn salvage(&mut self, tokens: Vec<u32>, index: usize, events: &mut Vec<HarmonyEvent>) {
        let role = self.next_role.take();
        if !tokens.is_empty() {
            let text = self.tok.decode(&tokens).unwrap_or_default();
            let (header, content) = salvage_header(&text, role);
            self.recoveries
                .push(Recovery::HeaderWithoutMessage { index });
            self.emit_whole(header, content, events);
        }
        self.msg_tokens = 0;
    }

    fn emit_whole(&mut self, header: Header, content: String, events: &mut Vec<HarmonyEvent>) {
        events.push(HarmonyEvent::MessageStart(header.clone()));
        if !content.is_empty() {
            events.push(HarmonyEvent::ContentDelta(content.clone()));
        }
        self.finish_message(header, content, events);
    }

    fn close(&mut self, header: Header, mut text: String, events: &mut Vec<HarmonyEvent>) {
        let mut rest = self.decoder.flush().unwrap_or_default();
        if std::mem::take(&mut self.poisoned) {
            rest.push('\u{FFFD}');
        }
        if !rest.is_empty() {
            text.push_str(&rest);
            events.push(HarmonyEvent::ContentDelta(rest));
        }
        self.finish_message(header, text, events);
    }

    fn finish_message(&mut self, header: Header, content: String, events: &mut Vec<HarmonyEvent>) {
        let msg = ParsedMessage {
            header,
            content,
            token_count: self.msg_tokens,
        };
        self.msg_tokens = 0;
        events.push(HarmonyEvent::MessageEnd(msg.clone()));
        self.messages.push(msg);
    }

    /// Records a repair made outside the parser (by [`super::LenientParser`]).
    pub(crate) fn record(&mut self, recovery: Recovery) {
        self.recoveries.push(recovery);
    }

    /// Number of ids pushed so far.
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    /// The mode.
    pub fn mode(&self) -> ParseMode {
        self.mode
    }

    /// Messages completed so far.
    pub fn messages(&self) -> &[ParsedMessage] {
        &self.messages
    }

    /// The messages, consuming the parser.
    pub fn into_messages(self) -> Vec<ParsedMessage> {
        self.messages
    }

    /// The header of the message being generated, if its `<|message|>` was seen.
    pub fn current_header(&self) -> Option<&Header> {
        match &self.state {
            State::Content(h, _) => Some(h),
            _ => None,
        }
    }

    /// Text of the message being generated so far (`None` outside a message body).
    pub fn current_content(&self) -> Option<&str> {
        match &self.state {
            State::Content(_, t) => Some(t),
            _ => None,
        }
    }

    /// Tokens of the unfinished message so far (header included; 0 between messages).
    pub fn current_token_count(&self) -> usize {
        match self.state {
            State::ExpectStart => 0,
            _ => self.msg_tokens,
        }
    }

    /// The last message-ending token seen (`<|end|>`, `<|return|>` or `<|call|>`).
    pub fn last_stop(&self) -> Option<u32> {
        self.last_stop
    }

    /// The repairs made so far (empty in strict mode).
    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }
}
