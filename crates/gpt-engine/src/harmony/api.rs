//! harmony → OpenAI chat-completions (serving-design.md §5), for the server and the CLI.
//!
//! Where an assistant message's text goes ([`route`]):
//!
//! * a recipient `functions.NAME` (any channel; llama.cpp also reads
//!   `<|channel|>analysis to=functions.f` as a call) → a tool call `NAME` with the text as its
//!   arguments;
//! * any other recipient (built-in tools: `browser.search`, `python`) → nowhere;
//! * channel `analysis` → `reasoning_content`;
//! * every other channel (`final`, a `commentary` preamble, none) → `content`.
//!
//! Messages of other roles are not part of an answer and go nowhere. Within one field the
//! non-empty texts of successive messages are joined by `"\n"` (as vLLM joins reasoning).
//!
//! The final view ([`ApiCompletion::from_parser`]) and the streamed view ([`DeltaMapper`],
//! [`ApiStream`]) agree exactly: concatenating the [`Delta`]s gives the final view.
//!
//! Reasoning tokens ([`ApiCompletion::reasoning_tokens`]) are the completion tokens of the
//! messages routed to `reasoning_content`: each one's `<|start|>`, header, `<|message|>`,
//! text and closing `<|end|>` (each where present), so that `completion_tokens -
//! reasoning_tokens` is what produced the visible answer. For comparison: vLLM's harmony
//! context (Responses API) counts each token after which its parser is inside an
//! `analysis` *or* `commentary` body, i.e. `<|message|>` plus the text, but not the header
//! words before it nor the closing token; llama.cpp's server reports no
//! `completion_tokens_details.reasoning_tokens` (ggml-org/llama.cpp#27971).

use super::header::Header;
use super::lenient::LenientParser;
use super::message::Role;
use super::parser::{HarmonyEvent, HarmonyParser, ParsedMessage, ParsedToolCall};
use super::Result;
use crate::tokenizer::Tokenizer;

/// Where a message's text goes in the API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `reasoning_content` (and `reasoning`).
    Reasoning,
    /// `content`.
    Content,
    /// A tool call of this function name.
    ToolCall(String),
    /// Not part of the answer.
    Hidden,
}

/// The route of a message with `header` (see the module docs).
pub fn route(header: &Header) -> Route {
    if header.role != Role::Assistant {
        return Route::Hidden;
    }
    if let Some(r) = &header.recipient {
        return match r.strip_prefix("functions.") {
            Some(name) if !name.is_empty() => Route::ToolCall(name.to_string()),
            _ => Route::Hidden,
        };
    }
    match header.channel.as_deref() {
        Some("analysis") => Route::Reasoning,
        _ => Route::Content,
    }
}

/// `finish_reason` of a chat completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// The model called a function.
    ToolCalls,
    /// Generation was cut at the token limit.
    Length,
}

impl FinishReason {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::ToolCalls => "tool_calls",
            Self::Length => "length",
        }
    }
}

/// The answer as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiCompletion {
    /// Final-channel text and preambles.
    pub content: String,
    /// Analysis-channel text.
    pub reasoning_content: String,
    /// `functions.*` calls, in order (index = position).
    pub tool_calls: Vec<ParsedToolCall>,
    /// Completion tokens of the reasoning messages (see the module docs).
    pub reasoning_tokens: usize,
}

fn append(field: &mut String, text: &str) {
    if !text.is_empty() {
        if !field.is_empty() {
            field.push('\n');
        }
        field.push_str(text);
    }
}

impl ApiCompletion {
    /// The answer of `messages`, plus an unfinished message (`header`, text so far, tokens
    /// so far) when the stream has not ended.
    pub fn from_messages(
        messages: &[ParsedMessage],
        current: Option<(&Header, &str, usize)>,
    ) -> Self {
        let mut out = Self::default();
        let all = messages
            .iter()
            .map(|m| (&m.header, m.content.as_str(), m.token_count))
            .chain(current);
        for (header, text, tokens) in all {
            match route(header) {
                Route::Reasoning => {
                    append(&mut out.reasoning_content, text);
                    out.reasoning_tokens += tokens;
                }
                Route::Content => append(&mut out.content, text),
                Route::ToolCall(name) => out.tool_calls.push(ParsedToolCall {
                    name,
                    arguments: text.to_string(),
                }),
                Route::Hidden => {}
            }
        }
        out
    }

    /// The answer of everything `parser` has read, its unfinished message included.
    /// Tokens of an unfinished header are not counted until the header is read.
    pub fn from_parser(parser: &HarmonyParser<'_>) -> Self {
        let current = match (parser.current_header(), parser.current_content()) {
            (Some(h), Some(t)) => Some((h, t, parser.current_token_count())),
            _ => None,
        };
        Self::from_messages(parser.messages(), current)
    }

    /// `tool_calls` when a function was called, else `stop`; `length` when the generation
    /// was cut at the token limit (`hit_limit`).
    pub fn finish_reason(&self, hit_limit: bool) -> FinishReason {
        if hit_limit {
            FinishReason::Length
        } else if self.tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        }
    }
}

/// One streamed piece of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// More `reasoning_content`.
    Reasoning(String),
    /// More `content`.
    Content(String),
    /// Tool call `index` begins (sent before any of its arguments).
    ToolCallStart {
        /// Position among this completion's tool calls.
        index: usize,
        /// Function name.
        name: String,
    },
    /// More arguments of tool call `index`.
    ToolCallArgs {
        /// Position among this completion's tool calls.
        index: usize,
        /// The piece.
        text: String,
    },
}

/// Turns parser events into [`Delta`]s; the deltas so far, joined, are [`DeltaMapper::joined`].
#[derive(Debug, Default)]
pub struct DeltaMapper {
    joined: ApiCompletion,
    current: Option<Route>,
    wrote: bool,
}

impl DeltaMapper {
    /// Nothing mapped yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The deltas of `event`, appended to `out`.
    pub fn map(&mut self, event: &HarmonyEvent, out: &mut Vec<Delta>) {
        match event {
            HarmonyEvent::MessageStart(h) => {
                let r = route(h);
                if let Route::ToolCall(name) = &r {
                    out.push(Delta::ToolCallStart {
                        index: self.joined.tool_calls.len(),
                        name: name.clone(),
                    });
                    self.joined.tool_calls.push(ParsedToolCall {
                        name: name.clone(),
                        arguments: String::new(),
                    });
                }
                self.current = Some(r);
                self.wrote = false;
            }
            HarmonyEvent::ContentDelta(d) if !d.is_empty() => {
                let first = !self.wrote;
                self.wrote = true;
                let piece = |field: &String| {
                    if first && !field.is_empty() {
                        format!("\n{d}")
                    } else {
                        d.clone()
                    }
                };
                match &self.current {
                    Some(Route::Reasoning) => {
                        let p = piece(&self.joined.reasoning_content);
                        self.joined.reasoning_content.push_str(&p);
                        out.push(Delta::Reasoning(p));
                    }
                    Some(Route::Content) => {
                        let p = piece(&self.joined.content);
                        self.joined.content.push_str(&p);
                        out.push(Delta::Content(p));
                    }
                    Some(Route::ToolCall(_)) => {
                        let index = self.joined.tool_calls.len().saturating_sub(1);
                        if let Some(call) = self.joined.tool_calls.last_mut() {
                            call.arguments.push_str(d);
                        }
                        out.push(Delta::ToolCallArgs {
                            index,
                            text: d.clone(),
                        });
                    }
                    Some(Route::Hidden) | None => {}
                }
            }
            HarmonyEvent::ContentDelta(_) => {}
            HarmonyEvent::MessageEnd(m) => {
                if self.current == Some(Route::Reasoning) {
                    self.joined.reasoning_tokens += m.token_count;
                }
                self.current = None;
            }
        }
    }

    /// The deltas of `events`.
    pub fn map_all(&mut self, events: &[HarmonyEvent]) -> Vec<Delta> {
        let mut out = Vec::new();
        for e in events {
            self.map(e, &mut out);
        }
        out
    }

    /// Every delta so far, joined per field; `reasoning_tokens` counts finished messages.
    pub fn joined(&self) -> &ApiCompletion {
        &self.joined
    }

    /// The route of the message being streamed, once its header was read.
    pub fn current_route(&self) -> Option<&Route> {
        self.current.as_ref()
    }
}

/// The streamed answer of one completion: a [`LenientParser`] and a [`DeltaMapper`];
/// nothing the model writes makes it fail.
pub struct ApiStream<'a> {
    parser: LenientParser<'a>,
    mapper: DeltaMapper,
}

impl<'a> ApiStream<'a> {
    /// For a completion whose prompt ended in `<|start|>assistant`.
    /// Fails only if the tokenizer lacks the harmony formatting tokens.
    pub fn for_completion(tok: &'a Tokenizer) -> Result<Self> {
        Ok(Self {
            parser: LenientParser::for_completion(tok)?,
            mapper: DeltaMapper::new(),
        })
    }

    /// Feeds one sampled id; returns what to send.
    pub fn push(&mut self, id: u32) -> Vec<Delta> {
        let events = self.parser.push(id);
        self.mapper.map_all(&events)
    }

    /// End of generation; returns what is left to send.
    pub fn finish(&mut self) -> Vec<Delta> {
        let events = self.parser.finish();
        self.mapper.map_all(&events)
    }

    /// Everything sent so far, joined, with the reasoning tokens of the unfinished message.
    pub fn completion(&self) -> ApiCompletion {
        let mut c = self.mapper.joined().clone();
        if self.mapper.current_route() == Some(&Route::Reasoning) {
            c.reasoning_tokens += self.parser.parser().current_token_count();
        }
        c
    }

    /// The parser (messages, repairs).
    pub fn parser(&self) -> &HarmonyParser<'a> {
        self.parser.parser()
    }
}

/// The API answer of a whole completion (the ids after a prompt's `<|start|>assistant`),
/// parsed leniently. Fails only if the tokenizer lacks the harmony formatting tokens.
pub fn parse_completion(tok: &Tokenizer, ids: &[u32]) -> Result<ApiCompletion> {
    let mut p = LenientParser::for_completion(tok)?;
    for &id in ids {
        p.push(id);
    }
    p.finish();
    Ok(ApiCompletion::from_parser(p.parser()))
}
