//! Cursor pagination (every list) and query-string parsing with the API's error shape.

use axum::extract::{FromRequestParts, Query as QueryString};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spotwise_store::Query;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;

/// Query-string parameters; a malformed one is a 400 in the API's error shape.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        QueryString::<T>::from_request_parts(parts, state)
            .await
            .map(|QueryString(value)| Params(value))
            .map_err(|e| {
                // "Failed to deserialize query string: limit: invalid digit found in string"
                let text = e.body_text();
                match text
                    .split_once("query string: ")
                    .and_then(|(_, rest)| rest.split_once(": "))
                {
                    Some((field, reason)) => ApiError::field(field, reason),
                    None => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", text),
                }
            })
    }
}

/// Path parameters that must parse (a revision number); a malformed one is a 404 in the API's
/// error shape, as no resource has that name.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|e| ApiError::not_found(format!("{}: {}", parts.uri.path(), e.body_text())))
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn apply(&self, query: Query) -> Result<Query, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::field(
                "limit",
                format!("must be 1 to {MAX_LIMIT}"),
            ));
        }
        Ok(query.limit(limit).after(self.cursor.clone()))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when there may be more: pass it as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn from_store<S>(page: spotwise_store::Page<S>, view: impl Fn(S) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(|item| view(item.body)).collect(),
            next_cursor: page.next,
        }
    }
}
