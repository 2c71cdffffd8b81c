//! `GET /health`, `GET /v1/models`, `GET /metrics`, `POST /tokenize`, `POST /detokenize`
//! (llama-server's shapes).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::ApiJson;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// 200 once the model is ready, 503 before (and after a failed load).
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.ready() {
        Ok(r) => Json(json!({
            "status": "ok",
            "queued": r.engine.queued(),
            "in_flight": r.engine.in_flight(),
        }))
        .into_response(),
        Err(e) => {
            let status = if e.code == Some("model_load_failed") {
                "error"
            } else {
                "loading"
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": status, "error": e.body()["error"]})),
            )
                .into_response()
        }
    }
}

/// The one model.
pub async fn models(State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let ready = st.ready()?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": st.config.model_name,
            "object": "model",
            "created": ready.created,
            "owned_by": "gptoss",
            "context_length": ready.engine.context(),
        }],
    })))
}

/// Prometheus text.
pub async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    if let Some(r) = st.ready.get() {
        metrics::gauge!("gptoss_queued_requests").set(r.engine.queued() as f64);
        metrics::gauge!("gptoss_in_flight_requests").set(r.engine.in_flight() as f64);
        metrics::gauge!("gptoss_preemptions").set(r.engine.preemptions() as f64);
    }
    match &st.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => ApiError::not_found("metrics are not enabled").into_response(),
    }
}

/// `POST /tokenize` body.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// Text.
    pub content: String,
    /// Parse `<|…|>` special tokens (default true).
    #[serde(default)]
    pub parse_special: Option<bool>,
    /// Return `{id, piece}` objects.
    #[serde(default)]
    pub with_pieces: bool,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Text → ids.
pub async fn tokenize(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> ApiResult<Json<Value>> {
    let tok = &st.ready()?.tok;
    let ids = tok
        .encode(&req.content, req.parse_special.unwrap_or(true))
        .map_err(|e| ApiError::invalid("content", e.to_string()))?;
    let tokens: Vec<Value> = if req.with_pieces {
        ids.iter()
            .map(|&id| {
                let b = tok.token_bytes(id).unwrap_or_default();
                let piece = match std::str::from_utf8(b) {
                    Ok(s) => Value::from(s),
                    Err(_) => Value::from(b.to_vec()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect()
    } else {
        ids.iter().map(|&id| Value::from(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })))
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Ids.
    pub tokens: Vec<u32>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Ids → text.
pub async fn detokenize(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> ApiResult<Json<Value>> {
    let tok = &st.ready()?.tok;
    let content = tok
        .decode(&req.tokens)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(Json(json!({ "content": content })))
}
