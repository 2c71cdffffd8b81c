//! The harmony chat format of gpt-oss (spec §8).
//!
//! * [`render_chat_prompt`]: an OpenAI chat-completions request → prompt ids,
//!   identical to openai-harmony 0.0.8's
//!   `render_conversation_for_completion(conversation, Role::Assistant, None)`
//!   for the conversation [`chat_to_harmony`] builds.
//! * [`HarmonyParser`]: generated ids → messages (channel, recipient,
//!   content type, text) and tool calls, incrementally; strict and non-strict as
//!   openai-harmony's `StreamableParser`, or lenient ([`LenientParser`], never an error).
//! * [`api`]: messages → the OpenAI answer (`content`, `reasoning_content`,
//!   `tool_calls`), whole or as streamed deltas.
//! * [`STOP_TOKENS`]: sample until `<|return|>` or `<|call|>`; `<|end|>` only
//!   separates messages inside one completion.

pub mod api;
mod convert;
mod header;
mod lenient;
mod message;
mod parser;
mod render;
mod request;
mod schema;

pub use convert::{chat_to_harmony, PromptOptions};
pub use header::{parse_header, Header};
pub use lenient::LenientParser;
pub use message::{Content, DeveloperContent, Message, Role, SystemContent, ToolDescription};
pub use parser::{HarmonyEvent, HarmonyParser, ParseMode, ParsedMessage, ParsedToolCall, Recovery};
pub use render::{developer_text, system_text, Renderer};
pub use request::{
    ChatMessage, ChatRequest, ChatRole, ContentPart, FunctionCall, FunctionDef, MessageContent,
    ReasoningEffort, Tool, ToolCall,
};
pub use schema::to_typescript;

use crate::tokenizer::{Tokenizer, TokenizerError};

/// `<|return|>`: end of the final answer; stop token.
pub const RETURN: u32 = 200_002;
/// `<|constrain|>` id.
pub const CONSTRAIN_ID: u32 = 200_003;
/// `<|channel|>` id.
pub const CHANNEL_ID: u32 = 200_005;
/// `<|start|>` id.
pub const START: u32 = 200_006;
/// `<|end|>`: end of a message, NOT a stop token.
pub const END: u32 = 200_007;
/// `<|message|>` id.
pub const MESSAGE: u32 = 200_008;
/// `<|call|>`: end of a tool call; stop token.
pub const CALL: u32 = 200_012;
/// Sampling stops at these (o200k_harmony ids), never at `<|end|>`.
pub const STOP_TOKENS: [u32; 2] = [RETURN, CALL];

/// Text of the constrain marker, the prefix of `<|constrain|>json` content types.
pub const CONSTRAIN: &str = "<|constrain|>";
/// Text of the channel marker.
pub const CHANNEL: &str = "<|channel|>";

/// Errors of rendering and parsing.
#[derive(Debug, thiserror::Error)]
pub enum HarmonyError {
    /// Tokenizer failure.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The tokenizer lacks a harmony formatting token.
    #[error("harmony: tokenizer has no single token for {0}")]
    MissingFormatToken(&'static str),
    /// A tool message without an author name.
    #[error("harmony: tool messages need a name (functions.NAME)")]
    ToolWithoutName,
    /// System/developer content in a message of another role.
    #[error("harmony: {content} content in a {role} message")]
    MisplacedContent {
        /// `system` or `developer`.
        content: &'static str,
        /// The message role.
        role: &'static str,
    },
    /// A content part that is not text.
    #[error(
        "chat request: message {index} has a content part of type {kind:?}; only text is supported"
    )]
    UnsupportedContent {
        /// Message index.
        index: usize,
        /// Part type.
        kind: String,
    },
    /// A tool that is not a function.
    #[error("chat request: tool {index} has type {kind:?}; only function tools are supported")]
    UnsupportedTool {
        /// Tool index.
        index: usize,
        /// Tool type.
        kind: String,
    },
    /// A tool message whose call cannot be found.
    #[error(
        "chat request: tool message {index} answers unknown tool_call_id {id:?} and has no name"
    )]
    UnknownToolCall {
        /// Message index.
        index: usize,
        /// The id.
        id: String,
    },
    /// The parser got a token that the grammar does not allow here.
    #[error("harmony parser: unexpected token {id}, expected {expected}")]
    UnexpectedToken {
        /// The token.
        id: u32,
        /// What was expected.
        expected: &'static str,
    },
    /// A header that cannot be parsed.
    #[error("harmony parser: bad header {header:?}: {reason}")]
    BadHeader {
        /// Decoded header text.
        header: String,
        /// Why.
        reason: &'static str,
    },
    /// The stream ended inside a header.
    #[error("harmony parser: stream ended inside a message header")]
    TruncatedHeader,
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, HarmonyError>;

/// Ids of the formatting tokens, looked up in the tokenizer by text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatTokens {
    /// `<|start|>`
    pub start: u32,
    /// `<|message|>`
    pub message: u32,
    /// `<|end|>`
    pub end: u32,
    /// `<|return|>`
    pub ret: u32,
    /// `<|call|>`
    pub call: u32,
    /// `<|channel|>`
    pub channel: u32,
    /// `<|constrain|>`
    pub constrain: u32,
}

impl FormatTokens {
    /// Looks the formatting tokens up in `tok`.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self> {
        let get = |s: &'static str| {
            tok.token_to_id(s)
                .ok_or(HarmonyError::MissingFormatToken(s))
        };
        Ok(Self {
            start: get("<|start|>")?,
            message: get("<|message|>")?,
            end: get("<|end|>")?,
            ret: get("<|return|>")?,
            call: get("<|call|>")?,
            channel: get(CHANNEL)?,
            constrain: get(CONSTRAIN)?,
        })
    }

    /// Whether `id` closes a message (`<|end|>`, `<|return|>`, `<|call|>`).
    pub fn ends_message(&self, id: u32) -> bool {
        id == self.end || id == self.ret || id == self.call
    }
}

/// Renders `req` into prompt ids ending with `<|start|>assistant`.
pub fn render_chat_prompt(
    tok: &Tokenizer,
    req: &ChatRequest,
    opts: &PromptOptions,
) -> Result<Vec<u32>> {
    let messages = chat_to_harmony(req, opts)?;
    Renderer::new(tok)?.render_for_completion(&messages, Role::Assistant)
}
