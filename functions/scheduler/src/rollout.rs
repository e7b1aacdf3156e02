//! Rollouts: each tick advances every approved recommendation that is still being realised,
//! through the customer's role (EKS managed node groups, Auto Scaling) and the cluster's agent
//! (cordons, drains, and on Karpenter the NodePools).
//!
//! The choice of step is [`spotwise_optimizer::rollout::next_step`]'s; this module takes it and
//! stores the record before any step that depends on it (cordons and drains are recorded by
//! their actions, so those are stored together). A step is safe to take again: node groups are
//! created under a name fixed before the call (an existing one is resized instead), and an
//! agent action is sent under an id stored before it, only when no record of it exists. A tick
//! that dies between a step and its write is finished by the next one.

use std::collections::BTreeMap;

use aws_sdk_eks::types::{
    CapacityTypes, LaunchTemplateSpecification, NodegroupScalingConfig, Taint as EksTaint,
};
use serde::Serialize;
use spotwise_aws::AwsFailure;
use spotwise_core::action::{ActionRecord, ActionSpec, AgentAction};
use spotwise_core::domain::{CapacityType, Cluster, Notification, Severity};
use spotwise_core::karpenter;
use spotwise_core::snapshot::Snapshot;
use spotwise_core::{ClusterId, TenantId};
use spotwise_optimizer::rollout::{
    self, Backend, Figures, MANAGED_TAG, NODE_TEMPLATE_LABEL, NewGroup, Observed, Rollout,
    RolloutStatus, SPOT_RETRY_AFTER, Step,
};
use spotwise_schedule::Zone;
use spotwise_schedule::cron::Cron;
use spotwise_store::rollouts::{self, ACTOR};
use spotwise_store::{Item, Query, StoreError, actions, keys, snapshots};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{ClusterActionError, Deps, SchedulerError};

/// An agent action of a rollout may wait this long on the queue.
const ACTION_DEADLINE: time::Duration = time::Duration::minutes(30);
/// A snapshot older than this does not show whether new nodes are Ready.
const SNAPSHOT_MAX_AGE: time::Duration = time::Duration::hours(1);
/// Steps one tick takes on one rollout: enough for the cordons of the most nodes a rollout
/// replaces, and a bound on a rollout that keeps finding work.
const MAX_STEPS_PER_TICK: usize = 2_500;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// `cluster#revision: status` of each rollout advanced.
    pub advanced: Vec<String>,
    pub failures: Vec<String>,
}

pub async fn tick(deps: &Deps, now: OffsetDateTime) -> Result<Summary, SchedulerError> {
    let active = deps
        .store
        .query_all::<Rollout>(&Query::gsi1(keys::ACTIVE_ROLLOUTS_PARTITION))
        .await?;
    let (advanced, failures) = crate::advance_each(active, "rollout", |item| async move {
        let name = format!("{}#{}", item.body.cluster_id, item.body.revision);
        let key = keys::rollout(
            &item.body.tenant_id,
            &item.body.cluster_id,
            item.body.revision,
        );
        let status = Box::pin(advance(deps, &key, now)).await;
        (name, status.map(RolloutStatus::as_str))
    })
    .await;
    Ok(Summary { advanced, failures })
}

/// Takes the rollout's steps until it has to wait; returns where it stands.
pub async fn advance(
    deps: &Deps,
    key: &keys::Key,
    now: OffsetDateTime,
) -> Result<RolloutStatus, ClusterActionError> {
    let Some(mut item) = deps.store.get::<Rollout>(key).await? else {
        return Err(ClusterActionError::Invalid("the rollout is gone".into()));
    };
    let mut cluster = Target::new(deps, &item.body.tenant_id, &item.body.cluster_id, now).await?;
    if item.body.status == RolloutStatus::Completed {
        match (item.body.spot_retry_at, cluster.snapshot.as_ref()) {
            (Some(at), Some((snapshot, _))) if at <= now => {
                let retried = match item.body.backend {
                    Backend::ManagedNodeGroups => item.body.retry_spot(snapshot, now),
                    Backend::Karpenter => item.body.retry_spot_karpenter(snapshot, now),
                };
                if retried {
                    notify(deps, &item.body, "Trying spot again", Severity::Info, now).await;
                }
                save(deps, &mut item).await?;
            }
            _ => return Ok(item.body.status),
        }
    }
    // Read once: the statuses of actions sent during the tick are known without reading.
    let (mut sent, mut failures) = action_statuses(deps, &item.body).await?;
    let mut allowances = cluster.disruptions_allowed(now);
    let mut unsaved = false;
    for _ in 0..MAX_STEPS_PER_TICK {
        // What was read moves into the observation and back, not copied at every step.
        let mut observed =
            cluster.observed((std::mem::take(&mut sent), std::mem::take(&mut failures)));
        observed.disruptions_allowed = std::mem::take(&mut allowances);
        let step = rollout::next_step(&item.body, &observed, now);
        sent = observed.actions;
        failures = observed.failures;
        allowances = observed.disruptions_allowed;
        if let Step::Wait(reason) = &step {
            if *reason != item.body.reason && !item.body.status.is_final() {
                item.body.reason.clone_from(reason);
                item.body.updated_at = now;
                unsaved = true;
            }
            break;
        }
        let before = item.body.status;
        take(deps, &mut cluster, &mut item.body, &step, now).await?;
        // A cordon or drain is recorded by its action, and a drain's end is read from that
        // action again: a tick that dies before storing them loses nothing. Every other step
        // is stored before the next one, which may depend on it.
        if matches!(step, Step::Cordon(_) | Step::Drain(_) | Step::Drained(_)) {
            unsaved = true;
        } else {
            save(deps, &mut item).await?;
            unsaved = false;
        }
        let queued = item.body.action_of(&step);
        if let Some(id) = queued {
            sent.entry(id)
                .or_insert(spotwise_core::action::ActionStatus::Queued);
        }
        if item.body.status != before {
            info!(tenant = %item.body.tenant_id, cluster = %item.body.cluster_id,
                revision = item.body.revision, status = item.body.status.as_str(),
                reason = %item.body.reason, "rollout status");
            let severity = match item.body.status {
                RolloutStatus::Failed | RolloutStatus::RolledBack => Severity::Warning,
                _ => Severity::Info,
            };
            let title = format!("Rollout {}", item.body.status.as_str().replace('_', " "));
            notify(deps, &item.body, &title, severity, now).await;
            if item.body.status.is_final() {
                audit(deps, &item.body, now).await;
            }
        }
    }
    if unsaved {
        save(deps, &mut item).await?;
    }
    Ok(item.body.status)
}

async fn save(deps: &Deps, item: &mut Item<Rollout>) -> Result<(), StoreError> {
    let stored = rollouts::item(item.body.clone(), item.version);
    item.version = deps.store.update_versioned(&stored).await?;
    Ok(())
}

/// The cluster a rollout acts on: its record, agent channel and latest snapshot, read once
/// per tick, and the customer's clients, made on first use.
pub struct Target {
    tenant: TenantId,
    cluster: Cluster,
    channel: Option<actions::AgentChannel>,
    snapshot: Option<(Snapshot, OffsetDateTime)>,
    clients: Option<Clients>,
    /// The customer node group new ones copy, and its subnets' zones (read once per tick).
    template: Option<Template>,
}

struct Template {
    group: aws_sdk_eks::types::Nodegroup,
    /// (subnet, zone)
    subnets: Vec<(String, String)>,
}

struct Clients {
    eks: aws_sdk_eks::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
}

impl Target {
    pub async fn new(
        deps: &Deps,
        tenant: &TenantId,
        cluster_id: &ClusterId,
        now: OffsetDateTime,
    ) -> Result<Self, ClusterActionError> {
        let cluster = deps
            .store
            .get::<Cluster>(&keys::cluster(tenant, cluster_id))
            .await?
            .ok_or_else(|| {
                ClusterActionError::Invalid(format!("cluster {cluster_id} is not known"))
            })?
            .body;
        let channel = actions::channel(&deps.store, &deps.vault, tenant, cluster_id).await?;
        let snapshot = snapshots::load(
            &deps.store,
            &deps.snapshots,
            tenant,
            cluster_id,
            now,
            SNAPSHOT_MAX_AGE,
        )
        .await?
        .ok()
        .map(|(head, snapshot)| (snapshot, head.taken_at));
        Ok(Self {
            tenant: tenant.clone(),
            cluster,
            channel,
            snapshot,
            clients: None,
            template: None,
        })
    }

    /// What the rollout's next step is chosen from: this snapshot and the actions' statuses.
    pub fn observed(&self, (actions, failures): ActionStatuses) -> Observed<'_> {
        Observed {
            snapshot: self.snapshot.as_ref().map(|(s, at)| (s, *at)),
            actions,
            failures,
            ..Observed::default()
        }
    }

    /// Nodes each of the customer's NodePools may have disrupted now, by its disruption
    /// budgets as the snapshot shows them (a pool edited during the rollout is obeyed at once).
    pub fn disruptions_allowed(&self, now: OffsetDateTime) -> BTreeMap<String, u32> {
        let Some((snapshot, _)) = &self.snapshot else {
            return BTreeMap::new();
        };
        let Some(karpenter) = &snapshot.karpenter else {
            return BTreeMap::new();
        };
        let mut allowed = BTreeMap::new();
        for pool in karpenter.customer_pools() {
            let nodes = snapshot
                .nodes
                .iter()
                .filter(|n| n.node_pool() == Some(pool.spec.name.as_str()))
                .count();
            let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
            let budgets = &pool.spec.disruption.budgets;
            // Karpenter's default when a pool names none: 10% of its nodes.
            let default = [karpenter::Budget {
                nodes: "10%".into(),
                ..karpenter::Budget::default()
            }];
            let budgets = if budgets.is_empty() {
                &default[..]
            } else {
                budgets
            };
            let least = budgets
                .iter()
                .filter(|b| budget_active(b, now))
                .filter_map(|b| b.allowed(nodes))
                .min();
            if let Some(least) = least {
                allowed.insert(pool.spec.name.clone(), least);
            }
        }
        allowed
    }

    async fn clients(&mut self, deps: &Deps) -> Result<&Clients, ClusterActionError> {
        if self.clients.is_none() {
            let config = crate::customer_config(deps, &self.tenant, &self.cluster).await?;
            self.clients = Some(Clients {
                eks: aws_sdk_eks::Client::new(&config),
                autoscaling: aws_sdk_autoscaling::Client::new(&config),
                ec2: aws_sdk_ec2::Client::new(&config),
            });
        }
        self.clients
            .as_ref()
            .ok_or_else(|| ClusterActionError::Invalid("no clients".into()))
    }
}

/// Whether a NodePool disruption budget applies at `now`: always without a schedule, else
/// within `duration` of a time its cron (UTC) names. A schedule that cannot be read applies,
/// the cautious reading.
fn budget_active(budget: &karpenter::Budget, now: OffsetDateTime) -> bool {
    let (Some(schedule), Some(duration)) = (&budget.schedule, &budget.duration) else {
        return true;
    };
    let (Ok(cron), Some(seconds)) = (Cron::parse(schedule), karpenter::duration_seconds(duration))
    else {
        return true;
    };
    cron.next_after(&Zone::utc(), now - time::Duration::seconds(seconds))
        .is_some_and(|start| start <= now)
}

/// What the agent reported for the actions the rollout sent: each one's status, and why the
/// failed ones failed.
pub type ActionStatuses = (
    BTreeMap<String, spotwise_core::action::ActionStatus>,
    BTreeMap<String, String>,
);

/// The status of each action the rollout sent for nodes still in play, and for its NodePools.
pub async fn action_statuses(deps: &Deps, rollout: &Rollout) -> Result<ActionStatuses, StoreError> {
    let mut failures = BTreeMap::new();
    if rollout.backend == Backend::Karpenter {
        let mut actions = BTreeMap::new();
        for group in &rollout.groups {
            for id in [
                group.apply_action(),
                group.reserve_action(),
                group.release_action(),
                group.delete_action(),
            ] {
                if let Some(record) = deps
                    .store
                    .get::<ActionRecord>(&keys::action(&rollout.tenant_id, &id))
                    .await?
                {
                    if let Some(reason) = record.body.status_reason {
                        failures.insert(id.clone(), reason);
                    }
                    actions.insert(id, record.body.status);
                }
            }
        }
        let (nodes, _) = node_action_statuses(deps, rollout).await?;
        actions.extend(nodes);
        return Ok((actions, failures));
    }
    node_action_statuses(deps, rollout).await
}

async fn node_action_statuses(
    deps: &Deps,
    rollout: &Rollout,
) -> Result<ActionStatuses, StoreError> {
    let mut actions = BTreeMap::new();
    for node in rollout.replaced.iter().filter(|r| !r.released) {
        for id in [&node.cordon_action, &node.drain_action]
            .into_iter()
            .flatten()
        {
            if node.drained && Some(id) == node.cordon_action.as_ref() {
                continue;
            }
            if let Some(record) = deps
                .store
                .get::<ActionRecord>(&keys::action(&rollout.tenant_id, id))
                .await?
            {
                actions.insert(id.clone(), record.body.status);
            }
        }
    }
    Ok((actions, BTreeMap::new()))
}

/// Takes one step and records its effect on the rollout (not stored: the caller saves).
pub async fn take(
    deps: &Deps,
    target: &mut Target,
    rollout: &mut Rollout,
    step: &Step,
    now: OffsetDateTime,
) -> Result<(), ClusterActionError> {
    rollout.updated_at = now;
    match step {
        Step::Wait(reason) => rollout.reason.clone_from(reason),
        Step::CreateGroup(i) if rollout.backend == Backend::Karpenter => {
            let group = group_at(rollout, *i)?;
            let node_pool = group.node_pool.clone().ok_or_else(|| {
                ClusterActionError::Invalid(format!("group {} has no NodePool", group.name))
            })?;
            let id = rollout.action_of(step);
            send(
                deps,
                target,
                rollout,
                id,
                ActionSpec::ApplyNodePool { node_pool },
                now,
            )
            .await?;
        }
        Step::GroupCreated(i) => {
            group_at(rollout, *i)?;
            rollout.groups[*i].created = true;
        }
        Step::DeleteGroup(i) if rollout.backend == Backend::Karpenter => {
            let name = group_at(rollout, *i)?.name.clone();
            let id = rollout.action_of(step);
            send(
                deps,
                target,
                rollout,
                id,
                ActionSpec::DeleteNodePool { name },
                now,
            )
            .await?;
        }
        Step::GroupDeleted(i) => {
            group_at(rollout, *i)?;
            rollout.groups[*i].deleted = true;
        }
        Step::Reserve(i) | Step::Release(i) => {
            let group = group_at(rollout, *i)?;
            let reservation = group.reservation.clone().ok_or_else(|| {
                ClusterActionError::Invalid(format!("group {} reserves no nodes", group.name))
            })?;
            let spec = if matches!(step, Step::Reserve(_)) {
                ActionSpec::ReserveNodes { reservation }
            } else {
                // The snapshot that verifies comes after the placeholders are gone.
                rollout.released_at = Some(now);
                ActionSpec::ReleaseNodes { reservation }
            };
            let id = rollout.action_of(step);
            send(deps, target, rollout, id, spec, now).await?;
        }
        Step::CreateGroup(i) => {
            let group = group_at(rollout, *i)?.clone();
            let calls = create_or_resize(deps, target, rollout.revision, &group).await;
            rollout.aws_calls += calls.calls;
            match calls.result {
                Ok(()) => rollout.groups[*i].created = true,
                Err(failure) if failure.retryable => return Err(failure.into()),
                Err(failure) => rollout.failure = Some(failure.to_string()),
            }
        }
        Step::FallBack { group, shortfall } => {
            let spot = group_at(rollout, *group)?.clone();
            let name = rollout::group_name(
                &rollout.cluster_id,
                rollout.revision,
                CapacityType::OnDemand,
                &spot.zone,
                &spot.instance_types.first().cloned().unwrap_or_default(),
                true,
            );
            rollout.groups.push(NewGroup {
                name: name.clone(),
                capacity_type: CapacityType::OnDemand,
                zone: spot.zone.clone(),
                instance_types: spot.instance_types.iter().take(1).cloned().collect(),
                desired: *shortfall,
                created: false,
                shortfall: 0,
                fallback_for: Some(spot.name.clone()),
                deleted: false,
                node_pool: None,
                reservation: None,
            });
            let spot = &mut rollout.groups[*group];
            spot.desired -= (*shortfall).min(spot.desired);
            spot.shortfall += shortfall;
            // Resized to what it has through the create-or-resize step.
            spot.created = false;
            let reason = format!(
                "spot short of {shortfall} node(s) in {} ({}) after {} min: on-demand group {name} stands in; spot is tried again after completion",
                spot.zone,
                spot.instance_types.join(", "),
                rollout::CAPACITY_TIMEOUT.whole_minutes()
            );
            rollout.record(RolloutStatus::Provisioning, reason, now);
            notify(
                deps,
                rollout,
                "Spot fell back to on-demand",
                Severity::Warning,
                now,
            )
            .await;
        }
        Step::StartMigration => {
            let (new, ready) = match (rollout.backend, &target.snapshot) {
                (Backend::Karpenter, Some((snapshot, _))) => {
                    rollout.reserved_nodes_ready(snapshot, |_| true)
                }
                _ => {
                    let new: u32 = rollout
                        .groups
                        .iter()
                        .filter(|g| !g.deleted)
                        .map(|g| g.desired)
                        .sum();
                    (new, new)
                }
            };
            let launched = if ready < new {
                format!(
                    "{ready} of {new} planned node(s) launched after {} min (Karpenter places what does not fit)",
                    rollout::CAPACITY_TIMEOUT.whole_minutes()
                )
            } else {
                format!("{new} new node(s) Ready")
            };
            rollout.record(
                RolloutStatus::Migrating,
                format!(
                    "{launched}; moving pods off {} node(s)",
                    rollout.replaced.len()
                ),
                now,
            );
        }
        Step::AssignActions => {
            for node in &mut rollout.replaced {
                node.cordon_action.get_or_insert_with(AgentAction::new_id);
                node.drain_action.get_or_insert_with(AgentAction::new_id);
            }
        }
        Step::Cordon(i) => {
            let name = replaced_at(rollout, *i)?.name.clone();
            let id = rollout.action_of(step);
            send(
                deps,
                target,
                rollout,
                id,
                ActionSpec::Cordon { node: name },
                now,
            )
            .await?;
        }
        Step::Drain(i) => {
            let name = replaced_at(rollout, *i)?.name.clone();
            let id = rollout.action_of(step);
            let spec = ActionSpec::Drain {
                node: name,
                taint: None,
                lifecycle_hook: None,
            };
            send(deps, target, rollout, id, spec, now).await?;
        }
        Step::Drained(i) => {
            replaced_at(rollout, *i)?;
            rollout.replaced[*i].drained = true;
            // On Karpenter the last drain hands the emptied nodes to Karpenter to remove.
            if rollout.backend == Backend::Karpenter && rollout.replaced.iter().all(|r| r.drained) {
                rollout.released_at = Some(now);
            }
        }
        Step::EmptyGroup(group) => {
            let ours = rollout::is_spotwise_group(group);
            let calls = if ours {
                delete_group(deps, target, group).await
            } else {
                scale_to_zero(deps, target, group).await
            };
            rollout.aws_calls += calls.calls;
            match calls.result {
                Ok(()) => {
                    for node in rollout
                        .replaced
                        .iter_mut()
                        .filter(|r| &r.nodegroup == group)
                    {
                        node.released = true;
                    }
                    if let Some(g) = rollout.groups.iter_mut().find(|g| &g.name == group) {
                        g.deleted = true;
                    }
                    mark_released(rollout, now);
                }
                Err(failure) if failure.retryable => return Err(failure.into()),
                Err(failure) => {
                    rollout.failure = Some(format!("node group {group}: {failure}"));
                }
            }
        }
        Step::Terminate(i) => {
            let node = replaced_at(rollout, *i)?.clone();
            let Some(instance) = node.instance_id.clone() else {
                rollout.failure = Some(format!("node {} has no EC2 instance id", node.name));
                return Ok(());
            };
            let clients = target.clients(deps).await?;
            rollout.aws_calls += 1;
            let terminated = clients
                .autoscaling
                .terminate_instance_in_auto_scaling_group()
                .instance_id(&instance)
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map_err(|e| {
                    AwsFailure::from_sdk("autoscaling:TerminateInstanceInAutoScalingGroup", e)
                });
            if let Err(failure) = terminated {
                // Already out of its group (a repeated step, or the instance left on its own)?
                rollout.aws_calls += 1;
                let still_in_group = clients
                    .autoscaling
                    .describe_auto_scaling_instances()
                    .instance_ids(&instance)
                    .send()
                    .await
                    .map_err(|e| {
                        AwsFailure::from_sdk("autoscaling:DescribeAutoScalingInstances", e)
                    })?
                    .auto_scaling_instances()
                    .iter()
                    .any(|i| i.instance_id() == Some(instance.as_str()));
                if still_in_group {
                    if failure.retryable {
                        return Err(failure.into());
                    }
                    rollout.failure = Some(format!("instance {instance}: {failure}"));
                    return Ok(());
                }
            }
            rollout.replaced[*i].released = true;
            mark_released(rollout, now);
        }
        Step::Verify => {
            let Some((snapshot, _)) = target.snapshot.as_ref() else {
                return Ok(());
            };
            let offerings = rollouts::offerings(
                &deps.store,
                &rollout.tenant_id,
                &rollout.cluster_id,
                snapshot,
                &target.cluster.region,
            )
            .await?;
            let realised = Figures::of_snapshot(snapshot, rollouts::pricer(&offerings));
            // On Karpenter, the drained nodes Karpenter removed are released; any it keeps
            // (a NodePool that does not consolidate) are named in the reason.
            let mut kept_by_karpenter = Vec::new();
            let mut karpenter_fallbacks = 0;
            if rollout.backend == Backend::Karpenter {
                karpenter_fallbacks = rollout.karpenter_fallbacks(snapshot).len();
                for node in &mut rollout.replaced {
                    node.released = !snapshot.nodes.iter().any(|n| n.name == node.name);
                    if !node.released {
                        kept_by_karpenter.push(node.name.clone());
                    }
                }
            }
            let ratio = if rollout.planned.cost_hr > 0.0 {
                realised.cost_hr / rollout.planned.cost_hr
            } else {
                1.0
            };
            let fallback = rollout
                .groups
                .iter()
                .any(|g| g.fallback_for.is_some() && !g.deleted);
            let mut reason = format!(
                "realised ${:.3}/h for ${:.3}/h planned ({:.1}%), {} of {} nodes spot, {} pod(s) Pending",
                realised.cost_hr,
                rollout.planned.cost_hr,
                ratio * 100.0,
                realised.spot_nodes,
                realised.nodes,
                realised.pods_pending,
            );
            if fallback {
                reason.push_str("; part of the spot capacity runs on-demand until spot is back");
            }
            if !kept_by_karpenter.is_empty() {
                reason.push_str(&format!(
                    "; Karpenter has not removed {} drained node(s) ({}): their NodePool does not consolidate empty nodes",
                    kept_by_karpenter.len(),
                    kept_by_karpenter.join(", ")
                ));
            }
            if karpenter_fallbacks > 0 {
                reason.push_str(&format!(
                    "; {karpenter_fallbacks} node(s) came from the customer's NodePools (spot short or Spotwise's pools full): spot is tried again in {} min",
                    rollout.karpenter_retry_delay().whole_minutes()
                ));
            }
            rollout.realised = Some(realised);
            rollout.completed_at = Some(now);
            rollout.retrying_spot = false;
            rollout.spot_retry_at = match rollout.backend {
                Backend::ManagedNodeGroups => fallback.then_some(now + SPOT_RETRY_AFTER),
                Backend::Karpenter => {
                    if karpenter_fallbacks == 0 {
                        rollout.spot_retries = 0;
                    }
                    (karpenter_fallbacks > 0).then(|| now + rollout.karpenter_retry_delay())
                }
            };
            rollout.record(RolloutStatus::Completed, reason, now);
        }
        Step::SpotStillShort => {
            let ready = target
                .snapshot
                .as_ref()
                .map(|(s, _)| rollout.ready_nodes(s))
                .unwrap_or_default();
            for i in 0..rollout.groups.len() {
                let group = rollout.groups[i].clone();
                if group.capacity_type != CapacityType::Spot || group.deleted {
                    continue;
                }
                let have = ready.get(&group.name).copied().unwrap_or(0);
                if have >= group.desired {
                    continue;
                }
                let resized = NewGroup {
                    desired: have,
                    ..group.clone()
                };
                let calls = create_or_resize(deps, target, rollout.revision, &resized).await;
                rollout.aws_calls += calls.calls;
                calls.result?;
                rollout.groups[i].shortfall += group.desired - have;
                rollout.groups[i].desired = have;
                rollout.groups[i].created = true;
            }
            let fallbacks: Vec<String> = rollout
                .groups
                .iter()
                .filter(|g| g.fallback_for.is_some())
                .map(|g| g.name.clone())
                .collect();
            rollout
                .replaced
                .retain(|r| !fallbacks.contains(&r.nodegroup) || r.drained);
            rollout.emptied_groups.retain(|g| !fallbacks.contains(g));
            rollout.retrying_spot = false;
            rollout.spot_retry_at = Some(now + SPOT_RETRY_AFTER);
            rollout.record(
                RolloutStatus::Completed,
                "spot is still short; the on-demand fallback stays, spot is tried again later"
                    .into(),
                now,
            );
        }
        Step::Fail(reason) => {
            rollout.failure = Some(reason.clone());
            rollout.record(
                RolloutStatus::Failed,
                format!("{reason}; undoing what the rollout created"),
                now,
            );
        }
        Step::Restore(i) => {
            let name = replaced_at(rollout, *i)?.name.clone();
            send(
                deps,
                target,
                rollout,
                Some(AgentAction::new_id()),
                ActionSpec::Uncordon { node: name },
                now,
            )
            .await?;
            rollout.replaced[*i].restored = true;
        }
        Step::DeleteGroup(i) => {
            let name = group_at(rollout, *i)?.name.clone();
            let calls = delete_group(deps, target, &name).await;
            rollout.aws_calls += calls.calls;
            match calls.result {
                Ok(()) => rollout.groups[*i].deleted = true,
                Err(failure) if failure.retryable => return Err(failure.into()),
                Err(failure) => {
                    rollout.groups[*i].deleted = true;
                    rollout.record(
                        rollout.status,
                        format!("node group {name} not deleted: {failure}"),
                        now,
                    );
                }
            }
        }
        Step::Finish(status, reason) => {
            rollout.completed_at = Some(now);
            rollout.record(*status, reason.clone(), now);
        }
    }
    Ok(())
}

fn group_at(rollout: &Rollout, i: usize) -> Result<&NewGroup, ClusterActionError> {
    rollout
        .groups
        .get(i)
        .ok_or_else(|| ClusterActionError::Invalid(format!("no group {i}")))
}

fn replaced_at(rollout: &Rollout, i: usize) -> Result<&rollout::ReplacedNode, ClusterActionError> {
    rollout
        .replaced
        .get(i)
        .ok_or_else(|| ClusterActionError::Invalid(format!("no replaced node {i}")))
}

fn mark_released(rollout: &mut Rollout, now: OffsetDateTime) {
    if rollout.replaced.iter().all(|r| r.released) {
        rollout.released_at = Some(now);
    }
}

/// Sends the action under `id` unless an earlier attempt already recorded it.
async fn send(
    deps: &Deps,
    target: &Target,
    rollout: &Rollout,
    id: Option<String>,
    spec: ActionSpec,
    now: OffsetDateTime,
) -> Result<(), ClusterActionError> {
    let id = id.ok_or_else(|| ClusterActionError::Invalid("action id not assigned".into()))?;
    if deps
        .store
        .get::<ActionRecord>(&keys::action(&rollout.tenant_id, &id))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let action = AgentAction {
        action_id: id,
        cluster_id: rollout.cluster_id.clone(),
        reason: format!(
            "rollout of recommendation {}: {}",
            rollout.revision,
            spec.kind()
        ),
        spec,
        issued_at: now,
        not_after: now + ACTION_DEADLINE,
        signature: String::new(),
    };
    actions::dispatch(
        &deps.store,
        &deps.sqs,
        &rollout.tenant_id,
        target.channel.as_ref(),
        action,
        ACTOR,
        now,
    )
    .await?;
    Ok(())
}

/// The customer's role could not be used (not linked, or STS refused): the next tick retries.
fn no_access(err: &ClusterActionError) -> AwsFailure {
    AwsFailure {
        operation: "sts:AssumeRole",
        code: None,
        message: err.to_string(),
        retryable: true,
    }
}

/// An AWS step's outcome and the calls it took.
struct Calls {
    calls: u32,
    result: Result<(), AwsFailure>,
}

/// Creates the group, copying node role, AMI type, launch template, labels and taints from
/// the cluster's own node group it replaces; a group that exists already is resized.
async fn create_or_resize(
    deps: &Deps,
    target: &mut Target,
    revision: u64,
    group: &NewGroup,
) -> Calls {
    let cluster_name = target.cluster.name.clone();
    if let Err(err) = target.clients(deps).await {
        return Calls {
            calls: 0,
            result: Err(no_access(&err)),
        };
    }
    let mut calls = 0;
    if target.template.is_none()
        && let Some(clients) = target.clients.as_ref()
    {
        // A store that cannot answer now is retried by the next tick, not taken for a
        // cluster without node groups.
        let source = match source_group(deps, &target.tenant, &target.cluster.id).await {
            Ok(source) => source,
            Err(err) => {
                return Calls {
                    calls,
                    result: Err(AwsFailure {
                        operation: "dynamodb:Query",
                        code: None,
                        message: err.to_string(),
                        retryable: true,
                    }),
                };
            }
        };
        match read_template(clients, &cluster_name, source.as_deref(), &mut calls).await {
            Ok(template) => target.template = Some(template),
            Err(failure) => {
                return Calls {
                    calls,
                    result: Err(failure),
                };
            }
        }
    }
    let (Some(clients), Some(template)) = (target.clients.as_ref(), target.template.as_ref())
    else {
        return Calls {
            calls,
            result: Err(AwsFailure {
                operation: "eks:DescribeNodegroup",
                code: None,
                message: "no node group to copy".into(),
                retryable: true,
            }),
        };
    };
    let result = async {
        let scaling = NodegroupScalingConfig::builder()
            .min_size(0)
            .max_size(i32::try_from(group.desired.max(1) * 2).unwrap_or(i32::MAX))
            .desired_size(i32::try_from(group.desired).unwrap_or(i32::MAX))
            .build();
        let subnets: Vec<String> = template
            .subnets
            .iter()
            .filter(|(_, zone)| *zone == group.zone)
            .map(|(subnet, _)| subnet.clone())
            .collect();
        if subnets.is_empty() {
            return Err(AwsFailure {
                operation: "ec2:DescribeSubnets",
                code: None,
                message: format!("the cluster's node subnets have none in {}", group.zone),
                retryable: false,
            });
        }
        let template = &template.group;
        let capacity = match group.capacity_type {
            CapacityType::Spot => CapacityTypes::Spot,
            CapacityType::OnDemand => CapacityTypes::OnDemand,
        };
        let capacity_label = match group.capacity_type {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        };
        let mut labels: std::collections::HashMap<String, String> =
            template.labels().cloned().unwrap_or_default();
        labels.insert(MANAGED_TAG.into(), "true".into());
        labels.insert(NODE_TEMPLATE_LABEL.into(), format!("rollout-{revision}"));
        labels.insert("karpenter.sh/capacity-type".into(), capacity_label.into());
        let mut create = clients
            .eks
            .create_nodegroup()
            .cluster_name(&cluster_name)
            .nodegroup_name(&group.name)
            .client_request_token(&group.name)
            .scaling_config(scaling.clone())
            .set_subnets(Some(subnets))
            .capacity_type(capacity)
            .set_labels(Some(labels))
            .tags(MANAGED_TAG, "true")
            .tags("spotwise.io/rollout", revision.to_string());
        if let Some(role) = template.node_role() {
            create = create.node_role(role);
        }
        if let Some(ami) = template.ami_type() {
            create = create.ami_type(ami.clone());
        }
        for taint in template.taints() {
            create = create.taints(
                EksTaint::builder()
                    .set_key(taint.key().map(str::to_owned))
                    .set_value(taint.value().map(str::to_owned))
                    .set_effect(taint.effect().cloned())
                    .build(),
            );
        }
        match template.launch_template() {
            Some(lt) => {
                create = create
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .set_id(lt.id().map(str::to_owned))
                            .set_name(lt.name().map(str::to_owned))
                            .set_version(lt.version().map(str::to_owned))
                            .build(),
                    )
                    .set_instance_types(Some(group.instance_types.clone()));
            }
            None => create = create.set_instance_types(Some(group.instance_types.clone())),
        }
        calls += 1;
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = AwsFailure::from_sdk("eks:CreateNodegroup", e);
                if !failure.has_code("ResourceInUseException") {
                    return Err(failure);
                }
                // Made by an earlier attempt (or earlier in the rollout): sized as asked now.
                calls += 1;
                clients
                    .eks
                    .update_nodegroup_config()
                    .cluster_name(&cluster_name)
                    .nodegroup_name(&group.name)
                    .scaling_config(scaling)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsFailure::from_sdk("eks:UpdateNodegroupConfig", e))
            }
        }
    }
    .await;
    Calls { calls, result }
}

/// The customer node group new groups copy: the first of the cluster's own.
async fn source_group(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<String>, StoreError> {
    Ok(crate::hibernate::known_node_groups(deps, tenant, cluster)
        .await?
        .into_iter()
        .map(|g| g.name)
        .find(|name| !rollout::is_spotwise_group(name)))
}

/// The node group new groups copy, and the zones of its subnets.
async fn read_template(
    clients: &Clients,
    cluster_name: &str,
    source: Option<&str>,
    calls: &mut u32,
) -> Result<Template, AwsFailure> {
    let Some(source) = source else {
        return Err(AwsFailure {
            operation: "eks:CreateNodegroup",
            code: None,
            message: "the cluster has no managed node group to copy the node role from".into(),
            retryable: false,
        });
    };
    *calls += 1;
    let group = clients
        .eks
        .describe_nodegroup()
        .cluster_name(cluster_name)
        .nodegroup_name(source)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("eks:DescribeNodegroup", e))?
        .nodegroup()
        .cloned()
        .ok_or_else(|| AwsFailure {
            operation: "eks:DescribeNodegroup",
            code: None,
            message: format!("node group {source} not described"),
            retryable: true,
        })?;
    *calls += 1;
    let described = clients
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(group.subnets().to_vec()))
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("ec2:DescribeSubnets", e))?;
    let subnets = described
        .subnets()
        .iter()
        .filter_map(|s| Some((s.subnet_id()?.to_owned(), s.availability_zone()?.to_owned())))
        .collect();
    Ok(Template { group, subnets })
}

async fn delete_group(deps: &Deps, target: &mut Target, group: &str) -> Calls {
    let cluster_name = target.cluster.name.clone();
    let result = match target.clients(deps).await {
        Ok(clients) => clients
            .eks
            .delete_nodegroup()
            .cluster_name(&cluster_name)
            .nodegroup_name(group)
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                let failure = AwsFailure::from_sdk("eks:DeleteNodegroup", e);
                // Deleted by an earlier attempt.
                if failure.has_code("ResourceNotFoundException") {
                    Ok(())
                } else {
                    Err(failure)
                }
            }),
        Err(err) => Err(no_access(&err)),
    };
    Calls { calls: 1, result }
}

async fn scale_to_zero(deps: &Deps, target: &mut Target, group: &str) -> Calls {
    let cluster_name = target.cluster.name.clone();
    let result = match target.clients(deps).await {
        Ok(clients) => clients
            .eks
            .update_nodegroup_config()
            .cluster_name(&cluster_name)
            .nodegroup_name(group)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(0)
                    .desired_size(0)
                    .max_size(1)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsFailure::from_sdk("eks:UpdateNodegroupConfig", e)),
        Err(err) => Err(no_access(&err)),
    };
    Calls { calls: 1, result }
}

async fn notify(
    deps: &Deps,
    rollout: &Rollout,
    title: &str,
    severity: Severity,
    now: OffsetDateTime,
) {
    let notification = Notification {
        tenant_id: rollout.tenant_id.clone(),
        event_type: "rollout".into(),
        severity,
        cluster_id: Some(rollout.cluster_id.clone()),
        labels: BTreeMap::from([("status".to_owned(), rollout.status.as_str().to_owned())]),
        title: title.to_owned(),
        body: format!(
            "Recommendation {} on {}: {}.",
            rollout.revision, rollout.cluster_id, rollout.reason
        ),
        links: vec![format!(
            "/v1/clusters/{}/recommendations/{}/rollout",
            rollout.cluster_id, rollout.revision
        )],
        occurred_at: now,
        dedup_key: format!(
            "rollout:{}:{}:{}:{}",
            rollout.cluster_id,
            rollout.revision,
            title,
            now.unix_timestamp()
        ),
    };
    deps.notifications.notify(&notification).await;
}

async fn audit(deps: &Deps, rollout: &Rollout, now: OffsetDateTime) {
    let change = spotwise_store::audit::Change {
        action: "rollout.finish",
        target: format!(
            "cluster/{}/recommendation/{}",
            rollout.cluster_id, rollout.revision
        ),
        before: None,
        after: serde_json::to_value(serde_json::json!({
            "status": rollout.status.as_str(),
            "reason": rollout.reason,
            "realised": rollout.realised,
            "aws_calls": rollout.aws_calls,
        }))
        .ok(),
    };
    if let Err(err) =
        spotwise_store::audit::write(&deps.store, &rollout.tenant_id, ACTOR, change, now).await
    {
        warn!(error = %err, "audit event not written");
    }
}
