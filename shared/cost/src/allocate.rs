//! Cost allocation, OpenCost's model: each node's price for the period is split into cpu,
//! memory and GPU cost by the relative prices of those resources, and each resource's cost is
//! split over the node's pods by `max(request, usage)` as a share of the node's allocatable
//! amount; what no pod requested or used is the node's idle cost. When pods together claim
//! more than the node has (usage above requests), they share the whole resource in proportion
//! and nothing is idle. Every split is exact: pods plus idle add up to the node's price.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spotwise_core::domain::CapacityType;
use spotwise_core::snapshot::PodUsage;

use crate::money::{CostLine, apportion, from_units, to_units};

/// Relative prices of the resources a node sells, used only for their ratios. The defaults
/// are OpenCost's default prices: $0.031611 per vCPU-hour, $0.004237 per GiB-hour, $0.95 per
/// GPU-hour, which puts about two-thirds of a general-purpose node's price on cpu.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub cpu_core_hr: Decimal,
    pub memory_gib_hr: Decimal,
    pub gpu_hr: Decimal,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            cpu_core_hr: Decimal::from_str("0.031611").unwrap_or_default(),
            memory_gib_hr: Decimal::from_str("0.004237").unwrap_or_default(),
            gpu_hr: Decimal::from_str("0.95").unwrap_or_default(),
        }
    }
}

impl Weights {
    /// Integer weights of a node's cpu (millicores), memory (MiB) and GPUs, on a common scale.
    fn of(&self, cpu_m: u64, mem_mib: u64, gpus: u32) -> [u128; 3] {
        let micro = |d: Decimal| {
            u128::try_from(to_units(d) / 10_i128.pow(crate::money::SCALE - 6)).unwrap_or(0)
        };
        [
            u128::from(cpu_m) * 1024 * micro(self.cpu_core_hr),
            u128::from(mem_mib) * 1000 * micro(self.memory_gib_hr),
            u128::from(gpus) * 1000 * 1024 * micro(self.gpu_hr),
        ]
    }

    /// What a pod's requests are worth at these prices per hour.
    fn value(&self, cpu_m: u64, mem_mib: u64, gpus: u32) -> Decimal {
        Decimal::from(cpu_m) / Decimal::from(1000) * self.cpu_core_hr
            + Decimal::from(mem_mib) / Decimal::from(1024) * self.memory_gib_hr
            + Decimal::from(gpus) * self.gpu_hr
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeInput {
    pub name: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    /// `None` when no price is known; such nodes and their pods are left out and listed.
    pub price_hr: Option<Decimal>,
    pub on_demand_price_hr: Option<Decimal>,
    pub cpu_m: u64,
    pub mem_mib: u64,
    pub gpus: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodInput {
    pub namespace: String,
    pub name: String,
    /// `Kind/name` of the controller that owns the pod (`Deployment/web`), or `Pod/<name>`.
    pub workload: String,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub cpu_request_m: u64,
    pub mem_request_mib: u64,
    pub gpus: u32,
    pub usage: Option<PodUsage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodCost {
    /// Index into the input pods.
    pub pod: usize,
    pub node: usize,
    pub line: CostLine,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeCost {
    /// Index into the input nodes.
    pub node: usize,
    /// The whole node; `line.idle` is the part no pod claimed.
    pub line: CostLine,
}

/// One period's allocation over a cluster's nodes and pods.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Allocation {
    pub hours: u32,
    pub pods: Vec<PodCost>,
    pub nodes: Vec<NodeCost>,
    /// Nodes without a price: neither they nor their pods are in the totals.
    pub unpriced_nodes: Vec<String>,
    /// Pods not running on a known node (pending, or on a node the snapshot lacks).
    pub unplaced_pods: Vec<String>,
    /// The placed pods' requests valued at the weights' prices over the period: the workload's
    /// size, for comparing clusters of different sizes (consolidation savings).
    pub requested_value: Decimal,
    /// Allocatable capacity of the priced nodes over the period, for unit prices.
    pub cpu_m_hours: u64,
    pub mem_mib_hours: u64,
}

impl Allocation {
    pub fn total(&self) -> CostLine {
        let mut total = CostLine::default();
        for node in &self.nodes {
            total += &node.line;
        }
        total
    }
}

/// Splits `total` units over the pods' claims and the unclaimed rest (last).
fn split_resource(total: i128, claims: &[u64], capacity: u64) -> Vec<i128> {
    let claimed: u64 = claims.iter().sum();
    let mut weights: Vec<u128> = claims.iter().map(|&c| u128::from(c)).collect();
    weights.push(u128::from(capacity.saturating_sub(claimed)));
    apportion(total, &weights)
}

pub fn allocate(
    nodes: &[NodeInput],
    pods: &[PodInput],
    hours: u32,
    weights: &Weights,
) -> Allocation {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut on_node: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut allocation = Allocation {
        hours,
        ..Allocation::default()
    };
    for (p, pod) in pods.iter().enumerate() {
        match pod.node.as_deref().and_then(|n| index.get(n)) {
            Some(&n) => on_node[n].push(p),
            None => allocation
                .unplaced_pods
                .push(format!("{}/{}", pod.namespace, pod.name)),
        }
    }
    let hours_dec = Decimal::from(hours);
    for (n, node) in nodes.iter().enumerate() {
        let Some(price) = node.price_hr else {
            allocation.unpriced_nodes.push(node.name.clone());
            continue;
        };
        let here = &on_node[n];
        allocation.cpu_m_hours += node.cpu_m * u64::from(hours);
        allocation.mem_mib_hours += node.mem_mib * u64::from(hours);
        let resource_weights = weights.of(node.cpu_m, node.mem_mib, node.gpus);
        let actual = apportion(to_units(price * hours_dec), &resource_weights);
        let on_demand_price = node.on_demand_price_hr.unwrap_or(price);
        let on_demand = apportion(to_units(on_demand_price * hours_dec), &resource_weights);

        let claims = |f: &dyn Fn(&PodInput) -> u64| -> Vec<u64> {
            here.iter().map(|&p| f(&pods[p])).collect()
        };
        let cpu_claims = claims(&|p| p.cpu_request_m.max(p.usage.map_or(0, |u| u.cpu_m)));
        let mem_claims = claims(&|p| p.mem_request_mib.max(p.usage.map_or(0, |u| u.mem_mib)));
        let gpu_claims = claims(&|p| u64::from(p.gpus));
        let capacities = [node.cpu_m, node.mem_mib, u64::from(node.gpus)];
        let resource_claims = [&cpu_claims, &mem_claims, &gpu_claims];
        let split = |units: &[i128]| -> Vec<Vec<i128>> {
            (0..3)
                .map(|r| split_resource(units[r], resource_claims[r], capacities[r]))
                .collect()
        };
        let (parts, od_parts) = (split(&actual), split(&on_demand));

        let idle_at = here.len();
        for (slot, &p) in here.iter().enumerate() {
            let [cpu, memory, gpu] = [parts[0][slot], parts[1][slot], parts[2][slot]];
            let on_demand_units: i128 = (0..3).map(|r| od_parts[r][slot]).sum();
            allocation.pods.push(PodCost {
                pod: p,
                node: n,
                line: CostLine {
                    cost: from_units(cpu + memory + gpu),
                    cpu: from_units(cpu),
                    memory: from_units(memory),
                    gpu: from_units(gpu),
                    on_demand: from_units(on_demand_units),
                    idle: Decimal::ZERO,
                },
            });
            let pod = &pods[p];
            allocation.requested_value +=
                weights.value(pod.cpu_request_m, pod.mem_request_mib, pod.gpus) * hours_dec;
        }
        let idle: i128 = (0..3).map(|r| parts[r][idle_at]).sum();
        allocation.nodes.push(NodeCost {
            node: n,
            line: CostLine {
                cost: from_units(actual.iter().sum()),
                cpu: from_units(actual[0]),
                memory: from_units(actual[1]),
                gpu: from_units(actual[2]),
                on_demand: from_units(on_demand.iter().sum()),
                idle: from_units(idle),
            },
        });
    }
    allocation
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    pub(crate) fn node(name: &str, cpu_m: u64, mem_mib: u64, price: &str, od: &str) -> NodeInput {
        NodeInput {
            name: name.into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: if price == od {
                CapacityType::OnDemand
            } else {
                CapacityType::Spot
            },
            price_hr: Some(d(price)),
            on_demand_price_hr: Some(d(od)),
            cpu_m,
            mem_mib,
            gpus: 0,
        }
    }

    pub(crate) fn pod(ns: &str, name: &str, node: &str, cpu_m: u64, mem_mib: u64) -> PodInput {
        PodInput {
            namespace: ns.into(),
            name: name.into(),
            workload: format!("Deployment/{name}"),
            node: Some(node.into()),
            labels: BTreeMap::new(),
            cpu_request_m: cpu_m,
            mem_request_mib: mem_mib,
            gpus: 0,
            usage: None,
        }
    }

    fn sum_pods(a: &Allocation) -> Decimal {
        a.pods.iter().map(|p| p.line.cost).sum()
    }

    #[test]
    fn hand_computed_example() {
        // A $0.10/h node with 2 cores and 8 GiB, weights 1 per core-hour and 0.5 per GiB-hour:
        // cpu is worth 2, memory 4, so cpu gets 1/3 of the price and memory 2/3.
        let weights = Weights {
            cpu_core_hr: d("1"),
            memory_gib_hr: d("0.5"),
            gpu_hr: d("0"),
        };
        let nodes = [node("n1", 2000, 8192, "0.10", "0.30")];
        let pods = [
            pod("a", "p1", "n1", 500, 2048), // 1/4 of cpu, 1/4 of memory
            PodInput {
                usage: Some(PodUsage {
                    cpu_m: 1000,
                    mem_mib: 1024,
                }),
                ..pod("b", "p2", "n1", 250, 4096) // usage above request on cpu only
            },
        ];
        let a = allocate(&nodes, &pods, 1, &weights);
        let p1 = &a.pods[0].line;
        let p2 = &a.pods[1].line;
        // cpu cost 0.0333333333(+1 unit to the largest remainder), memory 0.0666666667.
        assert_eq!(p1.cpu, d("0.0083333333"));
        assert_eq!(p1.memory, d("0.0166666667"));
        assert_eq!(p1.cost, d("0.025"));
        assert_eq!(p2.cpu, d("0.0166666667"), "max(250m request, 1000m usage)");
        assert_eq!(
            p2.memory,
            d("0.0333333333"),
            "max(4096 request, 1024 usage)"
        );
        assert_eq!(
            p1.on_demand,
            d("0.075"),
            "same shares of the on-demand price"
        );
        let node = &a.nodes[0].line;
        assert_eq!(node.cost, d("0.1"));
        assert_eq!(node.idle, d("0.025"), "cpu 1/4 and memory 1/4 unclaimed");
        assert_eq!(sum_pods(&a) + node.idle, node.cost);
        assert_eq!(
            a.requested_value,
            d("0.5") + d("1") + d("0.25") + d("2"),
            "requests valued at the weights"
        );
    }

    #[test]
    fn pods_that_request_nothing_leave_the_node_idle() {
        let nodes = [node("n1", 1930, 7200, "0.035", "0.096")];
        let pods = [pod("a", "p1", "n1", 0, 0), pod("a", "p2", "n1", 0, 0)];
        let a = allocate(&nodes, &pods, 1, &Weights::default());
        assert!(a.pods.iter().all(|p| p.line.cost.is_zero()));
        assert_eq!(a.nodes[0].line.idle, d("0.035"));
        assert_eq!(a.total().cost, d("0.035"));
        assert_eq!(a.total().spot_savings(), d("0.061"));
    }

    #[test]
    fn overcommitted_nodes_have_no_idle_and_still_add_up() {
        let nodes = [node("n1", 1000, 1024, "0.0417", "0.0417")];
        let pods: Vec<PodInput> = (0..7)
            .map(|i| pod("a", &format!("p{i}"), "n1", 333, 300))
            .collect();
        let a = allocate(&nodes, &pods, 3, &Weights::default());
        assert!(a.nodes[0].line.idle.is_zero());
        assert_eq!(sum_pods(&a), d("0.1251"), "three hours of the node");
    }

    #[test]
    fn unpriced_nodes_and_unplaced_pods_are_listed_not_costed() {
        let mut unpriced = node("n2", 2000, 8192, "0", "0");
        unpriced.price_hr = None;
        let nodes = [node("n1", 2000, 8192, "0.1", "0.1"), unpriced];
        let mut pending = pod("a", "pending", "n1", 100, 100);
        pending.node = None;
        let pods = [
            pod("a", "p1", "n1", 100, 100),
            pod("a", "p2", "n2", 100, 100),
            pending,
            pod("a", "lost", "gone", 100, 100),
        ];
        let a = allocate(&nodes, &pods, 1, &Weights::default());
        assert_eq!(a.unpriced_nodes, vec!["n2"]);
        assert_eq!(a.unplaced_pods, vec!["a/pending", "a/lost"]);
        assert_eq!(a.pods.len(), 1);
        assert_eq!(a.total().cost, d("0.1"));
    }

    #[test]
    fn random_clusters_allocate_every_cent() {
        let mut seed = 42_u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for _ in 0..50 {
            let nodes: Vec<NodeInput> = (0..(next(20) + 1))
                .map(|i| {
                    let mut n = node(
                        &format!("n{i}"),
                        next(64_000) + 500,
                        next(256_000) + 512,
                        &format!("0.{:04}", next(9_999) + 1),
                        &format!("1.{:04}", next(9_999)),
                    );
                    n.gpus = u32::try_from(next(3)).unwrap();
                    n
                })
                .collect();
            let pods: Vec<PodInput> = (0..next(300))
                .map(|i| {
                    let mut p = pod(
                        "ns",
                        &format!("p{i}"),
                        &format!("n{}", next(nodes.len() as u64)),
                        next(4_000),
                        next(8_000),
                    );
                    p.gpus = u32::try_from(next(2)).unwrap();
                    if next(2) == 0 {
                        p.usage = Some(PodUsage {
                            cpu_m: next(6_000),
                            mem_mib: next(9_000),
                        });
                    }
                    p
                })
                .collect();
            let hours = u32::try_from(next(24) + 1).unwrap();
            let a = allocate(&nodes, &pods, hours, &Weights::default());
            let expected: Decimal = nodes
                .iter()
                .map(|n| n.price_hr.unwrap() * Decimal::from(hours))
                .sum();
            let total = a.total();
            assert_eq!(total.cost, expected);
            assert_eq!(sum_pods(&a) + total.idle, total.cost);
            assert_eq!(total.cpu + total.memory + total.gpu, total.cost);
            let od: Decimal = a.pods.iter().map(|p| p.line.on_demand).sum();
            assert!(od <= total.on_demand);
        }
    }
}
