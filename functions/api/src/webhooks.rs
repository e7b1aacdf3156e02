//! Notification endpoints: CRUD, a test delivery, and the delivery log.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use spotwise_core::domain::{Notification, Role, Severity};
use spotwise_notify::deliver::Verdict;
use spotwise_notify::endpoint::Endpoint;
use spotwise_notify::format::{EndpointKind, render};
use spotwise_notify::record::{DeliveryOutcome, DeliveryRecord};
use spotwise_notify::routing::Route;
use spotwise_notify::ssrf;
use spotwise_store::keys::{self, prefix};
use spotwise_store::webhooks::{self, StoredEndpoint};
use spotwise_store::{Item, PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse, JsonBody, label_map, max_chars, max_items};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::{etag, if_match, resource_id};

const DELIVERY_LOG_RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// An endpoint as the API shows it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub name: String,
    pub kind: EndpointKind,
    pub url: String,
    pub enabled: bool,
    pub min_severity: Severity,
    pub event_types: Vec<String>,
    pub label_selector: BTreeMap<String, String>,
    pub template: Option<String>,
    pub rate_per_minute: u32,
    pub burst: u32,
    /// Set when the platform disabled the endpoint after failed deliveries.
    pub disabled_reason: Option<String>,
    /// The secret's last four characters, to tell secrets apart.
    pub secret_hint: String,
    pub version: u64,
}

impl Webhook {
    /// Who may edit the endpoint sees its URL; viewers and the audit log see it redacted.
    fn shown_to(e: &Endpoint, version: u64, caller: &Caller) -> Self {
        let mut webhook = Self::new(e, version);
        if caller.require(Role::Operator).is_err() {
            webhook.url = e.redacted_url();
        }
        webhook
    }

    fn for_audit(e: &Endpoint, version: u64) -> Option<serde_json::Value> {
        let mut webhook = Self::new(e, version);
        webhook.url = e.redacted_url();
        snapshot(&webhook)
    }

    fn new(e: &Endpoint, version: u64) -> Self {
        let hint: String = e
            .secret
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Self {
            id: e.id.clone(),
            name: e.name.clone(),
            kind: e.route.kind,
            url: e.url.clone(),
            enabled: e.route.enabled,
            min_severity: e.route.min_severity,
            event_types: e.route.event_types.clone(),
            label_selector: e.route.label_selector.clone(),
            template: e.template.clone(),
            rate_per_minute: e.rate_per_minute,
            burst: e.burst,
            disabled_reason: e.disabled_reason.clone(),
            secret_hint: format!("…{hint}"),
            version,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_severity() -> Severity {
    Severity::Info
}

/// What a client sends to create or replace an endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub kind: EndpointKind,
    /// `https` URL reaching a public address.
    #[schema(pattern = "^https://[^/@]+(/.*)?$", max_length = 2048)]
    pub url: String,
    /// Signs generic webhooks. Generated when left out on create; kept when left out on
    /// replace; a new one rotates it.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_severity")]
    pub min_severity: Severity,
    /// Empty: every event type.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub event_types: Vec<String>,
    /// Every pair must be among a notification's labels (at most 20 pairs).
    #[serde(default)]
    pub label_selector: BTreeMap<String, String>,
    /// Message text with `{cluster}`, `{severity}`, `{title}`, `{body}`, `{event_type}`,
    /// `{tenant}`, `{occurred_at}`, `{savings}`.
    #[schema(max_length = 4000)]
    pub template: Option<String>,
    #[schema(minimum = 1, maximum = 600)]
    pub rate_per_minute: Option<u32>,
    #[schema(minimum = 1, maximum = 100)]
    pub burst: Option<u32>,
}

/// A created endpoint with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    pub secret: String,
}

fn generate_secret() -> String {
    let mut bytes = [0_u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

impl WebhookInput {
    /// The size of every field, before anything reads it (the URL guard included).
    fn check_bounds(&self) -> Result<(), ApiError> {
        max_chars("name", &self.name, 100)?;
        max_chars("url", &self.url, 2048)?;
        if let Some(secret) = &self.secret {
            max_chars("secret", secret, 256)?;
        }
        max_items("event_types", self.event_types.len(), 50)?;
        for (i, event_type) in self.event_types.iter().enumerate() {
            max_chars(&format!("event_types[{i}]"), event_type, 100)?;
        }
        label_map("label_selector", self.label_selector.iter(), 20)?;
        if let Some(template) = &self.template {
            max_chars("template", template, 4000)?;
        }
        Ok(())
    }

    fn into_endpoint(self, caller: &Caller, id: String, secret: String) -> Endpoint {
        Endpoint {
            id,
            tenant_id: caller.tenant.clone(),
            name: self.name,
            url: self.url,
            secret,
            route: Route {
                kind: self.kind,
                enabled: self.enabled,
                min_severity: self.min_severity,
                event_types: self.event_types,
                label_selector: self.label_selector,
            },
            template: self.template,
            rate_per_minute: self.rate_per_minute.unwrap_or(30),
            burst: self.burst.unwrap_or(10),
            disabled_reason: None,
        }
    }
}

/// The endpoint's own checks, then the address its host resolves to: a name that already
/// points inside is refused on save (deliveries check again on every connection).
async fn validate(state: &AppState, endpoint: &Endpoint) -> Result<(), ApiError> {
    endpoint
        .validate(state.target_policy)
        .map_err(|e| ApiError::field(e.field, e.reason))?;
    if let Ok(url) = ssrf::check_url(&endpoint.url, state.target_policy)
        && let Some(host) = url.host_str()
        && host.parse::<std::net::IpAddr>().is_err()
        && let Err(e @ ssrf::SsrfError::Forbidden { .. }) =
            ssrf::resolve(host, state.target_policy, state.lookup.as_ref()).await
    {
        return Err(ApiError::field("url", e.to_string()));
    }
    Ok(())
}

/// The endpoint, its URL and secret opened.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<Item<Endpoint>, ApiError> {
    let id = resource_id(id, "webhook")?;
    let stored = state
        .store
        .get::<StoredEndpoint>(&keys::webhook(&caller.tenant, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id}")))?;
    opened(state, stored).await
}

async fn opened(
    state: &AppState,
    stored: Item<StoredEndpoint>,
) -> Result<Item<Endpoint>, ApiError> {
    let endpoint = webhooks::open(&state.vault, stored.body.clone())
        .await
        .map_err(|e| ApiError::internal("opening a webhook's URL and secret", &e))?;
    Ok(stored.map(|_| endpoint))
}

/// The item as the table keeps it, URL and secret sealed.
async fn sealed(state: &AppState, item: &Item<Endpoint>) -> Result<Item<StoredEndpoint>, ApiError> {
    let stored = webhooks::seal(&state.vault, item.body.clone())
        .await
        .map_err(|e| ApiError::internal("sealing a webhook's URL and secret", &e))?;
    Ok(item.clone().map(|_| stored))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(PageParams),
    responses((status = 200, body = Page<Webhook>)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<Webhook>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page
        .apply(Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix::WEBHOOK))?;
    let stored = state.store.query::<StoredEndpoint>(&query).await?;
    let mut items = Vec::with_capacity(stored.items.len());
    for item in stored.items {
        let item = opened(&state, item).await?;
        items.push(Webhook::shown_to(&item.body, item.version, &caller));
    }
    Ok(Json(Page {
        items,
        next_cursor: stored.next,
    }))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookInput,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorResponse), (status = 403, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<WebhookInput>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    input.check_bounds()?;
    let secret = input.secret.clone().unwrap_or_else(generate_secret);
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let endpoint = input.into_endpoint(&caller, id.clone(), secret.clone());
    validate(&state, &endpoint).await?;
    let item = sealed(
        &state,
        &Item::new(keys::webhook(&caller.tenant, &id), endpoint.clone()),
    )
    .await?;
    audit::commit(
        &state,
        vec![Write::put(&item, PutCondition::IfAbsent)?],
        audit::entry(
            &caller,
            "webhook.create",
            format!("webhook/{id}"),
            None,
            Webhook::for_audit(&endpoint, 1),
        )?,
    )
    .await?;
    let webhook = Webhook::new(&endpoint, 1);
    Ok((
        StatusCode::CREATED,
        [(header::ETAG, etag(1))],
        Json(CreatedWebhook { webhook, secret }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Webhook, headers(("ETag" = String))), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let item = load(&state, &caller, &id).await?;
    Ok((
        [(header::ETAG, etag(item.version))],
        Json(Webhook::shown_to(&item.body, item.version, &caller)),
    )
        .into_response())
}

/// Replaces an endpoint. With `If-Match`, only if it is still at that version. Enabling an
/// endpoint the platform disabled clears its failure count.
#[utoipa::path(put, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag of the version being replaced")),
    request_body = WebhookInput,
    responses((status = 200, body = Webhook), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse), (status = 412, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<WebhookInput>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    input.check_bounds()?;
    let mut item = load(&state, &caller, &id).await?;
    if_match(&headers, item.version)?;
    let before = Webhook::for_audit(&item.body, item.version);
    let secret = input
        .secret
        .clone()
        .unwrap_or_else(|| item.body.secret.clone());
    let mut endpoint = input.into_endpoint(&caller, id.clone(), secret);
    if !endpoint.route.enabled {
        endpoint.disabled_reason = item.body.disabled_reason.clone();
    }
    validate(&state, &endpoint).await?;
    let re_enabled = endpoint.route.enabled && !item.body.route.enabled;
    item.body = endpoint;
    let version = item.version + 1;
    let mut writes = vec![Write::versioned(&sealed(&state, &item).await?)?];
    if re_enabled {
        writes.push(Write::delete(&keys::webhook_failures(&caller.tenant, &id)));
    }
    audit::commit(
        &state,
        writes,
        audit::entry(
            &caller,
            "webhook.update",
            format!("webhook/{id}"),
            before,
            Webhook::for_audit(&item.body, version),
        )?,
    )
    .await?;
    let after = Webhook::new(&item.body, version);
    Ok(([(header::ETAG, etag(version))], Json(after)).into_response())
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let item = load(&state, &caller, &id).await?;
    audit::commit(
        &state,
        vec![Write::delete(&item.key)],
        audit::entry(
            &caller,
            "webhook.delete",
            format!("webhook/{id}"),
            Webhook::for_audit(&item.body, item.version),
            None,
        )?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a test delivery did.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub outcome: DeliveryOutcome,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The start of the receiver's answer, or the error.
    pub response: String,
}

/// Sends a test notification now, once (no retries), and returns what happened. Works on a
/// disabled endpoint too, to check a fix before enabling it.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<TestResult>, ApiError> {
    caller.require(Role::Operator)?;
    let endpoint = load(&state, &caller, &id).await?.body;
    let now = OffsetDateTime::now_utc();
    let notification_id = format!(
        "test-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let notification = Notification {
        tenant_id: caller.tenant.clone(),
        event_type: "test".into(),
        severity: Severity::Info,
        cluster_id: None,
        labels: BTreeMap::new(),
        title: format!("Spotwise test notification for \"{}\"", endpoint.name),
        body: "If you can read this, the endpoint receives Spotwise notifications.".into(),
        links: Vec::new(),
        occurred_at: now,
        dedup_key: notification_id.clone(),
    };
    let body = render(
        endpoint.route.kind,
        &notification,
        endpoint.template().as_ref(),
    )
    .to_string()
    .into_bytes();
    let secret =
        (endpoint.route.kind == EndpointKind::Generic).then_some(endpoint.secret.as_bytes());
    let delivery = state
        .deliverer
        .post(&endpoint.url, body, secret, &notification_id, now)
        .await;
    let outcome = match delivery.verdict {
        Verdict::Delivered => DeliveryOutcome::Delivered,
        Verdict::Retry { .. } => DeliveryOutcome::Failed,
        Verdict::Rejected { .. } => DeliveryOutcome::Rejected,
    };
    let latency_ms = u64::try_from(delivery.latency.as_millis()).unwrap_or(u64::MAX);
    let record = DeliveryRecord {
        endpoint_id: id.clone(),
        notification_id: notification_id.clone(),
        event_type: "test".into(),
        attempt: 1,
        outcome,
        status: delivery.status,
        latency_ms,
        response: delivery.snippet.clone(),
        at: now,
    };
    let key = keys::webhook_delivery(&caller.tenant, &id, &ulid::Ulid::new().to_string());
    let logged = Item::new(key, record).expiring_at(now + DELIVERY_LOG_RETENTION);
    audit::commit(
        &state,
        vec![Write::put(&logged, PutCondition::Always)?],
        audit::entry(&caller, "webhook.test", format!("webhook/{id}"), None, None)?,
    )
    .await?;
    Ok(Json(TestResult {
        outcome,
        status: delivery.status,
        latency_ms,
        response: delivery.snippet,
    }))
}

/// The endpoint's delivery attempts, newest first (kept 30 days).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<DeliveryRecord>), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<DeliveryRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    load(&state, &caller, &id).await?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(keys::webhook_deliveries_prefix(&id))
            .newest_first(),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |r| r,
    )))
}
