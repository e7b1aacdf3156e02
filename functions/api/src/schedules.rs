//! Hibernation schedules (a weekly matrix per cluster, a manual wake-up, a preview of the next
//! transitions, past sleeps) and scheduled runs (cron per cluster: validate with the next run
//! times, pause/resume, trigger now, run history). The scheduler function acts on both.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use spotwise_core::domain::Role;
use spotwise_schedule::model::HibernationState;
use spotwise_schedule::model::{
    HibernationSchedule, HibernationSettings, RunRecord, ScheduleSettings, ScheduleStatus,
    ScheduledRun, SleepRecord,
};
use spotwise_schedule::{Cron, Transition, Zone};
use spotwise_store::keys::{self, prefix};
use spotwise_store::runs::{self, RunQueues};
use spotwise_store::{Item, costs};
use spotwise_store::{PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::clusters::load_cluster;
use crate::error::{ApiError, ErrorResponse, JsonBody, label_map, max_chars, max_items};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::{etag, if_match, resource_id};

/// A manual wake-up lasts at most this long.
const MAX_WAKE: time::Duration = time::Duration::days(7);
const PREVIEW_RUNS: usize = 5;

// ---------------------------------------------------------------- hibernation

/// The schedule, and the sleep in progress if there is one.
#[derive(Debug, Serialize, ToSchema)]
pub struct HibernationView {
    pub schedule: HibernationSchedule,
    /// Present while the cluster is asleep: since when, and what waking will restore.
    pub asleep: Option<HibernationState>,
    pub version: u64,
}

fn validate_hibernation(input: &HibernationSettings) -> Result<(), ApiError> {
    max_chars("time_zone", &input.time_zone, 64)?;
    max_items("exclude_namespaces", input.exclude_namespaces.len(), 100)?;
    max_items("exclude_node_groups", input.exclude_node_groups.len(), 100)?;
    label_map("exclude_labels", input.exclude_labels.iter(), 50)?;
    Zone::new(&input.time_zone).map_err(|e| ApiError::field("time_zone", e.to_string()))?;
    for (i, ns) in input.exclude_namespaces.iter().enumerate() {
        if !spotwise_core::ids::is_dns_label(ns) {
            return Err(ApiError::field(
                format!("exclude_namespaces[{i}]"),
                "is not a namespace name",
            ));
        }
    }
    for (i, group) in input.exclude_node_groups.iter().enumerate() {
        if group.is_empty() || group.len() > 63 {
            return Err(ApiError::field(
                format!("exclude_node_groups[{i}]"),
                "must be 1 to 63 characters",
            ));
        }
    }
    Ok(())
}

/// Nothing stored yet: disabled, always awake, UTC, at version 0.
fn default_schedule(caller: &Caller, cluster: &spotwise_core::ClusterId) -> HibernationSchedule {
    HibernationSchedule {
        tenant_id: caller.tenant.clone(),
        cluster_id: cluster.clone(),
        settings: HibernationSettings::default(),
        wake_until: None,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

/// `version` is the stored version an update replaces; a new schedule (0) is written at 1.
fn hibernation_item(schedule: HibernationSchedule, version: u64) -> Item<HibernationSchedule> {
    let key = keys::hibernation_schedule(&schedule.tenant_id, &schedule.cluster_id);
    let index = keys::hibernation_schedules_index(&schedule.tenant_id, &schedule.cluster_id);
    let mut item = Item::new(key, schedule).with_gsi1(index);
    item.version = version.max(1);
    item
}

async fn load_hibernation(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(HibernationSchedule, u64, Option<HibernationState>), ApiError> {
    let cluster = load_cluster(state, caller, id).await?;
    let schedule_key = keys::hibernation_schedule(&caller.tenant, &cluster.id);
    let state_key = keys::hibernation_state(&caller.tenant, &cluster.id);
    let (stored, asleep) = tokio::join!(
        state.store.get::<HibernationSchedule>(&schedule_key),
        state.store.get::<HibernationState>(&state_key),
    );
    let (schedule, version) = stored?.map_or_else(
        || (default_schedule(caller, &cluster.id), 0),
        |i| (i.body, i.version),
    );
    Ok((schedule, version, asleep?.map(|a| a.body)))
}

#[utoipa::path(get, path = "/v1/clusters/{id}/hibernation", tag = "hibernation", params(("id" = String, Path)),
    responses((status = 200, body = HibernationView, headers(("ETag" = String)))),
    security(("api_key" = [])))]
pub async fn get_hibernation(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let (schedule, version, asleep) = load_hibernation(&state, &caller, &id).await?;
    Ok((
        [(header::ETAG, etag(version))],
        Json(HibernationView {
            schedule,
            asleep,
            version,
        }),
    )
        .into_response())
}

/// Replaces the schedule (a manual wake-up in force is kept). With `If-Match`, only if it is
/// still at that version (`"0"`: nothing stored yet).
#[utoipa::path(put, path = "/v1/clusters/{id}/hibernation", tag = "hibernation", request_body = HibernationSettings,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = HibernationView), (status = 409, body = ErrorResponse), (status = 412, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn put_hibernation(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    JsonBody(settings): JsonBody<HibernationSettings>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    validate_hibernation(&settings)?;
    let (current, version, asleep) = load_hibernation(&state, &caller, &id).await?;
    if_match(&headers, version)?;
    let schedule = HibernationSchedule {
        settings,
        updated_at: OffsetDateTime::now_utc(),
        ..current.clone()
    };
    let (write, stored) = hibernation_write(schedule.clone(), version)?;
    audit::commit(
        &state,
        vec![write],
        audit::entry(
            &caller,
            "hibernation.update",
            format!("cluster/{}/hibernation", schedule.cluster_id),
            (version > 0).then(|| snapshot(&current)).flatten(),
            snapshot(&schedule),
        )?,
    )
    .await?;
    Ok((
        [(header::ETAG, etag(stored))],
        Json(HibernationView {
            schedule,
            asleep,
            version: stored,
        }),
    )
        .into_response())
}

/// The write that stores `schedule` over `version` (0: nothing stored yet), and the version it
/// will be at.
fn hibernation_write(
    schedule: HibernationSchedule,
    version: u64,
) -> Result<(Write, u64), ApiError> {
    Ok(if version == 0 {
        (
            Write::put(&hibernation_item(schedule, 0), PutCondition::IfAbsent)?,
            1,
        )
    } else {
        (
            Write::versioned(&hibernation_item(schedule, version))?,
            version + 1,
        )
    })
}

/// Removes the schedule. A cluster asleep is not left asleep: disable the schedule first, and
/// delete once it is awake.
#[utoipa::path(delete, path = "/v1/clusters/{id}/hibernation", tag = "hibernation", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn delete_hibernation(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let (schedule, version, asleep) = load_hibernation(&state, &caller, &id).await?;
    if version == 0 {
        return Err(ApiError::not_found(format!(
            "hibernation schedule of cluster {id}"
        )));
    }
    if asleep.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "asleep",
            "the cluster is asleep; disable the schedule so it wakes, then delete it",
        ));
    }
    audit::commit(
        &state,
        vec![Write::delete(&keys::hibernation_schedule(
            &caller.tenant,
            &schedule.cluster_id,
        ))],
        audit::entry(
            &caller,
            "hibernation.delete",
            format!("cluster/{}/hibernation", schedule.cluster_id),
            snapshot(&schedule),
            None,
        )?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeInput {
    /// Keep the cluster awake until then (at most 7 days ahead); the scheduler wakes it within
    /// a minute.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

#[utoipa::path(post, path = "/v1/clusters/{id}/hibernation/wake", tag = "hibernation", request_body = WakeInput,
    params(("id" = String, Path)),
    responses((status = 200, body = HibernationView), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn wake(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(input): JsonBody<WakeInput>,
) -> Result<Json<HibernationView>, ApiError> {
    caller.require(Role::Operator)?;
    let now = OffsetDateTime::now_utc();
    if input.until <= now || input.until > now + MAX_WAKE {
        return Err(ApiError::field("until", "must be in the next 7 days"));
    }
    let (current, version, asleep) = load_hibernation(&state, &caller, &id).await?;
    if version == 0 {
        return Err(ApiError::not_found(format!(
            "hibernation schedule of cluster {id}"
        )));
    }
    let schedule = HibernationSchedule {
        wake_until: Some(input.until),
        updated_at: now,
        ..current.clone()
    };
    let (write, stored) = hibernation_write(schedule.clone(), version)?;
    audit::commit(
        &state,
        vec![write],
        audit::entry(
            &caller,
            "hibernation.wake",
            format!("cluster/{}/hibernation", schedule.cluster_id),
            snapshot(&current),
            snapshot(&schedule),
        )?,
    )
    .await?;
    Ok(Json(HibernationView {
        schedule,
        asleep,
        version: stored,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// Days ahead (default 7).
    #[param(minimum = 1, maximum = 14)]
    pub days: Option<u8>,
}

/// What the schedule will do: each change of state ahead, the hours asleep, and what they save
/// at the cluster's latest sampled hourly cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    pub time_zone: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    #[schema(value_type = Vec<Object>)]
    pub transitions: Vec<Transition>,
    pub asleep_hours: f64,
    /// `null` until the cost function has sampled the cluster.
    pub awake_cost_hr: Option<f64>,
    pub estimated_savings_usd: Option<f64>,
}

#[utoipa::path(get, path = "/v1/clusters/{id}/hibernation/preview", tag = "hibernation",
    params(("id" = String, Path), PreviewParams),
    responses((status = 200, body = Preview)),
    security(("api_key" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(params): Params<PreviewParams>,
) -> Result<Json<Preview>, ApiError> {
    caller.require(Role::Viewer)?;
    let days = params.days.unwrap_or(7);
    if !(1..=14).contains(&days) {
        return Err(ApiError::field("days", "must be 1 to 14"));
    }
    let (schedule, _, _) = load_hibernation(&state, &caller, &id).await?;
    let hibernation = schedule
        .hibernation()
        .map_err(|e| ApiError::field("time_zone", e.to_string()))?;
    let from = OffsetDateTime::now_utc();
    let until = from + time::Duration::days(i64::from(days));
    let (transitions, asleep_hours) = if schedule.settings.enabled {
        (
            hibernation.transitions(from, until, schedule.wake_until),
            hibernation.asleep_hours(from, until, schedule.wake_until),
        )
    } else {
        (Vec::new(), 0.0)
    };
    let cost =
        costs::latest_hourly_cost(&state.store, &caller.tenant, &schedule.cluster_id).await?;
    Ok(Json(Preview {
        time_zone: schedule.settings.time_zone,
        from,
        until,
        transitions,
        asleep_hours,
        awake_cost_hr: cost,
        estimated_savings_usd: cost.map(|c| (c * asleep_hours * 100.0).round() / 100.0),
    }))
}

/// Past sleeps, newest first, with hours and savings.
#[utoipa::path(get, path = "/v1/clusters/{id}/hibernation/sleeps", tag = "hibernation",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<SleepRecord>)),
    security(("api_key" = [])))]
pub async fn sleeps(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<SleepRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(keys::sleeps_prefix(&cluster.id))
            .newest_first(),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |s| s,
    )))
}

// ---------------------------------------------------------------- scheduled runs

/// A schedule with its next run times.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub schedule: ScheduledRun,
    pub next_runs: Vec<String>,
    pub version: u64,
}

fn next_runs(schedule: &ScheduledRun, from: OffsetDateTime) -> Vec<String> {
    if schedule.status != ScheduleStatus::Active {
        return Vec::new();
    }
    Zone::new(&schedule.settings.time_zone)
        .ok()
        .zip(schedule.cron().ok())
        .map(|(zone, cron)| {
            cron.upcoming(&zone, from, PREVIEW_RUNS)
                .into_iter()
                .map(runs::sortable)
                .collect()
        })
        .unwrap_or_default()
}

fn view(schedule: ScheduledRun, version: u64) -> ScheduleView {
    ScheduleView {
        next_runs: next_runs(&schedule, OffsetDateTime::now_utc()),
        schedule,
        version,
    }
}

/// Checks a cron expression and zone; the next run after `from`.
fn parse_calendar(cron: &str, time_zone: &str) -> Result<(Cron, Zone), ApiError> {
    let cron = Cron::parse(cron).map_err(|e| ApiError::field("cron", e.to_string()))?;
    let zone = Zone::new(time_zone).map_err(|e| ApiError::field("time_zone", e.to_string()))?;
    Ok((cron, zone))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CronCheck {
    #[schema(min_length = 1, max_length = 200)]
    pub cron: String,
    #[serde(default = "utc")]
    #[schema(min_length = 1, max_length = 64)]
    pub time_zone: String,
    /// How many run times to list (default 5, at most 50).
    #[schema(minimum = 1, maximum = 50)]
    pub count: Option<usize>,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CronPreview {
    pub cron: String,
    pub time_zone: String,
    pub next_runs: Vec<String>,
}

/// Validates a cron expression in a time zone and lists its next run times. An invalid one is
/// a 400 naming the field and what is wrong (`cron: hour: 24 is outside 0-23`).
#[utoipa::path(post, path = "/v1/schedules/validate-cron", tag = "schedules", request_body = CronCheck,
    responses((status = 200, body = CronPreview)),
    security(("api_key" = [])))]
pub async fn validate_cron(
    caller: Caller,
    JsonBody(check): JsonBody<CronCheck>,
) -> Result<Json<CronPreview>, ApiError> {
    caller.require(Role::Viewer)?;
    let count = check.count.unwrap_or(PREVIEW_RUNS);
    if !(1..=50).contains(&count) {
        return Err(ApiError::field("count", "must be 1 to 50"));
    }
    max_chars("cron", &check.cron, 200)?;
    max_chars("time_zone", &check.time_zone, 64)?;
    let (cron, zone) = parse_calendar(&check.cron, &check.time_zone)?;
    Ok(Json(CronPreview {
        next_runs: cron
            .upcoming(&zone, OffsetDateTime::now_utc(), count)
            .into_iter()
            .map(runs::sortable)
            .collect(),
        cron: cron.to_string(),
        time_zone: check.time_zone,
    }))
}

/// Checks the settings, trims name and expression, and gives the next run time.
fn validate_schedule(input: &mut ScheduleSettings) -> Result<OffsetDateTime, ApiError> {
    input.name = input.name.trim().to_owned();
    input.cron = input.cron.trim().to_owned();
    if input.name.is_empty() || input.name.len() > 100 {
        return Err(ApiError::field("name", "must be 1 to 100 characters"));
    }
    max_chars("cron", &input.cron, 200)?;
    max_chars("time_zone", &input.time_zone, 64)?;
    if !(1..=100).contains(&input.pause_after) {
        return Err(ApiError::field("pause_after", "must be 1 to 100"));
    }
    let (cron, zone) = parse_calendar(&input.cron, &input.time_zone)?;
    cron.next_after(&zone, OffsetDateTime::now_utc())
        .ok_or_else(|| ApiError::field("cron", "never fires in the next five years"))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScheduleFilter {
    /// Only this cluster's schedules.
    pub cluster: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ScheduleFilter),
    responses((status = 200, body = Page<ScheduleView>)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(filter): Params<ScheduleFilter>,
) -> Result<Json<Page<ScheduleView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    };
    let query = page
        .apply(Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix::SCHEDULE))?;
    let stored = state.store.query::<ScheduledRun>(&query).await?;
    let items = stored
        .items
        .into_iter()
        .filter(|i| {
            filter
                .cluster
                .as_deref()
                .is_none_or(|c| i.body.settings.cluster_id.as_str() == c)
        })
        .map(|i| view(i.body, i.version))
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: stored.next,
    }))
}

#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleSettings,
    responses((status = 201, body = ScheduleView)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<ScheduleSettings>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let mut settings = input;
    let next = validate_schedule(&mut settings)?;
    load_cluster(&state, &caller, settings.cluster_id.as_str())
        .await
        .map_err(|_| ApiError::field("cluster_id", "no such cluster"))?;
    let now = OffsetDateTime::now_utc();
    let schedule = ScheduledRun {
        id: ulid::Ulid::new().to_string().to_ascii_lowercase(),
        tenant_id: caller.tenant.clone(),
        settings,
        status: ScheduleStatus::Active,
        paused_reason: None,
        consecutive_failures: 0,
        next_run_at: Some(next),
        last_run_id: None,
        created_at: now,
        updated_at: now,
    };
    audit::commit(
        &state,
        vec![Write::put(
            &runs::schedule_item(schedule.clone(), 0),
            PutCondition::IfAbsent,
        )?],
        audit::entry(
            &caller,
            "schedule.create",
            format!("schedule/{}", schedule.id),
            None,
            snapshot(&schedule),
        )?,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [(header::ETAG, etag(1))],
        Json(view(schedule, 1)),
    )
        .into_response())
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<Item<ScheduledRun>, ApiError> {
    let id = resource_id(id, "schedule")?;
    state
        .store
        .get::<ScheduledRun>(&keys::scheduled_run(&caller.tenant, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {id}")))
}

#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView, headers(("ETag" = String)))),
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
        Json(view(item.body, item.version)),
    )
        .into_response())
}

/// Replaces name, kind, cron, zone and failure limit. The cluster cannot change.
#[utoipa::path(put, path = "/v1/schedules/{id}", tag = "schedules", request_body = ScheduleSettings,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = ScheduleView), (status = 409, body = ErrorResponse), (status = 412, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<ScheduleSettings>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let mut settings = input;
    let next = validate_schedule(&mut settings)?;
    let item = load(&state, &caller, &id).await?;
    if_match(&headers, item.version)?;
    if settings.cluster_id != item.body.settings.cluster_id {
        return Err(ApiError::field(
            "cluster_id",
            "a schedule cannot move to another cluster",
        ));
    }
    let before = item.body.clone();
    let schedule = ScheduledRun {
        settings,
        next_run_at: Some(next),
        updated_at: OffsetDateTime::now_utc(),
        ..item.body
    };
    let version = runs::schedule_item(schedule.clone(), item.version).version + 1;
    audit::commit(
        &state,
        vec![Write::versioned(&runs::schedule_item(
            schedule.clone(),
            item.version,
        ))?],
        audit::entry(
            &caller,
            "schedule.update",
            format!("schedule/{id}"),
            snapshot(&before),
            snapshot(&schedule),
        )?,
    )
    .await?;
    Ok((
        [(header::ETAG, etag(version))],
        Json(view(schedule, version)),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = [])))]
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
            "schedule.delete",
            format!("schedule/{id}"),
            snapshot(&item.body),
            None,
        )?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(
    state: &AppState,
    caller: &Caller,
    id: &str,
    status: ScheduleStatus,
) -> Result<Json<ScheduleView>, ApiError> {
    caller.require(Role::Operator)?;
    let item = load(state, caller, id).await?;
    let before = item.body.clone();
    let now = OffsetDateTime::now_utc();
    let mut schedule = item.body;
    schedule.status = status;
    schedule.updated_at = now;
    match status {
        ScheduleStatus::Paused => {
            schedule.paused_reason = Some(format!("paused by {}", caller.actor()));
        }
        // Resuming starts afresh: no failures counted, next run from now.
        ScheduleStatus::Active => {
            schedule.paused_reason = None;
            schedule.consecutive_failures = 0;
            schedule.next_run_at = Zone::new(&schedule.settings.time_zone)
                .ok()
                .zip(schedule.cron().ok())
                .and_then(|(zone, cron)| cron.next_after(&zone, now));
        }
    }
    let version = item.version + 1;
    let action = match status {
        ScheduleStatus::Paused => "schedule.pause",
        ScheduleStatus::Active => "schedule.resume",
    };
    audit::commit(
        state,
        vec![Write::versioned(&runs::schedule_item(
            schedule.clone(),
            item.version,
        ))?],
        audit::entry(
            caller,
            action,
            format!("schedule/{id}"),
            snapshot(&before),
            snapshot(&schedule),
        )?,
    )
    .await?;
    Ok(Json(view(schedule, version)))
}

#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView)),
    security(("api_key" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_status(&state, &caller, &id, ScheduleStatus::Paused).await
}

/// Resumes a schedule paused by hand or after failures; the failure count starts again.
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleView)),
    security(("api_key" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_status(&state, &caller, &id, ScheduleStatus::Active).await
}

/// Starts a run now, whatever the calendar (a paused schedule too). The run's outcome arrives
/// in its record when the work is done.
#[utoipa::path(post, path = "/v1/schedules/{id}/trigger", tag = "schedules", params(("id" = String, Path)),
    responses((status = 202, body = RunRecord)),
    security(("api_key" = [])))]
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let item = load(&state, &caller, &id).await?;
    // The run leaves on a queue, outside any table transaction: the audit event is written
    // first, and no event means no run.
    audit::commit(
        &state,
        Vec::new(),
        audit::entry(
            &caller,
            "schedule.trigger",
            format!("schedule/{id}"),
            None,
            None,
        )?,
    )
    .await?;
    let now = OffsetDateTime::now_utc();
    let run = runs::start(
        &state.store,
        &state.run_queues,
        &state.notifications,
        &item.body,
        &format!("manual:{}", caller.key_id),
        now,
    )
    .await
    .map_err(|e| match e {
        runs::RunError::Store(e) => ApiError::from(e),
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            other.to_string(),
        ),
    })?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// The schedule's runs, newest first, with state and duration.
#[utoipa::path(get, path = "/v1/schedules/{id}/runs", tag = "schedules", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<RunRecord>)),
    security(("api_key" = [])))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<RunRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    let item = load(&state, &caller, &id).await?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(keys::runs_prefix(&item.body.id))
            .newest_first(),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |r| r,
    )))
}

/// Where manual triggers send their requests.
pub fn run_queues(sqs: &aws_sdk_sqs::Client, config: &crate::Config) -> RunQueues {
    let queue = |url: &str| spotwise_aws::Queue::new(sqs.clone(), url);
    RunQueues {
        optimize: queue(&config.optimize_queue_url),
        cost: queue(&config.cost_queue_url),
        discovery: queue(&config.discovery_queue_url),
    }
}
