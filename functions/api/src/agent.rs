//! The routes an in-cluster agent calls with its agent key: heartbeat, action status and
//! results, snapshot uploads. The cluster always comes from the key.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use spotwise_core::action::{ActionRecord, ActionStatus, Amendment};
use spotwise_core::domain::{Notification, Severity};
use spotwise_core::messages::{
    ActionReport, Heartbeat, MAX_AGENT_VERSION, MAX_REJECTION_REASON, MAX_REJECTIONS_PER_HEARTBEAT,
    ReportedOutcome, SnapshotStored, SnapshotUpload, SnapshotUploadRequest,
};
use spotwise_core::snapshot_codec::MAX_COMPRESSED_BYTES;
use spotwise_core::{ClusterId, TenantId};
use spotwise_store::keys;
use spotwise_store::runs::sortable;
use spotwise_store::snapshots::{self, Unusable};
use spotwise_store::{Item, PutCondition};
use time::OffsetDateTime;
use tracing::warn;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::paging::PathParams;
use crate::versioning::resource_id;

const EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A heartbeat after a silence this long is an "agent back online" event.
const SILENCE_BEFORE_ONLINE: time::Duration = time::Duration::minutes(2);

/// Something that happened in a cluster, kept 24 hours.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterEvent {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `agent_online`, `agent_offline`, `snapshot`, `action_succeeded`, `action_failed`,
    /// `action_dry_run`, `action_rejected`.
    pub kind: String,
    pub message: String,
}

async fn record_event(
    state: &AppState,
    tenant: &TenantId,
    cluster: &ClusterId,
    kind: &str,
    message: String,
) {
    let now = state.clock.now();
    let id = ulid::Ulid::new().to_string();
    let event = ClusterEvent {
        id: id.clone(),
        at: now,
        kind: kind.to_owned(),
        message,
    };
    let item = Item::new(keys::cluster_event(tenant, cluster, &id), event)
        .expiring_at(now + EVENT_RETENTION);
    if let Err(err) = state.store.put(&item, PutCondition::Always).await {
        warn!(%cluster, error = %err, "cluster event not written");
    }
}

fn validate_heartbeat(beat: &Heartbeat) -> Result<(), ApiError> {
    if beat.agent_version.chars().count() > MAX_AGENT_VERSION {
        return Err(ApiError::field(
            "agent_version",
            format!("at most {MAX_AGENT_VERSION} characters"),
        ));
    }
    if beat.rejected.len() > MAX_REJECTIONS_PER_HEARTBEAT {
        return Err(ApiError::field(
            "rejected",
            format!("at most {MAX_REJECTIONS_PER_HEARTBEAT} refusals per heartbeat"),
        ));
    }
    if let Some(i) = beat
        .rejected
        .iter()
        .position(|r| r.reason.chars().count() > MAX_REJECTION_REASON)
    {
        return Err(ApiError::field(
            format!("rejected[{i}].reason"),
            format!("at most {MAX_REJECTION_REASON} characters"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agent", request_body = Heartbeat,
    responses((status = 204), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(beat): JsonBody<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    let cluster = caller.agent_cluster()?.clone();
    validate_heartbeat(&beat)?;
    let now = state.clock.now();
    let previous = spotwise_store::agents::beat(
        &state.store,
        &caller.tenant,
        &cluster,
        beat.agent_version.clone(),
        beat.dry_run,
        now,
    )
    .await?;
    // The history the public status page's uptime is drawn from: one write when the agent first
    // reports and one per silence, nothing per heartbeat.
    match &previous {
        None => {
            spotwise_store::agents::record_first_report(
                &state.store,
                &caller.tenant,
                &cluster,
                now,
            )
            .await?;
        }
        Some(p)
            if p.offline_since.is_some() || now - p.last_heartbeat_at > SILENCE_BEFORE_ONLINE =>
        {
            spotwise_store::agents::record_silence(
                &state.store,
                &caller.tenant,
                &cluster,
                p.last_heartbeat_at,
                now,
            )
            .await?;
        }
        Some(_) => {}
    }
    for rejection in &beat.rejected {
        record_event(
            &state,
            &caller.tenant,
            &cluster,
            "action_rejected",
            format!("agent refused a queued message: {}", rejection.reason),
        )
        .await;
    }
    if let Some(first) = beat.rejected.first() {
        // Only the platform can sign actions: a refused message means a misconfigured secret
        // or someone else writing to the cluster's queue.
        state.notifications.notify(
            &Notification {
                tenant_id: caller.tenant.clone(),
                event_type: "action_rejected".into(),
                severity: Severity::Warning,
                cluster_id: Some(cluster.clone()),
                labels: BTreeMap::new(),
                title: format!(
                    "Agent of {cluster} refused {} queued message(s)",
                    beat.rejected.len()
                ),
                body: format!(
                    "The agent executes only actions signed with this cluster's secret. First refusal: {}",
                    first.reason
                ),
                links: Vec::new(),
                occurred_at: now,
                dedup_key: format!("action-rejected-{cluster}-{}", sortable(first.at)),
            },
        )
        .await;
    }
    if previous.is_none_or(|p| {
        p.offline_since.is_some() || now - p.last_heartbeat_at > SILENCE_BEFORE_ONLINE
    }) {
        let mode = if beat.dry_run { " in dry-run mode" } else { "" };
        record_event(
            &state,
            &caller.tenant,
            &cluster,
            "agent_online",
            format!("agent {} reporting{mode}", beat.agent_version),
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn own_action(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Item<ActionRecord>, ApiError> {
    let cluster = caller.agent_cluster()?;
    let id = resource_id(id, "action")?;
    state
        .store
        .get::<ActionRecord>(&keys::action(&caller.tenant, id))
        .await?
        .filter(|item| &item.body.action.cluster_id == cluster)
        .ok_or_else(|| ApiError::not_found(format!("action {id}")))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionState {
    pub status: ActionStatus,
    /// What later interruption signals about the node added to a drain in flight (an earlier
    /// deadline, a lifecycle hook to complete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amendment: Option<Amendment>,
}

/// What the platform says of an action: the agent asks before executing, and skips a
/// cancelled one; a running drain asks again for amendments.
#[utoipa::path(get, path = "/v1/agent/actions/{id}", tag = "agent", params(("id" = String, Path)),
    responses((status = 200, body = ActionState), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn action_state(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<ActionState>, ApiError> {
    let record = own_action(&state, &caller, &id).await?.body;
    Ok(Json(ActionState {
        status: record.status,
        amendment: record.amendment,
    }))
}

/// Records how an action ended. Reporting the same result again changes nothing.
#[utoipa::path(post, path = "/v1/agent/actions/{id}/result", tag = "agent", params(("id" = String, Path)),
    request_body = ActionReport,
    responses((status = 200, body = ActionRecord), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn action_result(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(report): JsonBody<ActionReport>,
) -> Result<Json<ActionRecord>, ApiError> {
    let mut item = own_action(&state, &caller, &id).await?;
    let status = match report.outcome {
        ReportedOutcome::Succeeded | ReportedOutcome::DryRun => ActionStatus::Succeeded,
        ReportedOutcome::Failed => ActionStatus::Failed,
    };
    let mut reason = report.detail.clone();
    if report.outcome == ReportedOutcome::DryRun {
        reason = format!("dry run: {reason}");
    }
    if !report.pods_left.is_empty() {
        let left: Vec<String> = report
            .pods_left
            .iter()
            .map(|(pod, why)| format!("{pod} ({why})"))
            .collect();
        reason = format!("{reason}; left: {}", left.join(", "));
    }
    if item.body.status == status && item.body.status_reason.as_deref() == Some(reason.as_str()) {
        return Ok(Json(item.body));
    }
    item.body.status = status;
    item.body.status_reason = Some(reason.clone());
    item.body.previous_replicas = report.previous_replicas.or(item.body.previous_replicas);
    item.body.updated_at = state.clock.now();
    state.store.update_versioned(&item).await?;
    let kind = match report.outcome {
        ReportedOutcome::Succeeded => "action_succeeded",
        ReportedOutcome::Failed => "action_failed",
        ReportedOutcome::DryRun => "action_dry_run",
    };
    let action = &item.body.action;
    let summary = action.spec.to_string();
    record_event(
        &state,
        &caller.tenant,
        &action.cluster_id,
        kind,
        format!("{summary}: {reason}"),
    )
    .await;
    // A rollout reports its own progress; each of its cordons and drains is told only when
    // it fails.
    if item.body.source == spotwise_store::rollouts::ACTOR
        && !matches!(report.outcome, ReportedOutcome::Failed)
    {
        return Ok(Json(item.body));
    }
    let (severity, verb) = match report.outcome {
        ReportedOutcome::Failed => (Severity::Warning, "failed"),
        ReportedOutcome::Succeeded => (Severity::Info, "done"),
        ReportedOutcome::DryRun => (Severity::Info, "dry run"),
    };
    state
        .notifications
        .notify(&Notification {
            tenant_id: caller.tenant.clone(),
            event_type: "action_result".into(),
            severity,
            cluster_id: Some(action.cluster_id.clone()),
            labels: BTreeMap::from([
                ("action".to_owned(), action.kind().to_string()),
                (
                    "outcome".to_owned(),
                    kind.trim_start_matches("action_").to_owned(),
                ),
            ]),
            title: format!("{summary} on {}: {verb}", action.cluster_id),
            body: reason,
            links: Vec::new(),
            occurred_at: item.body.updated_at,
            dedup_key: format!("action-result-{}-{kind}", action.action_id),
        })
        .await;
    Ok(Json(item.body))
}

/// Hands out an upload for the cluster's next snapshot: a presigned PUT of its gzip JSON to the
/// snapshot bucket, under the tenant's prefix. When the digest is the stored snapshot's and that
/// object is under an hour old, nothing is uploaded: the stored snapshot counts as taken now.
#[utoipa::path(post, path = "/v1/agent/snapshot-uploads", tag = "agent",
    request_body = SnapshotUploadRequest,
    responses((status = 200, body = SnapshotUpload), (status = 400, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn start_snapshot_upload(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<SnapshotUploadRequest>,
) -> Result<Json<SnapshotUpload>, ApiError> {
    let cluster = caller.agent_cluster()?.clone();
    if request.sha256.len() != 64
        || !request
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::field(
            "sha256",
            "the hex SHA-256 of the snapshot JSON: 64 lowercase hex digits",
        ));
    }
    if request.size == 0 || request.size > MAX_COMPRESSED_BYTES {
        return Err(ApiError::field(
            "size",
            format!("from 1 to {MAX_COMPRESSED_BYTES} bytes of gzip"),
        ));
    }
    let now = state.clock.now();
    if let Some(head) = snapshots::head(&state.store, &caller.tenant, &cluster).await?
        && head.body.unchanged(&request.sha256, now)
    {
        let head = snapshots::confirm_unchanged(&state.store, head, now).await?;
        return Ok(Json(SnapshotUpload::Unchanged {
            snapshot_id: head.id,
        }));
    }
    let upload_id = snapshots::new_id();
    let key = keys::snapshot_object(&caller.tenant, &cluster, &upload_id);
    let presigned = state
        .snapshots
        .presign_gzip_json_put(&key, request.size, snapshots::UPLOAD_WINDOW)
        .await
        .map_err(spotwise_store::StoreError::from)?;
    Ok(Json(SnapshotUpload::Upload {
        upload_id,
        url: presigned.url,
        headers: presigned.headers,
        expires_at: now + snapshots::UPLOAD_WINDOW,
    }))
}

/// Makes an uploaded snapshot the cluster's current one (nodes with instance ids, capacity type
/// and allocatable; pods with requests, owners, node and usage; PDBs), records what changed in
/// its pods since the one before, and keeps that one as the previous snapshot. Confirming the
/// current snapshot again changes nothing. An object that is not a valid snapshot is deleted and
/// refused with 400.
#[utoipa::path(post, path = "/v1/agent/snapshot-uploads/{id}/confirm", tag = "agent",
    params(("id" = String, Path, description = "The `upload_id` handed out")),
    responses((status = 200, body = SnapshotStored), (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn confirm_snapshot_upload(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<SnapshotStored>, ApiError> {
    let cluster = caller.agent_cluster()?.clone();
    let tenant = &caller.tenant;
    let id = resource_id(&id, "snapshot upload")?;
    let current = snapshots::head(&state.store, tenant, &cluster).await?;
    if let Some(head) = current.as_ref().filter(|head| head.body.id == id) {
        return Ok(Json(SnapshotStored {
            snapshot_id: head.body.id.clone(),
            nodes: head.body.nodes,
            pods: head.body.pods,
        }));
    }
    let decoded = match snapshots::read(&state.snapshots, tenant, &cluster, id).await? {
        Ok(decoded) => decoded,
        Err(Unusable::Gone) => {
            return Err(ApiError::not_found(format!(
                "snapshot upload {id} (nothing was uploaded for it, or it expired)"
            )));
        }
        Err(unusable) => {
            let key = keys::snapshot_object(tenant, &cluster, id);
            if let Err(err) = state.snapshots.delete(&key).await {
                warn!(key, error = %err, "refused snapshot object not deleted");
            }
            return Err(ApiError::field("snapshot", unusable.to_string()));
        }
    };
    let now = state.clock.now();
    let before = match &current {
        Some(head) if now - head.body.taken_at <= crate::pods::COMPARABLE_AGE => {
            match snapshots::read(&state.snapshots, tenant, &cluster, &head.body.id).await {
                Ok(Ok(before)) => Some(before.snapshot),
                Ok(Err(_)) => None,
                Err(err) => {
                    warn!(%cluster, error = %err, "previous snapshot not read; pod history skipped");
                    None
                }
            }
        }
        _ => None,
    };
    let head = snapshots::commit(
        &state.store,
        &state.snapshots,
        (id, &decoded.snapshot, &decoded.sha256),
        current,
        (tenant, &cluster),
        now,
    )
    .await?;
    let changed = match &before {
        Some(before) => {
            crate::pods::record(&state, tenant, &cluster, before, &decoded.snapshot, now).await
        }
        None => 0,
    };
    record_event(
        &state,
        tenant,
        &cluster,
        "snapshot",
        format!(
            "{} nodes, {} pods, {changed} pod changes",
            head.nodes, head.pods
        ),
    )
    .await;
    Ok(Json(SnapshotStored {
        snapshot_id: head.id,
        nodes: head.nodes,
        pods: head.pods,
    }))
}
