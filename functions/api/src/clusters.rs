//! Clusters, their policies and recommendations, and the actions issued to their agents.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use spotwise_core::action::{ActionRecord, ActionStatus};
use spotwise_core::domain::{AgentStatus, CapacityType, Cluster, Policy, Role};
use spotwise_core::{ClusterId, rfc3339};
use spotwise_optimizer::recommendation::{Recommendation, RecommendationStatus};
use spotwise_optimizer::rollout::Rollout;
use spotwise_store::keys::{self, prefix};
use spotwise_store::rollouts;
use spotwise_store::snapshots::{self, MAX_USABLE_AGE};
use spotwise_store::{Item, PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::agent::ClusterEvent;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse, JsonBody, max_items};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::{etag, if_match, resource_id};

/// Events shown with a cluster (they expire after 24 hours).
const EVENTS_SHOWN: u32 = 100;

pub fn cluster_id(id: &str) -> Result<ClusterId, ApiError> {
    ClusterId::new(id).map_err(|_| ApiError::not_found(format!("cluster {id}")))
}

pub(crate) async fn load_cluster(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Cluster, ApiError> {
    let cluster = cluster_id(id)?;
    state
        .store
        .get::<Cluster>(&keys::cluster(&caller.tenant, &cluster))
        .await?
        .map(|item| item.body)
        .ok_or_else(|| ApiError::not_found(format!("cluster {id}")))
}

#[utoipa::path(get, path = "/v1/clusters", tag = "clusters", params(PageParams),
    responses((status = 200, body = Page<Cluster>)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<Cluster>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page
        .apply(Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix::CLUSTER))?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |c| c,
    )))
}

/// What the agent's last snapshot says.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotStatus {
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub nodes: usize,
    pub spot_nodes: usize,
    pub pods: usize,
    /// Node name, instance type, zone and capacity type.
    pub node_list: Vec<NodeSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeSummary {
    pub name: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub pods: usize,
    pub unschedulable: bool,
    /// What the node offers pods, what their requests reserve of it, and what they used when
    /// the snapshot was taken (absent without metrics-server). DaemonSet pods included.
    pub cpu_allocatable_m: u64,
    pub cpu_requested_m: u64,
    pub cpu_used_m: Option<u64>,
    pub memory_allocatable_mib: u64,
    pub memory_requested_mib: u64,
    pub memory_used_mib: Option<u64>,
}

/// Requests and usage of the pods on one node.
#[derive(Default)]
struct NodeLoad {
    pods: usize,
    cpu_requested_m: u64,
    memory_requested_mib: u64,
    used: Option<(u64, u64)>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterDetail {
    pub cluster: Cluster,
    pub agent: Option<AgentStatus>,
    /// Absent when no snapshot from the last six hours is complete; `snapshot_problem` says why.
    pub snapshot: Option<SnapshotStatus>,
    pub snapshot_problem: Option<String>,
    /// The last 24 hours, newest first.
    pub events: Vec<ClusterEvent>,
}

const EVENTS_KEPT: time::Duration = time::Duration::hours(24);

#[utoipa::path(get, path = "/v1/clusters/{id}", tag = "clusters", params(("id" = String, Path)),
    responses((status = 200, body = ClusterDetail), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ClusterDetail>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let now = state.clock.now();
    let events_query = Query::partition(keys::tenant_partition(&caller.tenant))
        .prefix(keys::cluster_events_prefix(&cluster.id))
        .newest_first()
        .limit(EVENTS_SHOWN);
    let status_key = keys::agent_status(&caller.tenant, &cluster.id);
    let (agent, loaded, events) = tokio::try_join!(
        state.store.get::<AgentStatus>(&status_key),
        snapshots::load(
            &state.store,
            &state.snapshots,
            &caller.tenant,
            &cluster.id,
            now,
            MAX_USABLE_AGE
        ),
        state.store.query::<ClusterEvent>(&events_query),
    )?;
    let (snapshot, snapshot_problem) = match loaded {
        Ok((head, snapshot)) => {
            let mut load_on: HashMap<&str, NodeLoad> = HashMap::new();
            for pod in snapshot.pods.iter().chain(&snapshot.daemon_pods) {
                if let Some(node) = &pod.spec.node {
                    let load = load_on.entry(node.as_str()).or_default();
                    load.pods += 1;
                    load.cpu_requested_m += pod.spec.cpu_m;
                    load.memory_requested_mib += pod.spec.mem_mib;
                    if let Some(usage) = &pod.usage {
                        let (cpu, memory) = load.used.get_or_insert((0, 0));
                        *cpu += usage.cpu_m;
                        *memory += usage.mem_mib;
                    }
                }
            }
            let node_list = snapshot
                .nodes
                .iter()
                .map(|n| {
                    let load = load_on.remove(n.name.as_str()).unwrap_or_default();
                    NodeSummary {
                        name: n.name.clone(),
                        instance_type: n.instance_type.clone(),
                        zone: n.zone.clone(),
                        capacity_type: n.capacity_type,
                        pods: load.pods,
                        unschedulable: n.unschedulable,
                        cpu_allocatable_m: n.cpu_m,
                        cpu_requested_m: load.cpu_requested_m,
                        cpu_used_m: load.used.map(|(cpu, _)| cpu),
                        memory_allocatable_mib: n.mem_mib,
                        memory_requested_mib: load.memory_requested_mib,
                        memory_used_mib: load.used.map(|(_, memory)| memory),
                    }
                })
                .collect();
            (
                Some(SnapshotStatus {
                    taken_at: head.taken_at,
                    nodes: snapshot.nodes.len(),
                    spot_nodes: snapshot
                        .nodes
                        .iter()
                        .filter(|n| n.capacity_type == CapacityType::Spot)
                        .count(),
                    pods: snapshot.pods.len() + snapshot.daemon_pods.len(),
                    node_list,
                }),
                None,
            )
        }
        Err(unusable) => (None, Some(unusable.to_string())),
    };
    Ok(Json(ClusterDetail {
        cluster,
        agent: agent.map(|a| a.body),
        snapshot,
        snapshot_problem,
        // The table's TTL sweep is lazy; the 24 hours are a promise of the API.
        events: events
            .items
            .into_iter()
            .map(|e| e.body)
            .filter(|e| now - e.at <= EVENTS_KEPT)
            .collect(),
    }))
}

#[utoipa::path(get, path = "/v1/clusters/{id}/policy", tag = "clusters", params(("id" = String, Path)),
    responses((status = 200, body = Policy, headers(("ETag" = String))), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let stored = state
        .store
        .get::<Policy>(&keys::policy(&caller.tenant, &cluster.id))
        .await?;
    // A cluster without a stored policy runs on the defaults, at version 0.
    let (policy, version) = stored.map_or_else(|| (Policy::default(), 0), |i| (i.body, i.version));
    Ok(([(header::ETAG, etag(version))], Json(policy)).into_response())
}

fn validate_policy(p: &Policy) -> Result<(), ApiError> {
    if p.max_interruption_band > 4 {
        return Err(ApiError::field(
            "max_interruption_band",
            "must be 0 (<5%) to 4 (>20%)",
        ));
    }
    if !(1..=50).contains(&p.min_spot_pools) {
        return Err(ApiError::field("min_spot_pools", "must be 1 to 50"));
    }
    if p.on_demand_base_pct > 100 {
        return Err(ApiError::field("on_demand_base_pct", "must be 0 to 100"));
    }
    if !(1..=100).contains(&p.max_disrupted_nodes) {
        return Err(ApiError::field("max_disrupted_nodes", "must be 1 to 100"));
    }
    max_items("excluded_namespaces", p.excluded_namespaces.len(), 100)?;
    for (i, ns) in p.excluded_namespaces.iter().enumerate() {
        if !spotwise_core::ids::is_dns_label(ns) {
            return Err(ApiError::field(
                format!("excluded_namespaces[{i}]"),
                "is not a namespace name",
            ));
        }
    }
    if p.cost_labels.len() > 10 {
        return Err(ApiError::field("cost_labels", "at most 10"));
    }
    crate::rightsizing::validate(&p.right_sizing)
}

/// Replaces the policy. With `If-Match`, only if it is still at that version (`"0"`: the
/// defaults, nothing stored yet).
#[utoipa::path(put, path = "/v1/clusters/{id}/policy", tag = "clusters", request_body = Policy,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Policy), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse), (status = 412, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    JsonBody(policy): JsonBody<Policy>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    validate_policy(&policy)?;
    let key = keys::policy(&caller.tenant, &cluster.id);
    let stored = state.store.get::<Policy>(&key).await?;
    let current = stored.as_ref().map_or(0, |i| i.version);
    if_match(&headers, current)?;
    let before = stored.as_ref().map(|i| i.body.clone());
    let (write, version) = match stored {
        Some(mut item) => {
            item.body = policy.clone();
            (Write::versioned(&item)?, item.version + 1)
        }
        None => (
            Write::put(&Item::new(key, &policy), PutCondition::IfAbsent)?,
            1,
        ),
    };
    audit::commit(
        &state,
        vec![write],
        audit::entry(
            &caller,
            "policy.update",
            format!("cluster/{}/policy", cluster.id),
            before.as_ref().and_then(snapshot),
            snapshot(&policy),
        )?,
    )
    .await?;
    Ok(([(header::ETAG, etag(version))], Json(policy)).into_response())
}

fn recommendation_view(r: Recommendation) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// The cluster's plans, newest first.
#[utoipa::path(get, path = "/v1/clusters/{id}/recommendations", tag = "clusters", params(("id" = String, Path), PageParams),
    responses((status = 200, description = "A page of recommendations (node mix, consolidation steps, right-sizing, savings)", body = Page<Object>),
        (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn recommendations(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<serde_json::Value>>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(keys::recommendations_prefix(&cluster.id))
            .newest_first(),
    )?;
    Ok(Json(Page::from_store(
        state.store.query::<Recommendation>(&query).await?,
        recommendation_view,
    )))
}

async fn load_recommendation(
    state: &AppState,
    caller: &Caller,
    cluster: &ClusterId,
    revision: u64,
) -> Result<Item<Recommendation>, ApiError> {
    state
        .store
        .get::<Recommendation>(&keys::recommendation(&caller.tenant, cluster, revision))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("recommendation {revision}")))
}

#[utoipa::path(get, path = "/v1/clusters/{id}/recommendations/{revision}", tag = "clusters",
    params(("id" = String, Path), ("revision" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn recommendation(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, revision)): PathParams<(String, u64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let item = load_recommendation(&state, &caller, &cluster.id, revision).await?;
    Ok(Json(recommendation_view(item.body)))
}

/// Approves a proposed plan and starts its rollout: the planned nodes the cluster lacks are
/// provisioned, the nodes they replace are drained within the disruption budget and removed,
/// and the result is compared with the plan (`GET .../rollout`). Only the newest plan can be
/// approved; the cluster needs a recent snapshot from its agent.
#[utoipa::path(post, path = "/v1/clusters/{id}/recommendations/{revision}/approve", tag = "clusters",
    params(("id" = String, Path), ("revision" = u64, Path)),
    responses((status = 200, description = "The recommendation, now applying, with its rollout", body = Object),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, revision)): PathParams<(String, u64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Operator)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let mut item = load_recommendation(&state, &caller, &cluster.id, revision).await?;
    if item.body.status != RecommendationStatus::Proposed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the recommendation is already applying",
        ));
    }
    let newest =
        spotwise_store::recommendations::newest(&state.store, &caller.tenant, &cluster.id).await?;
    if newest.is_some_and(|n| n.body.revision != revision) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "superseded",
            "a newer recommendation exists; approve that one",
        ));
    }
    if let Some(other) = rollouts::in_progress(&state.store, &caller.tenant, &cluster.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rollout_in_progress",
            format!(
                "the rollout of recommendation {} is {}; cancel it or wait until it ends",
                other.revision,
                other.status.as_str()
            ),
        ));
    }
    let policy = state
        .store
        .get::<Policy>(&keys::policy(&caller.tenant, &cluster.id))
        .await?
        .map(|p| p.body)
        .unwrap_or_default();
    let before = snapshot(&item.body.status);
    // Claim the approval first, so two approvals cannot both start a rollout; the claim is the
    // audited change.
    item.body.status = RecommendationStatus::Applying;
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "recommendation.approve",
            format!("cluster/{}/recommendation/{revision}", cluster.id),
            before,
            snapshot(&item.body.status),
        )?,
    )
    .await?;
    item.version += 1;
    let now = OffsetDateTime::now_utc();
    let started = rollouts::start(
        &state.store,
        &state.snapshots,
        &item.body,
        &cluster.region,
        &policy,
        now,
    )
    .await;
    let rollout = match started {
        Ok(rollout) => rollout,
        Err(err) => {
            // Back to proposed, so the approval can be tried again.
            item.body.status = RecommendationStatus::Proposed;
            if let Err(undo) = state.store.update_versioned(&item).await {
                tracing::error!(error = %undo, "approval claim not released");
            }
            return Err(match err {
                rollouts::StartError::Snapshot(why) => ApiError::new(
                    StatusCode::CONFLICT,
                    "no_snapshot",
                    format!("the cluster cannot be rolled out: {why}"),
                ),
                rollouts::StartError::Backend(why) => {
                    ApiError::new(StatusCode::CONFLICT, "rollout_backend_unavailable", why)
                }
                rollouts::StartError::Store(err) => err.into(),
            });
        }
    };
    let mut view = recommendation_view(item.body);
    view["rollout"] = serde_json::to_value(&rollout).unwrap_or_default();
    Ok(Json(view))
}

/// The rollout of an approved recommendation: status and reason, the node groups created,
/// the nodes kept and replaced with their drains, and before, planned and realised figures.
#[utoipa::path(get, path = "/v1/clusters/{id}/recommendations/{revision}/rollout", tag = "clusters",
    params(("id" = String, Path), ("revision" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn rollout(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, revision)): PathParams<(String, u64)>,
) -> Result<Json<Rollout>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    Ok(Json(
        load_rollout(&state, &caller, &cluster.id, revision)
            .await?
            .body,
    ))
}

async fn load_rollout(
    state: &AppState,
    caller: &Caller,
    cluster: &ClusterId,
    revision: u64,
) -> Result<Item<Rollout>, ApiError> {
    state
        .store
        .get::<Rollout>(&keys::rollout(&caller.tenant, cluster, revision))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("rollout of recommendation {revision}")))
}

/// Asks a rollout to stop at its next safe point (no drain in progress). While provisioning,
/// the node groups it created are deleted; while migrating, nodes not yet drained are
/// uncordoned and those already drained are removed.
#[utoipa::path(post, path = "/v1/clusters/{id}/recommendations/{revision}/rollout/cancel", tag = "clusters",
    params(("id" = String, Path), ("revision" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn cancel_rollout(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, revision)): PathParams<(String, u64)>,
) -> Result<Json<Rollout>, ApiError> {
    caller.require(Role::Operator)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let mut item = load_rollout(&state, &caller, &cluster.id, revision).await?;
    if item.body.status.is_final() || item.body.retrying_spot || item.body.failure.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the rollout is {} and can no longer be cancelled",
                item.body.status.as_str()
            ),
        ));
    }
    if item.body.cancel_requested_by.is_none() {
        let before = snapshot(&item.body.cancel_requested_by);
        item.body.cancel_requested_by = Some(caller.actor());
        item.body.updated_at = OffsetDateTime::now_utc();
        let stored = rollouts::item(item.body.clone(), item.version);
        audit::commit(
            &state,
            vec![Write::versioned(&stored)?],
            audit::entry(
                &caller,
                "rollout.cancel",
                format!("cluster/{}/recommendation/{revision}", cluster.id),
                before,
                snapshot(&item.body.cancel_requested_by),
            )?,
        )
        .await?;
    }
    Ok(Json(item.body))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionFilter {
    /// Only actions of this cluster.
    pub cluster: Option<String>,
}

/// Actions issued to agents, newest first.
#[utoipa::path(get, path = "/v1/actions", tag = "actions", params(PageParams, ActionFilter),
    responses((status = 200, body = Page<ActionRecord>)), security(("api_key" = [])))]
pub async fn list_actions(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
    Params(filter): Params<ActionFilter>,
) -> Result<Json<Page<ActionRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(prefix::ACTION)
            .newest_first(),
    )?;
    let mut listed = Page::from_store(state.store.query::<ActionRecord>(&query).await?, |a| a);
    if let Some(cluster) = &filter.cluster {
        listed
            .items
            .retain(|a| a.action.cluster_id.as_str() == cluster);
    }
    Ok(Json(listed))
}

async fn load_action(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Item<ActionRecord>, ApiError> {
    let id = resource_id(id, "action")?;
    state
        .store
        .get::<ActionRecord>(&keys::action(&caller.tenant, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("action {id}")))
}

#[utoipa::path(get, path = "/v1/actions/{id}", tag = "actions", params(("id" = String, Path)),
    responses((status = 200, body = ActionRecord), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn get_action(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ActionRecord>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(load_action(&state, &caller, &id).await?.body))
}

/// Withdraws a queued action. The agent checks an action's status before it executes it, so
/// a cancelled action is not carried out; one the agent already reported cannot be cancelled.
#[utoipa::path(post, path = "/v1/actions/{id}/cancel", tag = "actions", params(("id" = String, Path)),
    responses((status = 200, body = ActionRecord), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn cancel_action(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ActionRecord>, ApiError> {
    caller.require(Role::Operator)?;
    let mut item = load_action(&state, &caller, &id).await?;
    if !matches!(
        item.body.status,
        ActionStatus::Queued | ActionStatus::Undeliverable
    ) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the action is {:?} and can no longer be cancelled",
                item.body.status
            )
            .to_lowercase(),
        ));
    }
    let before = snapshot(&item.body.status);
    let now = OffsetDateTime::now_utc();
    item.body.status = ActionStatus::Cancelled;
    item.body.status_reason = Some(format!(
        "cancelled by {} at {}",
        caller.actor(),
        rfc3339(now)
    ));
    item.body.updated_at = now;
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "action.cancel",
            format!("action/{id}"),
            before,
            snapshot(&item.body.status),
        )?,
    )
    .await?;
    Ok(Json(item.body))
}
