//! Cursor pagination (every list) and query-string parsing with the API's error shape.

use axum::extract::{FromRequestParts, Query as QueryString};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spotwise_aws::store::{self, Query};
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
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.body_text()))
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 50).
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
    pub fn from_store<S>(page: store::Page<S>, view: impl Fn(S) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(|item| view(item.body)).collect(),
            next_cursor: page.next,
        }
    }
}
