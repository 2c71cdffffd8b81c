//! Errors as the OpenAI API shows them: `{"error": {"message", "type", "param", "code"}}`
//! with the right HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gpt_engine::error::EngineError;
use serde_json::json;

/// A request that failed, with the status and OpenAI error object it is answered with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// The request parameter at fault.
    pub param: Option<String>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
            retry_after: None,
        }
    }

    /// A 400 about the request as a whole (bad JSON, ...).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            param: None,
            ..Self::invalid("", message)
        }
    }

    /// With `code`.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 401: a missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid API key (send Authorization: Bearer KEY)".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
            retry_after: None,
        }
    }

    /// 503 while the model loads.
    pub fn loading() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the model is still loading".into(),
            kind: "server_error",
            param: None,
            code: Some("model_loading"),
            retry_after: Some(5),
        }
    }

    /// 500: the server failed (never for what the model wrote).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// The error object (the body).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest { param, message } => Self::invalid(param, message),
            EngineError::QueueFull { limit } => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!("the server is busy: {limit} requests are already waiting"),
                kind: "rate_limit_error",
                param: None,
                code: Some("queue_full"),
                retry_after: Some(1),
            },
            EngineError::ContextOverflow { prompt, ctx, .. } => Self::invalid(
                "messages",
                format!(
                    "the prompt has {prompt} tokens but the context holds {ctx} \
                     (prompt and completion together); shorten the prompt"
                ),
            )
            .with_code("context_length_exceeded"),
            other => Self::internal(format!("engine: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// Result alias of the handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_statuses() {
        let e: ApiError = EngineError::QueueFull { limit: 7 }.into();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message.contains('7'));
        assert_eq!(e.retry_after, Some(1));
        let e: ApiError = EngineError::ContextOverflow {
            prompt: 5000,
            max_new: 0,
            ctx: 4096,
        }
        .into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("5000") && e.message.contains("4096"));
        let e: ApiError = EngineError::InvalidRequest {
            param: "top_p",
            message: "bad".into(),
        }
        .into();
        assert_eq!(e.param.as_deref(), Some("top_p"));
        let b = e.body();
        for k in ["message", "type", "param", "code"] {
            assert!(b["error"].get(k).is_some(), "{k} missing");
        }
    }
}
