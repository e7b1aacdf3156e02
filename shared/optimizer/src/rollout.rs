//! A plan made real: the rollout of an approved recommendation. It provisions the planned
//! nodes that the cluster does not already run, waits until they are Ready, cordons and drains
//! the nodes they replace in waves, removes the emptied capacity, and compares the next
//! snapshot with the plan.
//!
//! Everything here is pure: [`next_step`] reads the stored rollout and what was observed (the
//! agent's latest snapshot, the status of the actions the rollout sent) and names the one step
//! to take; the scheduler's driver takes it and stores the record before the next. Names of
//! created node groups and ids of agent actions are written into the record *before* the step
//! that uses them, so a step repeated after a crash finds what the first attempt made.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use spotwise_core::action::ActionStatus;
use spotwise_core::domain::{CapacityType, RolloutBackend};
use spotwise_core::karpenter::{
    Karpenter, NodePoolSpec, NodeReservation, Placeholder, Requirement,
};
use spotwise_core::snapshot::{CurrentNode, Snapshot};
use spotwise_core::{ClusterId, TenantId};
use time::{Duration, OffsetDateTime};

use crate::model::Offering;

/// The label EKS puts on a managed node group's nodes.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// Tag and label of everything Spotwise created (and of customer node groups it may scale).
pub const MANAGED_TAG: &str = "spotwise.io/managed";
/// How the names of the node groups Spotwise creates begin.
pub const GROUP_PREFIX: &str = "spotwise-";

/// Whether the node group is one Spotwise created.
pub fn is_spotwise_group(name: &str) -> bool {
    name.starts_with(GROUP_PREFIX)
}

/// Whether the node group is a spot group Spotwise created.
pub fn is_spotwise_spot_group(name: &str) -> bool {
    name.strip_prefix(GROUP_PREFIX)
        .is_some_and(|rest| rest.starts_with("spot-"))
}

/// Label of the nodes of Spotwise's node groups: the plan's node template they realise.
pub const NODE_TEMPLATE_LABEL: &str = "spotwise.io/node-template";
/// How long new capacity may take to become Ready before spot falls back to on-demand.
pub const CAPACITY_TIMEOUT: Duration = Duration::minutes(10);
/// How long on-demand capacity may take before the rollout fails and is rolled back.
pub const ON_DEMAND_TIMEOUT: Duration = Duration::minutes(20);
/// After a fallback to on-demand, spot is tried again this long after the rollout completed.
pub const SPOT_RETRY_AFTER: Duration = Duration::hours(1);
/// Nodes a rollout may replace: about 350 bytes each as stored, this keeps its record well
/// inside one 400 KB item. A larger cluster keeps the rest, and the next plan goes on.
pub const MAX_REPLACED_NODES: usize = 600;
/// Events kept on the record, newest last.
const MAX_EVENTS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Creating the planned capacity and waiting until it is Ready.
    Provisioning,
    /// Cordoning and draining the replaced nodes, then removing them.
    Migrating,
    Completed,
    /// A step failed; what was created is being removed.
    Failed,
    RolledBack,
    Cancelled,
}

impl RolloutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Provisioning => "provisioning",
            RolloutStatus::Migrating => "migrating",
            RolloutStatus::Completed => "completed",
            RolloutStatus::Failed => "failed",
            RolloutStatus::RolledBack => "rolled_back",
            RolloutStatus::Cancelled => "cancelled",
        }
    }

    /// Nothing more happens, except a completed rollout's later return to spot.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutStatus::Completed | RolloutStatus::RolledBack | RolloutStatus::Cancelled
        )
    }
}

/// How capacity is created and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Spotwise's managed node groups through the customer's role; emptied customer groups
    /// scaled to zero, other replaced instances terminated through Auto Scaling.
    ManagedNodeGroups,
    /// Spotwise's NodePools applied by the agent; Karpenter launches their nodes for the pods
    /// the drains leave Pending, and removes the emptied nodes.
    Karpenter,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::ManagedNodeGroups => "managed-node-groups",
            Backend::Karpenter => "karpenter",
        }
    }
}

/// Nodes of one type, zone and capacity type in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedNodes {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub nodes: u32,
}

/// A managed node group Spotwise creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewGroup {
    pub name: String,
    pub capacity_type: CapacityType,
    pub zone: String,
    /// The planned type first, then similar shapes EKS may launch when it has no capacity.
    pub instance_types: Vec<String>,
    pub desired: u32,
    /// EKS accepted the group (or already had it).
    pub created: bool,
    /// Nodes of this spot group that on-demand stands in for.
    #[serde(default)]
    pub shortfall: u32,
    /// The spot group an on-demand group stands in for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_for: Option<String>,
    /// Deleted again (rollback, cancel, or spot back after a fallback).
    #[serde(default)]
    pub deleted: bool,
    /// On Karpenter: the NodePool the agent applies for this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<NodePoolSpec>,
    /// On Karpenter: the placeholder pods that have Karpenter launch the planned nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<NodeReservation>,
}

impl NewGroup {
    /// The id of the agent action that applies the group's NodePool: fixed by the name, so a
    /// repeated step finds the action the first attempt sent.
    pub fn apply_action(&self) -> String {
        format!("{}-apply", self.name)
    }

    pub fn delete_action(&self) -> String {
        format!("{}-delete", self.name)
    }

    /// On Karpenter: the nodes its placeholders have Karpenter launch before the drains (a
    /// planned node that no moving pod needs is not launched).
    pub fn reserved_nodes(&self) -> u32 {
        self.reservation.as_ref().map_or(0, |r| r.nodes)
    }

    pub fn reserve_action(&self) -> String {
        format!("{}-reserve", self.name)
    }

    pub fn release_action(&self) -> String {
        format!("{}-release", self.name)
    }
}

/// A node the plan does without: cordoned, drained, then removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedNode {
    pub name: String,
    pub instance_id: Option<String>,
    /// Its managed node group, or on Karpenter its NodePool.
    pub nodegroup: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    /// Ids chosen before the actions are sent, so a repeated step finds them.
    pub cordon_action: Option<String>,
    pub drain_action: Option<String>,
    pub drained: bool,
    /// Its instance is terminated, or its node group scaled to zero.
    pub released: bool,
    /// Made schedulable again by a cancel or rollback.
    #[serde(default)]
    pub restored: bool,
}

impl ReplacedNode {
    /// `node` of `group`, nothing done to it yet.
    pub fn of(node: &CurrentNode, group: &str) -> Self {
        ReplacedNode {
            name: node.name.clone(),
            instance_id: node.instance_id.clone(),
            nodegroup: group.to_owned(),
            instance_type: node.instance_type.clone(),
            zone: node.zone.clone(),
            capacity_type: node.capacity_type,
            cordon_action: None,
            drain_action: None,
            drained: false,
            released: false,
            restored: false,
        }
    }
}

/// A cluster's nodes in figures: before, planned or realised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub cost_hr: f64,
    pub nodes: u32,
    pub spot_nodes: u32,
    /// Workload pods not Running on a node (Pending).
    pub pods_pending: u32,
    pub mix: Vec<PlannedNodes>,
}

impl Figures {
    pub fn spot_share(&self) -> f64 {
        if self.nodes == 0 {
            0.0
        } else {
            f64::from(self.spot_nodes) / f64::from(self.nodes)
        }
    }

    pub fn of_plan(mix: &[PlannedNodes], cost_hr: f64) -> Self {
        Figures {
            cost_hr,
            nodes: mix.iter().map(|m| m.nodes).sum(),
            spot_nodes: mix
                .iter()
                .filter(|m| m.capacity_type == CapacityType::Spot)
                .map(|m| m.nodes)
                .sum(),
            pods_pending: 0,
            mix: mix.to_vec(),
        }
    }

    /// The snapshot's nodes, each priced by `price` (an unpriced node counts zero).
    pub fn of_snapshot(snapshot: &Snapshot, price: impl Fn(&CurrentNode) -> Option<f64>) -> Self {
        let mut mix: BTreeMap<(String, String, CapacityType), u32> = BTreeMap::new();
        let mut cost_hr = 0.0;
        for node in &snapshot.nodes {
            *mix.entry((
                node.instance_type.clone(),
                node.zone.clone(),
                node.capacity_type,
            ))
            .or_default() += 1;
            cost_hr += node.price_hr.or_else(|| price(node)).unwrap_or(0.0);
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Figures {
            cost_hr,
            nodes: count(snapshot.nodes.len()),
            spot_nodes: count(
                snapshot
                    .nodes
                    .iter()
                    .filter(|n| n.capacity_type == CapacityType::Spot)
                    .count(),
            ),
            pods_pending: count(
                snapshot
                    .pods
                    .iter()
                    .filter(|p| p.spec.node.is_none())
                    .count(),
            ),
            mix: mix
                .into_iter()
                .map(
                    |((instance_type, zone, capacity_type), nodes)| PlannedNodes {
                        instance_type,
                        zone,
                        capacity_type,
                        nodes,
                    },
                )
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub status: RolloutStatus,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    /// The recommendation it realises.
    pub revision: u64,
    pub backend: Backend,
    pub status: RolloutStatus,
    /// Why it is in its status, in a sentence.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    pub before: Figures,
    pub planned: Figures,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realised: Option<Figures>,
    pub groups: Vec<NewGroup>,
    /// Nodes the plan keeps as they are.
    pub kept: Vec<String>,
    pub replaced: Vec<ReplacedNode>,
    /// Customer node groups every node of which is replaced: scaled to zero, not pruned.
    pub emptied_groups: Vec<String>,
    /// Drains at once (the policy's disruption budget).
    pub wave_size: u32,
    /// When provisioning started (again): the capacity deadlines count from here.
    #[serde(with = "time::serde::rfc3339")]
    pub provisioning_since: OffsetDateTime,
    /// When the emptied capacity was released: the snapshot that verifies is newer.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub released_at: Option<OffsetDateTime>,
    /// Who asked to cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_by: Option<String>,
    /// Set when a step failed: the rollout is undoing what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// After a fallback to on-demand: when spot is tried again.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub spot_retry_at: Option<OffsetDateTime>,
    /// A completed rollout trying spot again: if spot is still short, it stays completed.
    #[serde(default)]
    pub retrying_spot: bool,
    /// On Karpenter: times spot was tried again and was still short (each doubles the wait).
    #[serde(default)]
    pub spot_retries: u32,
    /// Calls made to the customer's AWS APIs.
    pub aws_calls: u32,
    pub events: Vec<RolloutEvent>,
}

/// What the driver read before choosing the step.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    /// The agent's latest snapshot and when it was taken.
    pub snapshot: Option<(&'a Snapshot, OffsetDateTime)>,
    /// The status of each action the rollout sent that is recorded (absent: not sent yet).
    pub actions: BTreeMap<String, ActionStatus>,
    /// Why each failed action failed, as the agent reported it.
    pub failures: BTreeMap<String, String>,
    /// On Karpenter: nodes each customer NodePool's disruption budgets allow disrupted now
    /// (a pool not listed has no budget that limits it).
    pub disruptions_allowed: BTreeMap<String, u32>,
}

/// The one thing to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do until something changes.
    Wait(String),
    CreateGroup(usize),
    /// On-demand for the spot group's shortfall; the spot group comes down to what it has.
    FallBack {
        group: usize,
        shortfall: u32,
    },
    /// The new capacity is Ready: migration starts.
    StartMigration,
    /// Choose the ids of the cordons and drains (stored before any is sent).
    AssignActions,
    Cordon(usize),
    Drain(usize),
    /// A drain succeeded (or its instance was already gone).
    Drained(usize),
    /// Scale an emptied customer node group to zero.
    EmptyGroup(String),
    /// Terminate one drained node's instance, decrementing its group.
    Terminate(usize),
    /// On Karpenter: the agent applied the group's NodePool.
    GroupCreated(usize),
    /// On Karpenter: the agent deleted the group's NodePool (or it was gone).
    GroupDeleted(usize),
    /// On Karpenter: have the agent hold the group's planned nodes with placeholder pods.
    Reserve(usize),
    /// On Karpenter: have the agent delete the group's placeholders that are left.
    Release(usize),
    /// Compare the snapshot taken after the release with the plan.
    Verify,
    /// Trying spot again found it still short: back to the fallback, a later retry.
    SpotStillShort,
    /// A step cannot succeed: undo.
    Fail(String),
    /// Undoing (after a failure or a cancel): make a replaced node schedulable again.
    Restore(usize),
    DeleteGroup(usize),
    /// Everything undone or stopped: the final status.
    Finish(RolloutStatus, String),
}

/// Names a Spotwise node group: its origin plain, its content hashed (the same rollout asks for
/// the same name, so a repeated create finds the group it made).
pub fn group_name(
    cluster: &ClusterId,
    revision: u64,
    capacity: CapacityType,
    zone: &str,
    instance_type: &str,
    fallback: bool,
) -> String {
    let kind = match (capacity, fallback) {
        (CapacityType::Spot, _) => "spot",
        (CapacityType::OnDemand, false) => "od",
        (CapacityType::OnDemand, true) => "fallback",
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{cluster}|{revision}|{kind}|{zone}|{instance_type}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{GROUP_PREFIX}{kind}-{:010x}", hash & 0xff_ffff_ffff)
}

/// Types of the same shape as `instance_type` (the same cpu, memory within 15%, the same
/// architecture) offered as spot, cheapest first: the other types a spot group may launch.
pub fn similar_types(offerings: &[Offering], instance_type: &str) -> Vec<String> {
    let Some(base) = offerings.iter().find(|o| o.instance_type == instance_type) else {
        return Vec::new();
    };
    let mut similar: Vec<&Offering> = offerings
        .iter()
        .filter(|o| {
            o.capacity_type == CapacityType::Spot
                && o.instance_type != instance_type
                && o.cpu_m == base.cpu_m
                && o.gpus == base.gpus
                && o.arch == base.arch
                && o.mem_mib.abs_diff(base.mem_mib) * 100 <= base.mem_mib * 15
        })
        .collect();
    similar.sort_by(|a, b| {
        a.price_hr
            .total_cmp(&b.price_hr)
            .then_with(|| a.instance_type.cmp(&b.instance_type))
    });
    let mut names: Vec<String> = Vec::new();
    for o in similar {
        if !names.contains(&o.instance_type) {
            names.push(o.instance_type.clone());
        }
    }
    names
}

/// What a rollout starts from: the approved plan and the cluster as its snapshot shows it.
pub struct Approval<'a> {
    pub tenant: &'a TenantId,
    pub cluster: &'a ClusterId,
    pub revision: u64,
    pub mix: &'a [PlannedNodes],
    pub planned_cost_hr: f64,
    pub before: Figures,
    pub snapshot: &'a Snapshot,
    /// Drains at once (the policy's disruption budget).
    pub wave_size: u32,
    pub now: OffsetDateTime,
}

impl Approval<'_> {
    /// Nodes no rollout may drain: annotated `karpenter.sh/do-not-disrupt`, or running a pod
    /// that asks not to be evicted (`karpenter.sh/do-not-disrupt`,
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`).
    pub fn undisruptable(&self) -> BTreeSet<&str> {
        let mut nodes: BTreeSet<&str> = self
            .snapshot
            .nodes
            .iter()
            .filter(|n| n.do_not_disrupt)
            .map(|n| n.name.as_str())
            .collect();
        nodes.extend(
            self.snapshot
                .pods
                .iter()
                .filter(|p| p.spec.pinned_by.is_some())
                .filter_map(|p| p.spec.node.as_deref()),
        );
        nodes
    }

    fn wanted(&self) -> BTreeMap<(String, String, CapacityType), u32> {
        let mut wanted = BTreeMap::new();
        for m in self.mix {
            *wanted
                .entry((m.instance_type.clone(), m.zone.clone(), m.capacity_type))
                .or_default() += m.nodes;
        }
        wanted
    }

    /// The nodes kept and the nodes replaced, taking from `wanted` each node kept. Nodes that
    /// `owner` names no group or NodePool for stay (Spotwise cannot remove them), and so do
    /// nodes that may not be disrupted; Spotwise's own nodes are kept first.
    fn split(
        &self,
        wanted: &mut BTreeMap<(String, String, CapacityType), u32>,
        owner: impl Fn(&CurrentNode) -> Option<&str>,
    ) -> (Vec<String>, Vec<ReplacedNode>) {
        let undisruptable = self.undisruptable();
        let mut kept = Vec::new();
        let mut replaced = Vec::new();
        let mut ordered: Vec<&CurrentNode> = self.snapshot.nodes.iter().collect();
        ordered.sort_by_key(|n| (!owner(n).is_some_and(is_spotwise_group), n.name.clone()));
        for node in ordered {
            let key = (
                node.instance_type.clone(),
                node.zone.clone(),
                node.capacity_type,
            );
            match (wanted.get_mut(&key), owner(node)) {
                (Some(left), _) if *left > 0 && !node.unschedulable && !node.not_ready => {
                    *left -= 1;
                    kept.push(node.name.clone());
                }
                (_, Some(group))
                    if replaced.len() < MAX_REPLACED_NODES
                        && !undisruptable.contains(node.name.as_str()) =>
                {
                    replaced.push(ReplacedNode::of(node, group))
                }
                _ => kept.push(node.name.clone()),
            }
        }
        (kept, replaced)
    }

    fn rollout(
        &self,
        backend: Backend,
        groups: Vec<NewGroup>,
        kept: Vec<String>,
        replaced: Vec<ReplacedNode>,
        emptied_groups: Vec<String>,
    ) -> Rollout {
        let now = self.now;
        let mut rollout = Rollout {
            tenant_id: self.tenant.clone(),
            cluster_id: self.cluster.clone(),
            revision: self.revision,
            backend,
            status: RolloutStatus::Provisioning,
            reason: String::new(),
            started_at: now,
            updated_at: now,
            completed_at: None,
            before: self.before.clone(),
            planned: Figures::of_plan(self.mix, self.planned_cost_hr),
            realised: None,
            groups,
            kept,
            replaced,
            emptied_groups,
            wave_size: self.wave_size.max(1),
            provisioning_since: now,
            released_at: None,
            cancel_requested_by: None,
            failure: None,
            spot_retry_at: None,
            retrying_spot: false,
            spot_retries: 0,
            aws_calls: 0,
            events: Vec::new(),
        };
        let new_nodes: u32 = rollout.groups.iter().map(|g| g.desired).sum();
        let what = match backend {
            Backend::ManagedNodeGroups => "group(s)",
            Backend::Karpenter => "NodePool(s)",
        };
        rollout.record(
            RolloutStatus::Provisioning,
            format!(
                "approved: {new_nodes} new node(s) in {} {what}, {} node(s) kept, {} to replace",
                rollout.groups.len(),
                rollout.kept.len(),
                rollout.replaced.len()
            ),
            now,
        );
        rollout
    }

    fn new_group(
        &self,
        (instance_type, zone, capacity_type): (String, String, CapacityType),
        desired: u32,
        instance_types: Vec<String>,
    ) -> NewGroup {
        NewGroup {
            name: group_name(
                self.cluster,
                self.revision,
                capacity_type,
                &zone,
                &instance_type,
                false,
            ),
            capacity_type,
            zone,
            instance_types,
            desired,
            created: false,
            shortfall: 0,
            fallback_for: None,
            deleted: false,
            node_pool: None,
            reservation: None,
        }
    }
}

/// The rollout on managed node groups: nodes already of a planned type, zone and capacity type
/// are kept; the rest of the plan is new node groups (one per capacity type, zone and type,
/// with `similar` types for spot); nodes of node groups that the plan does without are
/// replaced. Nodes outside managed node groups stay (Spotwise cannot remove them).
pub fn prepare(approval: &Approval<'_>, similar: &dyn Fn(&str) -> Vec<String>) -> Rollout {
    let mut wanted = approval.wanted();
    let (kept, replaced) = approval.split(&mut wanted, |n| {
        n.labels.get(NODEGROUP_LABEL).map(String::as_str)
    });
    let groups = wanted
        .into_iter()
        .filter(|(_, left)| *left > 0)
        .map(|(key, desired)| {
            let mut instance_types = vec![key.0.clone()];
            if key.2 == CapacityType::Spot {
                instance_types.extend(similar(&key.0).into_iter().filter(|t| *t != key.0).take(4));
            }
            approval.new_group(key, desired, instance_types)
        })
        .collect();
    let replaced_groups: BTreeSet<&str> = replaced.iter().map(|r| r.nodegroup.as_str()).collect();
    let emptied_groups = replaced_groups
        .into_iter()
        .filter(|group| {
            approval.snapshot.nodes.iter().all(|n| {
                n.labels.get(NODEGROUP_LABEL).map(String::as_str) != Some(group)
                    || replaced.iter().any(|r| r.name == n.name)
            })
        })
        .map(str::to_owned)
        .collect();
    approval.rollout(
        Backend::ManagedNodeGroups,
        groups,
        kept,
        replaced,
        emptied_groups,
    )
}

/// The backend a rollout on the cluster `snapshot` shows uses, as the policy chooses it: `auto`
/// steers Karpenter when the cluster runs a NodePool of its own, and uses managed node
/// groups otherwise.
pub fn choose_backend(choice: RolloutBackend, snapshot: &Snapshot) -> Result<Backend, String> {
    let customer_pools = snapshot
        .karpenter
        .as_ref()
        .map(|k| k.customer_pools().count());
    match (choice, customer_pools) {
        (RolloutBackend::ManagedNodeGroups, _) => Ok(Backend::ManagedNodeGroups),
        (RolloutBackend::Karpenter, Some(_)) => Ok(Backend::Karpenter),
        (RolloutBackend::Karpenter, None) => Err(
            "Karpenter not installed: the agent's latest snapshot shows no karpenter.sh/v1 NodePool API in the cluster".into(),
        ),
        (RolloutBackend::Auto, Some(pools)) if pools > 0 => Ok(Backend::Karpenter),
        (RolloutBackend::Auto, _) => Ok(Backend::ManagedNodeGroups),
    }
}

/// Nodes a Spotwise NodePool may launch beyond the plan's: a pod that fits none of the
/// planned nodes once the drains move pods in their own order should get one more node of a
/// planned type rather than fall to the customer's (on-demand) NodePools.
pub const POOL_HEADROOM_NODES: u64 = 1;

/// What a node of an instance type counts against NodePool limits (its capacity) and what its
/// pods may request (allocatable), each as (cpu millicores, memory MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSize {
    pub capacity: (u64, u64),
    pub allocatable: (u64, u64),
}

/// Share, in percent, of a moving pod's requests that its placeholder requests: a margin for
/// nodes whose allocatable comes out a little under the estimate, so that they still hold
/// the placeholders planned for them.
const PLACEHOLDER_PERCENT: u64 = 95;

/// The placeholders of each planned NodePool (by index in `planned`) and the nodes they fill:
/// the pods on the replaced nodes, largest first, each on the first planned node with room
/// for it that its nodeSelector and tolerations admit (as far as the labels Spotwise's pools
/// give their nodes tell), spot nodes first. Pods that fit none get no placeholder; Karpenter
/// launches for them as they come.
fn placeholders(
    approval: &Approval<'_>,
    replaced: &[ReplacedNode],
    planned: &[((String, String, CapacityType), u32)],
    template: &NodePoolSpec,
    size: &dyn Fn(&str) -> Option<NodeSize>,
) -> Vec<(u32, Vec<Placeholder>)> {
    let daemons = &approval.snapshot.daemonset_overhead;
    let labels: Vec<BTreeMap<&str, &str>> = planned
        .iter()
        .map(|((instance_type, zone, capacity_type), _)| {
            let mut labels: BTreeMap<&str, &str> = template
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.insert("node.kubernetes.io/instance-type", instance_type);
            labels.insert("topology.kubernetes.io/zone", zone);
            labels.insert(
                "karpenter.sh/capacity-type",
                match capacity_type {
                    CapacityType::Spot => "spot",
                    CapacityType::OnDemand => "on-demand",
                },
            );
            labels
        })
        .collect();
    // Keys the nodes will carry with values not known here (arch, os, ...) admit any value.
    let admits = |pool: usize, pod: &spotwise_core::snapshot::PodSpec| {
        let selected = pod
            .node_selector
            .iter()
            .all(|(k, v)| labels[pool].get(k.as_str()).is_none_or(|l| l == v));
        let tolerated = template
            .taints
            .iter()
            .filter(|t| t.effect != "PreferNoSchedule")
            .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)));
        selected && tolerated
    };
    // (pool index, free cpu, free memory, used)
    let mut nodes: Vec<(usize, u64, u64, bool)> = Vec::new();
    for (i, ((instance_type, ..), desired)) in planned.iter().enumerate() {
        if let Some(NodeSize {
            allocatable: (cpu_m, mem_mib),
            ..
        }) = size(instance_type)
        {
            let room = (
                cpu_m.saturating_sub(daemons.cpu_m),
                mem_mib.saturating_sub(daemons.mem_mib),
            );
            nodes.extend((0..*desired).map(|_| (i, room.0, room.1, false)));
        }
    }
    let moving: BTreeSet<&str> = replaced.iter().map(|r| r.name.as_str()).collect();
    let mut pods: Vec<&spotwise_core::snapshot::PodSpec> = approval
        .snapshot
        .pods
        .iter()
        .map(|p| &p.spec)
        .filter(|p| p.node.as_deref().is_some_and(|n| moving.contains(n)))
        .collect();
    pods.sort_by(|a, b| {
        (b.cpu_m, b.mem_mib)
            .cmp(&(a.cpu_m, a.mem_mib))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut sizes: Vec<BTreeMap<(u64, u64), u32>> = vec![BTreeMap::new(); planned.len()];
    for pod in pods {
        if let Some(node) = nodes.iter_mut().find(|(pool, cpu_m, mem_mib, _)| {
            *cpu_m >= pod.cpu_m && *mem_mib >= pod.mem_mib && admits(*pool, pod)
        }) {
            node.1 -= pod.cpu_m;
            node.2 -= pod.mem_mib;
            node.3 = true;
            *sizes[node.0]
                .entry((
                    pod.cpu_m * PLACEHOLDER_PERCENT / 100,
                    pod.mem_mib * PLACEHOLDER_PERCENT / 100,
                ))
                .or_default() += 1;
        }
    }
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, sizes)| {
            let used = nodes.iter().filter(|n| n.0 == i && n.3).count();
            (
                u32::try_from(used).unwrap_or(u32::MAX),
                sizes
                    .into_iter()
                    .rev()
                    .map(|((cpu_m, mem_mib), count)| Placeholder {
                        cpu_m,
                        mem_mib,
                        count,
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Requirement keys a Spotwise NodePool sets itself rather than copying from the customer's:
/// its type, zone and capacity type, and Karpenter's instance-shape labels, which a copied
/// requirement could make unsatisfiable with the planned type.
fn set_by_spotwise(key: &str) -> bool {
    matches!(
        key,
        "node.kubernetes.io/instance-type"
            | "topology.kubernetes.io/zone"
            | "karpenter.sh/capacity-type"
    ) || key.starts_with("karpenter.k8s.aws/")
}

/// The rollout on Karpenter: nodes of a planned type, zone and capacity type are kept, nodes
/// of NodePools the plan does without are replaced, and the rest of the plan becomes one
/// Spotwise NodePool per capacity type, zone and type, limited to the planned nodes plus
/// [`POOL_HEADROOM_NODES`], so Karpenter launches the planned mix and little more.
/// Spot pools weigh more than on-demand ones, which weigh more than the customer's, so the
/// drained pods go to spot first; pods that need on-demand capacity go to the on-demand
/// pools, and what Spotwise's pools cannot hold falls to the customer's own. Each copies
/// labels, taints, node class, disruption settings and non-shape requirements from the
/// customer's NodePool that owns most replaced nodes (or weighs most).
pub fn prepare_karpenter(
    approval: &Approval<'_>,
    karpenter: &Karpenter,
    size: &dyn Fn(&str) -> Option<NodeSize>,
) -> Result<Rollout, String> {
    let mut wanted = approval.wanted();
    let (kept, mut replaced) = approval.split(&mut wanted, CurrentNode::node_pool);
    // Nodes running pods that select on-demand capacity are drained first, while the spot
    // nodes still to come have room for the pods beside them: the on-demand nodes Karpenter
    // launches for those pods are then left to them rather than filled by pods spot would take.
    let on_demand_hosts: BTreeSet<&str> = approval
        .snapshot
        .pods
        .iter()
        .filter(|p| {
            p.spec
                .node_selector
                .get("karpenter.sh/capacity-type")
                .is_some_and(|c| c == "on-demand")
        })
        .filter_map(|p| p.spec.node.as_deref())
        .collect();
    replaced.sort_by_key(|r| !on_demand_hosts.contains(r.name.as_str()));
    let mut owners: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &replaced {
        *owners.entry(r.nodegroup.as_str()).or_default() += 1;
    }
    let template = karpenter
        .customer_pools()
        .max_by_key(|p| {
            (
                owners.get(p.spec.name.as_str()).copied().unwrap_or(0),
                p.spec.weight.unwrap_or(0),
                std::cmp::Reverse(p.spec.name.clone()),
            )
        })
        .map(|p| &p.spec)
        .ok_or("Karpenter runs no NodePool of the cluster's own to take the node class from")?;
    let customer_weight = karpenter
        .customer_pools()
        .map(|p| p.spec.weight.unwrap_or(0))
        .max()
        .unwrap_or(0);
    let mut planned: Vec<((String, String, CapacityType), u32)> =
        wanted.into_iter().filter(|(_, left)| *left > 0).collect();
    // Spot before on-demand, larger types first: Karpenter tries them in weight order, so the
    // first Pending pods open the largest planned nodes, whose room takes the pods after them.
    planned.sort_by_key(|((instance_type, zone, capacity_type), _)| {
        let (cpu_m, mem_mib) = size(instance_type).map(|s| s.capacity).unwrap_or_default();
        (
            *capacity_type != CapacityType::Spot,
            std::cmp::Reverse((cpu_m, mem_mib)),
            instance_type.clone(),
            zone.clone(),
        )
    });
    let count = u32::try_from(planned.len()).unwrap_or(u32::MAX);
    let top = customer_weight.saturating_add(count).min(100);
    let mut reservations = placeholders(approval, &replaced, &planned, template, size).into_iter();
    let mut groups = Vec::new();
    for (rank, (key, desired)) in planned.into_iter().enumerate() {
        let (instance_type, zone, capacity_type) = key.clone();
        let mut requirements: Vec<Requirement> = template
            .requirements
            .iter()
            .filter(|r| !set_by_spotwise(&r.key))
            .cloned()
            .collect();
        let capacity_label = match capacity_type {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        };
        requirements.push(Requirement::is_in(
            "karpenter.sh/capacity-type",
            [capacity_label.to_owned()],
        ));
        requirements.push(Requirement::is_in(
            "node.kubernetes.io/instance-type",
            [instance_type.clone()],
        ));
        requirements.push(Requirement::is_in(
            "topology.kubernetes.io/zone",
            [zone.clone()],
        ));
        let mut limits = BTreeMap::new();
        if let Some(NodeSize {
            capacity: (cpu_m, mem_mib),
            ..
        }) = size(&instance_type)
        {
            let nodes = u64::from(desired) + POOL_HEADROOM_NODES;
            limits.insert("cpu".to_owned(), format!("{}m", nodes * cpu_m));
            limits.insert("memory".to_owned(), format!("{}Mi", nodes * mem_mib));
        }
        let mut labels = template.labels.clone();
        labels.insert(MANAGED_TAG.to_owned(), "true".to_owned());
        labels.insert(
            NODE_TEMPLATE_LABEL.to_owned(),
            format!("rollout-{}", approval.revision),
        );
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        let mut group = approval.new_group(key, desired, vec![instance_type]);
        let (held, placeholders) = reservations.next().unwrap_or_default();
        group.reservation = (held > 0).then(|| NodeReservation {
            node_pool: group.name.clone(),
            capacity_type,
            nodes: held,
            placeholders,
        });
        group.node_pool = Some(NodePoolSpec {
            name: group.name.clone(),
            weight: Some(
                top.saturating_sub(rank)
                    .max(customer_weight.saturating_add(1).min(100)),
            ),
            requirements,
            limits,
            labels,
            taints: template.taints.clone(),
            node_class: template.node_class.clone(),
            disruption: template.disruption.clone(),
        });
        groups.push(group);
    }
    Ok(approval.rollout(Backend::Karpenter, groups, kept, replaced, Vec::new()))
}

impl Rollout {
    /// Moves to `status` for `reason`, kept as an event.
    pub fn record(&mut self, status: RolloutStatus, reason: String, now: OffsetDateTime) {
        self.status = status;
        self.events.push(RolloutEvent {
            at: now,
            status,
            message: reason.clone(),
        });
        if self.events.len() > MAX_EVENTS {
            self.events.remove(0);
        }
        self.reason = reason;
        self.updated_at = now;
    }

    /// Ready, schedulable nodes of each live Spotwise node group or NodePool in the snapshot.
    pub fn ready_nodes(&self, snapshot: &Snapshot) -> BTreeMap<String, u32> {
        let mut ready: BTreeMap<String, u32> = self
            .groups
            .iter()
            .filter(|g| !g.deleted)
            .map(|g| (g.name.clone(), 0))
            .collect();
        for node in &snapshot.nodes {
            let group = match self.backend {
                Backend::ManagedNodeGroups => node.labels.get(NODEGROUP_LABEL).map(String::as_str),
                Backend::Karpenter => node.node_pool(),
            };
            if let Some(count) = group.and_then(|g| ready.get_mut(g))
                && !node.not_ready
                && !node.unschedulable
            {
                *count += 1;
            }
        }
        ready
    }

    /// On Karpenter: the nodes the live groups that `counted` admits reserve, and how many of
    /// those are Ready in `snapshot`.
    pub fn reserved_nodes_ready(
        &self,
        snapshot: &Snapshot,
        counted: impl Fn(&NewGroup) -> bool,
    ) -> (u32, u32) {
        let ready = self.ready_nodes(snapshot);
        self.groups
            .iter()
            .filter(|g| !g.deleted && counted(g))
            .fold((0, 0), |(reserved, launched), g| {
                let wanted = g.reserved_nodes();
                let up = ready.get(&g.name).copied().unwrap_or(0).min(wanted);
                (reserved + wanted, launched + up)
            })
    }

    /// The id of the agent action `step` sends, known before it is sent (so a repeated step
    /// finds it, and the driver knows it queued): a replaced node's assigned cordon or drain
    /// id, and on Karpenter the NodePool and reservation actions, named by their group.
    pub fn action_of(&self, step: &Step) -> Option<String> {
        let group = |i: &usize| self.groups.get(*i);
        let karpenter = self.backend == Backend::Karpenter;
        match step {
            Step::Cordon(i) => self.replaced.get(*i)?.cordon_action.clone(),
            Step::Drain(i) => self.replaced.get(*i)?.drain_action.clone(),
            Step::CreateGroup(i) if karpenter => group(i).map(NewGroup::apply_action),
            Step::DeleteGroup(i) if karpenter => group(i).map(NewGroup::delete_action),
            Step::Reserve(i) => group(i).map(NewGroup::reserve_action),
            Step::Release(i) => group(i).map(NewGroup::release_action),
            _ => None,
        }
    }

    /// On Karpenter: nodes launched during the rollout from the customer's NodePools, which
    /// Karpenter falls back to when Spotwise's spot pools have no capacity (or are full).
    pub fn karpenter_fallbacks<'s>(&self, snapshot: &'s Snapshot) -> Vec<&'s CurrentNode> {
        snapshot
            .nodes
            .iter()
            .filter(|n| n.node_pool().is_some_and(|pool| !is_spotwise_group(pool)))
            .filter(|n| {
                !self.kept.contains(&n.name) && !self.replaced.iter().any(|r| r.name == n.name)
            })
            .collect()
    }

    /// On Karpenter, how long after a verification that found fallback nodes spot is tried
    /// again: [`SPOT_RETRY_AFTER`], doubled after each retry that found spot still short, at
    /// most a day (each try moves the fallback nodes' pods once).
    pub fn karpenter_retry_delay(&self) -> Duration {
        let doublings = self.spot_retries.min(5);
        (SPOT_RETRY_AFTER * 2_i32.pow(doublings)).min(Duration::days(1))
    }

    /// On Karpenter: reopens a completed rollout whose pods fell back to the customer's
    /// NodePools; those nodes are cordoned and drained, and Karpenter places their pods in
    /// Spotwise's spot pools again if spot is back (or falls back once more).
    pub fn retry_spot_karpenter(&mut self, snapshot: &Snapshot, now: OffsetDateTime) -> bool {
        let fallbacks: Vec<ReplacedNode> = self
            .karpenter_fallbacks(snapshot)
            .into_iter()
            .filter(|n| !n.do_not_disrupt)
            .filter_map(|n| Some(ReplacedNode::of(n, n.node_pool()?)))
            .collect();
        self.spot_retry_at = None;
        if fallbacks.is_empty() {
            self.spot_retries = 0;
            return false;
        }
        let count = fallbacks.len();
        self.replaced.extend(fallbacks);
        self.released_at = None;
        self.retrying_spot = true;
        self.spot_retries += 1;
        self.record(
            RolloutStatus::Migrating,
            format!(
                "trying spot again: {count} node(s) launched from the customer's NodePools are drained for Karpenter to place their pods in Spotwise's spot pools"
            ),
            now,
        );
        true
    }

    /// Reopens a completed rollout whose spot capacity fell back to on-demand: the spot groups
    /// ask for their shortfall again, and the fallback groups' nodes become nodes to replace.
    pub fn retry_spot(&mut self, snapshot: &Snapshot, now: OffsetDateTime) -> bool {
        let fallbacks: Vec<usize> = (0..self.groups.len())
            .filter(|&i| self.groups[i].fallback_for.is_some() && !self.groups[i].deleted)
            .collect();
        if fallbacks.is_empty() {
            self.spot_retry_at = None;
            return false;
        }
        for &i in &fallbacks {
            let name = self.groups[i].name.clone();
            for node in snapshot
                .nodes
                .iter()
                .filter(|n| n.labels.get(NODEGROUP_LABEL) == Some(&name))
            {
                if self.replaced.iter().any(|r| r.name == node.name) {
                    continue;
                }
                self.replaced.push(ReplacedNode::of(node, &name));
            }
            if !self.emptied_groups.contains(&name) {
                self.emptied_groups.push(name);
            }
        }
        for group in &mut self.groups {
            if group.capacity_type == CapacityType::Spot && group.shortfall > 0 {
                group.desired += group.shortfall;
                group.shortfall = 0;
                // Sized again through the same create-or-resize step.
                group.created = false;
            }
        }
        self.provisioning_since = now;
        self.released_at = None;
        self.spot_retry_at = None;
        self.retrying_spot = true;
        self.record(
            RolloutStatus::Provisioning,
            "trying spot again after the fallback to on-demand".into(),
            now,
        );
        true
    }
}

/// The step the rollout takes next, from what was observed at `now`.
pub fn next_step(rollout: &Rollout, observed: &Observed<'_>, now: OffsetDateTime) -> Step {
    if rollout.status.is_final() {
        return Step::Wait(rollout.reason.clone());
    }
    let in_flight = |id: &Option<String>| {
        id.as_ref()
            .and_then(|id| observed.actions.get(id))
            .is_some_and(|s| *s == ActionStatus::Queued)
    };
    let draining = rollout
        .replaced
        .iter()
        .any(|r| !r.drained && in_flight(&r.drain_action));
    let undoing = rollout.failure.is_some() || (rollout.cancel_requested_by.is_some() && !draining);
    match (rollout.backend, undoing, rollout.status) {
        (Backend::ManagedNodeGroups, true, _) => undo_step(rollout),
        (Backend::Karpenter, true, _) => karpenter_undo_step(rollout, observed),
        (Backend::ManagedNodeGroups, false, RolloutStatus::Provisioning) => {
            provisioning_step(rollout, observed, now)
        }
        (Backend::Karpenter, false, RolloutStatus::Provisioning) => {
            karpenter_provisioning_step(rollout, observed, now)
        }
        (_, false, _) => migration_step(rollout, observed, now),
    }
}

/// How long the agent may take to apply the NodePools before the rollout gives up.
pub const APPLY_TIMEOUT: Duration = Duration::minutes(30);
/// How long Karpenter may keep drained nodes before the rollout verifies without waiting.
pub const KARPENTER_RELEASE_TIMEOUT: Duration = Duration::minutes(30);

/// The failure the agent reported for an action, in a sentence.
fn failure_of(observed: &Observed<'_>, id: &str, status: ActionStatus) -> String {
    match observed.failures.get(id) {
        Some(reason) => format!("{}: {reason}", status.as_str()),
        None => status.as_str().to_owned(),
    }
}

/// On Karpenter, provisioning is applying the NodePools and then reserving their planned nodes
/// (Karpenter launches nodes only for Pending pods, so placeholder pods stand in for the pods to
/// come). Migration starts once the planned nodes are Ready, or after [`CAPACITY_TIMEOUT`]
/// with what Karpenter launched: it places what does not fit in the customer's NodePools.
fn karpenter_provisioning_step(
    rollout: &Rollout,
    observed: &Observed<'_>,
    now: OffsetDateTime,
) -> Step {
    let mut applying = 0;
    for (i, group) in rollout.groups.iter().enumerate() {
        if group.deleted || group.created {
            continue;
        }
        let id = group.apply_action();
        match observed.actions.get(&id) {
            None => return Step::CreateGroup(i),
            Some(ActionStatus::Queued) => applying += 1,
            Some(ActionStatus::Succeeded) => return Step::GroupCreated(i),
            Some(other) => {
                return Step::Fail(format!(
                    "NodePool {} not applied ({})",
                    group.name,
                    failure_of(observed, &id, *other)
                ));
            }
        }
    }
    let waited = now - rollout.provisioning_since;
    if applying > 0 {
        if waited >= APPLY_TIMEOUT {
            return Step::Fail(format!(
                "the agent did not apply {applying} NodePool(s) within {} min",
                APPLY_TIMEOUT.whole_minutes()
            ));
        }
        return Step::Wait(format!(
            "waiting for the agent to apply {applying} NodePool(s)"
        ));
    }
    let mut reserving = 0;
    for (i, group) in rollout.groups.iter().enumerate() {
        if group.deleted || group.reservation.is_none() {
            continue;
        }
        match observed.actions.get(&group.reserve_action()) {
            None => return Step::Reserve(i),
            Some(ActionStatus::Queued) => reserving += 1,
            Some(_) => {}
        }
    }
    let Some((snapshot, taken_at)) = observed.snapshot else {
        return Step::Wait("waiting for the agent's snapshot".into());
    };
    // A reservation the agent did not make leaves the pool to Karpenter's packing.
    let (reserved, launched) = rollout.reserved_nodes_ready(snapshot, |g| {
        matches!(
            observed.actions.get(&g.reserve_action()),
            Some(ActionStatus::Queued | ActionStatus::Succeeded)
        )
    });
    let missing = reserved - launched;
    if missing == 0 || (waited >= CAPACITY_TIMEOUT && taken_at >= rollout.provisioning_since) {
        return Step::StartMigration;
    }
    if reserving > 0 {
        return Step::Wait(format!(
            "waiting for the agent to reserve the planned nodes of {reserving} NodePool(s)"
        ));
    }
    Step::Wait(format!(
        "waiting for Karpenter to launch {missing} planned node(s)"
    ))
}

/// Undoing on Karpenter: replaced nodes still standing are made schedulable again, and
/// Spotwise's NodePools are deleted unless pods already moved to them (after a drain a cancel
/// keeps them, and a failure is not rolled back). Karpenter removes the drained nodes itself.
fn karpenter_undo_step(rollout: &Rollout, observed: &Observed<'_>) -> Step {
    let cancelling = rollout.failure.is_none();
    if let Some(step) = restore_step(rollout, cancelling) {
        return step;
    }
    if let Some(step) = release_step(rollout, observed, true) {
        return step;
    }
    let drained = rollout.replaced.iter().filter(|r| r.drained).count();
    if drained == 0 {
        for (i, group) in rollout.groups.iter().enumerate() {
            let applied = group.created || observed.actions.contains_key(&group.apply_action());
            if group.deleted || !applied {
                continue;
            }
            return match observed.actions.get(&group.delete_action()) {
                None => Step::DeleteGroup(i),
                Some(ActionStatus::Queued) => Step::Wait(format!(
                    "waiting for the agent to delete NodePool {}",
                    group.name
                )),
                Some(_) => Step::GroupDeleted(i),
            };
        }
    }
    if cancelling {
        return cancelled(rollout);
    }
    let failure = rollout.failure.clone().unwrap_or_default();
    if drained > 0 {
        return Step::Finish(
            RolloutStatus::Failed,
            format!("{failure}; not rolled back: pods already moved to Spotwise's NodePools"),
        );
    }
    Step::Finish(
        RolloutStatus::RolledBack,
        format!("{failure}; rolled back: Spotwise's NodePools deleted, nodes uncordoned"),
    )
}

fn provisioning_step(rollout: &Rollout, observed: &Observed<'_>, now: OffsetDateTime) -> Step {
    if let Some(i) = rollout.groups.iter().position(|g| !g.created && !g.deleted) {
        return Step::CreateGroup(i);
    }
    let Some((snapshot, taken_at)) = observed.snapshot else {
        return Step::Wait("waiting for the agent's snapshot".into());
    };
    let ready = rollout.ready_nodes(snapshot);
    let short: Vec<(usize, u32)> = rollout
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.deleted)
        .filter_map(|(i, g)| {
            let have = ready.get(&g.name).copied().unwrap_or(0);
            (have < g.desired).then_some((i, g.desired - have))
        })
        .collect();
    if short.is_empty() {
        return Step::StartMigration;
    }
    let waited = now - rollout.provisioning_since;
    let seen_since = taken_at >= rollout.provisioning_since;
    if waited >= CAPACITY_TIMEOUT && seen_since && rollout.retrying_spot {
        return Step::SpotStillShort;
    }
    if waited >= CAPACITY_TIMEOUT && seen_since {
        for &(i, missing) in &short {
            let group = &rollout.groups[i];
            let has_fallback = rollout
                .groups
                .iter()
                .any(|g| g.fallback_for.as_ref() == Some(&group.name) && !g.deleted);
            if group.capacity_type == CapacityType::Spot && !has_fallback {
                return Step::FallBack {
                    group: i,
                    shortfall: missing,
                };
            }
        }
    }
    if waited >= CAPACITY_TIMEOUT + ON_DEMAND_TIMEOUT && seen_since {
        let names: Vec<String> = short
            .iter()
            .map(|(i, n)| format!("{} short of {n}", rollout.groups[*i].name))
            .collect();
        return Step::Fail(format!(
            "capacity not Ready after {} min: {}",
            waited.whole_minutes(),
            names.join(", ")
        ));
    }
    let missing: u32 = short.iter().map(|(_, n)| n).sum();
    Step::Wait(format!("waiting for {missing} new node(s) to be Ready"))
}

fn migration_step(rollout: &Rollout, observed: &Observed<'_>, now: OffsetDateTime) -> Step {
    let status = |id: &Option<String>| id.as_ref().and_then(|id| observed.actions.get(id));
    if rollout
        .replaced
        .iter()
        .any(|r| r.cordon_action.is_none() || r.drain_action.is_none())
    {
        return Step::AssignActions;
    }
    // Every replaced node is cordoned first, so no pod of a drain lands on the next one.
    if let Some(i) = rollout
        .replaced
        .iter()
        .position(|r| !r.drained && status(&r.cordon_action).is_none())
    {
        return Step::Cordon(i);
    }
    let mut in_flight = 0;
    let mut in_flight_per_pool: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, node) in rollout.replaced.iter().enumerate() {
        if node.drained {
            continue;
        }
        match status(&node.drain_action) {
            Some(ActionStatus::Succeeded | ActionStatus::Closed) => return Step::Drained(i),
            Some(ActionStatus::Queued) => {
                in_flight += 1;
                *in_flight_per_pool
                    .entry(node.nodegroup.as_str())
                    .or_default() += 1;
            }
            Some(other) => {
                return Step::Fail(format!(
                    "the drain of {} ended {}",
                    node.name,
                    other.as_str()
                ));
            }
            None => {}
        }
    }
    // A node's NodePool budget limits its drains beside the policy's wave.
    let pool_allows = |r: &ReplacedNode| {
        observed
            .disruptions_allowed
            .get(&r.nodegroup)
            .is_none_or(|allowed| {
                in_flight_per_pool
                    .get(r.nodegroup.as_str())
                    .copied()
                    .unwrap_or(0)
                    < *allowed
            })
    };
    let waiting: Vec<&ReplacedNode> = rollout
        .replaced
        .iter()
        .filter(|r| !r.drained && status(&r.drain_action).is_none())
        .collect();
    if in_flight < rollout.wave_size
        && let Some(i) = rollout
            .replaced
            .iter()
            .position(|r| !r.drained && status(&r.drain_action).is_none() && pool_allows(r))
    {
        return Step::Drain(i);
    }
    if in_flight == 0 && !waiting.is_empty() {
        let pools: BTreeSet<&str> = waiting.iter().map(|r| r.nodegroup.as_str()).collect();
        return Step::Wait(format!(
            "the disruption budgets of NodePool(s) {} allow no disruption now",
            pools.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if in_flight > 0 {
        let done = rollout.replaced.iter().filter(|r| r.drained).count();
        return Step::Wait(format!(
            "draining: {done} of {} node(s) drained, {in_flight} in progress",
            rollout.replaced.len()
        ));
    }
    // On Karpenter the last drain releases the nodes: Karpenter removes them, and the planned
    // nodes no pod took once their placeholders are released.
    if rollout.backend == Backend::Karpenter {
        return release_step(rollout, observed, false)
            .unwrap_or_else(|| verify_step(rollout, observed, now));
    }
    if let Some(group) = rollout.emptied_groups.iter().find(|g| {
        rollout
            .replaced
            .iter()
            .any(|r| &r.nodegroup == *g && !r.released)
    }) {
        return Step::EmptyGroup(group.clone());
    }
    if let Some(i) = rollout.replaced.iter().position(|r| !r.released) {
        return Step::Terminate(i);
    }
    verify_step(rollout, observed, now)
}

/// On Karpenter: the release of the next reservation whose placeholders may be left, or the
/// wait for one, until every reservation sent is released. Placeholders left would keep their
/// nodes, so a release that failed fails the rollout (undoing, it is passed over).
fn release_step(rollout: &Rollout, observed: &Observed<'_>, undoing: bool) -> Option<Step> {
    let reserved = || {
        rollout
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| observed.actions.contains_key(&g.reserve_action()))
    };
    if let Some((i, _)) =
        reserved().find(|(_, g)| !observed.actions.contains_key(&g.release_action()))
    {
        return Some(Step::Release(i));
    }
    let releasing = reserved()
        .filter(|(_, g)| observed.actions.get(&g.release_action()) == Some(&ActionStatus::Queued))
        .count();
    if releasing > 0 {
        return Some(Step::Wait(format!(
            "waiting for the agent to release the reserved nodes of {releasing} NodePool(s)"
        )));
    }
    for (_, group) in reserved() {
        match observed.actions.get(&group.release_action()) {
            None | Some(ActionStatus::Queued | ActionStatus::Succeeded | ActionStatus::Closed) => {}
            Some(_) if undoing => {}
            Some(other) => {
                return Some(Step::Fail(format!(
                    "the reserved nodes of NodePool {} were not released ({})",
                    group.name,
                    failure_of(observed, &group.release_action(), *other)
                )));
            }
        }
    }
    None
}

/// Once the replaced capacity is released, the first snapshot taken after it that no longer
/// lists the replaced nodes verifies the rollout. On Karpenter, which removes the drained
/// (empty) nodes itself, the rollout verifies without them after
/// [`KARPENTER_RELEASE_TIMEOUT`]: their NodePool does not consolidate empty nodes.
fn verify_step(rollout: &Rollout, observed: &Observed<'_>, now: OffsetDateTime) -> Step {
    let released_at = rollout.released_at.unwrap_or(rollout.updated_at);
    match observed.snapshot {
        Some((snapshot, taken_at)) if taken_at > released_at => {
            let left = rollout
                .replaced
                .iter()
                .filter(|r| snapshot.nodes.iter().any(|n| n.name == r.name))
                .count();
            match rollout.backend {
                _ if left == 0 => Step::Verify,
                Backend::Karpenter if now - released_at >= KARPENTER_RELEASE_TIMEOUT => {
                    Step::Verify
                }
                Backend::Karpenter => Step::Wait(format!(
                    "waiting for Karpenter to remove {left} drained node(s)"
                )),
                Backend::ManagedNodeGroups => {
                    Step::Wait("waiting for the removed nodes to leave the cluster".into())
                }
            }
        }
        _ if now - released_at > Duration::hours(1) => Step::Fail(
            "no snapshot from the agent within an hour of the release to verify with".into(),
        ),
        _ => Step::Wait("waiting for a snapshot to verify the cluster".into()),
    }
}

/// A cancel's end: how far the rollout had come.
fn cancelled(rollout: &Rollout) -> Step {
    let by = rollout.cancel_requested_by.clone().unwrap_or_default();
    let drained = rollout.replaced.iter().filter(|r| r.drained).count();
    Step::Finish(
        RolloutStatus::Cancelled,
        format!(
            "cancelled by {by}: {drained} of {} node(s) had been replaced",
            rollout.replaced.len()
        ),
    )
}

/// Undoing, first: replaced nodes still standing take their pods again (on a cancel, not the
/// drained ones, whose pods moved already).
fn restore_step(rollout: &Rollout, cancelling: bool) -> Option<Step> {
    let standing = |r: &ReplacedNode| !r.restored && !r.released && r.cordon_action.is_some();
    rollout
        .replaced
        .iter()
        .position(|r| standing(r) && !(cancelling && r.drained))
        .map(Step::Restore)
}

fn undo_step(rollout: &Rollout) -> Step {
    let cancelling = rollout.failure.is_none();
    let anything_released = rollout.replaced.iter().any(|r| r.released);
    if let Some(step) = restore_step(rollout, cancelling) {
        return step;
    }
    // A cancel keeps the capacity that drained nodes' pods moved to, and removes the emptied
    // nodes; a failure removes what it created, unless the old capacity is already gone.
    if cancelling {
        if rollout.status == RolloutStatus::Migrating
            && let Some(i) = rollout
                .replaced
                .iter()
                .position(|r| r.drained && !r.released)
        {
            return Step::Terminate(i);
        }
        if rollout.status == RolloutStatus::Provisioning
            && let Some(i) = rollout.groups.iter().position(|g| g.created && !g.deleted)
        {
            return Step::DeleteGroup(i);
        }
        return cancelled(rollout);
    }
    let failure = rollout.failure.clone().unwrap_or_default();
    if anything_released {
        return Step::Finish(
            RolloutStatus::Failed,
            format!("{failure}; not rolled back: replaced capacity was already removed"),
        );
    }
    if let Some(i) = rollout.groups.iter().position(|g| g.created && !g.deleted) {
        return Step::DeleteGroup(i);
    }
    Step::Finish(
        RolloutStatus::RolledBack,
        format!("{failure}; rolled back: created node groups deleted, nodes uncordoned"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterId {
        ClusterId::new("111122223333.us-east-1.prod").unwrap()
    }

    fn node(name: &str, itype: &str, zone: &str, cap: CapacityType, group: &str) -> CurrentNode {
        CurrentNode {
            name: name.into(),
            instance_id: Some(format!("i-{name}")),
            instance_type: itype.into(),
            zone: zone.into(),
            capacity_type: cap,
            cpu_m: 7_910,
            mem_mib: 30_000,
            max_pods: 58,
            gpus: 0,
            price_hr: Some(0.384),
            labels: BTreeMap::from([(NODEGROUP_LABEL.to_owned(), group.to_owned())]),
            taints: vec![],
            unschedulable: false,
            not_ready: false,
            do_not_disrupt: false,
        }
    }

    fn planned(itype: &str, zone: &str, cap: CapacityType, nodes: u32) -> PlannedNodes {
        PlannedNodes {
            instance_type: itype.into(),
            zone: zone.into(),
            capacity_type: cap,
            nodes,
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// Three on-demand m5.2xlarge in group `general`; the plan keeps one and adds two spot
    /// m5.xlarge in zone a.
    fn rollout() -> (Rollout, Vec<CurrentNode>) {
        let nodes = vec![
            node(
                "n1",
                "m5.2xlarge",
                "us-east-1a",
                CapacityType::OnDemand,
                "general",
            ),
            node(
                "n2",
                "m5.2xlarge",
                "us-east-1b",
                CapacityType::OnDemand,
                "general",
            ),
            node(
                "n3",
                "c5.2xlarge",
                "us-east-1a",
                CapacityType::OnDemand,
                "compute",
            ),
        ];
        let mix = vec![
            planned("m5.2xlarge", "us-east-1a", CapacityType::OnDemand, 1),
            planned("m5.xlarge", "us-east-1a", CapacityType::Spot, 2),
        ];
        let similar = |t: &str| vec![t.to_owned(), "m5a.xlarge".into(), "m6i.xlarge".into()];
        let snapshot = snapshot_with(nodes.clone());
        let r = prepare(&approval(&mix, &snapshot), &similar);
        (r, nodes)
    }

    fn approval<'a>(mix: &'a [PlannedNodes], snapshot: &'a Snapshot) -> Approval<'a> {
        static TENANT: std::sync::LazyLock<TenantId> =
            std::sync::LazyLock::new(|| TenantId::new("acme").unwrap());
        static CLUSTER: std::sync::LazyLock<ClusterId> = std::sync::LazyLock::new(cluster);
        Approval {
            tenant: &TENANT,
            cluster: &CLUSTER,
            revision: 3,
            mix,
            planned_cost_hr: 0.6,
            before: Figures::default(),
            snapshot,
            wave_size: 1,
            now: t0(),
        }
    }

    fn snapshot_with(nodes: Vec<CurrentNode>) -> Snapshot {
        Snapshot {
            nodes,
            ..Snapshot::default()
        }
    }

    #[test]
    fn prepare_keeps_matching_nodes_and_provisions_the_rest() {
        let (r, _) = rollout();
        assert_eq!(r.kept, vec!["n1"]);
        let replaced: Vec<&str> = r.replaced.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(replaced, vec!["n2", "n3"]);
        assert_eq!(r.groups.len(), 1);
        let g = &r.groups[0];
        assert!(g.name.starts_with("spotwise-spot-"), "{}", g.name);
        assert_eq!(
            g.instance_types,
            vec!["m5.xlarge", "m5a.xlarge", "m6i.xlarge"]
        );
        assert_eq!(g.desired, 2);
        // `general` keeps n1; `compute` loses its only node.
        assert_eq!(r.emptied_groups, vec!["compute"]);
        assert_eq!(r.planned.nodes, 3);
        assert_eq!(r.planned.spot_nodes, 2);
    }

    #[test]
    fn group_names_are_stable_and_distinct() {
        let a = group_name(
            &cluster(),
            3,
            CapacityType::Spot,
            "us-east-1a",
            "m5.xlarge",
            false,
        );
        assert_eq!(
            a,
            group_name(
                &cluster(),
                3,
                CapacityType::Spot,
                "us-east-1a",
                "m5.xlarge",
                false
            )
        );
        assert_ne!(
            a,
            group_name(
                &cluster(),
                4,
                CapacityType::Spot,
                "us-east-1a",
                "m5.xlarge",
                false
            )
        );
        let f = group_name(
            &cluster(),
            3,
            CapacityType::OnDemand,
            "us-east-1a",
            "m5.xlarge",
            true,
        );
        assert!(f.starts_with("spotwise-fallback-"));
        assert!(is_spotwise_group(&f) && !is_spotwise_spot_group(&f));
        assert!(is_spotwise_spot_group(&a) && !is_spotwise_group("general"));
        // EKS allows 63 characters.
        assert!(a.len() <= 63);
    }

    #[test]
    fn provisioning_creates_then_waits_for_ready_nodes() {
        let (mut r, nodes) = rollout();
        let observed = Observed::default();
        assert_eq!(next_step(&r, &observed, t0()), Step::CreateGroup(0));
        r.groups[0].created = true;
        assert!(matches!(next_step(&r, &observed, t0()), Step::Wait(_)));
        let mut with_new = nodes.clone();
        let mut new = node(
            "s1",
            "m5.xlarge",
            "us-east-1a",
            CapacityType::Spot,
            &r.groups[0].name,
        );
        new.not_ready = true;
        with_new.push(new.clone());
        let snap = snapshot_with(with_new.clone());
        let observed = Observed {
            snapshot: Some((&snap, t0())),
            ..Observed::default()
        };
        assert!(matches!(next_step(&r, &observed, t0()), Step::Wait(w) if w.contains("2 new")));
        with_new.last_mut().unwrap().not_ready = false;
        with_new.push(node(
            "s2",
            "m5.xlarge",
            "us-east-1a",
            CapacityType::Spot,
            &r.groups[0].name,
        ));
        let snap = snapshot_with(with_new);
        let observed = Observed {
            snapshot: Some((&snap, t0())),
            ..Observed::default()
        };
        assert_eq!(next_step(&r, &observed, t0()), Step::StartMigration);
    }

    #[test]
    fn spot_short_past_the_deadline_falls_back_then_fails() {
        let (mut r, nodes) = rollout();
        r.groups[0].created = true;
        let mut with_one = nodes;
        with_one.push(node(
            "s1",
            "m5.xlarge",
            "us-east-1a",
            CapacityType::Spot,
            &r.groups[0].name,
        ));
        let snap = snapshot_with(with_one);
        let late = t0() + CAPACITY_TIMEOUT;
        let observed = Observed {
            snapshot: Some((&snap, late)),
            ..Observed::default()
        };
        assert!(matches!(
            next_step(&r, &observed, t0() + Duration::minutes(5)),
            Step::Wait(_)
        ));
        assert_eq!(
            next_step(&r, &observed, late),
            Step::FallBack {
                group: 0,
                shortfall: 1
            }
        );
        // A snapshot older than the provisioning start does not count as evidence.
        let stale = Observed {
            snapshot: Some((&snap, t0() - Duration::minutes(1))),
            ..Observed::default()
        };
        assert!(matches!(next_step(&r, &stale, late), Step::Wait(_)));
        let fallback_name = group_name(
            &cluster(),
            3,
            CapacityType::OnDemand,
            "us-east-1a",
            "m5.xlarge",
            true,
        );
        r.groups[0].desired = 1;
        r.groups[0].shortfall = 1;
        r.groups.push(NewGroup {
            name: fallback_name,
            capacity_type: CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            instance_types: vec!["m5.xlarge".into()],
            desired: 1,
            created: true,
            shortfall: 0,
            fallback_for: Some(r.groups[0].name.clone()),
            deleted: false,
            node_pool: None,
            reservation: None,
        });
        let much_later = t0() + CAPACITY_TIMEOUT + ON_DEMAND_TIMEOUT;
        let observed = Observed {
            snapshot: Some((&snap, much_later)),
            ..Observed::default()
        };
        assert!(
            matches!(next_step(&r, &observed, much_later), Step::Fail(f) if f.contains("spotwise-fallback-"))
        );
    }

    fn migrating() -> Rollout {
        let (mut r, _) = rollout();
        r.groups[0].created = true;
        r.status = RolloutStatus::Migrating;
        r
    }

    #[test]
    fn migration_cordons_all_then_drains_within_the_wave() {
        let mut r = migrating();
        let mut observed = Observed::default();
        assert_eq!(next_step(&r, &observed, t0()), Step::AssignActions);
        for (i, n) in r.replaced.iter_mut().enumerate() {
            n.cordon_action = Some(format!("c{i}"));
            n.drain_action = Some(format!("d{i}"));
        }
        assert_eq!(next_step(&r, &observed, t0()), Step::Cordon(0));
        observed.actions.insert("c0".into(), ActionStatus::Queued);
        assert_eq!(next_step(&r, &observed, t0()), Step::Cordon(1));
        observed
            .actions
            .insert("c1".into(), ActionStatus::Succeeded);
        assert_eq!(next_step(&r, &observed, t0()), Step::Drain(0));
        observed.actions.insert("d0".into(), ActionStatus::Queued);
        // Wave of one: the second drain waits.
        assert!(
            matches!(next_step(&r, &observed, t0()), Step::Wait(w) if w.contains("1 in progress"))
        );
        observed
            .actions
            .insert("d0".into(), ActionStatus::Succeeded);
        assert_eq!(next_step(&r, &observed, t0()), Step::Drained(0));
        r.replaced[0].drained = true;
        assert_eq!(next_step(&r, &observed, t0()), Step::Drain(1));
        observed.actions.insert("d1".into(), ActionStatus::Failed);
        assert!(matches!(next_step(&r, &observed, t0()), Step::Fail(f) if f.contains("n3")));
    }

    #[test]
    fn release_empties_whole_groups_and_terminates_the_rest_then_verifies() {
        let mut r = migrating();
        for n in &mut r.replaced {
            n.cordon_action = Some(format!("c-{}", n.name));
            n.drain_action = Some(format!("d-{}", n.name));
            n.drained = true;
        }
        let observed = Observed::default();
        assert_eq!(
            next_step(&r, &observed, t0()),
            Step::EmptyGroup("compute".into())
        );
        r.replaced[1].released = true;
        assert_eq!(next_step(&r, &observed, t0()), Step::Terminate(0));
        r.replaced[0].released = true;
        r.released_at = Some(t0());
        assert!(matches!(next_step(&r, &observed, t0()), Step::Wait(_)));
        let old = snapshot_with(vec![node(
            "n2",
            "m5.2xlarge",
            "us-east-1b",
            CapacityType::OnDemand,
            "general",
        )]);
        let after = Observed {
            snapshot: Some((&old, t0() + Duration::minutes(1))),
            ..Observed::default()
        };
        assert!(matches!(next_step(&r, &after, t0()), Step::Wait(w) if w.contains("leave")));
        let clean = snapshot_with(vec![]);
        let after = Observed {
            snapshot: Some((&clean, t0() + Duration::minutes(1))),
            ..Observed::default()
        };
        assert_eq!(next_step(&r, &after, t0()), Step::Verify);
    }

    #[test]
    fn cancel_waits_for_drains_in_flight_then_restores_and_stops() {
        let mut r = migrating();
        for (i, n) in r.replaced.iter_mut().enumerate() {
            n.cordon_action = Some(format!("c{i}"));
            n.drain_action = Some(format!("d{i}"));
        }
        r.cancel_requested_by = Some("user:ops".into());
        let mut observed = Observed::default();
        observed.actions.insert("d0".into(), ActionStatus::Queued);
        // A drain in flight is the unsafe moment: the rollout goes on until it ends.
        assert!(!matches!(next_step(&r, &observed, t0()), Step::Restore(_)));
        observed
            .actions
            .insert("d0".into(), ActionStatus::Succeeded);
        r.replaced[0].drained = true;
        assert_eq!(next_step(&r, &observed, t0()), Step::Restore(1));
        r.replaced[1].restored = true;
        assert_eq!(next_step(&r, &observed, t0()), Step::Terminate(0));
        r.replaced[0].released = true;
        assert!(matches!(
            next_step(&r, &observed, t0()),
            Step::Finish(RolloutStatus::Cancelled, reason) if reason.contains("1 of 2")
        ));
    }

    #[test]
    fn failure_restores_and_deletes_what_it_created() {
        let mut r = migrating();
        r.replaced[0].cordon_action = Some("c0".into());
        r.failure = Some("the drain of n2 ended failed".into());
        let observed = Observed::default();
        assert_eq!(next_step(&r, &observed, t0()), Step::Restore(0));
        r.replaced[0].restored = true;
        assert_eq!(next_step(&r, &observed, t0()), Step::DeleteGroup(0));
        r.groups[0].deleted = true;
        assert!(matches!(
            next_step(&r, &observed, t0()),
            Step::Finish(RolloutStatus::RolledBack, _)
        ));
        // Once old capacity is gone, deleting the new one would strand the pods.
        let mut gone = migrating();
        gone.replaced[0].released = true;
        gone.failure = Some("x".into());
        assert!(matches!(
            next_step(&gone, &observed, t0()),
            Step::Finish(RolloutStatus::Failed, _)
        ));
    }

    #[test]
    fn spot_is_retried_by_replacing_the_fallback_nodes() {
        let (mut r, _) = rollout();
        let spot = r.groups[0].name.clone();
        r.groups[0].created = true;
        r.groups[0].desired = 1;
        r.groups[0].shortfall = 1;
        let fallback = group_name(
            &cluster(),
            3,
            CapacityType::OnDemand,
            "us-east-1a",
            "m5.xlarge",
            true,
        );
        r.groups.push(NewGroup {
            name: fallback.clone(),
            capacity_type: CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            instance_types: vec!["m5.xlarge".into()],
            desired: 1,
            created: true,
            shortfall: 0,
            fallback_for: Some(spot),
            deleted: false,
            node_pool: None,
            reservation: None,
        });
        r.status = RolloutStatus::Completed;
        let snap = snapshot_with(vec![node(
            "f1",
            "m5.xlarge",
            "us-east-1a",
            CapacityType::OnDemand,
            &fallback,
        )]);
        assert!(r.retry_spot(&snap, t0()));
        assert_eq!(r.status, RolloutStatus::Provisioning);
        assert!(r.retrying_spot);
        assert_eq!(
            (
                r.groups[0].desired,
                r.groups[0].shortfall,
                r.groups[0].created
            ),
            (2, 0, false)
        );
        assert!(
            r.replaced
                .iter()
                .any(|n| n.name == "f1" && n.nodegroup == fallback)
        );
        assert!(r.emptied_groups.contains(&fallback));
        assert_eq!(
            next_step(&r, &Observed::default(), t0()),
            Step::CreateGroup(0)
        );
        // Spot still short past the deadline: the rollout goes back to its fallback.
        r.groups[0].created = true;
        let late = t0() + CAPACITY_TIMEOUT;
        let observed = Observed {
            snapshot: Some((&snap, late)),
            ..Observed::default()
        };
        assert_eq!(next_step(&r, &observed, late), Step::SpotStillShort);
        // Nothing to retry without a fallback.
        let (mut plain, _) = rollout();
        assert!(!plain.retry_spot(&snap, t0()));
    }

    #[test]
    fn figures_of_a_snapshot_count_mix_cost_and_pending_pods() {
        let mut snap = snapshot_with(vec![
            node("a", "m5.xlarge", "us-east-1a", CapacityType::Spot, "g"),
            node("b", "m5.xlarge", "us-east-1a", CapacityType::Spot, "g"),
            node("c", "m5.2xlarge", "us-east-1a", CapacityType::OnDemand, "g"),
        ]);
        snap.nodes[2].price_hr = None;
        let figures = Figures::of_snapshot(&snap, |_| Some(0.1));
        assert!((figures.cost_hr - (0.384 * 2.0 + 0.1)).abs() < 1e-9);
        assert_eq!(figures.nodes, 3);
        assert_eq!(figures.spot_nodes, 2);
        assert_eq!(figures.mix.len(), 2);
        assert!((figures.spot_share() - 2.0 / 3.0).abs() < 1e-9);
    }

    fn karpenter_cluster() -> (Snapshot, Vec<PlannedNodes>) {
        let pooled = |name: &str, itype: &str, cap: CapacityType, pool: &str| {
            let mut n = node(name, itype, "us-east-1a", cap, "unused");
            n.labels = BTreeMap::from([(
                spotwise_core::karpenter::NODEPOOL_LABEL.to_owned(),
                pool.to_owned(),
            )]);
            n
        };
        let mut pinned = pooled("k3", "m5.2xlarge", CapacityType::OnDemand, "general");
        pinned.do_not_disrupt = true;
        let customer = spotwise_core::karpenter::parse_node_pool(&serde_json::json!({
            "metadata": {"name": "general"},
            "spec": {"weight": 10, "template": {"metadata": {"labels": {"tier": "web"}}, "spec": {
                "requirements": [
                    {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["m5"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}}}
        }))
        .unwrap();
        // k2 is the node replaced: its pods move.
        let on_k2 = |name: &str, cpu_m: u64, mem_mib: u64, on_demand: bool| {
            let mut pod = spotwise_core::snapshot::SnapshotPod {
                workload: spotwise_core::snapshot::WorkloadPod::default(),
                spec: spotwise_core::snapshot::PodSpec::default(),
                usage: None,
                containers: Vec::new(),
            };
            pod.spec.name = format!("shop/{name}");
            pod.spec.node = Some("k2".into());
            (pod.spec.cpu_m, pod.spec.mem_mib) = (cpu_m, mem_mib);
            if on_demand {
                pod.spec
                    .node_selector
                    .insert("karpenter.sh/capacity-type".into(), "on-demand".into());
            }
            pod
        };
        let snapshot = Snapshot {
            nodes: vec![
                pooled("k1", "m5.2xlarge", CapacityType::OnDemand, "general"),
                pooled("k2", "m5.2xlarge", CapacityType::OnDemand, "general"),
                pinned,
            ],
            pods: vec![
                on_k2("web-2", 500, 1_000, false),
                on_k2("api-2", 1_500, 3_000, false),
                on_k2("db-1", 1_000, 2_000, true),
                on_k2("web-3", 500, 1_000, false),
            ],
            karpenter: Some(Karpenter {
                node_pools: vec![customer],
                node_classes: vec!["default".into()],
            }),
            ..Snapshot::default()
        };
        let mix = vec![
            planned("m5.xlarge", "us-east-1a", CapacityType::Spot, 2),
            planned("m5.large", "us-east-1a", CapacityType::Spot, 1),
            planned("m5.2xlarge", "us-east-1a", CapacityType::OnDemand, 1),
        ];
        (snapshot, mix)
    }

    fn karpenter_rollout() -> Rollout {
        let (snapshot, mix) = karpenter_cluster();
        let size = |t: &str| {
            let (cpu_m, mem_mib) = match t {
                "m5.large" => (2_000, 7_000),
                "m5.xlarge" => (4_000, 14_000),
                _ => (8_000, 28_000),
            };
            Some(NodeSize {
                capacity: (cpu_m, mem_mib),
                allocatable: (cpu_m - 80, mem_mib - 1_000),
            })
        };
        let karpenter = snapshot.karpenter.clone().unwrap();
        prepare_karpenter(&approval(&mix, &snapshot), &karpenter, &size).unwrap()
    }

    #[test]
    fn karpenter_plans_become_spotwise_node_pools_above_the_customers() {
        let r = karpenter_rollout();
        assert_eq!(r.backend, Backend::Karpenter);
        // k3 may not be disrupted and is the planned on-demand m5.2xlarge anyway; one of k1
        // and k2 is kept for the planned on-demand node, the other replaced.
        assert_eq!(r.kept.len(), 2);
        assert!(r.kept.contains(&"k3".to_owned()));
        assert_eq!(r.replaced.len(), 1);
        assert_eq!(r.replaced[0].nodegroup, "general");
        let pools: Vec<&NodePoolSpec> = r
            .groups
            .iter()
            .filter_map(|g| g.node_pool.as_ref())
            .collect();
        assert_eq!(
            pools.len(),
            2,
            "the on-demand node is kept, two spot types remain"
        );
        // Spot pools, larger types first, all above the customer's weight of 10.
        assert!(
            pools[1]
                .requirements
                .iter()
                .any(|q| q.values == ["m5.large"])
        );
        let weights: Vec<u32> = pools.iter().map(|p| p.weight.unwrap()).collect();
        assert!(weights[0] > weights[1] && weights[1] > 10, "{weights:?}");
        let spot = pools[0];
        assert_eq!(spot.name, r.groups[0].name);
        assert_eq!(spot.node_class.name, "default");
        assert_eq!(spot.labels["tier"], "web");
        assert_eq!(spot.labels[MANAGED_TAG], "true");
        let keys: Vec<&str> = spot.requirements.iter().map(|q| q.key.as_str()).collect();
        assert!(
            !keys.contains(&"karpenter.k8s.aws/instance-family"),
            "{keys:?}"
        );
        assert!(keys.contains(&"kubernetes.io/arch"));
        let capacity = spot
            .requirements
            .iter()
            .find(|q| q.key == "karpenter.sh/capacity-type")
            .unwrap();
        assert_eq!(capacity.values, ["spot"]);
        // Two planned m5.xlarge plus the headroom.
        assert_eq!(spot.limits["cpu"], "12000m");
        assert_eq!(spot.limits["memory"], "42000Mi");
    }

    #[test]
    fn karpenter_placeholders_stand_in_for_the_moving_pods_on_the_nodes_planned_for_them() {
        let r = karpenter_rollout();
        let xlarge = &r.groups[0];
        assert_eq!(xlarge.instance_types, ["m5.xlarge"]);
        let reservation = xlarge.reservation.as_ref().unwrap();
        // All three pods that may run on spot fit one m5.xlarge, largest first; the pod that
        // selects on-demand has no planned on-demand node to stand in on.
        assert_eq!(reservation.nodes, 1);
        assert_eq!(reservation.capacity_type, CapacityType::Spot);
        assert_eq!(
            reservation.placeholders,
            [
                Placeholder {
                    cpu_m: 1_425,
                    mem_mib: 2_850,
                    count: 1
                },
                Placeholder {
                    cpu_m: 475,
                    mem_mib: 950,
                    count: 2
                },
            ]
        );
        assert_eq!(xlarge.reserved_nodes(), 1, "of the 2 planned");
        assert_eq!(
            r.groups[1].reservation, None,
            "no moving pod needs the m5.large"
        );
    }

    #[test]
    fn karpenter_placeholders_only_go_where_the_pods_selectors_and_tolerations_admit() {
        let (mut snapshot, mix) = karpenter_cluster();
        let selecting = |name: &str, cpu_m: u64, key: &str, value: &str| {
            let mut pod = snapshot.pods[0].clone();
            pod.spec.name = format!("shop/{name}");
            (pod.spec.cpu_m, pod.spec.mem_mib) = (cpu_m, 100);
            pod.spec.node_selector = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            pod
        };
        snapshot.pods = vec![
            // The template's label and the planned zone admit it; another zone or label not.
            selecting("webby", 200, "tier", "web"),
            selecting("zonal", 300, "topology.kubernetes.io/zone", "us-east-1b"),
            selecting("batch", 400, "tier", "batch"),
            // Labels the pools do not set (arch) are not held against a pod.
            selecting("amd", 500, "kubernetes.io/arch", "amd64"),
        ];
        let karpenter = snapshot.karpenter.clone().unwrap();
        let size = |_: &str| {
            Some(NodeSize {
                capacity: (4_000, 14_000),
                allocatable: (3_900, 13_000),
            })
        };
        let r = prepare_karpenter(&approval(&mix, &snapshot), &karpenter, &size).unwrap();
        let held: Vec<u64> = r
            .groups
            .iter()
            .filter_map(|g| g.reservation.as_ref())
            .flat_map(|r| r.placeholders.iter().map(|p| p.cpu_m))
            .collect();
        assert_eq!(held, [475, 190], "amd and webby, not zonal nor batch");
    }

    #[test]
    fn karpenter_provisioning_reserves_the_planned_nodes_before_migrating() {
        let mut r = karpenter_rollout();
        for g in &mut r.groups {
            g.created = true;
        }
        let mut observed = Observed::default();
        assert_eq!(next_step(&r, &observed, t0()), Step::Reserve(0));
        let reserve = r.groups[0].reserve_action();
        observed
            .actions
            .insert(reserve.clone(), ActionStatus::Queued);
        assert!(matches!(next_step(&r, &observed, t0()), Step::Wait(w) if w.contains("snapshot")));
        let (mut snapshot, _) = karpenter_cluster();
        let seen = Observed {
            snapshot: Some((&snapshot, t0())),
            actions: observed.actions.clone(),
            ..Observed::default()
        };
        assert!(matches!(next_step(&r, &seen, t0()), Step::Wait(w) if w.contains("reserve")));
        let mut reserved = seen.actions.clone();
        reserved.insert(reserve.clone(), ActionStatus::Succeeded);
        let launching = Observed {
            snapshot: Some((&snapshot, t0())),
            actions: reserved.clone(),
            ..Observed::default()
        };
        assert!(
            matches!(next_step(&r, &launching, t0()), Step::Wait(w) if w.contains("launch 1 planned node"))
        );
        // Without the node after the capacity timeout, the drains go on: Karpenter places the
        // pods where it can.
        assert_eq!(
            next_step(&r, &launching, t0() + CAPACITY_TIMEOUT),
            Step::StartMigration
        );
        let mut launched = node("k9", "m5.xlarge", "us-east-1a", CapacityType::Spot, "x");
        launched.labels = BTreeMap::from([(
            spotwise_core::karpenter::NODEPOOL_LABEL.to_owned(),
            r.groups[0].name.clone(),
        )]);
        snapshot.nodes.push(launched);
        let ready = Observed {
            snapshot: Some((&snapshot, t0())),
            actions: reserved,
            ..Observed::default()
        };
        assert_eq!(next_step(&r, &ready, t0()), Step::StartMigration);
        // A reservation the agent could not make leaves the pool to Karpenter's packing.
        let mut refused = observed.actions.clone();
        refused.insert(reserve, ActionStatus::Failed);
        let (bare, _) = karpenter_cluster();
        let without = Observed {
            snapshot: Some((&bare, t0())),
            actions: refused,
            ..Observed::default()
        };
        assert_eq!(next_step(&r, &without, t0()), Step::StartMigration);
    }

    #[test]
    fn karpenter_provisioning_applies_each_pool_through_the_agent_then_migrates() {
        let mut r = karpenter_rollout();
        let mut observed = Observed::default();
        assert_eq!(next_step(&r, &observed, t0()), Step::CreateGroup(0));
        let first = r.groups[0].apply_action();
        observed.actions.insert(first.clone(), ActionStatus::Queued);
        assert_eq!(next_step(&r, &observed, t0()), Step::CreateGroup(1));
        observed
            .actions
            .insert(r.groups[1].apply_action(), ActionStatus::Queued);
        assert!(
            matches!(next_step(&r, &observed, t0()), Step::Wait(w) if w.contains("2 NodePool"))
        );
        assert!(
            matches!(next_step(&r, &observed, t0() + APPLY_TIMEOUT), Step::Fail(f) if f.contains("within 30 min"))
        );
        observed
            .actions
            .insert(first.clone(), ActionStatus::Succeeded);
        assert_eq!(next_step(&r, &observed, t0()), Step::GroupCreated(0));
        r.groups[0].created = true;
        observed
            .actions
            .insert(r.groups[1].apply_action(), ActionStatus::Failed);
        observed.failures.insert(
            r.groups[1].apply_action(),
            "NodePool x exists and is not Spotwise's".into(),
        );
        let step = next_step(&r, &observed, t0());
        assert!(
            matches!(&step, Step::Fail(f) if f.contains("is not Spotwise's")),
            "{step:?}"
        );
        // Undoing deletes the pool that was applied, through the agent, then rolls back.
        r.failure = Some("x".into());
        assert_eq!(next_step(&r, &observed, t0()), Step::DeleteGroup(0));
        observed
            .actions
            .insert(r.groups[0].delete_action(), ActionStatus::Succeeded);
        assert_eq!(next_step(&r, &observed, t0()), Step::GroupDeleted(0));
    }

    #[test]
    fn karpenter_drains_obey_the_customer_pools_disruption_budgets() {
        let mut r = karpenter_rollout();
        for g in &mut r.groups {
            g.created = true;
        }
        r.status = RolloutStatus::Migrating;
        for node in &mut r.replaced {
            node.cordon_action = Some(format!("c-{}", node.name));
            node.drain_action = Some(format!("d-{}", node.name));
        }
        let mut observed = Observed::default();
        for node in &r.replaced {
            observed
                .actions
                .insert(node.cordon_action.clone().unwrap(), ActionStatus::Succeeded);
        }
        observed.disruptions_allowed.insert("general".into(), 0);
        assert!(
            matches!(next_step(&r, &observed, t0()), Step::Wait(w) if w.contains("general")),
            "a budget of 0 holds the drains"
        );
        observed.disruptions_allowed.insert("general".into(), 1);
        assert_eq!(next_step(&r, &observed, t0()), Step::Drain(0));
        // After the last drain Karpenter removes the node; the rollout verifies once a later
        // snapshot shows it gone.
        r.replaced[0].drained = true;
        r.released_at = Some(t0());
        let (mut snapshot, _) = karpenter_cluster();
        let later = t0() + Duration::minutes(2);
        let with_it = Observed {
            snapshot: Some((&snapshot, later)),
            ..Observed::default()
        };
        assert!(matches!(next_step(&r, &with_it, later), Step::Wait(w) if w.contains("Karpenter")));
        assert_eq!(
            next_step(&r, &with_it, t0() + KARPENTER_RELEASE_TIMEOUT),
            Step::Verify
        );
        let gone = r.replaced[0].name.clone();
        snapshot.nodes.retain(|n| n.name != gone);
        let mut without = Observed {
            snapshot: Some((&snapshot, later)),
            ..Observed::default()
        };
        assert_eq!(next_step(&r, &without, later), Step::Verify);

        // Placeholders that were made are released first, all at once, then the rollout
        // verifies; a release that failed would leave nodes held, so it fails the rollout.
        let (reserve, release) = (r.groups[0].reserve_action(), r.groups[0].release_action());
        without.actions.insert(reserve, ActionStatus::Succeeded);
        assert_eq!(next_step(&r, &without, later), Step::Release(0));
        without
            .actions
            .insert(release.clone(), ActionStatus::Queued);
        assert!(matches!(next_step(&r, &without, later), Step::Wait(w) if w.contains("release")));
        without
            .actions
            .insert(release.clone(), ActionStatus::Succeeded);
        assert_eq!(next_step(&r, &without, later), Step::Verify);
        without.actions.insert(release, ActionStatus::Failed);
        assert!(
            matches!(next_step(&r, &without, later), Step::Fail(f) if f.contains("not released"))
        );
    }

    #[test]
    fn the_backend_follows_the_policy_and_what_the_cluster_runs() {
        let (with_karpenter, _) = karpenter_cluster();
        let without = Snapshot::default();
        assert_eq!(
            choose_backend(RolloutBackend::Auto, &with_karpenter),
            Ok(Backend::Karpenter)
        );
        assert_eq!(
            choose_backend(RolloutBackend::Auto, &without),
            Ok(Backend::ManagedNodeGroups)
        );
        assert_eq!(
            choose_backend(RolloutBackend::ManagedNodeGroups, &with_karpenter),
            Ok(Backend::ManagedNodeGroups)
        );
        assert!(
            choose_backend(RolloutBackend::Karpenter, &without)
                .unwrap_err()
                .contains("Karpenter not installed")
        );
    }

    #[test]
    fn karpenter_pods_that_fell_to_the_customers_pools_are_moved_back_later_with_backoff() {
        let mut r = karpenter_rollout();
        r.status = RolloutStatus::Completed;
        let (mut snapshot, _) = karpenter_cluster();
        // Launched during the rollout from the customer's `general` pool: a fallback.
        let mut fallback = snapshot.nodes[0].clone();
        fallback.name = "k9".into();
        snapshot.nodes.push(fallback);
        let names: Vec<&str> = r
            .karpenter_fallbacks(&snapshot)
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["k9"]);
        assert_eq!(r.karpenter_retry_delay(), SPOT_RETRY_AFTER);
        assert!(r.retry_spot_karpenter(&snapshot, t0()));
        assert_eq!(r.status, RolloutStatus::Migrating);
        assert_eq!(r.replaced.last().unwrap().name, "k9");
        assert_eq!(r.replaced.last().unwrap().nodegroup, "general");
        assert_eq!(r.karpenter_retry_delay(), SPOT_RETRY_AFTER * 2);
        // Its cordon and drain ids are chosen next, as for any replaced node.
        assert_eq!(
            next_step(&r, &Observed::default(), t0()),
            Step::AssignActions
        );
        r.spot_retries = 9;
        assert_eq!(r.karpenter_retry_delay(), Duration::days(1));
        snapshot.nodes.retain(|n| n.name != "k9");
        r.status = RolloutStatus::Completed;
        r.replaced.pop();
        assert!(!r.retry_spot_karpenter(&snapshot, t0()));
        assert_eq!(r.spot_retries, 0);
    }
}
