//! The one error shape every route answers with: `{"error": {"code", "message", "field"?}}`.

use axum::extract::FromRequest;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spotwise_core::{Classify, Disposition};
use spotwise_store::StoreError;
use tracing::error;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `invalid_field`, `invalid_body`, `not_found`, `unauthorized`,
    /// `forbidden`, `precondition_failed`, `version_conflict`, `already_exists`,
    /// `rate_limited`, `unavailable`, `internal`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, for `invalid_field` and `invalid_body`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                field: None,
            },
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 naming the field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let mut err = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {}", message.into()),
        );
        err.body.field = Some(field);
        err
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} not found", what.into()),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this key; retry in {retry_after_secs} s"),
        );
        err.retry_after = Some(retry_after_secs);
        err
    }

    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::StaleVersion { .. } => Self::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "the resource changed while this request was applied; read it again and retry",
            ),
            StoreError::AlreadyExists { .. } => {
                Self::new(StatusCode::CONFLICT, "already_exists", "it already exists")
            }
            StoreError::InvalidCursor(reason) => Self::field("cursor", *reason),
            _ if err.disposition() == Disposition::Retryable => {
                error!(error = %err, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the state store is busy or unreachable; retry shortly",
                )
            }
            _ => Self::internal("store error", &err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorResponse { error: self.body })).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON request body whose errors are 400s naming the field (`matchers[0].op`), not axum's
/// plain-text rejections.
pub struct JsonBody<T>(pub T);

/// A 400 naming `field` when `value` is longer than `max` characters.
pub fn max_chars(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::field(field, format!("at most {max} characters")));
    }
    Ok(())
}

/// A 400 naming `field` when it holds more than `max` entries.
pub fn max_items(field: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if len > max {
        return Err(ApiError::field(field, format!("at most {max} entries")));
    }
    Ok(())
}

/// Every key and value of a label map within Kubernetes' label limits (253 and 63
/// characters), and at most `max` pairs.
pub fn label_map<'a>(
    field: &str,
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    max: usize,
) -> Result<(), ApiError> {
    max_items(field, labels.len(), max)?;
    for (key, value) in labels {
        if key.is_empty() || key.chars().count() > 253 {
            return Err(ApiError::field(field, "keys must be 1 to 253 characters"));
        }
        max_chars(&format!("{field}.{key}"), value, 63)?;
    }
    Ok(())
}

/// `application/json`, alone or with a UTF-8 charset; `application/jsonx` or
/// `application/json-seq` are other types, so the match is exact rather than by prefix.
fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';').map(str::trim);
    let essence_is_json = parts
        .next()
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    essence_is_json
        && parts.all(|param| {
            param.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_body",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                ApiError::new(e.status(), "invalid_body", e.body_text())
            })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => Ok(JsonBody(value)),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                // A missing field is reported at its parent's path; name the field itself.
                let named = inner.to_string().split('`').nth(1).map(str::to_owned);
                let field = match (path.as_str(), named) {
                    (".", Some(name)) if is_field_error(&inner) => Some(name),
                    (".", _) => None,
                    (path, Some(name)) if is_field_error(&inner) && !path.ends_with(&name) => {
                        Some(format!("{path}.{name}"))
                    }
                    (path, _) => Some(path.to_owned()),
                };
                let mut error = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    match &field {
                        Some(field) => format!("{field}: {inner}"),
                        None => format!("invalid JSON body: {inner}"),
                    },
                );
                error.body.field = field;
                Err(error)
            }
        }
    }
}

fn is_field_error(err: &serde_json::Error) -> bool {
    let text = err.to_string();
    text.starts_with("missing field") || text.starts_with("unknown field")
}

#[cfg(test)]
mod media_type_tests {
    use super::is_json_media_type;

    #[test]
    fn only_json_with_an_optional_utf8_charset_is_json() {
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json_media_type(accepted), "{accepted}");
        }
        for refused in [
            "application/jsonx",
            "application/json-seq",
            "application/json; charset=latin1",
            "application/json; boundary=x",
            "text/json",
            "",
        ] {
            assert!(!is_json_media_type(refused), "{refused}");
        }
    }
}
