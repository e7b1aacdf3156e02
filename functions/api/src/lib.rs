//! The Spotwise REST API: one axum Router, run by lambda_http in Lambda and by a local server
//! otherwise. Versioned under `/v1`; every error is `{"error": {"code", "message"}}`.

pub mod accounts;
pub mod agent;
pub mod audit;
pub mod auth;
pub mod clusters;
pub mod costs;
pub mod error;
pub mod install;
pub mod paging;
pub mod pods;
pub mod schedules;
pub mod suppression;
pub mod templates;
pub mod tenant;
pub mod versioning;
pub mod webhooks;

use std::sync::Arc;

use aws_config::SdkConfig;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use spotwise_aws::cross_account::CrossAccount;
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_notify::deliver::{ClientError, Deliverer, REQUEST_TIMEOUT};
use spotwise_notify::ssrf::{Lookup, SystemLookup, TargetPolicy};
use spotwise_store::Store;
use spotwise_store::keys::Key;
use tracing::error;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::auth::RateLimiter;
pub use crate::error::ApiError;

pub struct Config {
    pub common: CommonConfig,
    /// Requests per minute per API key, and the burst above it.
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    /// Where manually triggered scheduled runs are sent, and where their failures are told.
    pub optimize_queue_url: String,
    pub cost_queue_url: String,
    pub discovery_queue_url: String,
    pub notifications_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            rate_per_minute: env.parse_or("API_RATE_PER_MINUTE", 600_u32)?.max(1),
            rate_burst: env.parse_or("API_RATE_BURST", 100_u32)?.max(1),
            optimize_queue_url: env.required("OPTIMIZE_QUEUE_URL")?,
            cost_queue_url: env.required("COST_QUEUE_URL")?,
            discovery_queue_url: env.required("DISCOVERY_QUEUE_URL")?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub sqs: aws_sdk_sqs::Client,
    pub cross_account: Arc<CrossAccount>,
    pub stage: String,
    pub target_policy: TargetPolicy,
    pub lookup: Arc<dyn Lookup>,
    pub deliverer: Arc<Deliverer>,
    pub limiter: Arc<RateLimiter>,
    pub run_queues: Arc<spotwise_store::runs::RunQueues>,
    pub notifications: spotwise_aws::Queue,
}

impl AppState {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Result<Self, ClientError> {
        let target_policy = TargetPolicy {
            dev_mode: config.common.dev_mode,
        };
        let lookup: Arc<dyn Lookup> = Arc::new(SystemLookup);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Ok(Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            run_queues: Arc::new(schedules::run_queues(&sqs, config)),
            notifications: spotwise_aws::Queue::new(sqs.clone(), &config.notifications_queue_url),
            sqs,
            cross_account: Arc::new(CrossAccount::new(sdk.clone(), "spotwise-api")),
            stage: config.common.stage.clone(),
            target_policy,
            deliverer: Arc::new(Deliverer::new(
                target_policy,
                Arc::clone(&lookup),
                REQUEST_TIMEOUT,
            )?),
            lookup,
            limiter: Arc::new(RateLimiter::new(config.rate_per_minute, config.rate_burst)),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spotwise API",
        description = "Spot capacity for EKS: tenants, keys, notifications and the audit log. \
            Authenticate with `Authorization: Bearer swk_...`. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`; \
            lists are paginated with `limit` and `cursor`.",
        version = "1"
    ),
    paths(
        health,
        tenant::get, tenant::create_key, tenant::list_keys, tenant::revoke_key,
        webhooks::list, webhooks::create, webhooks::get, webhooks::replace, webhooks::delete,
        webhooks::test, webhooks::deliveries,
        suppression::create_silence, suppression::list_silences, suppression::delete_silence,
        suppression::create_window, suppression::list_windows, suppression::delete_window,
        suppression::feed,
        audit::list, audit::export,
        clusters::list, clusters::detail, install::install, clusters::get_policy, clusters::put_policy,
        clusters::recommendations, clusters::recommendation, clusters::approve,
        clusters::list_actions, clusters::get_action, clusters::cancel_action,
        agent::heartbeat, agent::action_state, agent::action_result, agent::put_snapshot,
        costs::periods, costs::export, costs::reports, costs::report,
        accounts::external_id, accounts::link, accounts::list, accounts::validate, accounts::unlink,
        schedules::get_hibernation, schedules::put_hibernation, schedules::delete_hibernation,
        schedules::wake, schedules::preview, schedules::sleeps,
        schedules::validate_cron, schedules::list, schedules::create, schedules::get,
        schedules::replace, schedules::delete, schedules::pause, schedules::resume,
        schedules::trigger, schedules::list_runs,
        templates::list, templates::create, templates::get, templates::replace, templates::delete,
        pods::list,
    ),
    modifiers(&ApiKeyScheme),
)]
pub struct ApiDoc;

/// The bearer scheme, and the error answers every operation can give, so each handler only
/// documents its own.
struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, ResponseBuilder};

        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorResponse"))),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let mut common = vec![(
                    "400",
                    "A parameter or the body is invalid; `field` names it",
                )];
                if operation.security.is_some() {
                    common.push(("401", "No valid API key"));
                    common.push(("403", "The key's role does not allow this"));
                    common.push(("429", "Over the key's rate; see `Retry-After`"));
                }
                if path.contains('{') {
                    common.push(("404", "No such resource for this tenant"));
                }
                if operation.request_body.is_some() {
                    common.push(("415", "The body is not JSON"));
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/docs", get(docs))
        .route("/v1/tenant", get(tenant::get))
        .route("/v1/keys", get(tenant::list_keys).post(tenant::create_key))
        .route("/v1/keys/{id}", axum::routing::delete(tenant::revoke_key))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .put(webhooks::replace)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route(
            "/v1/silences",
            get(suppression::list_silences).post(suppression::create_silence),
        )
        .route(
            "/v1/silences/{id}",
            axum::routing::delete(suppression::delete_silence),
        )
        .route(
            "/v1/maintenance-windows",
            get(suppression::list_windows).post(suppression::create_window),
        )
        .route(
            "/v1/maintenance-windows/{id}",
            axum::routing::delete(suppression::delete_window),
        )
        .route("/v1/notifications", get(suppression::feed))
        .route("/v1/accounts", get(accounts::list).post(accounts::link))
        .route("/v1/accounts/external-id", post(accounts::external_id))
        .route("/v1/accounts/{id}", axum::routing::delete(accounts::unlink))
        .route("/v1/accounts/{id}/validate", post(accounts::validate))
        .route("/v1/clusters", get(clusters::list))
        .route("/v1/clusters/{id}", get(clusters::detail))
        .route("/v1/clusters/{id}/agent", post(install::install))
        .route(
            "/v1/clusters/{id}/policy",
            get(clusters::get_policy).put(clusters::put_policy),
        )
        .route(
            "/v1/clusters/{id}/recommendations",
            get(clusters::recommendations),
        )
        .route(
            "/v1/clusters/{id}/recommendations/{revision}",
            get(clusters::recommendation),
        )
        .route(
            "/v1/clusters/{id}/recommendations/{revision}/approve",
            post(clusters::approve),
        )
        .route("/v1/clusters/{id}/costs", get(costs::periods))
        .route("/v1/clusters/{id}/costs/export", get(costs::export))
        .route("/v1/clusters/{id}/savings-reports", get(costs::reports))
        .route(
            "/v1/clusters/{id}/savings-reports/{month}",
            get(costs::report),
        )
        .route(
            "/v1/clusters/{id}/hibernation",
            get(schedules::get_hibernation)
                .put(schedules::put_hibernation)
                .delete(schedules::delete_hibernation),
        )
        .route("/v1/clusters/{id}/hibernation/wake", post(schedules::wake))
        .route(
            "/v1/clusters/{id}/hibernation/preview",
            get(schedules::preview),
        )
        .route(
            "/v1/clusters/{id}/hibernation/sleeps",
            get(schedules::sleeps),
        )
        .route(
            "/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/v1/schedules/validate-cron",
            post(schedules::validate_cron),
        )
        .route(
            "/v1/schedules/{id}",
            get(schedules::get)
                .put(schedules::replace)
                .delete(schedules::delete),
        )
        .route("/v1/schedules/{id}/pause", post(schedules::pause))
        .route("/v1/schedules/{id}/resume", post(schedules::resume))
        .route("/v1/schedules/{id}/trigger", post(schedules::trigger))
        .route("/v1/schedules/{id}/runs", get(schedules::list_runs))
        .route("/v1/clusters/{id}/pod-history", get(pods::list))
        .route(
            "/v1/clusters/{id}/node-templates",
            get(templates::list).post(templates::create),
        )
        .route(
            "/v1/clusters/{id}/node-templates/{template_id}",
            get(templates::get)
                .put(templates::replace)
                .delete(templates::delete),
        )
        .route("/v1/actions", get(clusters::list_actions))
        .route("/v1/actions/{id}", get(clusters::get_action))
        .route("/v1/actions/{id}/cancel", post(clusters::cancel_action))
        .route("/v1/agent/heartbeat", post(agent::heartbeat))
        .route("/v1/agent/actions/{id}", get(agent::action_state))
        .route("/v1/agent/actions/{id}/result", post(agent::action_result))
        .route(
            "/v1/agent/snapshot",
            axum::routing::put(agent::put_snapshot),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/export", get(audit::export))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A page that renders the OpenAPI document (Redoc, loaded from its CDN).
async fn docs() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Spotwise API</title></head><body>",
        "<redoc spec-url=\"/v1/openapi.json\"></redoc>",
        "<script src=\"https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js\"></script>",
        "</body></html>"
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    stage: String,
}

/// Healthy when the table answers a read. No key needed.
#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = error::ErrorResponse)))]
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

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
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
mod tests;
