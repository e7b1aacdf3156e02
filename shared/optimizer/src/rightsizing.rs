//! Container request recommendations from observed usage: CPU follows a high percentile (CPU
//! is compressible, a short burst above it only throttles), memory follows the peak plus
//! headroom (memory is not: going over the limit kills the container).
//!
//! Two inputs: raw samples per pod container (the what-if CLI's input), and, on the platform,
//! each workload's 14-day [`UsageHistory`], from which [`recommend_workloads`] sizes each
//! Deployment, StatefulSet and DaemonSet under the cluster's policy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use spotwise_core::rightsizing::{
    ANNOTATION, ContainerResources, ControllerRef, LimitPolicy, RightSizingMode,
    RightSizingSettings, container_key,
};
use spotwise_core::snapshot::{Snapshot, SnapshotPod};

use crate::model::{ContainerUsage, PodSpec, RightSizingPolicy};
use crate::plan::{HOURS_PER_MONTH, Plan, RightSizing};
use crate::usage::{UsageHistory, UsageSummary};

/// A recommendation needs this many hours of usage (and a full weekday among them).
pub const MIN_HISTORY_HOURS: u32 = 24;
/// OpenCost's default price of a vCPU-hour over a GiB-hour: how a node's price is split
/// between what pods request of each.
const CPU_TO_GIB_PRICE: f64 = 0.031611 / 0.004237;

/// Where a workload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadStatus {
    /// A change is recommended and can be applied.
    Ready,
    /// Usage and requests agree within the policy's minimum change.
    Unchanged,
    /// Not enough usage yet.
    InsufficientHistory,
    /// Left alone: policy, annotation, exclusion or an autoscaler.
    Skipped,
}

/// One container of a workload: its resources now and as recommended, and the usage behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerChange {
    pub before: ContainerResources,
    pub after: ContainerResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageSummary>,
    /// Resources left as they are, with why (`cpu: scaled on by HPA`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

/// A workload's right-sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRightSizing {
    pub workload: ControllerRef,
    /// `namespace/Kind/name`.
    pub key: String,
    pub replicas: u32,
    pub mode: RightSizingMode,
    pub status: WorkloadStatus,
    pub reason: String,
    pub containers: Vec<ContainerChange>,
    /// The requests it frees, valued at the plan's price per requested vCPU and GiB.
    pub monthly_saving: f64,
}

impl WorkloadRightSizing {
    /// Freed (negative: added) requests over all replicas, as (millicores, MiB).
    fn freed(&self) -> (i64, i64) {
        self.containers.iter().fold((0, 0), |(cpu, mem), c| {
            let replicas = i64::from(self.replicas);
            (
                cpu + (c.before.cpu_request_m as i64 - c.after.cpu_request_m as i64) * replicas,
                mem + (c.before.mem_request_mib as i64 - c.after.mem_request_mib as i64) * replicas,
            )
        })
    }
}

/// The workload's mode: its pods' annotation, else the policy's entry for it, else the
/// cluster's. An annotation Spotwise cannot read turns it off.
fn mode_of(
    pod: &SnapshotPod,
    key: &str,
    settings: &RightSizingSettings,
) -> (RightSizingMode, Option<String>) {
    if let Some(value) = pod.workload.annotations.get(ANNOTATION) {
        return match RightSizingMode::parse(value) {
            Some(mode) => (mode, Some(format!("annotation {ANNOTATION}: \"{value}\""))),
            None => (
                RightSizingMode::Off,
                Some(format!(
                    "annotation {ANNOTATION} has an unknown value \"{value}\" (off, recommend or auto)"
                )),
            ),
        };
    }
    match settings.workloads.get(key) {
        Some(mode) => (*mode, Some("the policy's entry for the workload".into())),
        None => (settings.mode, None),
    }
}

/// Sizes every Deployment, StatefulSet and DaemonSet of the snapshot from its history.
/// `extra_mem_headroom_pct` raises memory headroom per workload key (after a revert).
pub fn recommend_workloads(
    snapshot: &Snapshot,
    history: &UsageHistory,
    settings: &RightSizingSettings,
    policy: &RightSizingPolicy,
    extra_mem_headroom_pct: &BTreeMap<String, u32>,
) -> Vec<WorkloadRightSizing> {
    let mut workloads: BTreeMap<ControllerRef, (u32, &SnapshotPod)> = BTreeMap::new();
    for pod in snapshot.pods.iter().chain(&snapshot.daemon_pods) {
        if let Some(workload) = ControllerRef::of(&pod.workload) {
            workloads.entry(workload).or_insert((0, pod)).0 += 1;
        }
    }
    workloads
        .into_iter()
        .map(|(workload, (replicas, pod))| {
            let key = workload.to_string();
            let (mode, mode_source) = mode_of(pod, &key, settings);
            let mut result = WorkloadRightSizing {
                key: key.clone(),
                replicas,
                mode,
                status: WorkloadStatus::Skipped,
                reason: String::new(),
                containers: Vec::new(),
                monthly_saving: 0.0,
                workload,
            };
            let excluded_label = settings
                .excluded_labels
                .iter()
                .find(|(k, v)| pod.workload.labels.get(*k) == Some(*v));
            if mode == RightSizingMode::Off {
                result.reason = format!(
                    "right-sizing is off ({})",
                    mode_source.as_deref().unwrap_or("the cluster's policy")
                );
            } else if settings
                .excluded_namespaces
                .contains(&result.workload.namespace)
            {
                result.reason = format!(
                    "namespace {} is excluded by policy",
                    result.workload.namespace
                );
            } else if let Some((k, v)) = excluded_label {
                result.reason = format!("pods labelled {k}={v} are excluded by policy");
            } else if pod.containers.is_empty() {
                result.reason = "the snapshot has no container details for its pods".into();
            } else {
                size(
                    &mut result,
                    pod,
                    snapshot,
                    history,
                    settings,
                    policy,
                    extra_mem_headroom_pct.get(&key).copied().unwrap_or(0),
                );
            }
            result
        })
        .collect()
}

fn size(
    result: &mut WorkloadRightSizing,
    pod: &SnapshotPod,
    snapshot: &Snapshot,
    history: &UsageHistory,
    settings: &RightSizingSettings,
    policy: &RightSizingPolicy,
    extra_mem_headroom_pct: u32,
) {
    let autoscaled: BTreeSet<&str> = snapshot
        .hpas
        .iter()
        .filter(|h| h.targets(&result.workload))
        .flat_map(|h| h.resources.iter().map(String::as_str))
        .collect();
    if autoscaled.contains("cpu") && autoscaled.contains("memory") {
        result.reason = "an HPA scales it on cpu and memory".into();
        return;
    }
    let summaries: Vec<Option<UsageSummary>> = pod
        .containers
        .iter()
        .map(|c| history.summary(&container_key(&result.workload, &c.resources.name)))
        .collect();
    let thinnest = summaries
        .iter()
        .map(|s| s.as_ref().map_or((0, false), |s| (s.hours, s.full_weekday)))
        .min_by_key(|&(hours, weekday)| (weekday, hours))
        .unwrap_or((0, false));
    if thinnest.0 < MIN_HISTORY_HOURS || !thinnest.1 {
        result.status = WorkloadStatus::InsufficientHistory;
        result.reason = format!(
            "needs {MIN_HISTORY_HOURS} h of usage including a full weekday; has {} h{}",
            thinnest.0,
            if thinnest.1 {
                ""
            } else {
                ", no full weekday yet"
            }
        );
        return;
    }
    let mem_headroom = settings.mem_headroom_pct + extra_mem_headroom_pct;
    let mut notes = Vec::new();
    for (container, summary) in pod.containers.iter().zip(summaries) {
        let Some(usage) = summary else { continue };
        let before = container.resources.clone();
        let mut after = before.clone();
        let mut held = Vec::new();
        let worth = |from: u64, to: u64| {
            from.abs_diff(to) * 100 > from.max(1) * u64::from(policy.min_change_pct)
        };
        let cpu = (usage.cpu_p95_m * u64::from(100 + settings.cpu_headroom_pct))
            .div_ceil(100)
            .max(policy.min_cpu_m);
        let mem = (usage.mem_peak_mib * u64::from(100 + mem_headroom))
            .div_ceil(100)
            .max(policy.min_mem_mib);
        if autoscaled.contains("cpu") {
            held.push("cpu: an HPA scales on it".to_owned());
        } else if before.cpu_request_m == 0 {
            held.push("cpu: no request set".to_owned());
        } else if worth(before.cpu_request_m, cpu) {
            after.cpu_request_m = cpu;
        }
        if autoscaled.contains("memory") {
            held.push("memory: an HPA scales on it".to_owned());
        } else if before.mem_request_mib == 0 {
            held.push("memory: no request set".to_owned());
        } else if worth(before.mem_request_mib, mem) {
            after.mem_request_mib = mem;
        }
        match settings.limits {
            LimitPolicy::KeepRatio => {
                let scale = |limit: Option<u64>, from: u64, to: u64| {
                    limit.map(|l| {
                        if from == to || from == 0 {
                            l
                        } else {
                            (u128::from(to) * u128::from(l)).div_ceil(u128::from(from)) as u64
                        }
                    })
                };
                after.cpu_limit_m = scale(
                    before.cpu_limit_m,
                    before.cpu_request_m,
                    after.cpu_request_m,
                );
                after.mem_limit_mib = scale(
                    before.mem_limit_mib,
                    before.mem_request_mib,
                    after.mem_request_mib,
                );
            }
            LimitPolicy::Unchanged => {
                if let Some(limit) = before.cpu_limit_m {
                    after.cpu_request_m = after.cpu_request_m.min(limit);
                }
                if let Some(limit) = before.mem_limit_mib {
                    after.mem_request_mib = after.mem_request_mib.min(limit);
                }
            }
        }
        if after != before {
            notes.push(format!(
                "{}: cpu {}m -> {}m (p95 {}m + {}%), memory {} MiB -> {} MiB (peak {} MiB + {}%)",
                before.name,
                before.cpu_request_m,
                after.cpu_request_m,
                usage.cpu_p95_m,
                settings.cpu_headroom_pct,
                before.mem_request_mib,
                after.mem_request_mib,
                usage.mem_peak_mib,
                mem_headroom
            ));
        }
        result.containers.push(ContainerChange {
            before,
            after,
            usage: Some(usage),
            held,
        });
    }
    if notes.is_empty() {
        result.status = WorkloadStatus::Unchanged;
        result.reason = format!(
            "requests are within {}% of usage plus headroom",
            policy.min_change_pct
        );
    } else {
        result.status = WorkloadStatus::Ready;
        result.reason = notes.join("; ");
    }
}

/// The pod-level changes of the ready workloads, for planning the cluster as if applied.
pub fn pod_changes(
    snapshot: &Snapshot,
    workloads: &[WorkloadRightSizing],
) -> Vec<ContainerRecommendation> {
    let ready: HashMap<&ControllerRef, &WorkloadRightSizing> = workloads
        .iter()
        .filter(|w| w.status == WorkloadStatus::Ready)
        .map(|w| (&w.workload, w))
        .collect();
    snapshot
        .pods
        .iter()
        .filter_map(|pod| Some((pod, *ready.get(&ControllerRef::of(&pod.workload)?)?)))
        .flat_map(|(pod, workload)| {
            workload
                .containers
                .iter()
                .filter(|c| c.after != c.before)
                .map(|c| ContainerRecommendation {
                    pod: pod.spec.name.clone(),
                    container: c.before.name.clone(),
                    cpu_request_m: c.before.cpu_request_m,
                    recommended_cpu_m: c.after.cpu_request_m,
                    mem_request_mib: c.before.mem_request_mib,
                    recommended_mem_mib: c.after.mem_request_mib,
                    samples: c
                        .usage
                        .as_ref()
                        .map_or(0, |u| usize::try_from(u.samples).unwrap_or(usize::MAX)),
                    reason: workload.reason.clone(),
                })
        })
        .collect()
}

/// Puts the workloads into the plan's right-sizing, each valued at what its freed requests
/// cost in this plan: the plan's price split over the vCPUs and GiB it buys at OpenCost's
/// ratio.
pub fn attach(plan: &mut Plan, workloads: Vec<WorkloadRightSizing>, capacity: (u64, u64)) {
    let (cpu_m, mem_mib) = capacity;
    let weighted = cpu_m as f64 / 1000.0 * CPU_TO_GIB_PRICE + mem_mib as f64 / 1024.0;
    let per_gib_hr = if weighted > 0.0 {
        plan.cost_hr / weighted
    } else {
        0.0
    };
    let per_vcpu_hr = per_gib_hr * CPU_TO_GIB_PRICE;
    let workloads: Vec<WorkloadRightSizing> = workloads
        .into_iter()
        .map(|mut w| {
            if w.status == WorkloadStatus::Ready {
                let (cpu, mem) = w.freed();
                w.monthly_saving = (cpu as f64 / 1000.0 * per_vcpu_hr
                    + mem as f64 / 1024.0 * per_gib_hr)
                    * HOURS_PER_MONTH;
            }
            w
        })
        .collect();
    let right_sizing = plan.right_sizing.get_or_insert_with(|| RightSizing {
        recommendations: Vec::new(),
        projected_cost_hr: plan.cost_hr,
        projected_monthly_saving: 0.0,
        workloads: Vec::new(),
    });
    right_sizing.workloads = workloads;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecommendation {
    pub pod: String,
    pub container: String,
    pub cpu_request_m: u64,
    pub recommended_cpu_m: u64,
    pub mem_request_mib: u64,
    pub recommended_mem_mib: u64,
    pub samples: usize,
    pub reason: String,
}

/// Nearest-rank percentile of `samples` (unsorted); `None` when empty.
pub fn percentile(samples: &[u64], pct: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((pct.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

pub fn recommend(
    usage: &[ContainerUsage],
    policy: &RightSizingPolicy,
) -> Vec<ContainerRecommendation> {
    usage
        .iter()
        .filter_map(|u| {
            let samples = u.cpu_samples_m.len().min(u.mem_samples_mib.len());
            if samples < policy.min_samples {
                return None;
            }
            let cpu = percentile(&u.cpu_samples_m, policy.cpu_percentile)?.max(policy.min_cpu_m);
            let peak = u.mem_samples_mib.iter().copied().max()?;
            let mem = (peak * (100 + u64::from(policy.mem_headroom_pct))).div_ceil(100).max(policy.min_mem_mib);
            let changed = |from: u64, to: u64| from.abs_diff(to) * 100 > from.max(1) * u64::from(policy.min_change_pct);
            if !changed(u.cpu_request_m, cpu) && !changed(u.mem_request_mib, mem) {
                return None;
            }
            Some(ContainerRecommendation {
                pod: u.pod.clone(),
                container: u.container.clone(),
                cpu_request_m: u.cpu_request_m,
                recommended_cpu_m: cpu,
                mem_request_mib: u.mem_request_mib,
                recommended_mem_mib: mem,
                samples,
                reason: format!(
                    "p{} cpu over {samples} samples is {cpu}m (requested {}m); peak memory {peak} MiB + {}% headroom is {mem} MiB (requested {} MiB)",
                    policy.cpu_percentile, u.cpu_request_m, policy.mem_headroom_pct, u.mem_request_mib
                ),
            })
        })
        .collect()
}

/// Pods with their requests changed by the recommendations (container deltas summed per pod).
pub fn apply(pods: &[PodSpec], recommendations: &[ContainerRecommendation]) -> Vec<PodSpec> {
    let mut delta: HashMap<&str, (i64, i64)> = HashMap::new();
    for r in recommendations {
        let entry = delta.entry(r.pod.as_str()).or_default();
        entry.0 += r.recommended_cpu_m as i64 - r.cpu_request_m as i64;
        entry.1 += r.recommended_mem_mib as i64 - r.mem_request_mib as i64;
    }
    pods.iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(&(cpu, mem)) = delta.get(p.name.as_str()) {
                p.cpu_m = p.cpu_m.saturating_add_signed(cpu);
                p.mem_mib = p.mem_mib.saturating_add_signed(mem);
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu: Vec<u64>, mem: Vec<u64>) -> ContainerUsage {
        ContainerUsage {
            pod: "web/api-1".into(),
            container: "api".into(),
            cpu_request_m: 1000,
            mem_request_mib: 2048,
            cpu_samples_m: cpu,
            mem_samples_mib: mem,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 95.0), Some(95));
        assert_eq!(percentile(&s, 100.0), Some(100));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn overprovisioned_container_is_cut_to_p95_and_peak_plus_headroom() {
        let cpu: Vec<u64> = (1..=20).map(|i| i * 10).collect(); // p95 = 190
        let mem = vec![400; 20];
        let recs = recommend(&[usage(cpu, mem)], &RightSizingPolicy::default());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].recommended_cpu_m, 190);
        assert_eq!(recs[0].recommended_mem_mib, 460);
    }

    #[test]
    fn minimums_small_changes_and_thin_data_are_respected() {
        let policy = RightSizingPolicy::default();
        let idle = recommend(&[usage(vec![0; 20], vec![1; 20])], &policy);
        assert_eq!(idle[0].recommended_cpu_m, policy.min_cpu_m);
        assert_eq!(idle[0].recommended_mem_mib, policy.min_mem_mib);
        // Within 10% of the request on both: no recommendation.
        assert!(recommend(&[usage(vec![950; 20], vec![1800; 20])], &policy).is_empty());
        assert!(recommend(&[usage(vec![1; 5], vec![1; 5])], &policy).is_empty());
    }

    #[test]
    fn applying_sums_container_changes_per_pod() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!(
            {"name":"web/api-1","cpu_m":1500,"mem_mib":3072,"spot_ok":true}))
        .unwrap();
        let recs = recommend(
            &[usage(vec![100; 20], vec![400; 20])],
            &RightSizingPolicy::default(),
        );
        let applied = apply(&[pod], &recs);
        assert_eq!(applied[0].cpu_m, 600);
        assert_eq!(applied[0].mem_mib, 3072 - 2048 + 460);
    }
}
