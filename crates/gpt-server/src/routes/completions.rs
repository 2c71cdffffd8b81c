//! `POST /v1/completions`: text in, text out (special tokens in the prompt are parsed).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::common::UsageWire;
use crate::api::completions::{CompletionRequest, PromptWire};
use crate::api::ApiJson;
use crate::collect::{collect, merge};
use crate::error::{ApiError, ApiResult};
use crate::gen::{Job, Mode, Piece, TokenLogprob};
use crate::params;
use crate::routes::chat::submit_all;
use crate::state::{new_id, unix_now, AppState};

/// The legacy `logprobs` object.
fn legacy_logprobs(lps: &[TokenLogprob]) -> Value {
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(lps.len());
    for l in lps {
        offsets.push(offset);
        offset += l.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| {
            l.top.iter().map(|(t, _, p)| (t.clone(), Value::from(*p))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// The handler.
pub async fn completions(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> ApiResult<Response> {
    let ready = st.ready()?;
    let prompt = match &req.prompt {
        PromptWire::Text(t) => t.clone(),
        PromptWire::Texts(v) if v.len() == 1 => v[0].clone(),
        PromptWire::Texts(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "only one prompt per request is supported",
            ))
        }
        PromptWire::Ids(_) => String::new(),
    };
    let ids = match &req.prompt {
        PromptWire::Ids(ids) => ids.clone(),
        _ => ready
            .tok
            .encode(&prompt, true)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
    };
    if ids.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    let n = params::choices(req.n, st.config.max_n)?;
    let max_tokens = params::max_tokens(
        Some(req.max_tokens.unwrap_or(16)),
        "max_tokens",
        ids.len(),
        ready.engine.context(),
    )
    .map_err(|mut e| {
        e.param = Some("prompt".into());
        e
    })?;
    let logprobs = match req.logprobs {
        Some(k) => params::logprobs(Some(true), Some(k))?,
        None => None,
    };
    let stop = req.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    let jobs = (0..n)
        .map(|i| {
            Ok(Job {
                prompt: ids.clone(),
                max_tokens,
                sampling: req.sampling.params(i)?,
                stop: stop.clone(),
                logprobs,
                mode: Mode::Raw,
                stop_tokens: Vec::new(),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let rxs = submit_all(ready, jobs)?;
    metrics::counter!("gptoss_requests_total", "endpoint" => "completions").increment(1);
    let id = new_id("cmpl-");
    let created = unix_now();
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| st.config.model_name.clone());
    if req.stream {
        let usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(stream(rxs, id, created, model, usage));
    }
    let mut choices = Vec::with_capacity(n);
    let (mut completion, mut cached) = (0, 0);
    for (i, rx) in rxs.into_iter().enumerate() {
        let c = collect(rx).await?;
        completion += c.outcome.completion_tokens;
        cached = c.outcome.cached_tokens;
        choices.push(json!({
            "index": i, "text": c.content,
            "logprobs": if logprobs.is_some() { legacy_logprobs(&c.logprobs) } else { Value::Null },
            "finish_reason": c.outcome.finish,
        }));
    }
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": choices, "usage": UsageWire::new(ids.len(), cached, completion, 0),
    }))
    .into_response())
}

fn stream(
    rxs: Vec<mpsc::Receiver<Piece>>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> Response {
    let (tx, out) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let chunk = |index: usize, text: &str, finish: Option<&str>, lp: Value| {
            let v = json!({"id": id, "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": index, "text": text, "logprobs": lp, "finish_reason": finish}]});
            Ok(SseEvent::default().data(v.to_string()))
        };
        let mut pieces = merge(rxs);
        let (mut prompt, mut cached, mut completion) = (0, 0, 0);
        let mut pending: Vec<Vec<TokenLogprob>> = Vec::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => return,
                p = pieces.next() => p,
            };
            let Some((i, p)) = next else { break };
            if pending.len() <= i {
                pending.resize(i + 1, Vec::new());
            }
            let ev = match p {
                Piece::Logprob(l) => {
                    pending[i].push(l);
                    continue;
                }
                Piece::Text(t) => {
                    let lps = std::mem::take(&mut pending[i]);
                    let lp = if lps.is_empty() {
                        Value::Null
                    } else {
                        legacy_logprobs(&lps)
                    };
                    chunk(i, &t, None, lp)
                }
                Piece::Delta(_) => continue,
                Piece::Done(o) => {
                    prompt = o.prompt_tokens;
                    cached = o.cached_tokens;
                    completion += o.completion_tokens;
                    chunk(i, "", Some(o.finish), Value::Null)
                }
                Piece::Failed(e) => Ok(SseEvent::default().data(
                    ApiError::internal(format!("generation failed: {e}"))
                        .body()
                        .to_string(),
                )),
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        if include_usage {
            let v = json!({"id": id, "object": "text_completion", "created": created, "model": model,
                           "choices": [], "usage": UsageWire::new(prompt, cached, completion, 0)});
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
