//! The parser a server runs on what the model wrote: infallible by type.

use super::message::Role;
use super::parser::{HarmonyEvent, HarmonyParser, ParseMode, Recovery};
use super::Result;
use crate::tokenizer::Tokenizer;

/// A [`HarmonyParser`] in [`ParseMode::Lenient`] whose `push` and `finish` cannot fail:
/// whatever the model emits degrades to what parsed, and no text of a special token reaches
/// any message content. Should the inner parser ever report an error, it is recorded as
/// [`Recovery::Reset`] and parsing resumes between messages.
pub struct LenientParser<'a> {
    inner: HarmonyParser<'a>,
}

impl<'a> LenientParser<'a> {
    /// For a completion whose prompt ended in `<|start|>assistant`.
    /// Fails only if the tokenizer lacks the harmony formatting tokens.
    pub fn for_completion(tok: &'a Tokenizer) -> Result<Self> {
        Self::with_role(tok, Some(Role::Assistant))
    }

    /// For a whole transcript that begins with `<|start|>`.
    pub fn new(tok: &'a Tokenizer) -> Result<Self> {
        Self::with_role(tok, None)
    }

    /// With `role`, the input begins inside the first header, whose role is `role`.
    pub fn with_role(tok: &'a Tokenizer, role: Option<Role>) -> Result<Self> {
        Ok(Self {
            inner: HarmonyParser::with_mode(tok, role, ParseMode::Lenient)?,
        })
    }

    /// Feeds one id.
    pub fn push(&mut self, id: u32) -> Vec<HarmonyEvent> {
        match self.inner.push(id) {
            Ok(events) => events,
            Err(e) => {
                let index = self.inner.pushed().saturating_sub(1);
                self.inner.record(Recovery::Reset {
                    index,
                    error: e.to_string(),
                });
                Vec::new()
            }
        }
    }

    /// End of stream: closes the unfinished message (a header without `<|message|>` becomes
    /// a message of its words).
    pub fn finish(&mut self) -> Vec<HarmonyEvent> {
        match self.inner.finish() {
            Ok(events) => events,
            Err(e) => {
                let index = self.inner.pushed();
                self.inner.record(Recovery::Reset {
                    index,
                    error: e.to_string(),
                });
                Vec::new()
            }
        }
    }

    /// The parser, for its messages and current state.
    pub fn parser(&self) -> &HarmonyParser<'a> {
        &self.inner
    }
}
