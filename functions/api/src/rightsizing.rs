//! Right-sizing: each workload's recommendation from the newest plan, the changes applied and
//! how they ended, and applying a recommendation (the scheduler sends the patch, watches the
//! workload and reverts it on an OOM kill or new restarts).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use spotwise_core::domain::{Policy, Role};
use spotwise_core::rightsizing::{ControllerRef, RightSizingMode, RightSizingSettings};
use spotwise_optimizer::recommendation::Recommendation;
use spotwise_optimizer::resize::ResizeChange;
use spotwise_optimizer::rightsizing::WorkloadStatus;
use spotwise_store::keys;
use spotwise_store::resize::{self, RequestError};
use spotwise_store::snapshots::{self, MAX_USABLE_AGE};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit;
use crate::auth::Caller;
use crate::clusters::load_cluster;
use crate::error::{ApiError, ErrorResponse, JsonBody, label_map, max_chars, max_items};
use crate::paging::PathParams;

/// Changes listed with the recommendations.
const CHANGES_SHOWN: u32 = 50;
/// `namespace/Kind/name`: a 63-character namespace, a kind, a 253-character name.
const MAX_WORKLOAD_CHARS: usize = 330;

#[derive(Debug, Serialize, ToSchema)]
pub struct RightSizingView {
    /// The plan revision the recommendations come from (none before the first plan).
    pub revision: Option<u64>,
    /// What the node plan costs less per month with every ready recommendation applied.
    pub projected_monthly_saving: f64,
    /// The ready recommendations' freed requests, valued at the plan's prices, per month.
    pub ready_monthly_saving: f64,
    /// Per Deployment, StatefulSet and DaemonSet: status (`ready`, `unchanged`,
    /// `insufficient_history`, `skipped`), why, and each container's requests before and
    /// after with the usage behind them (p50/p95/p99 cpu, peak memory, hours of history).
    #[schema(value_type = Vec<Object>)]
    pub workloads: Vec<serde_json::Value>,
    /// Changes applied, newest first: status (`pending`, `applying`, `watching`,
    /// `reverting`, `kept`, `reverted`, `failed`), requests before and after, and why.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<serde_json::Value>,
}

async fn newest(
    state: &AppState,
    caller: &Caller,
    cluster: &spotwise_core::ClusterId,
) -> Result<Option<Recommendation>, ApiError> {
    Ok(
        spotwise_store::recommendations::newest(&state.store, &caller.tenant, cluster)
            .await?
            .map(|i| i.body),
    )
}

#[utoipa::path(get, path = "/v1/clusters/{id}/rightsizing", tag = "clusters", params(("id" = String, Path)),
    responses((status = 200, body = RightSizingView), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<RightSizingView>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let (newest, changes) = tokio::join!(
        newest(&state, &caller, &cluster.id),
        resize::recent(&state.store, &caller.tenant, &cluster.id, CHANGES_SHOWN),
    );
    let newest = newest?;
    let right_sizing = newest.as_ref().and_then(|r| r.right_sizing.as_ref());
    let workloads = right_sizing
        .map(|r| r.workloads.as_slice())
        .unwrap_or_default();
    Ok(Json(RightSizingView {
        revision: newest.as_ref().map(|r| r.revision),
        projected_monthly_saving: right_sizing.map_or(0.0, |r| r.projected_monthly_saving),
        ready_monthly_saving: workloads
            .iter()
            .filter(|w| w.status == WorkloadStatus::Ready)
            .map(|w| w.monthly_saving)
            .sum(),
        workloads: workloads
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
        changes: changes?
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRightSizing {
    /// `namespace/Kind/name` of a workload whose recommendation is `ready` (at most 330
    /// characters; the namespace a DNS label, the name a DNS subdomain).
    #[schema(
        max_length = 330,
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/(Deployment|StatefulSet|DaemonSet)/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )]
    pub workload: String,
}

/// Applies a workload's ready recommendation: the scheduler sends the agent a signed patch
/// of its pod template's requests (limits keep their ratio unless the policy says otherwise),
/// then watches its pods for the policy's `watch_minutes` and reverts the change, raising
/// memory headroom, if a container is OOM-killed or restarts more than before.
#[utoipa::path(post, path = "/v1/clusters/{id}/rightsizing/apply", tag = "clusters", params(("id" = String, Path)),
    request_body = ApplyRightSizing,
    responses((status = 202, description = "The change, pending", body = Object),
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ApplyRightSizing>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(Role::Operator)?;
    max_chars("workload", &body.workload, MAX_WORKLOAD_CHARS)?;
    let workload = ControllerRef::parse(&body.workload).ok_or_else(|| {
        ApiError::field(
            "workload",
            "must be namespace/Kind/name of a Deployment, StatefulSet or DaemonSet",
        )
    })?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let conflict = |code, message: String| ApiError::new(StatusCode::CONFLICT, code, message);
    let recommendation = newest(&state, &caller, &cluster.id)
        .await?
        .and_then(|r| r.right_sizing)
        .and_then(|r| r.workloads.into_iter().find(|w| w.workload == workload))
        .ok_or_else(|| {
            ApiError::not_found(format!("a right-sizing recommendation for {workload}"))
        })?;
    if recommendation.mode == RightSizingMode::Off {
        return Err(conflict("right_sizing_off", recommendation.reason));
    }
    if recommendation.status != WorkloadStatus::Ready {
        return Err(conflict("not_ready", recommendation.reason));
    }
    let now = OffsetDateTime::now_utc();
    let (_, snapshot) = snapshots::load(
        &state.store,
        &state.snapshots,
        &caller.tenant,
        &cluster.id,
        now,
        MAX_USABLE_AGE,
    )
    .await?
    .map_err(|why| {
        conflict(
            "no_snapshot",
            format!("the workload's pods cannot be watched: {why}"),
        )
    })?;
    let policy = state
        .store
        .get::<Policy>(&keys::policy(&caller.tenant, &cluster.id))
        .await?
        .map(|p| p.body)
        .unwrap_or_default();
    let change = ResizeChange::new(
        snapshots::new_id(),
        (caller.tenant.clone(), cluster.id.clone()),
        &recommendation,
        &snapshot,
        &caller.actor(),
        policy.right_sizing.watch_minutes,
        now,
    );
    let entry = audit::entry(
        &caller,
        "rightsizing.request",
        format!("cluster/{}/workload/{workload}", cluster.id),
        audit::snapshot(&change.before()),
        audit::snapshot(&change.after()),
    )?;
    match resize::request(&state.store, &change, entry).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::to_value(&change).unwrap_or_default()),
        )),
        Err(RequestError::Busy { workload, active }) => Err(conflict(
            "change_in_progress",
            format!("change {active} of {workload} is still in progress"),
        )),
        Err(RequestError::Store(err)) => Err(err.into()),
    }
}

/// The policy's right-sizing settings within their documented bounds.
pub fn validate(settings: &RightSizingSettings) -> Result<(), ApiError> {
    let field = |name: &str| format!("right_sizing.{name}");
    max_items(
        &field("excluded_namespaces"),
        settings.excluded_namespaces.len(),
        100,
    )?;
    for (i, ns) in settings.excluded_namespaces.iter().enumerate() {
        if !spotwise_core::ids::is_dns_label(ns) {
            return Err(ApiError::field(
                format!("right_sizing.excluded_namespaces[{i}]"),
                "is not a namespace name",
            ));
        }
    }
    label_map(
        &field("excluded_labels"),
        settings.excluded_labels.iter(),
        20,
    )?;
    max_items(&field("workloads"), settings.workloads.len(), 500)?;
    if let Some(key) = settings
        .workloads
        .keys()
        .find(|k| k.chars().count() > MAX_WORKLOAD_CHARS || ControllerRef::parse(k).is_none())
    {
        return Err(ApiError::field(
            field("workloads"),
            format!("{key:?} is not namespace/Kind/name of a Deployment, StatefulSet or DaemonSet"),
        ));
    }
    if settings.cpu_headroom_pct > 200 {
        return Err(ApiError::field(
            field("cpu_headroom_pct"),
            "must be 0 to 200",
        ));
    }
    if settings.mem_headroom_pct > 200 {
        return Err(ApiError::field(
            field("mem_headroom_pct"),
            "must be 0 to 200",
        ));
    }
    if !(15..=10_080).contains(&settings.watch_minutes) {
        return Err(ApiError::field(
            field("watch_minutes"),
            "must be 15 to 10080",
        ));
    }
    Ok(())
}
