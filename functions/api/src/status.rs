//! A tenant's public status page: opt-in, found by a random id, showing each cluster's agent
//! health and uptime over 90 days and the savings realised, and nothing else. The HTML page and
//! the embeddable SVG badge are rendered from `GET /v1/status/{id}`.

use axum::Json;
use axum::extract::State;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use spotwise_core::domain::{AgentStatus, Cluster, Role, StatusPage, Tenant};
use spotwise_core::uptime;
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::paging::PathParams;

pub const UPTIME_DAYS: u16 = 90;

/// Whether the tenant's status page is public, and where.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusPageSettings {
    pub enabled: bool,
    /// `/status/<id>`: the page, without sign-in.
    pub page_path: Option<String>,
    /// `/status/<id>/badge.svg`: the savings badge to embed.
    pub badge_path: Option<String>,
}

impl StatusPageSettings {
    fn of(page: Option<&StatusPage>) -> Self {
        Self {
            enabled: page.is_some(),
            page_path: page.map(|p| format!("/status/{}", p.id)),
            badge_path: page.map(|p| format!("/status/{}/badge.svg", p.id)),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusPageInput {
    pub enabled: bool,
}

#[utoipa::path(get, path = "/v1/tenant/status-page", tag = "tenant",
    responses((status = 200, body = StatusPageSettings), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn settings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<StatusPageSettings>, ApiError> {
    caller.require(Role::Admin)?;
    let page = state
        .store
        .get::<StatusPage>(&keys::status_page_of(&caller.tenant))
        .await?;
    Ok(Json(StatusPageSettings::of(page.as_ref().map(|p| &p.body))))
}

/// Publishes the status page (at a new random address) or takes it down.
#[utoipa::path(put, path = "/v1/tenant/status-page", tag = "tenant", request_body = StatusPageInput,
    responses((status = 200, body = StatusPageSettings), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<StatusPageInput>,
) -> Result<Json<StatusPageSettings>, ApiError> {
    caller.require(Role::Admin)?;
    let current = state
        .store
        .get::<StatusPage>(&keys::status_page_of(&caller.tenant))
        .await?
        .map(|p| p.body);
    let settings = match (input.enabled, current) {
        (true, Some(page)) => StatusPageSettings::of(Some(&page)),
        (false, None) => StatusPageSettings::of(None),
        (true, None) => {
            let mut id = [0_u8; 12];
            rand::rng().fill_bytes(&mut id);
            let page = StatusPage {
                id: hex::encode(id),
                tenant_id: caller.tenant.clone(),
                enabled_at: OffsetDateTime::now_utc(),
            };
            let settings = StatusPageSettings::of(Some(&page));
            audit::commit(
                &state,
                vec![
                    Write::put(
                        &Item::new(keys::status_page_of(&caller.tenant), &page),
                        PutCondition::Always,
                    )?,
                    Write::put(
                        &Item::new(keys::status_page(&page.id), &page),
                        PutCondition::IfAbsent,
                    )?,
                ],
                audit::entry(
                    &caller,
                    "status_page.enable",
                    "status-page".into(),
                    None,
                    snapshot(&settings),
                )?,
            )
            .await?;
            settings
        }
        (false, Some(page)) => {
            let before = StatusPageSettings::of(Some(&page));
            audit::commit(
                &state,
                vec![
                    Write::delete(&keys::status_page_of(&caller.tenant)),
                    Write::delete(&keys::status_page(&page.id)),
                ],
                audit::entry(
                    &caller,
                    "status_page.disable",
                    "status-page".into(),
                    snapshot(&before),
                    None,
                )?,
            )
            .await?;
            StatusPageSettings::of(None)
        }
    };
    Ok(Json(settings))
}

/// One cluster as the public sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicCluster {
    pub name: String,
    /// `online`, `offline` or `not installed`.
    pub agent: &'static str,
    /// Share of the monitored time the agent reported in, over the last 90 days.
    pub uptime: Option<f64>,
    /// The last 90 UTC days, oldest first; `null` before the agent was installed.
    pub days: Vec<Option<f64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicStatus {
    pub tenant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub clusters: Vec<PublicCluster>,
    /// A month's savings realised by the rollouts of the latest month that had any, in dollars.
    pub monthly_savings: String,
}

/// A public status page's content (no credential needed): agent health, uptime and savings.
#[utoipa::path(get, path = "/v1/status/{id}", tag = "status", params(("id" = String, Path)),
    responses((status = 200, body = PublicStatus), (status = 404, body = ErrorResponse)))]
pub async fn public(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<PublicStatus>, ApiError> {
    let missing = || ApiError::not_found("status page");
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(missing());
    }
    let page = state
        .store
        .get::<StatusPage>(&keys::status_page(&id))
        .await?
        .ok_or_else(missing)?
        .body;
    let tenant = page.tenant_id.clone();
    let now = OffsetDateTime::now_utc();
    let since = now - time::Duration::days(i64::from(UPTIME_DAYS));
    let tenant_key = keys::tenant(&tenant);
    let clusters_query =
        Query::partition(keys::tenant_partition(&tenant)).prefix(keys::prefix::CLUSTER);
    let (record, clusters) = tokio::try_join!(
        state.store.get::<Tenant>(&tenant_key),
        state.store.query_all::<Cluster>(&clusters_query),
    )?;
    // The clusters' reads go out together: a page view is as slow as one cluster, not all.
    let mut shown: Vec<(PublicCluster, rust_decimal::Decimal)> =
        futures_util::future::try_join_all(
            clusters
                .into_iter()
                .map(|c| c.body)
                .filter(|c| c.vanished_at.is_none())
                .map(|cluster| public_cluster(&state, &page, cluster, now, since)),
        )
        .await?;
    let monthly_savings: rust_decimal::Decimal = shown.iter().map(|(_, saved)| saved).sum();
    shown.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(Json(PublicStatus {
        tenant: record.map(|t| t.body.name).unwrap_or_default(),
        generated_at: now,
        clusters: shown.into_iter().map(|(cluster, _)| cluster).collect(),
        monthly_savings: monthly_savings.round_dp(2).to_string(),
    }))
}

/// One cluster's agent state and uptime, and the month's savings its rollouts realised.
async fn public_cluster(
    state: &AppState,
    page: &StatusPage,
    cluster: Cluster,
    now: OffsetDateTime,
    since: OffsetDateTime,
) -> Result<(PublicCluster, rust_decimal::Decimal), ApiError> {
    let tenant = &page.tenant_id;
    let status_key = keys::agent_status(tenant, &cluster.id);
    let (status, (first, silences), saved) = tokio::try_join!(
        state.store.get::<AgentStatus>(&status_key),
        spotwise_store::agents::history(&state.store, tenant, &cluster.id, since),
        crate::costs::latest_rollout_savings(&state.store, tenant, &cluster.id),
    )?;
    let status = status.map(|s| s.body);
    let mut silent: Vec<_> = silences.iter().map(|s| (s.from, s.to)).collect();
    if let Some(s) = &status
        && s.offline_since.is_some()
    {
        silent.push((s.last_heartbeat_at, now));
    }
    // Agents that first reported before uptime was recorded count from the page's opt-in.
    let monitored = first.or_else(|| status.as_ref().map(|_| page.enabled_at));
    let days = uptime::daily(now, UPTIME_DAYS, monitored, &silent);
    let shown = PublicCluster {
        name: cluster.name,
        agent: match &status {
            None => "not installed",
            Some(s) if s.offline_since.is_some() => "offline",
            Some(_) => "online",
        },
        uptime: uptime::overall(&days),
        days: days.iter().map(|d| d.uptime).collect(),
    };
    Ok((shown, saved))
}
