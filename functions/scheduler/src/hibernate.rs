//! Hibernation: compares what each schedule wants now with whether the cluster is asleep, and
//! makes the transition.
//!
//! Going to sleep reads each managed node group's scaling from EKS, writes it (and the
//! workloads to scale) into the cluster's hibernation state *before* changing anything, then
//! scales the node groups to zero and asks the agent to scale the workloads to zero. Waking
//! restores exactly what the state saved: node group sizes, and each workload's replica count
//! as the agent reported it when scaling it down. Written-first state means a tick that dies
//! halfway is finished by the next one (the state is marked complete only when every step was
//! taken), and a concurrent tick loses the conditional write. A node group that cannot be
//! scaled for good (gone, or not tagged for Spotwise's role) is recorded as a problem and
//! told, never retried every minute; throttling and updates in progress are retried.

use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_eks::types::NodegroupScalingConfig;
use serde::Serialize;
use spotwise_aws::AwsFailure;
use spotwise_core::action::{
    ActionRecord, ActionSpec, ActionStatus, AgentAction, ScalableKind, WorkloadRef,
};
use spotwise_core::domain::{Cluster, Nodegroup, Notification, Severity};
use spotwise_core::snapshot::Snapshot;
use spotwise_core::{ClusterId, TenantId};
use spotwise_schedule::model::{
    HibernationSchedule, HibernationState, NODEGROUP_LABEL, SavedNodegroup, SleepRecord,
    SleepingWorkload,
};
use spotwise_store::Query;
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition, StoreError};
use spotwise_store::{actions, costs};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{ClusterActionError, Deps, SchedulerError};

/// A workload scale action may wait this long on the queue for the agent.
const SCALE_DEADLINE: time::Duration = time::Duration::minutes(30);
/// Snapshots older than this are not trusted for the list of workloads to scale.
const SNAPSHOT_MAX_AGE: time::Duration = time::Duration::hours(6);
const ACTOR: &str = "scheduler:hibernation";
/// Clusters reconciled at once in a tick: 1,000 clusters waking at 08:00 at about 2 s each take
/// about 30 s, inside the one-minute tick.
const TRANSITION_CONCURRENCY: usize = 64;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub slept: Vec<ClusterId>,
    pub woke: Vec<ClusterId>,
    pub failures: Vec<String>,
}

pub async fn tick(deps: &Deps, now: OffsetDateTime) -> Result<Summary, SchedulerError> {
    let schedules = deps
        .store
        .query_all::<HibernationSchedule>(&Query::gsi1(keys::HIBERNATION_SCHEDULES_PARTITION))
        .await?;
    // Many clusters change at the same hour (08:00 in one zone): their transitions run side by
    // side, each mostly waiting on the customer's EKS API and the agent queue.
    let outcomes: Vec<(
        HibernationSchedule,
        Result<Option<Change>, ClusterActionError>,
    )> = futures_util::stream::iter(schedules)
        .map(|item| async move {
            let outcome = Box::pin(reconcile(deps, &item.body, now)).await;
            (item.body, outcome)
        })
        .buffer_unordered(TRANSITION_CONCURRENCY)
        .collect()
        .await;
    let mut summary = Summary::default();
    for (schedule, outcome) in outcomes {
        let cluster = schedule.cluster_id.clone();
        match outcome {
            Ok(Some(Change::Slept)) => summary.slept.push(cluster),
            Ok(Some(Change::Woke)) => summary.woke.push(cluster),
            Ok(None) => {}
            Err(err) => {
                warn!(tenant = %schedule.tenant_id, %cluster, error = %err, "hibernation transition failed");
                summary.failures.push(format!("cluster {cluster}: {err}"));
            }
        }
    }
    Ok(summary)
}

enum Change {
    Slept,
    Woke,
}

async fn reconcile(
    deps: &Deps,
    schedule: &HibernationSchedule,
    now: OffsetDateTime,
) -> Result<Option<Change>, ClusterActionError> {
    let state_key = keys::hibernation_state(&schedule.tenant_id, &schedule.cluster_id);
    let state = deps.store.get::<HibernationState>(&state_key).await?;
    // A disabled schedule still wakes a cluster it left asleep.
    let awake = !schedule.settings.enabled
        || schedule
            .hibernation()
            .map_err(|e| ClusterActionError::Invalid(e.to_string()))?
            .desired(now, schedule.wake_until);
    match (awake, state) {
        (false, None) => Box::pin(sleep(deps, schedule, now))
            .await
            .map(|slept| slept.then_some(Change::Slept)),
        (false, Some(state)) if !state.body.complete => {
            let cluster = cluster_of(deps, schedule).await?;
            Box::pin(take_sleep_steps(deps, schedule, &cluster, state, now))
                .await
                .map(|slept| slept.then_some(Change::Slept))
        }
        (true, Some(state)) => Box::pin(wake(deps, schedule, state.body, now))
            .await
            .map(|()| Some(Change::Woke)),
        _ => Ok(None),
    }
}

/// The EKS client of the cluster's account and region.
async fn eks_for(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &Cluster,
) -> Result<aws_sdk_eks::Client, ClusterActionError> {
    Ok(aws_sdk_eks::Client::new(
        &crate::customer_config(deps, tenant, cluster).await?,
    ))
}

async fn cluster_of(
    deps: &Deps,
    schedule: &HibernationSchedule,
) -> Result<Cluster, ClusterActionError> {
    deps.store
        .get::<Cluster>(&keys::cluster(&schedule.tenant_id, &schedule.cluster_id))
        .await?
        .map(|c| c.body)
        .ok_or_else(|| {
            ClusterActionError::Invalid(format!("cluster {} is not known", schedule.cluster_id))
        })
}

/// Puts the cluster to sleep. `false` when another tick got there first.
async fn sleep(
    deps: &Deps,
    schedule: &HibernationSchedule,
    now: OffsetDateTime,
) -> Result<bool, ClusterActionError> {
    let (tenant, cluster_id) = (&schedule.tenant_id, &schedule.cluster_id);
    let cluster = cluster_of(deps, schedule).await?;
    let mut node_groups = Vec::new();
    let all_groups = known_node_groups(deps, tenant, cluster_id).await?;
    if schedule.settings.scale_node_groups {
        let eks = eks_for(deps, tenant, &cluster).await?;
        for group in &all_groups {
            if schedule.settings.exclude_node_groups.contains(&group.name) {
                continue;
            }
            let described = eks
                .describe_nodegroup()
                .cluster_name(&cluster.name)
                .nodegroup_name(&group.name)
                .send()
                .await
                .map_err(|e| AwsFailure::from_sdk("eks:DescribeNodegroup", e))?;
            let scaling = described
                .nodegroup()
                .and_then(|n| n.scaling_config())
                .ok_or_else(|| {
                    ClusterActionError::Invalid(format!("node group {} has no scaling", group.name))
                })?;
            node_groups.push(SavedNodegroup {
                name: group.name.clone(),
                min_size: scaling.min_size().unwrap_or(0),
                max_size: scaling.max_size().unwrap_or(1),
                desired_size: scaling.desired_size().unwrap_or(0),
            });
        }
    }
    let channel = actions::channel(&deps.store, &deps.vault, tenant, cluster_id).await?;
    let snapshot = spotwise_store::snapshots::load(
        &deps.store,
        &deps.snapshots,
        tenant,
        cluster_id,
        now,
        SNAPSHOT_MAX_AGE,
    )
    .await?
    .ok()
    .map(|(_, snapshot)| snapshot);
    // Workloads and nodes are known from the agent's snapshot, and only an agent acts on them.
    let (workloads, cordoned_nodes) = match snapshot.as_ref().filter(|_| channel.is_some()) {
        Some(snapshot) => (
            if schedule.settings.scale_workloads {
                workloads_to_sleep(schedule, snapshot)
            } else {
                Vec::new()
            },
            if schedule.settings.cordon_nodes {
                nodes_to_cordon(schedule, snapshot)
            } else {
                Vec::new()
            },
        ),
        None => (Vec::new(), Vec::new()),
    };
    let awake_cost_hr = costs::latest_hourly_cost(&deps.store, tenant, cluster_id)
        .await?
        .unwrap_or(0.0)
        * share_asleep(
            snapshot.as_ref(),
            &all_groups,
            &node_groups,
            &cordoned_nodes,
        );
    let state = HibernationState {
        asleep_since: now,
        awake_cost_hr,
        node_groups,
        workloads,
        cordoned_nodes,
        complete: false,
        problems: Vec::new(),
    };
    let item = Item::new(keys::hibernation_state(tenant, cluster_id), state);
    match deps.store.put(&item, PutCondition::IfAbsent).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists { .. }) => return Ok(false),
        Err(err) => return Err(err.into()),
    }
    Box::pin(take_sleep_steps(deps, schedule, &cluster, item, now)).await
}

/// Takes every step of going to sleep that the saved state lists; each is harmless to take
/// again. Marks the state complete; `false` when another tick completed it first.
async fn take_sleep_steps(
    deps: &Deps,
    schedule: &HibernationSchedule,
    cluster: &Cluster,
    mut item: Item<HibernationState>,
    now: OffsetDateTime,
) -> Result<bool, ClusterActionError> {
    let (tenant, cluster_id) = (&schedule.tenant_id, &schedule.cluster_id);
    let channel = actions::channel(&deps.store, &deps.vault, tenant, cluster_id).await?;
    let state = &mut item.body;
    // Cordoned first, so nothing is scheduled onto capacity about to go.
    for node in &state.cordoned_nodes {
        let action = node_action(cluster_id, ActionSpec::Cordon { node: node.clone() }, now);
        send(deps, tenant, channel.as_ref(), action, now).await?;
    }
    if !state.node_groups.is_empty() {
        let eks = eks_for(deps, tenant, cluster).await?;
        let mut scaled = Vec::new();
        for group in std::mem::take(&mut state.node_groups) {
            // EKS requires a maximum of at least one.
            let zero = NodegroupScalingConfig::builder()
                .min_size(0)
                .desired_size(0)
                .max_size(group.max_size.max(1))
                .build();
            match update_scaling(&eks, &cluster.name, &group.name, zero).await {
                Ok(()) => scaled.push(group),
                Err(failure) if worth_retrying(&failure) => return Err(failure.into()),
                // Left as it was, so waking has nothing of it to restore.
                Err(failure) => state
                    .problems
                    .push(format!("node group {}: {}", group.name, failure.message)),
            }
        }
        state.node_groups = scaled;
    }
    for workload in &state.workloads {
        // The scale-down keeps its saved id: one already recorded was sent by an earlier tick.
        if deps
            .store
            .get::<ActionRecord>(&keys::action(tenant, &workload.action_id))
            .await?
            .is_none()
        {
            let action = scale_action(cluster_id, workload, 0, now);
            send(deps, tenant, channel.as_ref(), action, now).await?;
        }
    }
    state.complete = true;
    match deps.store.update_versioned(&item).await {
        Ok(_) => {}
        Err(StoreError::StaleVersion { .. }) => return Ok(false),
        Err(err) => return Err(err.into()),
    }
    let state = &item.body;
    let mut detail = format!(
        "{} node group(s) to zero, {} workload(s) to zero replicas, {} node(s) cordoned",
        state.node_groups.len(),
        state.workloads.len(),
        state.cordoned_nodes.len()
    );
    if !state.problems.is_empty() {
        detail.push_str(&format!("; not done: {}", state.problems.join("; ")));
    }
    info!(%tenant, cluster = %cluster_id, %detail, "cluster put to sleep");
    audit(
        deps,
        schedule,
        "hibernation.sleep",
        None,
        serde_json::to_value(state).ok(),
        now,
    )
    .await;
    notify(
        deps,
        schedule,
        "Cluster hibernating",
        format!("{} is asleep as scheduled: {detail}.", cluster.name),
        problem_severity(&state.problems),
        now,
    )
    .await;
    Ok(true)
}

/// Throttling, outages and a node group update already in progress pass; the next tick
/// takes the step again.
fn worth_retrying(failure: &AwsFailure) -> bool {
    failure.retryable || failure.has_code("ResourceInUseException")
}

fn problem_severity(problems: &[String]) -> Severity {
    if problems.is_empty() {
        Severity::Info
    } else {
        Severity::Warning
    }
}

/// The share of the cluster's nodes that sleeping takes away: those of the node groups scaled
/// to zero and the cordoned ones (an autoscaler removes them once emptied). From the snapshot
/// when there is one, else from the node groups' sizes.
fn share_asleep(
    snapshot: Option<&Snapshot>,
    all_groups: &[Nodegroup],
    slept_groups: &[SavedNodegroup],
    cordoned: &[String],
) -> f64 {
    let slept: BTreeSet<&str> = slept_groups.iter().map(|g| g.name.as_str()).collect();
    let share = match snapshot {
        Some(snapshot) if !snapshot.nodes.is_empty() => {
            let going = snapshot
                .nodes
                .iter()
                .filter(|n| {
                    cordoned.contains(&n.name)
                        || n.labels
                            .get(NODEGROUP_LABEL)
                            .is_some_and(|g| slept.contains(g.as_str()))
                })
                .count();
            going as f64 / snapshot.nodes.len() as f64
        }
        _ => {
            let size = |g: &Nodegroup| f64::from(g.desired_size.max(0));
            let total: f64 = all_groups.iter().map(size).sum();
            let going: f64 = all_groups
                .iter()
                .filter(|g| slept.contains(g.name.as_str()))
                .map(size)
                .sum();
            if total > 0.0 { going / total } else { 0.0 }
        }
    };
    share.clamp(0.0, 1.0)
}

/// Wakes the cluster: node groups back to their saved sizes, workloads back to the replica
/// counts the agent reported replacing. What cannot be restored exactly is recorded.
async fn wake(
    deps: &Deps,
    schedule: &HibernationSchedule,
    state: HibernationState,
    now: OffsetDateTime,
) -> Result<(), ClusterActionError> {
    let (tenant, cluster_id) = (&schedule.tenant_id, &schedule.cluster_id);
    let cluster = cluster_of(deps, schedule).await?;
    let mut problems = state.problems.clone();
    if !state.node_groups.is_empty() {
        let eks = eks_for(deps, tenant, &cluster).await?;
        for group in &state.node_groups {
            let saved = NodegroupScalingConfig::builder()
                .min_size(group.min_size)
                .max_size(group.max_size)
                .desired_size(group.desired_size)
                .build();
            match update_scaling(&eks, &cluster.name, &group.name, saved).await {
                Ok(()) => {}
                Err(failure) if worth_retrying(&failure) => return Err(failure.into()),
                // Gone, or no longer Spotwise's to scale: nothing left to restore.
                Err(failure) => {
                    problems.push(format!("node group {}: {}", group.name, failure.message));
                }
            }
        }
    }
    let channel = actions::channel(&deps.store, &deps.vault, tenant, cluster_id).await?;
    for workload in &state.workloads {
        let id = format!("{}/{}/{}", workload.namespace, workload.kind, workload.name);
        let down = deps
            .store
            .get::<ActionRecord>(&keys::action(tenant, &workload.action_id))
            .await?;
        let replicas = match down.as_ref().map(|a| &a.body) {
            Some(ActionRecord {
                status: ActionStatus::Succeeded,
                previous_replicas: Some(replicas),
                ..
                // Kubernetes never reports a negative count.
            }) => u32::try_from(*replicas).unwrap_or_default(),
            // Still waiting for the agent: withdrawn, so it cannot put the workload to sleep
            // after the cluster woke.
            Some(ActionRecord {
                status: ActionStatus::Queued | ActionStatus::Undeliverable,
                ..
            }) => {
                if let Some(mut record) = down {
                    record.body.status = ActionStatus::Cancelled;
                    record.body.status_reason =
                        Some("cancelled: the cluster woke before the agent scaled it".into());
                    record.body.updated_at = now;
                    match deps.store.update_versioned(&record).await {
                        Ok(_) => {}
                        // The agent's report came in between: the next tick restores it.
                        Err(StoreError::StaleVersion { .. }) => {
                            return Err(ClusterActionError::Invalid(format!(
                                "{id}: the scale-down was reported while waking; retried"
                            )));
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                continue;
            }
            Some(record) => {
                problems.push(format!(
                    "{id}: the scale-down ended {} without a replica count; left as it is",
                    record.status.as_str()
                ));
                continue;
            }
            None => {
                problems.push(format!(
                    "{id}: the scale-down action is gone; left as it is"
                ));
                continue;
            }
        };
        let action = scale_action(cluster_id, workload, replicas, now);
        send(deps, tenant, channel.as_ref(), action, now).await?;
    }
    // Nodes that went with their node group are gone; uncordoning them fails harmlessly.
    for node in &state.cordoned_nodes {
        let action = node_action(cluster_id, ActionSpec::Uncordon { node: node.clone() }, now);
        send(deps, tenant, channel.as_ref(), action, now).await?;
    }
    let hours = (now - state.asleep_since).as_seconds_f64() / 3600.0;
    let record = SleepRecord {
        cluster_id: cluster_id.clone(),
        asleep_since: state.asleep_since,
        woke_at: now,
        hours,
        awake_cost_hr: state.awake_cost_hr,
        saved_usd: (state.awake_cost_hr * hours * 100.0).round() / 100.0,
        node_groups: state.node_groups.clone(),
        workloads: state.workloads.len(),
        problems: problems.clone(),
    };
    let since = spotwise_store::runs::sortable(state.asleep_since);
    deps.store
        .put(
            &Item::new(keys::sleep(tenant, cluster_id, &since), record.clone()),
            PutCondition::Always,
        )
        .await?;
    deps.store
        .delete(&keys::hibernation_state(tenant, cluster_id))
        .await?;
    info!(%tenant, cluster = %cluster_id, hours, saved_usd = record.saved_usd, problems = problems.len(), "cluster woken");
    audit(
        deps,
        schedule,
        "hibernation.wake",
        serde_json::to_value(&state).ok(),
        serde_json::to_value(&record).ok(),
        now,
    )
    .await;
    let mut body = format!(
        "{} is awake after {hours:.1} h asleep (about ${:.2} saved).",
        cluster.name, record.saved_usd
    );
    if !problems.is_empty() {
        body.push_str(&format!(" Not restored: {}", problems.join("; ")));
    }
    notify(
        deps,
        schedule,
        "Cluster awake",
        body,
        problem_severity(&problems),
        now,
    )
    .await;
    Ok(())
}

/// Signs and queues an action for the cluster's agent, recorded like every other action.
async fn send(
    deps: &Deps,
    tenant: &TenantId,
    channel: Option<&actions::AgentChannel>,
    action: AgentAction,
    now: OffsetDateTime,
) -> Result<(), ClusterActionError> {
    actions::dispatch(&deps.store, &deps.sqs, tenant, channel, action, ACTOR, now).await?;
    Ok(())
}

async fn update_scaling(
    eks: &aws_sdk_eks::Client,
    cluster: &str,
    group: &str,
    scaling: NodegroupScalingConfig,
) -> Result<(), AwsFailure> {
    eks.update_nodegroup_config()
        .cluster_name(cluster)
        .nodegroup_name(group)
        .scaling_config(scaling)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("eks:UpdateNodegroupConfig", e))?;
    Ok(())
}

pub(crate) async fn known_node_groups(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Vec<Nodegroup>, StoreError> {
    let groups =
        Query::partition(keys::tenant_partition(tenant)).prefix(keys::nodegroups_prefix(cluster));
    Ok(deps
        .store
        .query_all::<Nodegroup>(&groups)
        .await?
        .into_iter()
        .map(|i| i.body)
        .filter(|g| g.vanished_at.is_none())
        .collect())
}

/// The Deployments and StatefulSets of the snapshot that the schedule lets sleep, each with
/// the id of the action that will scale it down.
fn workloads_to_sleep(
    schedule: &HibernationSchedule,
    snapshot: &Snapshot,
) -> Vec<SleepingWorkload> {
    let mut chosen: BTreeSet<(String, ScalableKind, String)> = BTreeSet::new();
    let mut kept: BTreeSet<(String, ScalableKind, String)> = BTreeSet::new();
    for pod in &snapshot.pods {
        let workload = spotwise_cost::inputs::workload(&pod.workload);
        let Some((kind, name)) = workload.split_once('/') else {
            continue;
        };
        let Some(kind) = ScalableKind::from_kind(kind) else {
            continue;
        };
        let key = (pod.workload.namespace.clone(), kind, name.to_owned());
        if schedule.may_scale(&pod.workload.namespace, &pod.workload.labels) {
            chosen.insert(key);
        } else {
            kept.insert(key);
        }
    }
    // One excluded pod keeps its whole workload awake.
    chosen
        .difference(&kept)
        .map(|(namespace, kind, name)| SleepingWorkload {
            namespace: namespace.clone(),
            kind: *kind,
            name: name.clone(),
            action_id: AgentAction::new_id(),
        })
        .collect()
}

/// Schedulable nodes outside the excluded node groups; ones already cordoned stay as they are
/// (and are not uncordoned on waking).
fn nodes_to_cordon(schedule: &HibernationSchedule, snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .nodes
        .iter()
        .filter(|n| !n.unschedulable && schedule.may_cordon(&n.labels))
        .map(|n| n.name.clone())
        .collect()
}

fn node_action(cluster: &ClusterId, spec: ActionSpec, now: OffsetDateTime) -> AgentAction {
    AgentAction {
        action_id: AgentAction::new_id(),
        cluster_id: cluster.clone(),
        reason: format!("hibernation: {}", spec.kind()),
        spec,
        issued_at: now,
        not_after: now + SCALE_DEADLINE,
        signature: String::new(),
    }
}

fn scale_action(
    cluster: &ClusterId,
    workload: &SleepingWorkload,
    replicas: u32,
    now: OffsetDateTime,
) -> AgentAction {
    // Scaling down reuses the id saved in the state, so the wake finds its report.
    let action_id = if replicas == 0 {
        workload.action_id.clone()
    } else {
        AgentAction::new_id()
    };
    AgentAction {
        action_id,
        cluster_id: cluster.clone(),
        spec: ActionSpec::Scale {
            workload: WorkloadRef {
                namespace: workload.namespace.clone(),
                kind: workload.kind,
                name: workload.name.clone(),
            },
            replicas,
        },
        reason: if replicas == 0 {
            "hibernation: going to sleep".into()
        } else {
            "hibernation: waking up".into()
        },
        issued_at: now,
        not_after: now + SCALE_DEADLINE,
        signature: String::new(),
    }
}

async fn audit(
    deps: &Deps,
    schedule: &HibernationSchedule,
    action: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    now: OffsetDateTime,
) {
    let change = spotwise_store::audit::Change {
        action,
        target: format!("cluster/{}", schedule.cluster_id),
        before,
        after,
    };
    if let Err(err) =
        spotwise_store::audit::write(&deps.store, &schedule.tenant_id, ACTOR, change, now).await
    {
        warn!(error = %err, "audit event not written");
    }
}

async fn notify(
    deps: &Deps,
    schedule: &HibernationSchedule,
    title: &str,
    body: String,
    severity: Severity,
    now: OffsetDateTime,
) {
    let notification = Notification {
        tenant_id: schedule.tenant_id.clone(),
        event_type: "hibernation".into(),
        severity,
        cluster_id: Some(schedule.cluster_id.clone()),
        labels: BTreeMap::new(),
        title: title.to_owned(),
        body,
        links: vec![],
        occurred_at: now,
        dedup_key: format!(
            "hibernation:{}:{}:{}",
            schedule.cluster_id,
            title,
            now.unix_timestamp()
        ),
    };
    deps.notifications.notify(&notification).await;
}
