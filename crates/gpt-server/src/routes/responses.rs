//! `POST /v1/responses` (whole or streamed as openai/gpt-oss's `responses_api` and the
//! OpenAI API emit: `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.reasoning_text.delta`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`, the matching
//! `.done` events, then `response.completed`), and `GET`/`DELETE /v1/responses/{id}` over
//! the bounded in-memory store that `previous_response_id` reads.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gpt_engine::harmony::api::Delta;
use gpt_engine::harmony::{ChatMessage, ChatRole, FunctionCall, MessageContent, ToolCall};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::chat::ChatCompletionRequest;
use crate::api::responses::{input_messages, ResponsesRequest};
use crate::api::ApiJson;
use crate::error::{ApiError, ApiResult};
use crate::gen::{Outcome, Piece};
use crate::routes::chat::{prepare, submit_all};
use crate::state::{new_id, unix_now, AppState};
use crate::store::Stored;

/// The chat request equivalent to `req` after `history`.
fn as_chat(req: &ResponsesRequest, history: &[ChatMessage]) -> ApiResult<ChatCompletionRequest> {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(i) = &req.instructions {
        messages.push(json!({"role": "developer", "content": i}));
    }
    let mut conv = history.to_vec();
    input_messages(&req.input, &mut conv)?;
    for m in &conv {
        messages.push(serde_json::to_value(m).map_err(|e| ApiError::internal(e.to_string()))?);
    }
    let tools: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == "function")
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description,
                "parameters": t.parameters, "strict": t.strict,
            }})
        })
        .collect();
    let mut v = json!({
        "messages": messages,
        "tools": tools,
        "max_completion_tokens": req.max_output_tokens,
        "max_reasoning_tokens": req.max_reasoning_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "reasoning_effort": req.reasoning.as_ref().and_then(|r| r.effort.clone()),
    });
    if let Some(tc) = &req.tool_choice {
        v["tool_choice"] = match tc {
            crate::api::common::ToolChoiceWire::Mode(m) => Value::from(m.clone()),
            crate::api::common::ToolChoiceWire::Named(o) => o.clone(),
        };
    }
    if let Some(f) = req.text.as_ref().and_then(|t| t.format.as_ref()) {
        let mut rf = json!({"type": f.kind});
        if f.kind == "json_schema" {
            rf["json_schema"] = json!({"schema": f.schema.clone().or_else(|| f.json_schema.as_ref().and_then(|s| s.schema.clone()))});
        }
        v["response_format"] = rf;
    }
    let mut chat: ChatCompletionRequest =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    chat.model = req.model.clone();
    // Keep the conversation (without the instructions) for the store.
    Ok(chat)
}

/// Builds output items from pieces; with `events`, also the stream's events.
struct Items {
    output: Vec<Value>,
    /// Index into `output` of the open item and its kind.
    open: Option<(usize, &'static str)>,
    events: Vec<Value>,
    stream: bool,
}

impl Items {
    fn new(stream: bool) -> Self {
        Self {
            output: Vec::new(),
            open: None,
            events: Vec::new(),
            stream,
        }
    }

    fn emit(&mut self, v: Value) {
        if self.stream {
            self.events.push(v);
        }
    }

    fn close(&mut self) {
        let Some((i, kind)) = self.open.take() else {
            return;
        };
        let item = &mut self.output[i];
        item["status"] = "completed".into();
        let id = item["id"].clone();
        let item = item.clone();
        match kind {
            "reasoning" => {
                let text = item["content"][0]["text"].clone();
                self.emit(json!({"type": "response.reasoning_text.done", "item_id": id, "output_index": i, "content_index": 0, "text": text}));
                self.emit(json!({"type": "response.content_part.done", "item_id": id, "output_index": i, "content_index": 0, "part": item["content"][0]}));
            }
            "message" => {
                let text = item["content"][0]["text"].clone();
                self.emit(json!({"type": "response.output_text.done", "item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}));
                self.emit(json!({"type": "response.content_part.done", "item_id": id, "output_index": i, "content_index": 0, "part": item["content"][0]}));
            }
            _ => {
                self.emit(json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": i, "arguments": item["arguments"]}));
            }
        }
        self.emit(json!({"type": "response.output_item.done", "output_index": i, "item": item}));
    }

    fn open(&mut self, kind: &'static str, item: Value, part: Option<Value>) -> usize {
        self.close();
        let i = self.output.len();
        let id = item["id"].clone();
        self.output.push(item.clone());
        self.open = Some((i, kind));
        self.emit(json!({"type": "response.output_item.added", "output_index": i, "item": item}));
        if let Some(p) = part {
            self.emit(json!({"type": "response.content_part.added", "item_id": id, "output_index": i, "content_index": 0, "part": p}));
        }
        i
    }

    fn text(&mut self, kind: &'static str, t: &str) {
        let i = match self.open {
            Some((i, k)) if k == kind => i,
            _ if kind == "reasoning" => self.open(
                kind,
                json!({"id": new_id("rs_"), "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": ""}], "status": "in_progress"}),
                Some(json!({"type": "reasoning_text", "text": ""})),
            ),
            _ => self.open(
                kind,
                json!({"id": new_id("msg_"), "type": "message", "role": "assistant", "status": "in_progress",
                       "content": [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]}),
                Some(json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})),
            ),
        };
        let item = &mut self.output[i];
        let cur = item["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        item["content"][0]["text"] = (cur + t).into();
        let id = item["id"].clone();
        let ty = if kind == "reasoning" {
            "response.reasoning_text.delta"
        } else {
            "response.output_text.delta"
        };
        let mut ev =
            json!({"type": ty, "item_id": id, "output_index": i, "content_index": 0, "delta": t});
        if kind == "message" {
            ev["logprobs"] = json!([]);
        }
        self.emit(ev);
    }

    fn add(&mut self, d: Delta) {
        match d {
            Delta::Reasoning(t) => self.text("reasoning", &t),
            Delta::Content(t) => self.text("message", &t),
            Delta::ToolCallStart { name, .. } => {
                self.open(
                    "function_call",
                    json!({"id": new_id("fc_"), "type": "function_call", "status": "in_progress",
                           "call_id": new_id("call_"), "name": name, "arguments": ""}),
                    None,
                );
            }
            Delta::ToolCallArgs { text, .. } => {
                if let Some((i, "function_call")) = self.open {
                    let item = &mut self.output[i];
                    let cur = item["arguments"].as_str().unwrap_or_default().to_string();
                    item["arguments"] = (cur + &text).into();
                    let id = item["id"].clone();
                    self.emit(json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": i, "delta": text}));
                }
            }
        }
    }

    /// The assistant turn as a chat message, for the store.
    fn as_message(&self) -> ChatMessage {
        let mut m = ChatMessage {
            role: ChatRole::Assistant,
            content: None,
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
            reasoning_content: None,
        };
        for it in &self.output {
            let text = it["content"][0]["text"].as_str().map(str::to_string);
            match it["type"].as_str() {
                Some("reasoning") => m.reasoning_content = text,
                Some("message") => m.content = text.map(MessageContent::Text),
                Some("function_call") => m.tool_calls.push(ToolCall {
                    id: it["call_id"].as_str().map(str::to_string),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: it["name"].as_str().unwrap_or_default().into(),
                        arguments: it["arguments"].as_str().unwrap_or_default().into(),
                    },
                }),
                _ => {}
            }
        }
        m
    }
}

/// The response object.
fn object(
    req: &ResponsesRequest,
    id: &str,
    created: u64,
    model: &str,
    output: &[Value],
    o: Option<&Outcome>,
) -> Value {
    let (status, incomplete) = match o {
        None => ("in_progress", Value::Null),
        Some(o) if o.finish == "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(_) => ("completed", Value::Null),
    };
    let usage = o.map(|o| {
        json!({
            "input_tokens": o.prompt_tokens,
            "input_tokens_details": {"cached_tokens": o.cached_tokens},
            "output_tokens": o.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": o.reasoning_tokens},
            "total_tokens": o.prompt_tokens + o.completion_tokens,
        })
    });
    json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": incomplete, "model": model,
        "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
        "output": output, "usage": usage,
        "previous_response_id": req.previous_response_id,
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "temperature": req.temperature, "top_p": req.top_p,
        "reasoning": {"effort": req.reasoning.as_ref().and_then(|r| r.effort.clone())},
        "tools": req.tools.iter().flatten().map(|t| json!({"type": t.kind, "name": t.name, "description": t.description, "parameters": t.parameters, "strict": t.strict})).collect::<Vec<_>>(),
        "tool_choice": "auto",
        "text": {"format": {"type": req.text.as_ref().and_then(|t| t.format.as_ref()).map_or("text", |f| f.kind.as_str())}},
        "store": req.store.unwrap_or(true),
        "metadata": req.metadata.clone().unwrap_or_else(|| json!({})),
    })
}

/// Creates a response.
pub async fn create(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<ResponsesRequest>,
) -> ApiResult<Response> {
    let ready = st.ready()?;
    let history = match &req.previous_response_id {
        Some(pid) => {
            st.store
                .get(pid)
                .ok_or_else(|| {
                    let mut e = ApiError::not_found(format!("no stored response {pid:?}"));
                    e.param = Some("previous_response_id".into());
                    e
                })?
                .conversation
        }
        None => Vec::new(),
    };
    let chat = as_chat(&req, &history)?;
    let mut conversation = history;
    input_messages(&req.input, &mut conversation)?;
    let p = prepare(&st, ready, &chat)?;
    let mut rxs = submit_all(ready, p.jobs)?;
    let rx = rxs
        .pop()
        .ok_or_else(|| ApiError::internal("no generation"))?;
    metrics::counter!("gptoss_requests_total", "endpoint" => "responses").increment(1);
    let id = new_id("resp_");
    let created = unix_now();
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| st.config.model_name.clone());
    if req.stream {
        return Ok(stream(
            st.clone(),
            req,
            rx,
            id,
            created,
            model,
            conversation,
        ));
    }
    let mut items = Items::new(false);
    let mut rx = rx;
    let mut outcome = None;
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Delta(d) => items.add(d),
            Piece::Done(o) => outcome = Some(o),
            Piece::Failed(e) => return Err(ApiError::internal(format!("generation failed: {e}"))),
            Piece::Text(_) | Piece::Logprob(_) => {}
        }
    }
    items.close();
    let o = outcome.ok_or_else(|| ApiError::internal("the generation ended without finishing"))?;
    let obj = object(&req, &id, created, &model, &items.output, Some(&o));
    if req.store.unwrap_or(true) {
        conversation.push(items.as_message());
        st.store.put(
            id,
            Stored {
                object: obj.clone(),
                conversation,
            },
        );
    }
    Ok(Json(obj).into_response())
}

fn stream(
    st: Arc<AppState>,
    req: ResponsesRequest,
    mut rx: mpsc::Receiver<Piece>,
    id: String,
    created: u64,
    model: String,
    mut conversation: Vec<ChatMessage>,
) -> Response {
    let (tx, out) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut items = Items::new(true);
        let start = object(&req, &id, created, &model, &[], None);
        items.emit(json!({"type": "response.created", "response": start}));
        items.emit(json!({"type": "response.in_progress", "response": start}));
        loop {
            for mut ev in std::mem::take(&mut items.events) {
                ev["sequence_number"] = seq.into();
                seq += 1;
                let name = ev["type"].as_str().unwrap_or("message").to_string();
                if tx
                    .send(Ok(SseEvent::default().event(name).data(ev.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let p = tokio::select! {
                biased;
                _ = tx.closed() => return,
                p = rx.recv() => p,
            };
            match p {
                Some(Piece::Delta(d)) => items.add(d),
                Some(Piece::Done(o)) => {
                    items.close();
                    let obj = object(&req, &id, created, &model, &items.output, Some(&o));
                    let ty = if o.finish == "length" {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    items.emit(json!({"type": ty, "response": obj}));
                    if req.store.unwrap_or(true) {
                        conversation.push(items.as_message());
                        st.store.put(
                            id.clone(),
                            Stored {
                                object: obj,
                                conversation: std::mem::take(&mut conversation),
                            },
                        );
                    }
                }
                Some(Piece::Failed(e)) => {
                    let err = ApiError::internal(format!("generation failed: {e}"));
                    items.emit(json!({"type": "error", "code": "server_error", "message": err.message, "param": null}));
                }
                Some(_) => {}
                None => {
                    for mut ev in std::mem::take(&mut items.events) {
                        ev["sequence_number"] = seq.into();
                        seq += 1;
                        let name = ev["type"].as_str().unwrap_or("message").to_string();
                        if tx
                            .send(Ok(SseEvent::default().event(name).data(ev.to_string())))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A stored response.
pub async fn retrieve(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    st.store
        .get(&id)
        .map(|s| Json(s.object))
        .ok_or_else(|| ApiError::not_found(format!("no response {id:?}")))
}

/// Deletes a stored response.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if st.store.delete(&id) {
        Ok(Json(
            json!({"id": id, "object": "response", "deleted": true}),
        ))
    } else {
        Err(ApiError::not_found(format!("no response {id:?}")))
    }
}
