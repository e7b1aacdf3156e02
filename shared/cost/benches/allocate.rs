//! Allocation time for synthetic clusters: `cargo bench -p spotwise-cost --bench allocate`.
//! Pods from the optimizer's seeded generator (log-normal requests, half with usage), packed
//! first-fit onto m5.2xlarge-sized nodes; reports the median and worst of repeated runs for
//! the allocation and for building every dimension's table.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use spotwise_core::domain::CapacityType;
use spotwise_core::snapshot::PodUsage;
use spotwise_cost::breakdown::{self, DEFAULT_LABEL_KEYS, Dimension};
use spotwise_cost::{NodeInput, PodInput, Weights, allocate};
use spotwise_optimizer::synth;

const NODE_CPU_M: u64 = 7_910;
const NODE_MEM_MIB: u64 = 29_000;

fn cluster(pods: usize, seed: u64) -> (Vec<NodeInput>, Vec<PodInput>) {
    let specs = synth::pods(seed, pods);
    let mut nodes: Vec<NodeInput> = Vec::new();
    let mut free: Vec<(u64, u64)> = Vec::new();
    let mut inputs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let cpu = spec.cpu_m.min(NODE_CPU_M);
        let mem = spec.mem_mib.min(NODE_MEM_MIB);
        let slot = free
            .iter()
            .position(|&(c, m)| c >= cpu && m >= mem)
            .unwrap_or_else(|| {
                nodes.push(NodeInput {
                    name: format!("node-{}", nodes.len()),
                    instance_type: "m5.2xlarge".into(),
                    zone: "us-east-1a".into(),
                    capacity_type: if nodes.len().is_multiple_of(3) {
                        CapacityType::OnDemand
                    } else {
                        CapacityType::Spot
                    },
                    price_hr: Some(Decimal::new(1412, 4)),
                    on_demand_price_hr: Some(Decimal::new(384, 3)),
                    cpu_m: NODE_CPU_M,
                    mem_mib: NODE_MEM_MIB,
                    gpus: 0,
                });
                free.push((NODE_CPU_M, NODE_MEM_MIB));
                free.len() - 1
            });
        free[slot].0 -= cpu;
        free[slot].1 -= mem;
        let (namespace, name) = spec.name.split_once('/').unwrap_or(("default", &spec.name));
        inputs.push(PodInput {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            workload: format!("Deployment/{}", name.rsplit_once('-').map_or(name, |p| p.0)),
            node: Some(format!("node-{slot}")),
            labels: BTreeMap::from([("team".to_owned(), format!("team-{}", i % 17))]),
            cpu_request_m: cpu,
            mem_request_mib: mem,
            gpus: 0,
            usage: i.is_multiple_of(2).then_some(PodUsage {
                cpu_m: cpu * 3 / 2,
                mem_mib: mem / 2,
            }),
        });
    }
    (nodes, inputs)
}

fn measure(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn main() {
    let weights = Weights::default();
    let label_keys: Vec<String> = DEFAULT_LABEL_KEYS
        .iter()
        .map(|k| (*k).to_owned())
        .chain(["team".to_owned()])
        .collect();
    println!("pods    nodes  allocate p50 / max      tables p50 / max       pods/s (allocate)");
    for pods in [1_000, 5_000, 20_000] {
        let (nodes, inputs) = cluster(pods, 7);
        let (p50, max) = measure(15, || {
            black_box(allocate(&nodes, &inputs, 1, &weights));
        });
        let allocation = allocate(&nodes, &inputs, 1, &weights);
        let (t50, tmax) = measure(15, || {
            for dimension in Dimension::ALL {
                black_box(breakdown::table(
                    &allocation,
                    &nodes,
                    &inputs,
                    dimension,
                    &label_keys,
                ));
            }
        });
        println!(
            "{pods:<7} {:<6} {:>9.2} ms / {:>7.2} ms  {:>9.2} ms / {:>7.2} ms  {:>10.0}",
            nodes.len(),
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            t50.as_secs_f64() * 1e3,
            tmax.as_secs_f64() * 1e3,
            pods as f64 / p50.as_secs_f64(),
        );
    }
}
