//! Pod history: each agent snapshot is compared with the one before it, and every pod that
//! started, moved, went away or was resized is recorded (kept 7 days).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use spotwise_core::domain::Role;
use spotwise_core::snapshot::Snapshot;
use spotwise_core::{ClusterId, TenantId};
use spotwise_optimizer::history::{self, PodEvent};
use spotwise_store::keys;
use spotwise_store::{Item, Query};
use time::OffsetDateTime;
use tracing::warn;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::clusters::load_cluster;
use crate::error::ApiError;
use crate::paging::{Page, PageParams, Params, PathParams};

const RETENTION: time::Duration = time::Duration::days(7);
/// A previous snapshot older than this is not compared: too much happened in between to say
/// what changed when.
pub const COMPARABLE_AGE: time::Duration = time::Duration::hours(1);

/// One change of one pod, and when the agent's snapshot showed it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PodHistoryEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `pod` (`namespace/name`), `owner`, and `change`: `started` (with `node`), `moved`
    /// (`from`, `to`), `gone` (`node`) or `resized` (`cpu_m`, `mem_mib` as [before, after]).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub event: PodEvent,
}

/// Records what changed between two snapshots; returns how many pod changes there were.
pub async fn record(
    state: &AppState,
    tenant: &TenantId,
    cluster: &ClusterId,
    before: &Snapshot,
    after: &Snapshot,
    now: OffsetDateTime,
) -> usize {
    let events = history::changes(before, after);
    let stamp = spotwise_store::runs::sortable(now);
    let items: Vec<Item<PodHistoryEntry>> = events
        .into_iter()
        .enumerate()
        .map(|(seq, event)| {
            let key = keys::pod_history(tenant, cluster, &event.pod, &format!("{stamp}#{seq:05}"));
            Item::new(key, PodHistoryEntry { at: now, event }).expiring_at(now + RETENTION)
        })
        .collect();
    if let Err(err) = state.store.batch_put(&items).await {
        warn!(%cluster, error = %err, "pod history not written");
        return 0;
    }
    items.len()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryFilter {
    /// Only this pod, as `namespace/name`.
    pub pod: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Pod changes of the last 7 days, by pod then time; `?pod=namespace/name` for one pod's.
#[utoipa::path(get, path = "/v1/clusters/{id}/pod-history", tag = "clusters",
    params(("id" = String, Path), HistoryFilter),
    responses((status = 200, body = Page<PodHistoryEntry>)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(filter): Params<HistoryFilter>,
) -> Result<Json<Page<PodHistoryEntry>>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let prefix = match &filter.pod {
        Some(pod) => {
            let valid = pod.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !pod.contains('#') && pod.len() <= 317
            });
            if !valid {
                return Err(ApiError::field("pod", "must be namespace/name"));
            }
            keys::pod_history_prefix(&cluster.id, Some(pod))
        }
        None => keys::pod_history_prefix(&cluster.id, None),
    };
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    };
    let query =
        page.apply(Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix))?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |e| e,
    )))
}
