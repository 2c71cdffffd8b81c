//! The wire types of the API: requests (lenient: unknown fields are kept in a catch-all and
//! ignored) and the shapes of answers.

pub mod chat;
pub mod common;
pub mod completions;
pub mod responses;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body parsed with the API's error shape: bad JSON or wrong types are 400s.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let mut err = ApiError::bad_request(format!("reading the body: {e}"));
                err.status = status;
                err
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a request body; the error names what was wrong and where.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = match e.classify() {
            serde_json::error::Category::Data => format!("invalid request: {e}"),
            _ => format!("the body is not valid JSON: {e}"),
        };
        ApiError::bad_request(msg).with_code("invalid_json")
    })
}
