//! The pieces of one generation joined into a whole answer (non-streamed responses), and
//! the merging of several choices' pieces into one stream.

use futures_util::stream::{self, Stream, StreamExt};
use gpt_engine::harmony::api::Delta;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::gen::{Outcome, Piece, TokenLogprob};
use crate::state::new_id;

/// A tool call of an answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallOut {
    /// `call_…`.
    pub id: String,
    /// Function name.
    pub name: String,
    /// JSON arguments text.
    pub arguments: String,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collected {
    /// `content` (or the raw text).
    pub content: String,
    /// `reasoning_content`.
    pub reasoning: String,
    /// Tool calls.
    pub calls: Vec<CallOut>,
    /// Log-probabilities of the content tokens.
    pub logprobs: Vec<TokenLogprob>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Collected {
    /// Adds one piece; `Err` for an engine failure.
    pub fn add(&mut self, p: Piece) -> ApiResult<()> {
        match p {
            Piece::Delta(Delta::Content(t)) | Piece::Text(t) => self.content.push_str(&t),
            Piece::Delta(Delta::Reasoning(t)) => self.reasoning.push_str(&t),
            Piece::Delta(Delta::ToolCallStart { name, .. }) => self.calls.push(CallOut {
                id: new_id("call_"),
                name,
                arguments: String::new(),
            }),
            Piece::Delta(Delta::ToolCallArgs { index, text }) => {
                if let Some(c) = self.calls.get_mut(index) {
                    c.arguments.push_str(&text);
                }
            }
            Piece::Logprob(l) => self.logprobs.push(l),
            Piece::Done(o) => self.outcome = o,
            Piece::Failed(e) => return Err(ApiError::internal(format!("generation failed: {e}"))),
        }
        Ok(())
    }
}

/// Reads a generation to its end.
pub async fn collect(mut rx: mpsc::Receiver<Piece>) -> ApiResult<Collected> {
    let mut c = Collected::default();
    let mut done = false;
    while let Some(p) = rx.recv().await {
        done |= matches!(p, Piece::Done(_));
        c.add(p)?;
    }
    if !done {
        return Err(ApiError::internal("the generation ended without finishing"));
    }
    Ok(c)
}

/// The pieces of every choice, tagged with the choice's index, as they come.
pub fn merge(rxs: Vec<mpsc::Receiver<Piece>>) -> impl Stream<Item = (usize, Piece)> + Send {
    stream::select_all(
        rxs.into_iter()
            .enumerate()
            .map(|(i, rx)| ReceiverStream::new(rx).map(move |p| (i, p)).boxed()),
    )
}

/// The chat/completions `logprobs` object of some tokens.
pub fn logprobs_json(lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            json!({
                "token": l.token,
                "logprob": l.logprob,
                "bytes": l.bytes,
                "top_logprobs": l.top.iter().map(|(t, b, lp)| json!({
                    "token": t, "logprob": lp, "bytes": b,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}
