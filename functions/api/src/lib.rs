//! The Spotwise REST API: one axum Router, run by lambda_http in Lambda and by a local server
//! otherwise. Versioned under `/v1`; every error is `{"error": {"code", "message"}}`.

use aws_config::SdkConfig;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use spotwise_aws::Store;
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::keys::Key;
use tracing::error;

pub struct Config {
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub stage: String,
}

impl AppState {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            stage: config.common.stage.clone(),
        }
    }
}

/// The consistent error body.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self }))).into_response()
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .fallback(not_found)
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    stage: String,
}

/// Healthy when the table answers a read.
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match state
        .store
        .get::<serde_json::Value>(&Key::new("HEALTH", "PROBE"))
        .await
    {
        Ok(_) => Ok(Json(Health {
            status: "ok",
            stage: state.stage.clone(),
        })),
        Err(err) => {
            error!(error = %err, "health check: store unreachable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the state store is not reachable",
            ))
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

/// The response of a local `invoke`, shaped like the API Gateway HTTP API response.
#[derive(Debug, Serialize)]
pub struct InvokeResponse {
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("not an API Gateway HTTP API event: {0}")]
    Event(String),
    #[error("reading the response: {0}")]
    Body(String),
}

/// Runs one API Gateway (HTTP API v2) event through the router, as Lambda would.
pub async fn invoke(app: Router, raw_event: &str) -> Result<InvokeResponse, InvokeError> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let event: lambda_http::request::LambdaRequest =
        serde_json::from_str(raw_event).map_err(|e| InvokeError::Event(e.to_string()))?;
    let request =
        lambda_http::Request::from(event).map(|body| axum::body::Body::from(body.to_vec()));
    let response = app
        .oneshot(request)
        .await
        .map_err(|e| InvokeError::Body(e.to_string()))?;
    let status_code = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| InvokeError::Body(e.to_string()))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(InvokeResponse {
        status_code,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use spotwise_testkit::{LocalStack, fixture};
    use tower::ServiceExt;

    use super::*;

    async fn state(stack: &LocalStack) -> AppState {
        let config = Config::from_env(&Env::from_map(stack.function_env("ApiFunction"))).unwrap();
        AppState::new(&stack.sdk_config().await, &config)
    }

    async fn json(response: Response) -> serde_json::Value {
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn health_reports_ok_when_the_store_answers() {
        let stack = LocalStack::start();
        let response = app(state(&stack).await)
            .oneshot(Request::get("/v1/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            json(response).await,
            serde_json::json!({"status": "ok", "stage": "local"})
        );
    }

    #[tokio::test]
    async fn health_reports_unavailable_when_the_store_is_gone() {
        let stack = LocalStack::start();
        let state = state(&stack).await;
        drop(stack);
        let response = app(state)
            .oneshot(Request::get("/v1/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(response).await["error"]["code"], "store_unavailable");
    }

    #[tokio::test]
    async fn unknown_routes_get_the_json_error_shape() {
        let stack = LocalStack::start();
        let response = app(state(&stack).await)
            .oneshot(Request::get("/v1/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            json(response).await,
            serde_json::json!({"error": {"code": "not_found", "message": "no route for /v1/nope"}})
        );
    }

    #[tokio::test]
    async fn api_gateway_sample_event_runs_through_the_router() {
        let stack = LocalStack::start();
        let response = invoke(
            app(state(&stack).await),
            &fixture("events/api/http-api-health.json"),
        )
        .await
        .unwrap();
        assert_eq!(response.status_code, 200);
        assert_eq!(response.body["status"], "ok");
    }
}
