//! What the planner reads: pods to place, offerings to place them on, and the policy.
//!
//! The JSON shape of [`PlanInput`] is the benchmark format the CLI accepts as-is; every field
//! beyond it is optional.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_core::domain::{Arch, CapacityType, Taint};
pub use spotwise_core::snapshot::{CurrentNode, Overhead, PodSpec, Toleration};

/// Resource dimensions every placement checks, in this order.
pub const CPU: usize = 0;
pub const MEM: usize = 1;
pub const PODS: usize = 2;
pub const GPU: usize = 3;
pub const DIMENSIONS: usize = 4;

/// cpu millicores, memory MiB, pod slots, GPUs.
pub type Vector = [u64; DIMENSIONS];

pub fn fits(used: &Vector, add: &Vector, capacity: &Vector) -> bool {
    (0..DIMENSIONS).all(|r| used[r] + add[r] <= capacity[r])
}

pub fn add(into: &mut Vector, add: &Vector) {
    for r in 0..DIMENSIONS {
        into[r] += add[r];
    }
}

/// A node shape that can be launched: instance type x zone x capacity type, with its
/// allocatable capacity (what pods can request) and price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offering {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub max_pods: u32,
    #[serde(default)]
    pub gpus: u32,
    pub price_hr: f64,
    /// Spot Advisor band, 0 (<5%) to 4 (>20%); unknown counts as 4.
    #[serde(default)]
    pub interruption_band: Option<u8>,
    #[serde(default)]
    pub arch: Option<Arch>,
    #[serde(default)]
    pub on_demand_price_hr: Option<f64>,
    /// Interruptions observed in this pool over the last 30 days, across tenants.
    #[serde(default)]
    pub observed_interruptions: u32,
    /// Standard deviation of the spot price over its mean, 30 days.
    #[serde(default)]
    pub price_volatility: f64,
    /// Labels nodes of this offering carry beyond the well-known ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// Families whose types EC2 reports with `CurrentGeneration: false` (DescribeInstanceTypes).
const PREVIOUS_GENERATION_FAMILIES: [&str; 13] = [
    "c1", "c3", "cc2", "cr1", "g2", "hi1", "hs1", "i2", "m1", "m2", "m3", "r3", "t1",
];

impl Offering {
    /// `m5` of `m5.large`.
    pub fn family(&self) -> &str {
        self.instance_type
            .split_once('.')
            .map_or(self.instance_type.as_str(), |(family, _)| family)
    }

    /// T-family types (t2, t3, t3a, t4g…), which run on cpu credits.
    pub fn is_burstable(&self) -> bool {
        let mut chars = self.family().chars();
        chars.next() == Some('t') && chars.next().is_some_and(|c| c.is_ascii_digit())
    }

    pub fn is_previous_generation(&self) -> bool {
        PREVIOUS_GENERATION_FAMILIES.contains(&self.family())
    }

    pub fn capacity(&self) -> Vector {
        [
            self.cpu_m,
            self.mem_mib,
            u64::from(self.max_pods),
            u64::from(self.gpus),
        ]
    }

    pub fn band(&self) -> u8 {
        self.interruption_band.unwrap_or(4)
    }

    pub fn is_spot(&self) -> bool {
        self.capacity_type == CapacityType::Spot
    }

    /// The label a node of this offering would carry under `key`, well-known ones included.
    pub fn label(&self, key: &str) -> Option<&str> {
        match key {
            "node.kubernetes.io/instance-type" | "beta.kubernetes.io/instance-type" => {
                Some(&self.instance_type)
            }
            "topology.kubernetes.io/zone" | "failure-domain.beta.kubernetes.io/zone" => {
                Some(&self.zone)
            }
            "kubernetes.io/arch" | "beta.kubernetes.io/arch" => self.arch.map(|a| match a {
                Arch::X86_64 => "amd64",
                Arch::Arm64 => "arm64",
            }),
            "kubernetes.io/os" => Some("linux"),
            "karpenter.sh/capacity-type" => Some(if self.is_spot() { "spot" } else { "on-demand" }),
            "eks.amazonaws.com/capacityType" => {
                Some(if self.is_spot() { "SPOT" } else { "ON_DEMAND" })
            }
            other => self.labels.get(other).map(String::as_str),
        }
    }
}

/// Planner knobs. Every field has a default, so the benchmark's two-field policy is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanPolicy {
    /// Spot offerings above this Spot Advisor band are never used.
    pub max_interruption_band: u8,
    /// Spot nodes spread over at least this many pools (type x zone), or over every spot node
    /// when there are fewer. A handful of zones of the cheapest type usually satisfies it at
    /// no extra cost.
    pub min_spot_pools: u32,
    /// Price premium per interruption band when ranking spot pools (0.02 = +2% per band).
    pub band_penalty: f64,
    /// Price premium per interruption observed in the pool over 30 days (capped at 10).
    pub observed_interruption_penalty: f64,
    /// Reserved on every node for DaemonSet pods.
    pub daemonset_overhead: Overhead,
    /// Most nodes consolidation disrupts at once: the smaller of a count and a share.
    pub max_disrupted_nodes: u32,
    pub max_disrupted_pct: u8,
    pub right_sizing: RightSizingPolicy,
    /// Never launch burstable (`t*`) types, spot or on-demand: pods that request most of
    /// one's cpu are throttled once its credits run out.
    pub exclude_burstable: bool,
    /// Never launch types EC2 lists as previous generation.
    pub exclude_previous_generation: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RightSizingPolicy {
    /// CPU requests follow this percentile of observed usage.
    pub cpu_percentile: f64,
    /// Memory requests follow peak usage plus this much, in percent.
    pub mem_headroom_pct: u32,
    pub min_cpu_m: u64,
    pub min_mem_mib: u64,
    /// Fewer samples than this give no recommendation.
    pub min_samples: usize,
    /// Changes smaller than this share of the request are not worth a restart, in percent.
    pub min_change_pct: u32,
}

impl Default for RightSizingPolicy {
    fn default() -> Self {
        Self {
            cpu_percentile: 95.0,
            mem_headroom_pct: 15,
            min_cpu_m: 10,
            min_mem_mib: 32,
            min_samples: 12,
            min_change_pct: 10,
        }
    }
}

impl Default for PlanPolicy {
    fn default() -> Self {
        Self {
            max_interruption_band: 2,
            min_spot_pools: 6,
            band_penalty: 0.02,
            observed_interruption_penalty: 0.01,
            daemonset_overhead: Overhead::default(),
            max_disrupted_nodes: 1,
            max_disrupted_pct: 10,
            right_sizing: RightSizingPolicy::default(),
            exclude_burstable: true,
            exclude_previous_generation: false,
        }
    }
}

impl PlanPolicy {
    /// Why the policy keeps a plan from launching nodes of this offering, if it does.
    pub fn launch_exclusion(&self, offering: &Offering) -> Option<&'static str> {
        if self.exclude_burstable && offering.is_burstable() {
            Some("burstable types are excluded by policy (exclude_burstable)")
        } else if self.exclude_previous_generation && offering.is_previous_generation() {
            Some("previous-generation types are excluded by policy (exclude_previous_generation)")
        } else {
            None
        }
    }

    /// Price used to compare offerings: spot prices carry a premium for interruption risk so a
    /// slightly cheaper but much riskier pool does not win. Reported costs use the real price.
    pub fn ranking_price(&self, offering: &Offering) -> f64 {
        if !offering.is_spot() {
            return offering.price_hr;
        }
        let observed = f64::from(offering.observed_interruptions.min(10));
        offering.price_hr
            * (1.0
                + self.band_penalty * f64::from(offering.band())
                + self.observed_interruption_penalty * observed
                + offering.price_volatility.clamp(0.0, 1.0) * 0.5)
    }

    /// Capacity left for workload pods on a node of this offering.
    pub fn usable(&self, offering: &Offering) -> Vector {
        let o = &self.daemonset_overhead;
        [
            offering.cpu_m.saturating_sub(o.cpu_m),
            offering.mem_mib.saturating_sub(o.mem_mib),
            u64::from(offering.max_pods.saturating_sub(o.pods)),
            u64::from(offering.gpus),
        ]
    }
}

/// A planning problem: the benchmark format, plus optional current nodes for consolidation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    pub pods: Vec<PodSpec>,
    pub offerings: Vec<Offering>,
    #[serde(default)]
    pub policy: PlanPolicy,
    /// The nodes the cluster runs now (snapshots only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current_nodes: Vec<CurrentNode>,
    /// Observed container usage, for right-sizing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<ContainerUsage>,
    /// Container changes already decided from usage history: the plan projects them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub right_sized: Vec<crate::rightsizing::ContainerRecommendation>,
}

/// Usage samples of one container (from metrics.k8s.io, as the agent reports them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    /// `namespace/name` of the pod, as in [`PodSpec::name`].
    pub pod: String,
    pub container: String,
    pub cpu_request_m: u64,
    pub mem_request_mib: u64,
    pub cpu_samples_m: Vec<u64>,
    pub mem_samples_mib: Vec<u64>,
}

impl From<&CurrentNode> for Offering {
    /// The node seen as an offering, so the same placement rules apply to it.
    fn from(node: &CurrentNode) -> Self {
        Offering {
            instance_type: node.instance_type.clone(),
            zone: node.zone.clone(),
            capacity_type: node.capacity_type,
            cpu_m: node.cpu_m,
            mem_mib: node.mem_mib,
            max_pods: node.max_pods,
            gpus: node.gpus,
            price_hr: node.price_hr.unwrap_or(0.0),
            interruption_band: None,
            arch: match node.labels.get("kubernetes.io/arch").map(String::as_str) {
                Some("arm64") => Some(Arch::Arm64),
                Some("amd64") => Some(Arch::X86_64),
                _ => None,
            },
            on_demand_price_hr: None,
            observed_interruptions: 0,
            price_volatility: 0.0,
            labels: node.labels.clone(),
            taints: node.taints.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
        }
    }

    fn toleration(key: Option<&str>, op: Option<&str>, value: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: None,
        }
    }

    #[test]
    fn tolerations_follow_kubernetes_matching() {
        let gpu = taint("nvidia.com/gpu", Some("true"), "NoSchedule");
        assert!(toleration(Some("nvidia.com/gpu"), None, Some("true")).tolerates(&gpu));
        assert!(!toleration(Some("nvidia.com/gpu"), None, Some("false")).tolerates(&gpu));
        assert!(toleration(Some("nvidia.com/gpu"), Some("Exists"), None).tolerates(&gpu));
        assert!(toleration(None, Some("Exists"), None).tolerates(&gpu));
        assert!(!toleration(None, None, None).tolerates(&gpu));
        let mut wrong_effect = toleration(Some("nvidia.com/gpu"), Some("Exists"), None);
        wrong_effect.effect = Some("NoExecute".into());
        assert!(!wrong_effect.tolerates(&gpu));
    }

    #[test]
    fn benchmark_format_parses_with_defaults() {
        let input: PlanInput = serde_json::from_str(
            r#"{"pods":[{"name":"ns/p1","cpu_m":250,"mem_mib":512,"spot_ok":true}],
                "offerings":[{"instance_type":"m5.large","zone":"us-east-1a","capacity_type":"spot",
                  "cpu_m":1930,"mem_mib":7200,"max_pods":29,"price_hr":0.035,"interruption_band":3}],
                "policy":{"max_interruption_band":4,"min_spot_pools":1}}"#,
        )
        .unwrap();
        assert_eq!(input.policy.max_interruption_band, 4);
        assert_eq!(
            input.policy.band_penalty,
            PlanPolicy::default().band_penalty
        );
        assert_eq!(input.offerings[0].capacity(), [1930, 7200, 29, 0]);
        assert_eq!(input.pods[0].demand(), [250, 512, 1, 0]);
        for spelling in ["on-demand", "on_demand", "ON_DEMAND"] {
            let ct: CapacityType = serde_json::from_str(&format!("\"{spelling}\"")).unwrap();
            assert_eq!(ct, CapacityType::OnDemand);
        }
    }

    #[test]
    fn families_tell_burstable_and_previous_generation_types() {
        let of = |name: &str| Offering {
            instance_type: name.into(),
            ..serde_json::from_value(serde_json::json!({
                "instance_type":"x","zone":"a","capacity_type":"spot","cpu_m":1,"mem_mib":1,
                "max_pods":1,"price_hr":1.0}))
            .unwrap()
        };
        for burstable in ["t3.micro", "t3a.large", "t4g.medium", "t2.2xlarge"] {
            assert!(of(burstable).is_burstable(), "{burstable}");
        }
        for other in ["m5.large", "trn1.2xlarge", "m7i-flex.large"] {
            assert!(!of(other).is_burstable(), "{other}");
        }
        assert!(of("m3.large").is_previous_generation());
        assert!(of("c3.xlarge").is_previous_generation());
        assert!(
            !of("c4.large").is_previous_generation(),
            "EC2 still lists c4 as current"
        );
        let policy = PlanPolicy::default();
        assert!(policy.launch_exclusion(&of("t3.large")).is_some());
        assert_eq!(policy.launch_exclusion(&of("m3.large")), None);
    }

    #[test]
    fn risk_premium_applies_to_spot_only() {
        let mut o: Offering = serde_json::from_value(serde_json::json!({
            "instance_type":"m5.large","zone":"a","capacity_type":"spot","cpu_m":1,"mem_mib":1,
            "max_pods":1,"price_hr":1.0,"interruption_band":2}))
        .unwrap();
        let policy = PlanPolicy::default();
        assert!((policy.ranking_price(&o) - 1.04).abs() < 1e-9);
        o.capacity_type = CapacityType::OnDemand;
        assert_eq!(policy.ranking_price(&o), 1.0);
    }
}
