//! One generation (one choice) driven on its own task: submits the engine request, reads its
//! events, parses harmony leniently into API deltas (or passes raw text on), applies stop
//! strings to the answer, and sends [`Piece`]s to whoever answers the HTTP request. When
//! that receiver goes away (the client hung up) the task drops its handle at once, which
//! cancels the sequence within one engine step.

use std::sync::Arc;

use gpt_engine::engine::{Engine, Event, FinishReason, Request};
use gpt_engine::harmony::api::{ApiStream, Delta};
use gpt_engine::sampling::SamplingParams;
use gpt_engine::tokenizer::Tokenizer;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::guide::{GuidePlan, HarmonyGuide};
use gpt_engine::engine::StopText;

/// How the completion is read.
pub enum Mode {
    /// Harmony after `<|start|>assistant`; `prefill` ids of the assistant message are already
    /// at the end of the prompt (fed to the parser first).
    Harmony {
        /// Ids after `<|start|>assistant` that the prompt already holds.
        prefill: Vec<u32>,
        /// Constraints.
        plan: Option<GuidePlan>,
    },
    /// Plain text.
    Raw,
}

/// What to generate.
pub struct Job {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Stop strings (applied to the answer's text).
    pub stop: Vec<String>,
    /// Alternatives per position, when log-probabilities are asked for.
    pub logprobs: Option<usize>,
    /// Harmony or raw.
    pub mode: Mode,
    /// Stop ids (`<|return|>`, `<|call|>`).
    pub stop_tokens: Vec<u32>,
}

/// A token's log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Its text.
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Log-probability.
    pub logprob: f32,
    /// Alternatives: text, bytes, log-probability.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// `stop`, `length` or `tool_calls`.
    pub finish: &'static str,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of which cached.
    pub cached_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Of which reasoning.
    pub reasoning_tokens: usize,
}

/// A piece of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// An API delta (harmony mode).
    Delta(Delta),
    /// Text (raw mode).
    Text(String),
    /// The log-probability of a token whose text went to the answer.
    Logprob(TokenLogprob),
    /// The end.
    Done(Outcome),
    /// The engine failed (not the model's text: that never fails).
    Failed(String),
}

fn logprob_of(tok: &Tokenizer, id: u32, lp: f32, top: &[(u32, f32)]) -> TokenLogprob {
    let piece = |id: u32| {
        let b = tok.token_bytes(id).map(<[u8]>::to_vec).unwrap_or_default();
        (String::from_utf8_lossy(&b).into_owned(), b)
    };
    let (token, bytes) = piece(id);
    TokenLogprob {
        token,
        bytes,
        logprob: lp,
        top: top
            .iter()
            .map(|&(i, l)| {
                let (t, b) = piece(i);
                (t, b, l)
            })
            .collect(),
    }
}

/// Submits `job` and returns its pieces; errors of the request (queue full, prompt too
/// long, a parameter out of range) come back here, before anything is streamed.
pub fn start(engine: &Engine, tok: Arc<Tokenizer>, job: Job) -> ApiResult<mpsc::Receiver<Piece>> {
    let prompt_tokens = job.prompt.len();
    let mut req = Request::new(job.prompt, job.max_tokens);
    req.sampling = job.sampling;
    req.logprobs = job.logprobs;
    req.stop_tokens = job.stop_tokens;
    let (harmony, prefill) = match job.mode {
        Mode::Harmony { prefill, plan } => {
            req.harmony = true;
            if let Some(plan) = plan {
                let g = HarmonyGuide::new(plan, !prefill.is_empty())
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                req.guide = Some(Box::new(g));
            }
            (true, prefill)
        }
        Mode::Raw => {
            req.stop_strings = job.stop.clone();
            (false, Vec::new())
        }
    };
    let handle = engine.submit(req)?;
    let (tx, rx) = mpsc::channel(256);
    let stops = if harmony { job.stop } else { Vec::new() };
    let want_lp = job.logprobs.is_some();
    tokio::spawn(async move {
        let mut run = Run {
            tx,
            tok: tok.clone(),
            stop: StopText::new(stops),
            outcome: Outcome {
                prompt_tokens,
                ..Outcome::default()
            },
            want_lp,
        };
        let stream = if harmony {
            ApiStream::for_completion(&tok).ok()
        } else {
            None
        };
        run.drive(handle, stream, &prefill).await;
    });
    Ok(rx)
}

struct Run {
    tx: mpsc::Sender<Piece>,
    tok: Arc<Tokenizer>,
    stop: StopText,
    outcome: Outcome,
    want_lp: bool,
}

impl Run {
    /// Sends; false when the receiver is gone.
    async fn send(&self, p: Piece) -> bool {
        self.tx.send(p).await.is_ok()
    }

    /// Sends deltas through the stop filter; false when the receiver is gone.
    async fn send_deltas(&mut self, deltas: Vec<Delta>) -> bool {
        for d in deltas {
            let d = match d {
                Delta::Content(t) => {
                    let (t, _) = self.stop.push(&t);
                    if t.is_empty() {
                        continue;
                    }
                    Delta::Content(t)
                }
                other if self.stop.hit() => {
                    drop(other);
                    continue;
                }
                other => other,
            };
            if !self.send(Piece::Delta(d)).await {
                return false;
            }
        }
        true
    }

    async fn drive(
        &mut self,
        mut handle: gpt_engine::engine::RequestHandle,
        mut stream: Option<ApiStream<'_>>,
        prefill: &[u32],
    ) {
        if let Some(s) = stream.as_mut() {
            for &id in prefill {
                s.push(id);
            }
        }
        let reason = loop {
            let ev = tokio::select! {
                biased;
                _ = self.tx.closed() => return,
                ev = handle.next() => ev,
            };
            match ev {
                None => break FinishReason::Error("the engine stopped".into()),
                Some(Event::Started { cached_tokens }) => {
                    self.outcome.cached_tokens = cached_tokens
                }
                Some(Event::Token(t)) => {
                    self.outcome.completion_tokens += 1;
                    let lp = match (self.want_lp, t.logprob) {
                        (true, Some(l)) => Some(logprob_of(&self.tok, t.id, l, &t.top_logprobs)),
                        _ => None,
                    };
                    let ok = match stream.as_mut() {
                        Some(s) => {
                            let deltas = s.push(t.id);
                            let content = deltas.iter().any(|d| matches!(d, Delta::Content(_)));
                            let lp_ok = match lp {
                                Some(lp) if content && !self.stop.hit() => {
                                    self.send(Piece::Logprob(lp)).await
                                }
                                _ => true,
                            };
                            lp_ok && self.send_deltas(deltas).await
                        }
                        None => {
                            let lp_ok = match lp {
                                Some(lp) => self.send(Piece::Logprob(lp)).await,
                                None => true,
                            };
                            lp_ok && (t.text.is_empty() || self.send(Piece::Text(t.text)).await)
                        }
                    };
                    if !ok {
                        return;
                    }
                    if self.stop.hit() {
                        // The answer reached a stop string: end this sequence now.
                        handle.cancel();
                        break FinishReason::Stop;
                    }
                }
                Some(Event::Text(t)) => {
                    if stream.is_none() && !self.send(Piece::Text(t)).await {
                        return;
                    }
                }
                Some(Event::Channel { .. }) => {}
                Some(Event::Finished { reason, usage }) => {
                    self.outcome.cached_tokens = usage.cached_tokens;
                    self.outcome.completion_tokens = usage.completion_tokens;
                    break reason;
                }
            }
        };
        drop(handle);
        let mut calls = false;
        if let Some(s) = stream.as_mut() {
            let rest = s.finish();
            if !self.send_deltas(rest).await {
                return;
            }
            let c = s.completion();
            self.outcome.reasoning_tokens = c.reasoning_tokens;
            calls = !c.tool_calls.is_empty();
        }
        let tail = self.stop.finish("");
        if !tail.is_empty() && !self.send(Piece::Delta(Delta::Content(tail))).await {
            return;
        }
        self.outcome.finish = match reason {
            FinishReason::Length => "length",
            FinishReason::Stop | FinishReason::Cancelled if calls => "tool_calls",
            FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::Error(e) => {
                tracing::error!(error = %e, "generation failed");
                self.send(Piece::Failed(e)).await;
                return;
            }
        };
        self.send(Piece::Done(self.outcome.clone())).await;
    }
}
