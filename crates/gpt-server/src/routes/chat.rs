//! `POST /v1/chat/completions`, whole or streamed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use gpt_engine::harmony::api::Delta;
use gpt_engine::harmony::{render_chat_prompt, PromptOptions};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::chat::ChatCompletionRequest;
use crate::api::common::{AnswerFormat, ToolChoice, UsageWire};
use crate::api::ApiJson;
use crate::collect::{collect, logprobs_json, merge, Collected};
use crate::error::{ApiError, ApiResult};
use crate::gen::{self, Job, Mode, Piece};
use crate::params::{self, Constraints};
use crate::state::{new_id, today, unix_now, AppState, Ready};

/// The jobs of a chat request (one per choice), and what the answer needs to know.
pub struct Prepared {
    /// One per choice.
    pub jobs: Vec<Job>,
}

/// Builds the prompt and the jobs of `req`.
pub fn prepare(st: &AppState, ready: &Ready, req: &ChatCompletionRequest) -> ApiResult<Prepared> {
    let n = params::choices(req.n, st.config.max_n)?;
    let (effort, reasoning) = params::effort(req.reasoning_effort.as_deref(), "reasoning_effort")?;
    let mut hreq = req.to_harmony()?;
    hreq.reasoning_effort = effort;
    let tools = req.tools.clone().unwrap_or_default();
    let choice = match &req.tool_choice {
        None => ToolChoice::Auto,
        Some(w) => w
            .resolve()
            .map_err(|m| ApiError::invalid("tool_choice", m))?,
    };
    let format = match &req.response_format {
        None => AnswerFormat::Text,
        Some(f) => f
            .resolve()
            .map_err(|m| ApiError::invalid("response_format", m))?,
    };
    let mut prompt = render_chat_prompt(&ready.tok, &hreq, &PromptOptions::with_date(today()))
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let ctx = ready.engine.context();
    let (asked, param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let max_tokens = params::max_tokens(asked, param, prompt.len(), ctx)?;
    let logprobs = params::logprobs(req.logprobs, req.top_logprobs)?;
    let calls_possible = !tools.is_empty() && choice != ToolChoice::None;
    let budget = req
        .max_reasoning_tokens
        .map(|b| b as usize)
        .or(st.config.reasoning_budget);
    let plan = params::plan(
        &ready.guides,
        Constraints {
            tools: &tools,
            choice,
            format,
            reasoning,
            budget,
            max_tokens,
            format_param: "response_format",
        },
    )?;
    // Reasoning `none` with no call possible: open the final answer in the prompt.
    let prefill = if !reasoning && !calls_possible {
        let p = params::final_prefill(&ready.guides)?;
        prompt.extend_from_slice(&p);
        p
    } else {
        Vec::new()
    };
    let max_tokens = params::max_tokens(Some(max_tokens as u64), param, prompt.len(), ctx)?;
    let stop = req.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    let jobs = (0..n)
        .map(|i| {
            Ok(Job {
                prompt: prompt.clone(),
                max_tokens,
                sampling: req.sampling.params(i)?,
                stop: stop.clone(),
                logprobs,
                mode: Mode::Harmony {
                    prefill: prefill.clone(),
                    plan: plan.clone(),
                },
                stop_tokens: ready.stop_ids.clone(),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Prepared { jobs })
}

/// Submits every job; the first refusal fails the request (the others are cancelled by
/// dropping their receivers).
pub fn submit_all(ready: &Ready, jobs: Vec<Job>) -> ApiResult<Vec<mpsc::Receiver<Piece>>> {
    jobs.into_iter()
        .map(|j| gen::start(&ready.engine, ready.tok.clone(), j))
        .collect()
}

fn usage_of(choices: &[&gen::Outcome]) -> UsageWire {
    let prompt = choices.first().map_or(0, |o| o.prompt_tokens);
    let cached = choices.first().map_or(0, |o| o.cached_tokens);
    let completion = choices.iter().map(|o| o.completion_tokens).sum();
    let reasoning = choices.iter().map(|o| o.reasoning_tokens).sum();
    UsageWire::new(prompt, cached, completion, reasoning)
}

/// The `message` of a whole answer.
pub fn message_json(c: &Collected) -> Value {
    let mut m = json!({
        "role": "assistant",
        "content": if c.content.is_empty() && !c.calls.is_empty() { Value::Null } else { Value::from(c.content.clone()) },
    });
    if !c.reasoning.is_empty() {
        m["reasoning_content"] = c.reasoning.clone().into();
        m["reasoning"] = c.reasoning.clone().into();
    }
    if !c.calls.is_empty() {
        m["tool_calls"] = c
            .calls
            .iter()
            .map(|t| json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}))
            .collect();
    }
    m
}

/// The handler.
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> ApiResult<Response> {
    let ready = st.ready()?;
    let p = prepare(&st, ready, &req)?;
    let want_lp = p.jobs.first().is_some_and(|j| j.logprobs.is_some());
    let rxs = submit_all(ready, p.jobs)?;
    let id = new_id("chatcmpl-");
    let created = unix_now();
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| st.config.model_name.clone());
    metrics::counter!("gptoss_requests_total", "endpoint" => "chat").increment(1);
    if req.stream {
        let usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(stream(rxs, id, created, model, usage));
    }
    let mut outs = Vec::with_capacity(rxs.len());
    for rx in rxs {
        outs.push(collect(rx).await?);
    }
    let usage = usage_of(&outs.iter().map(|c| &c.outcome).collect::<Vec<_>>());
    let choices: Vec<Value> = outs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "message": message_json(c),
                "logprobs": if want_lp { logprobs_json(&c.logprobs) } else { Value::Null },
                "finish_reason": c.outcome.finish,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": choices, "usage": usage,
    }))
    .into_response())
}

/// The delta object of one piece, `None` for pieces that are not deltas.
fn delta_json(d: &Delta, call_ids: &mut Vec<String>) -> Value {
    match d {
        Delta::Content(t) => json!({"content": t}),
        Delta::Reasoning(t) => json!({"reasoning_content": t, "reasoning": t}),
        Delta::ToolCallStart { index, name } => {
            let id = new_id("call_");
            call_ids.push(id.clone());
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]})
        }
        Delta::ToolCallArgs { index, text } => {
            json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]})
        }
    }
}

fn stream(
    rxs: Vec<mpsc::Receiver<Piece>>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> Response {
    let (tx, out) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let n = rxs.len();
    tokio::spawn(async move {
        let chunk = |index: usize, delta: Value, finish: Option<&str>, lp: Value| {
            let v = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}],
            });
            Ok(SseEvent::default().data(v.to_string()))
        };
        for i in 0..n {
            if tx
                .send(chunk(
                    i,
                    json!({"role": "assistant", "content": ""}),
                    None,
                    Value::Null,
                ))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut pieces = merge(rxs);
        let mut pending_lp: Vec<Vec<gen::TokenLogprob>> = vec![Vec::new(); n];
        let mut call_ids: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut outcomes = Vec::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => return,
                p = pieces.next() => p,
            };
            let Some((i, p)) = next else { break };
            let ev = match p {
                Piece::Logprob(l) => {
                    pending_lp[i].push(l);
                    continue;
                }
                Piece::Delta(d) => {
                    let lp = if matches!(d, Delta::Content(_)) && !pending_lp[i].is_empty() {
                        logprobs_json(&std::mem::take(&mut pending_lp[i]))
                    } else {
                        Value::Null
                    };
                    chunk(i, delta_json(&d, &mut call_ids[i]), None, lp)
                }
                Piece::Text(t) => chunk(i, json!({"content": t}), None, Value::Null),
                Piece::Done(o) => {
                    let e = chunk(i, json!({}), Some(o.finish), Value::Null);
                    outcomes.push(o);
                    e
                }
                Piece::Failed(e) => {
                    let err = ApiError::internal(format!("generation failed: {e}"));
                    Ok(SseEvent::default().data(err.body().to_string()))
                }
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        if include_usage {
            let usage = usage_of(&outcomes.iter().collect::<Vec<_>>());
            let v = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage});
            if tx
                .send(Ok(SseEvent::default().data(v.to_string())))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::default())
        .into_response()
}
