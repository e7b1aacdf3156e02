//! A right-sizing change as it is applied and watched: the requests before and after, the
//! agent actions that set them, and the watch that reverts a change the workload does not
//! survive (an OOM kill, or restarts beyond what its pods had before).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_core::rightsizing::{ContainerResources, ControllerRef};
use spotwise_core::snapshot::{Snapshot, SnapshotPod};
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

use crate::rightsizing::{ContainerChange, WorkloadRightSizing};

/// A revert raises the workload's memory headroom by this much, in percent.
pub const REVERT_MEM_HEADROOM_STEP: u32 = 25;
/// Extra memory headroom reverts can add at most, in percent.
pub const MAX_EXTRA_MEM_HEADROOM: u32 = 100;
/// `auto` mode changes a workload at most this often, so hourly plans do not chase noise.
pub const AUTO_COOLDOWN: time::Duration = time::Duration::days(7);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Waiting for the scheduler to send the patch.
    Pending,
    /// The patch is with the agent.
    Applying,
    /// Applied; its pods are watched until `watch_until`.
    Watching,
    /// The workload regressed; the patch back to the old requests is with the agent.
    Reverting,
    /// The watch ended without a regression.
    Kept,
    Reverted,
    /// The patch, or the revert, failed.
    Failed,
}

impl ChangeStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ChangeStatus::Kept | ChangeStatus::Reverted | ChangeStatus::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Pending => "pending",
            ChangeStatus::Applying => "applying",
            ChangeStatus::Watching => "watching",
            ChangeStatus::Reverting => "reverting",
            ChangeStatus::Kept => "kept",
            ChangeStatus::Reverted => "reverted",
            ChangeStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeChange {
    pub id: String,
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub workload: ControllerRef,
    pub containers: Vec<ContainerChange>,
    pub status: ChangeStatus,
    pub reason: String,
    /// Who asked: an API key or user, or `optimizer:auto`.
    pub requested_by: String,
    pub monthly_saving: f64,
    /// The highest restart count any of the workload's containers had when it was asked for.
    pub baseline_restarts: u32,
    pub watch_minutes: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default)]
    pub action_id: Option<String>,
    #[serde(default)]
    pub revert_action_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub applied_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub watch_until: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The last snapshot the watch read, so each is read once.
    #[serde(default)]
    pub checked_snapshot: Option<String>,
    /// When that snapshot was taken: a change is kept only once a snapshot from the end of its
    /// watch shows no regression.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub checked_taken_at: Option<OffsetDateTime>,
}

fn pods_of<'a>(
    snapshot: &'a Snapshot,
    workload: &'a ControllerRef,
) -> impl Iterator<Item = &'a SnapshotPod> + 'a {
    snapshot
        .pods
        .iter()
        .chain(&snapshot.daemon_pods)
        .filter(move |p| ControllerRef::of(&p.workload).as_ref() == Some(workload))
}

impl ResizeChange {
    pub fn new(
        id: String,
        (tenant_id, cluster_id): (TenantId, ClusterId),
        recommendation: &WorkloadRightSizing,
        snapshot: &Snapshot,
        requested_by: &str,
        watch_minutes: u32,
        now: OffsetDateTime,
    ) -> Self {
        let baseline_restarts = pods_of(snapshot, &recommendation.workload)
            .flat_map(|p| p.containers.iter().map(|c| c.restarts))
            .max()
            .unwrap_or(0);
        Self {
            id,
            tenant_id,
            cluster_id,
            workload: recommendation.workload.clone(),
            containers: recommendation
                .containers
                .iter()
                .filter(|c| c.after != c.before)
                .cloned()
                .collect(),
            status: ChangeStatus::Pending,
            reason: recommendation.reason.clone(),
            requested_by: requested_by.to_owned(),
            monthly_saving: recommendation.monthly_saving,
            baseline_restarts,
            watch_minutes,
            created_at: now,
            updated_at: now,
            action_id: None,
            revert_action_id: None,
            applied_at: None,
            watch_until: None,
            finished_at: None,
            checked_snapshot: None,
            checked_taken_at: None,
        }
    }

    /// Whether the snapshots read cover the whole watch.
    pub fn watched_through(&self) -> bool {
        self.watch_until
            .zip(self.checked_taken_at)
            .is_some_and(|(until, seen)| seen >= until)
    }

    pub fn before(&self) -> Vec<ContainerResources> {
        self.containers.iter().map(|c| c.before.clone()).collect()
    }

    pub fn after(&self) -> Vec<ContainerResources> {
        self.containers.iter().map(|c| c.after.clone()).collect()
    }

    /// Whether the pod runs the changed requests (a rolling update replaces pods one by one).
    fn runs_after(&self, pod: &SnapshotPod) -> bool {
        self.containers.iter().all(|change| {
            pod.containers.iter().any(|c| {
                c.resources.name == change.after.name
                    && c.resources.cpu_request_m == change.after.cpu_request_m
                    && c.resources.mem_request_mib == change.after.mem_request_mib
            })
        })
    }

    /// Pods on the new requests, and all of the workload's pods.
    pub fn rolled(&self, snapshot: &Snapshot) -> (usize, usize) {
        pods_of(snapshot, &self.workload).fold((0, 0), |(on, all), p| {
            (on + usize::from(self.runs_after(p)), all + 1)
        })
    }

    /// Why the change must be undone, if a pod on the new requests was OOM-killed or restarted
    /// more than any of the workload's pods had before.
    pub fn regression(&self, snapshot: &Snapshot) -> Option<String> {
        pods_of(snapshot, &self.workload)
            .filter(|p| self.runs_after(p))
            .find_map(|pod| {
                let container = pod.containers.iter().find(|c| c.oom_killed)?;
                Some(format!(
                    "container {} of pod {} was OOMKilled on {} MiB of memory requested",
                    container.resources.name,
                    pod.spec.name,
                    container.resources.mem_request_mib
                ))
            })
            .or_else(|| {
                pods_of(snapshot, &self.workload)
                    .filter(|p| self.runs_after(p))
                    .find_map(|pod| {
                        let container = pod
                            .containers
                            .iter()
                            .find(|c| c.restarts > self.baseline_restarts)?;
                        Some(format!(
                            "container {} of pod {} restarted {} times (its pods had at most {} before)",
                            container.resources.name,
                            pod.spec.name,
                            container.restarts,
                            self.baseline_restarts
                        ))
                    })
            })
    }
}

/// What a cluster remembers per workload between changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResizeState {
    /// Keyed `namespace/Kind/name`.
    pub workloads: BTreeMap<String, WorkloadState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadState {
    /// The change in progress, if any: one at a time per workload.
    #[serde(default)]
    pub active: Option<String>,
    /// Added to the policy's memory headroom after reverts.
    #[serde(default)]
    pub extra_mem_headroom_pct: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_change_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub reverts: u32,
}

impl ResizeState {
    pub fn extra_mem_headroom(&self) -> BTreeMap<String, u32> {
        self.workloads
            .iter()
            .filter(|(_, w)| w.extra_mem_headroom_pct > 0)
            .map(|(k, w)| (k.clone(), w.extra_mem_headroom_pct))
            .collect()
    }

    pub fn active(&self, key: &str) -> Option<&str> {
        self.workloads.get(key)?.active.as_deref()
    }

    /// Whether `auto` mode may change the workload now.
    pub fn auto_allowed(&self, key: &str, now: OffsetDateTime) -> bool {
        self.workloads.get(key).is_none_or(|w| {
            w.active.is_none() && w.last_change_at.is_none_or(|at| now - at >= AUTO_COOLDOWN)
        })
    }

    /// The workload's change ended; a revert raises its memory headroom.
    pub fn finish(&mut self, key: &str, reverted: bool, now: OffsetDateTime) {
        let state = self.workloads.entry(key.to_owned()).or_default();
        state.active = None;
        state.last_change_at = Some(now);
        if reverted {
            state.reverts += 1;
            state.extra_mem_headroom_pct = (state.extra_mem_headroom_pct
                + REVERT_MEM_HEADROOM_STEP)
                .min(MAX_EXTRA_MEM_HEADROOM);
        }
    }
}
