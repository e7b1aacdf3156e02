//! Silences, maintenance windows, and the notification feed they act on.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use spotwise_core::domain::Role;
use spotwise_notify::record::FeedEntry;
use spotwise_notify::routing::{Maintenance, MaintenanceWindow, Matcher, Silence};
use spotwise_store::keys::{self, prefix};
use spotwise_store::{Item, PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse, JsonBody, max_chars};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::resource_id;

const MAX_SILENCE: time::Duration = time::Duration::days(90);
const MAX_MATCHERS: usize = 20;
/// A silence's comment is shown with every notification it suppresses.
const MAX_COMMENT: usize = 1000;

fn new_id() -> String {
    ulid::Ulid::new().to_string().to_ascii_lowercase()
}

fn check_matchers(matchers: &[Matcher]) -> Result<(), ApiError> {
    if matchers.len() > MAX_MATCHERS {
        return Err(ApiError::field(
            "matchers",
            format!("at most {MAX_MATCHERS}"),
        ));
    }
    for (i, m) in matchers.iter().enumerate() {
        if m.label.trim().is_empty() {
            return Err(ApiError::field(
                format!("matchers[{i}].label"),
                "must not be empty",
            ));
        }
        max_chars(&format!("matchers[{i}].label"), &m.label, 253)?;
        max_chars(&format!("matchers[{i}].value"), &m.value, 253)?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceInput {
    /// All must match; `event_type`, `severity` and `cluster` match like labels.
    #[schema(min_items = 1, max_items = 20)]
    pub matchers: Vec<Matcher>,
    /// Default: now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[schema(min_length = 1, max_length = 1000)]
    pub comment: String,
}

#[utoipa::path(post, path = "/v1/silences", tag = "notifications", request_body = SilenceInput,
    responses((status = 201, body = Silence), (status = 400, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn create_silence(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<SilenceInput>,
) -> Result<(StatusCode, Json<Silence>), ApiError> {
    caller.require(Role::Operator)?;
    if input.matchers.is_empty() {
        return Err(ApiError::field(
            "matchers",
            "a silence needs at least one matcher",
        ));
    }
    check_matchers(&input.matchers)?;
    let now = OffsetDateTime::now_utc();
    let starts_at = input.starts_at.unwrap_or(now);
    if input.expires_at <= starts_at || input.expires_at <= now {
        return Err(ApiError::field(
            "expires_at",
            "must be after starts_at and in the future",
        ));
    }
    if input.expires_at - starts_at > MAX_SILENCE || starts_at - now > MAX_SILENCE {
        return Err(ApiError::field(
            "expires_at",
            "a silence lasts at most 90 days and starts within 90 days",
        ));
    }
    max_chars("comment", &input.comment, MAX_COMMENT)?;
    if input.comment.trim().is_empty() {
        return Err(ApiError::field(
            "comment",
            "say why (it is shown with every suppressed notification)",
        ));
    }
    let silence = Silence {
        id: new_id(),
        matchers: input.matchers,
        starts_at,
        expires_at: input.expires_at,
        comment: input.comment,
    };
    let item = Item::new(keys::silence(&caller.tenant, &silence.id), &silence)
        .expiring_at(silence.expires_at + time::Duration::days(1));
    audit::commit(
        &state,
        vec![Write::put(&item, PutCondition::IfAbsent)?],
        audit::entry(
            &caller,
            "silence.create",
            format!("silence/{}", silence.id),
            None,
            snapshot(&silence),
        )?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(silence)))
}

#[utoipa::path(get, path = "/v1/silences", tag = "notifications", params(PageParams),
    responses((status = 200, body = Page<Silence>)), security(("api_key" = [])))]
pub async fn list_silences(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<Silence>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page
        .apply(Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix::SILENCE))?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |s| s,
    )))
}

#[utoipa::path(delete, path = "/v1/silences/{id}", tag = "notifications", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn delete_silence(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let key = keys::silence(&caller.tenant, resource_id(&id, "silence")?);
    let item = state
        .store
        .get::<Silence>(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("silence {id}")))?;
    audit::commit(
        &state,
        vec![Write::delete(&key)],
        audit::entry(
            &caller,
            "silence.delete",
            format!("silence/{id}"),
            snapshot(&item.body),
            None,
        )?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceInput {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// `FREQ=DAILY|WEEKLY`, optional `INTERVAL`, `BYDAY=MO,..`, `BYHOUR`, `BYMINUTE` (UTC).
    #[schema(max_length = 200)]
    pub rule: String,
    /// The first occurrence.
    #[serde(with = "time::serde::rfc3339")]
    pub starts: OffsetDateTime,
    /// At most a week.
    #[schema(minimum = 1, maximum = 10080)]
    pub duration_minutes: u32,
    /// Empty: every notification.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub matchers: Vec<Matcher>,
}

#[utoipa::path(post, path = "/v1/maintenance-windows", tag = "notifications", request_body = MaintenanceInput,
    responses((status = 201, body = Maintenance), (status = 400, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn create_window(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<MaintenanceInput>,
) -> Result<(StatusCode, Json<Maintenance>), ApiError> {
    caller.require(Role::Operator)?;
    if input.name.trim().is_empty() || input.name.chars().count() > 100 {
        return Err(ApiError::field("name", "must be 1 to 100 characters"));
    }
    if !(1..=7 * 24 * 60).contains(&input.duration_minutes) {
        return Err(ApiError::field("duration_minutes", "must be 1 to 10080"));
    }
    check_matchers(&input.matchers)?;
    max_chars("rule", &input.rule, 200)?;
    let window = MaintenanceWindow {
        rule: input.rule,
        starts: input.starts,
        duration_minutes: input.duration_minutes,
    };
    window
        .validate()
        .map_err(|e| ApiError::field("rule", e.to_string()))?;
    let maintenance = Maintenance {
        id: new_id(),
        name: input.name,
        window,
        matchers: input.matchers,
    };
    audit::commit(
        &state,
        vec![Write::put(
            &Item::new(
                keys::maintenance_window(&caller.tenant, &maintenance.id),
                &maintenance,
            ),
            PutCondition::IfAbsent,
        )?],
        audit::entry(
            &caller,
            "maintenance_window.create",
            format!("maintenance-window/{}", maintenance.id),
            None,
            snapshot(&maintenance),
        )?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(maintenance)))
}

#[utoipa::path(get, path = "/v1/maintenance-windows", tag = "notifications", params(PageParams),
    responses((status = 200, body = Page<Maintenance>)), security(("api_key" = [])))]
pub async fn list_windows(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<Maintenance>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix::MAINTENANCE),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |m| m,
    )))
}

#[utoipa::path(delete, path = "/v1/maintenance-windows/{id}", tag = "notifications", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn delete_window(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let key = keys::maintenance_window(&caller.tenant, resource_id(&id, "maintenance window")?);
    let item = state
        .store
        .get::<Maintenance>(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("maintenance window {id}")))?;
    audit::commit(
        &state,
        vec![Write::delete(&key)],
        audit::entry(
            &caller,
            "maintenance_window.delete",
            format!("maintenance-window/{id}"),
            snapshot(&item.body),
            None,
        )?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's notifications, newest first, with where each went or what suppressed it
/// (kept 30 days).
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(PageParams),
    responses((status = 200, body = Page<FeedEntry>)), security(("api_key" = [])))]
pub async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<FeedEntry>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(prefix::NOTIFICATION)
            .newest_first(),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |e| e,
    )))
}
