//! What the platform stores about hibernation and scheduled runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_core::action::ScalableKind;
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

use crate::{Hibernation, UnknownZone, WeekMatrix, Zone};

/// Namespaces hibernation never scales down: the control plane's add-ons and the agent itself.
pub const PROTECTED_NAMESPACES: [&str; 2] = ["kube-system", "spotwise"];
/// The label EKS puts on the nodes of a managed node group.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";

/// What users set of a cluster's hibernation: the API's request body, and the stored
/// schedule's settings, so the two cannot drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HibernationSettings {
    pub enabled: bool,
    /// IANA time zone the matrix is read in, e.g. `Europe/Berlin`.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "Europe/Berlin", max_length = 64)
    )]
    pub time_zone: String,
    /// Seven strings, Monday first, of 24 characters: `1` awake, `0` asleep, per local hour.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::DayHours>, min_items = 7, max_items = 7))]
    pub awake: WeekMatrix,
    /// Scale the cluster's EKS managed node groups to zero while asleep (default on).
    #[serde(default = "on")]
    pub scale_node_groups: bool,
    /// Node groups kept running.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub exclude_node_groups: Vec<String>,
    /// Ask the agent to scale Deployments and StatefulSets to zero while asleep.
    #[serde(default)]
    pub scale_workloads: bool,
    /// Namespaces whose workloads are kept running (kube-system and spotwise always are).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub exclude_namespaces: Vec<String>,
    /// Workloads whose pods carry any of these labels are kept running (at most 50 pairs).
    #[serde(default)]
    pub exclude_labels: BTreeMap<String, String>,
    /// Ask the agent to cordon the nodes outside excluded node groups while asleep, so nothing
    /// is scheduled onto capacity about to go.
    #[serde(default)]
    pub cordon_nodes: bool,
}

fn on() -> bool {
    true
}

impl Default for HibernationSettings {
    /// Nothing set yet: disabled, always awake, UTC.
    fn default() -> Self {
        Self {
            enabled: false,
            time_zone: "UTC".into(),
            awake: WeekMatrix::always_awake(),
            scale_node_groups: on(),
            exclude_node_groups: Vec::new(),
            scale_workloads: false,
            exclude_namespaces: Vec::new(),
            exclude_labels: BTreeMap::new(),
            cordon_nodes: false,
        }
    }
}

/// A cluster's weekly hibernation schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HibernationSchedule {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    #[serde(flatten)]
    pub settings: HibernationSettings,
    /// A manual wake-up: the cluster stays awake until then, whatever the matrix says.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub wake_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl HibernationSchedule {
    pub fn hibernation(&self) -> Result<Hibernation, UnknownZone> {
        Ok(Hibernation {
            zone: Zone::new(&self.settings.time_zone)?,
            matrix: self.settings.awake.clone(),
        })
    }

    /// Whether a node may be cordoned: not already, and not in an excluded node group.
    pub fn may_cordon(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .get(NODEGROUP_LABEL)
            .is_none_or(|group| !self.settings.exclude_node_groups.contains(group))
    }

    /// Whether a workload in `namespace` whose pods carry `labels` may be put to sleep.
    pub fn may_scale(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        !PROTECTED_NAMESPACES.contains(&namespace)
            && !self
                .settings
                .exclude_namespaces
                .iter()
                .any(|n| n == namespace)
            && !self
                .settings
                .exclude_labels
                .iter()
                .any(|(k, v)| labels.get(k) == Some(v))
    }
}

/// One completed sleep of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SleepRecord {
    pub cluster_id: ClusterId,
    #[serde(with = "time::serde::rfc3339")]
    pub asleep_since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub woke_at: OffsetDateTime,
    pub hours: f64,
    /// What the cluster cost per hour awake when it went to sleep.
    pub awake_cost_hr: f64,
    pub saved_usd: f64,
    pub node_groups: Vec<SavedNodegroup>,
    pub workloads: usize,
    /// What could not be restored exactly, with why.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// What a scheduled run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Plan the cluster (and in `auto` mode act on the plan).
    Optimize,
    /// Re-read the cluster's account inventory.
    Discovery,
    /// Build and send the savings report of the current month so far.
    Report,
}

impl RunKind {
    /// The kind as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Optimize => "optimize",
            RunKind::Discovery => "discovery",
            RunKind::Report => "report",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    Active,
    /// Not run until resumed: by a user, or automatically after repeated failures.
    Paused,
}

/// A failing schedule is paused after this many failed runs in a row unless it says otherwise.
pub const DEFAULT_PAUSE_AFTER: u32 = 3;

/// What users set of a scheduled run: the API's request body, and the stored schedule's
/// settings, so the two cannot drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// The cluster the runs are for; a schedule cannot move to another cluster.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub cluster_id: ClusterId,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    pub kind: RunKind,
    /// Five fields (`minute hour day-of-month month day-of-week`) or `@daily` and the like.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "0 6 * * MON-FRI", min_length = 1)
    )]
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    #[serde(default = "utc")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub time_zone: String,
    /// Failed runs in a row that pause the schedule (default 3).
    #[serde(default = "default_pause_after")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub pause_after: u32,
}

fn utc() -> String {
    "UTC".into()
}

fn default_pause_after() -> u32 {
    DEFAULT_PAUSE_AFTER
}

/// A cron schedule of runs for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduledRun {
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub settings: ScheduleSettings,
    pub status: ScheduleStatus,
    #[serde(default)]
    pub paused_reason: Option<String>,
    /// Failed runs in a row; reaching `settings.pause_after` pauses the schedule.
    pub consecutive_failures: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_run_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_run_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// No outcome arrived within the run timeout.
    TimedOut,
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunRecord {
    pub run_id: String,
    pub schedule_id: String,
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub kind: RunKind,
    /// `schedule` or `manual:<key prefix>`.
    pub trigger: String,
    pub state: RunState,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub detail: Option<String>,
}

impl ScheduledRun {
    pub fn cron(&self) -> Result<crate::Cron, crate::CronError> {
        crate::Cron::parse(&self.settings.cron)
    }
}

/// Written by hibernation while it has a cluster asleep: what the cluster costs per hour
/// awake, which the cost function counts as saved for every sampled hour of the sleep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HibernationState {
    #[serde(with = "time::serde::rfc3339")]
    pub asleep_since: OffsetDateTime,
    pub awake_cost_hr: f64,
    /// Node groups scaled to zero, with the sizes waking restores.
    #[serde(default)]
    pub node_groups: Vec<SavedNodegroup>,
    /// Workloads the agent was asked to scale to zero.
    #[serde(default)]
    pub workloads: Vec<SleepingWorkload>,
    /// Nodes the agent was asked to cordon (and will be asked to uncordon).
    #[serde(default)]
    pub cordoned_nodes: Vec<String>,
    /// Set once every step of going to sleep was taken; until then each tick takes the steps
    /// still missing, so a tick that died halfway is finished by the next.
    #[serde(default)]
    pub complete: bool,
    /// What going to sleep could not do (a node group the role may not scale, say).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// A managed node group's scaling before hibernation took it to zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SavedNodegroup {
    pub name: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_size: i32,
}

/// A Deployment or StatefulSet put to sleep, and the scale action that did it (whose report
/// carries the replica count to restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SleepingWorkload {
    pub namespace: String,
    pub kind: ScalableKind,
    pub name: String,
    pub action_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_namespaces_and_exclusions_are_never_scaled() {
        let schedule: HibernationSchedule = serde_json::from_value(serde_json::json!({
            "tenant_id": "t1", "cluster_id": "c1", "enabled": true, "time_zone": "UTC",
            "awake": vec!["1".repeat(24); 7], "scale_node_groups": true, "scale_workloads": true,
            "exclude_namespaces": ["payments"], "exclude_labels": {"spotwise.io/keep": "true"},
            "updated_at": "2026-11-25T00:00:00Z"
        }))
        .unwrap();
        let none = BTreeMap::new();
        assert!(schedule.may_scale("shop", &none));
        assert!(!schedule.may_scale("kube-system", &none));
        assert!(!schedule.may_scale("spotwise", &none));
        assert!(!schedule.may_scale("payments", &none));
        let kept = BTreeMap::from([("spotwise.io/keep".to_owned(), "true".to_owned())]);
        assert!(!schedule.may_scale("shop", &kept));
        assert!(schedule.hibernation().is_ok());
        let group = |name: &str| BTreeMap::from([(NODEGROUP_LABEL.to_owned(), name.to_owned())]);
        let mut excluding = schedule;
        excluding.settings.exclude_node_groups = vec!["system".into()];
        assert!(excluding.may_cordon(&group("general")));
        assert!(!excluding.may_cordon(&group("system")));
        assert!(
            excluding.may_cordon(&none),
            "Karpenter and self-managed nodes too"
        );
    }
}
