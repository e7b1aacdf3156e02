//! Planner figures on seeded synthetic clusters over the real us-east-1 catalogue and prices
//! (every type with a price, on-demand and spot, in six zones):
//! - plan time and pods/s at 200, 2k, 5k and 20k pods;
//! - plan cost over the LP relaxation of the assignment model ([`bound`]) and over the looser
//!   fluid bound, across 20 seeds;
//! - on small instances (<= 60 pods, <= 15 offerings), plan cost over the exact optimum of the
//!   bin-packing MIP, solved by microlp.
//!
//!     cargo bench -p spotwise-optimizer --bench plan -- [scale|small|whole] [POD COUNTS...]
//!
//! `whole` (not run by default) puts the plans against a bound that knows nodes come whole
//! ([`bound::whole_node_assignment`]), where its branch and bound proves the optimum quickly:
//! at 200 pods, which is where the LP bound's half nodes make the gap.
//!
//! Bounds depend only on the seeded clusters and the catalogue, not on the planner, and the
//! 20,000-pod ones take minutes: each is kept in `target/plan-bounds.json` under a hash of its
//! input, so a second run measures a planner change in seconds.

mod bound;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use microlp::{ComparisonOp, OptimizationDirection, Problem};
use serde::{Deserialize, Serialize};
use spotwise_optimizer::catalog::PriceData;
use spotwise_optimizer::model::{PlanInput, PlanPolicy, Vector};
use spotwise_optimizer::packing::admits;
use spotwise_optimizer::synth::{self, Rng};
use spotwise_optimizer::{lp, plan};

const ZONES: [&str; 6] = [
    "us-east-1a",
    "us-east-1b",
    "us-east-1c",
    "us-east-1d",
    "us-east-1e",
    "us-east-1f",
];

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i.min(values.len() - 1)]
}

/// Sum over pod classes (here: spot-eligible or not) of each class's fluid optimum.
fn fluid_bound(input: &PlanInput) -> f64 {
    let mut bound = 0.0;
    for spot_ok in [true, false] {
        let class: Vec<_> = input.pods.iter().filter(|p| p.spot_ok == spot_ok).collect();
        let Some(first) = class.first() else { continue };
        let mut demand: Vector = [0; 4];
        for p in &class {
            let d = p.demand();
            for r in 0..4 {
                demand[r] += d[r];
            }
        }
        let columns: Vec<(Vector, f64)> = input
            .offerings
            .iter()
            .filter(|o| admits(input, first, o))
            .map(|o| (input.policy.usable(o), o.price_hr))
            .collect();
        bound += lp::solve(&demand, &columns).map_or(f64::NAN, |s| s.cost);
    }
    bound
}

/// Every pod placed once, capacities and capacity types respected.
fn check(input: &PlanInput, plan: &spotwise_optimizer::Plan) {
    let mut seen = BTreeSet::new();
    for node in &plan.nodes {
        let offering = input
            .offerings
            .iter()
            .find(|o| {
                o.instance_type == node.instance_type
                    && o.zone == node.zone
                    && o.label("karpenter.sh/capacity-type") == Some(node.capacity_type.as_str())
            })
            .unwrap_or_else(|| panic!("node from no offering: {}", node.instance_type));
        let cap = input.policy.usable(offering);
        let mut used = [0u64; 4];
        for name in &node.pods {
            assert!(seen.insert(name.clone()), "{name} placed twice");
            let pod = input
                .pods
                .iter()
                .find(|p| &p.name == name)
                .unwrap_or_else(|| panic!("unknown pod {name}"));
            assert!(admits(input, pod, offering));
            let d = pod.demand();
            for r in 0..4 {
                used[r] += d[r];
            }
        }
        assert!(
            (0..4).all(|r| used[r] <= cap[r]),
            "over capacity on {}",
            node.instance_type
        );
    }
    assert_eq!(seen.len() + plan.unschedulable.len(), input.pods.len());
}

/// Seeds per size (fewer at the sizes whose bounds take long); the pods of seed `s` at size `n`
/// are `synth::pods(s, n)`.
const SIZES: [(usize, u64); 4] = [(200, 20), (2_000, 20), (5_000, 10), (20_000, 4)];

/// Each seeded cluster's two lower bounds (neither depends on the risk premium or the spread
/// over pools, so both tables share them).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bounds {
    fluid: f64,
    lp: bound::Bound,
}

/// FNV-1a of the input's JSON: stable across runs and toolchains, unlike `DefaultHasher`.
fn input_key(input: &PlanInput) -> String {
    let json = serde_json::to_vec(input).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn bounds_cache() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
            PathBuf::from,
        )
        .join("plan-bounds.json")
}

fn scale(base: &PlanInput, sizes: &[(usize, u64)]) {
    let started = Instant::now();
    let cache_path = bounds_cache();
    let cached: HashMap<String, Bounds> = std::fs::read(&cache_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let input_of = |n: usize, seed: u64| PlanInput {
        pods: synth::pods(seed, n),
        ..base.clone()
    };
    let mut found: HashMap<(usize, u64), Bounds> = HashMap::new();
    let mut jobs: Vec<(usize, u64)> = Vec::new();
    for &(n, seeds) in sizes {
        for seed in 0..seeds {
            match cached.get(&input_key(&input_of(n, seed))) {
                Some(b) => {
                    found.insert((n, seed), b.clone());
                }
                None => jobs.push((n, seed)),
            }
        }
    }
    let computed = jobs.len();
    // Largest first, over both cores: the 20,000-pod bounds take minutes each.
    jobs.sort_by_key(|&(n, seed)| (std::cmp::Reverse(n), seed));
    let next = std::sync::Mutex::new(jobs.into_iter());
    let found = std::sync::Mutex::new(found);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let job = next.lock().ok().and_then(|mut jobs| jobs.next());
                    let Some((n, seed)) = job else { break };
                    let input = input_of(n, seed);
                    let Some(lp) = bound::assignment_lp(&input, u32::MAX) else {
                        eprintln!("{n} pods, seed {seed}: some pod fits no type");
                        continue;
                    };
                    let bounds = Bounds {
                        fluid: fluid_bound(&input),
                        lp,
                    };
                    if let Ok(mut found) = found.lock() {
                        found.insert((n, seed), bounds);
                    }
                }
            });
        }
    });
    let bounds: HashMap<(usize, u64), Bounds> = found.into_inner().unwrap_or_default();
    if bounds.len() != sizes.iter().map(|s| s.1 as usize).sum::<usize>() {
        return;
    }
    let mut cache = cached;
    for (&(n, seed), b) in &bounds {
        cache.insert(input_key(&input_of(n, seed)), b.clone());
    }
    if let Ok(json) = serde_json::to_vec(&cache)
        && let Err(err) = std::fs::write(&cache_path, json)
    {
        eprintln!("{}: {err}", cache_path.display());
    }
    let gap = bounds
        .values()
        .map(|b| b.lp.relaxed / b.lp.value - 1.0)
        .fold(0.0, f64::max);
    println!(
        "\nLP bounds of {} clusters ({computed} computed in {:.0} s on two threads, the rest from {}); each within {:.3}% of its LP optimum",
        bounds.len(),
        started.elapsed().as_secs_f64(),
        cache_path.display(),
        gap * 100.0,
    );
    if let Some(largest) = sizes.iter().map(|s| s.0).max() {
        let b = &bounds[&(largest, 0)].lp;
        println!(
            "at {largest} pods: {} groups x {} types, {} cuts",
            b.groups, b.types, b.cuts
        );
    }
    println!(
        "\n== plan time and cost over the bounds ({} offerings), default policy ==",
        base.offerings.len()
    );
    table(base, sizes, &bounds);
    println!("\n== the same at min_spot_pools 1, without the spot risk premium (cost only) ==");
    let neutral = PlanInput {
        policy: PlanPolicy {
            band_penalty: 0.0,
            observed_interruption_penalty: 0.0,
            min_spot_pools: 1,
            ..base.policy.clone()
        },
        ..base.clone()
    };
    table(&neutral, sizes, &bounds);
}

fn table(base: &PlanInput, sizes: &[(usize, u64)], bounds: &HashMap<(usize, u64), Bounds>) {
    println!(
        "{:>7} {:>6} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>6}",
        "pods",
        "seeds",
        "p50 ms",
        "max ms",
        "pods/s",
        "fluid p50",
        "LP p50",
        "LP p90",
        "LP max",
        "nodes"
    );
    for &(n, seeds) in sizes {
        let mut times = Vec::new();
        let mut over_fluid = Vec::new();
        let mut over_lp = Vec::new();
        let mut nodes = 0;
        for seed in 0..seeds {
            let input = PlanInput {
                pods: synth::pods(seed, n),
                ..base.clone()
            };
            let started = Instant::now();
            let plan = plan(&input);
            times.push(started.elapsed().as_secs_f64() * 1e3);
            check(&input, &plan);
            let b = &bounds[&(n, seed)];
            over_fluid.push(plan.cost_hr / b.fluid);
            over_lp.push(plan.cost_hr / b.lp.value);
            nodes = plan.nodes.len();
        }
        let p50 = percentile(&mut times, 0.5);
        println!(
            "{n:>7} {seeds:>6} {p50:>9.1} {:>9.1} {:>10.0} {:>10.4} {:>8.4} {:>8.4} {:>8.4} {nodes:>6}",
            percentile(&mut times, 1.0),
            n as f64 / (p50 / 1e3),
            percentile(&mut over_fluid, 0.5),
            percentile(&mut over_lp, 0.5),
            percentile(&mut over_lp, 0.9),
            percentile(&mut over_lp, 1.0),
        );
    }
}

/// Exact optimum of the bin-packing MIP: binary y[t][j] opens node j of offering t, binary
/// x[i][t][j] puts pod i on it. Node counts per offering are bounded by the heuristic's cost.
fn exact(input: &PlanInput, upper: f64, limit: Duration) -> Option<(f64, bool)> {
    let mut problem = Problem::new(OptimizationDirection::Minimize);
    problem.set_time_limit(limit);
    let pods = &input.pods;
    let mut assign: Vec<Vec<microlp::Variable>> = vec![Vec::new(); pods.len()];
    for o in &input.offerings {
        let cap = input.policy.usable(o);
        let allowed: Vec<usize> = (0..pods.len())
            .filter(|&i| {
                admits(input, &pods[i], o) && (0..4).all(|r| pods[i].demand()[r] <= cap[r])
            })
            .collect();
        let most = ((upper / o.price_hr + 1e-9).floor() as usize).min(allowed.len());
        let mut previous = None;
        for _ in 0..most {
            let open = problem.add_binary_var(o.price_hr);
            let on_node: Vec<(usize, microlp::Variable)> = allowed
                .iter()
                .map(|&i| (i, problem.add_binary_var(0.0)))
                .collect();
            for &(i, x) in &on_node {
                assign[i].push(x);
            }
            for (r, &capacity) in cap.iter().enumerate() {
                let mut row: Vec<(microlp::Variable, f64)> = on_node
                    .iter()
                    .map(|&(i, x)| (x, pods[i].demand()[r] as f64))
                    .collect();
                row.push((open, -(capacity as f64)));
                problem.add_constraint(row.as_slice(), ComparisonOp::Le, 0.0);
            }
            if let Some(prev) = previous {
                problem.add_constraint(
                    [(prev, 1.0), (open, -1.0)].as_slice(),
                    ComparisonOp::Ge,
                    0.0,
                );
            }
            previous = Some(open);
        }
    }
    for vars in &assign {
        let row: Vec<(microlp::Variable, f64)> = vars.iter().map(|&v| (v, 1.0)).collect();
        problem.add_constraint(row.as_slice(), ComparisonOp::Eq, 1.0);
    }
    let outcome = problem.solve().ok()?;
    let optimal = outcome.is_optimal();
    outcome.solution().map(|s| (s.objective(), optimal))
}

fn small(base: &PlanInput) {
    println!("\n== small instances: plan cost / exact MIP optimum (microlp, 20 s limit each) ==");
    println!(
        "{:>4} {:>5} {:>9} {:>10} {:>10} {:>8} {:>8}",
        "seed", "pods", "offerings", "plan $/h", "exact $/h", "ratio", "proven"
    );
    let mut ratios = Vec::new();
    for seed in 0..12u64 {
        let mut rng = Rng::new(seed + 1000);
        let n = 12 + rng.below(25) as usize;
        let mut offerings = Vec::new();
        // A handful of types of modest size, so several pods share a node.
        let candidates: Vec<_> = base
            .offerings
            .iter()
            .filter(|o| o.cpu_m <= 16_000 && o.gpus == 0 && o.zone == ZONES[0])
            .collect();
        while offerings.len() < 10 + rng.below(6) as usize {
            let o = candidates[rng.below(candidates.len() as u64) as usize].clone();
            if !offerings.contains(&o) {
                offerings.push(o);
            }
        }
        let input = PlanInput {
            pods: synth::pods(seed + 500, n)
                .into_iter()
                .map(|mut p| {
                    p.cpu_m = p.cpu_m.min(3_000);
                    p.mem_mib = p.mem_mib.min(12_000);
                    p
                })
                .collect(),
            offerings,
            policy: PlanPolicy {
                max_interruption_band: 4,
                min_spot_pools: 1,
                ..base.policy.clone()
            },
            ..PlanInput::default()
        };
        let plan = plan(&input);
        check(&input, &plan);
        if !plan.unschedulable.is_empty() {
            continue;
        }
        let Some((optimum, proven)) = exact(&input, plan.cost_hr, Duration::from_secs(20)) else {
            println!(
                "{seed:>4} {n:>5} {:>9} {:>10.4} {:>10} {:>8} {:>8}",
                input.offerings.len(),
                plan.cost_hr,
                "-",
                "-",
                "timeout"
            );
            continue;
        };
        let ratio = plan.cost_hr / optimum;
        if proven {
            ratios.push(ratio);
        }
        println!(
            "{seed:>4} {n:>5} {:>9} {:>10.4} {optimum:>10.4} {ratio:>8.4} {proven:>8}",
            input.offerings.len(),
            plan.cost_hr
        );
    }
    if !ratios.is_empty() {
        let count = ratios.len();
        println!(
            "proven optima: {count}; ratio p50 {:.4}, max {:.4}",
            percentile(&mut ratios, 0.5),
            percentile(&mut ratios, 1.0)
        );
    }
}

/// How much of the gap to the LP bound is whole nodes: each cluster's whole-node bound
/// ([`bound::whole_node_assignment`]) over its LP bound, and the plan's cost over it, with the
/// default policy and at min_spot_pools 1. Only where the branch and bound proves its optimum
/// within a minute (every 200-pod cluster, in seconds).
fn whole(base: &PlanInput, sizes: &[(usize, u64)]) {
    let cached: HashMap<String, Bounds> = std::fs::read(bounds_cache())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let neutral = PlanPolicy {
        band_penalty: 0.0,
        observed_interruption_penalty: 0.0,
        min_spot_pools: 1,
        ..base.policy.clone()
    };
    println!(
        "\n== whole nodes: the bound over the LP bound, and plans over the whole-node bound (run `scale` first for the LP bounds) =="
    );
    println!(
        "{:>7} {:>6} {:>7} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9}",
        "pods",
        "seeds",
        "proven",
        "s",
        "bnd/LP",
        "bnd/LP",
        "plan/bnd",
        "plan/bnd",
        "plan/bnd",
        "plan/bnd",
        "plan/LP"
    );
    println!(
        "{:>24} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9}",
        "", "p50", "p50", "max", "p50", "p90", "max", "pools 1", "p50"
    );
    for &(n, seeds) in sizes {
        let mut over_lp = Vec::new();
        let mut plan_over = Vec::new();
        let mut neutral_over = Vec::new();
        let mut plan_over_lp = Vec::new();
        let mut seconds = Vec::new();
        for seed in 0..seeds {
            let input = PlanInput {
                pods: synth::pods(seed, n),
                ..base.clone()
            };
            let Some(lp) = cached.get(&input_key(&input)).map(|b| b.lp.value) else {
                continue;
            };
            let planned = plan(&input).cost_hr;
            let started = Instant::now();
            let Some(whole) =
                bound::whole_node_assignment(&input, planned, Duration::from_secs(60))
            else {
                continue;
            };
            seconds.push(started.elapsed().as_secs_f64());
            let relaxed = PlanInput {
                policy: neutral.clone(),
                ..input.clone()
            };
            over_lp.push(whole / lp);
            plan_over.push(planned / whole);
            neutral_over.push(plan(&relaxed).cost_hr / whole);
            plan_over_lp.push(planned / lp);
        }
        if over_lp.is_empty() {
            continue;
        }
        println!(
            "{n:>7} {seeds:>6} {:>7} {:>9.1} {:>9.4} {:>9.4} | {:>9.4} {:>9.4} {:>9.4} | {:>9.4} {:>9.4}",
            over_lp.len(),
            percentile(&mut seconds, 0.5),
            percentile(&mut over_lp, 0.5),
            percentile(&mut over_lp, 1.0),
            percentile(&mut plan_over, 0.5),
            percentile(&mut plan_over, 0.9),
            percentile(&mut plan_over, 1.0),
            percentile(&mut neutral_over, 0.5),
            percentile(&mut plan_over_lp, 0.5),
        );
    }
}

fn main() {
    let data = match PriceData::shipped() {
        Ok(data) => data,
        Err(err) => {
            eprintln!("shipped price data: {err}");
            return;
        }
    };
    let zones: Vec<String> = ZONES.iter().map(|z| (*z).to_owned()).collect();
    let mut offerings = data.offerings("us-east-1", &zones, &Default::default());
    synth::vary_zone_prices(1, &mut offerings);
    let types: BTreeSet<&str> = offerings.iter().map(|o| o.instance_type.as_str()).collect();
    println!(
        "us-east-1: {} instance types x {} zones = {} offerings (spot and on-demand)",
        types.len(),
        zones.len(),
        offerings.len()
    );
    let base = PlanInput {
        pods: Vec::new(),
        offerings,
        policy: PlanPolicy::default(),
        ..PlanInput::default()
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let only = args.iter().find(|a| a.parse::<usize>().is_err());
    let counts: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes: Vec<(usize, u64)> = SIZES
        .iter()
        .copied()
        .filter(|(n, _)| counts.is_empty() || counts.contains(n))
        .collect();
    if only.is_none_or(|o| o == "scale") {
        scale(&base, &sizes);
    }
    if only.is_none_or(|o| o == "small") {
        small(&base);
    }
    if only == Some(&"whole".to_owned()) {
        whole(&base, &sizes);
    }
}
