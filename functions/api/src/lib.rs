//! The Spotwise REST API: one axum Router, run by lambda_http in Lambda and by a local server
//! otherwise. Versioned under `/v1`; every error is `{"error": {"code", "message"}}`.

pub mod accounts;
pub mod agent;
pub mod audit;
pub mod auth;
pub mod clusters;
pub mod console;
pub mod costs;
pub mod error;
pub mod identity;
pub mod install;
pub mod paging;
pub mod pods;
pub mod rightsizing;
pub mod schedules;
pub mod status;
pub mod suppression;
pub mod templates;
pub mod tenant;
pub mod users;
pub mod versioning;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use spotwise_aws::cross_account::CrossAccount;
use spotwise_aws::{Bucket, InterruptionBus, Vault};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_notify::deliver::{ClientError, Deliverer, REQUEST_TIMEOUT};
use spotwise_notify::ssrf::{Lookup, SystemLookup, TargetPolicy};
use spotwise_store::Store;
use spotwise_store::keys;
use time::OffsetDateTime;
use tracing::error;
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{KeyCache, RateLimiter};
pub use crate::error::ApiError;

pub struct Config {
    pub common: CommonConfig,
    /// Requests per minute per API key, and the burst above it.
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    /// How long a key's record is cached in an instance: the most a revocation takes to reach
    /// every instance.
    pub key_cache: Duration,
    /// Where manually triggered scheduled runs are sent, and where their failures are told.
    pub optimize_queue_url: String,
    pub cost_queue_url: String,
    pub discovery_queue_url: String,
    pub notifications_queue_url: String,
    /// The KMS key cluster and webhook secrets are sealed with.
    pub secrets_key_id: String,
    /// The bucket agents upload cluster snapshots to.
    pub snapshot_bucket: String,
    /// The event bus linked accounts forward interruption events to: its name and ARN.
    pub interruption_event_bus: String,
    pub interruption_event_bus_arn: String,
    /// The user pool people sign in with.
    pub identity: identity::IdentityConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            rate_per_minute: env.parse_or("API_RATE_PER_MINUTE", 600_u32)?.max(1),
            rate_burst: env.parse_or("API_RATE_BURST", 100_u32)?.max(1),
            key_cache: Duration::from_secs(env.parse_or("API_KEY_CACHE_SECONDS", 60_u64)?),
            optimize_queue_url: env.required("OPTIMIZE_QUEUE_URL")?,
            cost_queue_url: env.required("COST_QUEUE_URL")?,
            discovery_queue_url: env.required("DISCOVERY_QUEUE_URL")?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            secrets_key_id: env.required("SECRETS_KEY_ID")?,
            snapshot_bucket: env.required("SNAPSHOT_BUCKET")?,
            interruption_event_bus: env.required("INTERRUPTION_EVENT_BUS")?,
            interruption_event_bus_arn: env.required("INTERRUPTION_EVENT_BUS_ARN")?,
            identity: identity::IdentityConfig::from_env(env)?,
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
    pub keys: Arc<KeyCache>,
    pub run_queues: Arc<spotwise_store::runs::RunQueues>,
    pub notifications: spotwise_aws::Queue,
    pub vault: Arc<Vault>,
    pub snapshots: Bucket,
    pub interruption_bus: Arc<InterruptionBus>,
    /// The time the agent routes go by.
    pub clock: Clock,
    pub identity: Arc<Identity>,
}

/// Signing people in, and checking the tokens they then present.
pub struct Identity {
    pub verifier: identity::TokenVerifier,
    pub directory: identity::Directory,
}

/// The system clock, or one its holder sets: the cost model replays a day of agent reports in
/// minutes, and heartbeat windows and snapshot ages must follow the day, not the wall clock.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<std::sync::Mutex<OffsetDateTime>>>);

impl Clock {
    pub fn set_by_caller(at: OffsetDateTime) -> Self {
        Self(Some(Arc::new(std::sync::Mutex::new(at))))
    }

    pub fn set(&self, at: OffsetDateTime) {
        if let Some(Ok(mut now)) = self.0.as_ref().map(|m| m.lock()) {
            *now = at;
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match self.0.as_ref().map(|m| m.lock()) {
            Some(Ok(now)) => *now,
            _ => OffsetDateTime::now_utc(),
        }
    }
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
            vault: Arc::new(Vault::new(sdk, &config.secrets_key_id)),
            snapshots: Bucket::new(sdk, &config.snapshot_bucket),
            interruption_bus: Arc::new(InterruptionBus::new(
                sdk,
                &config.interruption_event_bus,
                &config.interruption_event_bus_arn,
            )),
            clock: Clock::default(),
            identity: Arc::new(Identity {
                verifier: identity::TokenVerifier::new(&config.identity, reqwest::Client::new()),
                directory: identity::Directory::new(
                    aws_sdk_cognitoidentityprovider::Client::new(sdk),
                    &config.identity,
                ),
            }),
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
            keys: Arc::new(KeyCache::new(config.key_cache)),
        })
    }
}

#[derive(OpenApi)]
#[openapi(info(
    title = "Spotwise API",
    description = "Spot capacity for EKS: tenants, keys, notifications and the audit log. \
            Authenticate with `Authorization: Bearer swk_...` (an API key), or with a person's Cognito ID token \
            from `POST /v1/session`. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`; \
            lists are paginated with `limit` and `cursor`.",
    version = "1"
))]
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
                    common.push(("413", "The body is over the limit of 64 KiB"));
                    common.push((
                        "415",
                        "The body is not JSON (`application/json`, optionally with a UTF-8 charset)",
                    ));
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

/// A request body that refuses unknown fields is also flattened into the stored model the API
/// returns (`HibernationSettings` into `HibernationSchedule`). Referenced from an `allOf`, its
/// `additionalProperties: false` would forbid the model's own fields, so there the reference
/// becomes a copy that allows them; the request body keeps the strict schema.
fn open_flattened_settings(document: &mut utoipa::openapi::OpenApi) {
    let Some(components) = document.components.as_mut() else {
        return;
    };
    let strict: BTreeMap<String, Schema> = components
        .schemas
        .iter()
        .filter_map(|(name, schema)| match schema {
            RefOr::T(Schema::Object(object)) if object.additional_properties.is_some() => {
                let mut open = object.clone();
                open.additional_properties = None;
                Some((format!("#/components/schemas/{name}"), Schema::Object(open)))
            }
            _ => None,
        })
        .collect();
    for schema in components.schemas.values_mut() {
        open_all_of_refs(schema, &strict);
    }
}

/// Walks a schema, including the ones generic wrappers such as `Page<T>` inline, replacing
/// strict references that sit in an `allOf`.
fn open_all_of_refs(schema: &mut RefOr<Schema>, strict: &BTreeMap<String, Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::AllOf(all_of) => {
            for item in &mut all_of.items {
                if let RefOr::Ref(reference) = item
                    && let Some(open) = strict.get(&reference.ref_location)
                {
                    *item = RefOr::T(open.clone());
                } else {
                    open_all_of_refs(item, strict);
                }
            }
        }
        Schema::Object(object) => {
            for property in object.properties.values_mut() {
                open_all_of_refs(property, strict);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                open_all_of_refs(items, strict);
            }
        }
        Schema::OneOf(one_of) => {
            for item in &mut one_of.items {
                open_all_of_refs(item, strict);
            }
        }
        _ => {}
    }
}

/// Request bodies are small JSON documents; the longest field limits add up to well under this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every documented route, listed once: each handler's `#[utoipa::path]` gives both its route
/// and its operation in the OpenAPI document.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(tenant::get))
        .routes(routes!(status::settings, status::put_settings))
        .routes(routes!(status::public))
        .routes(routes!(users::sign_in))
        .routes(routes!(users::answer_challenge))
        .routes(routes!(users::refresh))
        .routes(routes!(users::me))
        .routes(routes!(users::sign_out))
        .routes(routes!(
            users::start_mfa,
            users::confirm_mfa,
            users::disable_mfa
        ))
        .routes(routes!(users::reset_mfa))
        .routes(routes!(users::list, users::invite))
        .routes(routes!(users::change_role, users::remove))
        .routes(routes!(tenant::list_keys, tenant::create_key))
        .routes(routes!(tenant::revoke_key))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::replace, webhooks::delete))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(
            suppression::list_silences,
            suppression::create_silence
        ))
        .routes(routes!(suppression::delete_silence))
        .routes(routes!(
            suppression::list_windows,
            suppression::create_window
        ))
        .routes(routes!(suppression::delete_window))
        .routes(routes!(suppression::feed))
        .routes(routes!(accounts::list, accounts::link))
        .routes(routes!(accounts::external_id))
        .routes(routes!(accounts::unlink))
        .routes(routes!(accounts::validate))
        .routes(routes!(clusters::list))
        .routes(routes!(clusters::detail))
        .routes(routes!(install::install))
        .routes(routes!(clusters::get_policy, clusters::put_policy))
        .routes(routes!(clusters::recommendations))
        .routes(routes!(clusters::recommendation))
        .routes(routes!(clusters::approve))
        .routes(routes!(clusters::rollout))
        .routes(routes!(clusters::cancel_rollout))
        .routes(routes!(rightsizing::get))
        .routes(routes!(rightsizing::apply))
        .routes(routes!(costs::periods))
        .routes(routes!(costs::export))
        .routes(routes!(costs::reports))
        .routes(routes!(costs::report))
        .routes(routes!(
            schedules::get_hibernation,
            schedules::put_hibernation,
            schedules::delete_hibernation
        ))
        .routes(routes!(schedules::wake))
        .routes(routes!(schedules::preview))
        .routes(routes!(schedules::sleeps))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(schedules::validate_cron))
        .routes(routes!(
            schedules::get,
            schedules::replace,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::trigger))
        .routes(routes!(schedules::list_runs))
        .routes(routes!(pods::list))
        .routes(routes!(templates::list, templates::create))
        .routes(routes!(
            templates::get,
            templates::replace,
            templates::delete
        ))
        .routes(routes!(clusters::list_actions))
        .routes(routes!(clusters::get_action))
        .routes(routes!(clusters::cancel_action))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::action_state))
        .routes(routes!(agent::action_result))
        .routes(routes!(agent::start_snapshot_upload))
        .routes(routes!(agent::confirm_snapshot_upload))
        .routes(routes!(audit::list))
        .routes(routes!(audit::export))
}

/// The API, and the console that is its client.
pub fn app(state: AppState) -> Router {
    let secure_cookies = !state.target_policy.dev_mode;
    let api = api(state);
    console::router(api.clone(), secure_cookies)
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/console") }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(api)
}

fn api(state: AppState) -> Router {
    let (documented, mut document) = documented_routes().split_for_parts();
    // The common answers go on once every route's operation is in the document.
    utoipa::Modify::modify(&ApiKeyScheme, &mut document);
    open_flattened_settings(&mut document);
    let reference = Html(console::reference::render(
        &serde_json::to_value(&document).unwrap_or_default(),
    ));
    let document = Arc::new(document);
    documented
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { Json(document) }
            }),
        )
        .route("/v1/docs", get(move || async move { reference.clone() }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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
        .get::<serde_json::Value>(&keys::health_probe())
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
