//! Right-sizing changes, each minute: sends a requested change's patch to the agent, watches
//! the workload's pods in the snapshots that follow (the agent reports every five minutes),
//! and reverts a change the workload does not survive, raising its memory headroom. Every
//! step is audited with the requests before and after, and the tenant is told how it ended.

use std::collections::BTreeMap;

use serde::Serialize;
use spotwise_core::action::{ActionRecord, ActionSpec, ActionStatus, AgentAction};
use spotwise_core::domain::{Notification, Severity};
use spotwise_core::rightsizing::ContainerResources;
use spotwise_optimizer::resize::{ChangeStatus, ResizeChange};
use spotwise_store::resize;
use spotwise_store::snapshots;
use spotwise_store::{Item, StoreError, actions, keys};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{ClusterActionError, Deps, SchedulerError};

/// The source recorded on the actions and audit events of right-sizing.
pub const ACTOR: &str = "scheduler:rightsizing";
/// A patch is a single API call; the agent has this long to run it.
const ACTION_DEADLINE: time::Duration = time::Duration::minutes(15);
/// A snapshot older than this says nothing about the pods now.
const SNAPSHOT_MAX_AGE: time::Duration = time::Duration::minutes(30);

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// `cluster/workload: status` of each change advanced.
    pub advanced: Vec<String>,
    pub failures: Vec<String>,
}

pub async fn tick(deps: &Deps, now: OffsetDateTime) -> Result<Summary, SchedulerError> {
    let active = resize::active(&deps.store).await?;
    let (advanced, failures) = crate::advance_each(active, "right-sizing", |item| async move {
        let name = format!("{}/{}", item.body.cluster_id, item.body.workload);
        let key = keys::resize_change(&item.body.tenant_id, &item.body.cluster_id, &item.body.id);
        (
            name,
            advance(deps, &key, now).await.map(ChangeStatus::as_str),
        )
    })
    .await;
    Ok(Summary { advanced, failures })
}

/// Takes the change's next step, if it can; returns where it stands.
pub async fn advance(
    deps: &Deps,
    key: &keys::Key,
    now: OffsetDateTime,
) -> Result<ChangeStatus, ClusterActionError> {
    // The index is eventually consistent: the item itself says where the change stands.
    let Some(mut item) = deps.store.get::<ResizeChange>(key).await? else {
        return Err(ClusterActionError::Invalid(
            "the right-sizing change is gone".into(),
        ));
    };
    let status = item.body.status;
    match status {
        ChangeStatus::Pending => {
            let id = format!("resize-{}", item.body.id);
            send(deps, &item.body, &id, item.body.after(), "apply", now).await?;
            item.body.action_id = Some(id);
            move_to(&mut item.body, ChangeStatus::Applying, now);
            resize::save(&deps.store, &mut item).await?;
        }
        ChangeStatus::Applying => {
            let Some((status, reason)) =
                action_status(deps, &item.body, item.body.action_id.as_deref()).await?
            else {
                return Ok(status);
            };
            match status {
                ActionStatus::Succeeded => {
                    item.body.applied_at = Some(now);
                    item.body.watch_until =
                        Some(now + time::Duration::minutes(i64::from(item.body.watch_minutes)));
                    move_to(&mut item.body, ChangeStatus::Watching, now);
                    resize::save(&deps.store, &mut item).await?;
                    audit(deps, &item.body, "rightsizing.apply", now).await;
                    info!(cluster = %item.body.cluster_id, workload = %item.body.workload, "right-sizing applied; watching");
                }
                ActionStatus::Queued => {}
                _ => {
                    let why =
                        reason.unwrap_or_else(|| format!("the patch ended {}", status.as_str()));
                    item.body.reason = format!("not applied: {why}");
                    end(deps, &mut item, ChangeStatus::Failed, now).await?;
                }
            }
        }
        ChangeStatus::Watching => watch(deps, &mut item, now).await?,
        ChangeStatus::Reverting => {
            let Some((status, reason)) =
                action_status(deps, &item.body, item.body.revert_action_id.as_deref()).await?
            else {
                return Ok(status);
            };
            match status {
                ActionStatus::Succeeded => {
                    end(deps, &mut item, ChangeStatus::Reverted, now).await?
                }
                ActionStatus::Queued => {}
                _ => {
                    let why =
                        reason.unwrap_or_else(|| format!("the revert ended {}", status.as_str()));
                    item.body.reason = format!("{}; the revert failed: {why}", item.body.reason);
                    end(deps, &mut item, ChangeStatus::Failed, now).await?;
                }
            }
        }
        ChangeStatus::Kept | ChangeStatus::Reverted | ChangeStatus::Failed => {}
    }
    Ok(item.body.status)
}

fn move_to(change: &mut ResizeChange, status: ChangeStatus, now: OffsetDateTime) {
    change.status = status;
    change.updated_at = now;
}

/// Reads each new snapshot object once: a regression sends the revert; a quiet watch is kept
/// once a snapshot from its end (an unchanged cluster's confirmation counts) shows nothing
/// wrong. While the agent sends none, the change stays watched.
async fn watch(
    deps: &Deps,
    item: &mut Item<ResizeChange>,
    now: OffsetDateTime,
) -> Result<(), ClusterActionError> {
    let (tenant, cluster) = (item.body.tenant_id.clone(), item.body.cluster_id.clone());
    let seen = (
        item.body.checked_snapshot.clone(),
        item.body.checked_taken_at,
    );
    let head = snapshots::head(&deps.store, &tenant, &cluster).await?;
    if let Some(head) = head
        .map(|h| h.body)
        .filter(|h| now - h.taken_at <= SNAPSHOT_MAX_AGE)
    {
        if seen.0.as_deref() != Some(head.id.as_str()) {
            let decoded = snapshots::read(&deps.snapshots, &tenant, &cluster, &head.id).await?;
            item.body.checked_snapshot = Some(head.id.clone());
            if let Ok(decoded) = decoded {
                let snapshot = decoded.snapshot;
                if let Some(why) = item.body.regression(&snapshot) {
                    let id = format!("resize-{}-revert", item.body.id);
                    send(deps, &item.body, &id, item.body.before(), "revert", now).await?;
                    item.body.revert_action_id = Some(id);
                    item.body.reason = why;
                    move_to(&mut item.body, ChangeStatus::Reverting, now);
                    resize::save(&deps.store, item).await?;
                    audit(deps, &item.body, "rightsizing.revert", now).await;
                    return Ok(());
                }
                let (on, all) = item.body.rolled(&snapshot);
                item.body.reason = format!(
                    "{on} of {all} pods run the new requests; no OOM kill, no new restarts"
                );
            }
        }
        item.body.checked_taken_at = Some(head.taken_at);
    }
    if item.body.watched_through() {
        end(deps, item, ChangeStatus::Kept, now).await?;
    } else if (
        item.body.checked_snapshot.clone(),
        item.body.checked_taken_at,
    ) != seen
    {
        resize::save(&deps.store, item).await?;
    }
    Ok(())
}

/// Ends the change, frees its workload (a revert raises its memory headroom), and tells.
async fn end(
    deps: &Deps,
    item: &mut Item<ResizeChange>,
    status: ChangeStatus,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    move_to(&mut item.body, status, now);
    item.body.finished_at = Some(now);
    resize::finish(&deps.store, item, status == ChangeStatus::Reverted, now).await?;
    let (action, severity) = match status {
        ChangeStatus::Kept => ("rightsizing.keep", Severity::Info),
        ChangeStatus::Reverted => ("rightsizing.reverted", Severity::Warning),
        _ => ("rightsizing.fail", Severity::Warning),
    };
    audit(deps, &item.body, action, now).await;
    notify(deps, &item.body, severity, now).await;
    Ok(())
}

/// The status of the change's action and the agent's reason; `None` before it is recorded.
async fn action_status(
    deps: &Deps,
    change: &ResizeChange,
    id: Option<&str>,
) -> Result<Option<(ActionStatus, Option<String>)>, StoreError> {
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(deps
        .store
        .get::<ActionRecord>(&keys::action(&change.tenant_id, id))
        .await?
        .map(|r| (r.body.status, r.body.status_reason)))
}

/// Sends the patch under `id` unless an earlier attempt already recorded it.
async fn send(
    deps: &Deps,
    change: &ResizeChange,
    id: &str,
    containers: Vec<ContainerResources>,
    what: &str,
    now: OffsetDateTime,
) -> Result<(), ClusterActionError> {
    let (tenant, cluster) = (&change.tenant_id, &change.cluster_id);
    if deps
        .store
        .get::<ActionRecord>(&keys::action(tenant, id))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let channel = actions::channel(&deps.store, &deps.vault, tenant, cluster).await?;
    let action = AgentAction {
        action_id: id.to_owned(),
        cluster_id: cluster.clone(),
        reason: format!("right-sizing {what} of {}", change.workload),
        spec: ActionSpec::SetResources {
            workload: change.workload.clone(),
            containers,
        },
        issued_at: now,
        not_after: now + ACTION_DEADLINE,
        signature: String::new(),
    };
    actions::dispatch(
        &deps.store,
        &deps.sqs,
        tenant,
        channel.as_ref(),
        action,
        ACTOR,
        now,
    )
    .await?;
    Ok(())
}

async fn audit(deps: &Deps, change: &ResizeChange, action: &str, now: OffsetDateTime) {
    let reverting = matches!(
        change.status,
        ChangeStatus::Reverting | ChangeStatus::Reverted
    );
    let (before, after) = if reverting {
        (change.after(), change.before())
    } else {
        (change.before(), change.after())
    };
    let event = spotwise_store::audit::Change {
        action,
        target: format!("cluster/{}/workload/{}", change.cluster_id, change.workload),
        before: serde_json::to_value(before).ok(),
        after: serde_json::to_value(serde_json::json!({
            "containers": after,
            "status": change.status.as_str(),
            "reason": change.reason,
            "change": change.id,
        }))
        .ok(),
    };
    if let Err(err) =
        spotwise_store::audit::write(&deps.store, &change.tenant_id, ACTOR, event, now).await
    {
        warn!(error = %err, "audit event not written");
    }
}

async fn notify(deps: &Deps, change: &ResizeChange, severity: Severity, now: OffsetDateTime) {
    let title = match change.status {
        ChangeStatus::Reverting | ChangeStatus::Reverted => {
            format!("Right-sizing of {} reverted", change.workload)
        }
        ChangeStatus::Kept => format!("Right-sizing of {} kept", change.workload),
        _ => format!("Right-sizing of {} failed", change.workload),
    };
    let requests = |resources: &[ContainerResources]| {
        resources
            .iter()
            .map(|c| format!("{} {}m/{} MiB", c.name, c.cpu_request_m, c.mem_request_mib))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let notification = Notification {
        tenant_id: change.tenant_id.clone(),
        event_type: "rightsizing".into(),
        severity,
        cluster_id: Some(change.cluster_id.clone()),
        labels: BTreeMap::from([
            ("status".to_owned(), change.status.as_str().to_owned()),
            ("workload".to_owned(), change.workload.to_string()),
        ]),
        title,
        body: format!(
            "{}. Requests before: {}; after: {}.",
            change.reason,
            requests(&change.before()),
            requests(&change.after())
        ),
        links: vec![format!("/v1/clusters/{}/rightsizing", change.cluster_id)],
        occurred_at: now,
        dedup_key: format!("rightsizing:{}:{}", change.id, change.status.as_str()),
    };
    deps.notifications.notify(&notification).await;
}
