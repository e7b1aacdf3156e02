//! Allocations aggregated by a dimension (namespace, workload, pod, node, label), merged across
//! periods (hour -> day -> month) and capped so one stored table stays one item.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::allocate::{Allocation, NodeInput, PodInput};
use crate::money::CostLine;

/// The value a label dimension shows for pods without the label (OpenCost's name).
pub const UNALLOCATED: &str = "__unallocated__";

/// The labels cost is broken down by unless a cluster's policy names others.
pub const DEFAULT_LABEL_KEYS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "team",
    "cost-center",
    "environment",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Namespace,
    Workload,
    Pod,
    Node,
    Label,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::Namespace,
        Dimension::Workload,
        Dimension::Pod,
        Dimension::Node,
        Dimension::Label,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Namespace => "namespace",
            Dimension::Workload => "workload",
            Dimension::Pod => "pod",
            Dimension::Node => "node",
            Dimension::Label => "label",
        }
    }

    /// Most lines one stored table keeps; the rest are folded into `other`. Sized so the
    /// largest table stays well under DynamoDB's 400 KB item limit.
    pub fn cap(self) -> usize {
        match self {
            Dimension::Namespace => 1_000,
            Dimension::Workload => 1_000,
            Dimension::Pod => 500,
            Dimension::Node => 1_000,
            Dimension::Label => 500,
        }
    }
}

impl std::str::FromStr for Dimension {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                format!("unknown dimension `{s}`: namespace, workload, pod, node or label")
            })
    }
}

/// Cost per key of one dimension. Pod, workload, namespace and label tables hold the
/// allocated cost (their lines plus the cluster's idle cost make the total); the node table
/// holds whole nodes, idle included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostTable {
    pub lines: BTreeMap<String, CostLine>,
    /// Lines beyond the cap, summed.
    #[serde(default)]
    pub other: CostLine,
    #[serde(default)]
    pub folded: u32,
}

impl CostTable {
    pub fn add(&mut self, key: &str, line: &CostLine) {
        match self.lines.get_mut(key) {
            Some(existing) => *existing += line,
            None => {
                self.lines.insert(key.to_owned(), *line);
            }
        }
    }

    /// Adds another period's table (then re-cap: the union of two tables' keys may exceed it).
    pub fn merge(&mut self, other: &CostTable) {
        for (key, line) in &other.lines {
            self.add(key, line);
        }
        self.other += &other.other;
        self.folded += other.folded;
    }

    /// Keeps the `max` most expensive lines and folds the rest into `other`.
    pub fn cap(&mut self, max: usize) {
        if self.lines.len() <= max {
            return;
        }
        let mut by_cost: Vec<(String, CostLine)> =
            std::mem::take(&mut self.lines).into_iter().collect();
        by_cost.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(&b.0)));
        for (_, line) in by_cost.drain(max..) {
            self.other += &line;
            self.folded += 1;
        }
        self.lines = by_cost.into_iter().collect();
    }

    pub fn total(&self) -> CostLine {
        let mut total = self.other;
        for line in self.lines.values() {
            total += line;
        }
        total
    }

    /// Lines, most expensive first.
    pub fn ranked(&self) -> Vec<(&str, &CostLine)> {
        let mut ranked: Vec<(&str, &CostLine)> =
            self.lines.iter().map(|(k, l)| (k.as_str(), l)).collect();
        ranked.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(b.0)));
        ranked
    }
}

/// The idle part of `total` as a line of its own: everything the table's pods were not
/// allocated (for tables of pods, workloads, namespaces; label tables count each key apart).
pub fn idle_line(total: &CostLine, table: &CostTable) -> CostLine {
    let allocated = table.total();
    CostLine {
        cost: total.cost - allocated.cost,
        cpu: total.cpu - allocated.cpu,
        memory: total.memory - allocated.memory,
        gpu: total.gpu - allocated.gpu,
        on_demand: total.on_demand - allocated.on_demand,
        idle: total.cost - allocated.cost,
    }
}

/// One dimension's table of an allocation, capped.
pub fn table(
    allocation: &Allocation,
    nodes: &[NodeInput],
    pods: &[PodInput],
    dimension: Dimension,
    label_keys: &[String],
) -> CostTable {
    let mut table = CostTable::default();
    match dimension {
        Dimension::Node => {
            for node in &allocation.nodes {
                table.add(&nodes[node.node].name, &node.line);
            }
        }
        Dimension::Label => {
            for cost in &allocation.pods {
                let labels = &pods[cost.pod].labels;
                for key in label_keys {
                    let value = labels.get(key).map_or(UNALLOCATED, String::as_str);
                    table.add(&format!("{key}={value}"), &cost.line);
                }
            }
        }
        Dimension::Namespace | Dimension::Workload | Dimension::Pod => {
            for cost in &allocation.pods {
                let pod = &pods[cost.pod];
                let key = match dimension {
                    Dimension::Namespace => pod.namespace.clone(),
                    Dimension::Workload => format!("{}/{}", pod.namespace, pod.workload),
                    _ => format!("{}/{}", pod.namespace, pod.name),
                };
                table.add(&key, &cost.line);
            }
        }
    }
    table.cap(dimension.cap());
    table
}

/// Savings over a period, each against its own reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Savings {
    /// The nodes at on-demand prices minus what they cost.
    pub spot: Decimal,
    /// What the workload would cost at the baseline's on-demand cost per requested unit,
    /// minus what the current nodes cost at on-demand prices: better packing and fewer idle
    /// nodes, independent of spot and of the workload growing or shrinking.
    pub consolidation: Decimal,
    /// The awake cost of hours the cluster slept.
    pub hibernation: Decimal,
}

impl Savings {
    pub fn total(&self) -> Decimal {
        self.spot + self.consolidation + self.hibernation
    }

    pub fn add(&mut self, other: &Savings) {
        self.spot += other.spot;
        self.consolidation += other.consolidation;
        self.hibernation += other.hibernation;
    }
}

/// The cluster's cost before Spotwise changed anything, captured from its first sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub captured_at: String,
    /// The nodes at on-demand prices, per hour.
    pub on_demand_hr: Decimal,
    /// The workload's requests valued at the allocation weights, per hour.
    pub requested_value_hr: Decimal,
}

impl Baseline {
    pub fn from_allocation(allocation: &Allocation, captured_at: String) -> Self {
        let hours = Decimal::from(allocation.hours.max(1));
        Self {
            captured_at,
            on_demand_hr: allocation.total().on_demand / hours,
            requested_value_hr: allocation.requested_value / hours,
        }
    }

    /// On-demand cost per unit of requested value; `None` for an empty baseline.
    fn on_demand_per_value(&self) -> Option<Decimal> {
        (!self.requested_value_hr.is_zero()).then(|| self.on_demand_hr / self.requested_value_hr)
    }
}

/// The totals of one period: cost, savings and coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total: CostLine,
    pub savings: Savings,
    /// Hourly samples summed into this period.
    pub samples: u32,
    /// Node-hours and pod-hours covered.
    pub node_hours: u64,
    pub pod_hours: u64,
    pub unpriced_node_hours: u64,
    pub unplaced_pod_hours: u64,
    pub requested_value: Decimal,
    /// Allocatable capacity of the priced nodes, in millicore-hours and MiB-hours.
    #[serde(default)]
    pub cpu_m_hours: u64,
    #[serde(default)]
    pub mem_mib_hours: u64,
}

impl Summary {
    /// One sample's totals. `hibernation_saved_hr` is the awake cost per hour while the
    /// cluster sleeps (zero when it is awake).
    pub fn of(allocation: &Allocation, baseline: &Baseline, hibernation_saved_hr: Decimal) -> Self {
        let total = allocation.total();
        let hours = Decimal::from(allocation.hours);
        let consolidation = baseline
            .on_demand_per_value()
            .map(|rate| {
                (rate * allocation.requested_value - total.on_demand).round_dp(crate::money::SCALE)
            })
            .unwrap_or_default();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX) * u64::from(allocation.hours);
        Self {
            total,
            savings: Savings {
                spot: total.spot_savings(),
                consolidation,
                hibernation: hibernation_saved_hr * hours,
            },
            samples: 1,
            node_hours: count(allocation.nodes.len()),
            pod_hours: count(allocation.pods.len()),
            unpriced_node_hours: count(allocation.unpriced_nodes.len()),
            unplaced_pod_hours: count(allocation.unplaced_pods.len()),
            requested_value: allocation.requested_value,
            cpu_m_hours: allocation.cpu_m_hours,
            mem_mib_hours: allocation.mem_mib_hours,
        }
    }

    pub fn merge(&mut self, other: &Summary) {
        self.total += &other.total;
        self.savings.add(&other.savings);
        self.samples += other.samples;
        self.node_hours += other.node_hours;
        self.pod_hours += other.pod_hours;
        self.unpriced_node_hours += other.unpriced_node_hours;
        self.unplaced_pod_hours += other.unplaced_pod_hours;
        self.requested_value += other.requested_value;
        self.cpu_m_hours += other.cpu_m_hours;
        self.mem_mib_hours += other.mem_mib_hours;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use super::*;
    use crate::allocate::{Weights, allocate};

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn fixture() -> (Vec<NodeInput>, Vec<PodInput>) {
        let node = |name: &str, price: &str| NodeInput {
            name: name.into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: spotwise_core::domain::CapacityType::Spot,
            price_hr: Some(d(price)),
            on_demand_price_hr: Some(d("0.096")),
            cpu_m: 1930,
            mem_mib: 7200,
            gpus: 0,
        };
        let pod = |ns: &str, name: &str, node: &str, team: Option<&str>| PodInput {
            namespace: ns.into(),
            name: name.into(),
            workload: format!("Deployment/{}", name.trim_end_matches(char::is_numeric)),
            node: Some(node.into()),
            labels: team
                .map(|t| BTreeMap::from([("team".to_owned(), t.to_owned())]))
                .unwrap_or_default(),
            cpu_request_m: 300,
            mem_request_mib: 700,
            gpus: 0,
            usage: None,
        };
        (
            vec![node("n1", "0.035"), node("n2", "0.0371")],
            vec![
                pod("shop", "web1", "n1", Some("web")),
                pod("shop", "web2", "n2", Some("web")),
                pod("shop", "api1", "n1", Some("core")),
                pod("data", "etl1", "n2", None),
            ],
        )
    }

    #[test]
    fn every_dimension_adds_up_to_the_total() {
        let (nodes, pods) = fixture();
        let a = allocate(&nodes, &pods, 1, &Weights::default());
        let total = a.total();
        let keys = vec!["team".to_owned()];
        for dimension in Dimension::ALL {
            let t = table(&a, &nodes, &pods, dimension, &keys);
            let sum = t.total().cost;
            if dimension == Dimension::Node {
                assert_eq!(sum, total.cost, "{dimension:?}");
            } else {
                assert_eq!(sum + total.idle, total.cost, "{dimension:?}");
                if dimension != Dimension::Label {
                    assert_eq!(idle_line(&total, &t).cost, total.idle);
                }
            }
        }
        let labels = table(&a, &nodes, &pods, Dimension::Label, &keys);
        assert!(labels.lines.contains_key("team=__unallocated__"));
        let workloads = table(&a, &nodes, &pods, Dimension::Workload, &keys);
        assert_eq!(
            workloads.lines.keys().collect::<Vec<_>>(),
            vec![
                "data/Deployment/etl",
                "shop/Deployment/api",
                "shop/Deployment/web"
            ]
        );
    }

    #[test]
    fn capping_folds_the_cheapest_lines_without_losing_money() {
        let mut t = CostTable::default();
        for i in 0..10_u32 {
            t.add(
                &format!("k{i}"),
                &CostLine {
                    cost: Decimal::from(i),
                    ..CostLine::default()
                },
            );
        }
        let before = t.total();
        t.cap(3);
        assert_eq!(t.lines.len(), 3);
        assert_eq!(t.folded, 7);
        assert_eq!(t.total(), before);
        assert_eq!(t.ranked()[0].0, "k9");
        assert_eq!(t.other.cost, Decimal::from(21));
    }

    #[test]
    fn rollups_equal_the_sum_of_their_samples() {
        let (nodes, pods) = fixture();
        let weights = Weights::default();
        let baseline = Baseline::from_allocation(
            &allocate(&nodes, &pods, 1, &weights),
            "2026-11-01T00:00:00Z".into(),
        );
        let mut day = CostTable::default();
        let mut day_summary = Summary::default();
        let mut expected = Decimal::ZERO;
        for hour in 0..24 {
            // The workload changes over the day.
            let some: Vec<PodInput> = pods.iter().take(1 + hour % 4).cloned().collect();
            let a = allocate(&nodes, &some, 1, &weights);
            expected += a.total().cost;
            day.merge(&table(&a, &nodes, &some, Dimension::Namespace, &[]));
            day_summary.merge(&Summary::of(&a, &baseline, Decimal::ZERO));
        }
        assert_eq!(day_summary.total.cost, expected);
        assert_eq!(day.total().cost + day_summary.total.idle, expected);
        assert_eq!(day_summary.samples, 24);
        assert_eq!(day_summary.node_hours, 48);
    }

    #[test]
    fn savings_against_on_demand_and_the_baseline() {
        let (nodes, pods) = fixture();
        let weights = Weights::default();
        let before = allocate(&nodes, &pods, 1, &weights);
        let baseline = Baseline::from_allocation(&before, "t0".into());
        let same = Summary::of(&before, &baseline, Decimal::ZERO);
        assert_eq!(same.savings.consolidation, Decimal::ZERO);
        assert_eq!(same.savings.spot, d("0.192") - d("0.0721"));

        // The same pods packed onto one node: half the on-demand capacity.
        let one_node = vec![NodeInput {
            cpu_m: 3860,
            mem_mib: 14400,
            ..nodes[0].clone()
        }];
        let packed: Vec<PodInput> = pods
            .iter()
            .map(|p| PodInput {
                node: Some("n1".into()),
                ..p.clone()
            })
            .collect();
        let after = allocate(&one_node, &packed, 1, &weights);
        let s = Summary::of(&after, &baseline, d("0.5"));
        assert_eq!(s.savings.consolidation, d("0.096"));
        assert_eq!(s.savings.hibernation, d("0.5"));
    }

    #[test]
    fn dimensions_parse_from_their_names() {
        assert_eq!("pod".parse::<Dimension>(), Ok(Dimension::Pod));
        assert!(
            "team"
                .parse::<Dimension>()
                .unwrap_err()
                .contains("namespace")
        );
    }
}
