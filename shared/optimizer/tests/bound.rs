#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The benchmark's lower bounds (the LP relaxation of the assignment model, and the same with
//! whole nodes) on cases whose value is known, and against plans: never above any plan, never
//! below the fluid bound.

#[path = "../benches/bound.rs"]
mod bound;

use std::time::Duration;

use spotwise_core::domain::CapacityType;
use spotwise_optimizer::model::{Offering, PlanInput, PlanPolicy, PodSpec, Vector};
use spotwise_optimizer::packing::admits;
use spotwise_optimizer::{lp, plan, synth};

fn offering(itype: &str, cpu_m: u64, mem_mib: u64, price: f64) -> Offering {
    serde_json::from_value(serde_json::json!({
        "instance_type": itype, "zone": "us-east-1a", "capacity_type": CapacityType::OnDemand,
        "cpu_m": cpu_m, "mem_mib": mem_mib, "max_pods": 110, "price_hr": price
    }))
    .unwrap()
}

fn pod(name: &str, cpu_m: u64, mem_mib: u64) -> PodSpec {
    PodSpec {
        name: name.into(),
        cpu_m,
        mem_mib,
        spot_ok: true,
        ..PodSpec::default()
    }
}

fn input(pods: Vec<PodSpec>, offerings: Vec<Offering>) -> PlanInput {
    PlanInput {
        pods,
        offerings,
        policy: PlanPolicy {
            max_interruption_band: 4,
            ..PlanPolicy::default()
        },
        ..PlanInput::default()
    }
}

#[test]
fn a_pod_takes_its_cpu_and_memory_from_the_same_type() {
    // A compute type (4000m, 1000 MiB) and a memory type (1000m, 4000 MiB) at 1.0 each and a
    // balanced one (4000m, 4000 MiB) at 3.0. Fluidly, the 2000m/2000 MiB pod costs 0.8 (0.4 of
    // each cheap type); it fits only the balanced type, so it costs half of one: 1.5.
    let input = input(
        vec![pod("a/p", 2000, 2000)],
        vec![
            offering("c.x", 4000, 1000, 1.0),
            offering("r.x", 1000, 4000, 1.0),
            offering("m.x", 4000, 4000, 3.0),
        ],
    );
    let b = bound::assignment_lp(&input, u32::MAX).unwrap();
    assert!((b.value - 1.5).abs() < 1e-6, "{b:?}");
    assert!(b.value <= b.relaxed + 1e-9);
}

#[test]
fn two_shapes_split_over_the_types_that_suit_them() {
    // Compute-heavy pods on the compute type, memory-heavy ones on the memory type: 4 + 4
    // pods of a quarter of each, so one node of each: 2.0; the dominated dear type is dropped.
    let mut pods: Vec<PodSpec> = (0..4).map(|i| pod(&format!("a/c{i}"), 1000, 250)).collect();
    pods.extend((0..4).map(|i| pod(&format!("a/m{i}"), 250, 1000)));
    let input = input(
        pods,
        vec![
            offering("c.x", 4000, 1000, 1.0),
            offering("r.x", 1000, 4000, 1.0),
            offering("c.dear", 4000, 1000, 1.5),
        ],
    );
    let b = bound::assignment_lp(&input, u32::MAX).unwrap();
    assert!((b.value - 2.0).abs() < 1e-6, "{b:?}");
    assert_eq!(b.types, 2);
    assert_eq!(b.groups, 2);
}

#[test]
fn whole_nodes_cost_what_a_fraction_of_a_large_type_does_not() {
    // Three 2000m pods: the LP buys three quarters of the big type (8000m at 1.0, 0.75), but
    // whole nodes cost either the big type (1.0) or two small ones (4000m at 0.6 each, 1.2):
    // 1.0. With spot offerings, a pod only on-demand may run needs an on-demand node.
    let offerings = vec![
        offering("big.x", 8000, 32_000, 1.0),
        offering("small.x", 4000, 16_000, 0.6),
    ];
    let pods: Vec<PodSpec> = (0..3)
        .map(|i| pod(&format!("a/p{i}"), 2000, 1000))
        .collect();
    let three = input(pods, offerings.clone());
    let lp = bound::assignment_lp(&three, u32::MAX).unwrap();
    assert!((lp.value - 0.75).abs() < 1e-6, "{lp:?}");
    let planned = plan(&three);
    let whole =
        bound::whole_node_assignment(&three, planned.cost_hr, Duration::from_secs(10)).unwrap();
    assert!((whole - 1.0).abs() < 1e-6, "{whole}");
    assert!(whole <= planned.cost_hr + 1e-9, "{}", planned.cost_hr);

    let mut spot_offerings = offerings.clone();
    for mut o in offerings {
        o.capacity_type = CapacityType::Spot;
        o.price_hr *= 0.5;
        spot_offerings.push(o);
    }
    let mut pods: Vec<PodSpec> = (0..3)
        .map(|i| pod(&format!("a/p{i}"), 2000, 1000))
        .collect();
    pods.push(PodSpec {
        spot_ok: false,
        ..pod("a/ondemand", 1000, 1000)
    });
    let mixed = input(pods, spot_offerings);
    let planned = plan(&mixed);
    let whole =
        bound::whole_node_assignment(&mixed, planned.cost_hr, Duration::from_secs(10)).unwrap();
    // The on-demand pod needs an on-demand node (small, 0.6), which has room for one of the
    // others; the other two fill a small spot node (0.3).
    assert!((whole - 0.9).abs() < 1e-6, "{whole}");
    assert!(whole <= planned.cost_hr + 1e-9);
}

#[test]
fn the_bound_lies_between_the_fluid_bound_and_every_plan() {
    let offerings: Vec<Offering> = [
        ("m5.large", 1930, 7200, 0.096),
        ("c5.xlarge", 3920, 6500, 0.17),
        ("r5.large", 1930, 15000, 0.126),
        ("m5.2xlarge", 7910, 29000, 0.384),
    ]
    .iter()
    .map(|&(t, c, m, p)| offering(t, c, m, p))
    .collect();
    for seed in 0..4 {
        let input = input(synth::pods(seed, 300), offerings.clone());
        let b = bound::assignment_lp(&input, u32::MAX).unwrap();
        let planned = plan(&input);
        assert!(planned.unschedulable.is_empty());
        assert!(
            b.value <= planned.cost_hr + 1e-9,
            "{b:?} vs {}",
            planned.cost_hr
        );
        let mut demand: Vector = [0; 4];
        for p in &input.pods {
            for (r, d) in p.demand().into_iter().enumerate() {
                demand[r] += d;
            }
        }
        let columns: Vec<(Vector, f64)> = input
            .offerings
            .iter()
            .filter(|o| admits(&input, &input.pods[0], o))
            .map(|o| (input.policy.usable(o), o.price_hr))
            .collect();
        let fluid = lp::solve(&demand, &columns).unwrap().cost;
        assert!(b.value >= fluid - 1e-9, "{b:?} below the fluid {fluid}");
        let whole =
            bound::whole_node_assignment(&input, planned.cost_hr, Duration::from_secs(20)).unwrap();
        assert!(
            b.value <= whole * 1.001 && whole <= planned.cost_hr + 1e-9,
            "LP {b:?} <= whole nodes {whole} <= plan {}",
            planned.cost_hr
        );
        let coarse = bound::assignment_lp(&input, 5).unwrap();
        assert!(
            coarse.value <= b.value * 1.001,
            "rounding down only lowers it (up to the stopping tolerance)"
        );
    }
}
