//! The engine's loop, on its own thread: it owns the model, the KV pool and the scheduler;
//! takes submissions and cancellations between steps; runs one forward per step; samples every
//! sequence that produced logits; and sends each request its events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use candle_core::Tensor;
use tokio::sync::mpsc::UnboundedSender;

use super::request::{Event, FinishReason, Request, TokenEvent, Usage};
use super::stop::StopText;
use crate::error::Result;
use crate::harmony::HarmonyParser;
use crate::kv::KvPool;
use crate::model::GptOss;
use crate::sampling::Sampler;
use crate::scheduler::{Plan, Scheduler};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What the handles send the worker.
pub(crate) enum Command {
    Submit {
        id: u64,
        req: Box<Request>,
        events: UnboundedSender<Event>,
    },
    Cancel(u64),
}

/// A request's state beside its scheduler entry.
struct Live<'t> {
    req: Box<Request>,
    events: UnboundedSender<Event>,
    sampler: Sampler,
    /// Prompt and generated ids (the penalties' history).
    history: Vec<u32>,
    generated: usize,
    max_tokens: usize,
    usage: Usage,
    text: Option<(StreamDecoder<'t>, StopText)>,
    harmony: Option<HarmonyParser<'t>>,
    /// Whether it left the bounded queue.
    admitted: bool,
    /// Log-probabilities of the token being sampled.
    pending_logprobs: Option<(f32, Vec<(u32, f32)>)>,
}

impl Live<'_> {
    fn send(&self, e: Event) -> bool {
        self.events.send(e).is_ok()
    }
}

/// The shared counters the handles read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Requests submitted and not yet admitted.
    pub queued: AtomicUsize,
    /// Preemptions so far.
    pub preempted: AtomicUsize,
}

/// Limits the worker applies to every request.
pub(crate) struct Limits {
    /// Prompt plus generated tokens of one sequence.
    pub ctx: usize,
}

/// Runs until every handle (and the engine) is gone.
pub(crate) fn run(
    model: GptOss,
    mut pool: KvPool,
    mut sched: Scheduler,
    tok: Option<Arc<Tokenizer>>,
    limits: Limits,
    commands: Receiver<Command>,
    counters: Arc<Counters>,
) {
    let tok_ref: Option<&Tokenizer> = tok.as_deref();
    let mut live: HashMap<u64, Live<'_>> = HashMap::new();
    loop {
        // Take what the handles sent; block only when there is nothing to run.
        let mut disconnected = false;
        loop {
            let cmd = if sched.is_idle() {
                match commands.recv() {
                    Ok(c) => Ok(c),
                    Err(_) => Err(TryRecvError::Disconnected),
                }
            } else {
                commands.try_recv()
            };
            match cmd {
                Ok(Command::Submit { id, req, events }) => {
                    let l = new_live(req, events, tok_ref, limits.ctx);
                    sched.add(id, &l.req.prompt);
                    live.insert(id, l);
                }
                Ok(Command::Cancel(id)) => {
                    let reason = FinishReason::Cancelled;
                    end_ids(&mut sched, &mut pool, &mut live, &counters, &[id], &reason);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        // A handle that hung up cancels its request.
        let gone: Vec<u64> = live
            .iter()
            .filter(|(_, l)| l.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        let reason = FinishReason::Cancelled;
        end_ids(&mut sched, &mut pool, &mut live, &counters, &gone, &reason);
        if sched.is_idle() {
            if disconnected {
                return;
            }
            continue;
        }
        let plan = match sched.schedule(&mut pool) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("engine: scheduling failed: {e}");
                let ids: Vec<u64> = live.keys().copied().collect();
                let reason = failure(&e);
                end_ids(&mut sched, &mut pool, &mut live, &counters, &ids, &reason);
                continue;
            }
        };
        let ids: Vec<u64> = plan.chunks.iter().map(|c| c.0).collect();
        if let Err(e) = step(&model, &mut pool, &mut sched, &mut live, &counters, plan) {
            // The step's requests cannot go on: each ends with the error; the others stay.
            tracing::error!("engine step failed: {e}");
            let reason = failure(&e);
            end_ids(&mut sched, &mut pool, &mut live, &counters, &ids, &reason);
        }
    }
}

/// The finish reason of requests that an engine error ends (the message without a backtrace).
fn failure(e: &crate::error::EngineError) -> FinishReason {
    let msg = e.to_string();
    FinishReason::Error(msg.split("\n   0:").next().unwrap_or(&msg).to_string())
}

/// Ends requests `ids` (those still live) with `reason`.
fn end_ids(
    sched: &mut Scheduler,
    pool: &mut KvPool,
    live: &mut HashMap<u64, Live<'_>>,
    counters: &Counters,
    ids: &[u64],
    reason: &FinishReason,
) {
    for id in ids {
        if let Some(l) = live.remove(id) {
            end(sched, pool, counters, *id, l, reason.clone());
        }
    }
}

fn new_live<'t>(
    req: Box<Request>,
    events: UnboundedSender<Event>,
    tok: Option<&'t Tokenizer>,
    ctx: usize,
) -> Live<'t> {
    let max_tokens = req.max_tokens.min(ctx.saturating_sub(req.prompt.len()));
    let text = tok.map(|t| (t.stream_decoder(), StopText::new(req.stop_strings.clone())));
    let harmony = match (req.harmony, tok) {
        (true, Some(t)) => HarmonyParser::for_completion(t).ok(),
        _ => None,
    };
    Live {
        sampler: Sampler::new(req.sampling.clone()),
        history: req.prompt.clone(),
        generated: 0,
        max_tokens,
        usage: Usage {
            prompt_tokens: req.prompt.len(),
            ..Default::default()
        },
        text,
        harmony,
        admitted: false,
        pending_logprobs: None,
        events,
        req,
    }
}

/// Sends the last event and forgets the request.
fn end(
    sched: &mut Scheduler,
    pool: &mut KvPool,
    counters: &Counters,
    id: u64,
    mut l: Live<'_>,
    reason: FinishReason,
) {
    if !l.admitted {
        counters.queued.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some((dec, stop)) = &mut l.text {
        let rest = dec.flush().unwrap_or_default();
        let rest = stop.finish(&rest);
        if !rest.is_empty() {
            l.send(Event::Text(rest));
        }
    }
    let usage = l.usage;
    l.send(Event::Finished { reason, usage });
    if let Err(e) = sched.finish(id, pool) {
        tracing::error!("finishing request {id}: {e}");
    }
}

/// One scheduled forward and what follows from its logits.
fn step(
    model: &GptOss,
    pool: &mut KvPool,
    sched: &mut Scheduler,
    live: &mut HashMap<u64, Live<'_>>,
    counters: &Counters,
    plan: Plan,
) -> Result<()> {
    counters
        .preempted
        .fetch_add(plan.preempted.len(), Ordering::Relaxed);
    for &(id, cached) in &plan.admitted {
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        if let Some(l) = live.get_mut(&id) {
            l.admitted = true;
            l.usage.cached_tokens = cached;
            l.send(Event::Started {
                cached_tokens: cached,
            });
        }
    }
    if plan.batch.is_empty() {
        return Ok(());
    }
    let logits = model.forward(&plan.batch, pool)?; // (rows, vocab)
    sched.complete(&plan);
    let sampled: Vec<u64> = plan
        .chunks
        .iter()
        .filter(|(_, l)| *l)
        .map(|(id, _)| *id)
        .collect();
    if sampled.is_empty() {
        return Ok(());
    }
    let rows = rows_for(&logits, &sampled, live)?;
    let tokens = sample_all(live, &sampled, &rows)?;
    for (id, token) in sampled.iter().zip(tokens) {
        let (Some(token), Some(l)) = (token, live.get_mut(id)) else {
            continue;
        };
        if let Some(reason) = emit(l, token) {
            if let Some(l) = live.remove(id) {
                end(sched, pool, counters, *id, l, reason);
            }
        } else {
            sched.push_token(*id, token);
        }
    }
    Ok(())
}

/// The sampled rows, copied to the host only when some request needs more than a draw the
/// device can make.
enum Rows {
    /// Each row's token, chosen on the logits' device: the argmax, or on a GPU a Gumbel-max
    /// draw at the request's temperature ([`crate::sampling::gumbel_argmax_rows`]).
    Ids(Vec<u32>),
    /// Every row.
    Host(Vec<Vec<f32>>),
}

fn rows_for(logits: &Tensor, ids: &[u64], live: &HashMap<u64, Live<'_>>) -> Result<Rows> {
    use crate::sampling::{argmax_rows, draw_plan, gumbel_argmax_rows, DrawPlan};
    let rows = ids.iter().map(|id| {
        live.get(id).map(|l| {
            let needs_row = l.req.guide.is_some() || l.req.logprobs.is_some();
            (l.sampler.params(), needs_row)
        })
    });
    Ok(match draw_plan(rows, logits.device().is_cpu()) {
        DrawPlan::Argmax => Rows::Ids(argmax_rows(logits)?),
        DrawPlan::Device(temps) => Rows::Ids(gumbel_argmax_rows(logits, &temps)?),
        DrawPlan::Host => Rows::Host(logits.to_vec2()?),
    })
}

/// The next token of each sampled request (`None` for one no longer live), in order: rows
/// copied to the host are sampled in parallel (each request's sampler, guide and history are
/// its own; a row over the 201,088-token vocabulary costs about a millisecond).
fn sample_all(
    live: &mut HashMap<u64, Live<'_>>,
    sampled: &[u64],
    rows: &Rows,
) -> Result<Vec<Option<u32>>> {
    use rayon::prelude::*;
    let at: HashMap<u64, usize> = sampled.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut ls: Vec<(usize, &mut Live<'_>)> = live
        .iter_mut()
        .filter_map(|(id, l)| at.get(id).map(|&i| (i, l)))
        .collect();
    let one = |(i, l): &mut (usize, &mut Live<'_>)| sample(l, rows, *i).map(|t| (*i, t));
    let drawn: Vec<(usize, u32)> = match rows {
        Rows::Host(_) => ls.par_iter_mut().map(one).collect::<Result<_>>()?,
        Rows::Ids(_) => ls.iter_mut().map(one).collect::<Result<_>>()?,
    };
    let mut out = vec![None; sampled.len()];
    for (i, t) in drawn {
        out[i] = Some(t);
    }
    Ok(out)
}

fn sample(l: &mut Live<'_>, rows: &Rows, i: usize) -> Result<u32> {
    let token = match rows {
        Rows::Ids(a) => a[i],
        Rows::Host(h) => {
            // A copy only when a guide masks the row.
            let masked;
            let row: &[f32] = match l.req.guide.as_mut() {
                Some(g) => {
                    let mut r = h[i].clone();
                    g.mask(&mut r);
                    masked = r;
                    &masked
                }
                None => &h[i],
            };
            let token = l.sampler.sample(row, &l.history);
            if let Some(n) = l.req.logprobs {
                l.pending_logprobs = Some(logprobs(row, token, n));
            }
            token
        }
    };
    if let Some(g) = l.req.guide.as_mut() {
        g.accept(token);
    }
    Ok(token)
}

/// `log softmax(row)[token]` and the `n` most probable `(id, logprob)`.
fn logprobs(row: &[f32], token: u32, n: usize) -> (f32, Vec<(u32, f32)>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + row
            .iter()
            .map(|&v| ((v - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if n > 0 {
        let mut idx: Vec<u32> = (0..row.len() as u32).collect();
        let n = n.min(idx.len());
        idx.select_nth_unstable_by(n - 1, |a, b| {
            row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b))
        });
        idx.truncate(n);
        idx.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b)));
        top = idx
            .into_iter()
            .map(|i| (i, row[i as usize] - lse))
            .collect();
    }
    (row[token as usize] - lse, top)
}

/// Records `token` and sends its events; returns why the request ends, if it does.
fn emit(l: &mut Live<'_>, token: u32) -> Option<FinishReason> {
    l.generated += 1;
    l.usage.completion_tokens += 1;
    l.history.push(token);
    if let Some(p) = l.harmony.as_mut() {
        let before = p.current_header().and_then(|h| h.channel.clone());
        match p.push(token) {
            Ok(events) => {
                for e in events {
                    if let crate::harmony::HarmonyEvent::MessageStart(h) = e {
                        l.events
                            .send(Event::Channel {
                                channel: h.channel.clone(),
                                recipient: h.recipient.clone(),
                            })
                            .ok();
                    }
                }
            }
            Err(e) => {
                tracing::debug!("harmony parse stopped: {e}");
                l.harmony = None;
            }
        }
        let after = l
            .harmony
            .as_ref()
            .and_then(|p| p.current_header())
            .and_then(|h| h.channel.clone());
        if before.as_deref() == Some("analysis") || after.as_deref() == Some("analysis") {
            l.usage.reasoning_tokens += 1;
        }
    }
    let stop_token = l.req.stop_tokens.contains(&token);
    let mut text = String::new();
    let mut stop_string = false;
    if let Some((dec, stop)) = &mut l.text {
        let piece = if stop_token {
            None
        } else {
            dec.push(token).ok().flatten()
        };
        let (out, hit) = stop.push(piece.as_deref().unwrap_or(""));
        text = out;
        stop_string = hit;
    }
    let (logprob, top_logprobs) = match l.pending_logprobs.take() {
        Some((lp, top)) => (Some(lp), top),
        None => (None, Vec::new()),
    };
    l.send(Event::Token(TokenEvent {
        id: token,
        text,
        logprob,
        top_logprobs,
    }));
    if stop_token || stop_string {
        Some(FinishReason::Stop)
    } else if l.generated >= l.max_tokens {
        Some(FinishReason::Length)
    } else {
        None
    }
}
