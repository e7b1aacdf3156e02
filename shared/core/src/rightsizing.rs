//! Right-sizing as the agent, the platform and the API share it: the usage sketch the agent
//! fills per workload container and hour, the controllers whose pod template Spotwise may
//! patch, the resources a patch sets, and the per-cluster policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::snapshot::WorkloadPod;

/// Adjacent sketch buckets differ by this factor, so a percentile read from a sketch is at
/// most 4% above the true sample.
const GAMMA: f64 = 1.04;
/// Containers one patch may set (a pod template rarely has more than a handful).
pub const MAX_PATCH_CONTAINERS: usize = 32;
/// Workload containers one hour of usage may carry; the agent stops adding new ones there.
pub const MAX_USAGE_CONTAINERS: usize = 5_000;
/// Complete hours of usage one snapshot carries (the platform folds each once).
pub const MAX_USAGE_HOURS: usize = 6;
/// The annotation with which a workload's pods set their own right-sizing mode.
pub const ANNOTATION: &str = "spotwise.io/rightsizing";

/// A mergeable summary of usage samples: cpu in log buckets, memory as its peak.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSketch {
    /// Samples per bucket; bucket `i` holds cpu values in (γ^(i-1), γ^i] millicores, bucket 0
    /// those of at most 1m.
    pub cpu: BTreeMap<u16, u32>,
    pub mem_peak_mib: u64,
    pub samples: u32,
}

fn bucket(cpu_m: u64) -> u16 {
    if cpu_m <= 1 {
        return 0;
    }
    // A few ulps below the boundary, so a value equal to γ^i lands in bucket i.
    let index = ((cpu_m as f64).ln() / GAMMA.ln() - 1e-9).ceil();
    u16::try_from(index as u64).unwrap_or(u16::MAX)
}

fn bucket_value(index: u16) -> u64 {
    (GAMMA.powi(i32::from(index)) + 1e-9).floor() as u64
}

impl UsageSketch {
    pub fn add(&mut self, cpu_m: u64, mem_mib: u64) {
        *self.cpu.entry(bucket(cpu_m)).or_default() += 1;
        self.mem_peak_mib = self.mem_peak_mib.max(mem_mib);
        self.samples = self.samples.saturating_add(1);
    }

    pub fn merge(&mut self, other: &UsageSketch) {
        for (&b, &n) in &other.cpu {
            let slot = self.cpu.entry(b).or_default();
            *slot = slot.saturating_add(n);
        }
        self.mem_peak_mib = self.mem_peak_mib.max(other.mem_peak_mib);
        self.samples = self.samples.saturating_add(other.samples);
    }

    /// The nearest-rank `pct` percentile of cpu, as its bucket's upper bound (so never below
    /// the sample it stands for); `None` without samples.
    pub fn cpu_percentile(&self, pct: f64) -> Option<u64> {
        let total: u64 = self.cpu.values().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((pct.clamp(0.0, 100.0) / 100.0) * total as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (&b, &n) in &self.cpu {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_value(b));
            }
        }
        self.cpu.keys().next_back().map(|&b| bucket_value(b))
    }
}

/// One UTC hour of usage, per workload container ([`container_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHour {
    /// Unix seconds of the hour's start.
    pub hour: i64,
    pub containers: BTreeMap<String, UsageSketch>,
}

/// `namespace/Kind/name/container`: none of the parts can contain `/`.
pub fn container_key(workload: &ControllerRef, container: &str) -> String {
    format!("{workload}/{container}")
}

/// The controllers whose pod template a right-sizing patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ControllerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl ControllerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerKind::Deployment => "Deployment",
            ControllerKind::StatefulSet => "StatefulSet",
            ControllerKind::DaemonSet => "DaemonSet",
        }
    }

    /// The resource's plural under `/apis/apps/v1`.
    pub fn plural(self) -> &'static str {
        match self {
            ControllerKind::Deployment => "deployments",
            ControllerKind::StatefulSet => "statefulsets",
            ControllerKind::DaemonSet => "daemonsets",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "Deployment" => Some(ControllerKind::Deployment),
            "StatefulSet" => Some(ControllerKind::StatefulSet),
            "DaemonSet" => Some(ControllerKind::DaemonSet),
            _ => None,
        }
    }
}

/// A Deployment, StatefulSet or DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControllerRef {
    pub namespace: String,
    pub kind: ControllerKind,
    pub name: String,
}

impl std::fmt::Display for ControllerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind.as_str(), self.name)
    }
}

impl ControllerRef {
    /// The controller whose template made the pod, when it is one right-sizing can patch.
    pub fn of(pod: &WorkloadPod) -> Option<Self> {
        let (kind, name) = pod.controller()?;
        Some(Self {
            namespace: pod.namespace.clone(),
            kind: ControllerKind::from_kind(&kind)?,
            name,
        })
    }

    /// From its `namespace/Kind/name` text.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        let (namespace, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || !crate::ids::is_dns_label(namespace)
            || !crate::ids::is_dns_subdomain(name)
        {
            return None;
        }
        Some(Self {
            namespace: namespace.to_owned(),
            kind: ControllerKind::from_kind(kind)?,
            name: name.to_owned(),
        })
    }
}

/// One container's requests and limits; a limit of `None` is absent (a patch leaves it so).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContainerResources {
    pub name: String,
    pub cpu_request_m: u64,
    pub mem_request_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_m: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit_mib: Option<u64>,
}

/// What Spotwise does with a workload's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RightSizingMode {
    /// Nothing: no recommendation, no change.
    Off,
    /// Recommendations, applied when someone applies them.
    #[default]
    Recommend,
    /// Recommendations applied as soon as they are ready.
    Auto,
}

impl RightSizingMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(Self::Off),
            "recommend" => Some(Self::Recommend),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// How a patch treats limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LimitPolicy {
    /// Each limit keeps its ratio to its request.
    #[default]
    KeepRatio,
    /// Limits stay as they are (a request is never raised above its limit).
    Unchanged,
}

/// A cluster's right-sizing policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct RightSizingSettings {
    pub mode: RightSizingMode,
    /// Namespaces whose workloads are left alone (at most 100).
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub excluded_namespaces: Vec<String>,
    /// Workloads whose pods carry any of these labels are left alone (at most 20).
    pub excluded_labels: BTreeMap<String, String>,
    /// Per-workload modes, keyed `namespace/Kind/name` (at most 500); the workload's
    /// `spotwise.io/rightsizing` pod annotation wins over both.
    pub workloads: BTreeMap<String, RightSizingMode>,
    pub limits: LimitPolicy,
    /// Added to p95 cpu, in percent (0 to 200).
    #[cfg_attr(feature = "openapi", schema(maximum = 200))]
    pub cpu_headroom_pct: u32,
    /// Added to peak memory, in percent (0 to 200); a workload reverted after an OOM kill
    /// gets more.
    #[cfg_attr(feature = "openapi", schema(maximum = 200))]
    pub mem_headroom_pct: u32,
    /// How long a change is watched for OOM kills and restarts before it stands (15 to 10,080
    /// minutes).
    #[cfg_attr(feature = "openapi", schema(minimum = 15, maximum = 10080))]
    pub watch_minutes: u32,
}

impl Default for RightSizingSettings {
    fn default() -> Self {
        Self {
            mode: RightSizingMode::Recommend,
            excluded_namespaces: vec!["kube-system".into()],
            excluded_labels: BTreeMap::new(),
            workloads: BTreeMap::new(),
            limits: LimitPolicy::KeepRatio,
            cpu_headroom_pct: 10,
            mem_headroom_pct: 15,
            watch_minutes: 60,
        }
    }
}

/// A HorizontalPodAutoscaler's target and the resources it scales on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hpa {
    pub namespace: String,
    pub target_kind: String,
    pub target_name: String,
    /// `cpu` and/or `memory`: requests of these set its utilisation, so right-sizing them
    /// would move the autoscaler's target.
    pub resources: Vec<String>,
}

impl Hpa {
    pub fn parse(item: &serde_json::Value) -> Option<Self> {
        let spec = &item["spec"];
        let mut resources: Vec<String> = spec["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| match m["type"].as_str()? {
                "Resource" => m["resource"]["name"].as_str(),
                "ContainerResource" => m["containerResource"]["name"].as_str(),
                _ => None,
            })
            .map(str::to_owned)
            .collect();
        // autoscaling/v1 and a v2 HPA without metrics scale on cpu.
        if spec.get("targetCPUUtilizationPercentage").is_some()
            || spec.get("metrics").is_none_or(serde_json::Value::is_null)
        {
            resources.push("cpu".into());
        }
        resources.sort();
        resources.dedup();
        Some(Self {
            namespace: item["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            target_kind: spec["scaleTargetRef"]["kind"].as_str()?.to_owned(),
            target_name: spec["scaleTargetRef"]["name"].as_str()?.to_owned(),
            resources,
        })
    }

    pub fn targets(&self, workload: &ControllerRef) -> bool {
        self.namespace == workload.namespace
            && self.target_kind == workload.kind.as_str()
            && self.target_name == workload.name
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sketch_percentiles_are_within_four_percent_above() {
        let mut sketch = UsageSketch::default();
        for v in 1..=1000u64 {
            sketch.add(v, v / 2);
        }
        for (pct, exact) in [(50.0, 500u64), (95.0, 950), (99.0, 990), (100.0, 1000)] {
            let got = sketch.cpu_percentile(pct).unwrap();
            assert!(
                got >= exact && got as f64 <= exact as f64 * GAMMA,
                "p{pct}: {got} vs {exact}"
            );
        }
        assert_eq!(sketch.mem_peak_mib, 500);
        assert_eq!(sketch.samples, 1000);
        assert_eq!(UsageSketch::default().cpu_percentile(95.0), None);
    }

    #[test]
    fn merged_sketches_read_as_one() {
        let (mut a, mut b, mut all) = Default::default();
        for v in [5u64, 80, 300, 7, 1200] {
            UsageSketch::add(&mut a, v, v);
            UsageSketch::add(&mut all, v, v);
        }
        for v in [2u64, 40, 4000] {
            UsageSketch::add(&mut b, v, v);
            UsageSketch::add(&mut all, v, v);
        }
        let mut merged: UsageSketch = a;
        merged.merge(&b);
        assert_eq!(merged, all);
        assert_eq!(
            merged.cpu_percentile(100.0),
            Some(bucket_value(bucket(4000)))
        );
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert!(bucket_value(bucket(2)) >= 2);
    }

    #[test]
    fn controller_refs_read_and_print_alike() {
        let r = ControllerRef::parse("shop/Deployment/web").unwrap();
        assert_eq!(r.kind, ControllerKind::Deployment);
        assert_eq!(r.to_string(), "shop/Deployment/web");
        assert_eq!(container_key(&r, "app"), "shop/Deployment/web/app");
        assert!(ControllerRef::parse("shop/ReplicaSet/web").is_none());
        assert!(ControllerRef::parse("shop/Deployment/web/x").is_none());
        assert!(ControllerRef::parse("Shop/Deployment/web").is_none());
    }

    #[test]
    fn hpas_name_the_resources_they_scale_on() {
        let v2 = serde_json::json!({"metadata":{"namespace":"shop"},"spec":{
            "scaleTargetRef":{"kind":"Deployment","name":"web"},
            "metrics":[{"type":"Resource","resource":{"name":"cpu"}},
                       {"type":"Pods","pods":{"metric":{"name":"rps"}}},
                       {"type":"ContainerResource","containerResource":{"name":"memory","container":"app"}}]}});
        let hpa = Hpa::parse(&v2).unwrap();
        assert_eq!(hpa.resources, ["cpu", "memory"]);
        assert!(hpa.targets(&ControllerRef::parse("shop/Deployment/web").unwrap()));
        assert!(!hpa.targets(&ControllerRef::parse("shop/StatefulSet/web").unwrap()));
        let custom = serde_json::json!({"metadata":{"namespace":"shop"},"spec":{
            "scaleTargetRef":{"kind":"Deployment","name":"web"},
            "metrics":[{"type":"External","external":{"metric":{"name":"queue"}}}]}});
        assert!(Hpa::parse(&custom).unwrap().resources.is_empty());
        let v1 = serde_json::json!({"metadata":{"namespace":"shop"},"spec":{
            "scaleTargetRef":{"kind":"Deployment","name":"web"},"targetCPUUtilizationPercentage":70}});
        assert_eq!(Hpa::parse(&v1).unwrap().resources, ["cpu"]);
    }
}
